/*
 * The Redis transport: calls.  A call is written on the ready connection, or
 * waits for it while it connects (see ngx_http_apimon_redis.h for the
 * states); a script is sent as EVALSHA and again as EVAL on NOSCRIPT; an
 * nginx timer bounds the wait for its reply.  The compiled-in scripts live
 * here, and only here.
 */


#include "ngx_http_apimon_redis.h"
#include "ngx_http_apimon_metrics.h"

#include "ngx_http_apimon_scripts.h"


static ngx_http_apimon_redis_call_t *ngx_http_apimon_redis_submit(
    ngx_int_t script, int argc, const char **argv, const size_t *argvlen,
    ngx_msec_t timeout, ngx_http_apimon_redis_handler_pt handler, void *data);
static void ngx_http_apimon_redis_reply(redisAsyncContext *ac, void *r,
    void *privdata);
static void ngx_http_apimon_redis_call_event(ngx_event_t *ev);
static void ngx_http_apimon_redis_finish(ngx_http_apimon_redis_call_t *call,
    redisReply *reply, const char *err);
static void ngx_http_apimon_redis_free(ngx_http_apimon_redis_call_t *call);


/* public interface */

ngx_int_t
ngx_http_apimon_redis_script_index(const char *name)
{
    ngx_uint_t  i;

    for (i = 0; i < APIMON_SCRIPT_COUNT; i++) {
        if (ngx_strcmp(apimon_scripts[i].name, name) == 0) {
            return (ngx_int_t) i;
        }
    }

    return NGX_ERROR;
}


ngx_http_apimon_redis_call_t *
ngx_http_apimon_redis_script(ngx_uint_t script, int argc, const char **argv,
    const size_t *argvlen, ngx_msec_t timeout,
    ngx_http_apimon_redis_handler_pt handler, void *data)
{
    if (script >= APIMON_SCRIPT_COUNT) {
        ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, 0,
                      "apimon: no script #%ui", script);
        return NULL;
    }

    return ngx_http_apimon_redis_submit((ngx_int_t) script, argc, argv,
                                        argvlen, timeout, handler, data);
}


ngx_http_apimon_redis_call_t *
ngx_http_apimon_redis_command(int argc, const char **argv,
    const size_t *argvlen, ngx_msec_t timeout,
    ngx_http_apimon_redis_handler_pt handler, void *data)
{
    return ngx_http_apimon_redis_submit(-1, argc, argv, argvlen, timeout,
                                        handler, data);
}


void
ngx_http_apimon_redis_cancel(ngx_http_apimon_redis_call_t *call)
{
    if (call == NULL || call->finished) {
        return;
    }

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "apimon redis: cancel call %p", call);

    call->finished = 1;

    if (call->event.timer_set) {
        ngx_del_timer(&call->event);
    }

    if (call->event.posted) {
        ngx_delete_posted_event(&call->event);
    }

    if (call->queued) {
        ngx_queue_remove(&call->wait);
        call->queued = 0;
    }

    if (call->in_redis == 0) {
        ngx_http_apimon_redis_free(call);
    }
}


ngx_uint_t
ngx_http_apimon_redis_sent(ngx_http_apimon_redis_call_t *call)
{
    return call->sent;
}


/* calls */

static ngx_http_apimon_redis_call_t *
ngx_http_apimon_redis_submit(ngx_int_t script, int argc, const char **argv,
    const size_t *argvlen, ngx_msec_t timeout,
    ngx_http_apimon_redis_handler_pt handler, void *data)
{
    int                            i, extra, n;
    size_t                         size;
    u_char                        *p;
    ngx_http_apimon_redis_t       *rs;
    ngx_http_apimon_redis_call_t  *call;

    rs = ngx_http_apimon_redis_get();

    extra = (script >= 0) ? 2 : 0;
    n = argc + extra;

    size = sizeof(ngx_http_apimon_redis_call_t)
           + n * (sizeof(char *) + sizeof(size_t));

    for (i = 0; i < argc; i++) {
        size += argvlen[i];
    }

    call = ngx_alloc(size, ngx_cycle->log);
    if (call == NULL) {
        return NULL;
    }

    ngx_memzero(call, sizeof(ngx_http_apimon_redis_call_t));

    call->handler = handler;
    call->data = data;
    call->script = script;
    call->argc = n;
    call->argv = (const char **) (call + 1);
    call->argvlen = (size_t *) (call->argv + n);

    p = (u_char *) (call->argvlen + n);

    for (i = 0; i < argc; i++) {
        call->argv[extra + i] = (const char *) p;
        call->argvlen[extra + i] = argvlen[i];
        p = ngx_cpymem(p, argv[i], argvlen[i]);
    }

    call->event.handler = ngx_http_apimon_redis_call_event;
    call->event.data = &rs->dummy;
    call->event.log = ngx_cycle->log;

    ngx_queue_insert_tail(&rs->calls, &call->all);

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "apimon redis: call %p, script:%i, state:%ui",
                   call, script, rs->state);

    if (!rs->amcf->configured || rs->exiting) {
        ngx_http_apimon_redis_fail(call, "apimon_redis is not configured");
        return call;
    }

    switch (rs->state) {

    case NGX_HTTP_APIMON_REDIS_READY:
        if (ngx_http_apimon_redis_send(call, 0) != NGX_OK) {
            ngx_http_apimon_redis_fail(call, "redis unavailable");
            return call;
        }
        break;

    case NGX_HTTP_APIMON_REDIS_CONNECTING:
        if (rs->failures == 0) {
            ngx_queue_insert_tail(&rs->waiting, &call->wait);
            call->queued = 1;
            break;
        }

        /* fall through */

    default:
        ngx_http_apimon_redis_fail(call, "redis unavailable");
        return call;
    }

    ngx_add_timer(&call->event, timeout ? timeout
                                        : NGX_HTTP_APIMON_DEFAULT_TIMEOUT);

    return call;
}


ngx_int_t
ngx_http_apimon_redis_send(ngx_http_apimon_redis_call_t *call,
    ngx_uint_t eval)
{
    const apimon_script_t    *script;
    ngx_http_apimon_redis_t  *rs;

    rs = ngx_http_apimon_redis_get();

    if (rs->ac == NULL || rs->state != NGX_HTTP_APIMON_REDIS_READY) {
        return NGX_ERROR;
    }

    if (call->script >= 0) {
        script = &apimon_scripts[call->script];

        if (eval) {
            call->argv[0] = "EVAL";
            call->argvlen[0] = 4;
            call->argv[1] = script->text;
            call->argvlen[1] = script->len;

        } else {
            call->argv[0] = "EVALSHA";
            call->argvlen[0] = 7;
            call->argv[1] = script->sha1;
            call->argvlen[1] = 40;
        }
    }

    if (redisAsyncCommandArgv(rs->ac, ngx_http_apimon_redis_reply, call,
                              call->argc, call->argv, call->argvlen)
        != REDIS_OK)
    {
        return NGX_ERROR;
    }

    call->in_redis++;
    call->sent = 1;
    call->sent_at = ngx_http_apimon_metrics_usec();

    return NGX_OK;
}


static void
ngx_http_apimon_redis_reply(redisAsyncContext *ac, void *r, void *privdata)
{
    redisReply                    *reply;
    ngx_http_apimon_redis_t       *rs;
    ngx_http_apimon_redis_call_t  *call;

    rs = ngx_http_apimon_redis_get();
    call = privdata;
    reply = r;

    call->in_redis--;

    if (call->finished) {
        if (call->in_redis == 0) {
            ngx_http_apimon_redis_free(call);
        }

        return;
    }

    if (reply == NULL) {
        ngx_http_apimon_redis_fail(call, "redis connection lost");
        return;
    }

    if (call->script >= 0
        && reply->type == REDIS_REPLY_ERROR
        && reply->len >= 8
        && ngx_strncmp(reply->str, "NOSCRIPT", 8) == 0)
    {
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, rs->log, 0,
                       "apimon redis: NOSCRIPT, resending call %p as EVAL",
                       call);

        if (ac == rs->ac && ngx_http_apimon_redis_send(call, 1) == NGX_OK) {
            return;
        }

        ngx_http_apimon_redis_fail(call, "redis connection lost");
        return;
    }

    ngx_http_apimon_metrics_redis_time(ngx_http_apimon_metrics_usec()
                                       - call->sent_at);

    ngx_http_apimon_redis_finish(call, reply, NULL);
}


/* the call's event: its timeout, or a failure posted by fail() */

static void
ngx_http_apimon_redis_call_event(ngx_event_t *ev)
{
    ngx_uint_t                     sent;
    ngx_http_apimon_redis_t       *rs;
    ngx_http_apimon_redis_call_t  *call;

    rs = ngx_http_apimon_redis_get();
    call = (ngx_http_apimon_redis_call_t *)
               ((u_char *) ev - offsetof(ngx_http_apimon_redis_call_t, event));

    if (!ev->timedout) {
        ngx_http_apimon_redis_finish(call, NULL, call->err);
        return;
    }

    ev->timedout = 0;

    if (call->queued) {
        ngx_queue_remove(&call->wait);
        call->queued = 0;
    }

    sent = (call->in_redis > 0);

    ngx_http_apimon_redis_finish(call, NULL, "redis timeout");

    if (sent && rs->state == NGX_HTTP_APIMON_REDIS_READY) {
        ngx_http_apimon_redis_trouble("timed out",
                                      "no reply in time, connection closed");

        ngx_http_apimon_redis_drop();
    }
}


void
ngx_http_apimon_redis_fail(ngx_http_apimon_redis_call_t *call,
    const char *err)
{
    if (call->finished || call->event.posted) {
        return;
    }

    if (call->event.timer_set) {
        ngx_del_timer(&call->event);
    }

    if (call->queued) {
        ngx_queue_remove(&call->wait);
        call->queued = 0;
    }

    call->err = err;
    call->event.timedout = 0;

    ngx_post_event(&call->event, &ngx_posted_events);
}


static void
ngx_http_apimon_redis_finish(ngx_http_apimon_redis_call_t *call,
    redisReply *reply, const char *err)
{
    if (call->finished) {
        return;
    }

    call->finished = 1;

    if (call->event.timer_set) {
        ngx_del_timer(&call->event);
    }

    if (call->event.posted) {
        ngx_delete_posted_event(&call->event);
    }

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "apimon redis: call %p done: %s",
                   call, err ? err : "reply");

    if (call->handler) {
        call->handler(reply, err, call->data);
    }

    if (call->in_redis == 0) {
        ngx_http_apimon_redis_free(call);
    }
}


static void
ngx_http_apimon_redis_free(ngx_http_apimon_redis_call_t *call)
{
    ngx_queue_remove(&call->all);
    ngx_free(call);
}


/*
 * The calls waiting for the connection: sent now that it is ready (err is
 * NULL), or failed with err.
 */

void
ngx_http_apimon_redis_release_waiting(const char *err)
{
    ngx_queue_t                   *q;
    ngx_http_apimon_redis_t       *rs;
    ngx_http_apimon_redis_call_t  *call;

    rs = ngx_http_apimon_redis_get();

    while (!ngx_queue_empty(&rs->waiting)) {
        q = ngx_queue_head(&rs->waiting);
        call = ngx_queue_data(q, ngx_http_apimon_redis_call_t, wait);

        ngx_queue_remove(q);
        call->queued = 0;

        if (err == NULL && ngx_http_apimon_redis_send(call, 0) == NGX_OK) {
            continue;
        }

        ngx_http_apimon_redis_fail(call, err ? err : "redis connection lost");
    }
}


/* the compiled-in scripts, loaded by the handshake of each connection */

ngx_uint_t
ngx_http_apimon_redis_load_scripts(redisAsyncContext *ac, redisCallbackFn *fn)
{
    ngx_uint_t   i, n;
    const char  *argv[3];
    size_t       argvlen[3];

    argv[0] = "SCRIPT";
    argvlen[0] = 6;
    argv[1] = "LOAD";
    argvlen[1] = 4;

    n = 0;

    for (i = 0; i < APIMON_SCRIPT_COUNT; i++) {
        argv[2] = apimon_scripts[i].text;
        argvlen[2] = apimon_scripts[i].len;

        if (redisAsyncCommandArgv(ac, fn, (void *) (intptr_t) i, 3, argv,
                                  argvlen)
            == REDIS_OK)
        {
            n++;
        }
    }

    return n;
}


void
ngx_http_apimon_redis_script_loaded(ngx_uint_t i, redisReply *reply,
    ngx_log_t *log)
{
    const apimon_script_t  *script;

    script = &apimon_scripts[i];

    if (reply->type == REDIS_REPLY_ERROR) {
        /* EVALSHA will then fall back to EVAL and report the error */
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "apimon: redis could not load script \"%s\": %*s",
                      script->name, (size_t) reply->len, reply->str);

    } else if (reply->type != REDIS_REPLY_STRING
               || reply->len != 40
               || ngx_strncmp(reply->str, script->sha1, 40) != 0)
    {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "apimon: redis loaded script \"%s\" under another "
                      "SHA1 than %s", script->name, script->sha1);
    }
}
