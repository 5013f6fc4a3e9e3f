/*
 * The Redis transport: the connection.  One hiredis async context per worker
 * process, its socket an nginx connection driven by nginx's event loop; the
 * states idle, connecting and ready (see ngx_http_apimon_redis.h), the
 * connect timeout, and the reconnect timer with its backoff.
 */


#include "ngx_http_apimon_redis.h"
#include "ngx_http_apimon_metrics.h"


#define NGX_HTTP_APIMON_BACKOFF_MIN       50       /* ms */
#define NGX_HTTP_APIMON_BACKOFF_MAX       2000     /* ms */


static void ngx_http_apimon_redis_connect(void);
static void ngx_http_apimon_redis_lost(ngx_uint_t failed);
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


ngx_http_apimon_redis_t *
ngx_http_apimon_redis_create(ngx_conf_t *cf)
{
    return ngx_pcalloc(cf->pool, sizeof(ngx_http_apimon_redis_t));
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

        ngx_http_apimon_redis_cancel(call);
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
        ngx_http_apimon_redis_trouble("could not be connected", ac->errstr);
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


void
ngx_http_apimon_redis_ready_state(void)
{
    ngx_http_apimon_redis_t  *rs;

    rs = ngx_http_apimon_redis_get();

    if (rs->connect_timer.timer_set) {
        ngx_del_timer(&rs->connect_timer);
    }

    if (rs->down) {
        ngx_log_error(NGX_LOG_ERR, rs->log, 0,
                      "apimon: redis at %V is back: the outage lasted %M ms, "
                      "%ui requests got redis_error meanwhile",
                      &rs->amcf->redis_addr,
                      (ngx_msec_t) (ngx_current_msec - rs->down_since),
                      rs->affected);
        rs->down = 0;
        rs->affected = 0;

    } else {
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, rs->log, 0,
                       "apimon redis: connected to %V",
                       &rs->amcf->redis_addr);
    }

    rs->state = NGX_HTTP_APIMON_REDIS_READY;
    rs->failures = 0;

    ngx_http_apimon_metrics_connected(1);
    rs->backoff = NGX_HTTP_APIMON_BACKOFF_MIN;

    /* first, what the handler owes Redis (refunds) */
    if (rs->amcf->redis_ready) {
        rs->amcf->redis_ready();
    }

    ngx_http_apimon_redis_release_waiting(NULL);
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

    if (!rs->exiting) {
        ngx_http_apimon_metrics_connected(0);

        if (!rs->down) {
            /* calls fail at once (idle) or soon, until it is ready again */
            ngx_http_apimon_metrics_circuit_open();

            rs->down = 1;
            rs->down_since = ngx_current_msec;
            rs->affected = 0;
        }
    }

    if (rs->connect_timer.timer_set) {
        ngx_del_timer(&rs->connect_timer);
    }

    ngx_http_apimon_redis_release_waiting("redis unavailable");

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


/*
 * What went wrong with the connection.  An outage is logged once, loudly,
 * when it starts (here) and once when it ends (ready_state); what fails
 * in between, every reconnect attempt and every check, is debug only.
 */

void
ngx_http_apimon_redis_trouble(const char *what, const char *why)
{
    ngx_http_apimon_redis_t  *rs;

    rs = ngx_http_apimon_redis_get();

    if (rs->down || rs->exiting) {
        ngx_log_debug2(NGX_LOG_DEBUG_HTTP, rs->log, 0,
                       "apimon redis: still down: %s: %s", what, why);
        return;
    }

    ngx_log_error(NGX_LOG_ERR, rs->log, 0,
                  "apimon: redis at %V %s: %s; an outage starts: checks get "
                  "redis_error until it is back (logged once, then when "
                  "it ends)", &rs->amcf->redis_addr, what, why);
}


/* while Redis is down: its requests affected, counted; 0: it is up */

ngx_uint_t
ngx_http_apimon_redis_outage(ngx_uint_t requests)
{
    ngx_http_apimon_redis_t  *rs;

    rs = ngx_http_apimon_redis_get();

    if (rs == NULL || !rs->down) {
        return 0;
    }

    rs->affected += requests;

    return 1;
}


/* give up on the current connection (a timeout, a refused handshake) */

void
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

    ngx_http_apimon_redis_trouble("could not be connected",
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

    ngx_http_apimon_redis_trouble("lost the connection",
                                  (status != REDIS_OK && ac->errstr)
                                  ? ac->errstr : "closed");

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

    ngx_http_apimon_redis_trouble("did not answer",
                                  "connect timeout (connect_timeout=)");

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

    ngx_http_apimon_metrics_reconnect();

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
