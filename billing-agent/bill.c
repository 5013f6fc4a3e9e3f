/*
 * `billing-agent bill`: see bill.h; its rooms in bill_private.h.  The order
 * of one run:
 *
 *   Redis TIME → persistence check → lock → plans → subscription ids →
 *   the months (--period, or every closed month not done) → per month, per
 *   batch of subscriptions: (HMGET subscription, HGETALL usage) → owners'
 *   customer ids → price → ledger entries of the priced lines → push each
 *   line → invoices → "month|done" → unlock
 *
 * This file: the run, the decision for each priced line (by its ledger
 * state) and the outcomes, the one place lines move, count and report.
 */

#include "bill_private.h"
#include "agent_redis.h"

#include <inttypes.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>


/* SIGTERM/SIGINT/SIGHUP: finish the line in hand, release the lock, exit 1 */
static volatile sig_atomic_t  bill_signal;


static void
bill_on_signal(int signo)
{
    bill_signal = signo;
}


int
bill_stopped(bill_t *b)
{
    if (bill_signal && !b->fatal) {
        agent_err("stopped by signal %d at a line boundary; rerun to resume",
                  (int) bill_signal);
        b->fatal = AGENT_EXIT_FAILED;
    }
    return b->fatal != 0;
}


int
bill_lock_keep(bill_t *b)
{
    int64_t  now = agent_now_us();

    if (!b->locked || now - b->lock_us < b->o->lock_ttl_ms * 1000 / 3) {
        return 0;
    }
    if (ar_lock_refresh(b->c, b->token, b->o->lock_ttl_ms) != 1) {
        agent_err("lost the run lock %s; stopping (rerun to resume)",
                  AR_LOCK_KEY);
        b->fatal = AGENT_EXIT_LOCKED;
        b->locked = 0;
        return -1;
    }
    b->lock_us = now;
    return 0;
}


/* ------------------------------------------------------------ outcomes */

/* moves e to state `to` from e->state; -1 (run stops) on trouble */
int
bill_move(bill_t *b, const char *field, ledger_entry_t *e,
    ledger_state_e to)
{
    ledger_state_e  from = e->state;
    char            err[512];
    int             rc;

    e->state = to;
    rc = ledger_write(b->c, b->bill_key, field, from, e, err, sizeof(err));
    if (rc != 0) {
        e->state = from;
        agent_err("ledger %s %s: %s -> %s: %s; stopping", b->bill_key, field,
                  from ? ledger_state_name(from) : "absent",
                  ledger_state_name(to), err);
        b->fatal = AGENT_EXIT_FAILED;
        return -1;
    }
    return 0;
}


typedef struct {
    const char       *status;        /* the report's status column */
    ledger_state_e    to;            /* the entry moves there (ABSENT: no) */
    bill_count_e      count;         /* BILL_N_COUNTS: none */
} bill_outcome_t;

/*
 * What each outcome does: the ledger state the entry moves to (from any
 * other), the count and the report's status.  A line posted while invoices
 * are made waits for its invoice, counted only once done.
 */
static const bill_outcome_t  bill_outcomes[] = {
    [BILL_DONE]       = { "done",           LEDGER_DONE,   BILL_N_DONE },
    [BILL_POSTED]     = { "posted",         LEDGER_POSTED, BILL_N_COUNTS },
    [BILL_FAILED]     = { "failed",         LEDGER_FAILED, BILL_N_FAILED },
    [BILL_UNKNOWN]    = { "unknown",        LEDGER_ABSENT, BILL_N_UNKNOWN },
    [BILL_ZERO]       = { "zero",           LEDGER_ABSENT, BILL_N_ZERO },
    [BILL_UNMAPPED]   = { "unmapped",       LEDGER_ABSENT, BILL_N_UNMAPPED },
    [BILL_NOT_BILLED] = { "not_billed",     LEDGER_ABSENT, BILL_N_NOT_BILLED },
    [BILL_DRY]        = { "dry_run",        LEDGER_ABSENT, BILL_N_DRY },
    [BILL_DRY_RESUME] = { "dry_run_resume", LEDGER_ABSENT, BILL_N_DRY },
    [BILL_INVOICED]   = { "done",           LEDGER_DONE,   BILL_N_INVOICES },
};


int
bill_record(bill_t *b, bill_out_e o, const char *field, ledger_entry_t *e,
    report_row_t *row)
{
    const bill_outcome_t  *oc = &bill_outcomes[o];

    if (e && oc->to != LEDGER_ABSENT && e->state != oc->to
        && bill_move(b, field, e, oc->to) != 0)
    {
        return -1;
    }
    if (oc->count != BILL_N_COUNTS) {
        b->n[oc->count]++;
    }
    row->status = oc->status;
    report_row(&b->rep, row);
    metrics_file_add(b->mf, row->status, row->currency, row->amount);
    return 0;
}


int
bill_outcome(bill_t *b, bill_sub_t *s, int i, bill_out_e o,
    const char *error)
{
    report_row_t     row;
    ledger_entry_t  *e = (i >= 0) ? &s->led[i] : NULL;
    char             owner[600], field[128] = "";

    bill_owner_key(s, owner, sizeof(owner));
    memset(&row, 0, sizeof(row));
    row.period = b->ptext;
    row.subscription = s->id;
    row.customer = s->customer;
    row.owner = owner;
    row.plan = s->plan;
    row.model = s->pr ? apimon_model_name(s->pr->model) : "";
    row.currency = s->pr ? s->pr->currency : "";
    row.error = error;

    if (e) {
        bill_line_field(s, i, field, sizeof(field));
        row.line = s->lines[i].id;
        row.quantity = s->lines[i].quantity;
        row.amount = s->lines[i].amount;
        row.stripe_id = e->item;
        /* what was (or will be) sent is what the ledger holds; an entry
         * without a body (unreadable) bills nobody */
        if (e->state != LEDGER_ABSENT || e->body) {
            row.customer = e->customer ? e->customer : "";
        }
        if (e->body) {
            row.amount = e->amount;
            row.currency = e->currency;
        }
    } else if (i == BILL_ROW_AFTER_END) {
        row.line = "after_end";
        row.quantity = s->use.unbilled;
    } else {
        row.line = "subscription";       /* the whole subscription */
    }

    return bill_record(b, o, field, e, &row);
}


/* ------------------------------------------------------------ per line */

static void
bill_line(bill_t *b, bill_sub_t *s, int i, abuf_t *body)
{
    ledger_entry_t  *e = &s->led[i];
    char             field[128], key[256];

    bill_line_field(s, i, field, sizeof(field));
    b->n[BILL_N_LINES]++;

    switch (e->state) {

    case LEDGER_DONE:
        bill_settled(b, e);
        bill_outcome(b, s, i, BILL_DONE, NULL);
        return;

    case LEDGER_FAILED:
        if (b->o->retry_failed && s->lines[i].amount != 0
            && s->customer[0] != '\0')
        {
            bill_retry_failed(b, s, i, field, body);
            return;
        }
        bill_outcome(b, s, i, BILL_FAILED, e->error);
        return;

    case LEDGER_POSTED:
        if (b->o->dry_run) {
            bill_outcome(b, s, i, BILL_POSTED, NULL);
        } else {
            bill_settle(b, s, i, field);
        }
        return;

    case LEDGER_COMPUTED:
        /* an earlier run stopped here: its stored body is the truth */
        if (bill_onto_invoice(b, s, i, field) == 0) {
            bill_send(b, s, i, field);
        }
        return;

    case LEDGER_ABSENT:
        break;
    }

    if (s->lines[i].amount == 0) {
        bill_outcome(b, s, i, BILL_ZERO, NULL);
        return;
    }

    if (b->ledger_lost) {
        bill_outcome(b, s, i, BILL_UNKNOWN, "the ledger of the month was "
                     "lost: run billing-agent reconcile --period first");
        return;
    }

    if (s->customer[0] == '\0') {
        agent_err("subscription %s (%s %s): no billing customer; set one "
                  "with `billing-agent customer set`", s->id, s->owner_kind,
                  s->owner);
        bill_outcome(b, s, i, BILL_UNMAPPED, "no billing customer");
        return;
    }

    if (bill_attach(b, s, i) != 0) {
        return;
    }
    bill_key(b, s, i, key, sizeof(key));
    bill_compute(b, s, i, key, body);
    bill_send(b, s, i, field);
}


void
bill_sub(bill_t *b, bill_sub_t *s, abuf_t *body)
{
    int  i;

    if (s->state == NULL) {
        agent_err("subscription %s is listed but has no hash; skipped", s->id);
        return;
    }
    /* never approved: nothing to bill */
    if (strcmp(s->state, "submitted") == 0) {
        return;
    }

    /*
     * a plan leaves the catalog once none of its subscriptions can be used
     * or billed (catalog_apply.lua): one of those, with no day and no call
     * in this month, has nothing to bill and nothing to report
     */
    if (s->bp == NULL && s->why[0] == '\0'
        && s->use.calls == 0 && s->use.unbilled == 0
        && apimon_active_days(&b->p, s->start_ms, s->end_ms) == 0)
    {
        return;
    }

    if (b->o->mode == BILL_MODE_RECONCILE) {
        bill_reconcile_sub(b, s);
        return;
    }

    if (s->part <= 1) {
        b->n[BILL_N_SUBS]++;        /* the parts of a plan change: one */
    }

    if (s->why[0] == '\0') {
        if (s->bp == NULL) {
            snprintf(s->why, sizeof(s->why), "plan %.*s is not in the "
                     "catalog", APIMON_NAME_MAX, s->plan ? s->plan : "(none)");
        } else if (!s->bp->ok) {
            snprintf(s->why, sizeof(s->why), "plan %.*s: %s",
                     APIMON_NAME_MAX, s->plan, s->bp->err);
        }
    }
    if (s->why[0]) {
        /* a reason is set exactly when the subscription was not priced */
        agent_err("subscription %s: not priced: %s", s->id, s->why);
        bill_outcome(b, s, BILL_ROW_SUB, BILL_FAILED, s->why);
        return;
    }

    if (s->use.unbilled > 0) {
        agent_log("subscription %s: %" PRId64 " calls outside its term in "
                  "%s are not billed", s->id, s->use.unbilled, b->ptext);
        bill_outcome(b, s, BILL_ROW_AFTER_END, BILL_NOT_BILLED,
                     "usage outside the subscription's term");
    }

    for (i = 0; i < s->nlines && !b->fatal; i++) {
        bill_line(b, s, i, body);
    }
}


/* ------------------------------------------------------------------ run */

static void
bill_signals(void)
{
    struct sigaction  sa;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = bill_on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
}


static int
bill_lock(bill_t *b)
{
    unsigned char  rnd[16];
    FILE          *f;
    size_t         i;
    int            rc;

    /* a random token: only the owner may extend or release the lock */
    f = fopen("/dev/urandom", "r");
    if (f == NULL || fread(rnd, 1, sizeof(rnd), f) != sizeof(rnd)) {
        if (f) {
            fclose(f);
        }
        agent_err("cannot read /dev/urandom");
        return AGENT_EXIT_CONFIG;
    }
    fclose(f);
    for (i = 0; i < sizeof(rnd); i++) {
        sprintf(b->token + 2 * i, "%02x", rnd[i]);
    }

    rc = ar_lock_acquire(b->c, b->token, b->o->lock_ttl_ms);
    if (rc < 0) {
        agent_err("Redis: cannot take the lock %s", AR_LOCK_KEY);
        return AGENT_EXIT_CONFIG;
    }
    if (rc == 0) {
        agent_err("another billing run holds the lock %s; exiting",
                  AR_LOCK_KEY);
        return AGENT_EXIT_LOCKED;
    }
    b->locked = 1;
    b->lock_us = agent_now_us();
    bill_signals();
    return 0;
}


static int
bill_ledger_empty(bill_t *b)
{
    redisReply  *r;
    int          empty;

    r = redisCommand(b->c, "HLEN %s", b->bill_key);
    empty = (r && r->type == REDIS_REPLY_INTEGER && r->integer == 0);
    if (r) {
        freeReplyObject(r);
    }
    return empty;
}


/*
 * Usage and quotas survive a Redis crash only with an append-only file
 * synced every second and no eviction: without them a bill is computed
 * from counts that may have been rolled back.  Exit 4 unless overridden.
 */
static int
bill_redis_safe(bill_t *b)
{
    char  msg[512];
    int   rc = ar_persistence(b->c, msg, sizeof(msg));

    if (rc < 0) {
        agent_log("Redis does not allow CONFIG GET (%s): its persistence "
                  "settings are not checked", msg);
        return 0;
    }
    if (rc == 0) {
        return 0;
    }
    if (b->o->allow_unsafe_redis || b->o->dry_run) {
        /* a dry run posts nothing: it may show what would be billed */
        agent_err("Redis may lose usage on a crash: %s; %s", msg,
                  b->o->dry_run ? "a dry run goes on"
                                : "billing anyway (--allow-unsafe-redis)");
        return 0;
    }
    agent_err("Redis may lose usage and quotas on a crash: %s. Fix its "
              "configuration (README, \"Redis\"), or bill anyway with "
              "--allow-unsafe-redis", msg);
    return AGENT_EXIT_UNSAFE;
}


static int
bill_setup(bill_t *b, char *err, size_t errlen)
{
    const bill_opts_t  *o = b->o;

    if (o->dry_run) {
        return 0;
    }
    if (o->secret == NULL || o->secret[0] == '\0') {
        snprintf(err, errlen, "no Stripe secret key: set STRIPE_API_KEY or "
                 "--stripe-key-file");
        return -1;
    }
    return stripe_init(&b->stripe, o->stripe_base, o->secret, o->max_rps,
                       o->timeout_ms, o->max_retries, err, errlen);
}


static int
bill_exit_code(bill_t *b)
{
    if (b->fatal) {
        return b->fatal;
    }
    if (b->n[BILL_N_FAILED] || b->n[BILL_N_UNKNOWN]
        || b->n[BILL_N_UNMAPPED])
    {
        return AGENT_EXIT_FAILED;
    }
    return AGENT_EXIT_OK;
}


/* the per-month part of bill_t, cleared before each month */
static void
bill_month_reset(bill_t *b)
{
    amap_free(&b->custs, bill_cust_free);
    amap_init(&b->custs);
    b->unknown_streak = 0;
    b->ledger_lost = 0;
    b->ledger_started = 0;
    b->started = 0;
    memset(b->n, 0, sizeof(b->n));
}


/*
 * The month's ledger is gone though a run of it started: no line without
 * an entry is posted (it may be at Stripe) until `reconcile` rebuilt it.
 */
static int
bill_check_ledger(bill_t *b)
{
    int  lost;

    if (b->o->mode != BILL_MODE_BILL) {
        return 0;
    }
    lost = bill_ledger_lost(b);
    if (lost < 0) {
        b->fatal = AGENT_EXIT_FAILED;
        return -1;
    }
    if (lost) {
        agent_err("%s: a run of this month started (%s holds it) but its "
                  "ledger %s does not say so: the ledger was lost, and "
                  "lines posted then would be posted again. Rebuild it "
                  "from what Stripe holds first: billing-agent reconcile "
                  "--period %s; lines without a ledger entry are not "
                  "posted until then", b->ptext, BILL_STARTED_KEY,
                  b->bill_key, b->ptext);
        b->ledger_lost = 1;
    }
    return 0;
}


/* one month: read, price, push, invoice; its exit code */
static int
bill_month(bill_t *b, const apimon_period_t *p, char **ids, size_t nids)
{
    int      rc;
    int64_t  t0 = agent_now_us();

    bill_month_reset(b);
    bill_set_period(b, p);
    agent_log("billing %s%s", b->ptext, b->o->dry_run ? " (dry run)" : "");

    b->ledger_empty = bill_ledger_empty(b);
    if (bill_check_ledger(b) != 0) {
        return b->fatal;
    }
    bill_batches(b, ids, nids);
    if (b->o->mode == BILL_MODE_RECONCILE) {
        return b->fatal ? b->fatal : bill_reconcile(b);
    }
    if (b->o->create_invoices && !b->o->dry_run && !b->fatal) {
        bill_invoices(b);
    }
    rc = bill_exit_code(b);

    /* only a closed month: an open one still grows */
    if (rc == AGENT_EXIT_OK && !b->o->dry_run && p->end_ms <= b->now_ms
        && bill_month_done(b) != 0)
    {
        rc = b->fatal = AGENT_EXIT_FAILED;
    }

    agent_log("period %s: %" PRIu64 " subscriptions, %" PRIu64 " lines: %"
              PRIu64 " done (%" PRIu64 " posted now), %" PRIu64 " zero, %"
              PRIu64 " failed, %" PRIu64 " unknown, %" PRIu64 " unmapped, %"
              PRIu64 " dry-run, %" PRIu64 " invoices, %" PRIu64
              " with usage not billed; %.3f s; exit %d",
              b->ptext, b->n[BILL_N_SUBS], b->n[BILL_N_LINES],
              b->n[BILL_N_DONE], b->n[BILL_N_POSTED], b->n[BILL_N_ZERO],
              b->n[BILL_N_FAILED], b->n[BILL_N_UNKNOWN],
              b->n[BILL_N_UNMAPPED], b->n[BILL_N_DRY], b->n[BILL_N_INVOICES],
              b->n[BILL_N_NOT_BILLED], (double) (agent_now_us() - t0) / 1e6,
              rc);
    return rc;
}


static int
bill_pass(redisContext *c, const bill_opts_t *o, metrics_file_t *mf)
{
    bill_t            b;
    char              err[512];
    char            **ids = NULL;
    apimon_period_t  *months = NULL;
    size_t            nids = 0, nmonths = 0, i;
    int               rc, mrc;

    memset(&b, 0, sizeof(b));
    b.c = c;
    b.o = o;
    b.mf = mf;
    amap_init(&b.plans);
    amap_init(&b.owners);
    amap_init(&b.custs);

    /* usage days are stamped by Redis's clock: "now" is Redis's too */
    if (ar_time_ms(c, &b.now_ms, err, sizeof(err)) != 0
        || bill_setup(&b, err, sizeof(err)) != 0)
    {
        agent_err("%s", err);
        return AGENT_EXIT_CONFIG;
    }
    if ((rc = bill_redis_safe(&b)) != 0) {
        stripe_free(&b.stripe);
        return rc;
    }

    if (!o->dry_run && (rc = bill_lock(&b)) != 0) {
        stripe_free(&b.stripe);
        return rc;
    }

    /* only the lock holder may truncate a report a running job writes */
    if (report_open(&b.rep, o->report, err, sizeof(err)) != 0
        || report_open_html(&b.rep, o->report_html, err, sizeof(err)) != 0)
    {
        agent_err("%s", err);
        rc = AGENT_EXIT_CONFIG;
        goto done;
    }

    if (o->redis_addr) {
        b.pre = ar_connect(o->redis_addr, o->redis_password, err,
                           sizeof(err));
    }

    if (bill_load_plans(&b, err, sizeof(err)) != 0
        || (ids = bill_sub_ids(&b, &nids, err, sizeof(err))) == NULL)
    {
        agent_err("%s", err);
        rc = AGENT_EXIT_CONFIG;

    } else if ((months = bill_months(&b, ids, nids, &nmonths, &rc))
               != NULL)
    {
        if (nmonths == 0) {
            agent_log("nothing to bill: every closed month is done");
        }
        rc = AGENT_EXIT_OK;
        for (i = 0; i < nmonths && !b.fatal; i++) {
            mrc = bill_month(&b, &months[i], ids, nids);
            rc = b.fatal ? b.fatal : (mrc > rc ? mrc : rc);
        }
    }

    if (report_close(&b.rep) != 0) {
        agent_err("writing the report failed");
        rc = rc ? rc : AGENT_EXIT_FAILED;
    }

done:
    if (b.locked) {
        ar_lock_release(c, b.token);
    }
    if (b.pre) {
        redisFree(b.pre);
    }
    fflush(stdout);

    for (i = 0; i < nids; i++) {
        free(ids[i]);
    }
    free(ids);
    free(months);
    amap_free(&b.plans, bill_plan_free);
    amap_free(&b.owners, free);
    amap_free(&b.custs, bill_cust_free);
    if (!o->dry_run) {
        stripe_free(&b.stripe);
    }
    return rc;
}


/* the pass, then its outcome in --metrics-file (whatever the exit code) */
int
bill_run(redisContext *c, const bill_opts_t *o)
{
    metrics_file_t  mf;
    char            err[512];
    int             rc;

    metrics_file_init(&mf);

    rc = bill_pass(c, o, &mf);

    if (o->metrics_file
        && metrics_file_write(&mf, o->metrics_file, rc, err, sizeof(err))
           != 0)
    {
        agent_err("%s", err);
        rc = rc ? rc : AGENT_EXIT_FAILED;
    }

    return rc;
}
