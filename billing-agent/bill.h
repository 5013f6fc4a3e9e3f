/*
 * `billing-agent bill`: load the plans' pricing, read every subscription
 * and its usage for each month billed (one, or every closed month not yet
 * done, by Redis's clock) in pipelined batches, price it, and push one
 * invoice item per non-zero line to the Stripe-compatible API exactly once
 * (ledger + idempotency keys + reconciliation).
 */

#ifndef APIMON_BILL_H
#define APIMON_BILL_H

#include <stdint.h>

#include <hiredis/hiredis.h>

typedef enum {
    BILL_MODE_BILL = 0,
    BILL_MODE_RECONCILE,          /* rebuild the ledger from Stripe */
    BILL_MODE_REPORT              /* --report/--report-html, no posting */
} bill_mode_e;

typedef struct {
    bill_mode_e  mode;
    const char  *period;          /* "YYYY-MM" or NULL: every closed month
                                     not yet done (by Redis's clock) */
    int          allow_open;      /* bill a month that has not ended */
    int          dry_run;
    int          create_invoices;
    int          draft;           /* --draft: leave invoices drafts */
    int          retry_failed;    /* give failed lines a fresh key */
    const char  *report;          /* path or NULL */
    const char  *report_html;     /* path or NULL */
    const char  *metrics_file;    /* path or NULL */
    double       max_rps;
    long         timeout_ms;
    int          max_retries;
    int64_t      lock_ttl_ms;
    int          batch;           /* subscriptions per pipelined batch */
    const char  *stripe_base;
    const char  *secret;          /* NULL allowed with dry_run */
    int64_t      margin_ms;       /* refuse this near a billed month's end */
    const char  *since;           /* "YYYY-MM": default runs start there */
    int          allow_unsafe_redis;  /* bill despite lossy persistence */
    const char  *redis_addr;      /* for a second (prefetch) connection */
    const char  *redis_password;
} bill_opts_t;

/* runs one billing pass; returns the process exit code */
int bill_run(redisContext *c, const bill_opts_t *o);

#endif
