
/*
 * apimon: lease mode's Redis side.  A lease is carved by the check script
 * itself: one call checks "k" identical calls of the key at the location
 * under a batch id of its own ("L<worker>:<seq>:<seq>", a record key never
 * reused), so each of them is decided, counted and limited exactly as a
 * call of its own would be, and Redis never lets more through than the
 * quota and rate allow.  The first element answers the request that
 * carved; the other allowed ones are served locally while the lease lasts.
 * What a lease did not serve is given back by check_refund on that batch
 * id (it deletes the record: a second return changes nothing), so once
 * the lease is returned Redis counts exactly the calls served.
 */


#include "ngx_http_apimon_batch.h"
#include "ngx_http_apimon_lease.h"


typedef struct {
    ngx_queue_t                    queue;    /* leaser->carves */
    ngx_http_apimon_ctx_t         *ctx;      /* NULL: the request is gone */
    ngx_http_apimon_redis_call_t  *call;
    ngx_http_apimon_lease_t        lease;
    u_char                         id[NGX_HTTP_APIMON_LEASE_ID_LEN];
} ngx_http_apimon_carve_t;


static ngx_uint_t ngx_http_apimon_lease_loc(ngx_http_apimon_loc_conf_t *alcf);
static ngx_int_t ngx_http_apimon_lease_served(ngx_http_request_t *r,
    ngx_http_apimon_ctx_t *ctx, ngx_http_apimon_lease_t *l);
static ngx_int_t ngx_http_apimon_lease_carve(ngx_http_apimon_ctx_t *ctx,
    ngx_http_apimon_main_conf_t *amcf, ngx_http_apimon_lease_t *l);
static void ngx_http_apimon_lease_carved(redisReply *reply, const char *err,
    void *data);
static void ngx_http_apimon_lease_answer(ngx_http_apimon_carve_t *cv,
    redisReply *reply);
static ngx_uint_t ngx_http_apimon_lease_size(ngx_http_apimon_main_conf_t *amcf,
    u_char *p, size_t len);
static void ngx_http_apimon_lease_return(ngx_http_apimon_lease_t *l);
static void ngx_http_apimon_lease_send(ngx_http_apimon_main_conf_t *amcf,
    ngx_http_apimon_lret_t *rt);
static void ngx_http_apimon_lease_retry(ngx_http_apimon_main_conf_t *amcf);
static void ngx_http_apimon_lease_returned(redisReply *reply,
    const char *err, void *data);
static void ngx_http_apimon_lease_flush(ngx_event_t *ev);


/* the location as Redis sees it: the same number in every configuration */

static ngx_uint_t
ngx_http_apimon_lease_loc(ngx_http_apimon_loc_conf_t *alcf)
{
    uint32_t  crc;

    ngx_crc32_init(crc);
    ngx_crc32_update(&crc, alcf->api.data, alcf->api.len);
    ngx_crc32_update(&crc, (u_char *) "|", 1);
    ngx_crc32_update(&crc, alcf->rate_n_text.data, alcf->rate_n_text.len);
    ngx_crc32_update(&crc, (u_char *) "|", 1);
    ngx_crc32_update(&crc, alcf->rate_w_text.data, alcf->rate_w_text.len);
    ngx_crc32_update(&crc, (u_char *) "|", 1);
    ngx_crc32_update(&crc, alcf->quota_n_text.data, alcf->quota_n_text.len);
    ngx_crc32_update(&crc, (u_char *) "|", 1);
    ngx_crc32_update(&crc, alcf->quota_unit.data, alcf->quota_unit.len);
    ngx_crc32_final(crc);

    return crc;
}


/*
 * The request's check in lease mode: NGX_OK decided from a lease
 * (ctx->result set), NGX_AGAIN waiting for a carve, NGX_DECLINED: ask
 * Redis through the batcher, as without leases.
 */

ngx_int_t
ngx_http_apimon_lease_check(ngx_http_request_t *r, ngx_http_apimon_ctx_t *ctx,
    ngx_http_apimon_loc_conf_t *alcf, ngx_http_apimon_main_conf_t *amcf)
{
    u_char                     id[NGX_HTTP_APIMON_LEASE_ID_LEN];
    ngx_int_t                  rc;
    ngx_http_apimon_leaser_t  *ls;
    ngx_http_apimon_lease_t    l;

    ls = amcf->leaser;

    if (amcf->lease_sh == NULL || ls->worker_len == 0) {
        return NGX_DECLINED;
    }

    ngx_memcpy(l.digest, ctx->digest, NGX_HTTP_APIMON_DIGEST_LEN);
    l.loc = ngx_http_apimon_lease_loc(alcf);
    l.id.data = id;
    l.id.len = ngx_snprintf(id, sizeof(id), "L%*s:%ui:%ui",
                            ls->worker_len, ls->worker, ls->seq, ls->seq)
               - id;

    rc = ngx_http_apimon_lease_take(amcf, ctx->digest, l.loc, &l);

    if (l.ret_k) {
        ngx_http_apimon_lease_return(&l);
    }

    if (rc == NGX_OK) {
        return ngx_http_apimon_lease_served(r, ctx, &l);
    }

    if (rc == NGX_BUSY) {
        return NGX_DECLINED;
    }

    ls->seq++;
    ctx->conf = alcf;

    return ngx_http_apimon_lease_carve(ctx, amcf, &l);
}


/* a call from a lease: the carve's answer, its windows l->served lower */

static ngx_int_t
ngx_http_apimon_lease_served(ngx_http_request_t *r,
    ngx_http_apimon_ctx_t *ctx, ngx_http_apimon_lease_t *l)
{
    ngx_uint_t                 i;
    ngx_http_apimon_window_t  *w;

    ngx_http_apimon_check_result(r, ctx, l->text, l->text_len);

    for (i = 0; i < ctx->nwindows; i++) {
        w = &ctx->windows[i];
        w->remaining = w->remaining > l->served
                       ? w->remaining - l->served : 0;
    }

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "apimon: served from a lease, call %ui", l->served);

    return NGX_OK;
}


static ngx_int_t
ngx_http_apimon_lease_carve(ngx_http_apimon_ctx_t *ctx,
    ngx_http_apimon_main_conf_t *amcf, ngx_http_apimon_lease_t *l)
{
    int                          argc;
    u_char                       nums[NGX_INT_T_LEN];
    size_t                       argvlen[NGX_HTTP_APIMON_LEASE_ARGS];
    ngx_uint_t                   i, k;
    const char                  *argv[NGX_HTTP_APIMON_LEASE_ARGS];
    ngx_http_apimon_carve_t     *cv;
    ngx_http_apimon_loc_conf_t  *alcf;

#define ngx_http_apimon_lease_arg(d, n)                                       \
    argv[argc] = (const char *) (d); argvlen[argc++] = (n)

    cv = ngx_alloc(sizeof(ngx_http_apimon_carve_t), ngx_cycle->log);
    if (cv == NULL) {
        ngx_http_apimon_lease_fail(amcf, l);
        return NGX_DECLINED;
    }

    cv->lease = *l;
    ngx_memcpy(cv->id, l->id.data, l->id.len);
    cv->lease.id.data = cv->id;

    k = l->size;
    alcf = ctx->conf;
    argc = 0;

    /* the check's layout (schema/README.md): k times this one call */
    ngx_http_apimon_lease_arg(nums, ngx_sprintf(nums, "%ui", k) - nums);

    for (i = 0; i < k; i++) {
        ngx_http_apimon_lease_arg(ctx->skey, NGX_HTTP_APIMON_SKEY_LEN);
    }

    ngx_http_apimon_lease_arg("0", 1);
    ngx_http_apimon_lease_arg("1", 1);
    ngx_http_apimon_lease_arg(alcf->api.data, alcf->api.len);
    ngx_http_apimon_lease_arg(alcf->rate_n_text.data, alcf->rate_n_text.len);
    ngx_http_apimon_lease_arg(alcf->rate_w_text.data, alcf->rate_w_text.len);
    ngx_http_apimon_lease_arg(alcf->quota_n_text.data,
                              alcf->quota_n_text.len);
    ngx_http_apimon_lease_arg(alcf->quota_unit.data
                              ? alcf->quota_unit.data : (u_char *) "",
                              alcf->quota_unit.len);
    ngx_http_apimon_lease_arg(alcf->api.data, alcf->api.len);

    for (i = 0; i < k; i++) {
        ngx_http_apimon_lease_arg(ctx->digest, NGX_HTTP_APIMON_DIGEST_LEN);
        ngx_http_apimon_lease_arg("1", 1);
    }

    ngx_http_apimon_lease_arg(cv->id, l->id.len);

#undef ngx_http_apimon_lease_arg

    cv->ctx = ctx;
    cv->call = ngx_http_apimon_redis_script(amcf->batcher->script, argc,
                                            argv, argvlen, alcf->timeout,
                                            ngx_http_apimon_lease_carved, cv);
    if (cv->call == NULL) {
        ngx_free(cv);
        ngx_http_apimon_lease_fail(amcf, l);
        return NGX_DECLINED;
    }

    ngx_queue_insert_tail(&amcf->leaser->carves, &cv->queue);
    ctx->lease = cv;
    ctx->waiting = 1;

    /* notice a client that goes away while the carve is in flight */
    ctx->request->read_event_handler = ngx_http_test_reading;

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "apimon: carve %V of %ui calls", &cv->lease.id, k);

    return NGX_AGAIN;
}


/* the request is freed while its carve is in flight: the lease stays */

void
ngx_http_apimon_lease_detach(ngx_http_apimon_ctx_t *ctx)
{
    ngx_http_apimon_carve_t  *cv = ctx->lease;

    cv->ctx = NULL;
    ctx->lease = NULL;
}


static void
ngx_http_apimon_lease_carved(redisReply *reply, const char *err, void *data)
{
    ngx_http_apimon_carve_t *cv = data;

    ngx_uint_t                    sent;
    ngx_http_apimon_ctx_t        *ctx;
    ngx_http_apimon_main_conf_t  *amcf;

    amcf = ngx_http_cycle_get_module_main_conf(ngx_cycle,
                                               ngx_http_apimon_module);

    sent = (reply == NULL && ngx_http_apimon_redis_sent(cv->call));
    ctx = cv->ctx;
    ngx_queue_remove(&cv->queue);

    if (reply && (reply->type != REDIS_REPLY_ARRAY
                  || reply->elements != cv->lease.size))
    {
        if (reply->type == REDIS_REPLY_ERROR) {
            ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                          "apimon: the check script failed: %*s",
                          (size_t) reply->len, reply->str);
        } else {
            ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                          "apimon: unexpected reply from the check script");
        }

        reply = NULL;
    }

    if (reply == NULL) {
        if (err) {
            ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                          "apimon: lease carve failed: %s", err);
        }

        ngx_http_apimon_lease_fail(amcf, &cv->lease);

        if (sent) {
            /* it may have run: give every call back */
            cv->lease.ret_k = cv->lease.size;
            cv->lease.ret_keep = 0;
            cv->lease.ret_id = cv->lease.id;
            ngx_http_apimon_lease_return(&cv->lease);
        }

        if (ctx) {
            ctx->lease = NULL;
            ctx->result = NGX_HTTP_APIMON_REDIS_ERROR;
            ngx_http_apimon_resume(ctx);
        }

        ngx_free(cv);
        return;
    }

    ngx_http_apimon_lease_answer(cv, reply);
    ngx_free(cv);
}


/* the carve's reply: the lease into the zone, then the request resumed */

static void
ngx_http_apimon_lease_answer(ngx_http_apimon_carve_t *cv, redisReply *reply)
{
    ngx_uint_t                    i;
    redisReply                   *e;
    ngx_http_apimon_ctx_t        *ctx;
    ngx_http_apimon_lease_t      *l;
    ngx_http_apimon_main_conf_t  *amcf;

    amcf = ngx_http_cycle_get_module_main_conf(ngx_cycle,
                                               ngx_http_apimon_module);
    l = &cv->lease;
    ctx = cv->ctx;

    l->free = 0;
    l->ret_keep = 0;
    l->ret_k = l->size;
    l->ret_id = l->id;

    for (i = 0; i < reply->elements; i++) {
        e = reply->element[i];

        if (e->type == REDIS_REPLY_STRING && e->len > 8
            && ngx_strncmp(e->str, "allowed|", 8) == 0)
        {
            l->free |= (uint64_t) 1 << i;
        }
    }

    e = reply->element[0];
    l->size = 1;
    l->text_len = 0;

    if (e->type == REDIS_REPLY_STRING) {
        if (ctx) {
            ngx_http_apimon_check_result(ctx->request, ctx, (u_char *) e->str,
                                         e->len);

            if (ctx->result != NGX_HTTP_APIMON_REDIS_ERROR) {
                /* answered: it stays counted */
                l->ret_keep = 1;
            }
        }

        if ((l->free & 1) && e->len <= NGX_HTTP_APIMON_LEASE_TEXT_LEN) {
            l->text_len = e->len;
            ngx_memcpy(l->text, e->str, e->len);
            l->size = ngx_http_apimon_lease_size(amcf, l->text, l->text_len);
        }

    } else if (ctx) {
        ctx->result = NGX_HTTP_APIMON_REDIS_ERROR;
    }

    if (l->text_len == 0 || ngx_exiting) {
        /* no lease (refused, quitting): the entry is free again */
        ngx_http_apimon_lease_fail(amcf, l);
        ngx_http_apimon_lease_return(l);

    } else if (ngx_http_apimon_lease_grant(amcf, l) != NGX_OK) {
        /* the entry was given up or is gone: the rest goes back now */
        ngx_http_apimon_lease_return(l);
    }

    if (ctx) {
        ctx->lease = NULL;
        ngx_http_apimon_resume(ctx);
    }
}


/*
 * The next carve's size: a quarter of the fewest calls any window has
 * left (so that the hosts of a fleet share the end of a quota), at most
 * calls=, and 1 (per-request checks) near the end.
 */

static ngx_uint_t
ngx_http_apimon_lease_size(ngx_http_apimon_main_conf_t *amcf, u_char *p,
    size_t len)
{
    u_char      *last, *f;
    ngx_int_t    v;
    ngx_uint_t   n, min;

    last = p + len;
    min = amcf->lease_calls * 4;

    for (n = 0; p <= last; n++) {
        f = p;

        while (p < last && *p != '|') {
            p++;
        }

        /* each window's remaining: its 4th field */
        if (n >= NGX_HTTP_APIMON_CHECK_REPLY_HEAD
            && (n - NGX_HTTP_APIMON_CHECK_REPLY_HEAD)
               % NGX_HTTP_APIMON_CHECK_WINDOW_FIELDS == 3)
        {
            v = ngx_atoi(f, p - f);

            if (v >= 0 && (ngx_uint_t) v < min) {
                min = v;
            }
        }

        p++;
    }

    return ngx_max(ngx_min(min / 4, amcf->lease_calls), 1);
}


/*
 * What a lease did not answer goes back to Redis (check_refund).  A return
 * that gets no answer, or one Redis refuses for now, is kept by the worker
 * and sent again by its flush timer until the carve's record would be gone
 * (check_refund on a record deleted already changes nothing).
 */

static void
ngx_http_apimon_lease_return(ngx_http_apimon_lease_t *l)
{
    u_char                       *p, *colon, *last;
    ngx_uint_t                    i;
    ngx_http_apimon_lret_t       *rt;
    ngx_http_apimon_main_conf_t  *amcf;

    amcf = ngx_http_cycle_get_module_main_conf(ngx_cycle,
                                               ngx_http_apimon_module);

    /* the record's key: the id without its sequence number */
    last = l->ret_id.data + l->ret_id.len;
    colon = ngx_strlchr(l->ret_id.data, last, ':');
    colon = colon ? ngx_strlchr(colon + 1, last, ':') : NULL;

    if (colon == NULL) {
        return;
    }

    rt = ngx_alloc(sizeof(ngx_http_apimon_lret_t), ngx_cycle->log);
    if (rt == NULL) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "apimon: lease %V not returned: out of memory",
                      &l->ret_id);
        return;
    }

    p = rt->list;

    for (i = 0; i < l->ret_k; i++) {
        if (!(l->ret_keep & ((uint64_t) 1 << i))) {
            p = ngx_sprintf(p, "%s%ui", p == rt->list ? "" : ",", i + 1);
        }
    }

    rt->list_len = p - rt->list;

    if (rt->list_len == 0) {
        ngx_free(rt);
        return;
    }

    rt->key_len = ngx_sprintf(rt->key, "apimon:batch:%*s",
                              colon - l->ret_id.data, l->ret_id.data)
                  - rt->key;
    rt->id_len = l->ret_id.len;
    ngx_memcpy(rt->id, l->ret_id.data, l->ret_id.len);
    rt->until = ngx_current_msec + NGX_HTTP_APIMON_LEASE_RETURN_TTL;

    ngx_http_apimon_lease_send(amcf, rt);
}


static void
ngx_http_apimon_lease_send(ngx_http_apimon_main_conf_t *amcf,
    ngx_http_apimon_lret_t *rt)
{
    size_t       argvlen[NGX_HTTP_APIMON_REFUND_ARGS];
    const char  *argv[NGX_HTTP_APIMON_REFUND_ARGS];

    argv[0] = "1";
    argvlen[0] = 1;
    argv[1] = (const char *) rt->key;
    argvlen[1] = rt->key_len;
    argv[2] = (const char *) rt->id;
    argvlen[2] = rt->id_len;
    argv[3] = (const char *) rt->list;
    argvlen[3] = rt->list_len;

    ngx_log_debug4(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "apimon: lease %*s returns %*s", rt->id_len, rt->id,
                   rt->list_len, rt->list);

    if (ngx_http_apimon_redis_script(amcf->batcher->refund,
                                     NGX_HTTP_APIMON_REFUND_ARGS, argv,
                                     argvlen, 0,
                                     ngx_http_apimon_lease_returned, rt)
        == NULL)
    {
        ngx_queue_insert_tail(&amcf->leaser->retry, &rt->queue);
    }
}


static void
ngx_http_apimon_lease_returned(redisReply *reply, const char *err,
    void *data)
{
    ngx_http_apimon_lret_t *rt = data;

    ngx_http_apimon_main_conf_t  *amcf;

    amcf = ngx_http_cycle_get_module_main_conf(ngx_cycle,
                                               ngx_http_apimon_module);

    if (reply == NULL
        || (reply->type == REDIS_REPLY_ERROR
            && ngx_http_apimon_refund_transient(reply)))
    {
        if ((ngx_msec_int_t) (rt->until - ngx_current_msec) > 0) {
            ngx_log_debug2(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                           "apimon: lease %*s return deferred",
                           rt->id_len, rt->id);
            ngx_queue_insert_tail(&amcf->leaser->retry, &rt->queue);
            return;
        }

        /* its unused calls stay counted */
        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "apimon: lease %*s was not returned: %s", rt->id_len,
                      rt->id, err ? err : "redis refused it");

    } else if (reply->type == REDIS_REPLY_ERROR) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "apimon: lease %*s was not returned: %*s", rt->id_len,
                      rt->id, (size_t) reply->len, reply->str);
    }

    ngx_free(rt);
}


/* the returns kept: sent again while the connection is up */

static void
ngx_http_apimon_lease_retry(ngx_http_apimon_main_conf_t *amcf)
{
    ngx_queue_t              *q, todo;
    ngx_http_apimon_lret_t   *rt;

    if (ngx_queue_empty(&amcf->leaser->retry)
        || ngx_http_apimon_redis_ready() != NGX_OK)
    {
        return;
    }

    /* a failure puts it back on the list: send each once */
    todo = amcf->leaser->retry;
    todo.next->prev = &todo;
    todo.prev->next = &todo;
    ngx_queue_init(&amcf->leaser->retry);

    while (!ngx_queue_empty(&todo)) {
        q = ngx_queue_head(&todo);
        ngx_queue_remove(q);
        rt = ngx_queue_data(q, ngx_http_apimon_lret_t, queue);
        ngx_http_apimon_lease_send(amcf, rt);
    }
}


/* each worker: the flush timer, and its name in lease ids */

ngx_int_t
ngx_http_apimon_lease_init_process(ngx_cycle_t *cycle,
    ngx_http_apimon_main_conf_t *amcf)
{
    ngx_http_apimon_leaser_t  *ls;

    if (amcf == NULL || amcf->lease_zone == NULL) {
        return NGX_OK;
    }

    ls = amcf->leaser;

    ls->worker_len = ngx_sprintf(ls->worker, "%P.%xT.%xi", ngx_pid,
                                 ngx_time(), (ngx_uint_t) ngx_random())
                     - ls->worker;
    ls->dummy.fd = (ngx_socket_t) -1;
    ls->flush.handler = ngx_http_apimon_lease_flush;
    ls->flush.data = &ls->dummy;
    ls->flush.log = cycle->log;
    ngx_queue_init(&ls->retry);
    ngx_queue_init(&ls->carves);

    /* not cancelable: a quitting worker returns its leases first */
    ngx_add_timer(&ls->flush, amcf->lease_flush);

    return NGX_OK;
}


static void
ngx_http_apimon_lease_flush(ngx_event_t *ev)
{
    ngx_http_apimon_main_conf_t  *amcf;
    ngx_http_apimon_leaser_t     *ls;

    amcf = ngx_http_cycle_get_module_main_conf(ngx_cycle,
                                               ngx_http_apimon_module);
    ls = amcf->leaser;

    ngx_http_apimon_lease_retry(amcf);

    if (ngx_terminate) {
        return;
    }

    if (!ngx_exiting && !ngx_quit) {
        ngx_http_apimon_lease_expire(amcf, 0, ngx_http_apimon_lease_return);
        ngx_add_timer(ev, amcf->lease_flush);
        return;
    }

    /* quitting: every lease of the zone, then the returns kept, a while */
    if (!ls->quitting) {
        ls->quitting = 1;
        ls->quit_until = ngx_current_msec + NGX_HTTP_APIMON_LEASE_QUIT_WAIT;
        ngx_http_apimon_lease_expire(amcf, 1, ngx_http_apimon_lease_return);
    }

    if (!ngx_queue_empty(&ls->retry)
        && (ngx_msec_int_t) (ls->quit_until - ngx_current_msec) > 0)
    {
        ngx_add_timer(ev, amcf->lease_flush);
    }
}


/* exit_process: the transport forgets the calls out, free what they held */

void
ngx_http_apimon_lease_exit(ngx_http_apimon_main_conf_t *amcf)
{
    ngx_queue_t               *q;
    ngx_http_apimon_leaser_t  *ls;

    ls = amcf->leaser;

    if (ls == NULL || ls->worker_len == 0) {
        return;
    }

    if (ls->flush.timer_set) {
        ngx_del_timer(&ls->flush);
    }

    while (!ngx_queue_empty(&ls->retry)) {
        q = ngx_queue_head(&ls->retry);
        ngx_queue_remove(q);
        ngx_free(ngx_queue_data(q, ngx_http_apimon_lret_t, queue));
    }

    while (!ngx_queue_empty(&ls->carves)) {
        q = ngx_queue_head(&ls->carves);
        ngx_queue_remove(q);
        ngx_free(ngx_queue_data(q, ngx_http_apimon_carve_t, queue));
    }
}
