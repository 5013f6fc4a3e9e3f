/*
 * The Redis transport: one hiredis async connection per worker process,
 * driven by nginx's event loop.
 *
 * States:
 *
 *   idle        no connection; the reconnect timer is armed (backoff).  New
 *               calls fail at once: this is the circuit breaker that keeps
 *               requests from each waiting out a timeout while Redis is down.
 *   connecting  a connection and its handshake (AUTH, SELECT, SCRIPT LOAD of
 *               every compiled-in script) are under way.  Calls wait in a
 *               queue, but only on a first attempt (at start, or right after
 *               a healthy connection closed); after a failed attempt they
 *               fail at once, until the connection is ready again.
 *   ready       calls are pipelined on the connection.
 *
 * A command that times out closes the connection (a frozen Redis would
 * otherwise make every request wait); every call still pending on it fails
 * with "connection lost".  hiredis 0.14 has no timeouts, so connect and
 * command timeouts are nginx timers.
 */


#include "ngx_http_apimon.h"

#include <hiredis/async.h>

#include "ngx_http_apimon_scripts.h"


#define NGX_HTTP_APIMON_REDIS_IDLE        0
#define NGX_HTTP_APIMON_REDIS_CONNECTING  1
#define NGX_HTTP_APIMON_REDIS_READY       2

#define NGX_HTTP_APIMON_BACKOFF_MIN       50       /* ms */
#define NGX_HTTP_APIMON_BACKOFF_MAX       2000     /* ms */

#define NGX_HTTP_APIMON_HS_AUTH           -1
#define NGX_HTTP_APIMON_HS_SELECT         -2


struct ngx_http_apimon_redis_call_s {
    ngx_queue_t                        all;        /* every live call */
    ngx_queue_t                        wait;       /* until connected */
    ngx_event_t                        event;      /* timeout, or failure */

    ngx_http_apimon_redis_handler_pt   handler;
    void                              *data;
    const char                        *err;

    ngx_int_t                          script;     /* -1: plain command */
    int                                argc;
    const char                       **argv;
    size_t                            *argvlen;

    ngx_uint_t                         in_redis;   /* hiredis callbacks due */

    unsigned                           queued:1;
    unsigned                           finished:1;
    unsigned                           sent:1;
};


struct ngx_http_apimon_redis_s {
    ngx_http_apimon_main_conf_t       *amcf;
    ngx_log_t                         *log;
    redisAsyncContext                 *ac;
    ngx_uint_t                         state;
    ngx_uint_t                         handshake;  /* replies still due */
    ngx_uint_t                         failures;   /* since last ready */
    ngx_msec_t                         backoff;

    ngx_event_t                        connect_timer;
    ngx_event_t                        reconnect_timer;
    ngx_event_t                        flush;      /* posted: write commands */

    /* timer events' data must look like a connection (debug logging) */
    ngx_connection_t                   dummy;

    ngx_queue_t                        calls;
    ngx_queue_t                        waiting;

    unsigned                           initialized:1;
    unsigned                           exiting:1;
    unsigned                           flushing:1;
};


static ngx_http_apimon_redis_t *ngx_http_apimon_redis_get(void);
static void ngx_http_apimon_redis_connect(void);
static void ngx_http_apimon_redis_handshake(redisAsyncContext *ac);
static void ngx_http_apimon_redis_handshake_reply(redisAsyncContext *ac,
    void *r, void *privdata);
static void ngx_http_apimon_redis_ready_state(void);
static void ngx_http_apimon_redis_persistence(redisAsyncContext *ac);
static void ngx_http_apimon_redis_persistence_reply(redisAsyncContext *ac,
    void *r, void *privdata);
static void ngx_http_apimon_redis_lost(ngx_uint_t failed);
static void ngx_http_apimon_redis_drop(void);
static void ngx_http_apimon_redis_on_connect(const redisAsyncContext *ac,
    int status);
static void ngx_http_apimon_redis_on_disconnect(const redisAsyncContext *ac,
    int status);
static void ngx_http_apimon_redis_connect_timeout(ngx_event_t *ev);
static void ngx_http_apimon_redis_reconnect(ngx_event_t *ev);

static void ngx_http_apimon_redis_event(ngx_event_t *ev, ngx_int_t event,
    ngx_uint_t on);
static void ngx_http_apimon_redis_add_read(void *privdata);
static void ngx_http_apimon_redis_del_read(void *privdata);
static void ngx_http_apimon_redis_add_write(void *privdata);
static void ngx_http_apimon_redis_del_write(void *privdata);
static void ngx_http_apimon_redis_cleanup(void *privdata);
static void ngx_http_apimon_redis_flush(ngx_event_t *ev);
static void ngx_http_apimon_redis_read_handler(ngx_event_t *rev);
static void ngx_http_apimon_redis_write_handler(ngx_event_t *wev);

static ngx_http_apimon_redis_call_t *ngx_http_apimon_redis_submit(
    ngx_int_t script, int argc, const char **argv, const size_t *argvlen,
    ngx_msec_t timeout, ngx_http_apimon_redis_handler_pt handler, void *data);
static ngx_int_t ngx_http_apimon_redis_send(ngx_http_apimon_redis_call_t *call,
    ngx_uint_t eval);
static void ngx_http_apimon_redis_reply(redisAsyncContext *ac, void *r,
    void *privdata);
static void ngx_http_apimon_redis_call_event(ngx_event_t *ev);
static void ngx_http_apimon_redis_fail(ngx_http_apimon_redis_call_t *call,
    const char *err);
static void ngx_http_apimon_redis_finish(ngx_http_apimon_redis_call_t *call,
    redisReply *reply, const char *err);
static void ngx_http_apimon_redis_free(ngx_http_apimon_redis_call_t *call);
static void ngx_http_apimon_redis_fail_waiting(const char *err);




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


ngx_http_apimon_redis_t *
ngx_http_apimon_redis_create(ngx_conf_t *cf)
{
    return ngx_pcalloc(cf->pool, sizeof(ngx_http_apimon_redis_t));
}


/* the worker's state, kept with the http{} configuration */

static ngx_http_apimon_redis_t *
ngx_http_apimon_redis_get(void)
{
    ngx_http_apimon_main_conf_t  *amcf;

    amcf = ngx_http_cycle_get_module_main_conf(ngx_cycle,
                                               ngx_http_apimon_module);

    return amcf->redis;
}


ngx_int_t
ngx_http_apimon_redis_ready(void)
{
    return ngx_http_apimon_redis_get()->state == NGX_HTTP_APIMON_REDIS_READY
           ? NGX_OK : NGX_DECLINED;
}


ngx_int_t
ngx_http_apimon_redis_init_process(ngx_cycle_t *cycle,
    ngx_http_apimon_main_conf_t *amcf)
{
    ngx_http_apimon_redis_t  *rs;

    if (amcf == NULL) {
        /* no http{} block */
        return NGX_OK;
    }

    rs = amcf->redis;

    ngx_memzero(rs, sizeof(ngx_http_apimon_redis_t));

    rs->amcf = amcf;
    rs->log = cycle->log;
    rs->backoff = NGX_HTTP_APIMON_BACKOFF_MIN;

    rs->dummy.fd = (ngx_socket_t) -1;

    rs->connect_timer.handler = ngx_http_apimon_redis_connect_timeout;
    rs->connect_timer.data = &rs->dummy;
    rs->connect_timer.log = cycle->log;
    rs->connect_timer.cancelable = 1;

    rs->flush.handler = ngx_http_apimon_redis_flush;
    rs->flush.data = &rs->dummy;
    rs->flush.log = cycle->log;

    rs->reconnect_timer.handler = ngx_http_apimon_redis_reconnect;
    rs->reconnect_timer.data = &rs->dummy;
    rs->reconnect_timer.log = cycle->log;
    rs->reconnect_timer.cancelable = 1;

    ngx_queue_init(&rs->calls);
    ngx_queue_init(&rs->waiting);

    rs->initialized = 1;

    if (!amcf->configured) {
        return NGX_OK;
    }

    ngx_http_apimon_redis_connect();

    return NGX_OK;
}


void
ngx_http_apimon_redis_exit_process(ngx_cycle_t *cycle)
{
    ngx_queue_t                   *q;
    redisAsyncContext             *ac;
    ngx_http_apimon_redis_t       *rs;
    ngx_http_apimon_redis_call_t  *call;

    if (ngx_get_conf(cycle->conf_ctx, ngx_http_module) == NULL) {
        return;
    }

    rs = ngx_http_apimon_redis_get();

    if (!rs->initialized) {
        return;
    }

    rs->exiting = 1;

    if (rs->connect_timer.timer_set) {
        ngx_del_timer(&rs->connect_timer);
    }

    if (rs->reconnect_timer.timer_set) {
        ngx_del_timer(&rs->reconnect_timer);
    }

    if (rs->flush.posted) {
        ngx_delete_posted_event(&rs->flush);
    }

    /* the requests are gone: forget every call without running handlers */

    q = ngx_queue_head(&rs->calls);

    while (q != ngx_queue_sentinel(&rs->calls)) {
        call = ngx_queue_data(q, ngx_http_apimon_redis_call_t, all);
        q = ngx_queue_next(q);

        call->finished = 1;
        call->handler = NULL;

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

    ac = rs->ac;

    if (ac) {
        rs->ac = NULL;
        rs->state = NGX_HTTP_APIMON_REDIS_IDLE;

        /* runs the remaining callbacks (they free their calls), then cleanup */
        redisAsyncFree(ac);
    }
}


/* connection management */

static void
ngx_http_apimon_redis_connect(void)
{
    ngx_connection_t             *c;
    redisAsyncContext            *ac;
    ngx_http_apimon_redis_t      *rs;
    ngx_http_apimon_main_conf_t  *amcf;

    rs = ngx_http_apimon_redis_get();
    amcf = rs->amcf;

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, rs->log, 0,
                   "apimon redis: connecting to %V", &amcf->redis_addr);

    if (amcf->redis_unix.len) {
        ac = redisAsyncConnectUnix((const char *) amcf->redis_unix.data);

    } else {
        /* a numeric address: no resolver call, so this does not block */
        ac = redisAsyncConnect((const char *) amcf->redis_host.data,
                               (int) amcf->redis_port);
    }

    if (ac == NULL) {
        ngx_log_error(NGX_LOG_ERR, rs->log, 0,
                      "apimon: could not allocate a redis context");
        ngx_http_apimon_redis_lost(1);
        return;
    }

    if (ac->err) {
        ngx_log_error(NGX_LOG_ERR, rs->log, 0,
                      "apimon: could not connect to redis at %V: %s",
                      &amcf->redis_addr, ac->errstr);
        redisAsyncFree(ac);
        ngx_http_apimon_redis_lost(1);
        return;
    }

    c = ngx_get_connection(ac->c.fd, rs->log);

    if (c == NULL) {
        redisAsyncFree(ac);
        ngx_http_apimon_redis_lost(1);
        return;
    }

    c->data = ac;
    c->log = rs->log;
    c->read->log = rs->log;
    c->write->log = rs->log;
    c->read->handler = ngx_http_apimon_redis_read_handler;
    c->write->handler = ngx_http_apimon_redis_write_handler;
    c->number = ngx_atomic_fetch_add(ngx_connection_counter, 1);

    ac->ev.data = c;
    ac->ev.addRead = ngx_http_apimon_redis_add_read;
    ac->ev.delRead = ngx_http_apimon_redis_del_read;
    ac->ev.addWrite = ngx_http_apimon_redis_add_write;
    ac->ev.delWrite = ngx_http_apimon_redis_del_write;
    ac->ev.cleanup = ngx_http_apimon_redis_cleanup;

    redisAsyncSetConnectCallback(ac, ngx_http_apimon_redis_on_connect);
    redisAsyncSetDisconnectCallback(ac, ngx_http_apimon_redis_on_disconnect);

    rs->ac = ac;
    rs->state = NGX_HTTP_APIMON_REDIS_CONNECTING;

    ngx_add_timer(&rs->connect_timer, amcf->connect_timeout);

    /* queued before the connect completes; hiredis writes them when it does */
    ngx_http_apimon_redis_handshake(ac);
}


static void
ngx_http_apimon_redis_handshake(redisAsyncContext *ac)
{
    int                           argc;
    ngx_uint_t                    i;
    const char                   *argv[3];
    size_t                        argvlen[3];
    u_char                        db[NGX_INT_T_LEN];
    ngx_http_apimon_redis_t      *rs;
    ngx_http_apimon_main_conf_t  *amcf;

    rs = ngx_http_apimon_redis_get();
    amcf = rs->amcf;

    rs->handshake = 0;

    if (amcf->redis_password.len) {
        argv[0] = "AUTH";
        argvlen[0] = 4;
        argv[1] = (const char *) amcf->redis_password.data;
        argvlen[1] = amcf->redis_password.len;
        argc = 2;

        if (redisAsyncCommandArgv(ac, ngx_http_apimon_redis_handshake_reply,
                                  (void *) NGX_HTTP_APIMON_HS_AUTH,
                                  argc, argv, argvlen)
            == REDIS_OK)
        {
            rs->handshake++;
        }
    }

    if (amcf->redis_db > 0) {
        argv[0] = "SELECT";
        argvlen[0] = 6;
        argv[1] = (const char *) db;
        argvlen[1] = ngx_sprintf(db, "%i", amcf->redis_db) - db;
        argc = 2;

        if (redisAsyncCommandArgv(ac, ngx_http_apimon_redis_handshake_reply,
                                  (void *) NGX_HTTP_APIMON_HS_SELECT,
                                  argc, argv, argvlen)
            == REDIS_OK)
        {
            rs->handshake++;
        }
    }

    for (i = 0; i < APIMON_SCRIPT_COUNT; i++) {
        argv[0] = "SCRIPT";
        argvlen[0] = 6;
        argv[1] = "LOAD";
        argvlen[1] = 4;
        argv[2] = apimon_scripts[i].text;
        argvlen[2] = apimon_scripts[i].len;

        if (redisAsyncCommandArgv(ac, ngx_http_apimon_redis_handshake_reply,
                                  (void *) (intptr_t) i, 3, argv, argvlen)
            == REDIS_OK)
        {
            rs->handshake++;
        }
    }

    ngx_http_apimon_redis_persistence(ac);

    if (rs->handshake == 0) {
        /* nothing to send: ping, so that the connect is noticed */
        argv[0] = "PING";
        argvlen[0] = 4;

        if (redisAsyncCommandArgv(ac, ngx_http_apimon_redis_handshake_reply,
                                  (void *) NGX_HTTP_APIMON_HS_SELECT,
                                  1, argv, argvlen)
            == REDIS_OK)
        {
            rs->handshake++;
        }
    }
}


static void
ngx_http_apimon_redis_handshake_reply(redisAsyncContext *ac, void *r,
    void *privdata)
{
    intptr_t                  what;
    redisReply               *reply;
    const apimon_script_t    *script;
    ngx_http_apimon_redis_t  *rs;

    rs = ngx_http_apimon_redis_get();
    reply = r;
    what = (intptr_t) privdata;

    if (ac != rs->ac || rs->state != NGX_HTTP_APIMON_REDIS_CONNECTING) {
        /* a stale connection going away */
        return;
    }

    if (reply == NULL) {
        /* the connection is closing: on_connect/on_disconnect say why */
        return;
    }

    if (what < 0) {
        if (reply->type == REDIS_REPLY_ERROR) {
            ngx_log_error(NGX_LOG_ERR, rs->log, 0,
                          "apimon: redis at %V refused %s: %*s",
                          &rs->amcf->redis_addr,
                          what == NGX_HTTP_APIMON_HS_AUTH ? "AUTH" : "SELECT",
                          (size_t) reply->len, reply->str);
            ngx_http_apimon_redis_drop();
            return;
        }

    } else {
        script = &apimon_scripts[what];

        if (reply->type == REDIS_REPLY_ERROR) {
            /* EVALSHA will then fall back to EVAL and report the error */
            ngx_log_error(NGX_LOG_ERR, rs->log, 0,
                          "apimon: redis could not load script \"%s\": %*s",
                          script->name, (size_t) reply->len, reply->str);

        } else if (reply->type != REDIS_REPLY_STRING
                   || reply->len != 40
                   || ngx_strncmp(reply->str, script->sha1, 40) != 0)
        {
            ngx_log_error(NGX_LOG_ERR, rs->log, 0,
                          "apimon: redis loaded script \"%s\" under another "
                          "SHA1 than %s", script->name, script->sha1);
        }
    }

    if (--rs->handshake == 0) {
        ngx_http_apimon_redis_ready_state();
    }
}


/*
 * Usage counts and quotas survive a Redis crash only with an append-only
 * file synced every second and no eviction.  One warning per connection
 * when CONFIG GET shows otherwise, one notice when CONFIG is refused
 * (managed Redis).  The replies are not part of the handshake: nothing
 * waits for them.
 */

typedef struct {
    ngx_uint_t   due;          /* replies still to come */
    ngx_uint_t   denied;
    u_char      *last;
    u_char       found[256];   /* "appendonly \"no\", ..." */
} ngx_http_apimon_redis_persist_t;


static const char  *ngx_http_apimon_redis_persist_rules[][3] = {
    /* setting, accepted values */
    { "appendonly", "yes", NULL },
    { "appendfsync", "everysec", "always" },
    { "maxmemory-policy", "noeviction", NULL },
};


static void
ngx_http_apimon_redis_persistence(redisAsyncContext *ac)
{
    ngx_uint_t                        i;
    const char                       *argv[3];
    size_t                            argvlen[3];
    ngx_http_apimon_redis_t          *rs;
    ngx_http_apimon_redis_persist_t  *ps;

    rs = ngx_http_apimon_redis_get();

    ps = ngx_calloc(sizeof(ngx_http_apimon_redis_persist_t), rs->log);
    if (ps == NULL) {
        return;
    }

    ps->last = ps->found;

    for (i = 0; i < 3; i++) {
        argv[0] = "CONFIG";
        argvlen[0] = 6;
        argv[1] = "GET";
        argvlen[1] = 3;
        argv[2] = ngx_http_apimon_redis_persist_rules[i][0];
        argvlen[2] = ngx_strlen(argv[2]);

        if (redisAsyncCommandArgv(ac, ngx_http_apimon_redis_persistence_reply,
                                  ps, 3, argv, argvlen)
            == REDIS_OK)
        {
            ps->due++;
        }
    }

    if (ps->due == 0) {
        ngx_free(ps);
    }
}


static void
ngx_http_apimon_redis_persistence_reply(redisAsyncContext *ac, void *r,
    void *privdata)
{
    ngx_uint_t                        i;
    redisReply                       *reply, *name, *value;
    const char                      **rule;
    ngx_http_apimon_redis_t          *rs;
    ngx_http_apimon_redis_persist_t  *ps;

    rs = ngx_http_apimon_redis_get();
    reply = r;
    ps = privdata;

    /* NULL: the connection is closing, its reason is logged elsewhere */
    if (reply != NULL && ac == rs->ac) {

        if (reply->type == REDIS_REPLY_ERROR) {
            if (!ps->denied) {
                ps->denied = 1;
                ngx_log_error(NGX_LOG_NOTICE, rs->log, 0,
                              "apimon: redis at %V refused CONFIG GET (%*s): "
                              "its persistence settings are not checked",
                              &rs->amcf->redis_addr, (size_t) reply->len,
                              reply->str);
            }

        } else if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 2
                   && reply->element[0]->type == REDIS_REPLY_STRING
                   && reply->element[1]->type == REDIS_REPLY_STRING)
        {
            name = reply->element[0];
            value = reply->element[1];

            for (i = 0; i < 3; i++) {
                rule = ngx_http_apimon_redis_persist_rules[i];

                if (ngx_strcmp(name->str, rule[0]) != 0
                    || ngx_strcasecmp((u_char *) value->str,
                                      (u_char *) rule[1]) == 0
                    || (rule[2] && ngx_strcasecmp((u_char *) value->str,
                                                  (u_char *) rule[2]) == 0))
                {
                    continue;
                }

                ps->last = ngx_slprintf(ps->last,
                                        ps->found + sizeof(ps->found),
                                        "%s%s \"%*s\"",
                                        ps->last == ps->found ? "" : ", ",
                                        rule[0], (size_t) value->len,
                                        value->str);
            }
        }

        if (ps->due == 1 && ps->last != ps->found) {
            ngx_log_error(NGX_LOG_WARN, rs->log, 0,
                          "apimon: redis at %V may lose usage counts and "
                          "quotas on a crash: %*s; apimon needs appendonly "
                          "yes, appendfsync everysec, maxmemory-policy "
                          "noeviction", &rs->amcf->redis_addr,
                          (size_t) (ps->last - ps->found), ps->found);
        }
    }

    if (--ps->due == 0) {
        ngx_free(ps);
    }
}


static void
ngx_http_apimon_redis_ready_state(void)
{
    ngx_queue_t                   *q;
    ngx_http_apimon_redis_t       *rs;
    ngx_http_apimon_redis_call_t  *call;

    rs = ngx_http_apimon_redis_get();

    if (rs->connect_timer.timer_set) {
        ngx_del_timer(&rs->connect_timer);
    }

    if (rs->failures) {
        ngx_log_error(NGX_LOG_NOTICE, rs->log, 0,
                      "apimon: connected to redis at %V again",
                      &rs->amcf->redis_addr);

    } else {
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, rs->log, 0,
                       "apimon redis: connected to %V",
                       &rs->amcf->redis_addr);
    }

    rs->state = NGX_HTTP_APIMON_REDIS_READY;
    rs->failures = 0;
    rs->backoff = NGX_HTTP_APIMON_BACKOFF_MIN;

    /* first, what the handler owes Redis (refunds) */
    if (rs->amcf->redis_ready) {
        rs->amcf->redis_ready();
    }

    while (!ngx_queue_empty(&rs->waiting)) {
        q = ngx_queue_head(&rs->waiting);
        call = ngx_queue_data(q, ngx_http_apimon_redis_call_t, wait);

        ngx_queue_remove(q);
        call->queued = 0;

        if (ngx_http_apimon_redis_send(call, 0) != NGX_OK) {
            ngx_http_apimon_redis_fail(call, "redis connection lost");
        }
    }
}


/*
 * The connection is gone or given up: fail what waits, go idle and arm
 * the reconnect timer.  "failed" counts an unsuccessful attempt (as opposed
 * to a healthy connection that closed), which opens the circuit.
 */

static void
ngx_http_apimon_redis_lost(ngx_uint_t failed)
{
    ngx_http_apimon_redis_t  *rs;

    rs = ngx_http_apimon_redis_get();

    rs->ac = NULL;
    rs->state = NGX_HTTP_APIMON_REDIS_IDLE;

    if (failed) {
        rs->failures++;
    }

    if (rs->connect_timer.timer_set) {
        ngx_del_timer(&rs->connect_timer);
    }

    ngx_http_apimon_redis_fail_waiting("redis unavailable");

    if (rs->exiting || rs->reconnect_timer.timer_set) {
        return;
    }

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, rs->log, 0,
                   "apimon redis: reconnect in %M ms", rs->backoff);

    ngx_add_timer(&rs->reconnect_timer, rs->backoff);

    if (rs->failures) {
        rs->backoff *= 2;

        if (rs->backoff > NGX_HTTP_APIMON_BACKOFF_MAX) {
            rs->backoff = NGX_HTTP_APIMON_BACKOFF_MAX;
        }
    }
}


/* give up on the current connection (a timeout, a refused handshake) */

static void
ngx_http_apimon_redis_drop(void)
{
    redisAsyncContext        *ac;
    ngx_http_apimon_redis_t  *rs;

    rs = ngx_http_apimon_redis_get();

    ac = rs->ac;

    ngx_http_apimon_redis_lost(1);

    if (ac) {
        /*
         * pending callbacks run with a NULL reply, then the cleanup hook;
         * inside a hiredis callback the free is deferred until it returns
         */
        redisAsyncFree(ac);
    }
}


static void
ngx_http_apimon_redis_on_connect(const redisAsyncContext *ac, int status)
{
    ngx_http_apimon_redis_t  *rs;

    rs = ngx_http_apimon_redis_get();

    if (ac != rs->ac) {
        return;
    }

    if (status == REDIS_OK) {
        ngx_log_debug0(NGX_LOG_DEBUG_HTTP, rs->log, 0,
                       "apimon redis: connect done");
        return;
    }

    ngx_log_error(NGX_LOG_ERR, rs->log, 0,
                  "apimon: could not connect to redis at %V: %s",
                  &rs->amcf->redis_addr,
                  ac->errstr ? ac->errstr : "unknown error");

    /* hiredis frees the context when this returns */
    ngx_http_apimon_redis_lost(1);
}


static void
ngx_http_apimon_redis_on_disconnect(const redisAsyncContext *ac, int status)
{
    ngx_uint_t                failed;
    ngx_http_apimon_redis_t  *rs;

    rs = ngx_http_apimon_redis_get();

    if (ac != rs->ac) {
        return;
    }

    /* a connection lost during its handshake counts as a failed attempt */
    failed = (rs->state != NGX_HTTP_APIMON_REDIS_READY);

    ngx_log_error(NGX_LOG_ERR, rs->log, 0,
                  "apimon: connection to redis at %V lost: %s",
                  &rs->amcf->redis_addr,
                  (status != REDIS_OK && ac->errstr) ? ac->errstr
                                                     : "closed");

    ngx_http_apimon_redis_lost(failed);
}


static void
ngx_http_apimon_redis_connect_timeout(ngx_event_t *ev)
{
    ngx_http_apimon_redis_t  *rs;

    rs = ngx_http_apimon_redis_get();

    if (rs->state != NGX_HTTP_APIMON_REDIS_CONNECTING) {
        return;
    }

    ngx_log_error(NGX_LOG_ERR, rs->log, 0,
                  "apimon: redis at %V did not answer within %M ms",
                  &rs->amcf->redis_addr, rs->amcf->connect_timeout);

    ngx_http_apimon_redis_drop();
}


static void
ngx_http_apimon_redis_reconnect(ngx_event_t *ev)
{
    ngx_http_apimon_redis_t  *rs;

    rs = ngx_http_apimon_redis_get();

    if (rs->exiting || ngx_exiting || ngx_terminate || ngx_quit) {
        return;
    }

    if (rs->state != NGX_HTTP_APIMON_REDIS_IDLE) {
        return;
    }

    ngx_http_apimon_redis_connect();
}


/* hiredis event hooks */

/* hiredis asks for events idempotently: add or delete only on a change */

static void
ngx_http_apimon_redis_event(ngx_event_t *ev, ngx_int_t event, ngx_uint_t on)
{
    if (on && !ev->active) {
        if (ngx_add_event(ev, event, NGX_LEVEL_EVENT) != NGX_OK) {
            ngx_log_error(NGX_LOG_ERR, ev->log, 0,
                          "apimon: could not add the redis %s event",
                          event == NGX_READ_EVENT ? "read" : "write");
        }

    } else if (!on && ev->active) {
        (void) ngx_del_event(ev, event, 0);
    }
}


static void
ngx_http_apimon_redis_add_read(void *privdata)
{
    ngx_connection_t  *c = privdata;

    if (c != NULL) {
        ngx_http_apimon_redis_event(c->read, NGX_READ_EVENT, 1);
    }
}


static void
ngx_http_apimon_redis_del_read(void *privdata)
{
    ngx_connection_t  *c = privdata;

    if (c != NULL) {
        ngx_http_apimon_redis_event(c->read, NGX_READ_EVENT, 0);
    }
}


/*
 * Commands issued while the event loop runs are written together at the end
 * of the iteration, from a posted event, without a write event round trip;
 * the write event is used to learn that the connect completed, and when the
 * socket buffer is full.
 */

static void
ngx_http_apimon_redis_add_write(void *privdata)
{
    ngx_connection_t  *c = privdata;

    redisAsyncContext        *ac;
    ngx_http_apimon_redis_t  *rs;

    if (c == NULL) {
        return;
    }

    rs = ngx_http_apimon_redis_get();
    ac = c->data;

    if (!c->write->active
        && !rs->flushing
        && (ac->c.flags & REDIS_CONNECTED)
        && ac == rs->ac)
    {
        if (!rs->flush.posted) {
            rs->flush.data = c;
            ngx_post_event(&rs->flush, &ngx_posted_events);
        }

        return;
    }

    ngx_http_apimon_redis_event(c->write, NGX_WRITE_EVENT, 1);
}


static void
ngx_http_apimon_redis_del_write(void *privdata)
{
    ngx_connection_t  *c = privdata;

    if (c != NULL) {
        ngx_http_apimon_redis_event(c->write, NGX_WRITE_EVENT, 0);
    }
}


static void
ngx_http_apimon_redis_cleanup(void *privdata)
{
    ngx_connection_t         *c = privdata;

    redisAsyncContext        *ac;
    ngx_http_apimon_redis_t  *rs;

    ac = c->data;

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, c->log, 0,
                   "apimon redis: close connection, fd:%d", c->fd);

    rs = ngx_http_apimon_redis_get();

    if (rs->flush.posted && rs->flush.data == c) {
        ngx_delete_posted_event(&rs->flush);
    }

    /* nginx closes the socket: keep hiredis from closing that fd again */
    ac->c.fd = -1;
    ac->ev.data = NULL;

    ngx_close_connection(c);
}


static void
ngx_http_apimon_redis_flush(ngx_event_t *ev)
{
    ngx_connection_t         *c = ev->data;
    redisAsyncContext        *ac;
    ngx_http_apimon_redis_t  *rs;

    rs = ngx_http_apimon_redis_get();
    ac = c->data;

    if (ac != rs->ac || c->write->active) {
        return;
    }

    /* an addWrite call from inside means "not all written": use the event */
    rs->flushing = 1;
    redisAsyncHandleWrite(ac);
    rs->flushing = 0;
}


static void
ngx_http_apimon_redis_read_handler(ngx_event_t *rev)
{
    ngx_connection_t  *c = rev->data;

    redisAsyncHandleRead((redisAsyncContext *) c->data);
}


static void
ngx_http_apimon_redis_write_handler(ngx_event_t *wev)
{
    ngx_connection_t  *c = wev->data;

    redisAsyncHandleWrite((redisAsyncContext *) c->data);
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

    if (!rs->initialized) {
        ngx_queue_init(&rs->calls);
        ngx_queue_init(&rs->waiting);
        rs->dummy.fd = (ngx_socket_t) -1;
        rs->initialized = 1;
    }

    ngx_queue_insert_tail(&rs->calls, &call->all);

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "apimon redis: call %p, script:%i, state:%ui",
                   call, script, rs->state);

    if (rs->amcf == NULL || !rs->amcf->configured || rs->exiting) {
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


static ngx_int_t
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
        ngx_log_error(NGX_LOG_ERR, rs->log, 0,
                      "apimon: redis at %V timed out, closing the connection",
                      &rs->amcf->redis_addr);

        ngx_http_apimon_redis_drop();
    }
}


static void
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


static void
ngx_http_apimon_redis_fail_waiting(const char *err)
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

        ngx_http_apimon_redis_fail(call, err);
    }
}
