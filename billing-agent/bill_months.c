/*
 * `billing-agent bill`: which months a run bills (bill_private.h).  Redis's
 * clock decides, the clock that stamps usage days: --period must have
 * ended (or --allow-open), a default run bills every closed month from the
 * first one a subscription was in effect, but not before the month it was
 * created in (or --since), that has no completion record, and no month is
 * billed this near its end.
 */

#include "bill_private.h"

#include <stdlib.h>
#include <string.h>


/* the month the run bills now, and its names */
void
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


/*
 * A subscription's first billable instant for default runs: its startTime,
 * but never before the month it was created in.  A purchase may carry a
 * startTime in the past (back to 2000); months that had closed before the
 * subscription existed are billed only when asked for with --period.
 */
static int
bill_first_instant(redisReply *r, int64_t *first)
{
    int64_t  start, created;

    if (r->type != REDIS_REPLY_ARRAY || r->elements != 3
        || r->element[1]->type != REDIS_REPLY_STRING
        || agent_parse_i64(r->element[1]->str, r->element[1]->len,
                           &start) != 0
        || start < BILL_TIME_MIN || start > BILL_TIME_MAX)
    {
        return -1;
    }
    if (r->element[2]->type == REDIS_REPLY_STRING
        && agent_parse_i64(r->element[2]->str, r->element[2]->len,
                           &created) == 0
        && created >= BILL_TIME_MIN && created <= BILL_TIME_MAX
        && created > start)
    {
        apimon_period_t  m;

        apimon_period_of(created, &m);
        if (m.start_ms > start) {
            start = m.start_ms;
        }
    }
    *first = start;
    return 0;
}


/*
 * The earliest first billable instant of a subscription ever approved, or
 * -1; *bad counts those whose times cannot be read (they are reported,
 * and the run exits 1, when a month is priced).
 */
static int64_t
bill_earliest_start(bill_t *b, char **ids, size_t nids, size_t *bad)
{
    redisReply  *r;
    char         key[128];
    size_t       i, j, n, bs = (size_t) b->o->batch;
    int64_t      v, min = -1;

    *bad = 0;
    for (i = 0; i < nids; i += n) {
        n = nids - i < bs ? nids - i : bs;
        for (j = 0; j < n; j++) {
            snprintf(key, sizeof(key), "apimon:sub:{%s}", ids[i + j]);
            redisAppendCommand(b->c, "HMGET %s state startTime createdAt",
                               key);
        }
        for (j = 0; j < n; j++) {
            if (bill_get(b, &r) != 0) {
                return -1;
            }
            if (r->type == REDIS_REPLY_ARRAY && r->elements == 3
                && r->element[0]->type == REDIS_REPLY_STRING
                && strcmp(r->element[0]->str, "submitted") != 0)
            {
                if (bill_first_instant(r, &v) != 0) {
                    (*bad)++;

                } else if (min < 0 || v < min) {
                    min = v;
                }
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
    size_t            bad;

    *n = 0;
    apimon_period_of(b->now_ms, &cur);
    apimon_period_prev(&cur, &last);
    first = bill_earliest_start(b, ids, nids, &bad);
    if (b->fatal) {
        snprintf(err, errlen, "Redis: %s", b->c->errstr);
        return NULL;
    }
    if (first < 0 && bad == 0) {
        return xcalloc(1, sizeof(apimon_period_t));      /* nothing yet */
    }
    apimon_period_of(first < 0 ? last.start_ms : first, &m);
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

    /* a subscription whose times cannot be read is never left unsaid: the
     * last closed month is run again to report it (and exit 1) */
    if (bad && *n == 0 && k > 0) {
        months[(*n)++] = months[k - 1];
    }
    return months ? months : xcalloc(1, sizeof(apimon_period_t));
}


/* the months of this run, checked against Redis's clock; NULL: exit code */
apimon_period_t *
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


/* the month's marker field (state done) written, whatever it was */
int
bill_mark(bill_t *b, const char *field, const char *what)
{
    ledger_entry_t  e;
    redisReply     *r;
    char            err[512], key[64];
    ledger_state_e  from = LEDGER_ABSENT;
    int             rc;

    r = redisCommand(b->c, "HGET %s %s", b->bill_key, field);
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
    snprintf(key, sizeof(key), "apimon-%s-%s", b->ym, what);
    e.key = key;
    rc = ledger_write(b->c, b->bill_key, field, from, &e, err, sizeof(err));
    if (rc != 0) {
        agent_err("ledger %s %s: %s", b->bill_key, field, err);
        return -1;
    }
    return 0;
}


/* every line of the month is done: the next default run skips it */
int
bill_month_done(bill_t *b)
{
    return bill_mark(b, BILL_MONTH_FIELD, "month");
}


/*
 * Before the month's first POST: the run started, recorded twice, in the
 * ledger ("month|started") and outside it (BILL_STARTED_KEY), so that a
 * ledger lost later is told from one never written.  -1: the run stops.
 */
int
bill_month_started(bill_t *b)
{
    redisReply  *r;
    char         now[24];

    if (b->started) {
        return 0;
    }
    snprintf(now, sizeof(now), "%lld", (long long) b->now_ms);
    r = redisCommand(b->c, "HSETNX %s %s %s", BILL_STARTED_KEY, b->ym, now);
    if (r == NULL || r->type == REDIS_REPLY_ERROR) {
        agent_err("Redis: HSETNX %s: %s", BILL_STARTED_KEY,
                  r ? r->str : b->c->errstr);
        if (r) {
            freeReplyObject(r);
        }
        b->fatal = AGENT_EXIT_FAILED;
        return -1;
    }
    freeReplyObject(r);
    if (!b->ledger_started && bill_mark(b, BILL_STARTED_FIELD, "started")
                              != 0)
    {
        b->fatal = AGENT_EXIT_FAILED;
        return -1;
    }
    b->started = 1;
    return 0;
}


/*
 * A run of the month started (BILL_STARTED_KEY) but its ledger does not
 * say so: the ledger was lost (deleted, a Redis restored from an older
 * copy).  Lines without an entry may be at Stripe already, under keys it
 * may have forgotten: they wait for `reconcile`.  1 lost, 0 not, -1 error.
 */
int
bill_ledger_lost(bill_t *b)
{
    redisReply  *r;
    int          ran;

    r = redisCommand(b->c, "HEXISTS %s %s", BILL_STARTED_KEY, b->ym);
    if (r == NULL || r->type != REDIS_REPLY_INTEGER) {
        agent_err("Redis: HEXISTS %s: %s", BILL_STARTED_KEY,
                  r ? (r->str ? r->str : "?") : b->c->errstr);
        if (r) {
            freeReplyObject(r);
        }
        return -1;
    }
    ran = (r->integer == 1);
    freeReplyObject(r);

    r = redisCommand(b->c, "HEXISTS %s %s", b->bill_key, BILL_STARTED_FIELD);
    if (r == NULL || r->type != REDIS_REPLY_INTEGER) {
        if (r) {
            freeReplyObject(r);
        }
        agent_err("Redis: HEXISTS %s", b->bill_key);
        return -1;
    }
    b->ledger_started = (r->integer == 1);
    freeReplyObject(r);
    return ran && !b->ledger_started;
}
