/*
 * Catalog unit tests: the shipped example parses to what it says, and each
 * broken document is refused with a message naming the offending field.
 * Documents are written with ' for " to keep the table readable.
 */

#include <stdio.h>
#include <stdlib.h>

#include "catalog.h"
#include "tap.h"

/* ' → " in a copy the caller frees */
static char *
dq(const char *s)
{
    char    *c = strdup(s);
    size_t   i;

    for (i = 0; c != NULL && c[i]; i++) {
        if (c[i] == '\'') {
            c[i] = '"';
        }
    }
    return c;
}

static char *
slurp(const char *path, size_t *len)
{
    FILE   *f = fopen(path, "rb");
    char   *buf;
    long    n;

    if (f == NULL) {
        return NULL;
    }
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = malloc(n + 1);
    if (buf != NULL && fread(buf, 1, n, f) != (size_t) n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    if (buf != NULL) {
        buf[n] = '\0';
        *len = (size_t) n;
    }
    return buf;
}

/* ---- the example -------------------------------------------------------- */

static void
test_example(void)
{
    apimon_catalog_t         cat;
    const apimon_plan_t     *pl;
    const apimon_product_t  *pr;
    char                     err[APIMON_CATALOG_ERRLEN] = "";
    size_t                   len = 0;
    char                    *text = slurp("schema/catalog.example.json", &len);
    int                      models = 0;
    size_t                   i;

    if (!ok(text != NULL, "read schema/catalog.example.json (run from the "
            "repository root)"))
    {
        return;
    }
    if (!is_int(apimon_catalog_parse(text, len, &cat, err, sizeof(err)), 0,
            "the example validates"))
    {
        diag("%s", err);
        free(text);
        return;
    }
    is_int(cat.nproducts, 2, "two products");
    is_int(cat.nplans, 7, "seven plans");
    for (i = 0; i < cat.nplans; i++) {
        models |= 1 << cat.plans[i].pricing.model;
    }
    is_int(models, 0x7f, "every pricing model is in the example");

    pr = apimon_catalog_product(&cat, "weather");
    ok(pr != NULL && pr->napis == 2 && strcmp(pr->apis[0], "forecast") == 0
       && strcmp(pr->apis[1], "history") == 0
       && strcmp(pr->display_name, "Weather API") == 0,
       "weather: forecast, history");
    ok(apimon_catalog_product(&cat, "nope") == NULL, "no product nope");

    pl = apimon_catalog_plan(&cat, "weather-bronze");
    ok(pl != NULL && pl->manual == 0 && pl->rate_n == 5 && pl->rate_w == 1
       && pl->quota_n == 10000 && strcmp(pl->quota_unit, "month") == 0
       && pl->pricing.model == APIMON_MODEL_FLAT
       && pl->pricing.amount == 2900
       && strcmp(pl->pricing.currency, "usd") == 0
       && strcmp(pl->product, "weather") == 0,
       "bronze: auto, 5/s, 10000/month, flat 29.00 usd");

    pl = apimon_catalog_plan(&cat, "weather-silver");
    ok(pl != NULL && pl->quota_n == 0 && pl->quota_unit[0] == '\0'
       && pl->pricing.model == APIMON_MODEL_FLAT_WITH_OVERAGE
       && pl->pricing.included_units == 100 && pl->pricing.unit_size == 1000
       && pl->pricing.unit_amount == 50 && pl->pricing.round_up == 1,
       "silver: no quota, flat_with_overage 100 units of 1000 included");

    pl = apimon_catalog_plan(&cat, "weather-gold");
    ok(pl != NULL && pl->manual == 1 && pl->pricing.ntiers == 3
       && pl->pricing.tiers[0].up_to == 1000
       && pl->pricing.tiers[0].flat_amount == 5000
       && pl->pricing.tiers[1].flat_amount == 0
       && pl->pricing.tiers[2].up_to == -1
       && pl->pricing.tiers[2].unit_amount == 10,
       "gold: manual, three graduated tiers, the last open");

    pl = apimon_catalog_plan(&cat, "maps-payg");
    ok(pl != NULL && pl->pricing.round_up == 0 && pl->display_name[0]
       && strcmp(pl->pricing.currency, "eur") == 0, "payg: rounding down");

    pl = apimon_catalog_plan(&cat, "maps-blocks");
    ok(pl != NULL && pl->rate_n == 0 && pl->rate_w == 0
       && pl->quota_n == 1000 && strcmp(pl->quota_unit, "minute") == 0
       && pl->pricing.package_size == 50000,
       "blocks: no rate limit, 1000/minute, packages of 50000");

    pl = apimon_catalog_plan(&cat, "weather-free");
    ok(pl != NULL && pl->pricing.model == APIMON_MODEL_FREE
       && pl->pricing.currency[0] == '\0', "free: no currency");
    ok(apimon_catalog_plan(&cat, "nope") == NULL, "no plan nope");

    apimon_catalog_free(&cat);
    ok(cat.plans == NULL && cat.nplans == 0, "free empties the catalog");
    apimon_catalog_free(&cat);
    ok(1, "free twice is harmless");
    free(text);
}

/* ---- broken documents --------------------------------------------------- */

#define PROD    "{'name':'weather','apis':['forecast','history']}"
#define FLATP   "{'model':'flat','currency':'usd','amount':2900}"
#define DOC(products, plans) \
    "{'products':[" products "],'plans':[" plans "]}"
#define PLAN(name, rest) \
    "{'name':'" name "','product':'weather'" rest "}"
#define PRICED(pricing)  DOC(PROD, PLAN("p1", ",'pricing':" pricing))
#define TIERED(tiers) \
    PRICED("{'model':'graduated','currency':'usd','tiers':[" tiers "]}")

static const struct {
    const char *doc, *err;
} broken[] = {
    /* not JSON */
    { "{'products': [", "invalid JSON at line 1, column 15" },
    { DOC(PROD, "") " x", "invalid JSON at line 1, column 76" },
    { "{\n  'products': [],\n  'plans': [,]\n}",
      "invalid JSON at line 3, column 13" },
    { "", "invalid JSON at line 1, column 1" },
    /* the document */
    { "[]", "document: must be an object" },
    { "{'products':[]}", "plans: required" },
    { "{'products':{},'plans':[]}", "products: must be an array" },
    { "{'products':[],'plans':[],'plan':[]}", "plan: unknown field" },
    /* products */
    { DOC("{'name':'wea ther','apis':['a']}", ""),
      "products[0].name: must match ^[A-Za-z0-9._-]{1,64}$" },
    { DOC("{'name':'"
          "a123456789a123456789a123456789a123456789a123456789a123456789"
          "abcde','apis':['a']}", ""),
      "products[0].name: must match ^[A-Za-z0-9._-]{1,64}$" },
    { DOC("{'apis':['a']}", ""), "products[0].name: required" },
    { DOC(PROD "," PROD, ""),
      "products[1].name: duplicate product weather" },
    { DOC("{'name':'w','apis':[]}", ""),
      "products[0].apis: must be a non-empty array of API names" },
    { DOC("{'name':'w','apis':['forecast','forecast']}", ""),
      "products[0].apis[1]: duplicate api forecast" },
    { DOC("{'name':'w','apis':['ok',7]}", ""),
      "products[0].apis[1]: must be a string" },
    { DOC("{'name':'w','apis':['a'],'displayName':3}", ""),
      "products[0].displayName: must be a string" },
    { DOC("{'name':'w','apis':['a'],'owner':'me'}", ""),
      "products[0].owner: unknown field" },
    /* plans */
    { DOC(PROD, "{'name':'p1','product':'nope','pricing':" FLATP "}"),
      "plans[0].product: no product named nope" },
    { DOC(PROD, PLAN("p1", ",'pricing':" FLATP) ","
          PLAN("p1", ",'pricing':" FLATP)),
      "plans[1].name: duplicate plan p1" },
    { DOC(PROD, "{'name':'p1','pricing':" FLATP "}"),
      "plans[0].product: required" },
    { DOC(PROD, PLAN("p1", "")), "plans[0].pricing: required" },
    { DOC(PROD, PLAN("p1", ",'approval':'sometimes','pricing':" FLATP)),
      "plans[0].approval: must be one of auto, manual" },
    { DOC(PROD, PLAN("p1", ",'rateLimit':{'limit':5,'per':'week'},"
          "'pricing':" FLATP)),
      "plans[0].rateLimit.per: must be one of second, minute, hour, day" },
    { DOC(PROD, PLAN("p1", ",'rateLimit':{'limit':0,'per':'second'},"
          "'pricing':" FLATP)),
      "plans[0].rateLimit.limit: must be >= 1" },
    { DOC(PROD, PLAN("p1", ",'rateLimit':{'per':'second'},"
          "'pricing':" FLATP)),
      "plans[0].rateLimit.limit: required" },
    { DOC(PROD, PLAN("p1", ",'rateLimit':5,'pricing':" FLATP)),
      "plans[0].rateLimit: must be an object or an array of them" },
    { DOC(PROD, PLAN("p1", ",'quota':{'limit':10,'period':'year'},"
          "'pricing':" FLATP)),
      "plans[0].quota.period: must be one of second, minute, hour, day, "
      "week, month" },
    /* rules: lists, intervals, quota fields, names */
    { DOC(PROD, PLAN("p1", ",'rateLimit':[{'limit':5,'per':'second'},"
          "{'limit':5,'per':'fortnight'}],'pricing':" FLATP)),
      "plans[0].rateLimit[1].per: must be one of second, minute, hour, day" },
    { DOC(PROD, PLAN("p1", ",'rateLimit':[{'limit':5,'per':'second',"
          "'interval':0}],'pricing':" FLATP)),
      "plans[0].rateLimit[0].interval: must be >= 1" },
    { DOC(PROD, PLAN("p1", ",'quota':{'limit':5,'period':'week',"
          "'interval':1001},'pricing':" FLATP)),
      "plans[0].quota.interval: must be at most 1000" },
    { DOC(PROD, PLAN("p1", ",'quota':{'limit':5,'period':'week',"
          "'interval':1.5},'pricing':" FLATP)),
      "plans[0].quota.interval: must be an integer" },
    { DOC(PROD, PLAN("p1", ",'rateLimit':{'limit':5,'per':'second',"
          "'blockOnBreach':false},'pricing':" FLATP)),
      "plans[0].rateLimit.blockOnBreach: not used by rate rules" },
    { DOC(PROD, PLAN("p1", ",'quota':{'limit':5,'per':'day'},"
          "'pricing':" FLATP)),
      "plans[0].quota.per: not used by quota rules" },
    { DOC(PROD, PLAN("p1", ",'quota':[{'limit':5,'period':'day',"
          "'blockOnBreach':'no'}],'pricing':" FLATP)),
      "plans[0].quota[0].blockOnBreach: must be true or false" },
    { DOC(PROD, PLAN("p1", ",'quota':{'limit':5,'period':'day',"
          "'frequency':'always'},'pricing':" FLATP)),
      "plans[0].quota.frequency: must be one of once, every" },
    { DOC(PROD, PLAN("p1", ",'quota':{'limit':5,'period':'day',"
          "'notify':[50,80,80]},'pricing':" FLATP)),
      "plans[0].quota.notify[2]: thresholds must be ascending" },
    { DOC(PROD, PLAN("p1", ",'quota':{'limit':5,'period':'day',"
          "'notify':[0]},'pricing':" FLATP)),
      "plans[0].quota.notify[0]: must be an integer percentage from 1 to "
      "1000" },
    { DOC(PROD, PLAN("p1", ",'quota':{'limit':5,'period':'day',"
          "'notify':80},'pricing':" FLATP)),
      "plans[0].quota.notify: must be an array of percentages" },
    { DOC(PROD, PLAN("p1", ",'rateLimit':{'limit':5,'per':'day',"
          "'name':'x'},'quota':[{'limit':5,'period':'day'},{'name':'x',"
          "'limit':9,'period':'month'}],'pricing':" FLATP)),
      "plans[0].quota[1].name: duplicate rule name x" },
    { DOC(PROD, PLAN("p1", ",'quota':[{'limit':5,'period':'day',"
          "'name':'plan-quota-2'},{'limit':9,'period':'month'}],"
          "'pricing':" FLATP)),
      "plans[0].quota[1].name: duplicate rule name plan-quota-2" },
    { DOC(PROD, PLAN("p1", ",'quota':{'limit':5,'period':'day','name':"
          "'a b'},'pricing':" FLATP)),
      "plans[0].quota.name: must match ^[A-Za-z0-9._-]{1,64}$" },
    { DOC(PROD, PLAN("p1", ",'quota':{'limit':5,'period':'day',"
          "'violationMessage':7},'pricing':" FLATP)),
      "plans[0].quota.violationMessage: must be a string" },
    { DOC(PROD, PLAN("p1", ",'rateLimit':[1,2,3,4,5,6,7,8,9],"
          "'pricing':" FLATP)),
      "plans[0].rateLimit: at most 8 rules" },
    { DOC(PROD, PLAN("p1", ",'rateLimit':[5],'pricing':" FLATP)),
      "plans[0].rateLimit[0]: must be an object" },
    /* weekStart and webhooks */
    { "{'products':[],'plans':[],'weekStart':'sun'}",
      "weekStart: must be one of monday, tuesday, wednesday, thursday, "
      "friday, saturday, sunday" },
    { "{'products':[],'plans':[],'webhooks':{}}",
      "webhooks: must be an array" },
    { "{'products':[],'plans':[],'webhooks':[{'url':'ftp://x',"
      "'secretFile':'/s'}]}",
      "webhooks[0].url: must be an http:// or https:// URL" },
    { "{'products':[],'plans':[],'webhooks':[{'url':'http://a b',"
      "'secretFile':'/s'}]}",
      "webhooks[0].url: must not hold spaces or control characters" },
    { "{'products':[],'plans':[],'webhooks':[{'url':'https:///x',"
      "'secretFile':'/s'}]}",
      "webhooks[0].url: has no host" },
    { "{'products':[],'plans':[],'webhooks':[{'url':'http://h/'}]}",
      "webhooks[0].secretFile: required" },
    { "{'products':[],'plans':[],'webhooks':[{'url':'http://h/',"
      "'secretFile':'rel/s'}]}",
      "webhooks[0].secretFile: must be an absolute path (the file holds the "
      "signing secret)" },
    { "{'products':[],'plans':[],'webhooks':[{'url':'http://h/',"
      "'secretFile':'/s','secret':'x'}]}",
      "webhooks[0].secret: unknown field" },
    { DOC(PROD, PLAN("p1", ",'webhooks':[{'url':'http://h/','secretFile':"
          "'/s'},{'url':'mailto:x','secretFile':'/s'}],'pricing':" FLATP)),
      "plans[0].webhooks[1].url: must be an http:// or https:// URL" },
    { DOC(PROD, PLAN("p1", ",'quota':{'limit':10,'period':'day','burst':1},"
          "'pricing':" FLATP)),
      "plans[0].quota.burst: unknown field" },
    /* pricing */
    { PRICED("'flat'"), "plans[0].pricing: must be an object" },
    { PRICED("{'currency':'usd'}"), "plans[0].pricing.model: required" },
    { PRICED("{'model':'tiered','currency':'usd'}"),
      "plans[0].pricing.model: must be one of free, flat, metered, "
      "flat_with_overage, graduated, volume, package" },
    { PRICED("{'model':'flat','currency':'USD','amount':1}"),
      "plans[0].pricing.currency: must be 3 lowercase letters (ISO 4217)" },
    { PRICED("{'model':'flat','currency':'usdollar','amount':1}"),
      "plans[0].pricing.currency: must be 3 lowercase letters (ISO 4217)" },
    { PRICED("{'model':'flat','amount':1}"),
      "plans[0].pricing.currency: required" },
    { PRICED("{'model':'free','currency':'US'}"),
      "plans[0].pricing.currency: must be 3 lowercase letters (ISO 4217)" },
    { PRICED("{'model':'flat','currency':'usd'}"),
      "plans[0].pricing.amount: required" },
    { PRICED("{'model':'flat','currency':'usd','amount':-1}"),
      "plans[0].pricing.amount: must be >= 0" },
    { PRICED("{'model':'flat','currency':'usd','amount':1000000000000}"),
      "plans[0].pricing.amount: must be less than 10^12" },
    { PRICED("{'model':'flat','currency':'usd','amount':12.5}"),
      "plans[0].pricing.amount: must be an integer" },
    { PRICED("{'model':'flat','currency':'usd','amount':'2900'}"),
      "plans[0].pricing.amount: must be an integer" },
    { PRICED("{'model':'flat','currency':'usd','amount':1,'amount':2}"),
      "plans[0].pricing.amount: duplicate field" },
    { PRICED("{'model':'flat','currency':'usd','amount':1,'unitSize':5}"),
      "plans[0].pricing.unitSize: not used by model flat" },
    { PRICED("{'model':'metered','currency':'usd','unitAmout':5}"),
      "plans[0].pricing.unitAmout: unknown field" },
    { PRICED("{'model':'metered','currency':'usd','unitAmount':5,"
             "'unitSize':0}"),
      "plans[0].pricing.unitSize: must be >= 1" },
    { PRICED("{'model':'metered','currency':'usd','unitAmount':5,"
             "'rounding':'nearest'}"),
      "plans[0].pricing.rounding: must be one of up, down" },
    { PRICED("{'model':'flat_with_overage','currency':'usd','amount':900,"
             "'unitAmount':5}"),
      "plans[0].pricing.includedUnits: required" },
    { PRICED("{'model':'package','currency':'usd','amount':900}"),
      "plans[0].pricing.packageSize: required" },
    { PRICED("{'model':'package','currency':'usd','amount':900,"
             "'packageSize':0}"),
      "plans[0].pricing.packageSize: must be >= 1" },
    { PRICED("{'model':'volume','currency':'usd'}"),
      "plans[0].pricing.tiers: required" },
    { TIERED(""), "plans[0].pricing.tiers: must have at least one tier" },
    { TIERED("{'upTo':1,'unitAmount':1},{'upTo':2,'unitAmount':1},"
             "{'upTo':3,'unitAmount':1},{'upTo':4,'unitAmount':1},"
             "{'upTo':5,'unitAmount':1},{'upTo':6,'unitAmount':1},"
             "{'upTo':7,'unitAmount':1},{'upTo':8,'unitAmount':1},"
             "{'upTo':9,'unitAmount':1},{'upTo':10,'unitAmount':1},"
             "{'upTo':11,'unitAmount':1},{'upTo':12,'unitAmount':1},"
             "{'upTo':13,'unitAmount':1},{'upTo':14,'unitAmount':1},"
             "{'upTo':15,'unitAmount':1},{'upTo':16,'unitAmount':1},"
             "{'upTo':null,'unitAmount':1}"),
      "plans[0].pricing.tiers: at most 16 tiers" },
    { TIERED("{'unitAmount':1}"),
      "plans[0].pricing.tiers[0].upTo: required (null for the last tier)" },
    { TIERED("{'upTo':null}"),
      "plans[0].pricing.tiers[0]: needs unitAmount or flatAmount" },
    { TIERED("{'upTo':10,'unitAmount':1},{'upTo':'inf','unitAmount':1}"),
      "plans[0].pricing.tiers[1].upTo: must be an integer or null" },
    { TIERED("{'upTo':0,'unitAmount':1},{'upTo':null,'unitAmount':1}"),
      "plans[0].pricing.tiers[0].upTo: must be >= 1" },
    { TIERED("{'upTo':null,'unitAmount':1},{'upTo':null,'unitAmount':1}"),
      "plans[0].pricing.tiers[0].upTo: only the last tier may be open "
      "(null)" },
    { TIERED("{'upTo':10,'unitAmount':1},{'upTo':20,'unitAmount':1}"),
      "plans[0].pricing.tiers[1].upTo: the last tier must be open (null)" },
    { TIERED("{'upTo':10,'unitAmount':1,'flatAmount':-5},"
             "{'upTo':null,'unitAmount':1}"),
      "plans[0].pricing.tiers[0].flatAmount: must be >= 0" },
    { TIERED("{'upTo':10,'unitAmount':1,'up_to':5},"
             "{'upTo':null,'unitAmount':1}"),
      "plans[0].pricing.tiers[0].up_to: unknown field" },
    /* the README's own example */
    { DOC(PROD, PLAN("a", ",'pricing':" FLATP) ","
          PLAN("b", ",'pricing':{'model':'free'}") ","
          PLAN("c", ",'pricing':{'model':'graduated','currency':'usd',"
               "'tiers':[{'upTo':1000,'unitAmount':5},"
               "{'upTo':1000,'unitAmount':4},"
               "{'upTo':null,'unitAmount':3}]}")),
      "plans[2].pricing.tiers[1].upTo: must be greater than 1000" },
};

static void
test_broken(void)
{
    apimon_catalog_t  cat;
    char              err[APIMON_CATALOG_ERRLEN];
    size_t            i;

    for (i = 0; i < sizeof(broken) / sizeof(broken[0]); i++) {
        char  *doc = dq(broken[i].doc);
        int    rc;

        strcpy(err, "(none)");
        rc = apimon_catalog_parse(doc, strlen(doc), &cat, err, sizeof(err));
        if (rc != -1 || cat.plans != NULL || cat.products != NULL) {
            ok(0, "broken document %zu refused and nothing kept", i);
        }
        is_str(err, broken[i].err, "refused: %s", broken[i].err);
        free(doc);
    }
}

static void
test_edges(void)
{
    apimon_catalog_t  cat;
    char              err[APIMON_CATALOG_ERRLEN];
    char             *doc;
    static const char nul[] = "{\"products\":[],\0\"plans\":[]}";

    doc = dq("{'products':[],'plans':[]}");
    is_int(apimon_catalog_parse(doc, strlen(doc), &cat, err, sizeof(err)), 0,
        "an empty catalog is valid");
    apimon_catalog_free(&cat);
    free(doc);

    is_int(apimon_catalog_parse(nul, sizeof(nul) - 1, &cat, err, sizeof(err)),
        -1, "a NUL byte inside the text is refused");
    is_str(err, "invalid JSON at line 1, column 16", "... at its position");

    doc = dq(DOC(PROD, PLAN("p1", ",'pricing':" FLATP)));
    is_int(apimon_catalog_parse(doc, strlen(doc) - 1, &cat, err,
            sizeof(err)), -1, "only len bytes are parsed");
    is_int(apimon_catalog_parse(doc, strlen(doc), &cat, NULL, 0), 0,
        "a NULL error buffer is allowed");
    apimon_catalog_free(&cat);
    free(doc);

    doc = dq(DOC(PROD, PLAN("p1", ",'pricing':{'model':'flat',"
        "'currency':'usd','amount':1e3}")));
    is_int(apimon_catalog_parse(doc, strlen(doc), &cat, err, sizeof(err)), 0,
        "1e3 is the integer 1000");
    is_int(cat.nplans == 1 ? cat.plans[0].pricing.amount : -1, 1000,
        "... read as 1000");
    apimon_catalog_free(&cat);
    free(doc);

    doc = dq(DOC(PROD, "{'name':'p1','product':'weather',"
        "'displayName':'Caf\\u00e9','description':'d',"
        "'rateLimit':{'limit':3,'per':'hour'},"
        "'quota':{'limit':7,'period':'week'},"
        "'pricing':{'model':'free','currency':'usd'}}"));
    is_int(apimon_catalog_parse(doc, strlen(doc), &cat, err, sizeof(err)), 0,
        "optional fields all given");
    ok(cat.nplans == 1 && cat.plans[0].rate_w == 3600
       && cat.plans[0].quota_n == 7
       && strcmp(cat.plans[0].quota_unit, "week") == 0
       && strcmp(cat.plans[0].display_name, "Caf\xc3\xa9") == 0
       && strcmp(cat.plans[0].pricing.currency, "usd") == 0,
       "... 3/hour, 7/week, UTF-8 display name, free with a currency");
    apimon_catalog_free(&cat);
    free(doc);
}

/* ---- one plan's pricing, as Redis holds it ------------------------------ */

static void
test_pricing_parse(void)
{
    apimon_pricing_t  pr;
    char              err[APIMON_CATALOG_ERRLEN];
    char             *j;

    /* Redis' cjson re-encodes: keys in any order */
    j = dq("{'tiers':[{'flatAmount':5000,'upTo':1000,'unitAmount':40},"
        "{'unitAmount':25,'upTo':10000},{'unitAmount':10,'upTo':null}],"
        "'rounding':'up','unitSize':1000,'currency':'usd',"
        "'model':'graduated'}");
    is_int(apimon_pricing_parse(j, &pr, err, sizeof(err)), 0,
        "gold's pricing as stored in Redis");
    ok(pr.model == APIMON_MODEL_GRADUATED && pr.ntiers == 3
       && pr.tiers[0].flat_amount == 5000 && pr.tiers[1].flat_amount == 0
       && pr.tiers[2].up_to == -1 && pr.unit_size == 1000 && pr.round_up,
       "... parsed");
    free(j);

    j = dq("{'model':'metered','currency':'usd','unitAmount':3}");
    is_int(apimon_pricing_parse(j, &pr, err, sizeof(err)), 0,
        "metered with defaults");
    ok(pr.unit_size == 1 && pr.round_up == 1, "... unitSize 1, rounding up");
    free(j);

    j = dq("{'model':'volume','currency':'usd','tiers':["
        "{'upTo':1000,'unitAmount':1},{'upTo':1000,'unitAmount':1},"
        "{'upTo':null,'unitAmount':1}]}");
    is_int(apimon_pricing_parse(j, &pr, err, sizeof(err)), -1,
        "bad tiers refused");
    is_str(err, "pricing.tiers[1].upTo: must be greater than 1000",
        "... named from pricing");
    free(j);

    is_int(apimon_pricing_parse("{\"model\":", &pr, err, sizeof(err)), -1,
        "truncated JSON refused");
    is_str(err, "invalid JSON at line 1, column 10", "... with its position");
    is_int(apimon_pricing_parse("[1]", &pr, err, sizeof(err)), -1,
        "an array refused");
    is_str(err, "pricing: must be an object", "... named pricing");
    is_int(apimon_pricing_parse(NULL, &pr, err, sizeof(err)), -1,
        "NULL refused");
}

/* the new rule forms: lists, intervals, quota fields, defaults, mirrors */
static void
test_rules(void)
{
    apimon_catalog_t      cat;
    const apimon_plan_t  *pl;
    char                  err[APIMON_CATALOG_ERRLEN] = "";
    char                 *doc;

    doc = dq("{'weekStart':'sunday','webhooks':[{'url':'https://ops.example/"
             "hook','secretFile':'/etc/apimon/hook.secret'}],"
             "'products':[" PROD "],'plans':["
             PLAN("old", ",'rateLimit':{'limit':5,'per':'second'},'quota':"
                  "{'limit':1000,'period':'month'},'pricing':" FLATP) ","
             PLAN("new", ",'rateLimit':[{'limit':100,'per':'minute',"
                  "'interval':15},{'name':'daily','limit':5000,'per':'day'}],"
                  "'quota':[{'name':'fortnight','limit':1000,'period':'week',"
                  "'interval':2,'blockOnBreach':false,'notify':[50,80,100],"
                  "'frequency':'every','violationMessage':'Upgrade to Gold'},"
                  "{'limit':20,'period':'second'}],'webhooks':[{'url':"
                  "'http://127.0.0.1:9/x','secretFile':'/s'}],'pricing':"
                  FLATP) "]}");
    if (!is_int(apimon_catalog_parse(doc, strlen(doc), &cat, err,
            sizeof(err)), 0, "rule lists, intervals and webhooks validate"))
    {
        diag("%s", err);
        free(doc);
        return;
    }
    is_int(cat.week_start, 6, "weekStart sunday");
    ok(cat.nwebhooks == 1
       && strcmp(cat.webhooks[0].secret_file, "/etc/apimon/hook.secret") == 0,
       "top-level webhook");
    pl = apimon_catalog_plan(&cat, "old");
    ok(pl != NULL && pl->nrates == 1 && pl->nquotas == 1
       && strcmp(pl->rates[0].name, "plan-rate") == 0
       && strcmp(pl->quotas[0].name, "plan-quota") == 0
       && pl->quotas[0].interval == 1 && pl->quotas[0].block == 1
       && pl->quotas[0].every == 0 && pl->quotas[0].nnotify == 0
       && pl->rate_n == 5 && pl->rate_w == 1 && pl->quota_n == 1000
       && strcmp(pl->quota_unit, "month") == 0,
       "one rule object: named plan-rate / plan-quota, defaults, mirrored");
    pl = apimon_catalog_plan(&cat, "new");
    ok(pl != NULL && pl->nrates == 2 && pl->nquotas == 2, "two and two rules");
    if (pl == NULL) {
        apimon_catalog_free(&cat);
        free(doc);
        return;
    }
    ok(strcmp(pl->rates[0].name, "plan-rate") == 0
       && pl->rates[0].interval == 15
       && pl->rates[0].unit == APIMON_UNIT_MINUTE
       && strcmp(pl->rates[1].name, "daily") == 0
       && pl->rates[1].unit == APIMON_UNIT_DAY, "rate rules");
    ok(strcmp(pl->quotas[0].name, "fortnight") == 0
       && pl->quotas[0].interval == 2 && pl->quotas[0].unit == APIMON_UNIT_WEEK
       && pl->quotas[0].block == 0 && pl->quotas[0].every == 1
       && pl->quotas[0].nnotify == 3 && pl->quotas[0].notify[2] == 100
       && strcmp(pl->quotas[0].violation, "Upgrade to Gold") == 0,
       "quota rule: interval, soft, notify, every, message");
    ok(strcmp(pl->quotas[1].name, "plan-quota-2") == 0
       && pl->quotas[1].unit == APIMON_UNIT_SECOND,
       "an unnamed second rule is plan-quota-2");
    ok(pl->rate_n == 100 && pl->rate_w == 900 && pl->quota_n == 0
       && pl->quota_unit[0] == '\0',
       "mirrored: 100 per 15 minutes = 900 s; a 2-week quota is not");
    ok(pl->nwebhooks == 1 && strcmp(pl->webhooks[0].url,
       "http://127.0.0.1:9/x") == 0, "plan webhook");
    is_str(apimon_unit_name(APIMON_UNIT_MONTH), "month", "unit names");
    apimon_catalog_free(&cat);
    free(doc);
}

int
main(void)
{
    test_example();
    test_broken();
    test_edges();
    test_rules();
    test_pricing_parse();
    return tap_done();
}
