/*
 * The check batcher: the access phase's checks go to Redis (the "check"
 * script) in batches, and each request is resumed with its element of the
 * reply.
 *
 * Every check a worker starts during one event loop iteration waits in a
 * queue, and a posted event (run at the end of the iteration) sends them all
 * as one EVALSHA, whose reply has one element per request (more than
 * NGX_HTTP_APIMON_BATCH_MAX: several EVALSHAs, written together).  Redis
 * spends much of a lone check on the call itself, and on reading and writing
 * the subscription: a batch pays that once.
 *
 * While a batch of this worker is in flight, new checks wait for its reply
 * (or until a full batch is queued): Redis is busy then anyway, and the
 * next batch gets larger, so each check costs Redis less when it is loaded.
 *
 * A check counts in Redis whether or not its answer reaches the request:
 * the requests of a batch that got no answer from it are refunded
 * afterwards (ngx_http_apimon_refund.c).
 *
 * A request's context is made here, with a pool cleanup that takes a
 * request going away out of the queue or its batch; after an internal
 * redirect the context is found again through that cleanup.
 */


#include "ngx_http_apimon_batch.h"
#include "ngx_http_apimon_metrics.h"


static ngx_http_apimon_unknown_t *ngx_http_apimon_unknown_get(void);
static void ngx_http_apimon_cleanup(void *data);
static ngx_http_apimon_ctx_t *ngx_http_apimon_batch_take(
    ngx_http_apimon_batcher_t *bt);
static void ngx_http_apimon_batch_flush(ngx_event_t *ev);
static void ngx_http_apimon_batch_send(ngx_uint_t n);
static ngx_uint_t ngx_http_apimon_batch_loc(ngx_http_apimon_batcher_t *bt,
    ngx_uint_t *nloc, ngx_http_apimon_loc_conf_t *alcf);
static void ngx_http_apimon_batch_pack(ngx_http_apimon_batcher_t *bt,
    ngx_http_apimon_batch_t *b, ngx_uint_t nloc);
static void ngx_http_apimon_batch_arg(ngx_http_apimon_batcher_t *bt,
    const void *data, size_t len);
static void ngx_http_apimon_batch_printed(ngx_http_apimon_batcher_t *bt,
    u_char *last);
static void ngx_http_apimon_batch_sent(void);
static void ngx_http_apimon_batch_done(redisReply *reply, const char *err,
    void *data);
static void ngx_http_apimon_batch_failing(redisReply *reply, ngx_uint_t n,
    ngx_log_t *log);
static void ngx_http_apimon_batch_free(ngx_http_apimon_batch_t *b);
static ngx_int_t ngx_http_apimon_parse_reply(ngx_http_request_t *r,
    ngx_http_apimon_ctx_t *ctx, u_char *data, size_t len);
static ngx_int_t ngx_http_apimon_text_uint(ngx_str_t *s, ngx_uint_t *n);


/* the worker's unknown-key cache, or NULL (apimon_unknown_key_cache off) */

static ngx_http_apimon_unknown_t *
ngx_http_apimon_unknown_get(void)
{
    ngx_http_apimon_main_conf_t  *amcf;

    amcf = ngx_http_cycle_get_module_main_conf(ngx_cycle,
                                               ngx_http_apimon_module);

    return amcf->unknown;
}


ngx_int_t
ngx_http_apimon_batch_init(ngx_conf_t *cf, ngx_http_apimon_main_conf_t *amcf)
{
    ngx_http_apimon_batcher_t  *bt;

    bt = ngx_pcalloc(cf->pool, sizeof(ngx_http_apimon_batcher_t));
    if (bt == NULL) {
        return NGX_ERROR;
    }

    amcf->batcher = bt;

    bt->script = ngx_http_apimon_redis_script_index("check");
    bt->refund = ngx_http_apimon_redis_script_index("check_refund");

    if (bt->script == NGX_ERROR || bt->refund == NGX_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "apimon: the \"check\" scripts are not "
                           "compiled in");
        return NGX_ERROR;
    }

    amcf->redis_ready = ngx_http_apimon_refund_ready;

    return NGX_OK;
}


void
ngx_http_apimon_batch_exit(ngx_http_apimon_main_conf_t *amcf)
{
    ngx_queue_t                *q;
    ngx_http_apimon_batch_t    *b;
    ngx_http_apimon_batcher_t  *bt;

    bt = amcf->batcher;

    if (!bt->initialized) {
        return;
    }

    if (bt->flush.posted) {
        ngx_delete_posted_event(&bt->flush);
    }

    if (bt->retry.timer_set) {
        ngx_del_timer(&bt->retry);
    }

    /* the transport forgets their calls without running the handlers */
    while (!ngx_queue_empty(&bt->batches)) {
        q = ngx_queue_head(&bt->batches);
        b = ngx_queue_data(q, ngx_http_apimon_batch_t, queue);
        ngx_http_apimon_batch_free(b);
    }
}


ngx_http_apimon_ctx_t *
ngx_http_apimon_get_ctx(ngx_http_request_t *r)
{
    ngx_pool_cleanup_t     *cln;
    ngx_http_apimon_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_apimon_module);

    if (ctx || !(r->internal || r->filter_finalize)) {
        return ctx;
    }

    /* an internal redirect cleared the module contexts */

    for (cln = r->pool->cleanup; cln; cln = cln->next) {
        if (cln->handler == ngx_http_apimon_cleanup) {
            ctx = cln->data;

            if (ctx->request == r) {
                ngx_http_set_ctx(r, ctx, ngx_http_apimon_module);
                return ctx;
            }
        }
    }

    return NULL;
}


ngx_http_apimon_ctx_t *
ngx_http_apimon_create_ctx(ngx_http_request_t *r)
{
    ngx_pool_cleanup_t     *cln;
    ngx_http_apimon_ctx_t  *ctx;

    cln = ngx_pool_cleanup_add(r->pool, sizeof(ngx_http_apimon_ctx_t));
    if (cln == NULL) {
        return NULL;
    }

    ctx = cln->data;
    ngx_memzero(ctx, sizeof(ngx_http_apimon_ctx_t));

    ctx->request = r;

    cln->handler = ngx_http_apimon_cleanup;

    ngx_http_set_ctx(r, ctx, ngx_http_apimon_module);

    return ctx;
}


/* the request is freed: it leaves its batch, a reply still due is dropped */

static void
ngx_http_apimon_cleanup(void *data)
{
    ngx_http_apimon_ctx_t  *ctx = data;

    ngx_http_apimon_batch_t  *b;

    if (ctx->lease) {
        ngx_http_apimon_lease_detach(ctx);
    }

    if (ctx->queued) {
        ngx_queue_remove(&ctx->queue);
        ngx_http_apimon_batcher_get()->npending--;
        ctx->queued = 0;
    }

    b = ctx->batch;

    if (b == NULL) {
        return;
    }

    ctx->batch = NULL;
    b->ctx[ctx->index] = NULL;

    if (--b->live == 0 && !b->replying && b->slot < 0) {
        /* nobody waits for this reply any more, and it cannot be refunded */
        ngx_http_apimon_redis_cancel(b->call);
        ngx_http_apimon_batch_free(b);
        ngx_http_apimon_batch_sent();
    }
}


/* the check of ctx->conf waits for the next batch */

void
ngx_http_apimon_batch_add(ngx_http_apimon_ctx_t *ctx)
{
    ngx_http_apimon_batcher_t  *bt;

    bt = ngx_http_apimon_batcher_get();

    if (!bt->initialized) {
        ngx_queue_init(&bt->pending);
        ngx_queue_init(&bt->batches);
        bt->worker_len = ngx_sprintf(bt->worker, "%P.%xT.%xi", ngx_pid,
                                     ngx_time(), (ngx_uint_t) ngx_random())
                         - bt->worker;
        bt->dummy.fd = (ngx_socket_t) -1;
        bt->flush.handler = ngx_http_apimon_batch_flush;
        bt->flush.data = &bt->dummy;
        bt->flush.log = ngx_cycle->log;
        ngx_http_apimon_refund_init(bt);
        bt->initialized = 1;
    }

    ctx->waiting = 1;
    ctx->queued = 1;
    ngx_queue_insert_tail(&bt->pending, &ctx->queue);

    bt->npending++;

    /* never sent from here: a failure resumes the requests of the batch */
    if (!bt->flush.posted
        && (bt->inflight == 0 || bt->npending >= NGX_HTTP_APIMON_BATCH_MAX))
    {
        ngx_post_event(&bt->flush, &ngx_posted_events);
    }
}


static ngx_http_apimon_ctx_t *
ngx_http_apimon_batch_take(ngx_http_apimon_batcher_t *bt)
{
    ngx_queue_t            *q;
    ngx_http_apimon_ctx_t  *ctx;

    q = ngx_queue_head(&bt->pending);
    ngx_queue_remove(q);
    bt->npending--;

    ctx = ngx_queue_data(q, ngx_http_apimon_ctx_t, queue);
    ctx->queued = 0;

    return ctx;
}


/* send every queued check, in calls of up to NGX_HTTP_APIMON_BATCH_MAX */

static void
ngx_http_apimon_batch_flush(ngx_event_t *ev)
{
    ngx_uint_t                  n;
    ngx_http_apimon_batcher_t  *bt;

    bt = ngx_http_apimon_batcher_get();

    while (bt->npending) {
        n = ngx_min(bt->npending, NGX_HTTP_APIMON_BATCH_MAX);
        ngx_http_apimon_batch_send(n);
    }
}


/* a batch is answered or given up: send what queued meanwhile */

static void
ngx_http_apimon_batch_sent(void)
{
    ngx_http_apimon_batcher_t  *bt;

    bt = ngx_http_apimon_batcher_get();

    bt->inflight--;

    if (bt->npending && !bt->flush.posted) {
        ngx_post_event(&bt->flush, &ngx_posted_events);
    }
}


static void
ngx_http_apimon_batch_send(ngx_uint_t n)
{
    ngx_uint_t                  i, nloc;
    ngx_msec_t                  timeout;
    ngx_http_apimon_ctx_t      *ctx;
    ngx_http_apimon_batch_t    *b;
    ngx_http_apimon_batcher_t  *bt;

    bt = ngx_http_apimon_batcher_get();

    b = ngx_alloc(sizeof(ngx_http_apimon_batch_t)
                  + (n - 1) * sizeof(ngx_http_apimon_ctx_t *),
                  ngx_cycle->log);

    if (b == NULL) {
        /*
         * out of memory: fail the requests, each taken off the queue at its
         * turn (resuming one may free others, which then leave the queue)
         */
        for (i = 0; i < n && bt->npending; i++) {
            ctx = ngx_http_apimon_batch_take(bt);
            ctx->result = NGX_HTTP_APIMON_REDIS_ERROR;
            ngx_http_apimon_resume(ctx);
        }

        return;
    }

    /* take the requests; the locations of the batch are sent once each */

    nloc = 0;
    timeout = 0;

    for (i = 0; i < n; i++) {
        ctx = ngx_http_apimon_batch_take(bt);

        b->ctx[i] = ctx;
        ctx->batch = b;
        ctx->index = i;

        /* the batch waits as long as its most patient request would */
        if (ctx->conf->timeout > timeout) {
            timeout = ctx->conf->timeout;
        }

        bt->loc_of[i] = ngx_http_apimon_batch_loc(bt, &nloc, ctx->conf);
    }

    b->n = n;
    b->live = n;
    b->replying = 0;
    b->slot = ngx_http_apimon_slot_take(bt);
    ngx_queue_insert_tail(&bt->batches, &b->queue);

    ngx_http_apimon_batch_pack(bt, b, nloc);
    ngx_http_apimon_metrics_batch(n);

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "apimon: batch %p of %ui checks, %ui locations",
                   b, n, nloc);

    b->call = ngx_http_apimon_redis_script(bt->script, (int) bt->argc,
                                           bt->argv, bt->argvlen, timeout,
                                           ngx_http_apimon_batch_done, b);

    bt->inflight++;

    if (b->call == NULL) {
        /* out of memory: done without a reply */
        ngx_http_apimon_batch_done(NULL, "out of memory", b);
    }
}


/* the number of a request's location in the batch, from 0 */

static ngx_uint_t
ngx_http_apimon_batch_loc(ngx_http_apimon_batcher_t *bt, ngx_uint_t *nloc,
    ngx_http_apimon_loc_conf_t *alcf)
{
    ngx_uint_t  j;

    for (j = 0; j < *nloc; j++) {
        if (bt->locs[j] == alcf) {
            return j;
        }
    }

    bt->locs[(*nloc)++] = alcf;

    return j;
}


/* EVALSHA's argv after the SHA1, in the layout of schema/README.md */

static void
ngx_http_apimon_batch_pack(ngx_http_apimon_batcher_t *bt,
    ngx_http_apimon_batch_t *b, ngx_uint_t nloc)
{
    ngx_uint_t                   i, j;
    ngx_http_apimon_ctx_t       *ctx;
    ngx_http_apimon_loc_conf_t  *alcf;

    bt->argc = 0;
    bt->last = bt->nums;

    ngx_http_apimon_batch_printed(bt, ngx_sprintf(bt->last, "%ui", b->n));

    for (i = 0; i < b->n; i++) {
        ngx_http_apimon_batch_arg(bt, b->ctx[i]->skey,
                                  NGX_HTTP_APIMON_SKEY_LEN);
    }

    /* NGX_HTTP_APIMON_CHECK_HEAD_ARGS: now (0: Redis TIME), L */
    ngx_http_apimon_batch_arg(bt, "0", 1);
    ngx_http_apimon_batch_printed(bt, ngx_sprintf(bt->last, "%ui", nloc));

    /* NGX_HTTP_APIMON_CHECK_LOC_ARGS per location */
    for (j = 0; j < nloc; j++) {
        alcf = bt->locs[j];

        ngx_http_apimon_batch_arg(bt, alcf->api.data, alcf->api.len);
        ngx_http_apimon_batch_arg(bt, alcf->rate_n_text.data,
                                  alcf->rate_n_text.len);
        ngx_http_apimon_batch_arg(bt, alcf->rate_w_text.data,
                                  alcf->rate_w_text.len);
        ngx_http_apimon_batch_arg(bt, alcf->quota_n_text.data,
                                  alcf->quota_n_text.len);
        ngx_http_apimon_batch_arg(bt, alcf->quota_unit.data
                                      ? alcf->quota_unit.data : (u_char *) "",
                                  alcf->quota_unit.len);
        /* the scope: the API */
        ngx_http_apimon_batch_arg(bt, alcf->api.data, alcf->api.len);
    }

    /* NGX_HTTP_APIMON_CHECK_REQ_ARGS per request: digest, location 1..L */
    for (i = 0; i < b->n; i++) {
        ctx = b->ctx[i];

        ngx_http_apimon_batch_arg(bt, ctx->digest, NGX_HTTP_APIMON_DIGEST_LEN);
        ngx_http_apimon_batch_printed(bt, ngx_sprintf(bt->last, "%ui",
                                                      bt->loc_of[i] + 1));
    }

    /* NGX_HTTP_APIMON_CHECK_ID_ARGS, when the batch has a record */
    if (b->slot >= 0) {
        ngx_http_apimon_batch_printed(bt, ngx_http_apimon_slot_id(bt,
                                                      bt->last, b->slot));
    }
}


static void
ngx_http_apimon_batch_arg(ngx_http_apimon_batcher_t *bt, const void *data,
    size_t len)
{
    bt->argv[bt->argc] = data;
    bt->argvlen[bt->argc++] = len;
}


/* the argument just printed at bt->last, up to "last" */

static void
ngx_http_apimon_batch_printed(ngx_http_apimon_batcher_t *bt, u_char *last)
{
    ngx_http_apimon_batch_arg(bt, bt->last, last - bt->last);
    bt->last = last;
}


/* the reply, or none (reply == NULL: err says why) */

/*
 * The check script refused by Redis (OOM, BUSY, READONLY, ...): every batch
 * would log it, hundreds a second.  The first is logged, then debug only,
 * until a check works again (reply NULL): that is logged with the time it
 * took and the requests that failed meanwhile.
 */

static void
ngx_http_apimon_batch_failing(redisReply *reply, ngx_uint_t n, ngx_log_t *log)
{
    ngx_http_apimon_batcher_t  *bt;

    bt = ngx_http_apimon_batcher_get();

    if (reply == NULL) {
        if (bt->failing) {
            ngx_log_error(NGX_LOG_ERR, log, 0,
                          "apimon: the check script works again after %M ms: "
                          "%ui requests got redis_error meanwhile",
                          (ngx_msec_t) (ngx_current_msec - bt->failing_since),
                          bt->failed);
            bt->failing = 0;
        }

        return;
    }

    if (bt->failing) {
        bt->failed += n;
        ngx_log_debug2(NGX_LOG_DEBUG_HTTP, log, 0,
                       "apimon: the check script failed again: %*s",
                       (size_t) reply->len, reply->str);
        return;
    }

    ngx_log_error(NGX_LOG_ERR, log, 0,
                  "apimon: the check script failed: %*s; until a check "
                  "works again, this is logged once", (size_t) reply->len,
                  reply->str);

    bt->failing = 1;
    bt->failing_since = ngx_current_msec;
    bt->failed = n;
}


static void
ngx_http_apimon_batch_done(redisReply *reply, const char *err, void *data)
{
    ngx_http_apimon_batch_t  *b = data;

    uint64_t                refund;
    ngx_uint_t              i, all, ran;
    ngx_log_t              *log;
    redisReply             *e;
    ngx_http_apimon_ctx_t  *ctx;

    b->replying = 1;

    /* no reply to a call that was sent: the script may have run */
    all = (reply == NULL && b->call && ngx_http_apimon_redis_sent(b->call));
    ran = 0;
    refund = 0;

    b->call = NULL;

    /* the log of a request of the batch: its context in the line */
    log = ngx_cycle->log;

    for (i = 0; i < b->n; i++) {
        if (b->ctx[i]) {
            log = b->ctx[i]->request->connection->log;
            break;
        }
    }

    if (reply == NULL) {
        if (ngx_http_apimon_redis_outage(0)) {
            /* logged when the outage started, and when it ends */
            ngx_log_debug1(NGX_LOG_DEBUG_HTTP, log, 0,
                           "apimon: key check failed: %s", err);

        } else {
            ngx_log_error(NGX_LOG_WARN, log, 0,
                          "apimon: key check of %ui requests failed: %s",
                          b->live, err);
        }

    } else if (reply->type == REDIS_REPLY_ERROR) {
        ngx_http_apimon_batch_failing(reply, b->live, log);
        reply = NULL;

    } else if (reply->type != REDIS_REPLY_ARRAY || reply->elements != b->n) {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "apimon: unexpected reply from the check script");
        reply = NULL;

    } else {
        ran = 1;
        ngx_http_apimon_batch_failing(NULL, 0, log);
    }

    /*
     * resuming one request may finalize others of the batch (a shared
     * HTTP/2 connection): their cleanup empties their slots, so look again
     * at every slot, and free the batch only at the end; a request gone
     * before its turn got no answer: refund what the script counted for it
     */

    for (i = 0; i < b->n; i++) {
        ctx = b->ctx[i];

        if (ctx == NULL) {
            refund |= (uint64_t) ran << i;
            continue;
        }

        b->ctx[i] = NULL;
        ctx->batch = NULL;

        if (reply == NULL) {
            ctx->result = NGX_HTTP_APIMON_REDIS_ERROR;

        } else {
            e = reply->element[i];

            if (e->type == REDIS_REPLY_STRING) {
                ngx_http_apimon_check_result(ctx->request, ctx,
                                             (u_char *) e->str, e->len);

            } else {
                ngx_log_error(NGX_LOG_ERR, ctx->request->connection->log, 0,
                              "apimon: unexpected reply from the check "
                              "script");
                ctx->result = NGX_HTTP_APIMON_REDIS_ERROR;
            }

            if (ctx->result == NGX_HTTP_APIMON_REDIS_ERROR) {
                /* answered as if Redis had failed (ran is 1 here) */
                refund |= (uint64_t) 1 << i;
            }
        }

        ngx_http_apimon_resume(ctx);
    }

    ngx_http_apimon_slot_release(b, refund, all);
    ngx_http_apimon_batch_free(b);
    ngx_http_apimon_batch_sent();
}


static void
ngx_http_apimon_batch_free(ngx_http_apimon_batch_t *b)
{
    ngx_queue_remove(&b->queue);
    ngx_free(b);
}


/* the check is decided: the access phase runs again and sees it */

void
ngx_http_apimon_resume(ngx_http_apimon_ctx_t *ctx)
{
    ngx_connection_t    *c;
    ngx_http_request_t  *r;

    r = ctx->request;
    c = r->connection;

    ctx->waiting = 0;

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, c->log, 0,
                   "apimon: subscription \"%V\" answered, %ui windows",
                   &ctx->subscription, ctx->nwindows);

    r->read_event_handler = ngx_http_block_reading;
    r->write_event_handler = ngx_http_core_run_phases;

    ngx_http_core_run_phases(r);
    ngx_http_run_posted_requests(c);
}


/* one request's element of the check reply: its result, or "!<error>" */

void
ngx_http_apimon_check_result(ngx_http_request_t *r, ngx_http_apimon_ctx_t *ctx,
    u_char *data, size_t len)
{
    ngx_http_apimon_unknown_t  *unknown;

    if (len > 0 && data[0] == '!') {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "apimon: the check script failed: %*s",
                      len - 1, data + 1);
        ctx->result = NGX_HTTP_APIMON_REDIS_ERROR;
        return;
    }

    if (ngx_http_apimon_parse_reply(r, ctx, data, len) != NGX_OK) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "apimon: unexpected reply from the check script: %*s",
                      len, data);
        ctx->result = NGX_HTTP_APIMON_REDIS_ERROR;
        ctx->nwindows = 0;
        return;
    }

    unknown = ngx_http_apimon_unknown_get();

    if (ctx->result == NGX_HTTP_APIMON_INVALID_KEY && unknown) {
        ngx_http_apimon_unknown_add(unknown, ctx->digest);
    }
}


/*
 * One element of the check script's reply: NGX_HTTP_APIMON_CHECK_REPLY_HEAD
 * fields "result|subscription|plan|product|retry-after", then
 * NGX_HTTP_APIMON_CHECK_WINDOW_FIELDS "|name|limit|window|remaining|reset"
 * per window.  The text is copied once into the request pool; the strings
 * of the context point into it.
 */

static ngx_int_t
ngx_http_apimon_parse_reply(ngx_http_request_t *r, ngx_http_apimon_ctx_t *ctx,
    u_char *data, size_t len)
{
    u_char                    *p, *last, *copy;
    ngx_str_t                  f[NGX_HTTP_APIMON_REPLY_FIELDS], *wf;
    ngx_uint_t                 n;
    ngx_http_apimon_result_e   result;
    ngx_http_apimon_window_t  *win;

    copy = ngx_pnalloc(r->pool, len);
    if (copy == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(copy, data, len);

    p = copy;
    last = copy + len;

    for (n = 0; /* void */; n++) {
        if (n == NGX_HTTP_APIMON_REPLY_FIELDS) {
            return NGX_ERROR;
        }

        f[n].data = p;

        while (p < last && *p != '|') {
            p++;
        }

        f[n].len = p - f[n].data;

        if (p == last) {
            n++;
            break;
        }

        p++;
    }

    if (n < NGX_HTTP_APIMON_CHECK_REPLY_HEAD
        || (n - NGX_HTTP_APIMON_CHECK_REPLY_HEAD)
           % NGX_HTTP_APIMON_CHECK_WINDOW_FIELDS != 0)
    {
        return NGX_ERROR;
    }

    result = ngx_http_apimon_result_find(&f[0]);

    if (result == NGX_HTTP_APIMON_NONE) {
        return NGX_ERROR;
    }

    ctx->subscription = f[1];
    ctx->plan = f[2];
    ctx->product = f[3];

    if (ngx_http_apimon_text_uint(&f[4], &ctx->retry_after) != NGX_OK) {
        return NGX_ERROR;
    }

    ctx->nwindows = 0;

    for (wf = &f[NGX_HTTP_APIMON_CHECK_REPLY_HEAD]; wf < &f[n];
         wf += NGX_HTTP_APIMON_CHECK_WINDOW_FIELDS)
    {
        win = &ctx->windows[ctx->nwindows];

        win->name = wf[0];

        if (ngx_http_apimon_text_uint(&wf[1], &win->limit) != NGX_OK
            || ngx_http_apimon_text_uint(&wf[2], &win->window) != NGX_OK
            || ngx_http_apimon_text_uint(&wf[3], &win->remaining) != NGX_OK
            || ngx_http_apimon_text_uint(&wf[4], &win->reset) != NGX_OK)
        {
            return NGX_ERROR;
        }

        win->quota = (win->name.len >= 5
                      && ngx_strncmp(win->name.data + win->name.len - 5,
                                     "quota", 5) == 0);

        ctx->nwindows++;
    }

    ctx->result = result;

    return NGX_OK;
}


/* a decimal number of the reply; negative ones (never sent) read as 0 */

static ngx_int_t
ngx_http_apimon_text_uint(ngx_str_t *s, ngx_uint_t *n)
{
    ngx_int_t  v;

    if (s->len > 0 && s->data[0] == '-') {
        *n = 0;
        return NGX_OK;
    }

    v = ngx_atoi(s->data, s->len);
    if (v == NGX_ERROR) {
        return NGX_ERROR;
    }

    *n = v;
    return NGX_OK;
}
