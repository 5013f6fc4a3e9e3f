/*
 * `billing-agent bill`: the Redis reads (bill_private.h).  Once per run the
 * plans' pricing and the subscription ids; per batch of subscriptions, in
 * pipelines: their hashes and usage (the next batch's requested on a
 * second connection while this one is priced), the customer ids of their
 * owners, then each is priced, and the ledger entries of the lines priced
 * are read before bill_sub decides each line.
 */

#include "bill_private.h"

#include <stdlib.h>
#include <string.h>


int
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
    size_t  len[12];
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


/*
 * What starts each line's description, the text the end customer reads:
 * "Bronze (weather-bronze)", or the plan id alone without a display name.
 */
static void
bill_plan_label(bill_plan_t *bp, const char *name, const redisReply *r)
{
    const redisReply  *d = NULL;

    if (r->type == REDIS_REPLY_ARRAY && r->elements >= 2
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


/*
 * The plan's price versions, "<ms>|<pricing>" scored by the ms each took
 * effect (schema/README.md).  A catalog applied before versions existed
 * has none: its one pricing is in force since ever.
 */
static int
bill_plan_versions(bill_plan_t *bp, const redisReply *vr)
{
    const char  *bar;
    size_t       i, n;
    int64_t      ms;

    n = vr->type == REDIS_REPLY_ARRAY ? vr->elements / 2 : 0;
    bp->v = xcalloc(n ? n : 1, sizeof(apimon_version_t));
    bp->nv = n ? n : 1;
    if (n == 0) {
        bp->v[0].pr = bp->pr;
        return 0;
    }
    for (i = 0; i < n; i++) {
        const redisReply *m = vr->element[2 * i];

        bar = m->type == REDIS_REPLY_STRING ? strchr(m->str, '|') : NULL;
        if (bar == NULL || agent_parse_i64(m->str, bar - m->str, &ms) != 0
            || apimon_pricing_parse(bar + 1, &bp->v[i].pr, bp->err,
                                    sizeof(bp->err)) != 0)
        {
            if (bar == NULL || bp->err[0] == '\0') {
                snprintf(bp->err, sizeof(bp->err), "unreadable price "
                         "version %zu", i);
            }
            return -1;
        }
        bp->v[i].from_ms = ms;
    }
    return 0;
}


void
bill_plan_free(void *p)
{
    bill_plan_t  *bp = p;

    if (bp) {
        free(bp->v);
        free(bp);
    }
}


int
bill_load_plans(bill_t *b, char *err, size_t errlen)
{
    redisReply   *r, *names, *pr, *vr;
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
        redisAppendCommand(b->c, "HMGET apimon:plan:%s pricing displayName "
                           "suspension", names->element[i]->str);
        redisAppendCommand(b->c, "ZRANGE apimon:plan:%s:prices 0 -1 "
                           "WITHSCORES", names->element[i]->str);
    }
    for (i = 0; i < names->elements; i++) {
        if (redisGetReply(b->c, (void **) &pr) != REDIS_OK
            || redisGetReply(b->c, (void **) &vr) != REDIS_OK)
        {
            snprintf(err, errlen, "Redis: %s", b->c->errstr);
            freeReplyObject(names);
            return -1;
        }
        bp = xcalloc(1, sizeof(*bp));
        bill_plan_label(bp, names->element[i]->str, pr);
        if (pr->type != REDIS_REPLY_ARRAY || pr->elements != 3
            || pr->element[0]->type != REDIS_REPLY_STRING)
        {
            snprintf(bp->err, sizeof(bp->err), "plan has no pricing");
        } else if (apimon_pricing_parse(pr->element[0]->str, &bp->pr,
                                        bp->err, sizeof(bp->err)) == 0
                   && bill_plan_versions(bp, vr) == 0)
        {
            bp->ok = 1;
            bp->pause = pr->element[2]->type == REDIS_REPLY_STRING
                        && strcmp(pr->element[2]->str, "pause") == 0;
        }
        if (!bp->ok) {
            agent_err("plan %s: %s", names->element[i]->str, bp->err);
        }
        amap_put(&b->plans, names->element[i]->str, bp);
        freeReplyObject(pr);
        freeReplyObject(vr);
    }

    freeReplyObject(names);
    return 0;
}


static int
cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *) a, *(char *const *) b);
}


/* every subscription id, sorted so runs are reproducible */
char **
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


/*
 * The spans it was suspended: "<from>-<to>,..." (ms) and, while suspended,
 * suspendedAt (subscription_state).  An unreadable span is skipped: it
 * would only ever charge a day more, never less.
 */
static void
sub_suspensions(bill_sub_t *s, const redisReply *list, const redisReply *at)
{
    const char  *p, *dash, *comma;
    size_t       n = 1;
    int64_t      a, z;

    if (list && list->type == REDIS_REPLY_STRING) {
        for (p = list->str; *p; p++) {
            n += *p == ',';
        }
        n++;
    }
    s->paused = xcalloc(n, sizeof(apimon_span_t));
    for (p = list && list->type == REDIS_REPLY_STRING ? list->str : "";
         *p; p = *comma ? comma + 1 : comma)
    {
        comma = strchr(p, ',');
        comma = comma ? comma : p + strlen(p);
        dash = memchr(p, '-', comma - p);
        if (dash && agent_parse_i64(p, dash - p, &a) == 0
            && agent_parse_i64(dash + 1, comma - dash - 1, &z) == 0 && a < z)
        {
            s->paused[s->npaused].start_ms = a;
            s->paused[s->npaused++].end_ms = z;
        }
    }
    if (at && at->type == REDIS_REPLY_STRING
        && agent_parse_i64(at->str, at->len, &a) == 0)
    {
        s->paused[s->npaused].start_ms = a;           /* still suspended */
        s->paused[s->npaused++].end_ms = INT64_MAX;
    }
}


/* one month's usage hash, by the usage rule of the pricing room */
static void
bill_usage(bill_t *b, bill_sub_t *s, const redisReply *u)
{
    size_t  i;

    memset(&s->use, 0, sizeof(s->use));
    for (i = 0; u && u->type == REDIS_REPLY_ARRAY && i + 1 < u->elements;
         i += 2)
    {
        apimon_usage_add(&s->use, s->start_ms, s->end_ms, u->element[i]->str,
                         u->element[i]->len, u->element[i + 1]->str,
                         u->element[i + 1]->len);
        report_usage(&b->rep, s->id, u->element[i]->str, u->element[i]->len,
                     u->element[i + 1]->str, u->element[i + 1]->len);
    }
}


/* subscription hashes and usage of one batch, in one pipeline */
static int
bill_send_subs(bill_t *b, redisContext *c, bill_sub_t *subs, size_t n)
{
    static const char  *fields[] = {
        "HMGET", NULL, "owner_kind", "owner", "plan", "state", "startTime",
        "endTime", "suspensions", "suspendedAt", "nextPlan", "nextAt"
    };
    static const char  *hist[] = { "LRANGE", NULL, "0", "-1" };
    const char         *argv[12];
    char                key[128], ukey[160], hkey[160];
    size_t              i;

    for (i = 0; i < n; i++) {
        snprintf(key, sizeof(key), "apimon:sub:{%s}", subs[i].id);
        snprintf(ukey, sizeof(ukey), "%s:usage:%s", key, b->ym);
        snprintf(hkey, sizeof(hkey), "%s:plans", key);
        memcpy(argv, fields, sizeof(fields));
        argv[1] = key;
        bill_append(c, 12, argv);
        argv[0] = "HGETALL";
        argv[1] = ukey;
        bill_append(c, 2, argv);
        memcpy(argv, hist, sizeof(hist));
        argv[1] = hkey;
        bill_append(c, 4, argv);
    }
    return bill_flush(c);
}


/*
 * A month in which the subscription changed plan: its plan history
 * ("<from ms>|<product>|<plan>", oldest first: schema/README.md, "Plan
 * changes") and a change due in the month that no script applied yet
 * (nextPlan at nextAt; dropped, as the scripts would, when its plan left
 * the catalog).  One plan in the month: it names the plan; several: s->seg,
 * each with its calls, the usage rule applied to its days.
 */
static void
bill_plan_parts(bill_t *b, bill_sub_t *s, const redisReply *next,
    const redisReply *at, const redisReply *u, const redisReply *hr)
{
    apimon_plan_entry_t  *h;
    apimon_segment_t      seg[APIMON_MAX_SEGMENTS];
    const char           *bar, *bar2;
    size_t                i, j, nh = 0, nr;
    int64_t               ms, next_ms;
    int                   k;

    nr = hr && hr->type == REDIS_REPLY_ARRAY ? hr->elements : 0;
    next_ms = -1;
    if (next && next->type == REDIS_REPLY_STRING && at
        && at->type == REDIS_REPLY_STRING
        && agent_parse_i64(at->str, at->len, &ms) == 0 && ms < b->p.end_ms
        && amap_get(&b->plans, next->str) != NULL)
    {
        next_ms = ms;
    }
    if ((nr == 0 && next_ms < 0) || s->plan == NULL) {
        return;
    }
    h = xcalloc(nr + 2, sizeof(apimon_plan_entry_t));
    for (i = 0; i < nr; i++) {
        const redisReply *e = hr->element[i];

        bar = e->type == REDIS_REPLY_STRING ? strchr(e->str, '|') : NULL;
        bar2 = bar ? strchr(bar + 1, '|') : NULL;
        if (bar2 == NULL || agent_parse_i64(e->str, bar - e->str, &ms) != 0) {
            snprintf(s->why, sizeof(s->why), "unreadable plan history "
                     "entry %zu", i);
            free(h);
            return;
        }
        h[nh].from_ms = ms;
        h[nh++].plan = bar2 + 1;
    }
    if (nh == 0) {
        h[nh++].plan = s->plan;
    }
    if (next_ms >= 0) {
        h[nh].from_ms = next_ms;
        h[nh++].plan = next->str;
    }
    k = apimon_plan_segments(h, nh, &b->p, s->start_ms, s->end_ms, seg,
                             APIMON_MAX_SEGMENTS);
    if (k < 0) {
        snprintf(s->why, sizeof(s->why), "more than %d plans in %s",
                 APIMON_MAX_SEGMENTS, b->ptext);
    } else if (k == 1 && strcmp(seg[0].plan, s->plan) != 0) {
        free(s->plan);
        s->plan = xstrdup(seg[0].plan);
    } else if (k > 1) {
        s->seg = xcalloc(k, sizeof(bill_seg_t));
        s->nseg = k;
        for (j = 0; j < (size_t) k; j++) {
            s->seg[j].plan = xstrdup(seg[j].plan);
            s->seg[j].start_ms = seg[j].start_ms;
            s->seg[j].end_ms = seg[j].end_ms;
            for (i = 0; u && u->type == REDIS_REPLY_ARRAY
                        && i + 1 < u->elements; i += 2)
            {
                apimon_usage_add(&s->seg[j].use, seg[j].start_ms,
                                 seg[j].end_ms, u->element[i]->str,
                                 u->element[i]->len, u->element[i + 1]->str,
                                 u->element[i + 1]->len);
            }
        }
    }
    free(h);
}


static int
bill_recv_subs(bill_t *b, redisContext *c, bill_sub_t *subs, size_t n)
{
    redisReply  *r, *u, *hr;
    size_t       i;

    for (i = 0; i < n; i++) {
        if (redisGetReply(c, (void **) &r) != REDIS_OK) {
            agent_err("Redis: %s", c->errstr);
            b->fatal = AGENT_EXIT_FAILED;
            return -1;
        }
        if (r->type == REDIS_REPLY_ARRAY && r->elements == 10) {
            subs[i].owner_kind = reply_dup(r->element[0]);
            subs[i].owner = reply_dup(r->element[1]);
            subs[i].plan = reply_dup(r->element[2]);
            subs[i].state = reply_dup(r->element[3]);
            sub_time(&subs[i], r->element[4], "startTime",
                     &subs[i].start_ms);
            sub_time(&subs[i], r->element[5], "endTime", &subs[i].end_ms);
            sub_suspensions(&subs[i], r->element[6], r->element[7]);
        }

        if (redisGetReply(c, (void **) &u) != REDIS_OK) {
            agent_err("Redis: %s", c->errstr);
            freeReplyObject(r);
            b->fatal = AGENT_EXIT_FAILED;
            return -1;
        }
        bill_usage(b, &subs[i], u);

        if (redisGetReply(c, (void **) &hr) != REDIS_OK) {
            agent_err("Redis: %s", c->errstr);
            freeReplyObject(r);
            freeReplyObject(u);
            b->fatal = AGENT_EXIT_FAILED;
            return -1;
        }
        if (r->type == REDIS_REPLY_ARRAY && r->elements == 10) {
            bill_plan_parts(b, &subs[i], r->element[8], r->element[9], u, hr);
        }
        freeReplyObject(r);
        freeReplyObject(u);
        freeReplyObject(hr);
    }
    return 0;
}


void
bill_owner_key(const bill_sub_t *s, char *buf, size_t len)
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
        bill_owner_key(&subs[i], k, sizeof(k));
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
            bill_owner_key(&subs[i], k, sizeof(k));
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
    char              why[APIMON_PRICE_ERRLEN];
    char              id[sizeof(s->lines[0].id)];
    int               nl, i;
    apimon_history_t  h;

    s->nlines = 0;
    s->bp = s->plan ? amap_get(&b->plans, s->plan) : NULL;
    s->pr = s->bp ? &s->bp->pr : NULL;
    if (s->bp == NULL || !s->bp->ok || s->why[0]) {
        return;
    }
    if (apimon_active_days(&b->p, s->start_ms, s->end_ms) == 0) {
        return;
    }
    h.v = s->bp->v;
    h.nv = s->bp->nv;
    h.paused = s->bp->pause ? s->paused : NULL;
    h.npaused = s->bp->pause ? s->npaused : 0;
    s->pr = apimon_history_pricing(&h, &b->p, s->start_ms, s->end_ms);
    nl = apimon_price_history(&h, &b->p, s->start_ms, s->end_ms,
                              s->use.calls, s->bp->label, s->lines,
                              APIMON_MAX_LINES, why, sizeof(why));
    s->nlines = nl < 0 ? -1 : nl;
    for (i = 0; s->part > 0 && i < nl; i++) {
        /* a part of a month across plans: "fee.1", "fee.2" ... */
        snprintf(id, sizeof(id), "%s.%d", s->lines[i].id, s->part);
        memcpy(s->lines[i].id, id, sizeof(s->lines[i].id) - 1);
    }
    if (nl < 0) {
        snprintf(s->why, sizeof(s->why), "plan %.*s: %s", APIMON_NAME_MAX,
                 s->plan, why);
    }
}


void
bill_line_field(const bill_sub_t *s, int i, char *buf, size_t len)
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
            bill_line_field(&subs[i], j, f[j], sizeof(f[j]));
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


static void
bill_sub_free(bill_sub_t *s)
{
    int  i;

    free(s->owner_kind);
    free(s->owner);
    free(s->plan);
    free(s->state);
    free(s->paused);
    for (i = 0; i < (int) s->nseg; i++) {
        free(s->seg[i].plan);
    }
    free(s->seg);
    for (i = 0; i < APIMON_MAX_LINES; i++) {
        ledger_entry_free(&s->led[i]);
    }
    memset(s, 0, sizeof(*s));
}


static char *
dup_or_null(const char *s)
{
    return s ? xstrdup(s) : NULL;
}


/*
 * The subscriptions of a batch as priced: one whose plan changed in the
 * month becomes one entry per part, each with its plan, span and calls
 * (the calls outside the term stay with the first part).  The entries
 * split are freed; the others move.  Returns subs when nothing split.
 */
static bill_sub_t *
bill_parts(bill_sub_t *subs, size_t n, size_t *nout)
{
    size_t       i, k, m = 0;
    bill_sub_t  *out, *o;
    bill_seg_t  *g;

    for (i = 0; i < n; i++) {
        m += subs[i].nseg > 1 ? subs[i].nseg : 1;
    }
    *nout = m;
    if (m == n) {
        return subs;
    }
    out = xcalloc(m, sizeof(bill_sub_t));
    for (i = 0, o = out; i < n; i++) {
        if (subs[i].nseg <= 1) {
            *o++ = subs[i];
            memset(&subs[i], 0, sizeof(subs[i]));
            continue;
        }
        for (k = 0; k < subs[i].nseg; k++, o++) {
            g = &subs[i].seg[k];
            o->id = subs[i].id;
            o->owner_kind = dup_or_null(subs[i].owner_kind);
            o->owner = dup_or_null(subs[i].owner);
            o->state = dup_or_null(subs[i].state);
            o->plan = g->plan;
            g->plan = NULL;
            o->start_ms = g->start_ms;
            o->end_ms = g->end_ms;
            o->use = g->use;
            o->use.unbilled = k == 0 ? subs[i].use.unbilled : 0;
            if (subs[i].npaused) {
                o->paused = xcalloc(subs[i].npaused, sizeof(apimon_span_t));
                memcpy(o->paused, subs[i].paused,
                       subs[i].npaused * sizeof(apimon_span_t));
                o->npaused = subs[i].npaused;
            }
            memcpy(o->why, subs[i].why, sizeof(o->why));
            o->part = (int) k + 1;
        }
        bill_sub_free(&subs[i]);
    }
    return out;
}


/*
 * Batches of subscriptions.  The subscription hashes and usage of the next
 * batch are requested on a second connection before the current batch is
 * priced and pushed, so Redis and the agent work at the same time.
 */
void
bill_batches(bill_t *b, char **ids, size_t nids)
{
    bill_sub_t    *buf[2], *subs, *parts;
    size_t         i, j, n, nn, np, bs = (size_t) b->o->batch;
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

        parts = bill_parts(subs, n, &np);
        if (bill_read_owners(b, parts, np) == 0) {
            for (j = 0; j < np; j++) {
                bill_price(b, &parts[j]);
            }
            if (bill_read_ledger(b, parts, np) == 0) {
                for (j = 0; j < np && !b->fatal; j++) {
                    bill_sub(b, &parts[j], &body);
                }
            }
        }

        for (j = 0; j < np; j++) {
            bill_sub_free(&parts[j]);
        }
        if (parts != subs) {
            free(parts);
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
