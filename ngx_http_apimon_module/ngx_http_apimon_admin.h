
/*
 * apimon: the management API's own declarations, shared by its rooms:
 * ngx_http_apimon_admin.c (module, configuration, request flow, tokens),
 * _admin_route.c (the route table, its matcher, the Redis calls),
 * _admin_body.c (request bodies, query arguments), _admin_reply.c
 * (answers), _admin_json.c (the public shapes), _admin_cond.c (ETags,
 * If-Match, the bodies' media type), _admin_idem.c (Idempotency-Key) and
 * _admin_ops.c (the operations).
 */


#ifndef _NGX_HTTP_APIMON_ADMIN_H_INCLUDED_
#define _NGX_HTTP_APIMON_ADMIN_H_INCLUDED_


#include "ngx_http_apimon.h"

#include <cjson/cJSON.h>
#include <openssl/sha.h>

/* the script list of schema/embed.sh: its APIMON_SCRIPT_* names only */
#define APIMON_SCRIPTS_NAMES_ONLY
#include "ngx_http_apimon_scripts.h"


#define NGX_HTTP_APIMON_ADMIN_MAX_SEGS      10
#define NGX_HTTP_APIMON_ADMIN_MAX_ARGS      12
#define NGX_HTTP_APIMON_ADMIN_LEAD_ARGS     5   /* now, who, addr, kind,
                                                  owner: lib.lua */
#define NGX_HTTP_APIMON_ADMIN_PAGE          100
#define NGX_HTTP_APIMON_ADMIN_PAGE_MAX      1000
#define NGX_HTTP_APIMON_ADMIN_TOKEN_MIN     16
#define NGX_HTTP_APIMON_ADMIN_TOKEN_FILE_MAX  65536
#define NGX_HTTP_APIMON_ADMIN_USAGE_DAYS    400
#define NGX_HTTP_APIMON_ADMIN_MAX_MEMBERS   64

/* nginx has no name (nor status line) for it */
#define NGX_HTTP_UNPROCESSABLE_ENTITY       422


typedef struct {
    ngx_str_t                      name;
    u_char                         digest[SHA256_DIGEST_LENGTH];
} ngx_http_apimon_admin_token_t;


typedef struct {
    ngx_array_t                   *tokens;     /* NULL: no token file */
    ngx_str_t                      org;
    size_t                         body_max;
} ngx_http_apimon_admin_loc_conf_t;


typedef struct ngx_http_apimon_admin_ctx_s    ngx_http_apimon_admin_ctx_t;
typedef struct ngx_http_apimon_admin_route_s  ngx_http_apimon_admin_route_t;

/* an operation: checks its input, starts its one Redis call */
typedef ngx_int_t (*ngx_http_apimon_admin_op_pt)(ngx_http_request_t *r,
    ngx_http_apimon_admin_ctx_t *ctx);
typedef ngx_int_t (*ngx_http_apimon_admin_reply_pt)(ngx_http_request_t *r,
    ngx_http_apimon_admin_ctx_t *ctx, redisReply *reply);


struct ngx_http_apimon_admin_ctx_s {
    ngx_http_request_t              *request;
    ngx_http_apimon_redis_call_t    *call;
    ngx_http_apimon_admin_reply_pt   reply;
    ngx_http_apimon_admin_route_t   *route;

    ngx_str_t                        who;         /* the token's name */

    /* the named parts of the path (ngx_http_apimon_admin_route.c) */
    ngx_str_t                        kind;        /* developer | appgroup */
    ngx_str_t                        owner;       /* email | app group name */
    ngx_str_t                        name;        /* product or sub id */
    ngx_str_t                        action;      /* expire, primary, ... */

    cJSON                           *body;        /* NULL: none sent */
    ngx_str_t                        raw_body;    /* as sent */
    ngx_str_t                        idem;        /* Idempotency-Key's
                                                     digest, or empty */
    ngx_uint_t                       status;      /* of a success */
    ngx_int_t                        rc;          /* of sending an error */

    ngx_str_t                        from;        /* usage days, YYYYMMDD */
    ngx_str_t                        to;
    ngx_uint_t                       count;       /* page size */

    u_char                           sub_id[NGX_HTTP_APIMON_SUB_ID_LEN];
    u_char                           keys[2][NGX_HTTP_APIMON_KEY_MAX_LEN];
    size_t                           key_len[2];
    unsigned                         key_set:2;   /* 1 primary, 2 secondary */
};


typedef enum {
    NGX_HTTP_APIMON_ADMIN_NO_BODY = 0,       /* discarded */
    NGX_HTTP_APIMON_ADMIN_BODY,              /* a JSON object, required */
    NGX_HTTP_APIMON_ADMIN_BODY_OPTIONAL      /* none, or a JSON object */
} ngx_http_apimon_admin_body_e;


/* no script: the operation sends a plain read command */
#define NGX_HTTP_APIMON_ADMIN_COMMAND  APIMON_SCRIPT_COUNT

/*
 * A row of the route table: method, path, operation, script.  The path is
 * relative to {base} (.../v1/organizations/{org}/), one pattern per
 * segment: literal text and named parts ({owners}, {owner}, {product},
 * {sub}, {action}, {slot}; see ngx_http_apimon_admin_route.c).
 */

struct ngx_http_apimon_admin_route_s {
    ngx_str_t                        method;
    char                            *path;
    ngx_http_apimon_admin_op_pt      op;
    ngx_uint_t                       script;      /* APIMON_SCRIPT_*, or
                                                     ..._ADMIN_COMMAND */
    ngx_http_apimon_admin_body_e     body;
    char                           **fields;      /* the members it takes;
                                                     NULL: its script
                                                     checks them */
};


/* the request flow (ngx_http_apimon_admin.c) */

ngx_int_t ngx_http_apimon_admin_final(ngx_http_apimon_admin_ctx_t *ctx,
    ngx_int_t rc);


/* routing and Redis calls (ngx_http_apimon_admin_route.c) */

ngx_int_t ngx_http_apimon_admin_route(ngx_http_request_t *r,
    ngx_http_apimon_admin_ctx_t *ctx);
ngx_int_t ngx_http_apimon_admin_routes_check(ngx_conf_t *cf);
ngx_int_t ngx_http_apimon_admin_script(ngx_http_request_t *r,
    ngx_http_apimon_admin_ctx_t *ctx, ngx_str_t *key, ngx_str_t *args,
    ngx_uint_t nargs, ngx_http_apimon_admin_reply_pt reply);
ngx_int_t ngx_http_apimon_admin_command(ngx_http_request_t *r,
    ngx_http_apimon_admin_ctx_t *ctx, ngx_str_t *args, ngx_uint_t nargs,
    ngx_http_apimon_admin_reply_pt reply);
ngx_uint_t ngx_http_apimon_admin_is(ngx_str_t *s, char *text);
ngx_uint_t ngx_http_apimon_admin_valid_name(u_char *p, size_t len);
ngx_uint_t ngx_http_apimon_admin_valid_email(u_char *p, size_t len);
ngx_uint_t ngx_http_apimon_admin_valid_uuid(u_char *p, size_t len);


/* request bodies and query arguments (ngx_http_apimon_admin_body.c) */

ngx_int_t ngx_http_apimon_admin_read_json(ngx_http_request_t *r,
    ngx_http_apimon_admin_ctx_t *ctx);
ngx_int_t ngx_http_apimon_admin_body_string(ngx_http_request_t *r,
    ngx_http_apimon_admin_ctx_t *ctx, char *field, ngx_uint_t required,
    ngx_str_t *value);
ngx_int_t ngx_http_apimon_admin_body_json(ngx_http_request_t *r,
    cJSON *json, ngx_str_t *value);
ngx_int_t ngx_http_apimon_admin_body_time(ngx_http_request_t *r,
    ngx_http_apimon_admin_ctx_t *ctx, char *field, ngx_str_t *value);
ngx_int_t ngx_http_apimon_admin_arg(ngx_http_request_t *r, char *name,
    ngx_str_t *value);
ngx_int_t ngx_http_apimon_admin_page(ngx_http_request_t *r,
    ngx_http_apimon_admin_ctx_t *ctx, ngx_str_t *start, ngx_str_t *count);


/* answers (ngx_http_apimon_admin_reply.c) */

ngx_int_t ngx_http_apimon_admin_error(ngx_http_request_t *r,
    ngx_uint_t status, const char *fmt, ...);
ngx_int_t ngx_http_apimon_admin_send(ngx_http_request_t *r,
    ngx_uint_t status, cJSON *json);
ngx_int_t ngx_http_apimon_admin_header(ngx_http_request_t *r, char *key,
    ngx_str_t *v);
ngx_int_t ngx_http_apimon_admin_location(ngx_http_request_t *r,
    ngx_str_t *name);
cJSON *ngx_http_apimon_admin_parse(ngx_http_request_t *r, redisReply *reply);


/* conditional requests, media type (ngx_http_apimon_admin_cond.c) */

void ngx_http_apimon_admin_if_match(ngx_http_request_t *r, ngx_str_t *value);
ngx_int_t ngx_http_apimon_admin_etag(ngx_http_request_t *r, cJSON *raw);
ngx_int_t ngx_http_apimon_admin_etag_json(ngx_http_request_t *r,
    cJSON *json);
ngx_int_t ngx_http_apimon_admin_media_type(ngx_http_request_t *r);


/* safe retries (ngx_http_apimon_admin_idem.c) */

ngx_int_t ngx_http_apimon_admin_idem_header(ngx_http_request_t *r,
    ngx_str_t *value);
ngx_int_t ngx_http_apimon_admin_idem_args(ngx_http_request_t *r,
    ngx_http_apimon_admin_ctx_t *ctx, ngx_str_t *args);
ngx_int_t ngx_http_apimon_admin_idem_replay(ngx_http_request_t *r,
    ngx_http_apimon_admin_ctx_t *ctx, cJSON *raw);


/* the public shapes of the resources (ngx_http_apimon_admin_json.c) */

cJSON *ngx_http_apimon_admin_sub_json(cJSON *raw);
cJSON *ngx_http_apimon_admin_product_json(cJSON *product, cJSON *plans);
cJSON *ngx_http_apimon_admin_products_json(cJSON *catalog);
cJSON *ngx_http_apimon_admin_product_find(cJSON *catalog, ngx_str_t *name);
cJSON *ngx_http_apimon_admin_owner_json(cJSON *raw);
cJSON *ngx_http_apimon_admin_hash_json(redisReply *reply);
cJSON *ngx_http_apimon_admin_page_json(ngx_http_request_t *r,
    redisReply *reply, char *name, cJSON *(*shape)(cJSON *raw));
cJSON *ngx_http_apimon_admin_usage_json(ngx_http_apimon_admin_ctx_t *ctx,
    redisReply *reply);
cJSON *ngx_http_apimon_admin_audit_json(ngx_http_apimon_admin_ctx_t *ctx,
    redisReply *reply);


/*
 * the route table, beside its operations (ngx_http_apimon_admin_ops.c);
 * a row with a NULL path ends it
 */
extern ngx_http_apimon_admin_route_t  ngx_http_apimon_admin_routes[];


#endif /* _NGX_HTTP_APIMON_ADMIN_H_INCLUDED_ */
