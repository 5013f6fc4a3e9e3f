/*
 * A minimal client for a Stripe-compatible HTTP API (libcurl): one
 * keep-alive connection, form bodies, idempotency keys, the retry
 * classification of Stripe's own libraries and a request-rate throttle.
 * The secret lives only in the Authorization header list and is never
 * logged.
 */

#ifndef APIMON_STRIPE_H
#define APIMON_STRIPE_H

#include <stdint.h>

#include <curl/curl.h>
#include <cjson/cJSON.h>

#include "util.h"

#define STRIPE_VERSION  "2024-06-20"

/* what a response means for the caller */
typedef enum {
    STRIPE_OK = 0,          /* 2xx */
    STRIPE_UNKNOWN,         /* network error, timeout, 5xx: may have happened */
    STRIPE_RETRY,           /* 409, 429, Stripe-Should-Retry: true: did not */
    STRIPE_AUTH,            /* 401/403: the secret is wrong */
    STRIPE_IDEMPOTENCY,     /* 400 idempotency_error: key reused differently */
    STRIPE_FINAL            /* any other 4xx: do not retry */
} stripe_class_e;

typedef struct {
    long             status;       /* HTTP status, 0 on a network error */
    int              should_retry; /* Stripe-Should-Retry: -1 absent, 0, 1 */
    int              replayed;     /* Idempotent-Replayed: true */
    stripe_class_e   cls;
    abuf_t           body;
    char             error[512];   /* network error or the API's message */
} stripe_resp_t;

typedef struct {
    CURL            *curl;
    char            *base;
    double           max_rps;
    int64_t          next_us;      /* earliest start of the next request */
    long             timeout_ms;
    int              max_retries;
    unsigned         seed;
    uint64_t         requests;
} stripe_t;

int stripe_init(stripe_t *s, const char *base, const char *secret,
    double max_rps, long timeout_ms, int max_retries, char *err,
    size_t errlen);
void stripe_free(stripe_t *s);

void stripe_resp_init(stripe_resp_t *r);
void stripe_resp_free(stripe_resp_t *r);

/*
 * One request, no retries (the caller decides: a POST whose outcome is
 * unknown must be reconciled before it is sent again).  body NULL = GET.
 * idem_key may be NULL.
 */
void stripe_request(stripe_t *s, const char *path, const char *body,
    const char *idem_key, stripe_resp_t *r);

/* Stripe's backoff: 0.5 s × (1 + n²), capped at 5 s, jittered to 75-100% */
int64_t stripe_backoff_us(stripe_t *s, int retry);

/* "key=value" pairs joined with '&', each side percent-encoded */
void stripe_form_add(abuf_t *b, const char *key, const char *value);

/*
 * Looks for an invoice item of customer whose metadata[apimon_key] is key,
 * paging through the list.  1 found (id into item), 0 not found, -1 the
 * listing failed (r holds why).
 */
int stripe_find_item(stripe_t *s, const char *customer, const char *key,
    char *item, size_t itemlen, stripe_resp_t *r);
/*
 * Pages through a list of the customer's objects ("invoiceitems",
 * "invoices"), newest first, calling each(obj, arg) for every one; a
 * non-zero return stops and is returned.  0 listed, -1 the listing failed.
 */
typedef int (*stripe_each_pt)(cJSON *obj, void *arg);
int stripe_list(stripe_t *s, const char *list, const char *customer,
    stripe_each_pt each, void *arg, stripe_resp_t *r);
/* stripe_find_item in another list of the customer's ("invoices") */
int stripe_find(stripe_t *s, const char *list, const char *customer,
    const char *key, char *item, size_t itemlen, stripe_resp_t *r);

#endif
