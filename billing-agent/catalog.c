/*
 * The catalog document: cJSON text → C structs, validated field by field.
 * The first problem found is reported as "<path>: <reason>" so that whoever
 * edits the catalog sees which field to fix.
 */

#include "catalog.h"

#include <cjson/cJSON.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PATH_LEN 192
/* the largest integer a catalog may hold (see APIMON_MAX_AMOUNT) */
#define MAXN     (APIMON_MAX_AMOUNT - 1)
#define NOT_YET  ": not enforced by this version of apimon yet"

typedef struct {
    char   *buf;
    size_t  len;
} err_t;

/* ---- errors and paths --------------------------------------------------- */

static int __attribute__((format(printf, 3, 4)))
bad(err_t *e, const char *path, const char *fmt, ...)
{
    va_list  ap;
    int      n;

    if (e->buf == NULL || e->len == 0) {
        return -1;
    }
    n = snprintf(e->buf, e->len, "%s: ", path[0] ? path : "document");
    if (n >= 0 && (size_t) n < e->len) {
        va_start(ap, fmt);
        vsnprintf(e->buf + n, e->len - n, fmt, ap);
        va_end(ap);
    }
    return -1;
}

/* member names come from the document: print them tamely in messages */
static void
tame(char *dst, size_t len, const char *src)
{
    size_t i;

    for (i = 0; i + 1 < len && src[i] != '\0' && i < 64; i++) {
        unsigned char c = (unsigned char) src[i];

        dst[i] = (c > 0x20 && c < 0x7f) ? (char) c : '?';
    }
    dst[i] = '\0';
}

static void
join(char *out, const char *path, const char *key)
{
    char k[72];

    tame(k, sizeof(k), key);
    snprintf(out, PATH_LEN, "%s%s%s", path, path[0] ? "." : "", k);
}

static void
join_index(char *out, const char *path, const char *key, size_t i)
{
    char p[PATH_LEN];

    join(p, path, key);
    snprintf(out, PATH_LEN, "%.*s[%zu]", PATH_LEN - 24, p, i);
}

/* ---- members ------------------------------------------------------------ */

static int
listed(const char *name, const char *const *list)
{
    for (; *list != NULL; list++) {
        if (strcmp(name, *list) == 0) {
            return 1;
        }
    }
    return 0;
}

/*
 * obj must be an object whose members are all in allowed, each once: a
 * misspelt field is an error rather than a silently ignored price.
 * others (may be NULL) are fields valid elsewhere, named in the message.
 */
static int
check_members(const cJSON *obj, const char *path, const char *const *allowed,
    const char *const *others, const char *why, err_t *e)
{
    const cJSON  *m, *o;
    char          p[PATH_LEN];

    if (!cJSON_IsObject(obj)) {
        return bad(e, path, "must be an object");
    }
    for (m = obj->child; m != NULL; m = m->next) {
        join(p, path, m->string);
        if (!listed(m->string, allowed)) {
            if (others != NULL && listed(m->string, others)) {
                return bad(e, p, "not used by %s", why);
            }
            return bad(e, p, "unknown field");
        }
        for (o = obj->child; o != m; o = o->next) {
            if (strcmp(o->string, m->string) == 0) {
                return bad(e, p, "duplicate field");
            }
        }
    }
    return 0;
}

/* ---- scalar fields: 0 read, 1 absent (and optional), -1 error ----------- */

static const cJSON *
member(const cJSON *obj, const char *key, const char *path, int required,
    char *p, err_t *e, int *rc)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, key);

    join(p, path, key);
    *rc = 0;
    if (item == NULL) {
        *rc = required ? bad(e, p, "required") : 1;
    }
    return item;
}

static int
range_error(err_t *e, const char *p, int64_t min, int64_t max, int low)
{
    int64_t  t = 1;
    int      k = 0;

    if (low) {
        return bad(e, p, "must be >= %lld", (long long) min);
    }
    /* 999999999999 reads better as "less than 10^12" */
    while (t <= max / 10 && k < 18) {
        t *= 10;
        k++;
    }
    if (k >= 6 && t * 10 - 1 == max) {
        return bad(e, p, "must be less than 10^%d", k + 1);
    }
    return bad(e, p, "must be at most %lld", (long long) max);
}

/*
 * JSON numbers reach us as cJSON's double: the one place a double is read.
 * Every bound here is below 10^12 < 2^53, where doubles are exact, so the
 * range and integrality tests are exact too; money itself stays int64_t.
 */
static int
get_int(const cJSON *obj, const char *key, const char *path, int required,
    int64_t min, int64_t max, int64_t *out, err_t *e)
{
    char          p[PATH_LEN];
    int           rc;
    const cJSON  *item = member(obj, key, path, required, p, e, &rc);
    double        d;

    if (item == NULL) {
        return rc;
    }
    if (!cJSON_IsNumber(item)) {
        return bad(e, p, "must be an integer");
    }
    d = item->valuedouble;
    if (d < (double) min || d > (double) max) {
        return range_error(e, p, min, max, d < (double) min);
    }
    if ((double) (int64_t) d != d) {
        return bad(e, p, "must be an integer");
    }
    *out = (int64_t) d;
    return 0;
}

static int
get_string(const cJSON *obj, const char *key, const char *path, int required,
    size_t maxlen, const char **out, err_t *e)
{
    char          p[PATH_LEN];
    int           rc;
    const cJSON  *item = member(obj, key, path, required, p, e, &rc);

    if (item == NULL) {
        return rc;
    }
    if (!cJSON_IsString(item)) {
        return bad(e, p, "must be a string");
    }
    if (strlen(item->valuestring) > maxlen) {
        return bad(e, p, "must be at most %zu bytes", maxlen);
    }
    *out = item->valuestring;
    return 0;
}

static int
name_ok(const char *s)
{
    size_t n = strlen(s), i;

    if (n < 1 || n > APIMON_NAME_MAX) {
        return 0;
    }
    for (i = 0; i < n; i++) {
        char c = s[i];

        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
              || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-'))
        {
            return 0;
        }
    }
    return 1;
}

static int
check_name(const cJSON *item, const char *p, apimon_name_t out, err_t *e)
{
    if (!cJSON_IsString(item)) {
        return bad(e, p, "must be a string");
    }
    if (!name_ok(item->valuestring)) {
        return bad(e, p, "must match ^[A-Za-z0-9._-]{1,64}$");
    }
    memcpy(out, item->valuestring, strlen(item->valuestring) + 1);
    return 0;
}

static int
get_name(const cJSON *obj, const char *key, const char *path,
    apimon_name_t out, err_t *e)
{
    char          p[PATH_LEN];
    int           rc;
    const cJSON  *item = member(obj, key, path, 1, p, e, &rc);

    return item == NULL ? rc : check_name(item, p, out, e);
}

/* values is NULL-terminated; *out is the index of the value found */
static int
get_enum(const cJSON *obj, const char *key, const char *path, int required,
    const char *const *values, const char *shown, int *out, err_t *e)
{
    char          p[PATH_LEN];
    int           rc, i;
    const cJSON  *item = member(obj, key, path, required, p, e, &rc);

    if (item == NULL) {
        return rc;
    }
    for (i = 0; cJSON_IsString(item) && values[i] != NULL; i++) {
        if (strcmp(item->valuestring, values[i]) == 0) {
            *out = i;
            return 0;
        }
    }
    return bad(e, p, "must be one of %s", shown);
}

/* an optional free text, copied; "" when absent */
static int
dup_text(const cJSON *obj, const char *key, const char *path, size_t maxlen,
    char **out, err_t *e)
{
    const char *s = "";

    if (get_string(obj, key, path, 0, maxlen, &s, e) < 0) {
        return -1;
    }
    *out = strdup(s);
    return *out == NULL ? bad(e, path, "out of memory") : 0;
}

/* ---- pricing ------------------------------------------------------------ */

/* the members of each pricing field a model's row names */
static const struct {
    unsigned     use;
    const char  *members[3];
} f_uses[] = {
    { APIMON_USES_AMOUNT, { "amount" } },
    { APIMON_USES_INCLUDED, { "includedUnits" } },
    { APIMON_USES_UNIT_AMOUNT, { "unitAmount" } },
    { APIMON_USES_TIERS, { "tiers" } },
    { APIMON_USES_UNITS, { "unitSize", "rounding" } },
    { APIMON_USES_PACKAGE, { "packageSize" } },
};

static const char *const f_tier[] = { "upTo", "unitAmount", "flatAmount",
    NULL };

/* "model", "currency" and the members of the fields in uses, NULL ended */
static void
pricing_members(unsigned uses, const char **out)
{
    size_t  i, j, n = 0;

    out[n++] = "model";
    out[n++] = "currency";
    for (i = 0; i < sizeof(f_uses) / sizeof(f_uses[0]); i++) {
        for (j = 0; (uses & f_uses[i].use) && j < 3 && f_uses[i].members[j];
             j++)
        {
            out[n++] = f_uses[i].members[j];
        }
    }
    out[n] = NULL;
}

/* "free, flat, ...": the models' rows */
static void
model_list(char *buf, size_t len)
{
    const apimon_model_t  *m;
    size_t                 n = 0;
    int                    i;

    buf[0] = '\0';
    for (i = 0; (m = apimon_model((apimon_model_e) i)) != NULL; i++) {
        n += snprintf(buf + n, n < len ? len - n : 0, "%s%s", i ? ", " : "",
                      m->name);
    }
}

static int
read_currency(const cJSON *obj, const char *path, apimon_pricing_t *pr,
    err_t *e)
{
    const char  *c = NULL;
    char         p[PATH_LEN];
    int          rc;

    rc = get_string(obj, "currency", path, pr->model != APIMON_MODEL_FREE,
        16, &c, e);
    if (rc != 0) {
        return rc < 0 ? -1 : 0;
    }
    join(p, path, "currency");
    if (strlen(c) != 3 || strspn(c, "abcdefghijklmnopqrstuvwxyz") != 3) {
        return bad(e, p, "must be 3 lowercase letters (ISO 4217)");
    }
    memcpy(pr->currency, c, 4);
    return 0;
}

static int
read_tier(const cJSON *t, const char *path, apimon_tier_t *tier, err_t *e)
{
    const cJSON  *up;
    char          p[PATH_LEN];
    int           ua, fa;

    if (check_members(t, path, f_tier, NULL, NULL, e) != 0) {
        return -1;
    }
    up = cJSON_GetObjectItemCaseSensitive(t, "upTo");
    join(p, path, "upTo");
    if (up == NULL) {
        return bad(e, p, "required (null for the last tier)");
    }
    tier->up_to = -1;
    if (!cJSON_IsNull(up) && !cJSON_IsNumber(up)) {
        return bad(e, p, "must be an integer or null");
    }
    if (!cJSON_IsNull(up) && get_int(t, "upTo", path, 1, 1, MAXN,
            &tier->up_to, e) != 0)
    {
        return -1;
    }
    ua = get_int(t, "unitAmount", path, 0, 0, MAXN,
        &tier->unit_amount, e);
    fa = get_int(t, "flatAmount", path, 0, 0, MAXN,
        &tier->flat_amount, e);
    if (ua < 0 || fa < 0) {
        return -1;
    }
    if (ua == 1 && fa == 1) {
        return bad(e, path, "needs unitAmount or flatAmount");
    }
    return 0;
}

static int
read_tiers(const cJSON *obj, const char *path, apimon_pricing_t *pr, err_t *e)
{
    char          p[PATH_LEN];
    int           rc;
    const cJSON  *arr = member(obj, "tiers", path, 1, p, e, &rc), *t;
    size_t        i = 0;

    if (arr == NULL) {
        return -1;
    }
    if (!cJSON_IsArray(arr)) {
        return bad(e, p, "must be an array");
    }
    if (cJSON_GetArraySize(arr) < 1) {
        return bad(e, p, "must have at least one tier");
    }
    if (cJSON_GetArraySize(arr) > APIMON_MAX_TIERS) {
        return bad(e, p, "at most %d tiers", APIMON_MAX_TIERS);
    }
    cJSON_ArrayForEach(t, arr) {
        join_index(p, path, "tiers", i);
        if (read_tier(t, p, &pr->tiers[i++], e) != 0) {
            return -1;
        }
    }
    pr->ntiers = i;
    return 0;
}

/* the fields that count units: unitSize and rounding, both optional */
static int
read_units(const cJSON *obj, const char *path, apimon_pricing_t *pr, err_t *e)
{
    static const char *const roundings[] = { "down", "up", NULL };
    int down_up = 1;

    if (get_int(obj, "unitSize", path, 0, 1, MAXN,
            &pr->unit_size, e) < 0
        || get_enum(obj, "rounding", path, 0, roundings, "up, down",
            &down_up, e) < 0)
    {
        return -1;
    }
    pr->round_up = down_up;
    return 0;
}

static int
read_model_fields(const cJSON *obj, const char *path, apimon_pricing_t *pr,
    err_t *e)
{
    unsigned  u = apimon_model(pr->model)->uses;

    /* check_members already refused the fields this model does not use:
     * reading an absent optional one here is harmless */
    if (get_int(obj, "amount", path, u & APIMON_USES_AMOUNT, 0, MAXN,
            &pr->amount, e) < 0
        || get_int(obj, "unitAmount", path, u & APIMON_USES_UNIT_AMOUNT, 0,
            MAXN, &pr->unit_amount, e) < 0
        || get_int(obj, "includedUnits", path, u & APIMON_USES_INCLUDED, 0,
            MAXN, &pr->included_units, e) < 0
        || get_int(obj, "packageSize", path, u & APIMON_USES_PACKAGE, 1,
            MAXN, &pr->package_size, e) < 0)
    {
        return -1;
    }
    if ((u & APIMON_USES_UNITS) && read_units(obj, path, pr, e) != 0) {
        return -1;
    }
    return (u & APIMON_USES_TIERS) ? read_tiers(obj, path, pr, e) : 0;
}

static int
read_pricing(const cJSON *obj, const char *path, apimon_pricing_t *pr,
    err_t *e)
{
    const char  *name = NULL, *allowed[16], *any[16];
    char         p[PATH_LEN], why[48], msg[APIMON_CATALOG_ERRLEN];
    int          rc;

    memset(pr, 0, sizeof(*pr));
    pr->unit_size = 1;
    pr->round_up = 1;
    if (!cJSON_IsObject(obj)) {
        return bad(e, path, "must be an object");
    }
    rc = get_string(obj, "model", path, 1, 32, &name, e);
    join(p, path, "model");
    if (rc != 0 || apimon_model_parse(name, &pr->model) != 0) {
        if (rc == 0) {
            model_list(msg, sizeof(msg));
            bad(e, p, "must be one of %s", msg);
        }
        return -1;
    }
    snprintf(why, sizeof(why), "model %s", name);
    pricing_members(apimon_model(pr->model)->uses, allowed);
    pricing_members(~0u, any);
    if (check_members(obj, path, allowed, any, why, e) != 0
        || read_currency(obj, path, pr, e) != 0
        || read_model_fields(obj, path, pr, e) != 0)
    {
        return -1;
    }
    /* the semantic rules (tiers ascending, last open ...) live in pricing.c,
     * which words them relative to the pricing object */
    if (apimon_pricing_check(pr, msg, sizeof(msg)) != 0) {
        snprintf(p, sizeof(p), "%s.%.*s", path, (int) strcspn(msg, ":"), msg);
        return bad(e, p, "%s", msg + strcspn(msg, ":") + 2);
    }
    return 0;
}

/* ---- products and plans ------------------------------------------------- */

static const char *const f_catalog[] = { "$schema", "products", "plans",
    "weekStart", "webhooks", NULL };
/* state, retired, attributes and changeTo: checked by catalog_apply.lua */
static const char *const f_product[] = { "name", "displayName",
    "description", "apis", "defaultPlan", "state", "attributes", "changeTo",
    NULL };
static const char *const f_plan[] = { "name", "product", "displayName",
    "description", "approval", "suspension", "rateLimit", "quota", "pricing",
    "retired", "attributes", "webhooks", NULL };

static int
read_apis(const cJSON *obj, const char *path, apimon_product_t *pr, err_t *e)
{
    char          p[PATH_LEN];
    int           rc;
    const cJSON  *arr = member(obj, "apis", path, 1, p, e, &rc), *a;
    size_t        i = 0, j;

    if (arr == NULL) {
        return -1;
    }
    if (!cJSON_IsArray(arr) || cJSON_GetArraySize(arr) < 1) {
        return bad(e, p, "must be a non-empty array of API names");
    }
    pr->apis = calloc(cJSON_GetArraySize(arr), sizeof(apimon_name_t));
    if (pr->apis == NULL) {
        return bad(e, p, "out of memory");
    }
    cJSON_ArrayForEach(a, arr) {
        join_index(p, path, "apis", i);
        if (check_name(a, p, pr->apis[i], e) != 0) {
            return -1;
        }
        for (j = 0; j < i; j++) {
            if (strcmp(pr->apis[j], pr->apis[i]) == 0) {
                return bad(e, p, "duplicate api %s", pr->apis[i]);
            }
        }
        pr->napis = ++i;
    }
    return 0;
}

static int
read_product(const cJSON *obj, const char *path, apimon_product_t *pr,
    err_t *e)
{
    char          p[PATH_LEN];
    int           rc;
    const cJSON  *dp;

    if (check_members(obj, path, f_product, NULL, NULL, e) != 0
        || get_name(obj, "name", path, pr->name, e) != 0
        || dup_text(obj, "displayName", path, APIMON_DISPLAY_MAX,
            &pr->display_name, e) != 0
        || dup_text(obj, "description", path, APIMON_DESC_MAX,
            &pr->description, e) != 0)
    {
        return -1;
    }
    /* whose plan it is is checked once the plans are read */
    dp = member(obj, "defaultPlan", path, 0, p, e, &rc);
    if (dp != NULL && check_name(dp, p, pr->default_plan, e) != 0) {
        return -1;
    }
    return read_apis(obj, path, pr, e);
}

/* ---- rules and webhooks ------------------------------------------------ */

static const char *const unit_names[] = { "second", "minute", "hour", "day",
    "week", "month", NULL };
static const char *const rate_units[] = { "second", "minute", "hour", "day",
    NULL };
static const int64_t unit_secs[] = { 1, 60, 3600, 86400 };

const char *
apimon_unit_name(apimon_unit_e u)
{
    return (unsigned) u < 6 ? unit_names[u] : "?";
}

static int
read_notify(const cJSON *r, const char *path, apimon_rule_t *rule, err_t *e)
{
    char          p[PATH_LEN];
    int           rc;
    const cJSON  *arr = member(r, "notify", path, 0, p, e, &rc), *t;
    size_t        i = 0;

    if (arr == NULL) {
        return rc < 0 ? -1 : 0;
    }
    if (!cJSON_IsArray(arr)) {
        return bad(e, p, "must be an array of percentages");
    }
    if (cJSON_GetArraySize(arr) > APIMON_MAX_NOTIFY) {
        return bad(e, p, "at most %d thresholds", APIMON_MAX_NOTIFY);
    }
    cJSON_ArrayForEach(t, arr) {
        join_index(p, path, "notify", i);
        if (!cJSON_IsNumber(t) || t->valuedouble < 1 || t->valuedouble > 1000
            || (double) (int) t->valuedouble != t->valuedouble)
        {
            return bad(e, p, "must be an integer percentage from 1 to 1000");
        }
        rule->notify[i] = (int) t->valuedouble;
        if (i > 0 && rule->notify[i] <= rule->notify[i - 1]) {
            return bad(e, p, "thresholds must be ascending");
        }
        rule->nnotify = ++i;
    }
    return 0;
}

/* the fields only quota rules have */
static int
read_quota_fields(const cJSON *r, const char *path, apimon_rule_t *rule,
    err_t *e)
{
    static const char *const freqs[] = { "once", "every", NULL };
    const cJSON  *b;
    char          p[PATH_LEN];
    int           rc;

    b = member(r, "blockOnBreach", path, 0, p, e, &rc);
    rule->block = 1;
    if (b != NULL) {
        if (!cJSON_IsBool(b)) {
            return bad(e, p, "must be true or false");
        }
        rule->block = cJSON_IsTrue(b);
    }
    if (get_enum(r, "frequency", path, 0, freqs, "once, every", &rule->every,
            e) < 0)
    {
        return -1;
    }
    return read_notify(r, path, rule, e);
}

static const char *const f_rate[] = { "name", "limit", "per", "interval",
    "violationMessage", NULL };
static const char *const f_quota[] = { "name", "limit", "period", "interval",
    "blockOnBreach", "notify", "frequency", "violationMessage", NULL };

/* one rule object at path; quota: 1 for a quota rule */
static int
read_rule(const cJSON *r, const char *path, int quota, const char *dflt,
    apimon_rule_t *rule, err_t *e)
{
    const char   *msg = "";
    const cJSON  *name;
    char          p[PATH_LEN];
    int           rc, unit = 0;

    memset(rule, 0, sizeof(*rule));
    rule->interval = 1;
    if (check_members(r, path, quota ? f_quota : f_rate,
            quota ? f_rate : f_quota, quota ? "quota rules" : "rate rules", e)
        != 0)
    {
        return -1;
    }
    name = member(r, "name", path, 0, p, e, &rc);
    if (name != NULL) {
        if (check_name(name, p, rule->name, e) != 0) {
            return -1;
        }
    } else {
        snprintf(rule->name, sizeof(rule->name), "%s", dflt);
    }
    if (get_int(r, "limit", path, 1, 1, MAXN, &rule->limit, e) != 0
        || get_int(r, "interval", path, 0, 1, APIMON_MAX_INTERVAL,
            &rule->interval, e) < 0
        || get_string(r, "violationMessage", path, 0, APIMON_VIOLATION_MAX,
            &msg, e) < 0)
    {
        return -1;
    }
    memcpy(rule->violation, msg, strlen(msg) + 1);
    if (!quota) {
        rc = get_enum(r, "per", path, 1, rate_units, "second, minute, hour, "
            "day", &unit, e);
        rule->unit = (apimon_unit_e) unit;
        return rc;
    }
    if (get_enum(r, "period", path, 1, unit_names, "second, minute, hour, "
            "day, week, month", &unit, e) != 0)
    {
        return -1;
    }
    rule->unit = (apimon_unit_e) unit;
    return read_quota_fields(r, path, rule, e);
}

/* a rule name is unique among all the rules of its plan */
static int
rule_unique(const apimon_plan_t *pl, const apimon_rule_t *rule,
    const char *path, err_t *e)
{
    char    p[PATH_LEN];
    size_t  i;

    join(p, path, "name");
    for (i = 0; i < pl->nrates + pl->nquotas; i++) {
        const apimon_rule_t *o = i < pl->nrates ? &pl->rates[i]
                                 : &pl->quotas[i - pl->nrates];

        if (o != rule && strcmp(o->name, rule->name) == 0) {
            return bad(e, p, "duplicate rule name %s", rule->name);
        }
    }
    return 0;
}

/* rateLimit or quota: absent, one rule object, or an array of them */
static int
read_rules(const cJSON *plan, const char *path, int quota, apimon_plan_t *pl,
    err_t *e)
{
    const char     *key = quota ? "quota" : "rateLimit";
    const char     *base = quota ? "plan-quota" : "plan-rate";
    apimon_rule_t  *rules = quota ? pl->quotas : pl->rates;
    size_t         *n = quota ? &pl->nquotas : &pl->nrates;
    const cJSON    *v = cJSON_GetObjectItemCaseSensitive(plan, key), *r;
    char            p[PATH_LEN], rp[PATH_LEN], dflt[APIMON_NAME_MAX + 1];

    if (v == NULL) {
        return 0;
    }
    join(p, path, key);
    if (cJSON_IsObject(v)) {
        *n = 1;
        return read_rule(v, p, quota, base, &rules[0], e) != 0
               || rule_unique(pl, &rules[0], p, e) != 0 ? -1 : 0;
    }
    if (!cJSON_IsArray(v)) {
        return bad(e, p, "must be an object or an array of them");
    }
    if (cJSON_GetArraySize(v) > APIMON_MAX_RULES) {
        return bad(e, p, "at most %d rules", APIMON_MAX_RULES);
    }
    cJSON_ArrayForEach(r, v) {
        join_index(rp, path, key, *n);
        if (*n == 0) {
            snprintf(dflt, sizeof(dflt), "%s", base);
        } else {
            snprintf(dflt, sizeof(dflt), "%s-%zu", base, *n + 1);
        }
        if (read_rule(r, rp, quota, dflt, &rules[*n], e) != 0) {
            return -1;
        }
        (*n)++;
        if (rule_unique(pl, &rules[*n - 1], rp, e) != 0) {
            return -1;
        }
    }
    return 0;
}

/* the limits the subscriptions mirror (catalog_apply.lua does the same) */
static void
mirror_limits(apimon_plan_t *pl)
{
    const apimon_rule_t *q = &pl->quotas[0];

    if (pl->nrates > 0) {
        pl->rate_n = pl->rates[0].limit;
        pl->rate_w = pl->rates[0].interval * unit_secs[pl->rates[0].unit];
    }
    if (pl->nquotas > 0 && q->interval == 1 && q->unit != APIMON_UNIT_SECOND) {
        pl->quota_n = q->limit;
        snprintf(pl->quota_unit, sizeof(pl->quota_unit), "%s",
                 unit_names[q->unit]);
    }
}

/* one plan's rules against what apimon_catalog_enforced allows */
static int
rules_enforced(const apimon_plan_t *pl, int week_start, const char *path,
    err_t *e)
{
    const apimon_rule_t  *q = &pl->quotas[0];
    char                  p[PATH_LEN];

    if (pl->nrates > 1) {
        join(p, path, "rateLimit");
        return bad(e, p, "more than one rate rule%s", NOT_YET);
    }
    if (pl->nrates == 1 && pl->rates[0].violation[0]) {
        join(p, path, "rateLimit.violationMessage");
        return bad(e, p, "a violation message%s", NOT_YET);
    }
    if (pl->nquotas == 0) {
        return 0;
    }
    join(p, path, "quota");
    if (pl->nquotas > 1) {
        return bad(e, p, "more than one quota rule%s", NOT_YET);
    }
    if (q->interval != 1 || q->unit == APIMON_UNIT_SECOND) {
        return bad(e, p, "a period of %lld %s%s", (long long) q->interval,
                   unit_names[q->unit], NOT_YET);
    }
    if (q->unit == APIMON_UNIT_WEEK && week_start != 0) {
        return bad(e, "weekStart", "weeks not starting on monday with a "
                   "week quota (%s)%s", pl->name, NOT_YET);
    }
    if (!q->block) {
        join(p, path, "quota.blockOnBreach");
        return bad(e, p, "a soft quota (false)%s", NOT_YET);
    }
    if (q->nnotify > 0) {
        join(p, path, "quota.notify");
        return bad(e, p, "quota notifications%s", NOT_YET);
    }
    if (q->violation[0]) {
        join(p, path, "quota.violationMessage");
        return bad(e, p, "a violation message%s", NOT_YET);
    }
    return 0;
}


int
apimon_catalog_enforced(const apimon_catalog_t *cat, char *err,
    size_t errlen)
{
    err_t   e = { err, errlen };
    char    path[PATH_LEN];
    size_t  i;

    for (i = 0; i < cat->nplans; i++) {
        snprintf(path, sizeof(path), "plans[%zu]", i);
        if (rules_enforced(&cat->plans[i], cat->week_start, path, &e) != 0) {
            return -1;
        }
    }
    return 0;
}


static const char *const f_webhook[] = { "url", "secretFile", NULL };

static int
read_webhook(const cJSON *w, const char *path, apimon_webhook_t *hook,
    err_t *e)
{
    const char  *url = NULL, *file = NULL;
    char         p[PATH_LEN];
    size_t       i;

    if (check_members(w, path, f_webhook, NULL, NULL, e) != 0
        || get_string(w, "url", path, 1, 2048, &url, e) != 0
        || get_string(w, "secretFile", path, 1, 4096, &file, e) != 0)
    {
        return -1;
    }
    join(p, path, "url");
    if (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0) {
        return bad(e, p, "must be an http:// or https:// URL");
    }
    for (i = 0; url[i] != '\0'; i++) {
        if ((unsigned char) url[i] <= 0x20 || url[i] == 0x7f) {
            return bad(e, p, "must not hold spaces or control characters");
        }
    }
    if (strchr(url, ':')[3] == '\0' || strchr(url, ':')[3] == '/') {
        return bad(e, p, "has no host");
    }
    join(p, path, "secretFile");
    if (file[0] != '/') {
        return bad(e, p, "must be an absolute path (the file holds the "
                   "signing secret)");
    }
    hook->url = strdup(url);
    hook->secret_file = strdup(file);
    return hook->url && hook->secret_file ? 0 : bad(e, path, "out of memory");
}

/* "webhooks" of obj (the document or a plan): absent or an array */
static int
read_webhooks(const cJSON *obj, const char *path, apimon_webhook_t **out,
    size_t *n, err_t *e)
{
    char          p[PATH_LEN];
    int           rc;
    const cJSON  *arr = member(obj, "webhooks", path, 0, p, e, &rc), *w;

    if (arr == NULL) {
        return rc < 0 ? -1 : 0;
    }
    if (!cJSON_IsArray(arr)) {
        return bad(e, p, "must be an array");
    }
    if (cJSON_GetArraySize(arr) > APIMON_MAX_WEBHOOKS) {
        return bad(e, p, "at most %d webhooks", APIMON_MAX_WEBHOOKS);
    }
    *out = calloc(cJSON_GetArraySize(arr) + 1, sizeof(apimon_webhook_t));
    if (*out == NULL) {
        return bad(e, p, "out of memory");
    }
    cJSON_ArrayForEach(w, arr) {
        join_index(p, path, "webhooks", *n);
        (*n)++;
        if (read_webhook(w, p, &(*out)[*n - 1], e) != 0) {
            return -1;
        }
    }
    return 0;
}

static void
free_webhooks(apimon_webhook_t *w, size_t n)
{
    size_t i;

    for (i = 0; w != NULL && i < n; i++) {
        free(w[i].url);
        free(w[i].secret_file);
    }
    free(w);
}

static int
read_plan(const cJSON *obj, const char *path, apimon_plan_t *pl, err_t *e)
{
    static const char *const approvals[] = { "auto", "manual", NULL };
    static const char *const suspensions[] = { "charge", "pause", NULL };
    char          p[PATH_LEN];
    int           rc;
    const cJSON  *pricing;

    if (check_members(obj, path, f_plan, NULL, NULL, e) != 0
        || get_name(obj, "name", path, pl->name, e) != 0
        || get_name(obj, "product", path, pl->product, e) != 0
        || dup_text(obj, "displayName", path, APIMON_DISPLAY_MAX,
            &pl->display_name, e) != 0
        || dup_text(obj, "description", path, APIMON_DESC_MAX,
            &pl->description, e) != 0
        || get_enum(obj, "approval", path, 0, approvals, "auto, manual",
            &pl->manual, e) < 0
        || get_enum(obj, "suspension", path, 0, suspensions, "charge, pause",
            &pl->pause, e) < 0
        || read_rules(obj, path, 0, pl, e) != 0
        || read_rules(obj, path, 1, pl, e) != 0
        || read_webhooks(obj, path, &pl->webhooks, &pl->nwebhooks, e) != 0)
    {
        return -1;
    }
    mirror_limits(pl);
    pricing = member(obj, "pricing", path, 1, p, e, &rc);
    return pricing == NULL ? -1 : read_pricing(pricing, p, &pl->pricing, e);
}

/* ---- the document ------------------------------------------------------- */

static const cJSON *
get_array(const cJSON *root, const char *key, err_t *e)
{
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(root, key);

    if (a == NULL) {
        bad(e, key, "required");
        return NULL;
    }
    if (!cJSON_IsArray(a)) {
        bad(e, key, "must be an array");
        return NULL;
    }
    return a;
}

static int
read_products(const cJSON *root, apimon_catalog_t *cat, err_t *e)
{
    const cJSON  *arr = get_array(root, "products", e), *it;
    char          p[PATH_LEN], f[PATH_LEN];
    size_t        i = 0, j;

    if (arr == NULL) {
        return -1;
    }
    cat->products = calloc(cJSON_GetArraySize(arr) + 1,
        sizeof(apimon_product_t));
    if (cat->products == NULL) {
        return bad(e, "products", "out of memory");
    }
    cJSON_ArrayForEach(it, arr) {
        apimon_product_t *pr = &cat->products[i];

        join_index(p, "", "products", i);
        cat->nproducts = ++i;
        if (read_product(it, p, pr, e) != 0) {
            return -1;
        }
        for (j = 0; j + 1 < i; j++) {
            if (strcmp(cat->products[j].name, pr->name) == 0) {
                join(f, p, "name");
                return bad(e, f, "duplicate product %s", pr->name);
            }
        }
    }
    return 0;
}

static int
read_plans(const cJSON *root, apimon_catalog_t *cat, err_t *e)
{
    const cJSON  *arr = get_array(root, "plans", e), *it;
    char          p[PATH_LEN], f[PATH_LEN];
    size_t        i = 0, j;

    if (arr == NULL) {
        return -1;
    }
    cat->plans = calloc(cJSON_GetArraySize(arr) + 1, sizeof(apimon_plan_t));
    if (cat->plans == NULL) {
        return bad(e, "plans", "out of memory");
    }
    cJSON_ArrayForEach(it, arr) {
        apimon_plan_t *pl = &cat->plans[i];

        join_index(p, "", "plans", i);
        cat->nplans = ++i;
        if (read_plan(it, p, pl, e) != 0) {
            return -1;
        }
        for (j = 0; j + 1 < i; j++) {
            if (strcmp(cat->plans[j].name, pl->name) == 0) {
                join(f, p, "name");
                return bad(e, f, "duplicate plan %s", pl->name);
            }
        }
        if (apimon_catalog_product(cat, pl->product) == NULL) {
            join(f, p, "product");
            return bad(e, f, "no product named %s", pl->product);
        }
    }
    return 0;
}

/* a declared defaultPlan is one of the product's own plans */
static int
check_default_plans(const apimon_catalog_t *cat, err_t *e)
{
    const apimon_product_t  *pr;
    const apimon_plan_t     *pl;
    char                     p[PATH_LEN];
    size_t                   i;

    for (i = 0; i < cat->nproducts; i++) {
        pr = &cat->products[i];
        if (pr->default_plan[0] == '\0') {
            continue;
        }
        snprintf(p, sizeof(p), "products[%zu].defaultPlan", i);
        pl = apimon_catalog_plan(cat, pr->default_plan);
        if (pl == NULL) {
            return bad(e, p, "no plan named %s", pr->default_plan);
        }
        if (strcmp(pl->product, pr->name) != 0) {
            return bad(e, p, "plan %s is a plan of product %s",
                pl->name, pl->product);
        }
    }
    return 0;
}

/* "invalid JSON at line L, column C" from the offset cJSON stopped at */
static int
json_error(const char *text, size_t len, const char *at, err_t *e)
{
    size_t  off = (at != NULL && at >= text && at <= text + len)
                ? (size_t) (at - text) : len;
    size_t  line = 1, col = 1, i;

    for (i = 0; i < off; i++) {
        if (text[i] == '\n') {
            line++;
            col = 1;
        } else {
            col++;
        }
    }
    if (e->buf != NULL && e->len > 0) {
        snprintf(e->buf, e->len, "invalid JSON at line %zu, column %zu",
            line, col);
    }
    return -1;
}

/* parses exactly len bytes: trailing garbage and NUL bytes are errors */
static cJSON *
parse_json(const char *text, size_t len, err_t *e)
{
    const char  *end = NULL;
    const char  *nul = memchr(text, '\0', len);
    char        *copy;
    cJSON       *root;

    if (nul != NULL) {
        json_error(text, len, nul, e);
        return NULL;
    }
    copy = malloc(len + 1);
    if (copy == NULL) {
        bad(e, "", "out of memory");
        return NULL;
    }
    memcpy(copy, text, len);
    copy[len] = '\0';
    root = cJSON_ParseWithOpts(copy, &end, 1);
    if (root == NULL) {
        json_error(text, len, end ? text + (end - copy) : NULL, e);
    }
    free(copy);
    return root;
}

static const char *const week_days[] = { "monday", "tuesday", "wednesday",
    "thursday", "friday", "saturday", "sunday", NULL };

int
apimon_catalog_parse(const char *text, size_t len, apimon_catalog_t *cat,
    char *err, size_t errlen)
{
    err_t   e = { err, errlen };
    cJSON  *root;
    int     rc = -1;

    memset(cat, 0, sizeof(*cat));
    if (err != NULL && errlen > 0) {
        err[0] = '\0';
    }
    if (text == NULL) {
        return bad(&e, "", "no text");
    }
    root = parse_json(text, len, &e);
    if (root == NULL) {
        return -1;
    }
    if (check_members(root, "", f_catalog, NULL, NULL, &e) == 0
        && get_enum(root, "weekStart", "", 0, week_days, "monday, tuesday, "
            "wednesday, thursday, friday, saturday, sunday", &cat->week_start,
            &e) >= 0
        && read_webhooks(root, "", &cat->webhooks, &cat->nwebhooks, &e) == 0
        && read_products(root, cat, &e) == 0
        && read_plans(root, cat, &e) == 0
        && check_default_plans(cat, &e) == 0)
    {
        rc = 0;
    }
    cJSON_Delete(root);
    if (rc != 0) {
        apimon_catalog_free(cat);
    }
    return rc;
}

void
apimon_catalog_free(apimon_catalog_t *cat)
{
    size_t i;

    if (cat == NULL) {
        return;
    }
    for (i = 0; cat->products != NULL && i < cat->nproducts; i++) {
        free(cat->products[i].display_name);
        free(cat->products[i].description);
        free(cat->products[i].apis);
    }
    for (i = 0; cat->plans != NULL && i < cat->nplans; i++) {
        free(cat->plans[i].display_name);
        free(cat->plans[i].description);
        free_webhooks(cat->plans[i].webhooks, cat->plans[i].nwebhooks);
    }
    free_webhooks(cat->webhooks, cat->nwebhooks);
    free(cat->products);
    free(cat->plans);
    memset(cat, 0, sizeof(*cat));
}

const apimon_plan_t *
apimon_catalog_plan(const apimon_catalog_t *cat, const char *name)
{
    size_t i;

    for (i = 0; name != NULL && i < cat->nplans; i++) {
        if (strcmp(cat->plans[i].name, name) == 0) {
            return &cat->plans[i];
        }
    }
    return NULL;
}

const apimon_product_t *
apimon_catalog_product(const apimon_catalog_t *cat, const char *name)
{
    size_t i;

    for (i = 0; name != NULL && i < cat->nproducts; i++) {
        if (strcmp(cat->products[i].name, name) == 0) {
            return &cat->products[i];
        }
    }
    return NULL;
}

int
apimon_pricing_parse(const char *json, apimon_pricing_t *pr, char *err,
    size_t errlen)
{
    err_t   e = { err, errlen };
    cJSON  *root;
    int     rc;

    if (err != NULL && errlen > 0) {
        err[0] = '\0';
    }
    memset(pr, 0, sizeof(*pr));
    if (json == NULL) {
        return bad(&e, "pricing", "no text");
    }
    root = parse_json(json, strlen(json), &e);
    if (root == NULL) {
        return -1;
    }
    rc = read_pricing(root, "pricing", pr, &e);
    cJSON_Delete(root);
    return rc;
}
