/*
 * `billing-agent bill`: see bill.h.  The order of one run:
 *
 *   Redis TIME → persistence check → lock → plans → subscription ids →
 *   the months (--period, or every closed month not done) → per month, per
 *   batch of subscriptions: (HMGET subscription, HGETALL usage) → owners'
 *   customer ids → price → ledger entries of the priced lines → push each
 *   line → invoices → "month|done" → unlock
 *
 * Exactly once: before a POST the line's exact body and idempotency key are
 * stored (computed); after it the Stripe id (posted, then done).  A line
 * found computed at the start of a run, or whose POST ended in a timeout, a
 * lost connection or a 5xx, is first looked for among the customer's
 * invoice items by its key, and only posted again (with the same key) if
 * it is not there.
 */

#include "bill.h"
#include "agent_redis.h"
#include "catalog.h"
#include "ledger.h"
#include "pricing.h"
#include "report.h"
#include "stripe.h"
#include "util.h"

#include <inttypes.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#define BILL_UNKNOWN_STREAK  5      /* unresolved lines in a row: stop */
#define BILL_MD_KEY_MAX      40     /* Stripe metadata limits */
#define BILL_MD_VALUE_MAX    500

/* bill_report rows that are no priced line */
#define BILL_ROW_AFTER_END   -1     /* usage outside the term (not billed) */
#define BILL_ROW_SUB         -2     /* the subscription was not priced */

/* the times a subscription may hold (the management API's range): ms from
 * 2000-01-01 to 9999-12-31T23:59:59.999Z */
#define BILL_TIME_MIN        946684800000LL
#define BILL_TIME_MAX        253402300799999LL

/* the ledger field recording that every line of the month is done */
#define BILL_MONTH_FIELD     "month|done"


typedef struct {
    apimon_pricing_t  pr;
    int               ok;
    char              label[APIMON_DISPLAY_MAX + APIMON_NAME_MAX + 4];
    char              err[APIMON_CATALOG_ERRLEN];
} bill_plan_t;

typedef struct {
    char             *id;
    char             *owner_kind;
    char             *owner;
    char             *plan;
    char             *state;
    int64_t           start_ms;
    int64_t           end_ms;
    int64_t           calls;
    int64_t           unbilled;
    const char       *customer;     /* "" = no customer mapped */
    const bill_plan_t *bp;
    int               nlines;
    char              why[APIMON_PRICE_ERRLEN + APIMON_NAME_MAX + 8];
                                    /* set: not priced, and why */
    apimon_line_t     lines[APIMON_MAX_LINES];
    ledger_entry_t    led[APIMON_MAX_LINES];
} bill_sub_t;

/* lines of one customer waiting for its invoice (--create-invoices) */
typedef struct {
    int               blocked;       /* a line of it is unresolved */
    size_t            n;
    char            **fields;
    ledger_entry_t   *entries;
} bill_cust_t;

typedef struct {
    redisContext     *c;
    redisContext     *pre;           /* prefetch connection, or NULL */
    int               ledger_empty;  /* nothing billed in the period yet */
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

    uint64_t          nsubs, nlines, ndone, nposted, nzero, nfailed;
    uint64_t          nunknown, nunmapped, nnotbilled, ndry, ninvoices;
} bill_t;


static int bill_setup(bill_t *b, char *err, size_t errlen);
static int bill_get(bill_t *b, redisReply **r);

/* SIGTERM/SIGINT/SIGHUP: finish the line in hand, release the lock, exit 1 */
static volatile sig_atomic_t  bill_signal;


static void
bill_on_signal(int signo)
{
    bill_signal = signo;
}


static int
bill_stopped(bill_t *b)
{
    if (bill_signal && !b->fatal) {
        agent_err("stopped by signal %d at a line boundary; rerun to resume",
                  (int) bill_signal);
        b->fatal = AGENT_EXIT_FAILED;
    }
    return b->fatal != 0;
}


/* ---------------------------------------------------------------- period */

/* the month the run bills now, and its names */
static void
bill_set_period(bill_t *b, const apimon_period_t *p)
{
    b->p = *p;
    apimon_period_format(&b->p, b->ptext, sizeof(b->ptext));
    snprintf(b->ym, sizeof(b->ym), "%04d%02d", b->p.year, b->p.month);
    snprintf(b->bill_key, sizeof(b->bill_key), "apimon:bill:%s", b->ym);
}


/*
 * --period, by Redis's clock (the clock that stamps usage days): a month
 * that has not started is refused, and so is one that has not ended unless
 * --allow-open (its usage still grows: billing it now would freeze the
 * lines at today's numbers).
 */
static int
bill_check_period(bill_t *b, const apimon_period_t *p, char *err,
    size_t errlen)
{
    char  t[32], now[32], text[8];

    apimon_period_format(p, text, sizeof(text));
    agent_iso_time(b->now_ms, now, sizeof(now));
    if (p->start_ms > b->now_ms) {
        snprintf(err, errlen, "period %s has not started (Redis's clock: %s)",
                 text, now);
        return -1;
    }
    if (p->end_ms > b->now_ms && !b->o->allow_open) {
        agent_iso_time(p->end_ms, t, sizeof(t));
        snprintf(err, errlen, "period %s has not closed (it ends %s; Redis's "
                 "clock: %s); add --allow-open to bill it anyway", text, t,
                 now);
        return -1;
    }
    return 0;
}


/*
 * Near the end of a month the run would bill, clocks matter too much: a
 * Redis that failed over to a host with another clock, or a clock being
 * stepped, may still stamp calls into the month.  Refused, exit 5.
 */
static int
bill_check_margin(bill_t *b, const apimon_period_t *p, char *err,
    size_t errlen)
{
    int64_t  d = b->now_ms - p->end_ms, m = b->o->margin_ms;
    char     now[32], end[32], after[32], text[8];

    if (m == 0 || d >= m || d <= -m) {
        return 0;
    }
    apimon_period_format(p, text, sizeof(text));
    agent_iso_time(b->now_ms, now, sizeof(now));
    agent_iso_time(p->end_ms, end, sizeof(end));
    agent_iso_time(p->end_ms + m, after, sizeof(after));
    snprintf(err, errlen, "Redis's clock says %s, within %lld s of the end "
             "of %s (%s): calls may still be counted into it; run again "
             "after %s (or set --boundary-margin)", now,
             (long long) (m / 1000), text, end, after);
    return -1;
}


/* the earliest startTime of a subscription that was ever approved, or -1 */
static int64_t
bill_earliest_start(bill_t *b, char **ids, size_t nids)
{
    redisReply  *r;
    char         key[128];
    size_t       i, j, n, bs = (size_t) b->o->batch;
    int64_t      v, min = -1;

    for (i = 0; i < nids; i += n) {
        n = nids - i < bs ? nids - i : bs;
        for (j = 0; j < n; j++) {
            snprintf(key, sizeof(key), "apimon:sub:{%s}", ids[i + j]);
            redisAppendCommand(b->c, "HMGET %s state startTime", key);
        }
        for (j = 0; j < n; j++) {
            if (bill_get(b, &r) != 0) {
                return -1;
            }
            /* unreadable times are reported when the month is priced */
            if (r->type == REDIS_REPLY_ARRAY && r->elements == 2
                && r->element[0]->type == REDIS_REPLY_STRING
                && strcmp(r->element[0]->str, "submitted") != 0
                && r->element[1]->type == REDIS_REPLY_STRING
                && agent_parse_i64(r->element[1]->str, r->element[1]->len,
                                   &v) == 0
                && v >= BILL_TIME_MIN && v <= BILL_TIME_MAX
                && (min < 0 || v < min))
            {
                min = v;
            }
            freeReplyObject(r);
        }
    }
    return min;
}


/*
 * Without --period: every closed month (by Redis's clock) from the first
 * month a subscription was in effect (or --since) to the last closed one
 * that has no completion record (field "month|done" of its ledger): a
 * month a run did not finish, or never reached, is billed by the next.
 */
static apimon_period_t *
bill_default_months(bill_t *b, char **ids, size_t nids, size_t *n,
    char *err, size_t errlen)
{
    apimon_period_t   cur, last, m, *months = NULL, since;
    redisReply       *r;
    size_t            k = 0, i, cap = 0;
    int64_t           first;

    *n = 0;
    apimon_period_of(b->now_ms, &cur);
    apimon_period_prev(&cur, &last);
    first = bill_earliest_start(b, ids, nids);
    if (b->fatal) {
        snprintf(err, errlen, "Redis: %s", b->c->errstr);
        return NULL;
    }
    if (first < 0) {
        return xcalloc(1, sizeof(apimon_period_t));      /* nothing yet */
    }
    apimon_period_of(first, &m);
    if (b->o->since) {
        if (apimon_period_parse(b->o->since, &since) != 0) {
            snprintf(err, errlen, "--since %s: expected YYYY-MM",
                     b->o->since);
            return NULL;
        }
        if (since.start_ms > m.start_ms) {
            m = since;
        }
    }

    for ( /* void */ ; m.start_ms <= last.start_ms; k++) {
        if (k == cap) {
            cap = cap ? cap * 2 : 16;
            months = xrealloc(months, cap * sizeof(apimon_period_t));
        }
        months[k] = m;
        redisAppendCommand(b->c, "HGET apimon:bill:%04d%02d %s", m.year,
                           m.month, BILL_MONTH_FIELD);
        apimon_period_of(m.end_ms, &m);
    }
    for (i = 0; i < k; i++) {
        if (bill_get(b, &r) != 0) {
            free(months);
            snprintf(err, errlen, "Redis: %s", b->c->errstr);
            return NULL;
        }
        if (r->type != REDIS_REPLY_STRING) {
            months[(*n)++] = months[i];          /* no record: bill it */
        }
        freeReplyObject(r);
    }
    return months ? months : xcalloc(1, sizeof(apimon_period_t));
}


/* every line of the month is done: the next default run skips it */
static int
bill_month_done(bill_t *b)
{
    ledger_entry_t  e;
    redisReply     *r;
    char            err[512], key[64];
    ledger_state_e  from = LEDGER_ABSENT;
    int             rc;

    r = redisCommand(b->c, "HGET %s %s", b->bill_key, BILL_MONTH_FIELD);
    if (r == NULL) {
        agent_err("Redis: %s", b->c->errstr);
        return -1;
    }
    if (r->type == REDIS_REPLY_STRING) {
        memset(&e, 0, sizeof(e));
        ledger_parse(r->str, r->len, &e);
        from = e.state;
        ledger_entry_free(&e);
    }
    freeReplyObject(r);

    memset(&e, 0, sizeof(e));
    e.state = LEDGER_DONE;
    snprintf(key, sizeof(key), "apimon-%s-month", b->ym);
    e.key = key;
    rc = ledger_write(b->c, b->bill_key, BILL_MONTH_FIELD, from, &e, err,
                      sizeof(err));
    if (rc != 0) {
        agent_err("ledger %s %s: %s", b->bill_key, BILL_MONTH_FIELD, err);
        return -1;
    }
    return 0;
}


/* ----------------------------------------------------------------- plans */

/*
 * What starts each line's description, the text the end customer reads:
 * "Bronze (weather-bronze)", or the plan id alone without a display name.
 */
static void
bill_plan_label(bill_plan_t *bp, const char *name, const redisReply *r)
{
    const redisReply  *d = NULL;

    if (r->type == REDIS_REPLY_ARRAY && r->elements == 2
        && r->element[1]->type == REDIS_REPLY_STRING
        && r->element[1]->len > 0)
    {
        d = r->element[1];
    }
    if (d) {
        snprintf(bp->label, sizeof(bp->label), "%.*s (%s)",
                 (int) (d->len < APIMON_DISPLAY_MAX ? d->len
                                                    : APIMON_DISPLAY_MAX),
                 d->str, name);
    } else {
        snprintf(bp->label, sizeof(bp->label), "%s", name);
    }
}


static int
bill_load_plans(bill_t *b, char *err, size_t errlen)
{
    redisReply   *r, *names, *pr;
    bill_plan_t  *bp;
    size_t        i;
    int64_t       v;

    r = redisCommand(b->c, "HGET apimon:catalog version");
    if (r == NULL || r->type != REDIS_REPLY_STRING
        || agent_parse_i64(r->str, r->len, &v) != 0)
    {
        snprintf(err, errlen, "no catalog in Redis (apply one with "
                 "`billing-agent catalog apply FILE`)%s%s",
                 r && r->type == REDIS_REPLY_ERROR ? ": " : "",
                 r && r->type == REDIS_REPLY_ERROR ? r->str : "");
        if (r) {
            freeReplyObject(r);
        }
        return -1;
    }
    b->catalog_version = v;
    freeReplyObject(r);

    names = redisCommand(b->c, "SMEMBERS apimon:plans");
    if (names == NULL || names->type != REDIS_REPLY_ARRAY) {
        snprintf(err, errlen, "cannot read apimon:plans");
        if (names) {
            freeReplyObject(names);
        }
        return -1;
    }

    for (i = 0; i < names->elements; i++) {
        redisAppendCommand(b->c, "HMGET apimon:plan:%s pricing displayName",
                           names->element[i]->str);
    }
    for (i = 0; i < names->elements; i++) {
        if (redisGetReply(b->c, (void **) &pr) != REDIS_OK) {
            snprintf(err, errlen, "Redis: %s", b->c->errstr);
            freeReplyObject(names);
            return -1;
        }
        bp = xcalloc(1, sizeof(*bp));
        bill_plan_label(bp, names->element[i]->str, pr);
        if (pr->type != REDIS_REPLY_ARRAY || pr->elements != 2
            || pr->element[0]->type != REDIS_REPLY_STRING)
        {
            snprintf(bp->err, sizeof(bp->err), "plan has no pricing");
        } else if (apimon_pricing_parse(pr->element[0]->str, &bp->pr,
                                        bp->err, sizeof(bp->err)) == 0)
        {
            bp->ok = 1;
        }
        if (!bp->ok) {
            agent_err("plan %s: %s", names->element[i]->str, bp->err);
        }
        amap_put(&b->plans, names->element[i]->str, bp);
        freeReplyObject(pr);
    }

    freeReplyObject(names);
    return 0;
}


/* ------------------------------------------------------------- reading */

static int
cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *) a, *(char *const *) b);
}


/* every subscription id, sorted so runs are reproducible */
static char **
bill_sub_ids(bill_t *b, size_t *n, char *err, size_t errlen)
{
    redisReply  *r;
    char       **ids;
    size_t       i;

    r = redisCommand(b->c, "SMEMBERS apimon:subs");
    if (r == NULL || r->type != REDIS_REPLY_ARRAY) {
        snprintf(err, errlen, "cannot read apimon:subs: %s",
                 r ? (r->type == REDIS_REPLY_ERROR ? r->str : "bad reply")
                   : b->c->errstr);
        if (r) {
            freeReplyObject(r);
        }
        return NULL;
    }

    ids = xcalloc(r->elements + 1, sizeof(char *));
    for (i = 0; i < r->elements; i++) {
        ids[i] = xstrndup(r->element[i]->str, r->element[i]->len);
    }
    *n = r->elements;
    freeReplyObject(r);
    qsort(ids, *n, sizeof(char *), cmp_str);
    return ids;
}


static int64_t
days_from_civil(int64_t y, int m, int d)
{
    int64_t  era, yoe, doy, doe;

    y -= m <= 2;
    era = (y >= 0 ? y : y - 399) / 400;
    yoe = y - era * 400;
    doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}


/*
 * Sums the accepted calls of one month's usage hash.  A day counts when the
 * subscription was in effect for some of it: calls on days wholly after
 * the end (or before the start) are not billed, only reported.
 */
static void
bill_usage(bill_sub_t *s, const redisReply *u)
{
    const char  *f;
    int64_t      day, v, ymd, day_ms;
    size_t       i;

    s->calls = 0;
    s->unbilled = 0;
    if (u == NULL || u->type != REDIS_REPLY_ARRAY) {
        return;
    }

    for (i = 0; i + 1 < u->elements; i += 2) {
        f = u->element[i]->str;
        if (u->element[i]->len < 12
            || strcmp(f + u->element[i]->len - 3, "|ok") != 0
            || agent_parse_i64(f, 8, &ymd) != 0 || f[8] != '|'
            || agent_parse_i64(u->element[i + 1]->str,
                               u->element[i + 1]->len, &v) != 0)
        {
            continue;
        }
        day = days_from_civil(ymd / 10000, (int) (ymd / 100 % 100),
                              (int) (ymd % 100));
        day_ms = day * 86400000;

        if ((s->end_ms != 0 && day_ms >= s->end_ms)
            || day_ms + 86400000 <= s->start_ms)
        {
            s->unbilled += v;
        } else {
            s->calls += v;
        }
    }
}


static char *
reply_dup(const redisReply *r)
{
    return (r && r->type == REDIS_REPLY_STRING)
           ? xstrndup(r->str, r->len) : NULL;
}


/*
 * One of the subscription's times, exactly as stored: decimal ms from
 * 2000-01-01 to 9999-12-31T23:59:59.999Z (endTime 0 = open-ended).
 * Anything else (19 digits, a sign, a float, text) is unreadable: the
 * reason goes to s->why and the subscription is not priced, rather than
 * priced from a 0.
 */
static void
sub_time(bill_sub_t *s, const redisReply *r, const char *name, int64_t *out)
{
    int64_t  v;

    *out = 0;
    if (s->why[0]) {
        return;
    }
    if (r == NULL || r->type != REDIS_REPLY_STRING) {
        snprintf(s->why, sizeof(s->why), "%s is missing", name);
        return;
    }
    if (agent_parse_i64(r->str, r->len, &v) != 0
        || (v != 0 && (v < BILL_TIME_MIN || v > BILL_TIME_MAX))
        || (v == 0 && strcmp(name, "endTime") != 0))
    {
        snprintf(s->why, sizeof(s->why), "%s \"%.*s\" is not a time in ms "
                 "from %lld (2000-01-01) to %lld (9999-12-31T23:59:59.999Z)",
                 name, (int) (r->len < 40 ? r->len : 40), r->str,
                 BILL_TIME_MIN, BILL_TIME_MAX);
        return;
    }
    *out = v;
}


static int
bill_get(bill_t *b, redisReply **r)
{
    if (redisGetReply(b->c, (void **) r) != REDIS_OK) {
        agent_err("Redis: %s", b->c->errstr);
        b->fatal = AGENT_EXIT_FAILED;
        return -1;
    }
    return 0;
}


/* appends argv-style commands: no format-string parsing per command */
static void
bill_append(redisContext *c, int argc, const char **argv)
{
    size_t  len[8];
    int     i;

    for (i = 0; i < argc; i++) {
        len[i] = strlen(argv[i]);
    }
    redisAppendCommandArgv(c, argc, argv, len);
}


/* sends what was appended, so Redis works while we price */
static int
bill_flush(redisContext *c)
{
    int  done = 0;

    do {
        if (redisBufferWrite(c, &done) == REDIS_ERR) {
            return -1;
        }
    } while (!done);
    return 0;
}


/* subscription hashes and usage of one batch, in one pipeline */
static int
bill_send_subs(bill_t *b, redisContext *c, bill_sub_t *subs, size_t n)
{
    static const char  *fields[] = {
        "HMGET", NULL, "owner_kind", "owner", "plan", "state", "startTime",
        "endTime"
    };
    const char         *argv[8];
    char                key[128], ukey[160];
    size_t              i;

    memcpy(argv, fields, sizeof(fields));
    for (i = 0; i < n; i++) {
        snprintf(key, sizeof(key), "apimon:sub:{%s}", subs[i].id);
        snprintf(ukey, sizeof(ukey), "%s:usage:%s", key, b->ym);
        argv[1] = key;
        bill_append(c, 8, argv);
        argv[0] = "HGETALL";
        argv[1] = ukey;
        bill_append(c, 2, argv);
        argv[0] = "HMGET";
    }
    return bill_flush(c);
}


static int
bill_recv_subs(bill_t *b, redisContext *c, bill_sub_t *subs, size_t n)
{
    redisReply  *r;
    size_t       i;

    for (i = 0; i < n; i++) {
        if (redisGetReply(c, (void **) &r) != REDIS_OK) {
            agent_err("Redis: %s", c->errstr);
            b->fatal = AGENT_EXIT_FAILED;
            return -1;
        }
        if (r->type == REDIS_REPLY_ARRAY && r->elements == 6) {
            subs[i].owner_kind = reply_dup(r->element[0]);
            subs[i].owner = reply_dup(r->element[1]);
            subs[i].plan = reply_dup(r->element[2]);
            subs[i].state = reply_dup(r->element[3]);
            sub_time(&subs[i], r->element[4], "startTime",
                     &subs[i].start_ms);
            sub_time(&subs[i], r->element[5], "endTime", &subs[i].end_ms);
        }
        freeReplyObject(r);

        if (redisGetReply(c, (void **) &r) != REDIS_OK) {
            agent_err("Redis: %s", c->errstr);
            b->fatal = AGENT_EXIT_FAILED;
            return -1;
        }
        bill_usage(&subs[i], r);
        freeReplyObject(r);
    }
    return 0;
}


static void
owner_key(const bill_sub_t *s, char *buf, size_t len)
{
    snprintf(buf, len, "%s:%s", s->owner_kind, s->owner);
}


/* the customer ids of owners not seen yet, in one pipeline */
static int
bill_read_owners(bill_t *b, bill_sub_t *subs, size_t n)
{
    char         k[600];
    char       **ask;
    size_t       i, nask = 0;
    redisReply  *r;
    amap_slot_t *slot;

    ask = xcalloc(n, sizeof(char *));

    for (i = 0; i < n; i++) {
        if (subs[i].owner_kind == NULL || subs[i].owner == NULL) {
            continue;
        }
        owner_key(&subs[i], k, sizeof(k));
        if (amap_get(&b->owners, k) == NULL) {
            slot = amap_put(&b->owners, k, xstrdup(""));
            ask[nask++] = slot->key;
            redisAppendCommand(b->c, "HGET apimon:%s customer", k);
        }
    }

    for (i = 0; i < nask; i++) {
        if (bill_get(b, &r) != 0) {
            free(ask);
            return -1;
        }
        if (r->type == REDIS_REPLY_STRING && r->len > 0) {
            free(amap_get(&b->owners, ask[i]));
            amap_put(&b->owners, ask[i], xstrndup(r->str, r->len));
        }
        freeReplyObject(r);
    }
    free(ask);

    for (i = 0; i < n; i++) {
        if (subs[i].owner_kind && subs[i].owner) {
            owner_key(&subs[i], k, sizeof(k));
            subs[i].customer = amap_get(&b->owners, k);
        }
        if (subs[i].customer == NULL) {
            subs[i].customer = "";
        }
    }
    return 0;
}


static void
bill_price(bill_t *b, bill_sub_t *s)
{
    char  why[APIMON_PRICE_ERRLEN];
    int   nl;

    s->nlines = 0;
    s->bp = s->plan ? amap_get(&b->plans, s->plan) : NULL;
    if (s->bp == NULL || !s->bp->ok || s->why[0]) {
        return;
    }
    if (apimon_active_days(&b->p, s->start_ms, s->end_ms) == 0) {
        return;
    }
    nl = apimon_price_why(&s->bp->pr, &b->p, s->start_ms, s->end_ms,
                          s->calls, s->bp->label, s->lines, APIMON_MAX_LINES,
                          why, sizeof(why));
    s->nlines = nl < 0 ? -1 : nl;
    if (nl < 0) {
        snprintf(s->why, sizeof(s->why), "plan %.*s: %s", APIMON_NAME_MAX,
                 s->plan, why);
    }
}


static void
line_field(const bill_sub_t *s, int i, char *buf, size_t len)
{
    snprintf(buf, len, "%s|%s", s->id, s->lines[i].id);
}


/* the ledger entries of every priced line of the batch, one pipeline */
static int
bill_read_ledger(bill_t *b, bill_sub_t *subs, size_t n)
{
    const char  *argv[2 + APIMON_MAX_LINES];
    char         f[APIMON_MAX_LINES][128];
    redisReply  *r;
    size_t       i, k;
    int          j, asked = 0;

    /* a period nobody billed yet (the first run, most dry runs) */
    if (b->ledger_empty) {
        return 0;
    }

    for (i = 0; i < n; i++) {
        if (subs[i].nlines <= 0) {
            continue;
        }
        argv[0] = "HMGET";
        argv[1] = b->bill_key;
        for (j = 0; j < subs[i].nlines; j++) {
            line_field(&subs[i], j, f[j], sizeof(f[j]));
            argv[2 + j] = f[j];
        }
        bill_append(b->c, 2 + subs[i].nlines, argv);
        asked++;
    }
    if (asked == 0) {
        return 0;
    }

    for (i = 0; i < n; i++) {
        if (subs[i].nlines <= 0) {
            continue;
        }
        if (bill_get(b, &r) != 0) {
            return -1;
        }
        for (k = 0; r->type == REDIS_REPLY_ARRAY && k < r->elements; k++) {
            if (r->element[k]->type == REDIS_REPLY_STRING) {
                ledger_parse(r->element[k]->str, r->element[k]->len,
                             &subs[i].led[k]);
            }
        }
        freeReplyObject(r);
    }
    return 0;
}


/* --------------------------------------------------------------- bodies */

static void
md_add(abuf_t *body, const char *key, const char *value)
{
    char  k[64], v[BILL_MD_VALUE_MAX + 1];

    /* our keys are constants well inside the limit; values are cut */
    snprintf(k, sizeof(k), "metadata[%.*s]", BILL_MD_KEY_MAX, key);
    snprintf(v, sizeof(v), "%s", value);
    stripe_form_add(body, k, v);
}


static void
bill_body(bill_t *b, const bill_sub_t *s, int i, const char *key,
    abuf_t *body)
{
    const apimon_line_t  *l = &s->lines[i];
    int64_t               ps, pe;
    char                  num[32];

    /* the part of the month the subscription was in effect, in seconds */
    ps = s->start_ms > b->p.start_ms ? s->start_ms : b->p.start_ms;
    pe = (s->end_ms != 0 && s->end_ms < b->p.end_ms) ? s->end_ms
                                                     : b->p.end_ms;
    if (pe < ps) {
        pe = ps;
    }

    abuf_reset(body);
    stripe_form_add(body, "customer", s->customer);
    snprintf(num, sizeof(num), "%" PRId64, l->amount);
    stripe_form_add(body, "amount", num);
    stripe_form_add(body, "currency", s->bp->pr.currency);
    stripe_form_add(body, "description", l->description);
    snprintf(num, sizeof(num), "%" PRId64, ps / 1000);
    stripe_form_add(body, "period[start]", num);
    snprintf(num, sizeof(num), "%" PRId64, (pe + 999) / 1000);
    stripe_form_add(body, "period[end]", num);
    md_add(body, "apimon_key", key);
    md_add(body, "apimon_subscription", s->id);
    md_add(body, "apimon_period", b->ptext);
    md_add(body, "apimon_line", l->id);
    md_add(body, "apimon_plan", s->plan);
    snprintf(num, sizeof(num), "%" PRId64, l->quantity);
    md_add(body, "apimon_quantity", num);
}


/* deterministic per (subscription, period, line, pricing version) */
static void
bill_key(bill_t *b, const bill_sub_t *s, int i, char *buf, size_t len)
{
    snprintf(buf, len, "apimon-%s-%s-%s-v%" PRId64, b->ym, s->id,
             s->lines[i].id, b->catalog_version);
}


/* one value of a form body, decoded */
static void
form_get(const char *body, const char *name, char *buf, size_t len)
{
    const char  *p = body, *amp, *eq;
    char        *k, *v;
    int          kl, vl;

    buf[0] = '\0';
    while (p && *p) {
        amp = strchr(p, '&');
        eq = strchr(p, '=');
        if (eq && (amp == NULL || eq < amp)) {
            k = curl_easy_unescape(NULL, p, (int) (eq - p), &kl);
            if (k && strcmp(k, name) == 0) {
                v = curl_easy_unescape(NULL, eq + 1,
                        (int) (amp ? amp - eq - 1 : (long) strlen(eq + 1)),
                        &vl);
                if (v) {
                    snprintf(buf, len, "%s", v);
                    curl_free(v);
                }
                curl_free(k);
                return;
            }
            curl_free(k);
        }
        p = amp ? amp + 1 : NULL;
    }
}


/* -------------------------------------------------------------- report */

static void
bill_report(bill_t *b, const bill_sub_t *s, int i, const char *customer,
    const char *status, const char *stripe_id, const char *error)
{
    report_row_t          row;
    const apimon_line_t  *l = (i >= 0) ? &s->lines[i] : NULL;
    const ledger_entry_t *e = (i >= 0) ? &s->led[i] : NULL;
    char                  owner[600], amount[32], cur[8];
    int64_t               amt;

    owner_key(s, owner, sizeof(owner));
    memset(&row, 0, sizeof(row));
    row.period = b->ptext;
    row.subscription = s->id;
    row.customer = customer;
    row.owner = owner;
    row.plan = s->plan;
    row.model = s->bp ? apimon_model_name(s->bp->pr.model) : "";
    row.currency = s->bp ? s->bp->pr.currency : "";
    row.status = status;
    row.stripe_id = stripe_id;
    row.error = error;

    if (l) {
        row.line = l->id;
        row.quantity = l->quantity;
        row.amount = l->amount;
        /* what was (or will be) sent is what the ledger holds */
        if (e && e->body) {
            form_get(e->body, "amount", amount, sizeof(amount));
            if (agent_parse_i64(amount, strlen(amount), &amt) == 0) {
                row.amount = amt;
            }
            form_get(e->body, "currency", cur, sizeof(cur));
            row.currency = cur;
        }
    } else if (i == BILL_ROW_AFTER_END) {
        row.line = "after_end";
        row.quantity = s->unbilled;
    } else {
        row.line = "subscription";       /* the whole subscription */
    }

    report_row(&b->rep, &row);
}


/* ----------------------------------------------------------------- push */

static void
bill_fatal_auth(bill_t *b, stripe_resp_t *r)
{
    agent_err("the Stripe API rejected the secret key (%s); set "
              "STRIPE_API_KEY or --stripe-key-file to a valid key. "
              "Nothing more is posted", r->error);
    b->fatal = AGENT_EXIT_CONFIG;
}


/* a cheap authenticated GET before the first write: a bad key fails fast */
static int
bill_stripe_start(bill_t *b)
{
    stripe_resp_t  r;
    int            attempt;

    if (b->stripe_ready) {
        return 0;
    }

    stripe_resp_init(&r);
    for (attempt = 0; ; attempt++) {
        stripe_request(&b->stripe, "/v1/invoiceitems?limit=1", NULL, NULL,
                       &r);
        if (r.cls == STRIPE_OK) {
            break;
        }
        if (r.cls == STRIPE_AUTH) {
            bill_fatal_auth(b, &r);
            stripe_resp_free(&r);
            return -1;
        }
        if ((r.cls != STRIPE_RETRY && r.cls != STRIPE_UNKNOWN)
            || attempt >= b->o->max_retries)
        {
            agent_err("the Stripe API at %s does not answer (%s); nothing "
                      "was posted, rerun later", b->stripe.base, r.error);
            b->fatal = AGENT_EXIT_FAILED;
            stripe_resp_free(&r);
            return -1;
        }
        agent_sleep_us(stripe_backoff_us(&b->stripe, attempt));
    }

    stripe_resp_free(&r);
    b->stripe_ready = 1;
    return 0;
}


static int
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


static char *
item_id(stripe_resp_t *r)
{
    cJSON  *j, *id;
    char   *s = NULL;

    j = cJSON_ParseWithLength(r->body.data ? r->body.data : "", r->body.len);
    id = j ? cJSON_GetObjectItemCaseSensitive(j, "id") : NULL;
    if (cJSON_IsString(id)) {
        s = xstrdup(id->valuestring);
    }
    cJSON_Delete(j);
    return s;
}


static bill_cust_t *
bill_cust(bill_t *b, const char *customer)
{
    bill_cust_t  *c = amap_get(&b->custs, customer);

    if (c == NULL) {
        c = xcalloc(1, sizeof(*c));
        amap_put(&b->custs, customer, c);
    }
    return c;
}


static void
cust_add(bill_cust_t *c, const char *field, const ledger_entry_t *e)
{
    c->fields = xrealloc(c->fields, (c->n + 1) * sizeof(char *));
    c->entries = xrealloc(c->entries, (c->n + 1) * sizeof(ledger_entry_t));
    c->fields[c->n] = xstrdup(field);
    memset(&c->entries[c->n], 0, sizeof(ledger_entry_t));
    ledger_entry_copy(&c->entries[c->n], e);
    c->n++;
}


/* moves e to state `to` from e->state; -1 (run stops) on trouble */
static int
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


/* strips a trailing "-<ch><digits>" from key[0..*len); its number or 0 */
static long
key_tail(const char *key, size_t *len, char ch)
{
    size_t  i = *len;

    while (i > 0 && key[i - 1] >= '0' && key[i - 1] <= '9') {
        i--;
    }
    if (i == *len || i < 2 || key[i - 1] != ch || key[i - 2] != '-') {
        return 0;
    }
    *len = i - 2;
    return strtol(key + i, NULL, 10);
}


/*
 * Keys are <base>[-r<N>][-u<M>]: -r from --retry-failed, -u from re-keying
 * after a replayed 5xx.  The base length and both numbers.
 */
static size_t
key_parts(const char *key, long *r, long *u)
{
    size_t  len = strlen(key);

    *u = key_tail(key, &len, 'u');
    *r = key_tail(key, &len, 'r');
    return len;
}


/* every occurrence of from in s replaced by to (keys: no escaping needed) */
static char *
str_replace_all(const char *s, const char *from, const char *to)
{
    abuf_t       out;
    const char  *p;
    size_t       fl = strlen(from);

    abuf_init(&out);
    while ((p = strstr(s, from)) != NULL) {
        abuf_add(&out, s, (size_t) (p - s));
        abuf_adds(&out, to);
        s = p + fl;
    }
    abuf_adds(&out, s);
    return out.data;
}


/*
 * A replayed 5xx means the first request under the key has finished with
 * an error, and the listing just showed no item under it: the key can only
 * ever replay that error (for 24 hours at Stripe), so the line moves to a
 * fresh key, recorded in the ledger before it is used.
 */
static int
bill_rekey(bill_t *b, const char *field, ledger_entry_t *e)
{
    char    key[320];
    char   *body, *old_key, *old_body;
    long    r, u;
    size_t  base;

    base = key_parts(e->key, &r, &u);
    if (r) {
        snprintf(key, sizeof(key), "%.*s-r%ld-u%ld", (int) base, e->key, r,
                 u + 1);
    } else {
        snprintf(key, sizeof(key), "%.*s-u%ld", (int) base, e->key, u + 1);
    }
    body = str_replace_all(e->body, e->key, key);

    old_key = e->key;
    old_body = e->body;
    e->key = xstrdup(key);
    e->body = body;
    if (bill_move(b, field, e, LEDGER_COMPUTED) != 0) {
        free(e->key);
        free(e->body);
        e->key = old_key;
        e->body = old_body;
        return -1;
    }
    agent_log("%s: the key %s only replays a 5xx and no item holds it; "
              "now %s", field, old_key, key);
    free(old_key);
    free(old_body);
    return 0;
}


typedef enum {
    PUSH_POSTED,
    PUSH_FAILED,
    PUSH_UNKNOWN,
    PUSH_FATAL
} push_e;


/*
 * Sends one computed line until Stripe holds it, refuses it, or the retries
 * run out.  resume: the line was computed by an earlier run, or a previous
 * attempt's outcome is unknown, so look for it before posting.
 */
static push_e
bill_post(bill_t *b, const char *field, const char *customer,
    ledger_entry_t *e, int resume, stripe_resp_t *r)
{
    char  found[256];
    int   retry = 0, rc, rekey = 0;

    for ( ;; ) {
        if (resume) {
            rc = stripe_find_item(&b->stripe, customer, e->key, found,
                                  sizeof(found), r);
            if (rc == 1) {
                free(e->item);
                e->item = xstrdup(found);
                agent_log("reconciled %s: found %s", e->key, found);
                return PUSH_POSTED;
            }
            if (rc < 0) {
                if (r->cls == STRIPE_AUTH) {
                    bill_fatal_auth(b, r);
                    return PUSH_FATAL;
                }
                return PUSH_UNKNOWN;
            }
            if (rekey && bill_rekey(b, field, e) != 0) {
                return PUSH_FATAL;
            }
        }

        stripe_request(&b->stripe, "/v1/invoiceitems", e->body, e->key, r);

        switch (r->cls) {

        case STRIPE_OK:
            free(e->item);
            e->item = item_id(r);
            if (e->item == NULL) {
                snprintf(r->error, sizeof(r->error), "2xx without an id");
                resume = 1;
                break;
            }
            return PUSH_POSTED;

        case STRIPE_AUTH:
            bill_fatal_auth(b, r);
            return PUSH_FATAL;

        case STRIPE_IDEMPOTENCY:
        case STRIPE_FINAL:
            return PUSH_FAILED;

        case STRIPE_RETRY:
            resume = 0;
            break;

        case STRIPE_UNKNOWN:
            resume = 1;
            rekey = (r->replayed && r->status >= 500);
            break;
        }

        if (retry >= b->o->max_retries) {
            return PUSH_UNKNOWN;
        }
        agent_log("%s: %s; retrying", e->key, r->error);
        agent_sleep_us(stripe_backoff_us(&b->stripe, retry++));
    }
}


/* one priced line whose ledger entry is absent or computed */
static void
bill_push_line(bill_t *b, bill_sub_t *s, int i, const char *field)
{
    ledger_entry_t  *e = &s->led[i];
    stripe_resp_t    r;
    char             customer[256], amount[32];
    int              resume;
    push_e           rc;

    form_get(e->body, "customer", customer, sizeof(customer));

    if (bill_stopped(b) || bill_lock_keep(b) != 0
        || bill_stripe_start(b) != 0)
    {
        return;
    }

    resume = (e->state == LEDGER_COMPUTED);
    if (!resume && bill_move(b, field, e, LEDGER_COMPUTED) != 0) {
        return;
    }

    stripe_resp_init(&r);
    rc = bill_post(b, field, customer, e, resume, &r);

    switch (rc) {

    case PUSH_POSTED:
        b->unknown_streak = 0;
        if (bill_move(b, field, e, LEDGER_POSTED) != 0) {
            break;
        }
        form_get(e->body, "amount", amount, sizeof(amount));
        agent_log("posted %s %s: %s %s to %s as %s%s", s->id, s->lines[i].id,
                  amount, s->bp ? s->bp->pr.currency : "", customer, e->item,
                  r.replayed ? " (replayed)" : "");
        b->nposted++;
        if (b->o->create_invoices) {
            cust_add(bill_cust(b, customer), field, e);
            bill_report(b, s, i, customer, "posted", e->item, NULL);
            break;
        }
        if (bill_move(b, field, e, LEDGER_DONE) == 0) {
            b->ndone++;
            bill_report(b, s, i, customer, "done", e->item, NULL);
        }
        break;

    case PUSH_FAILED:
        b->unknown_streak = 0;
        free(e->error);
        e->error = xstrdup(r.error);
        agent_err("line %s %s refused: %s", s->id, s->lines[i].id, r.error);
        if (bill_move(b, field, e, LEDGER_FAILED) == 0) {
            b->nfailed++;
            bill_report(b, s, i, customer, "failed", NULL, r.error);
        }
        break;

    case PUSH_UNKNOWN:
        agent_err("line %s %s: outcome unknown after retries (%s); it stays "
                  "computed and is reconciled by the next run", s->id,
                  s->lines[i].id, r.error);
        b->nunknown++;
        bill_cust(b, customer)->blocked = 1;
        bill_report(b, s, i, customer, "unknown", NULL, r.error);
        if (++b->unknown_streak >= BILL_UNKNOWN_STREAK) {
            agent_err("%d lines in a row unresolved: the API is failing; "
                      "stopping, rerun to resume", b->unknown_streak);
            b->fatal = AGENT_EXIT_FAILED;
        }
        break;

    case PUSH_FATAL:
        break;
    }

    stripe_resp_free(&r);
}


/* ------------------------------------------------------------ per line */

static void
bill_dry(bill_t *b, bill_sub_t *s, int i)
{
    ledger_entry_t  *e = &s->led[i];
    char             customer[256];

    form_get(e->body, "customer", customer, sizeof(customer));
    printf("POST /v1/invoiceitems\tIdempotency-Key: %s\t%s\n", e->key,
           e->body);
    b->ndry++;
    bill_report(b, s, i, customer,
                e->state == LEDGER_COMPUTED ? "dry_run_resume" : "dry_run",
                NULL, NULL);
}


/*
 * --retry-failed: a line the API refused for good gets a fresh key
 * ("...-r1", "-r2", ...) and a body priced and mapped anew.  The old key is
 * looked up first: an item stored under it (say by a conflicting request of
 * ours) is taken as the line's item instead of posting a second one.
 */
static void
bill_retry_failed(bill_t *b, bill_sub_t *s, int i, const char *field,
    abuf_t *body)
{
    ledger_entry_t  *e = &s->led[i];
    stripe_resp_t    r;
    char             key[300], old_cus[256], found[256];
    long             n = 0, u;
    int              rc;

    bill_key(b, s, i, key, sizeof(key));
    if (e->key && key_parts(e->key, &n, &u) == strlen(key)
        && strncmp(e->key, key, strlen(key)) == 0)
    {
        /* the same pricing version: count on from the last retry */
    } else {
        n = 0;
    }
    snprintf(key + strlen(key), sizeof(key) - strlen(key), "-r%ld", n + 1);

    if (!b->o->dry_run && e->key && e->body) {
        if (bill_stopped(b) || bill_stripe_start(b) != 0) {
            return;
        }
        form_get(e->body, "customer", old_cus, sizeof(old_cus));
        stripe_resp_init(&r);
        rc = old_cus[0] ? stripe_find_item(&b->stripe, old_cus, e->key, found,
                                           sizeof(found), &r)
                        : 0;
        stripe_resp_free(&r);
        if (rc < 0) {
            b->nunknown++;
            bill_report(b, s, i, old_cus, "unknown", NULL,
                        "cannot list the customer's items");
            return;
        }
        if (rc == 1) {
            free(e->item);
            e->item = xstrdup(found);
            agent_log("retry %s: the old key %s is stored as %s", field,
                      e->key, found);
            if (bill_move(b, field, e, LEDGER_POSTED) == 0
                && bill_move(b, field, e, LEDGER_DONE) == 0)
            {
                b->ndone++;
                bill_report(b, s, i, old_cus, "done", e->item, NULL);
            }
            return;
        }
    }

    bill_body(b, s, i, key, body);
    free(e->key);
    free(e->body);
    free(e->error);
    e->error = NULL;
    e->key = xstrdup(key);
    e->body = xstrndup(body->data, body->len);
    agent_log("retrying failed line %s with key %s", field, key);

    if (b->o->dry_run) {
        bill_dry(b, s, i);
    } else {
        bill_push_line(b, s, i, field);
    }
}


static void
bill_line(bill_t *b, bill_sub_t *s, int i, abuf_t *body)
{
    ledger_entry_t  *e = &s->led[i];
    char             field[128], key[256], customer[256];

    line_field(s, i, field, sizeof(field));
    b->nlines++;

    switch (e->state) {

    case LEDGER_DONE:
        b->ndone++;
        form_get(e->body, "customer", customer, sizeof(customer));
        bill_report(b, s, i, customer, "done", e->item, NULL);
        return;

    case LEDGER_FAILED:
        if (b->o->retry_failed && s->lines[i].amount != 0
            && s->customer[0] != '\0')
        {
            bill_retry_failed(b, s, i, field, body);
            return;
        }
        b->nfailed++;
        form_get(e->body, "customer", customer, sizeof(customer));
        bill_report(b, s, i, customer, "failed", e->item, e->error);
        return;

    case LEDGER_POSTED:
        form_get(e->body, "customer", customer, sizeof(customer));
        if (b->o->dry_run) {
            bill_report(b, s, i, customer, "posted", e->item, NULL);
        } else if (b->o->create_invoices) {
            cust_add(bill_cust(b, customer), field, e);
            bill_report(b, s, i, customer, "posted", e->item, NULL);
        } else if (bill_move(b, field, e, LEDGER_DONE) == 0) {
            b->ndone++;
            bill_report(b, s, i, customer, "done", e->item, NULL);
        }
        return;

    case LEDGER_COMPUTED:
        /* an earlier run stopped here: its stored body is the truth */
        if (b->o->dry_run) {
            bill_dry(b, s, i);
        } else {
            bill_push_line(b, s, i, field);
        }
        return;

    case LEDGER_ABSENT:
        break;
    }

    if (s->lines[i].amount == 0) {
        b->nzero++;
        bill_report(b, s, i, s->customer, "zero", NULL, NULL);
        return;
    }

    if (s->customer[0] == '\0') {
        b->nunmapped++;
        agent_err("subscription %s (%s %s): no billing customer; set one "
                  "with `billing-agent customer set`", s->id, s->owner_kind,
                  s->owner);
        bill_report(b, s, i, "", "unmapped", NULL, "no billing customer");
        return;
    }

    bill_key(b, s, i, key, sizeof(key));
    bill_body(b, s, i, key, body);
    e->key = xstrdup(key);
    e->body = xstrndup(body->data, body->len);

    if (b->o->dry_run) {
        bill_dry(b, s, i);
    } else {
        bill_push_line(b, s, i, field);
    }
}


static void
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

    b->nsubs++;

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
        b->nfailed++;
        agent_err("subscription %s: not priced: %s", s->id, s->why);
        bill_report(b, s, BILL_ROW_SUB, s->customer, "failed", NULL, s->why);
        return;
    }

    if (s->unbilled > 0) {
        b->nnotbilled++;
        agent_log("subscription %s: %" PRId64 " calls outside its term in "
                  "%s are not billed", s->id, s->unbilled, b->ptext);
        bill_report(b, s, BILL_ROW_AFTER_END, s->customer, "not_billed", NULL,
                    "usage outside the subscription's term");
    }

    for (i = 0; i < s->nlines && !b->fatal; i++) {
        bill_line(b, s, i, body);
    }
}


static void
bill_sub_free(bill_sub_t *s)
{
    int  i;

    free(s->owner_kind);
    free(s->owner);
    free(s->plan);
    free(s->state);
    for (i = 0; i < APIMON_MAX_LINES; i++) {
        ledger_entry_free(&s->led[i]);
    }
    memset(s, 0, sizeof(*s));
}


/*
 * Batches of subscriptions.  The subscription hashes and usage of the next
 * batch are requested on a second connection before the current batch is
 * priced and pushed, so Redis and the agent work at the same time.
 */
static void
bill_batches(bill_t *b, char **ids, size_t nids)
{
    bill_sub_t    *buf[2], *subs;
    size_t         i, j, n, nn, bs = (size_t) b->o->batch;
    redisContext  *pre = b->pre ? b->pre : b->c;
    abuf_t         body;
    int            cur = 0;

    buf[0] = xcalloc(bs, sizeof(bill_sub_t));
    buf[1] = xcalloc(bs, sizeof(bill_sub_t));
    abuf_init(&body);

    n = nids < bs ? nids : bs;
    for (j = 0; j < n; j++) {
        buf[0][j].id = ids[j];
    }
    if (n && bill_send_subs(b, pre, buf[0], n) != 0) {
        agent_err("Redis: %s", pre->errstr);
        b->fatal = AGENT_EXIT_FAILED;
    }

    for (i = 0; i < nids && !b->fatal; i += n) {
        n = (nids - i < bs) ? nids - i : bs;
        subs = buf[cur];

        if (bill_recv_subs(b, pre, subs, n) != 0) {
            break;
        }

        /* the next batch goes out now (same connection only if alone) */
        nn = nids - i - n < bs ? nids - i - n : bs;
        for (j = 0; j < nn; j++) {
            buf[cur ^ 1][j].id = ids[i + n + j];
        }
        if (nn && pre != b->c && bill_send_subs(b, pre, buf[cur ^ 1], nn) != 0)
        {
            agent_err("Redis: %s", pre->errstr);
            b->fatal = AGENT_EXIT_FAILED;
            break;
        }

        if (bill_read_owners(b, subs, n) == 0) {
            for (j = 0; j < n; j++) {
                bill_price(b, &subs[j]);
            }
            if (bill_read_ledger(b, subs, n) == 0) {
                for (j = 0; j < n && !b->fatal; j++) {
                    bill_sub(b, &subs[j], &body);
                }
            }
        }

        for (j = 0; j < n; j++) {
            bill_sub_free(&subs[j]);
        }

        if (nn && pre == b->c && !b->fatal
            && bill_send_subs(b, pre, buf[cur ^ 1], nn) != 0)
        {
            agent_err("Redis: %s", pre->errstr);
            b->fatal = AGENT_EXIT_FAILED;
        }
        cur ^= 1;
    }

    /* a stop in the middle leaves the prefetched replies unread: the
     * prefetch connection is closed with them */
    for (j = 0; j < bs; j++) {
        bill_sub_free(&buf[0][j]);
        bill_sub_free(&buf[1][j]);
    }
    abuf_free(&body);
    free(buf[0]);
    free(buf[1]);
}


/* -------------------------------------------------------------- invoices */

static void
bill_report_invoice(bill_t *b, const char *customer, bill_cust_t *c,
    const char *status, const char *id, const char *error)
{
    report_row_t  row;
    char          amount[32], cur[8] = "";
    int64_t       total = 0, v;
    size_t        i;

    /* the total of the lines this run saw for the customer */
    for (i = 0; i < c->n; i++) {
        form_get(c->entries[i].body, "amount", amount, sizeof(amount));
        if (agent_parse_i64(amount, strlen(amount), &v) == 0) {
            total += v;
        }
        form_get(c->entries[i].body, "currency", cur, sizeof(cur));
    }

    memset(&row, 0, sizeof(row));
    row.period = b->ptext;
    row.customer = customer;
    row.line = "invoice";
    row.quantity = (int64_t) c->n;
    row.amount = total;
    row.currency = cur;
    row.status = status;
    row.stripe_id = id;
    row.error = error;
    report_row(&b->rep, &row);
}


static void
bill_invoice(bill_t *b, const char *customer, bill_cust_t *c)
{
    ledger_entry_t  inv;
    stripe_resp_t   r;
    redisReply     *rep;
    char            field[300], key[320];
    abuf_t          body;
    size_t          i;
    int             retry = 0;

    memset(&inv, 0, sizeof(inv));
    snprintf(field, sizeof(field), "invoice|%s", customer);
    snprintf(key, sizeof(key), "apimon-%s-invoice-%s", b->ym, customer);

    rep = redisCommand(b->c, "HGET %s %s", b->bill_key, field);
    if (rep == NULL) {
        b->fatal = AGENT_EXIT_FAILED;
        return;
    }
    if (rep->type == REDIS_REPLY_STRING) {
        ledger_parse(rep->str, rep->len, &inv);
    }
    freeReplyObject(rep);

    if (inv.state == LEDGER_FAILED) {
        b->nfailed++;
        ledger_entry_free(&inv);
        return;
    }

    if (inv.state != LEDGER_DONE) {
        abuf_init(&body);
        stripe_form_add(&body, "customer", customer);
        stripe_form_add(&body, "pending_invoice_items_behavior", "include");
        md_add(&body, "apimon_key", key);
        md_add(&body, "apimon_period", b->ptext);
        if (inv.state == LEDGER_ABSENT) {
            inv.key = xstrdup(key);
            inv.body = xstrndup(body.data, body.len);
            if (bill_move(b, field, &inv, LEDGER_COMPUTED) != 0) {
                abuf_free(&body);
                ledger_entry_free(&inv);
                return;
            }
        }
        abuf_free(&body);

        /* an invoice only takes pending items: repeating it cannot charge
         * twice, and the key makes a repeat return the same invoice */
        stripe_resp_init(&r);
        for ( ;; ) {
            stripe_request(&b->stripe, "/v1/invoices", inv.body, inv.key, &r);
            if (r.cls != STRIPE_RETRY && r.cls != STRIPE_UNKNOWN) {
                break;
            }
            if (retry >= b->o->max_retries) {
                break;
            }
            agent_sleep_us(stripe_backoff_us(&b->stripe, retry++));
        }

        if (r.cls == STRIPE_AUTH) {
            bill_fatal_auth(b, &r);
        } else if (r.cls == STRIPE_OK && (inv.item = item_id(&r)) != NULL) {
            bill_move(b, field, &inv, LEDGER_DONE);
            agent_log("invoice %s for %s", inv.item, customer);
            bill_report_invoice(b, customer, c, "done", inv.item, NULL);
            b->ninvoices++;
        } else if (r.cls == STRIPE_FINAL || r.cls == STRIPE_IDEMPOTENCY) {
            inv.error = xstrdup(r.error);
            agent_err("invoice for %s refused: %s", customer, r.error);
            bill_move(b, field, &inv, LEDGER_FAILED);
            bill_report_invoice(b, customer, c, "failed", NULL, r.error);
            b->nfailed++;
        } else {
            agent_err("invoice for %s: outcome unknown (%s); rerun",
                      customer, r.error);
            bill_report_invoice(b, customer, c, "unknown", NULL, r.error);
            b->nunknown++;
        }
        stripe_resp_free(&r);
    }

    if (inv.state == LEDGER_DONE) {
        for (i = 0; i < c->n && !b->fatal; i++) {
            free(c->entries[i].invoice);
            c->entries[i].invoice = xstrdup(inv.item ? inv.item : "");
            if (bill_move(b, c->fields[i], &c->entries[i], LEDGER_DONE) == 0) {
                b->ndone++;
            }
        }
    }
    ledger_entry_free(&inv);
}


static void
bill_invoices(bill_t *b)
{
    size_t        i;
    bill_cust_t  *c;

    for (i = 0; i < b->custs.cap && !b->fatal; i++) {
        if (b->custs.slots[i].key == NULL) {
            continue;
        }
        c = b->custs.slots[i].val;
        if (c->n == 0) {
            continue;
        }
        if (c->blocked) {
            agent_err("customer %s: a line is unresolved, no invoice yet",
                      b->custs.slots[i].key);
            continue;
        }
        if (bill_stopped(b) || bill_lock_keep(b) != 0
            || bill_stripe_start(b) != 0)
        {
            return;
        }
        bill_invoice(b, b->custs.slots[i].key, c);
    }
}


static void
bill_cust_free(void *p)
{
    bill_cust_t  *c = p;
    size_t        i;

    for (i = 0; i < c->n; i++) {
        free(c->fields[i]);
        ledger_entry_free(&c->entries[i]);
    }
    free(c->fields);
    free(c->entries);
    free(c);
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
    if (b->o->allow_unsafe_redis) {
        agent_err("Redis may lose usage on a crash: %s; billing anyway "
                  "(--allow-unsafe-redis)", msg);
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
    if (b->nfailed || b->nunknown || b->nunmapped) {
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
    b->nsubs = b->nlines = b->ndone = b->nposted = b->nzero = 0;
    b->nfailed = b->nunknown = b->nunmapped = b->nnotbilled = b->ndry = 0;
    b->ninvoices = 0;
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
    bill_batches(b, ids, nids);
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
              b->ptext, b->nsubs, b->nlines, b->ndone, b->nposted, b->nzero,
              b->nfailed, b->nunknown, b->nunmapped, b->ndry, b->ninvoices,
              b->nnotbilled, (double) (agent_now_us() - t0) / 1e6, rc);
    return rc;
}


/* the months of this run, checked against Redis's clock; NULL: exit code */
static apimon_period_t *
bill_months(bill_t *b, char **ids, size_t nids, size_t *n, int *rc)
{
    apimon_period_t  *months;
    char              err[512];
    size_t            i;

    *rc = AGENT_EXIT_CONFIG;
    if (b->o->period) {
        months = xcalloc(1, sizeof(apimon_period_t));
        *n = 1;
        if (apimon_period_parse(b->o->period, &months[0]) != 0) {
            snprintf(err, sizeof(err), "--period %s: expected YYYY-MM",
                     b->o->period);
            goto failed;
        }
        if (bill_check_period(b, &months[0], err, sizeof(err)) != 0) {
            goto failed;
        }
    } else if ((months = bill_default_months(b, ids, nids, n, err,
                                             sizeof(err))) == NULL)
    {
        agent_err("%s", err);
        return NULL;
    }

    for (i = 0; i < *n; i++) {
        if (bill_check_margin(b, &months[i], err, sizeof(err)) != 0) {
            *rc = AGENT_EXIT_CLOCK;
            goto failed;
        }
    }
    return months;

failed:
    agent_err("%s", err);
    free(months);
    return NULL;
}


int
bill_run(redisContext *c, const bill_opts_t *o)
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
    if (report_open(&b.rep, o->report, err, sizeof(err)) != 0) {
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
    amap_free(&b.plans, free);
    amap_free(&b.owners, free);
    amap_free(&b.custs, bill_cust_free);
    if (!o->dry_run) {
        stripe_free(&b.stripe);
    }
    return rc;
}
