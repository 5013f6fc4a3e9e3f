/*
 * The rooms of `billing-agent bill` (see bill.h), sharing this header the
 * way nginx's HTTP/2 files share ngx_http_v2.h:
 *
 *   bill.c          the run, the per-line decision and its outcomes
 *   bill_months.c   which months a run bills, by Redis's clock
 *   bill_read.c     the Redis reads of a batch: plans, subscriptions and
 *                   usage (prefetched), owners' customers, ledger entries
 *   bill_post.c     exactly-once posting and reconciliation of a line
 *   bill_invoice.c  --create-invoices: one invoice per customer, holding
 *                   exactly our items, finalized
 *   bill_reconcile.c `reconcile`: the ledger rebuilt from what the API
 *                   holds for the month's customers
 */

#ifndef APIMON_BILL_PRIVATE_H
#define APIMON_BILL_PRIVATE_H

#include "bill.h"
#include "catalog.h"
#include "ledger.h"
#include "metrics_file.h"
#include "pricing.h"
#include "report.h"
#include "stripe.h"
#include "util.h"

#define BILL_UNKNOWN_STREAK  5      /* unresolved lines in a row: stop */

/* bill_outcome rows that are no priced line */
#define BILL_ROW_AFTER_END   -1     /* usage outside the term (not billed) */
#define BILL_ROW_SUB         -2     /* the subscription was not priced */

/* the times a subscription may hold (the management API's range): ms from
 * 2000-01-01 to 9999-12-31T23:59:59.999Z */
#define BILL_TIME_MIN        946684800000LL
#define BILL_TIME_MAX        253402300799999LL

/* the ledger field recording that every line of the month is done */
#define BILL_MONTH_FIELD     "month|done"
/* ... that a run of the month was about to post, and that reconcile
 * rebuilt the ledger from the API */
#define BILL_STARTED_FIELD   "month|started"
#define BILL_RECONCILED_FIELD "month|reconciled"
/* hash: <YYYYMM> → ms a run first posted for the month (outlives a lost
 * ledger) */
#define BILL_STARTED_KEY     "apimon:bill:started"


typedef struct {
    apimon_pricing_t  pr;
    apimon_version_t *v;             /* apimon:plan:<name>:prices */
    size_t            nv;
    int               pause;         /* suspension pause */
    int               ok;
    char              label[APIMON_DISPLAY_MAX + APIMON_NAME_MAX + 4];
    char              err[APIMON_CATALOG_ERRLEN];
} bill_plan_t;

/* a plan's part of a subscription's month (apimon_plan_segments) */
typedef struct {
    char             *plan;
    int64_t           start_ms;
    int64_t           end_ms;
    apimon_usage_t    use;          /* its calls: the days it held */
} bill_seg_t;

typedef struct {
    char             *id;
    char             *owner_kind;
    char             *owner;
    char             *plan;
    char             *state;
    int64_t           start_ms;
    int64_t           end_ms;
    apimon_usage_t    use;
    apimon_span_t    *paused;       /* its suspensions, NULL = none */
    size_t            npaused;
    bill_seg_t       *seg;          /* its plans' parts of the month when
                                       it changed plan in it, else NULL */
    size_t            nseg;
    int               part;         /* 1..: the part of such a month this
                                       prices (line ids "fee.1"); 0 whole */
    const char       *customer;     /* "" = no customer mapped */
    const bill_plan_t *bp;
    const apimon_pricing_t *pr;     /* the version its lines are priced in
                                       (currency, model); bp's else */
    int               nlines;
    char              why[APIMON_PRICE_ERRLEN + APIMON_NAME_MAX + 8];
                                    /* set: not priced, and why */
    apimon_line_t     lines[APIMON_MAX_LINES];
    ledger_entry_t    led[APIMON_MAX_LINES];
} bill_sub_t;

/* lines of one customer waiting for its invoice (--create-invoices) */
typedef struct {
    int               blocked;       /* a line of it is unresolved */
    int               loaded;        /* inv read from the ledger */
    int               resume;        /* inv computed by an earlier run or
                                        its POST's outcome unknown */
    int               want;          /* a done line on a draft: finalize */
    ledger_entry_t    inv;           /* "invoice|<customer>" */
    size_t            n;
    char            **fields;
    ledger_entry_t   *entries;
} bill_cust_t;

/* the counts of a month, in its summary line */
typedef enum {
    BILL_N_SUBS = 0,
    BILL_N_LINES,
    BILL_N_DONE,
    BILL_N_POSTED,                   /* posted by this run */
    BILL_N_ZERO,
    BILL_N_FAILED,
    BILL_N_UNKNOWN,
    BILL_N_UNMAPPED,
    BILL_N_NOT_BILLED,
    BILL_N_DRY,
    BILL_N_INVOICES,
    BILL_N_COUNTS
} bill_count_e;

/* what became of a line (or a subscription, or an invoice): bill.c */
typedef enum {
    BILL_DONE = 0,
    BILL_POSTED,                     /* waits for its invoice */
    BILL_FAILED,
    BILL_UNKNOWN,                    /* stays computed: the next run looks */
    BILL_ZERO,
    BILL_UNMAPPED,
    BILL_NOT_BILLED,
    BILL_DRY,
    BILL_DRY_RESUME,
    BILL_INVOICED
} bill_out_e;

typedef struct {
    redisContext     *c;
    redisContext     *pre;           /* prefetch connection, or NULL */
    int               ledger_empty;  /* nothing billed in the period yet */
    int               ledger_lost;   /* a run started, the ledger is gone */
    int               ledger_started; /* the ledger has month|started */
    int               started;       /* month|started written this run */
    const bill_opts_t *o;
    int64_t           now_ms;        /* Redis's clock at the start */
    apimon_period_t   p;
    char              ptext[8];      /* 2026-01 */
    char              ym[8];         /* 202601 */
    char              bill_key[32];
    int64_t           catalog_version;
    amap_t            plans;
    amap_t            owners;        /* "<kind>|<owner>" → customer id */
    amap_t            custs;         /* customer id → bill_cust_t */
    stripe_t          stripe;
    int               stripe_ready;
    report_t          rep;
    char              token[64];
    int               locked;
    int64_t           lock_us;       /* last refresh */
    int               fatal;         /* exit code that ends the run, or 0 */
    int               unknown_streak;
    uint64_t          n[BILL_N_COUNTS];
    metrics_file_t   *mf;            /* the run's outcomes, for the file */
} bill_t;


/* bill.c */
int bill_stopped(bill_t *b);
int bill_lock_keep(bill_t *b);
void bill_sub(bill_t *b, bill_sub_t *s, abuf_t *body);
/* the one place an outcome happens: e (if any) moves to its state, the
 * month counts it and the report shows row; -1 if the move failed */
int bill_record(bill_t *b, bill_out_e o, const char *field,
    ledger_entry_t *e, report_row_t *row);
/* bill_record for line i of s, or a row BILL_ROW_* of the subscription */
int bill_outcome(bill_t *b, bill_sub_t *s, int i, bill_out_e o,
    const char *error);
int bill_move(bill_t *b, const char *field, ledger_entry_t *e,
    ledger_state_e to);

/* bill_months.c */
void bill_set_period(bill_t *b, const apimon_period_t *p);
/* the months of this run, checked against Redis's clock; NULL: exit code */
apimon_period_t *bill_months(bill_t *b, char **ids, size_t nids, size_t *n,
    int *rc);
int bill_month_done(bill_t *b);
int bill_mark(bill_t *b, const char *field, const char *what);
int bill_month_started(bill_t *b);
int bill_ledger_lost(bill_t *b);

/* bill_reconcile.c */
void bill_reconcile_sub(bill_t *b, bill_sub_t *s);
int bill_reconcile(bill_t *b);

/* bill_read.c */
int bill_get(bill_t *b, redisReply **r);
int bill_load_plans(bill_t *b, char *err, size_t errlen);
void bill_plan_free(void *p);
char **bill_sub_ids(bill_t *b, size_t *n, char *err, size_t errlen);
void bill_batches(bill_t *b, char **ids, size_t nids);
void bill_line_field(const bill_sub_t *s, int i, char *buf, size_t len);
void bill_owner_key(const bill_sub_t *s, char *buf, size_t len);

/* bill_post.c */
int bill_stripe_start(bill_t *b);
void bill_fatal_auth(bill_t *b, stripe_resp_t *r);
char *bill_item_id(stripe_resp_t *r);
void bill_md_add(abuf_t *body, const char *key, const char *value);
void bill_compute(bill_t *b, bill_sub_t *s, int i, const char *key,
    abuf_t *body);
void bill_key(bill_t *b, const bill_sub_t *s, int i, char *buf, size_t len);
void bill_send(bill_t *b, bill_sub_t *s, int i, const char *field);
int bill_onto_invoice(bill_t *b, bill_sub_t *s, int i, const char *field);
void bill_retry_failed(bill_t *b, bill_sub_t *s, int i, const char *field,
    abuf_t *body);

/* bill_invoice.c */
int bill_attach(bill_t *b, bill_sub_t *s, int i);
int bill_attach_to(bill_t *b, bill_sub_t *s, int i, const char *customer);
void bill_settle(bill_t *b, bill_sub_t *s, int i, const char *field);
void bill_settled(bill_t *b, const ledger_entry_t *e);
void bill_block(bill_t *b, const char *customer);
void bill_invoices(bill_t *b);
void bill_cust_free(void *p);

#endif
