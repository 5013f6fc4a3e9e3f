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
    /* the plan limits exactly as the Redis plan hash spells them */
    int64_t           rate_n;        /* rateLimit.limit, 0 = none */
    int64_t           rate_w;        /* window seconds 1/60/3600, 0 = none */
    int64_t           quota_n;       /* quota.limit, 0 = none */
    char              quota_unit[8]; /* minute ... month, "" = none */
    apimon_pricing_t  pricing;       /* passed apimon_pricing_check */
} apimon_plan_t;

typedef struct {
    apimon_product_t *products;
    size_t            nproducts;
    apimon_plan_t    *plans;
    size_t            nplans;
} apimon_catalog_t;

/*
 * Parses and validates a whole catalog document (len bytes of text, no NUL
 * needed).  0 on success, cat filled (free it with apimon_catalog_free);
 * -1 on any error, with the message in err and cat left empty.
 */
int apimon_catalog_parse(const char *text, size_t len, apimon_catalog_t *cat,
    char *err, size_t errlen);

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
