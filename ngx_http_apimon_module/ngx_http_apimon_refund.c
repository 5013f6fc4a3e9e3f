/*
 * Refunds of the checks that got no answer.  A check counts in Redis
 * whether or not its answer reaches the request: each batch carries an id
 * under which the script records what it counted, and the requests that
 * got no answer from it (the client went away, the reply timed out or the
 * connection was lost) are refunded afterwards with the "check_refund"
 * script: at once when the reply came, else when the connection is ready
 * again.  See schema/README.md (check_refund).
 */


#include "ngx_http_apimon_batch.h"


static void ngx_http_apimon_refund_send(ngx_uint_t slot);
static void ngx_http_apimon_refund_done(redisReply *reply, const char *err,
    void *data);


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

    slot->call = NULL;

    if (reply == NULL) {
        /* tried again when the connection is ready */
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                       "apimon: refund deferred: %s", err);
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
                      "apimon: the refund script failed: %*s",
                      (size_t) reply->len, reply->str);
        return;
    }

    ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                  "apimon: unexpected reply from the refund script");
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
