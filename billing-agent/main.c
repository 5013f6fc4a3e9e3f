/*
 * billing-agent: the command line.  See README.md, "The billing agent".
 *
 *   billing-agent [options] catalog apply FILE
 *   billing-agent [options] catalog show
 *   billing-agent [options] customer set <developer-email|appgroup:NAME> ID
 *   billing-agent [options] bill [--period YYYY-MM] [--dry-run] ...
 *   billing-agent [options] reconcile --period YYYY-MM
 *   billing-agent [options] report --period YYYY-MM --report-html FILE
 *   billing-agent [options] notify [--once]
 *
 * Secrets never come from argv: the Stripe key is read from STRIPE_API_KEY
 * or from an owner-only file (--stripe-key-file).
 */

#include "agent_redis.h"
#include "bill.h"
#include "catalog.h"
#include "notify.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <ngx_http_apimon_scripts.h>
#include <ngx_http_apimon_version.h>

#define AGENT_DEFAULT_REDIS  "127.0.0.1:6379"
#define AGENT_DEFAULT_STRIPE "https://api.stripe.com"
#define AGENT_FILE_MAX       (16 * 1024 * 1024)


static const char  *usage_text =
"usage: billing-agent [options] COMMAND\n"
"\n"
"commands:\n"
"  catalog apply FILE       validate a catalog document and load it into\n"
"                           Redis atomically (the version is bumped)\n"
"  catalog show             print the catalog Redis holds\n"
"  customer set OWNER ID    set the billing customer id (cus_...) of a\n"
"                           developer (email) or an app group (appgroup:NAME)\n"
"  bill                     price closed months and push invoice items\n"
"  reconcile                rebuild the ledger of --period from what the\n"
"                           Stripe API holds (after the ledger was lost)\n"
"  report                   write the --report/--report-html of --period\n"
"                           from Redis and the ledger, posting nothing\n"
"  notify                   deliver the events of apimon:events to the\n"
"                           catalog's webhooks, signed (until SIGTERM)\n"
"\n"
"options:\n"
"  --effective DATE         catalog apply: the prices take effect then\n"
"                           (YYYY-MM-DD or RFC 3339, UTC; default now)\n"
"  --redis ADDR             host[:port], [ipv6][:port] or unix:/path, then\n"
"                           db=N password_file=F connect_timeout=T as in\n"
"                           apimon_redis, one argument (env APIMON_REDIS,\n"
"                           default " AGENT_DEFAULT_REDIS ")\n"
"  --period YYYY-MM         month to bill (default: every closed month not\n"
"                           yet done, by Redis's clock)\n"
"  --since YYYY-MM          without --period: start no earlier than this\n"
"  --allow-open             allow billing a month that has not ended\n"
"  --boundary-margin S      refuse a run this near the end of a month it\n"
"                           bills (default 300; 0 = never)\n"
"  --allow-unsafe-redis     bill even if Redis's persistence may lose usage\n"
"  --dry-run                print the exact request bodies, change nothing\n"
"  --report FILE            write every line as CSV, or JSON lines if FILE\n"
"                           ends in .json, .jsonl or .ndjson\n"
"  --report-html FILE       write a self-contained HTML report of the run\n"
"  --metrics-file FILE      write the run's outcome as a node-exporter\n"
"                           textfile (atomically: temporary file, rename)\n"
"  --create-invoices        put each customer's lines on one invoice of\n"
"                           exactly them, then finalize it\n"
"  --finalize               with --create-invoices: finalize (default)\n"
"  --draft                  with --create-invoices: leave drafts\n"
"  --retry-failed           post lines the API refused again, with a new\n"
"                           key (after fixing the cause)\n"
"  --max-rps N              at most N API requests per second (default 20)\n"
"  --stripe-key-file FILE   read the secret key from FILE (owner-only);\n"
"                           otherwise from STRIPE_API_KEY\n"
"  --timeout SECONDS        per request (default 30)\n"
"  --max-retries N          per request (default 3)\n"
"  --lock-ttl SECONDS       lifetime of the run lock (default 600)\n"
"  --batch N                subscriptions per Redis pipeline (default 1000)\n"
"  --once                   notify: exit when no event is left to deliver\n"
"  --consumer NAME          notify: the consumer name in the group\n"
"                           apimon-notify (default <hostname>-<pid>)\n"
"  --max-attempts N         notify: deliveries of an event before it is\n"
"                           parked in apimon:events:dead (default 5)\n"
"  --claim-idle SECONDS     notify: take over the events another consumer\n"
"                           left unacknowledged this long (default 60)\n"
"  --quiet                  log errors only\n"
"  -h, --help               this text\n"
"  --version                the version\n"
"\n"
"environment: APIMON_REDIS, APIMON_REDIS_PASSWORD, STRIPE_API_KEY,\n"
"STRIPE_API_BASE (default " AGENT_DEFAULT_STRIPE ")\n"
"\n"
"exit codes: 0 all lines done; 1 some lines failed, unresolved or without a\n"
"customer, or a subscription could not be priced (rerun to resume);\n"
"2 configuration or usage error; 3 another run holds the lock; 4 Redis's\n"
"persistence may lose usage (see --allow-unsafe-redis); 5 too near the end\n"
"of a month to bill (see --boundary-margin)\n";


typedef struct {
    const char  *redis;
    const char  *key_file;
    int64_t      effective_ms;   /* catalog apply --effective, 0 = now */
    bill_opts_t  bill;
    notify_opts_t notify;
} agent_conf_t;


static int
usage_error(const char *fmt, const char *arg)
{
    fputs("billing-agent: ", stderr);
    fprintf(stderr, fmt, arg);
    fputs("\nTry 'billing-agent --help'.\n", stderr);
    return AGENT_EXIT_CONFIG;
}


/* reads a whole file; NULL with errno on failure */
static char *
read_file(const char *path, size_t *len)
{
    FILE    *f;
    char    *buf;
    size_t   n = 0, cap = 65536, got;

    f = fopen(path, "r");
    if (f == NULL) {
        return NULL;
    }
    buf = xmalloc(cap + 1);
    while ((got = fread(buf + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap) {
            if (cap >= AGENT_FILE_MAX) {
                fclose(f);
                free(buf);
                errno = EFBIG;
                return NULL;
            }
            cap *= 2;
            buf = xrealloc(buf, cap + 1);
        }
    }
    fclose(f);
    buf[n] = '\0';
    *len = n;
    return buf;
}


static char *
secret_from_env(char *err, size_t errlen)
{
    const char  *k = getenv("STRIPE_API_KEY");
    size_t       i;

    if (k == NULL || k[0] == '\0') {
        snprintf(err, errlen, "no Stripe secret key: set STRIPE_API_KEY or "
                 "--stripe-key-file");
        return NULL;
    }
    for (i = 0; k[i]; i++) {
        if ((unsigned char) k[i] <= ' ' || k[i] == 0x7f) {
            snprintf(err, errlen, "STRIPE_API_KEY holds whitespace or control "
                     "characters");
            return NULL;
        }
    }
    return xstrdup(k);
}


static redisContext *
agent_redis(const agent_conf_t *conf)
{
    redisContext  *c;
    char           err[512];

    c = ar_connect(conf->redis, getenv("APIMON_REDIS_PASSWORD"), err,
                   sizeof(err));
    if (c == NULL) {
        agent_err("%s", err);
    }
    return c;
}


/* maps a script error reply to a message and exit code 2 */
static int
script_failed(redisContext *c, redisReply *r, const char *what)
{
    char         code[32];
    const char  *msg;

    if (r == NULL) {
        agent_err("%s: Redis: %s", what, c->errstr);
    } else if (ar_script_error(r, code, sizeof(code), &msg) == 0) {
        agent_err("%s: %s: %s", what, code, msg);
    } else {
        agent_err("%s: Redis: %s", what,
                  r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
    }
    if (r) {
        freeReplyObject(r);
    }
    return AGENT_EXIT_CONFIG;
}


static int
cmd_catalog_apply(const agent_conf_t *conf, const char *path)
{
    apimon_catalog_t   cat;
    redisContext      *c;
    redisReply        *r;
    char               err[APIMON_CATALOG_ERRLEN], now[24], eff[32];
    const char        *argv[4];
    char              *text;
    size_t             len;
    int                rc;

    text = read_file(path, &len);
    if (text == NULL) {
        agent_err("%s: %s", path, strerror(errno));
        return AGENT_EXIT_CONFIG;
    }

    /* our own checks first: their messages name the offending field */
    if (apimon_catalog_parse(text, len, &cat, err, sizeof(err)) != 0) {
        agent_err("%s: %s", path, err);
        free(text);
        return AGENT_EXIT_CONFIG;
    }

    /* a limit nobody enforces is not sold: refused until the check has it */
    if (apimon_catalog_enforced(&cat, err, sizeof(err)) != 0) {
        agent_err("%s: %s", path, err);
        apimon_catalog_free(&cat);
        free(text);
        return AGENT_EXIT_CONFIG;
    }

    c = agent_redis(conf);
    if (c == NULL) {
        apimon_catalog_free(&cat);
        free(text);
        return AGENT_EXIT_CONFIG;
    }

    snprintf(now, sizeof(now), "%lld", (long long) agent_now_ms());
    argv[0] = text;
    argv[1] = now;
    snprintf(eff, sizeof(eff), "%lld", (long long) conf->effective_ms);
    argv[2] = "";                           /* who: the default */
    argv[3] = eff;
    r = ar_script(c, APIMON_SCRIPT_CATALOG_APPLY, 0, argv, 4);

    if (r == NULL || r->type == REDIS_REPLY_ERROR) {
        rc = script_failed(c, r, "catalog apply");
    } else {
        printf("catalog %s applied: version %lld (%zu products, %zu plans)\n",
               path, r->type == REDIS_REPLY_INTEGER ? r->integer
                     : (r->str ? atoll(r->str) : 0LL),
               cat.nproducts, cat.nplans);
        if (conf->effective_ms) {
            agent_iso_time(conf->effective_ms, eff, sizeof(eff));
            printf("prices effective %s\n", eff);
        }
        agent_log("catalog %s applied", path);
        freeReplyObject(r);
        rc = AGENT_EXIT_OK;
    }

    redisFree(c);
    apimon_catalog_free(&cat);
    free(text);
    return rc;
}


/* a plan's price versions (apimon:plan:<name>:prices), oldest first */
static void
show_prices(redisContext *c, const char *plan)
{
    redisReply  *r;
    const char  *bar;
    char         ts[32];
    size_t       i;
    int64_t      ms;

    r = redisCommand(c, "ZRANGE apimon:plan:%s:prices 0 -1", plan);
    for (i = 0; r && r->type == REDIS_REPLY_ARRAY && i < r->elements; i++) {
        bar = strchr(r->element[i]->str, '|');
        if (bar == NULL
            || agent_parse_i64(r->element[i]->str, bar - r->element[i]->str,
                               &ms) != 0)
        {
            continue;
        }
        if (ms == 0) {
            snprintf(ts, sizeof(ts), "ever");
        } else {
            agent_iso_time(ms, ts, sizeof(ts));
        }
        printf("  price since %s: %s\n", ts, bar + 1);
    }
    if (r) {
        freeReplyObject(r);
    }
}


/* "  webhook <url> (secret file <path>)" of a stored JSON list */
static void
show_webhooks(const char *json, const char *indent)
{
    cJSON        *arr = json ? cJSON_Parse(json) : NULL;
    const cJSON  *w;

    cJSON_ArrayForEach(w, arr) {
        const cJSON *u = cJSON_GetObjectItemCaseSensitive(w, "url");
        const cJSON *f = cJSON_GetObjectItemCaseSensitive(w, "secretFile");

        if (cJSON_IsString(u) && cJSON_IsString(f)) {
            printf("%swebhook %s (secret file %s)\n", indent, u->valuestring,
                   f->valuestring);
        }
    }
    cJSON_Delete(arr);
}


/* one normalized rule of apimon:plan:<name>:rules */
static void
show_rule(const char *kind, const cJSON *r)
{
    const cJSON  *unit, *n, *t;
    const char   *s;

    unit = cJSON_GetObjectItemCaseSensitive(r, strcmp(kind, "rate") == 0
                                               ? "per" : "period");
    n = cJSON_GetObjectItemCaseSensitive(r, "interval");
    printf("  %s %s: %.0f per %.0f %s", kind,
           cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(r, "name")),
           cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(r, "limit")),
           cJSON_IsNumber(n) ? n->valuedouble : 1.0,
           cJSON_IsString(unit) ? unit->valuestring : "?");
    if (strcmp(kind, "quota") == 0) {
        printf(", %s", cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(r,
               "blockOnBreach")) ? "soft (overage)" : "blocking");
        t = cJSON_GetObjectItemCaseSensitive(r, "notify");
        if (cJSON_GetArraySize(t) > 0) {
            printf(", notify");
            for (n = t->child; n != NULL; n = n->next) {
                printf("%s%.0f%%", n == t->child ? " " : ",", n->valuedouble);
            }
            printf(" %s", cJSON_GetStringValue(
                cJSON_GetObjectItemCaseSensitive(r, "frequency")));
        }
    }
    s = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(r,
                                                       "violationMessage"));
    if (s != NULL && s[0] != '\0') {
        printf(", message \"%s\"", s);
    }
    printf("\n");
}


/* a plan's rules and webhooks (apimon:plan:<name>:rules) */
static void
show_rules(redisContext *c, const char *plan)
{
    redisReply    *r;
    cJSON         *arr;
    const cJSON   *it;
    size_t         i;
    static const char *const kinds[] = { "rate", "quota" };

    r = redisCommand(c, "HMGET apimon:plan:%s:rules rate quota webhooks",
                     plan);
    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 3) {
        if (r) {
            freeReplyObject(r);
        }
        return;
    }
    for (i = 0; i < 2; i++) {
        arr = r->element[i]->str ? cJSON_Parse(r->element[i]->str) : NULL;
        cJSON_ArrayForEach(it, arr) {
            show_rule(kinds[i], it);
        }
        cJSON_Delete(arr);
    }
    show_webhooks(r->element[2]->str, "  ");
    freeReplyObject(r);
}


static void
show_plans(redisContext *c, cJSON *doc)
{
    cJSON       *plans, *p, *name;
    redisReply  *r;

    plans = cJSON_GetObjectItemCaseSensitive(doc, "plans");
    cJSON_ArrayForEach(p, plans) {
        name = cJSON_GetObjectItemCaseSensitive(p, "name");
        if (!cJSON_IsString(name)) {
            continue;
        }
        r = redisCommand(c, "SCARD apimon:plan:%s:subs", name->valuestring);
        printf("plan %s: %lld subscriptions\n", name->valuestring,
               r && r->type == REDIS_REPLY_INTEGER ? r->integer : 0LL);
        if (r) {
            freeReplyObject(r);
        }
        show_prices(c, name->valuestring);
        show_rules(c, name->valuestring);
    }
}


/* weekStart and the top-level webhooks (apimon:catalog:settings) */
static void
show_settings(redisContext *c)
{
    redisReply *r = redisCommand(c, "HMGET apimon:catalog:settings weekStart "
                                 "webhooks");

    if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 2) {
        if (r->element[0]->str) {
            printf("week start: %s\n", r->element[0]->str);
        }
        show_webhooks(r->element[1]->str, "");
    }
    if (r) {
        freeReplyObject(r);
    }
}


static int
cmd_catalog_show(const agent_conf_t *conf)
{
    redisContext  *c;
    redisReply    *r;
    cJSON         *doc = NULL;
    char          *pretty, ts[32];
    const char    *version = NULL, *applied = NULL, *json = NULL;
    size_t         i;

    c = agent_redis(conf);
    if (c == NULL) {
        return AGENT_EXIT_CONFIG;
    }

    r = redisCommand(c, "HGETALL apimon:catalog");
    if (r == NULL || r->type != REDIS_REPLY_ARRAY) {
        agent_err("catalog show: Redis: %s", r ? "unexpected reply"
                                                : c->errstr);
        if (r) {
            freeReplyObject(r);
        }
        redisFree(c);
        return AGENT_EXIT_CONFIG;
    }

    for (i = 0; i + 1 < r->elements; i += 2) {
        if (strcmp(r->element[i]->str, "version") == 0) {
            version = r->element[i + 1]->str;
        } else if (strcmp(r->element[i]->str, "applied_ms") == 0) {
            applied = r->element[i + 1]->str;
        } else if (strcmp(r->element[i]->str, "json") == 0) {
            json = r->element[i + 1]->str;
        }
    }

    if (version == NULL) {
        printf("no catalog applied\n");
        freeReplyObject(r);
        redisFree(c);
        return AGENT_EXIT_OK;
    }

    printf("version: %s\n", version);
    if (applied) {
        agent_iso_time(atoll(applied), ts, sizeof(ts));
        printf("applied: %s\n", ts);
    }
    show_settings(c);
    doc = json ? cJSON_Parse(json) : NULL;
    if (doc) {
        show_plans(c, doc);
        pretty = cJSON_Print(doc);
        if (pretty) {
            printf("%s\n", pretty);
            cJSON_free(pretty);
        }
        cJSON_Delete(doc);
    } else if (json) {
        printf("%s\n", json);
    }

    freeReplyObject(r);
    redisFree(c);
    return AGENT_EXIT_OK;
}


static int
cmd_customer_set(const agent_conf_t *conf, const char *owner,
    const char *customer)
{
    redisContext  *c;
    redisReply    *r;
    const char    *argv[4], *kind = "developer";
    char           now[24];
    int            rc;

    if (strncmp(owner, "appgroup:", 9) == 0) {
        kind = "appgroup";
        owner += 9;
    } else if (strncmp(owner, "developer:", 10) == 0) {
        owner += 10;
    }
    if (owner[0] == '\0') {
        return usage_error("customer set: empty owner%s", "");
    }

    c = agent_redis(conf);
    if (c == NULL) {
        return AGENT_EXIT_CONFIG;
    }

    snprintf(now, sizeof(now), "%lld", (long long) agent_now_ms());
    argv[0] = kind;
    argv[1] = owner;
    argv[2] = customer;
    argv[3] = now;
    r = ar_script(c, APIMON_SCRIPT_CUSTOMER_SET, 0, argv, 4);

    if (r == NULL || r->type == REDIS_REPLY_ERROR) {
        rc = script_failed(c, r, "customer set");
    } else {
        printf("%s %s: customer %s\n", kind, owner,
               customer[0] ? customer : "(none)");
        agent_log("customer of %s %s set to %s", kind, owner,
                  customer[0] ? customer : "(none)");
        freeReplyObject(r);
        rc = AGENT_EXIT_OK;
    }
    redisFree(c);
    return rc;
}


static int
cmd_bill(agent_conf_t *conf)
{
    redisContext  *c;
    char           err[512];
    char          *secret = NULL;
    int            rc;

    if (conf->bill.mode == BILL_MODE_REPORT) {
        conf->bill.dry_run = 1;        /* reads only, prints nothing */
    }
    if (!conf->bill.dry_run) {
        secret = conf->key_file ? agent_read_secret(conf->key_file,
                                      "--stripe-key-file", err, sizeof(err))
                                : secret_from_env(err, sizeof(err));
        if (secret == NULL) {
            agent_err("%s", err);
            return AGENT_EXIT_CONFIG;
        }
    }
    conf->bill.secret = secret;

    c = agent_redis(conf);
    if (c == NULL) {
        rc = AGENT_EXIT_CONFIG;
    } else {
        rc = bill_run(c, &conf->bill);
        redisFree(c);
    }

    if (secret) {
        memset(secret, 0, strlen(secret));
        free(secret);
    }
    return rc;
}


static int
parse_num(const char *opt, const char *arg, int64_t min, int64_t max,
    int64_t *out)
{
    if (agent_parse_i64(arg, strlen(arg), out) != 0 || *out < min
        || *out > max)
    {
        fprintf(stderr, "billing-agent: %s: \"%s\" is not a number in "
                "%lld..%lld\n", opt, arg, (long long) min, (long long) max);
        return -1;
    }
    return 0;
}


enum {
    OPT_REDIS = 256, OPT_PERIOD, OPT_ALLOW_OPEN, OPT_DRY_RUN, OPT_REPORT,
    OPT_INVOICES, OPT_MAX_RPS, OPT_KEY_FILE, OPT_TIMEOUT, OPT_RETRIES,
    OPT_LOCK_TTL, OPT_BATCH, OPT_QUIET, OPT_SECRET_ARGV, OPT_RETRY_FAILED,
    OPT_SINCE, OPT_MARGIN, OPT_UNSAFE_REDIS, OPT_VERSION, OPT_DRAFT,
    OPT_FINALIZE, OPT_REPORT_HTML, OPT_EFFECTIVE, OPT_METRICS_FILE,
    OPT_ONCE, OPT_CONSUMER, OPT_MAX_ATTEMPTS, OPT_CLAIM_IDLE
};

static const struct option  long_opts[] = {
    { "help", no_argument, NULL, 'h' },
    { "version", no_argument, NULL, OPT_VERSION },
    { "redis", required_argument, NULL, OPT_REDIS },
    { "period", required_argument, NULL, OPT_PERIOD },
    { "allow-open", no_argument, NULL, OPT_ALLOW_OPEN },
    { "since", required_argument, NULL, OPT_SINCE },
    { "boundary-margin", required_argument, NULL, OPT_MARGIN },
    { "allow-unsafe-redis", no_argument, NULL, OPT_UNSAFE_REDIS },
    { "dry-run", no_argument, NULL, OPT_DRY_RUN },
    { "report", required_argument, NULL, OPT_REPORT },
    { "create-invoices", no_argument, NULL, OPT_INVOICES },
    { "draft", no_argument, NULL, OPT_DRAFT },
    { "finalize", no_argument, NULL, OPT_FINALIZE },
    { "report-html", required_argument, NULL, OPT_REPORT_HTML },
    { "effective", required_argument, NULL, OPT_EFFECTIVE },
    { "metrics-file", required_argument, NULL, OPT_METRICS_FILE },
    { "retry-failed", no_argument, NULL, OPT_RETRY_FAILED },
    { "max-rps", required_argument, NULL, OPT_MAX_RPS },
    { "stripe-key-file", required_argument, NULL, OPT_KEY_FILE },
    { "timeout", required_argument, NULL, OPT_TIMEOUT },
    { "max-retries", required_argument, NULL, OPT_RETRIES },
    { "lock-ttl", required_argument, NULL, OPT_LOCK_TTL },
    { "batch", required_argument, NULL, OPT_BATCH },
    { "quiet", no_argument, NULL, OPT_QUIET },
    { "once", no_argument, NULL, OPT_ONCE },
    { "consumer", required_argument, NULL, OPT_CONSUMER },
    { "max-attempts", required_argument, NULL, OPT_MAX_ATTEMPTS },
    { "claim-idle", required_argument, NULL, OPT_CLAIM_IDLE },
    /* recognised only to refuse them: secrets never on the command line */
    { "stripe-key", optional_argument, NULL, OPT_SECRET_ARGV },
    { "api-key", optional_argument, NULL, OPT_SECRET_ARGV },
    { "secret", optional_argument, NULL, OPT_SECRET_ARGV },
    { NULL, 0, NULL, 0 }
};


/* 0 ok, else the exit code */
static int
parse_options(int argc, char **argv, agent_conf_t *conf)
{
    int64_t  v;
    int      ch;
    char     name[64];
    const char *eq;

    /* our own messages: getopt's would echo "--opt=value" to stderr */
    opterr = 0;

    while ((ch = getopt_long(argc, argv, "h", long_opts, NULL)) != -1) {
        switch (ch) {
        case 'h':
            fputs(usage_text, stdout);
            exit(AGENT_EXIT_OK);
        case OPT_VERSION:
            puts("billing-agent " APIMON_VERSION);
            exit(AGENT_EXIT_OK);
        case OPT_REDIS:
            conf->redis = optarg;
            break;
        case OPT_PERIOD:
            conf->bill.period = optarg;
            break;
        case OPT_ALLOW_OPEN:
            conf->bill.allow_open = 1;
            break;
        case OPT_SINCE:
            conf->bill.since = optarg;
            break;
        case OPT_MARGIN:
            /* up to a month: 0 turns the check off */
            if (parse_num("--boundary-margin", optarg, 0, 31 * 86400, &v)
                != 0)
            {
                return AGENT_EXIT_CONFIG;
            }
            conf->bill.margin_ms = v * 1000;
            break;
        case OPT_UNSAFE_REDIS:
            conf->bill.allow_unsafe_redis = 1;
            break;
        case OPT_DRY_RUN:
            conf->bill.dry_run = 1;
            break;
        case OPT_REPORT:
            conf->bill.report = optarg;
            break;
        case OPT_INVOICES:
            conf->bill.create_invoices = 1;
            break;
        case OPT_DRAFT:
        case OPT_FINALIZE:
            conf->bill.draft = (ch == OPT_DRAFT);
            break;
        case OPT_REPORT_HTML:
            conf->bill.report_html = optarg;
            break;
        case OPT_EFFECTIVE:
            if (apimon_time_parse(optarg, &conf->effective_ms) != 0
                || conf->effective_ms < 946684800000LL)
            {
                return usage_error("--effective %s: not a date YYYY-MM-DD "
                                   "or an RFC 3339 time from 2000 on",
                                   optarg);
            }
            break;
        case OPT_METRICS_FILE:
            conf->bill.metrics_file = optarg;
            break;
        case OPT_RETRY_FAILED:
            conf->bill.retry_failed = 1;
            break;
        case OPT_MAX_RPS:
            if (parse_num("--max-rps", optarg, 1, 1000000, &v) != 0) {
                return AGENT_EXIT_CONFIG;
            }
            conf->bill.max_rps = (double) v;
            break;
        case OPT_KEY_FILE:
            conf->key_file = optarg;
            break;
        case OPT_TIMEOUT:
            if (parse_num("--timeout", optarg, 1, 3600, &v) != 0) {
                return AGENT_EXIT_CONFIG;
            }
            conf->bill.timeout_ms = (long) v * 1000;
            break;
        case OPT_RETRIES:
            if (parse_num("--max-retries", optarg, 0, 20, &v) != 0) {
                return AGENT_EXIT_CONFIG;
            }
            conf->bill.max_retries = (int) v;
            break;
        case OPT_LOCK_TTL:
            if (parse_num("--lock-ttl", optarg, 1, 86400, &v) != 0) {
                return AGENT_EXIT_CONFIG;
            }
            conf->bill.lock_ttl_ms = v * 1000;
            break;
        case OPT_BATCH:
            if (parse_num("--batch", optarg, 1, 100000, &v) != 0) {
                return AGENT_EXIT_CONFIG;
            }
            conf->bill.batch = (int) v;
            break;
        case OPT_QUIET:
            agent_quiet = 1;
            break;
        case OPT_ONCE:
            conf->notify.once = 1;
            break;
        case OPT_CONSUMER:
            if (strlen(optarg) == 0 || strlen(optarg) > 100
                || strspn(optarg, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMN"
                          "OPQRSTUVWXYZ0123456789._-") != strlen(optarg))
            {
                return usage_error("--consumer %s: must match "
                                   "^[A-Za-z0-9._-]{1,100}$", optarg);
            }
            conf->notify.consumer = optarg;
            break;
        case OPT_MAX_ATTEMPTS:
            if (parse_num("--max-attempts", optarg, 1, 100, &v) != 0) {
                return AGENT_EXIT_CONFIG;
            }
            conf->notify.max_attempts = (int) v;
            break;
        case OPT_CLAIM_IDLE:
            if (parse_num("--claim-idle", optarg, 0, 86400, &v) != 0) {
                return AGENT_EXIT_CONFIG;
            }
            conf->notify.claim_idle_ms = v * 1000;
            break;
        case OPT_SECRET_ARGV:
            return usage_error("%s", "secrets are never read from the "
                               "command line: set STRIPE_API_KEY or use "
                               "--stripe-key-file");
        default:
            /* name the option without any "=value" it carried */
            eq = argv[optind - 1] ? strchr(argv[optind - 1], '=') : NULL;
            snprintf(name, sizeof(name), "%.*s",
                     eq ? (int) (eq - argv[optind - 1]) : 40,
                     argv[optind - 1] ? argv[optind - 1] : "?");
            if (optopt && optopt < 256 && ch == '?') {
                snprintf(name, sizeof(name), "-%c", optopt);
            }
            return usage_error("unknown option or missing argument: %s",
                               name);
        }
    }
    if (conf->bill.since && conf->bill.period) {
        return usage_error("--since %s: only for runs without --period",
                           conf->bill.since);
    }
    return 0;
}


int
main(int argc, char **argv)
{
    agent_conf_t  conf;
    const char   *env;
    char        **args;
    int           nargs, rc;

    /* a peer that closed (Redis, the API) is an error to handle, not death */
    signal(SIGPIPE, SIG_IGN);

    memset(&conf, 0, sizeof(conf));
    env = getenv("APIMON_REDIS");
    conf.redis = (env && *env) ? env : AGENT_DEFAULT_REDIS;
    env = getenv("STRIPE_API_BASE");
    conf.bill.stripe_base = (env && *env) ? env : AGENT_DEFAULT_STRIPE;
    conf.bill.max_rps = 20;
    conf.bill.timeout_ms = 30000;
    conf.bill.max_retries = 3;
    conf.bill.lock_ttl_ms = 600000;
    conf.bill.batch = 1000;
    conf.bill.margin_ms = 300000;
    conf.notify.max_attempts = 5;
    conf.notify.claim_idle_ms = 60000;

    rc = parse_options(argc, argv, &conf);
    if (rc != 0) {
        return rc;
    }
    conf.bill.redis_addr = conf.redis;
    conf.bill.redis_password = getenv("APIMON_REDIS_PASSWORD");

    args = argv + optind;
    nargs = argc - optind;

    if (nargs == 0) {
        fputs(usage_text, stderr);
        return AGENT_EXIT_CONFIG;
    }

    if (conf.effective_ms
        && (nargs != 3 || strcmp(args[0], "catalog") != 0
            || strcmp(args[1], "apply") != 0))
    {
        return usage_error("--effective: only with catalog apply%s", "");
    }

    if (strcmp(args[0], "catalog") == 0) {
        if (nargs == 3 && strcmp(args[1], "apply") == 0) {
            return cmd_catalog_apply(&conf, args[2]);
        }
        if (nargs == 2 && strcmp(args[1], "show") == 0) {
            return cmd_catalog_show(&conf);
        }
        return usage_error("usage: catalog apply FILE | catalog show%s", "");
    }

    if (strcmp(args[0], "customer") == 0) {
        if (nargs == 4 && strcmp(args[1], "set") == 0) {
            return cmd_customer_set(&conf, args[2], args[3]);
        }
        return usage_error("usage: customer set <developer-email|"
                           "appgroup:NAME> <customer-id>%s", "");
    }

    if (strcmp(args[0], "notify") == 0) {
        if (nargs != 1) {
            return usage_error("unexpected argument \"%s\"", args[1]);
        }
        conf.notify.redis_addr = conf.redis;
        conf.notify.redis_password = conf.bill.redis_password;
        conf.notify.timeout_ms = conf.bill.timeout_ms;
        return notify_run(&conf.notify);
    }

    if (strcmp(args[0], "bill") == 0 || strcmp(args[0], "reconcile") == 0
        || strcmp(args[0], "report") == 0)
    {
        if (nargs != 1) {
            return usage_error("unexpected argument \"%s\"", args[1]);
        }
        if (args[0][0] != 'b' && conf.bill.period == NULL) {
            return usage_error("%s needs --period YYYY-MM", args[0]);
        }
        conf.bill.mode = args[0][0] == 'b' ? BILL_MODE_BILL
                         : args[0][2] == 'c' ? BILL_MODE_RECONCILE
                         : BILL_MODE_REPORT;
        return cmd_bill(&conf);
    }

    return usage_error("unknown command \"%s\"", args[0]);
}
