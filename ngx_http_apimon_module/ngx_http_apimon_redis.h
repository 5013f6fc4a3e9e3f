/*
 * The Redis transport's own header: its state and the functions its three
 * files call in each other.  The interface for the rest of the module is in
 * ngx_http_apimon.h.
 *
 *   ngx_http_apimon_redis.c            calls: submit, send (EVALSHA, EVAL
 *                                      on NOSCRIPT), reply, timeout, cancel;
 *                                      the compiled-in scripts
 *   ngx_http_apimon_redis_conn.c       the connection: its states, connect,
 *                                      loss, backoff, nginx event hooks
 *   ngx_http_apimon_redis_handshake.c  connect-time commands: AUTH, SELECT,
 *                                      SCRIPT LOAD, the persistence check
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


#ifndef _NGX_HTTP_APIMON_REDIS_H_INCLUDED_
#define _NGX_HTTP_APIMON_REDIS_H_INCLUDED_


#include "ngx_http_apimon.h"

#include <hiredis/async.h>


#define NGX_HTTP_APIMON_REDIS_IDLE        0
#define NGX_HTTP_APIMON_REDIS_CONNECTING  1
#define NGX_HTTP_APIMON_REDIS_READY       2


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
    uint64_t                           sent_at;    /* usec, the metrics */

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
    ngx_msec_t                         down_since; /* the outage began */
    ngx_uint_t                         affected;   /* requests, since */
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
    unsigned                           down:1;     /* an outage, logged */
};


/* the worker's state, kept with the http{} configuration */

static ngx_inline ngx_http_apimon_redis_t *
ngx_http_apimon_redis_get(void)
{
    ngx_http_apimon_main_conf_t  *amcf;

    amcf = ngx_http_cycle_get_module_main_conf(ngx_cycle,
                                               ngx_http_apimon_module);

    return amcf->redis;
}


/* calls (ngx_http_apimon_redis.c) */

/* writes the call on the ready connection; NGX_ERROR: it is not */
ngx_int_t ngx_http_apimon_redis_send(ngx_http_apimon_redis_call_t *call,
    ngx_uint_t eval);
/* the handler runs with "err" from a posted event */
void ngx_http_apimon_redis_fail(ngx_http_apimon_redis_call_t *call,
    const char *err);
/* the calls waiting for the connection: sent (err NULL), or failed */
void ngx_http_apimon_redis_release_waiting(const char *err);
/* SCRIPT LOAD of every compiled-in script, privdata its index; how many */
ngx_uint_t ngx_http_apimon_redis_load_scripts(redisAsyncContext *ac,
    redisCallbackFn *fn);
/* logs a SCRIPT LOAD reply that is not the script's SHA1 */
void ngx_http_apimon_redis_script_loaded(ngx_uint_t script,
    redisReply *reply, ngx_log_t *log);


/* the connection (ngx_http_apimon_redis_conn.c) */

/* the handshake is done: send what waits */
void ngx_http_apimon_redis_ready_state(void);
/* give up on the current connection (a timeout, a refused handshake) */
void ngx_http_apimon_redis_drop(void);
/* logs the start of an outage; what follows until its end: debug only */
void ngx_http_apimon_redis_trouble(const char *what, const char *why);


/* connect-time commands (ngx_http_apimon_redis_handshake.c) */

/* queued on a new connection; ready_state() when all have answered */
void ngx_http_apimon_redis_handshake(redisAsyncContext *ac);


#endif /* _NGX_HTTP_APIMON_REDIS_H_INCLUDED_ */
