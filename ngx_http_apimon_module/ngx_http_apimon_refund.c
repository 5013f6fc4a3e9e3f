/*
 * Refunds of the checks that got no answer.  A check counts in Redis
 * whether or not its answer reaches the request: each batch carries an id
 * under which the script records what it counted, and the requests that
 * got no answer from it (the client went away, the reply timed out or the
 * connection was lost) are refunded afterwards with the "check_refund"
 * script: at once when the reply came, else when the connection is ready
 * again.  See schema/README.md (check_refund).
 *
 * A refund Redis refuses for now (out of memory, busy with a script,
 * loading, a replica) keeps its slot and is sent again from a timer, with
 * a backoff, until its record expires; one that fails otherwise (an error
 * of the script) is logged and dropped: sent again, it would fail again.
 */


#include "ngx_http_apimon_batch.h"


static void ngx_http_apimon_refund_send(ngx_uint_t slot);
static void ngx_http_apimon_refund_done(redisReply *reply, const char *err,
    void *data);
static void ngx_http_apimon_refund_later(ngx_http_apimon_batcher_t *bt,
    ngx_uint_t i, redisReply *reply);
static ngx_uint_t ngx_http_apimon_refund_expired(
    ngx_http_apimon_batcher_t *bt, ngx_uint_t i);
static void ngx_http_apimon_refund_retry(ngx_event_t *ev);


/* the Redis errors that say "not now": the refund is tried again */

static ngx_str_t  ngx_http_apimon_refund_again[] = {
    ngx_string("OOM "),
    ngx_string("BUSY "),
    ngx_string("LOADING "),
    ngx_string("MASTERDOWN "),
    ngx_string("READONLY "),
    ngx_string("MISCONF "),
    ngx_string("TRYAGAIN "),
    ngx_string("CLUSTERDOWN "),
    ngx_null_string
};


void
ngx_http_apimon_refund_init(ngx_http_apimon_batcher_t *bt)
{
    bt->retry.handler = ngx_http_apimon_refund_retry;
    bt->retry.data = &bt->dummy;
    bt->retry.log = ngx_cycle->log;
    bt->retry.cancelable = 1;
}


/* the batch id "<worker>:<slot>:<seq>" of a slot's batch (check_refund) */

u_char *
ngx_http_apimon_slot_id(ngx_http_apimon_batcher_t *bt, u_char *p,
    ngx_uint_t slot)
{
    return ngx_sprintf(p, "%*s:%ui:%ui", bt->worker_len, bt->worker, slot,
                       bt->slots[slot].seq);
}


/* a slot for a batch's record, or -1 */

ngx_int_t
ngx_http_apimon_slot_take(ngx_http_apimon_batcher_t *bt)
{
    ngx_uint_t               i, k;
    ngx_http_apimon_slot_t  *slot;

    for (k = 0; k < NGX_HTTP_APIMON_SLOTS; k++) {
        i = (bt->next_slot + k) % NGX_HTTP_APIMON_SLOTS;
        slot = &bt->slots[i];

        if (slot->state == NGX_HTTP_APIMON_SLOT_FREE) {
            slot->state = NGX_HTTP_APIMON_SLOT_BATCH;
            slot->seq = ++bt->seq;
            slot->expires = ngx_current_msec + NGX_HTTP_APIMON_RECORD_TTL;
            slot->delay = 0;
            bt->next_slot = i + 1;
            return (ngx_int_t) i;
        }
    }

    ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                  "apimon: %d check batches await a reply or a refund: "
                  "this one cannot be refunded", NGX_HTTP_APIMON_SLOTS);

    return -1;
}


/*
 * The batch's reply came (or never will): its slot is free, or owes a
 * refund of the requests in "mask" (or of "all"), sent at once while the
 * connection is up, else when it is ready again (a refund that fails is
 * kept for then too).  A connection that timed out is dropped after this:
 * the refund sent on it fails, it is never written before the drop.
 */

void
ngx_http_apimon_slot_release(ngx_http_apimon_batch_t *b, uint64_t mask,
    ngx_uint_t all)
{
    ngx_http_apimon_slot_t  *slot;

    if (b->slot < 0) {
        return;
    }

    slot = &ngx_http_apimon_batcher_get()->slots[b->slot];

    if (mask == 0 && !all) {
        slot->state = NGX_HTTP_APIMON_SLOT_FREE;
        return;
    }

    slot->state = NGX_HTTP_APIMON_SLOT_REFUND;
    slot->mask = mask;
    slot->all = all;

    if (ngx_http_apimon_redis_ready() == NGX_OK) {
        ngx_http_apimon_refund_send(b->slot);
    }
}


static void
ngx_http_apimon_refund_send(ngx_uint_t i)
{
    u_char                      *p;
    ngx_uint_t                   k;
    const char                  *argv[NGX_HTTP_APIMON_REFUND_ARGS];
    size_t                       argvlen[NGX_HTTP_APIMON_REFUND_ARGS];
    ngx_http_apimon_slot_t      *slot;
    ngx_http_apimon_batcher_t   *bt;
    u_char                       key[sizeof("apimon:batch::") - 1
                                     + NGX_HTTP_APIMON_WORKER_LEN
                                     + NGX_INT_T_LEN];
    u_char                       id[NGX_HTTP_APIMON_ID_LEN];
    u_char                       list[4 * NGX_HTTP_APIMON_BATCH_MAX];

    bt = ngx_http_apimon_batcher_get();
    slot = &bt->slots[i];

    argv[0] = "1";
    argvlen[0] = 1;

    argv[1] = (const char *) key;
    argvlen[1] = ngx_sprintf(key, "apimon:batch:%*s:%ui",
                             bt->worker_len, bt->worker, i)
                 - key;

    argv[2] = (const char *) id;
    argvlen[2] = ngx_http_apimon_slot_id(bt, id, i) - id;

    if (slot->all) {
        argv[3] = "*";
        argvlen[3] = 1;

    } else {
        p = list;

        for (k = 0; k < NGX_HTTP_APIMON_BATCH_MAX; k++) {
            if (slot->mask & ((uint64_t) 1 << k)) {
                p = ngx_sprintf(p, "%s%ui", p == list ? "" : ",", k + 1);
            }
        }

        argv[3] = (const char *) list;
        argvlen[3] = p - list;
    }

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "apimon: refund of batch %*s", argvlen[2], id);

    slot->call = ngx_http_apimon_redis_script(bt->refund,
                                              NGX_HTTP_APIMON_REFUND_ARGS,
                                              argv, argvlen, 0,
                                              ngx_http_apimon_refund_done,
                                              slot);
}


static void
ngx_http_apimon_refund_done(redisReply *reply, const char *err, void *data)
{
    ngx_http_apimon_slot_t  *slot = data;

    u_char                      id[NGX_HTTP_APIMON_ID_LEN];
    ngx_uint_t                  i;
    ngx_http_apimon_batcher_t  *bt;

    bt = ngx_http_apimon_batcher_get();
    i = slot - bt->slots;

    slot->call = NULL;

    if (reply == NULL) {
        /* tried again when the connection is ready */
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                       "apimon: refund deferred: %s", err);
        return;
    }

    if (reply->type == REDIS_REPLY_ERROR
        && ngx_http_apimon_refund_transient(reply))
    {
        /* never sent again from here: after a backoff, from the timer */
        ngx_http_apimon_refund_later(bt, i, reply);
        return;
    }

    slot->state = NGX_HTTP_APIMON_SLOT_FREE;

    if (reply->type == REDIS_REPLY_INTEGER) {
        if (reply->integer > 0) {
            ngx_log_error(NGX_LOG_NOTICE, ngx_cycle->log, 0,
                          "apimon: refunded %L checks that got no answer",
                          (int64_t) reply->integer);
        }

        return;
    }

    if (reply->type == REDIS_REPLY_ERROR) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "apimon: the refund of batch %*s failed, what it "
                      "counted stays counted: %*s",
                      ngx_http_apimon_slot_id(bt, id, i) - id, id,
                      (size_t) reply->len, reply->str);
        return;
    }

    ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                  "apimon: unexpected reply from the refund script");
}


/* an error reply that a later try may not get ("ERR " may precede it) */

ngx_uint_t
ngx_http_apimon_refund_transient(redisReply *reply)
{
    u_char      *p;
    size_t       len;
    ngx_str_t   *e;

    p = (u_char *) reply->str;
    len = reply->len;

    if (len > 4 && ngx_strncmp(p, "ERR ", 4) == 0) {
        p += 4;
        len -= 4;
    }

    for (e = ngx_http_apimon_refund_again; e->len; e++) {
        if (len >= e->len && ngx_strncmp(p, e->data, e->len) == 0) {
            return 1;
        }
    }

    return 0;
}


/* the refund in slot i is sent again after its backoff, while it can be */

static void
ngx_http_apimon_refund_later(ngx_http_apimon_batcher_t *bt, ngx_uint_t i,
    redisReply *reply)
{
    u_char                   id[NGX_HTTP_APIMON_ID_LEN];
    ngx_http_apimon_slot_t  *slot;

    slot = &bt->slots[i];

    if (ngx_http_apimon_refund_expired(bt, i)) {
        return;
    }

    slot->delay = slot->delay ? ngx_min(2 * slot->delay,
                                        NGX_HTTP_APIMON_REFUND_RETRY_MAX)
                              : NGX_HTTP_APIMON_REFUND_RETRY_MIN;

    ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                  "apimon: the refund of batch %*s is tried again in %M ms: "
                  "%*s", ngx_http_apimon_slot_id(bt, id, i) - id, id,
                  slot->delay, (size_t) reply->len, reply->str);

    /* one timer: the earliest retry due; it sends every refund waiting */

    if (!bt->retry.timer_set
        || (ngx_msec_int_t) (bt->retry.timer.key
                             - (ngx_current_msec + slot->delay)) > 0)
    {
        ngx_add_timer(&bt->retry, slot->delay);
    }
}


/* past the record's lifetime the refund has nothing left to undo */

static ngx_uint_t
ngx_http_apimon_refund_expired(ngx_http_apimon_batcher_t *bt, ngx_uint_t i)
{
    u_char                   id[NGX_HTTP_APIMON_ID_LEN];
    ngx_http_apimon_slot_t  *slot;

    slot = &bt->slots[i];

    if ((ngx_msec_int_t) (ngx_current_msec - slot->expires) < 0) {
        return 0;
    }

    ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                  "apimon: the refund of batch %*s is given up, its record "
                  "has expired: what it counted stays counted",
                  ngx_http_apimon_slot_id(bt, id, i) - id, id);

    slot->state = NGX_HTTP_APIMON_SLOT_FREE;

    return 1;
}


static void
ngx_http_apimon_refund_retry(ngx_event_t *ev)
{
    ngx_uint_t                  i;
    ngx_http_apimon_slot_t     *slot;
    ngx_http_apimon_batcher_t  *bt;

    bt = ngx_http_apimon_batcher_get();

    for (i = 0; i < NGX_HTTP_APIMON_SLOTS; i++) {
        slot = &bt->slots[i];

        if (slot->state != NGX_HTTP_APIMON_SLOT_REFUND || slot->call
            || slot->delay == 0 || ngx_http_apimon_refund_expired(bt, i))
        {
            continue;
        }

        /* not connected: the connection's "ready" sends it */
        if (ngx_http_apimon_redis_ready() == NGX_OK) {
            ngx_http_apimon_refund_send(i);
        }
    }
}


/* the transport is ready (again): send the refunds due */

void
ngx_http_apimon_refund_ready(void)
{
    ngx_uint_t                  i;
    ngx_http_apimon_batcher_t  *bt;

    bt = ngx_http_apimon_batcher_get();

    for (i = 0; i < NGX_HTTP_APIMON_SLOTS; i++) {
        if (bt->slots[i].state == NGX_HTTP_APIMON_SLOT_REFUND
            && bt->slots[i].call == NULL)
        {
            ngx_http_apimon_refund_send(i);
        }
    }
}
