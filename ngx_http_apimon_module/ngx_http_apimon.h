
/*
 * apimon: API monetization for nginx.
 * Types and functions shared by the files of the module; each file keeps
 * one concern (conf, handler, redis transport, keys, headers, admin API).
 */


#ifndef _NGX_HTTP_APIMON_H_INCLUDED_
#define _NGX_HTTP_APIMON_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <hiredis/hiredis.h>


/* API keys: see schema/README.md */
#define NGX_HTTP_APIMON_KEY_LEN        74
#define NGX_HTTP_APIMON_KEY_PREFIX     "ak_"
#define NGX_HTTP_APIMON_SUB_HEX_LEN    32
#define NGX_HTTP_APIMON_SUB_ID_LEN     36      /* dashed UUID */
#define NGX_HTTP_APIMON_DIGEST_LEN     64      /* sha256, hex */


/* results of a request check, in $apimon_result */
typedef enum {
    NGX_HTTP_APIMON_NONE = 0,
    NGX_HTTP_APIMON_ALLOWED,
    NGX_HTTP_APIMON_MISSING_KEY,
    NGX_HTTP_APIMON_INVALID_KEY,
    NGX_HTTP_APIMON_INACTIVE,
    NGX_HTTP_APIMON_NOT_ENTITLED,
    NGX_HTTP_APIMON_RATE_LIMITED,
    NGX_HTTP_APIMON_QUOTA_EXCEEDED,
    NGX_HTTP_APIMON_REDIS_ERROR
} ngx_http_apimon_result_e;


/* http{}-level: one Redis server per worker process */
typedef struct {
    ngx_str_t                  redis_addr;    /* "127.0.0.1:6379" text */
    ngx_str_t                  redis_host;    /* numeric IP, or empty */
    ngx_int_t                  redis_port;
    ngx_str_t                  redis_unix;    /* unix socket path, or empty */
    ngx_int_t                  redis_db;
    ngx_str_t                  redis_password; /* read from a file */
    ngx_msec_t                 connect_timeout;
    ngx_uint_t                 configured;    /* unsigned:1 */
} ngx_http_apimon_main_conf_t;


/*
 * The Redis transport (ngx_http_apimon_redis.c).
 *
 * One hiredis async connection per worker, driven by nginx events.  A call
 * is an ngx_http_apimon_redis_call_t allocated outside any request pool; its
 * handler runs exactly once: with the reply, or with reply == NULL and
 * "err" set (timeout, connection lost, Redis down, circuit open).  The
 * reply is only valid during the handler.  A caller whose request goes away
 * first calls ngx_http_apimon_redis_cancel(): the handler is then never run.
 */

typedef struct ngx_http_apimon_redis_call_s  ngx_http_apimon_redis_call_t;

typedef void (*ngx_http_apimon_redis_handler_pt)(redisReply *reply,
    const char *err, void *data);

/* script ids: APIMON_SCRIPT_CHECK, ... from the generated scripts header */
ngx_http_apimon_redis_call_t *ngx_http_apimon_redis_script(ngx_uint_t script,
    int argc, const char **argv, const size_t *argvlen, ngx_msec_t timeout,
    ngx_http_apimon_redis_handler_pt handler, void *data);

/* a plain command (reads for the management API) */
ngx_http_apimon_redis_call_t *ngx_http_apimon_redis_command(int argc,
    const char **argv, const size_t *argvlen, ngx_msec_t timeout,
    ngx_http_apimon_redis_handler_pt handler, void *data);

void ngx_http_apimon_redis_cancel(ngx_http_apimon_redis_call_t *call);

ngx_int_t ngx_http_apimon_redis_init_process(ngx_cycle_t *cycle,
    ngx_http_apimon_main_conf_t *amcf);
void ngx_http_apimon_redis_exit_process(ngx_cycle_t *cycle);


/* API keys (ngx_http_apimon_key.c) */

/* shape and checksum only; no Redis */
ngx_int_t ngx_http_apimon_key_valid(ngx_str_t *key);
/* the dashed subscription id embedded in a valid key; out has 36 bytes */
void ngx_http_apimon_key_sub_id(ngx_str_t *key, u_char *out);
/* sha256 of the key as 64 hex digits; out has 64 bytes */
void ngx_http_apimon_key_digest(ngx_str_t *key, u_char *out);
/* a new key for a dashed subscription id; out has 74 bytes */
ngx_int_t ngx_http_apimon_key_generate(u_char *sub_id, u_char *out,
    ngx_log_t *log);
/* a new random (version 4) UUID, dashed; out has 36 bytes */
ngx_int_t ngx_http_apimon_uuid(u_char *out, ngx_log_t *log);


extern ngx_module_t  ngx_http_apimon_module;
extern ngx_module_t  ngx_http_apimon_admin_module;


#endif /* _NGX_HTTP_APIMON_H_INCLUDED_ */
