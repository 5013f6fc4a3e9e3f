/*
 * The access phase handler: take the key, check its shape, ask Redis (the
 * "check" script) and suspend the request until the answer comes.
 *
 * Checks are batched: every check a worker starts during one event loop
 * iteration waits in a queue, and a posted event (run at the end of the
 * iteration) sends them all as one EVALSHA, whose reply has one element per
 * request (more than NGX_HTTP_APIMON_BATCH_MAX: several EVALSHAs, written
 * together).  Redis spends much of a lone check on the call itself, and on
 * reading and writing the subscription: a batch pays that once.
 *
 * While a batch of this worker is in flight, new checks wait for its reply
 * (or until a full batch is queued): Redis is busy then anyway, and the
 * next batch gets larger, so each check costs Redis less when it is loaded.
 *
 * A check counts in Redis whether or not its answer reaches the request:
 * each batch carries an id under which the script records what it counted,
 * and the requests that got no answer from it (the client went away, the
 * reply timed out or the connection was lost) are refunded afterwards with
 * the "check_refund" script: at once when the reply came, else when the
 * connection is ready again.
 *
 * The handler runs again when the request is resumed, and again after an
 * internal redirect (try_files, index, error_page): the context is found
 * through the request pool's cleanup list, so a request is checked (and
 * counted) once.
 */


#include "ngx_http_apimon.h"


/*
 * requests per EVALSHA: the number of keys, the keys, now, the number of
 * locations, 6 per location (at most one per request), 2 per request
 */
#define NGX_HTTP_APIMON_BATCH_MAX   64
#define NGX_HTTP_APIMON_BATCH_ARGS  (4 + 9 * NGX_HTTP_APIMON_BATCH_MAX)


/*
 * Batch records: a worker uses NGX_HTTP_APIMON_SLOTS record keys in turn,
 * apimon:batch:<worker>:<slot>; a slot is busy from the batch's send until
 * its reply, or until its refund is done.  A batch sent while every slot is
 * busy carries no id: what it counts cannot be refunded.
 */
#define NGX_HTTP_APIMON_SLOTS       64
#define NGX_HTTP_APIMON_WORKER_LEN  (3 * NGX_INT_T_LEN)

#define NGX_HTTP_APIMON_SLOT_FREE   0
#define NGX_HTTP_APIMON_SLOT_BATCH  1        /* its batch is in flight */
#define NGX_HTTP_APIMON_SLOT_REFUND 2        /* a refund is due */


typedef struct {
    ngx_uint_t                     state;
    ngx_uint_t                     seq;       /* of the batch recorded */
    uint64_t                       mask;      /* requests to refund */
    ngx_http_apimon_redis_call_t  *call;      /* the refund in flight */
    unsigned                       all:1;     /* every request */
} ngx_http_apimon_slot_t;


/*
 * A batch in flight.  A request that goes away drops out (its slot becomes
 * NULL); when none is left, the reply is still awaited when the batch has
 * a record (its counts are then refunded), else the call is cancelled.
 */
struct ngx_http_apimon_batch_s {
    ngx_http_apimon_redis_call_t  *call;
    ngx_queue_t                    queue;     /* bt->batches */
    ngx_int_t                      slot;      /* -1: no record */
    ngx_uint_t                     n;
    ngx_uint_t                     live;
    unsigned                       replying:1;
    ngx_http_apimon_ctx_t         *ctx[1];    /* n of them */
};


/* the worker's checks waiting to be sent, and the scratch to send them */
struct ngx_http_apimon_batcher_s {
    ngx_int_t                      script;    /* index of "check" */
    ngx_int_t                      refund;    /* ... of "check_refund" */
    ngx_queue_t                    pending;   /* ctx->queue */
    ngx_queue_t                    batches;   /* in flight */
    ngx_uint_t                     npending;
    ngx_uint_t                     inflight;  /* batches sent, reply due */
    ngx_event_t                    flush;     /* posted */
    ngx_connection_t               dummy;     /* event data (debug log) */
    unsigned                       initialized:1;

    /* this worker's name in record keys: pid, start time, random */
    u_char                         worker[NGX_HTTP_APIMON_WORKER_LEN];
    size_t                         worker_len;
    ngx_uint_t                     seq;
    ngx_uint_t                     next_slot;
    ngx_http_apimon_slot_t         slots[NGX_HTTP_APIMON_SLOTS];

    /* not 10 KB of stack: the transport copies the arguments */
    u_char                         nums[3 * NGX_HTTP_APIMON_BATCH_MAX
                                        * NGX_INT_T_LEN
                                        + NGX_HTTP_APIMON_WORKER_LEN];
    const char                    *argv[NGX_HTTP_APIMON_BATCH_ARGS];
    size_t                         argvlen[NGX_HTTP_APIMON_BATCH_ARGS];
    ngx_uint_t                     loc_of[NGX_HTTP_APIMON_BATCH_MAX];
    ngx_http_apimon_ctx_t         *ctxs[NGX_HTTP_APIMON_BATCH_MAX];
    ngx_http_apimon_loc_conf_t    *locs[NGX_HTTP_APIMON_BATCH_MAX];
};


static ngx_int_t ngx_http_apimon_decide(ngx_http_request_t *r,
    ngx_http_apimon_ctx_t *ctx, ngx_http_apimon_loc_conf_t *alcf);
static ngx_http_apimon_ctx_t *ngx_http_apimon_create_ctx(
    ngx_http_request_t *r);
static void ngx_http_apimon_cleanup(void *data);
static ngx_int_t ngx_http_apimon_check(ngx_http_request_t *r,
    ngx_http_apimon_ctx_t *ctx, ngx_http_apimon_loc_conf_t *alcf,
    ngx_str_t *key);
static ngx_http_apimon_batcher_t *ngx_http_apimon_batcher_get(void);
static ngx_http_apimon_unknown_t *ngx_http_apimon_unknown_get(void);
static void ngx_http_apimon_batch_flush(ngx_event_t *ev);
static void ngx_http_apimon_batch_send(ngx_uint_t n);
static void ngx_http_apimon_batch_sent(void);
static void ngx_http_apimon_batch_fail(ngx_http_apimon_batch_t *b);
static void ngx_http_apimon_batch_done(redisReply *reply, const char *err,
    void *data);
static void ngx_http_apimon_batch_free(ngx_http_apimon_batch_t *b);
static ngx_int_t ngx_http_apimon_slot_take(ngx_http_apimon_batcher_t *bt);
static void ngx_http_apimon_slot_release(ngx_http_apimon_batch_t *b,
    uint64_t mask, ngx_uint_t all);
static void ngx_http_apimon_refund_send(ngx_uint_t slot);
static void ngx_http_apimon_refund_done(redisReply *reply, const char *err,
    void *data);
static void ngx_http_apimon_refund_ready(void);
static void ngx_http_apimon_resume(ngx_http_apimon_ctx_t *ctx);
static void ngx_http_apimon_check_result(ngx_http_request_t *r,
    ngx_http_apimon_ctx_t *ctx, u_char *data, size_t len);
static ngx_int_t ngx_http_apimon_parse_reply(ngx_http_request_t *r,
    ngx_http_apimon_ctx_t *ctx, u_char *data, size_t len);
static ngx_int_t ngx_http_apimon_text_uint(ngx_str_t *s, ngx_uint_t *n);
static ngx_int_t ngx_http_apimon_hide_header(ngx_http_request_t *r,
    ngx_str_t *name);
static void ngx_http_apimon_repoint_header(ngx_http_request_t *r,
    ngx_table_elt_t *from, ngx_table_elt_t *to);
static ngx_int_t ngx_http_apimon_remove_header(ngx_http_request_t *r,
    ngx_list_part_t *part, ngx_uint_t i);
static ngx_int_t ngx_http_apimon_hide_arg(ngx_http_request_t *r,
    ngx_str_t *name);
static void ngx_http_apimon_redact_log(ngx_http_request_t *r,
    ngx_http_apimon_ctx_t *ctx, ngx_http_apimon_loc_conf_t *alcf);
static u_char *ngx_http_apimon_log_handler(ngx_http_request_t *r,
    ngx_http_request_t *sr, u_char *buf, size_t len);
static u_char *ngx_http_apimon_redact(ngx_http_apimon_ctx_t *ctx,
    u_char *p, u_char *last, u_char *buf, u_char *end);



/* the worker's batcher, kept with the http{} configuration */

static ngx_http_apimon_batcher_t *
ngx_http_apimon_batcher_get(void)
{
    ngx_http_apimon_main_conf_t  *amcf;

    amcf = ngx_http_cycle_get_module_main_conf(ngx_cycle,
                                               ngx_http_apimon_module);

    return amcf->batcher;
}


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
ngx_http_apimon_handler_init(ngx_conf_t *cf)
{
    ngx_http_apimon_batcher_t    *bt;
    ngx_http_apimon_main_conf_t  *amcf;

    amcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_apimon_module);

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


ngx_int_t
ngx_http_apimon_handler(ngx_http_request_t *r)
{
    ngx_str_t                     key;
    ngx_http_apimon_ctx_t        *ctx;
    ngx_http_apimon_loc_conf_t   *alcf;
    ngx_http_apimon_main_conf_t  *amcf;

    alcf = ngx_http_get_module_loc_conf(r, ngx_http_apimon_module);

    if (!alcf->enable) {
        return NGX_DECLINED;
    }

    ctx = ngx_http_apimon_get_ctx(r);

    if (ctx) {
        if (ctx->waiting) {
            return NGX_AGAIN;
        }

        if (ctx->result != NGX_HTTP_APIMON_NONE) {
            return ngx_http_apimon_decide(r, ctx, alcf);
        }

    } else {
        ctx = ngx_http_apimon_create_ctx(r);
        if (ctx == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    ctx->legacy_headers = alcf->legacy_headers;

    ngx_http_apimon_redact_log(r, ctx, alcf);

    if (alcf->api.len == 0) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "apimon: \"apimon_api\" is not set for this location");
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ngx_http_complex_value(r, alcf->key, &key) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->key = key;

    if (alcf->hide_key) {
        if (alcf->hide_header.len) {
            if (ngx_http_apimon_hide_header(r, &alcf->hide_header) != NGX_OK) {
                return NGX_HTTP_BAD_REQUEST;
            }

        } else if (alcf->hide_arg.len) {
            if (ngx_http_apimon_hide_arg(r, &alcf->hide_arg) != NGX_OK) {
                return NGX_HTTP_INTERNAL_SERVER_ERROR;
            }
        }
    }

    if (key.len == 0) {
        ctx->result = NGX_HTTP_APIMON_MISSING_KEY;
        return ngx_http_apimon_decide(r, ctx, alcf);
    }

    amcf = ngx_http_get_module_main_conf(r, ngx_http_apimon_module);

    if (ngx_http_apimon_key_valid(&key, amcf->key_secrets, alcf->key_legacy,
                                  &ctx->key_version, r->connection->log)
        != NGX_OK)
    {
        ctx->result = NGX_HTTP_APIMON_INVALID_KEY;
        return ngx_http_apimon_decide(r, ctx, alcf);
    }

    return ngx_http_apimon_check(r, ctx, alcf, &key);
}


static ngx_int_t
ngx_http_apimon_decide(ngx_http_request_t *r, ngx_http_apimon_ctx_t *ctx,
    ngx_http_apimon_loc_conf_t *alcf)
{
    ngx_uint_t  status;

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "apimon: result \"%V\"",
                   ngx_http_apimon_result_name(ctx->result));

    status = ngx_http_apimon_result(ctx->result)->status;

    if (status == 0) {
        /* allowed: access granted (what counts with "satisfy any") */
        return NGX_OK;
    }

    if (ctx->result == NGX_HTTP_APIMON_QUOTA_EXCEEDED) {
        status = alcf->quota_status;

    } else if (ctx->result == NGX_HTTP_APIMON_REDIS_ERROR
               && alcf->on_redis_error == NGX_HTTP_APIMON_REDIS_OPEN)
    {
        return NGX_DECLINED;
    }

    if (r->error_page) {
        /* the error page of this very refusal: let it be served */
        return NGX_DECLINED;
    }

    return ngx_http_apimon_refuse(r, ctx, status);
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


static ngx_http_apimon_ctx_t *
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


void
ngx_http_apimon_handler_exit(ngx_http_apimon_main_conf_t *amcf)
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

    /* the transport forgets their calls without running the handlers */
    while (!ngx_queue_empty(&bt->batches)) {
        q = ngx_queue_head(&bt->batches);
        b = ngx_queue_data(q, ngx_http_apimon_batch_t, queue);
        ngx_http_apimon_batch_free(b);
    }
}


/* the request is freed: it leaves its batch, a reply still due is dropped */

static void
ngx_http_apimon_cleanup(void *data)
{
    ngx_http_apimon_ctx_t  *ctx = data;

    ngx_http_apimon_batch_t  *b;

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


static ngx_int_t
ngx_http_apimon_check(ngx_http_request_t *r, ngx_http_apimon_ctx_t *ctx,
    ngx_http_apimon_loc_conf_t *alcf, ngx_str_t *key)
{
    u_char                     *p;
    ngx_http_apimon_batcher_t  *bt;
    ngx_http_apimon_unknown_t  *unknown;

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
        bt->initialized = 1;
    }

    p = ngx_cpymem(ctx->skey, "apimon:sub:{", sizeof("apimon:sub:{") - 1);
    ngx_http_apimon_key_sub_id(key, p);
    p += NGX_HTTP_APIMON_SUB_ID_LEN;
    *p = '}';

    ngx_http_apimon_key_digest(key, ctx->digest);

    unknown = ngx_http_apimon_unknown_get();

    if (unknown && ngx_http_apimon_unknown_find(unknown, ctx->digest) == NGX_OK)
    {
        ngx_log_debug0(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "apimon: Redis just called this key unknown");

        ctx->result = NGX_HTTP_APIMON_INVALID_KEY;
        return ngx_http_apimon_decide(r, ctx, alcf);
    }

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "apimon: check %*s", NGX_HTTP_APIMON_SKEY_LEN, ctx->skey);

    ctx->conf = alcf;
    ctx->waiting = 1;
    ctx->queued = 1;
    ngx_queue_insert_tail(&bt->pending, &ctx->queue);

    /* notice a client that goes away while the check is in flight */
    r->read_event_handler = ngx_http_test_reading;

    bt->npending++;

    /* never sent from here: a failure resumes the requests of the batch */
    if (!bt->flush.posted
        && (bt->inflight == 0 || bt->npending >= NGX_HTTP_APIMON_BATCH_MAX))
    {
        ngx_post_event(&bt->flush, &ngx_posted_events);
    }

    return NGX_AGAIN;
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
    size_t                              len;
    u_char                             *p;
    ngx_uint_t                          i, j, a, nloc;
    ngx_msec_t                          timeout;
    ngx_queue_t                        *q;
    ngx_http_apimon_ctx_t              *ctx;
    ngx_http_apimon_batch_t            *b;
    ngx_http_apimon_batcher_t          *bt;
    ngx_http_apimon_loc_conf_t         *alcf, **locs;
    u_char                             *nums;
    const char                        **argv;
    size_t                             *argvlen;
    ngx_uint_t                         *loc_of;
    ngx_http_apimon_ctx_t             **ctxs;

    bt = ngx_http_apimon_batcher_get();
    nums = bt->nums;
    argv = bt->argv;
    argvlen = bt->argvlen;
    loc_of = bt->loc_of;
    ctxs = bt->ctxs;
    locs = bt->locs;

    b = ngx_alloc(sizeof(ngx_http_apimon_batch_t)
                  + (n - 1) * sizeof(ngx_http_apimon_ctx_t *),
                  ngx_cycle->log);

    /* take the requests; the locations of the batch are sent once each */

    nloc = 0;
    timeout = 0;

    for (i = 0; i < n; i++) {
        q = ngx_queue_head(&bt->pending);
        ngx_queue_remove(q);
        bt->npending--;

        ctx = ngx_queue_data(q, ngx_http_apimon_ctx_t, queue);
        ctx->queued = 0;
        ctxs[i] = ctx;
        alcf = ctx->conf;

        /* the batch waits as long as its most patient request would */
        if (alcf->timeout > timeout) {
            timeout = alcf->timeout;
        }

        for (j = 0; j < nloc; j++) {
            if (locs[j] == alcf) {
                break;
            }
        }

        if (j == nloc) {
            locs[nloc++] = alcf;
        }

        loc_of[i] = j;
    }

    if (b == NULL) {
        /* out of memory: fail the requests */
        for (i = 0; i < n; i++) {
            ctxs[i]->result = NGX_HTTP_APIMON_REDIS_ERROR;
            ngx_http_apimon_resume(ctxs[i]);
        }

        return;
    }

    p = nums;

    len = ngx_sprintf(p, "%ui", n) - p;
    argv[0] = (const char *) p;                 /* number of keys */
    argvlen[0] = len;
    p += len;

    a = n + 1;
    argv[a] = "0";                              /* now: Redis TIME */
    argvlen[a++] = 1;

    len = ngx_sprintf(p, "%ui", nloc) - p;
    argv[a] = (const char *) p;
    argvlen[a++] = len;
    p += len;

    for (j = 0; j < nloc; j++) {
        alcf = locs[j];

        argv[a] = (const char *) alcf->api.data;
        argvlen[a++] = alcf->api.len;
        argv[a] = (const char *) alcf->rate_n_text.data;
        argvlen[a++] = alcf->rate_n_text.len;
        argv[a] = (const char *) alcf->rate_w_text.data;
        argvlen[a++] = alcf->rate_w_text.len;
        argv[a] = (const char *) alcf->quota_n_text.data;
        argvlen[a++] = alcf->quota_n_text.len;
        argv[a] = alcf->quota_unit.data ? (const char *) alcf->quota_unit.data
                                        : "";
        argvlen[a++] = alcf->quota_unit.len;
        argv[a] = (const char *) alcf->api.data;   /* scope: the API */
        argvlen[a++] = alcf->api.len;
    }

    for (i = 0; i < n; i++) {
        ctx = ctxs[i];

        argv[1 + i] = (const char *) ctx->skey;
        argvlen[1 + i] = NGX_HTTP_APIMON_SKEY_LEN;

        argv[a] = (const char *) ctx->digest;
        argvlen[a++] = NGX_HTTP_APIMON_DIGEST_LEN;

        len = ngx_sprintf(p, "%ui", loc_of[i] + 1) - p;
        argv[a] = (const char *) p;
        argvlen[a++] = len;
        p += len;

        b->ctx[i] = ctx;
        ctx->batch = b;
        ctx->index = i;
    }

    b->slot = ngx_http_apimon_slot_take(bt);

    if (b->slot >= 0) {
        /* the batch id "<worker>:<slot>:<seq>" (check_refund) */
        len = ngx_sprintf(p, "%*s:%i:%ui", bt->worker_len, bt->worker,
                          b->slot, bt->slots[b->slot].seq)
              - p;
        argv[a] = (const char *) p;
        argvlen[a++] = len;
        p += len;
    }

    b->n = n;
    b->live = n;
    b->replying = 0;
    ngx_queue_insert_tail(&bt->batches, &b->queue);

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "apimon: batch %p of %ui checks, %ui locations",
                   b, n, nloc);

    b->call = ngx_http_apimon_redis_script(bt->script,
                                           (int) a, argv, argvlen,
                                           timeout, ngx_http_apimon_batch_done,
                                           b);

    bt->inflight++;

    if (b->call == NULL) {
        ngx_http_apimon_batch_fail(b);
    }
}


/* out of memory: fail every request of the batch */

static void
ngx_http_apimon_batch_fail(ngx_http_apimon_batch_t *b)
{
    ngx_uint_t              i;
    ngx_http_apimon_ctx_t  *ctx;

    b->replying = 1;

    for (i = 0; i < b->n; i++) {
        ctx = b->ctx[i];

        if (ctx == NULL) {
            continue;
        }

        b->ctx[i] = NULL;
        ctx->batch = NULL;
        ctx->result = NGX_HTTP_APIMON_REDIS_ERROR;

        ngx_http_apimon_resume(ctx);
    }

    ngx_http_apimon_slot_release(b, 0, 0);
    ngx_http_apimon_batch_free(b);
    ngx_http_apimon_batch_sent();
}


static void
ngx_http_apimon_batch_done(redisReply *reply, const char *err, void *data)
{
    ngx_http_apimon_batch_t  *b = data;

    uint64_t                refund;
    ngx_uint_t              i, all, ran;
    redisReply             *e;
    ngx_http_apimon_ctx_t  *ctx;

    b->replying = 1;

    /* no reply to a call that was sent: the script may have run */
    all = (reply == NULL && ngx_http_apimon_redis_sent(b->call));
    ran = 0;
    refund = 0;

    b->call = NULL;

    if (reply == NULL) {
        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "apimon: key check failed: %s", err);

    } else if (reply->type == REDIS_REPLY_ERROR) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "apimon: the check script failed: %*s",
                      (size_t) reply->len, reply->str);
        reply = NULL;

    } else if (reply->type != REDIS_REPLY_ARRAY || reply->elements != b->n) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "apimon: unexpected reply from the check script");
        reply = NULL;

    } else {
        ran = 1;
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


/* refunds: see the top of the file, and schema/README.md (check_refund) */

static ngx_int_t
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

static void
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
    const char                  *argv[4];
    size_t                       argvlen[4];
    ngx_http_apimon_slot_t      *slot;
    ngx_http_apimon_batcher_t   *bt;
    u_char                       key[sizeof("apimon:batch::") - 1
                                     + NGX_HTTP_APIMON_WORKER_LEN
                                     + NGX_INT_T_LEN];
    u_char                       id[NGX_HTTP_APIMON_WORKER_LEN
                                    + 2 * NGX_INT_T_LEN + 2];
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
    argvlen[2] = ngx_sprintf(id, "%*s:%ui:%ui", bt->worker_len, bt->worker,
                             i, slot->seq)
                 - id;

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

    slot->call = ngx_http_apimon_redis_script(bt->refund, 4, argv, argvlen, 0,
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

static void
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


static void
ngx_http_apimon_resume(ngx_http_apimon_ctx_t *ctx)
{
    ngx_connection_t    *c;
    ngx_http_request_t  *r;

    r = ctx->request;
    c = r->connection;

    ctx->waiting = 0;

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, c->log, 0,
                   "apimon: subscription \"%V\": %V, %ui windows",
                   &ctx->subscription,
                   ngx_http_apimon_result_name(ctx->result), ctx->nwindows);

    r->read_event_handler = ngx_http_block_reading;
    r->write_event_handler = ngx_http_core_run_phases;

    ngx_http_core_run_phases(r);
    ngx_http_run_posted_requests(c);
}


/* one request's element of the check reply: its result, or "!<error>" */

static void
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
 * One element of the check script's reply (schema/README.md):
 * "result|subscription|plan|product|retry-after", then
 * "|name|limit|window|remaining|reset" per window.  The text is copied once
 * into the request pool; the strings of the context point into it.
 */

static ngx_int_t
ngx_http_apimon_parse_reply(ngx_http_request_t *r, ngx_http_apimon_ctx_t *ctx,
    u_char *data, size_t len)
{
    u_char                    *p, *last, *copy;
    ngx_str_t                  f[5 + 5 * NGX_HTTP_APIMON_MAX_WINDOWS];
    ngx_uint_t                 n, w;
    ngx_http_apimon_window_t  *win;
    ngx_http_apimon_result_e   result;

    copy = ngx_pnalloc(r->pool, len);
    if (copy == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(copy, data, len);

    p = copy;
    last = copy + len;

    for (n = 0; /* void */; n++) {
        if (n == sizeof(f) / sizeof(ngx_str_t)) {
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

    if (n < 5 || (n - 5) % 5 != 0) {
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

    for (w = 0; 5 + w * 5 < n; w++) {
        win = &ctx->windows[w];

        win->name = f[5 + w * 5];

        if (ngx_http_apimon_text_uint(&f[6 + w * 5], &win->limit) != NGX_OK
            || ngx_http_apimon_text_uint(&f[7 + w * 5], &win->window) != NGX_OK
            || ngx_http_apimon_text_uint(&f[8 + w * 5], &win->remaining)
               != NGX_OK
            || ngx_http_apimon_text_uint(&f[9 + w * 5], &win->reset) != NGX_OK)
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


/*
 * apimon_hide_key: the key header is taken out of r->headers_in.headers,
 * so that no upstream module passes it on.  nginx 1.22 has no way to remove
 * a request header: the list part is compacted, and the pointers that
 * r->headers_in keeps to the elements that moved are updated.
 */

static ngx_int_t
ngx_http_apimon_hide_header(ngx_http_request_t *r, ngx_str_t *name)
{
    u_char            ch;
    ngx_uint_t        i, n;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }

            part = part->next;
            h = part->elts;
            i = 0;

            if (part->nelts == 0) {
                i = (ngx_uint_t) -1;
                continue;
            }
        }

        if (h[i].key.len != name->len) {
            continue;
        }

        for (n = 0; n < name->len; n++) {
            ch = h[i].lowcase_key[n];

            if (ch == '-') {
                ch = '_';
            }

            if (ch != ngx_tolower(name->data[n])) {
                break;
            }
        }

        if (n != name->len) {
            continue;
        }

        if (ngx_http_apimon_remove_header(r, part, i) != NGX_OK) {
            return NGX_ERROR;
        }

        /* the next element is now at i */
        i--;
    }

    return NGX_OK;
}


/*
 * r->headers_in keeps pointers into the header list: the known headers (from
 * "host" to "user") and the cookie and X-Forwarded-For arrays.  Those that
 * point at "from" are made to point at "to", or forgotten when "to" is NULL.
 */

static void
ngx_http_apimon_repoint_header(ngx_http_request_t *r, ngx_table_elt_t *from,
    ngx_table_elt_t *to)
{
    ngx_uint_t         k, n;
    ngx_array_t       *a[2];
    ngx_table_elt_t  **p, **last;

    last = (ngx_table_elt_t **) &r->headers_in.user;

    for (p = &r->headers_in.host; p < last; p++) {
        if (*p == from) {
            *p = to;
        }
    }

    a[0] = &r->headers_in.cookies;
#if (NGX_HTTP_X_FORWARDED_FOR)
    a[1] = &r->headers_in.x_forwarded_for;
#else
    a[1] = NULL;
#endif

    for (k = 0; k < 2; k++) {
        if (a[k] == NULL || a[k]->elts == NULL) {
            continue;
        }

        p = a[k]->elts;

        for (n = 0; n < a[k]->nelts; n++) {
            if (p[n] != from) {
                continue;
            }

            if (to) {
                p[n] = to;
                continue;
            }

            /* cannot happen for a custom header; keep it consistent */
            ngx_memmove(&p[n], &p[n + 1],
                        (a[k]->nelts - n - 1) * sizeof(ngx_table_elt_t *));
            a[k]->nelts--;
            n--;
        }
    }
}


static ngx_int_t
ngx_http_apimon_remove_header(ngx_http_request_t *r, ngx_list_part_t *part,
    ngx_uint_t i)
{
    ngx_uint_t         j;
    ngx_list_part_t   *prev;
    ngx_table_elt_t   *h;

    h = part->elts;

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "apimon: hiding header \"%V\" from the upstream",
                   &h[i].key);

    ngx_http_apimon_repoint_header(r, &h[i], NULL);

    for (j = i + 1; j < part->nelts; j++) {
        h[j - 1] = h[j];
        ngx_http_apimon_repoint_header(r, &h[j], &h[j - 1]);
    }

    part->nelts--;

    if (part->nelts || part == r->headers_in.headers.last) {
        return NGX_OK;
    }

    /*
     * nginx's list walkers expect every part but the last to hold elements:
     * unlink an emptied part
     */

    if (part == &r->headers_in.headers.part) {
        /* twenty or more copies of the key header */
        return NGX_ERROR;
    }

    for (prev = &r->headers_in.headers.part; prev->next != part;
         prev = prev->next)
    {
        /* void */
    }

    prev->next = part->next;

    return NGX_OK;
}


/* take "name=value" out of $args; the upstream then gets $uri?$args */

static ngx_int_t
ngx_http_apimon_hide_arg(ngx_http_request_t *r, ngx_str_t *name)
{
    u_char  *p, *last, *start, *end, *eq, *dst, *out;

    if (r->args.len == 0) {
        return NGX_OK;
    }

    out = ngx_pnalloc(r->pool, r->args.len);
    if (out == NULL) {
        return NGX_ERROR;
    }

    dst = out;
    p = r->args.data;
    last = p + r->args.len;

    while (p < last) {
        start = p;
        end = ngx_strlchr(p, last, '&');

        if (end == NULL) {
            end = last;
        }

        eq = ngx_strlchr(start, end, '=');

        if (eq == NULL) {
            eq = end;
        }

        p = (end < last) ? end + 1 : last;

        if ((size_t) (eq - start) == name->len
            && ngx_strncasecmp(start, name->data, name->len) == 0)
        {
            continue;
        }

        if (dst != out) {
            *dst++ = '&';
        }

        dst = ngx_cpymem(dst, start, end - start);
    }

    if ((size_t) (dst - out) == r->args.len) {
        return NGX_OK;
    }

    ngx_log_debug0(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "apimon: hiding the key argument from the upstream");

    r->args.data = out;
    r->args.len = dst - out;

    /* the request line is rebuilt from $uri and $args */
    r->valid_unparsed_uri = 0;

    return NGX_OK;
}


/*
 * The context nginx appends to a request's error log lines (client, server,
 * request line, upstream, host, referrer) would carry a key sent in the
 * query string, and in a referrer: the request's log handler is wrapped so
 * that every line logged with it from the access phase on, apimon's and
 * nginx's, shows "[redacted]" instead of the key argument's value and of
 * the key itself.
 */

#define NGX_HTTP_APIMON_REDACTED      "[redacted]"
#define NGX_HTTP_APIMON_REDACT_MIN    8       /* shorter keys: by name only */

static void
ngx_http_apimon_redact_log(ngx_http_request_t *r, ngx_http_apimon_ctx_t *ctx,
    ngx_http_apimon_loc_conf_t *alcf)
{
    if (r != r->main || r->log_handler == ngx_http_apimon_log_handler) {
        return;
    }

    ctx->key_arg = alcf->hide_arg;
    ctx->log_handler = r->log_handler;
    r->log_handler = ngx_http_apimon_log_handler;
}


static u_char *
ngx_http_apimon_log_handler(ngx_http_request_t *r, ngx_http_request_t *sr,
    u_char *buf, size_t len)
{
    u_char                  *p;
    u_char                   text[NGX_MAX_ERROR_STR];
    ngx_http_apimon_ctx_t   *ctx;

    ctx = ngx_http_apimon_get_ctx(r);

    if (ctx == NULL || ctx->log_handler == NULL) {
        /* cannot happen: the context lives as long as the request */
        return ngx_snprintf(buf, len, ", request: " NGX_HTTP_APIMON_REDACTED);
    }

    if (len > sizeof(text)) {
        len = sizeof(text);
    }

    p = ctx->log_handler(r, sr, text, len);

    return ngx_http_apimon_redact(ctx, text, p, buf, buf + len);
}


/* copy [p, last) to buf, the key argument's values and the key redacted */

static u_char *
ngx_http_apimon_redact(ngx_http_apimon_ctx_t *ctx, u_char *p, u_char *last,
    u_char *buf, u_char *end)
{
    size_t      n;
    ngx_str_t  *arg, *key;

    arg = &ctx->key_arg;
    key = &ctx->key;

    while (p < last && buf < end) {

        if (arg->len
            && (*p == '?' || *p == '&')
            && (size_t) (last - p) > arg->len + 1
            && p[arg->len + 1] == '='
            && ngx_strncasecmp(p + 1, arg->data, arg->len) == 0)
        {
            n = ngx_min((size_t) (end - buf), arg->len + 2);
            buf = ngx_cpymem(buf, p, n);
            p += arg->len + 2;

            while (p < last && *p != '&' && *p != '#' && *p != ' '
                   && *p != '"')
            {
                p++;
            }

        } else if (key->len >= NGX_HTTP_APIMON_REDACT_MIN
                   && (size_t) (last - p) >= key->len
                   && ngx_strncmp(p, key->data, key->len) == 0)
        {
            p += key->len;

        } else {
            *buf++ = *p++;
            continue;
        }

        n = ngx_min((size_t) (end - buf), sizeof(NGX_HTTP_APIMON_REDACTED) - 1);
        buf = ngx_cpymem(buf, NGX_HTTP_APIMON_REDACTED, n);
    }

    return buf;
}
