
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
#define NGX_HTTP_APIMON_KEY_V1_LEN     74      /* ak_..., a CRC-32 */
#define NGX_HTTP_APIMON_KEY_V2_LEN     84      /* ak2_..., an HMAC tag */
#define NGX_HTTP_APIMON_KEY_MAX_LEN    NGX_HTTP_APIMON_KEY_V2_LEN
#define NGX_HTTP_APIMON_SUB_HEX_LEN    32
#define NGX_HTTP_APIMON_SUB_ID_LEN     36      /* dashed UUID */
#define NGX_HTTP_APIMON_DIGEST_LEN     64      /* sha256, hex */

#define NGX_HTTP_APIMON_PASSWORD_MAX      1024 /* bytes of a password file */
#define NGX_HTTP_APIMON_UNKNOWN_MAX       1024 /* unknown-key cache entries */
#define NGX_HTTP_APIMON_UNKNOWN_TTL       5000 /* ms */


/* one key secret, ready for HMAC-SHA-256: the key xor ipad and xor opad */
typedef struct {
    u_char                     ipad[64];
    u_char                     opad[64];
} ngx_http_apimon_key_secret_t;


/* digests of keys Redis just called unknown; one per worker */
typedef struct ngx_http_apimon_unknown_s  ngx_http_apimon_unknown_t;


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


/* one row of the result table (ngx_http_apimon_problem.c) */
typedef struct {
    ngx_str_t                  name;      /* $apimon_result, problem code */
    ngx_uint_t                 status;    /* of the refusal; 0: allowed */
    ngx_str_t                  title;     /* of its problem+json body */
    ngx_str_t                  detail;
} ngx_http_apimon_result_t;


/* per worker process state: the Redis connection, the checks to send */
typedef struct ngx_http_apimon_redis_s    ngx_http_apimon_redis_t;
typedef struct ngx_http_apimon_batcher_s  ngx_http_apimon_batcher_t;
typedef struct ngx_http_apimon_lease_shctx_s  ngx_http_apimon_lease_shctx_t;
typedef struct ngx_http_apimon_leaser_s  ngx_http_apimon_leaser_t;

/* the metrics zone (ngx_http_apimon_metrics.c) and an API's row in it */
typedef struct ngx_http_apimon_metrics_conf_s  ngx_http_apimon_metrics_conf_t;
typedef struct ngx_http_apimon_metrics_api_s   ngx_http_apimon_metrics_api_t;


/* http{}-level: one Redis server per worker process */
typedef struct {
    ngx_str_t                  redis_addr;    /* as configured, for logs */
    ngx_str_t                  redis_host;    /* numeric IP, or empty */
    ngx_int_t                  redis_port;
    ngx_str_t                  redis_unix;    /* unix socket path, or empty */
    ngx_int_t                  redis_db;
    ngx_str_t                  redis_password; /* read from a file */
    ngx_msec_t                 connect_timeout;
    ngx_uint_t                 configured;    /* unsigned:1 */

    /* apimon_key_secret_file: the first signs new keys; NULL: none */
    ngx_array_t               *key_secrets;
    /* apimon_unknown_key_cache */
    ngx_uint_t                 unknown_max;   /* 0: off */
    ngx_msec_t                 unknown_ttl;
    ngx_http_apimon_unknown_t *unknown;       /* NULL: off */

    /* apimon_lease (ngx_http_apimon_lease.c); lease_zone NULL: off */
    ngx_shm_zone_t            *lease_zone;
    ngx_http_apimon_lease_shctx_t *lease_sh;
    ngx_slab_pool_t           *lease_shpool;
    ngx_http_apimon_leaser_t  *leaser;
    ngx_uint_t                 lease_calls;   /* at most, per lease */
    ngx_msec_t                 lease_time;    /* a lease's lifetime */
    ngx_msec_t                 lease_flush;   /* the return interval */
    ngx_uint_t                 lease_set;     /* unsigned:1 */

    /* made with the configuration, used by each worker after the fork */
    ngx_http_apimon_redis_t   *redis;
    ngx_http_apimon_batcher_t *batcher;
    ngx_http_apimon_metrics_conf_t  *metrics;

    /* run by the transport each time the connection is ready */
    void                     (*redis_ready)(void);
} ngx_http_apimon_main_conf_t;


/*
 * The Redis transport (ngx_http_apimon_redis*.c, ngx_http_apimon_redis.h).
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

/*
 * Calling conventions:
 *
 * - The handler is never run from inside the function that submits the
 *   call: failures known at once (circuit open, Redis not configured, the
 *   connection closing) are delivered from a posted event, later in the
 *   same event loop iteration.  Replies are delivered from the Redis
 *   connection's read event.
 * - The functions return NULL only when memory runs out; the handler is
 *   then not run.
 * - After the handler ran, the call pointer is invalid: do not cancel it.
 * - argv and the strings it points to are copied: they may be freed as
 *   soon as the function returns.
 * - "err" texts are static strings, safe to log; "reply" may be an error
 *   reply (REDIS_REPLY_ERROR), e.g. "ERR apimon not_found: ...".
 *
 * Scripts: "script" is an index into the compiled-in scripts, found with
 * ngx_http_apimon_redis_script_index("check") (do it once, at
 * configuration time).  argv is what follows the SHA1 in EVALSHA: the
 * number of keys as a decimal string, then the keys, then the arguments,
 * e.g. { "1", "apimon:sub:{...}", digest, api, ... }.  The transport sends
 * EVALSHA and re-sends the same call as EVAL on NOSCRIPT.
 */
ngx_http_apimon_redis_call_t *ngx_http_apimon_redis_script(ngx_uint_t script,
    int argc, const char **argv, const size_t *argvlen, ngx_msec_t timeout,
    ngx_http_apimon_redis_handler_pt handler, void *data);

/* index of a compiled-in script by name ("check"), or NGX_ERROR */
ngx_int_t ngx_http_apimon_redis_script_index(const char *name);

/* a plain command (reads for the management API): argv[0] is the command */
ngx_http_apimon_redis_call_t *ngx_http_apimon_redis_command(int argc,
    const char **argv, const size_t *argvlen, ngx_msec_t timeout,
    ngx_http_apimon_redis_handler_pt handler, void *data);

void ngx_http_apimon_redis_cancel(ngx_http_apimon_redis_call_t *call);

/*
 * during its handler: whether the call was written to a connection (then a
 * script may have run although no reply came)
 */
ngx_uint_t ngx_http_apimon_redis_sent(ngx_http_apimon_redis_call_t *call);

/* NGX_OK while the connection is up and its scripts are loaded */
ngx_int_t ngx_http_apimon_redis_ready(void);

/* 1 during an outage (then "requests" are counted in it), else 0 */
ngx_uint_t ngx_http_apimon_redis_outage(ngx_uint_t requests);

ngx_http_apimon_redis_t *ngx_http_apimon_redis_create(ngx_conf_t *cf);
ngx_int_t ngx_http_apimon_redis_init_process(ngx_cycle_t *cycle,
    ngx_http_apimon_main_conf_t *amcf);
void ngx_http_apimon_redis_exit_process(ngx_cycle_t *cycle);


/* API keys (ngx_http_apimon_key.c) */

/*
 * shape, and the tag (a version 2 key, when there are secrets) or the
 * checksum (a version 1 key, when "legacy" allows them); no Redis.
 * "version" is set ("1", "2") when the shape is one of ours.
 */
ngx_int_t ngx_http_apimon_key_valid(ngx_str_t *key, ngx_array_t *secrets,
    ngx_flag_t legacy, ngx_str_t *version, ngx_log_t *log);
/* the prefix and length of a key (its digits unchecked): what logs redact */
ngx_uint_t ngx_http_apimon_key_like(ngx_str_t *key);
/* the dashed subscription id embedded in a valid key; out has 36 bytes */
void ngx_http_apimon_key_sub_id(ngx_str_t *key, u_char *out);
/* sha256 of the key as 64 hex digits; out has 64 bytes */
void ngx_http_apimon_key_digest(ngx_str_t *key, u_char *out);
/*
 * a new key for a dashed subscription id: version 2, tagged with the first
 * secret, or version 1 when secrets is NULL; out has
 * NGX_HTTP_APIMON_KEY_MAX_LEN bytes, *len is set
 */
ngx_int_t ngx_http_apimon_key_generate(u_char *sub_id, ngx_array_t *secrets,
    u_char *out, size_t *len, ngx_log_t *log);
/*
 * the secrets of an apimon_key_secret_file, prepared for the HMAC and wiped
 * when the configuration is freed; NULL: an error, logged
 */
ngx_array_t *ngx_http_apimon_key_secrets_read(ngx_conf_t *cf,
    ngx_str_t *file);
/* the unknown-key cache: made at configuration time, filled per worker */
ngx_http_apimon_unknown_t *ngx_http_apimon_unknown_create(ngx_pool_t *pool,
    ngx_uint_t max, ngx_msec_t ttl);
/* NGX_OK: Redis called this digest unknown less than the TTL ago */
ngx_int_t ngx_http_apimon_unknown_find(ngx_http_apimon_unknown_t *cache,
    u_char *digest);
void ngx_http_apimon_unknown_add(ngx_http_apimon_unknown_t *cache,
    u_char *digest);
/*
 * HMAC-SHA-256(first key secret, label): a key of 32 bytes for another use
 * of the secret; NGX_DECLINED: no apimon_key_secret_file
 */
ngx_int_t ngx_http_apimon_key_derive(ngx_array_t *secrets, char *label,
    u_char *out);
/* len random bytes (getrandom) */
ngx_int_t ngx_http_apimon_random(u_char *buf, size_t len, ngx_log_t *log);
/* a new random (version 4) UUID, dashed; out has 36 bytes */
ngx_int_t ngx_http_apimon_uuid(u_char *out, ngx_log_t *log);
/* frees the digest state (exit_process) */
void ngx_http_apimon_key_exit(void);


/*
 * Secret files (ngx_http_apimon_key.c), read at configuration time: at most
 * "max" bytes; "file" becomes the full name.  The messages name the
 * directive being parsed and the file ("what" precedes its name, e.g.
 * "password file "), never what it holds.
 */

/*
 * one line of a secret file, without its '\n' and trailing blanks and '\r';
 * blank lines are skipped; line counts from 1
 */
typedef char *(*ngx_http_apimon_secret_line_pt)(ngx_conf_t *cf, void *data,
    u_char *p, u_char *last, ngx_str_t *file, ngx_uint_t line);

/* the whole file; on NGX_OK free it with ngx_http_apimon_secret_free() */
ngx_int_t ngx_http_apimon_secret_read(ngx_conf_t *cf, ngx_str_t *file,
    const char *what, size_t max, ngx_str_t *text);
/* the handler on each line, until one does not return NGX_CONF_OK */
char *ngx_http_apimon_secret_lines(ngx_conf_t *cf, ngx_str_t *file,
    size_t max, ngx_http_apimon_secret_line_pt handler, void *data);
/* wipes and frees what ngx_http_apimon_secret_read() returned */
void ngx_http_apimon_secret_free(ngx_str_t *text);


/*
 * Enforcement (ngx_http_apimon_module.c, ngx_http_apimon_handler.c,
 * ngx_http_apimon_batch.c, ngx_http_apimon_refund.c, ngx_http_apimon_hide.c,
 * ngx_http_apimon_headers.c)
 */

#define NGX_HTTP_APIMON_DEFAULT_TIMEOUT   500      /* ms, per command */
#define NGX_HTTP_APIMON_CONNECT_TIMEOUT   1000     /* ms */
#define NGX_HTTP_APIMON_MAX_WINDOWS       4

#define NGX_HTTP_APIMON_REDIS_CLOSED      0
#define NGX_HTTP_APIMON_REDIS_OPEN        1


typedef struct {
    ngx_flag_t                 enable;
    ngx_str_t                  api;
    ngx_http_complex_value_t  *key;
    ngx_flag_t                 hide_key;
    ngx_flag_t                 key_legacy;    /* version 1 keys accepted */
    ngx_str_t                  hide_header;   /* "x_api_key": $http_x_api_key */
    ngx_str_t                  hide_arg;      /* "api_key" of $arg_api_key */
    ngx_uint_t                 rate_n;        /* 0: no location rate limit */
    ngx_uint_t                 rate_w;        /* seconds */
    ngx_uint_t                 quota_n;       /* 0: no location quota */
    ngx_str_t                  quota_unit;
    ngx_str_t                  rate_n_text;
    ngx_str_t                  rate_w_text;
    ngx_str_t                  quota_n_text;
    ngx_uint_t                 quota_status;
    ngx_uint_t                 on_redis_error;
    ngx_uint_t                 log_level;     /* of refusals */
    ngx_flag_t                 dry_run;       /* decide, refuse nothing */
    ngx_flag_t                 legacy_headers;
    ngx_msec_t                 timeout;
    ngx_http_apimon_metrics_api_t  *metrics;  /* NULL: not enforcing */
} ngx_http_apimon_loc_conf_t;


typedef struct {
    ngx_str_t                  name;          /* "plan-rate", ... */
    ngx_uint_t                 limit;
    ngx_uint_t                 window;        /* seconds */
    ngx_uint_t                 remaining;
    ngx_uint_t                 reset;         /* seconds */
    unsigned                   quota:1;
} ngx_http_apimon_window_t;


typedef struct ngx_http_apimon_batch_s  ngx_http_apimon_batch_t;


#define NGX_HTTP_APIMON_SKEY_LEN  (sizeof("apimon:sub:{}") - 1                \
                                   + NGX_HTTP_APIMON_SUB_ID_LEN)


/* per request; lives in the request pool, found again through its cleanup */
typedef struct {
    ngx_http_request_t            *request;
    ngx_http_apimon_loc_conf_t    *conf;      /* of the check */
    ngx_queue_t                    queue;     /* waits for the next batch */
    ngx_http_apimon_batch_t       *batch;     /* sent in it, reply due */
    void                          *lease;     /* its carve in flight */
    ngx_uint_t                     index;     /* ... as this element */
    u_char                         skey[NGX_HTTP_APIMON_SKEY_LEN];
    u_char                         digest[NGX_HTTP_APIMON_DIGEST_LEN];
    ngx_http_apimon_result_e       result;
    ngx_str_t                      subscription;
    ngx_str_t                      plan;
    ngx_str_t                      product;
    ngx_str_t                      key_version;
    ngx_uint_t                     retry_after;
    ngx_uint_t                     nwindows;
    ngx_http_apimon_window_t       windows[NGX_HTTP_APIMON_MAX_WINDOWS];
    ngx_str_t                      key;       /* as sent; redacted in logs
                                                 when it looks like a key */
    ngx_str_t                      key_arg;   /* "api_key" of $arg_api_key */
    ngx_http_log_handler_pt        log_handler;   /* nginx's, wrapped */
    unsigned                       legacy_headers:1;
    unsigned                       waiting:1; /* queued or in a batch */
    unsigned                       queued:1;
    unsigned                       counted:1; /* in the metrics */
    unsigned                       dry_run:1; /* would have been refused */
} ngx_http_apimon_ctx_t;


/* apimon_lease, its defaults (ngx_http_apimon_lease.c) */
char *ngx_http_apimon_lease(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
char *ngx_http_apimon_lease_init_conf(ngx_conf_t *cf,
    ngx_http_apimon_main_conf_t *amcf);
/* a check decided from a lease (NGX_OK), carving (NGX_AGAIN), or not */
ngx_int_t ngx_http_apimon_lease_check(ngx_http_request_t *r,
    ngx_http_apimon_ctx_t *ctx, ngx_http_apimon_loc_conf_t *alcf,
    ngx_http_apimon_main_conf_t *amcf);
void ngx_http_apimon_lease_detach(ngx_http_apimon_ctx_t *ctx);
void ngx_http_apimon_lease_exit(ngx_http_apimon_main_conf_t *amcf);
ngx_int_t ngx_http_apimon_lease_init_process(ngx_cycle_t *cycle,
    ngx_http_apimon_main_conf_t *amcf);


/* the access phase (ngx_http_apimon_handler.c) */
ngx_int_t ngx_http_apimon_handler(ngx_http_request_t *r);
ngx_int_t ngx_http_apimon_handler_init(ngx_conf_t *cf);
void ngx_http_apimon_handler_exit(ngx_http_apimon_main_conf_t *amcf);

/*
 * The check batcher (ngx_http_apimon_batch.c): a request's context, and its
 * check queued with ngx_http_apimon_batch_add() (ctx->conf set, the request
 * suspended); the request is resumed with ctx->result set.
 */
ngx_http_apimon_ctx_t *ngx_http_apimon_create_ctx(ngx_http_request_t *r);
/* the request's context, also after an internal redirect; NULL: none */
ngx_http_apimon_ctx_t *ngx_http_apimon_get_ctx(ngx_http_request_t *r);
void ngx_http_apimon_batch_add(ngx_http_apimon_ctx_t *ctx);
/* an element of the check's reply into ctx; the request resumed */
void ngx_http_apimon_check_result(ngx_http_request_t *r,
    ngx_http_apimon_ctx_t *ctx, u_char *data, size_t len);
void ngx_http_apimon_resume(ngx_http_apimon_ctx_t *ctx);
ngx_int_t ngx_http_apimon_batch_init(ngx_conf_t *cf,
    ngx_http_apimon_main_conf_t *amcf);
void ngx_http_apimon_batch_exit(ngx_http_apimon_main_conf_t *amcf);

/*
 * Keeping the key out of sight (ngx_http_apimon_hide.c): apimon_hide_key
 * (NGX_OK, or the status to answer), and the key redacted from the
 * request's error log lines
 */
ngx_int_t ngx_http_apimon_hide_key(ngx_http_request_t *r,
    ngx_http_apimon_loc_conf_t *alcf);
void ngx_http_apimon_redact_log(ngx_http_request_t *r,
    ngx_http_apimon_ctx_t *ctx, ngx_http_apimon_loc_conf_t *alcf);

/* what the client sees (ngx_http_apimon_headers.c) */
ngx_int_t ngx_http_apimon_refuse(ngx_http_request_t *r,
    ngx_http_apimon_ctx_t *ctx, ngx_uint_t status);
ngx_int_t ngx_http_apimon_headers_init(ngx_conf_t *cf);
/* a response header named name, its value empty */
ngx_table_elt_t *ngx_http_apimon_add_header(ngx_http_request_t *r,
    const char *name, size_t len);
ngx_int_t ngx_http_apimon_add_variables(ngx_conf_t *cf);


/* results and problem+json answers (ngx_http_apimon_problem.c) */

ngx_http_apimon_result_t *ngx_http_apimon_result(
    ngx_http_apimon_result_e result);
ngx_str_t *ngx_http_apimon_result_name(ngx_http_apimon_result_e result);
ngx_http_apimon_result_e ngx_http_apimon_result_find(ngx_str_t *name);
/* the whole answer: status, Content-Type and one buffer */
ngx_int_t ngx_http_apimon_send_buf(ngx_http_request_t *r, ngx_uint_t status,
    ngx_str_t *type, ngx_buf_t *b);
/* an application/problem+json answer (RFC 9457); the texts are escaped */
ngx_int_t ngx_http_apimon_problem(ngx_http_request_t *r, ngx_uint_t status,
    ngx_str_t *code, ngx_str_t *title, ngx_str_t *detail);


extern ngx_module_t  ngx_http_apimon_module;
extern ngx_module_t  ngx_http_apimon_admin_module;


#endif /* _NGX_HTTP_APIMON_H_INCLUDED_ */
