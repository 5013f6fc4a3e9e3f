/*
 * The catalog document (schema/README.md, "The catalog document"): parsing
 * and validation.  Every error is one line "<field path>: <reason>", e.g.
 * "plans[2].pricing.tiers[1].upTo: must be greater than 1000", or for text
 * that is not JSON "invalid JSON at line 3, column 14".
 */

#ifndef APIMON_CATALOG_H
#define APIMON_CATALOG_H

#include <stddef.h>
#include <stdint.h>

#include "pricing.h"

#define APIMON_NAME_MAX      64      /* names match ^[A-Za-z0-9._-]{1,64}$ */
#define APIMON_DISPLAY_MAX   256     /* displayName, bytes */
#define APIMON_DESC_MAX      4096    /* description, bytes */
#define APIMON_CATALOG_ERRLEN 256    /* enough for any message below */

typedef char apimon_name_t[APIMON_NAME_MAX + 1];

#define APIMON_MAX_RULES     8       /* rate rules, quota rules, per plan */
#define APIMON_MAX_NOTIFY    10      /* thresholds per quota rule */
#define APIMON_MAX_INTERVAL  1000    /* a rule's interval N */
#define APIMON_VIOLATION_MAX 256     /* violationMessage, bytes */
#define APIMON_MAX_WEBHOOKS  8       /* per plan, and at the top level */

/* units: rates take second ... day, quotas second ... month */
typedef enum {
    APIMON_UNIT_SECOND = 0,
    APIMON_UNIT_MINUTE,
    APIMON_UNIT_HOUR,
    APIMON_UNIT_DAY,
    APIMON_UNIT_WEEK,
    APIMON_UNIT_MONTH
} apimon_unit_e;

/* one rate or quota rule (schema/README.md, "Rules"), defaults filled in */
typedef struct {
    apimon_name_t     name;          /* plan-rate, plan-rate-2 ... unless named */
    int64_t           limit;
    int64_t           interval;      /* N >= 1 units */
    apimon_unit_e     unit;
    int               block;         /* quota: blockOnBreach (default 1) */
    int               every;         /* quota: frequency every (1) or once */
    int               notify[APIMON_MAX_NOTIFY];  /* percent, ascending */
    size_t            nnotify;
    char              violation[APIMON_VIOLATION_MAX + 1];  /* "" = none */
} apimon_rule_t;

typedef struct {
    char             *url;           /* http:// or https:// */
    char             *secret_file;   /* absolute path */
} apimon_webhook_t;

/* the names of apimon_unit_e, "second" ... "month" */
const char *apimon_unit_name(apimon_unit_e u);

typedef struct {
    apimon_name_t     name;
    char             *display_name;  /* never NULL: "" when absent */
    char             *description;   /* never NULL: "" when absent */
    apimon_name_t    *apis;          /* napis >= 1, unique */
    size_t            napis;
    apimon_name_t     default_plan;  /* one of its plans; "" = not declared */
} apimon_product_t;

typedef struct {
    apimon_name_t     name;
    apimon_name_t     product;       /* a product of the same catalog */
    char             *display_name;  /* never NULL: "" when absent */
    char             *description;   /* never NULL: "" when absent */
    int               manual;        /* approval: 0 auto (default), 1 manual */
    int               pause;         /* suspension: 0 charge (default), 1
                                        pause: suspended days not charged */
    /* the plan limits exactly as the Redis plan hash spells them: the
     * first rate rule, the first quota rule if it is 1 minute ... month */
    int64_t           rate_n;        /* rateLimit.limit, 0 = none */
    int64_t           rate_w;        /* window seconds (interval x per), 0 = none */
    int64_t           quota_n;       /* quota.limit, 0 = none */
    char              quota_unit[8]; /* minute ... month, "" = none */
    apimon_pricing_t  pricing;       /* passed apimon_pricing_check */
    apimon_rule_t     rates[APIMON_MAX_RULES];
    size_t            nrates;
    apimon_rule_t     quotas[APIMON_MAX_RULES];
    size_t            nquotas;
    apimon_webhook_t *webhooks;      /* nwebhooks of them */
    size_t            nwebhooks;
} apimon_plan_t;

typedef struct {
    apimon_product_t *products;
    size_t            nproducts;
    apimon_plan_t    *plans;
    size_t            nplans;
    int               week_start;    /* weekStart: 0 monday ... 6 sunday */
    apimon_webhook_t *webhooks;      /* the top level's */
    size_t            nwebhooks;
} apimon_catalog_t;

/*
 * Parses and validates a whole catalog document (len bytes of text, no NUL
 * needed).  0 on success, cat filled (free it with apimon_catalog_free);
 * -1 on any error, with the message in err and cat left empty.
 */
int apimon_catalog_parse(const char *text, size_t len, apimon_catalog_t *cat,
    char *err, size_t errlen);

/*
 * What the check script of this version enforces: one rate rule and one
 * blocking quota of one unit of minute ... month (weeks from Monday), no
 * notification, no violation message.  0 when the whole catalog is within
 * that; -1 with the first plan and field beyond it in err.  `catalog apply`
 * refuses the rest (stored rule lists wait for the check of issue 10).
 */
int apimon_catalog_enforced(const apimon_catalog_t *cat, char *err,
    size_t errlen);

/* releases what apimon_catalog_parse allocated; safe on an empty catalog */
void apimon_catalog_free(apimon_catalog_t *cat);

/* the plan / product called name, or NULL */
const apimon_plan_t *apimon_catalog_plan(const apimon_catalog_t *cat,
    const char *name);
const apimon_product_t *apimon_catalog_product(const apimon_catalog_t *cat,
    const char *name);

/*
 * Parses one plan's pricing object, as stored in the field `pricing` of
 * apimon:plan:<name> (NUL-terminated JSON text).  0 on success; -1 with
 * "pricing.<field>: <reason>" in err.  Allocates nothing.
 */
int apimon_pricing_parse(const char *json, apimon_pricing_t *pr, char *err,
    size_t errlen);

#endif
