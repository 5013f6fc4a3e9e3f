
/*
 * apimon: the management API's own declarations, shared by
 * ngx_http_apimon_admin.c (module, configuration, request flow, responses,
 * Redis glue) and ngx_http_apimon_admin_ops.c (the endpoints).
 */


#ifndef _NGX_HTTP_APIMON_ADMIN_H_INCLUDED_
#define _NGX_HTTP_APIMON_ADMIN_H_INCLUDED_


#include "ngx_http_apimon.h"

#include <cjson/cJSON.h>
#include <openssl/sha.h>


#define NGX_HTTP_APIMON_ADMIN_MAX_SEGS      10
#define NGX_HTTP_APIMON_ADMIN_MAX_ARGS      12
#define NGX_HTTP_APIMON_ADMIN_PAGE          100
#define NGX_HTTP_APIMON_ADMIN_PAGE_MAX      1000
#define NGX_HTTP_APIMON_ADMIN_TOKEN_MIN     16
#define NGX_HTTP_APIMON_ADMIN_TOKEN_FILE_MAX  65536
#define NGX_HTTP_APIMON_ADMIN_USAGE_DAYS    400
#define NGX_HTTP_APIMON_ADMIN_MAX_MEMBERS   64


typedef struct {
    ngx_str_t                      name;
    u_char                         digest[SHA256_DIGEST_LENGTH];
} ngx_http_apimon_admin_token_t;


typedef struct {
    ngx_array_t                   *tokens;     /* NULL: no token file */
    ngx_str_t                      org;
    size_t                         body_max;
} ngx_http_apimon_admin_loc_conf_t;


typedef enum {
    NGX_HTTP_APIMON_ADMIN_PRODUCTS = 0,
    NGX_HTTP_APIMON_ADMIN_PRODUCT,
    NGX_HTTP_APIMON_ADMIN_OWNERS,
    NGX_HTTP_APIMON_ADMIN_OWNER,
    NGX_HTTP_APIMON_ADMIN_SUBS,
    NGX_HTTP_APIMON_ADMIN_SUB,
    NGX_HTTP_APIMON_ADMIN_SUB_ACTION,
    NGX_HTTP_APIMON_ADMIN_SUB_USAGE,
    NGX_HTTP_APIMON_ADMIN_SUB_KEY,
    NGX_HTTP_APIMON_ADMIN_AUDIT
} ngx_http_apimon_admin_endpoint_e;


typedef struct ngx_http_apimon_admin_ctx_s  ngx_http_apimon_admin_ctx_t;
typedef struct ngx_http_apimon_admin_op_s   ngx_http_apimon_admin_op_t;

typedef ngx_int_t (*ngx_http_apimon_admin_start_pt)(ngx_http_request_t *r,
    ngx_http_apimon_admin_ctx_t *ctx);
typedef ngx_int_t (*ngx_http_apimon_admin_reply_pt)(ngx_http_request_t *r,
    ngx_http_apimon_admin_ctx_t *ctx, redisReply *reply);


struct ngx_http_apimon_admin_ctx_s {
    ngx_http_request_t              *request;
    ngx_http_apimon_redis_call_t    *call;
    ngx_http_apimon_admin_reply_pt   reply;
    ngx_http_apimon_admin_op_t      *op;

    ngx_uint_t                       endpoint;
    ngx_str_t                        who;         /* the token's name */

    ngx_str_t                        kind;        /* developer | appgroup */
    ngx_str_t                        owner;       /* email | app group name */
    ngx_str_t                        name;        /* product or sub id */
    ngx_str_t                        action;      /* expire, primary, ... */

    cJSON                           *body;        /* NULL: none sent */
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


struct ngx_http_apimon_admin_op_s {
    ngx_uint_t                       method;
    ngx_http_apimon_admin_start_pt   start;
    ngx_http_apimon_admin_body_e     body;
    char                           **fields;      /* the members it takes;
                                                     NULL: its script
                                                     checks them */
};


typedef struct {
    ngx_str_t                        allow;
    ngx_http_apimon_admin_op_t       ops[2];
} ngx_http_apimon_admin_endpoint_t;


/* the scripts the management API calls */
typedef enum {
    NGX_HTTP_APIMON_ADMIN_OWNER_PUT_SCRIPT = 0,
    NGX_HTTP_APIMON_ADMIN_OWNER_LIST_SCRIPT,
    NGX_HTTP_APIMON_ADMIN_SUB_CREATE_SCRIPT,
    NGX_HTTP_APIMON_ADMIN_SUB_LIST_SCRIPT,
    NGX_HTTP_APIMON_ADMIN_SUB_STATE_SCRIPT,
    NGX_HTTP_APIMON_ADMIN_SUB_KEY_SCRIPT,
    NGX_HTTP_APIMON_ADMIN_SUB_VIEW_SCRIPT,
    NGX_HTTP_APIMON_ADMIN_SUB_USAGE_SCRIPT,
    NGX_HTTP_APIMON_ADMIN_NSCRIPTS
} ngx_http_apimon_admin_script_e;


ngx_int_t ngx_http_apimon_admin_error(ngx_http_request_t *r,
    ngx_uint_t status, const char *fmt, ...);
ngx_int_t ngx_http_apimon_admin_send(ngx_http_request_t *r,
    ngx_uint_t status, cJSON *json);
ngx_int_t ngx_http_apimon_admin_script(ngx_http_request_t *r,
    ngx_http_apimon_admin_ctx_t *ctx, ngx_uint_t script, ngx_str_t *key,
    ngx_str_t *args, ngx_uint_t nargs, ngx_http_apimon_admin_reply_pt reply);
ngx_int_t ngx_http_apimon_admin_command(ngx_http_request_t *r,
    ngx_http_apimon_admin_ctx_t *ctx, ngx_str_t *args, ngx_uint_t nargs,
    ngx_http_apimon_admin_reply_pt reply);
cJSON *ngx_http_apimon_admin_parse(ngx_http_request_t *r, redisReply *reply);
ngx_int_t ngx_http_apimon_admin_arg(ngx_http_request_t *r, char *name,
    ngx_str_t *value);
ngx_int_t ngx_http_apimon_admin_page(ngx_http_request_t *r,
    ngx_http_apimon_admin_ctx_t *ctx, ngx_str_t *start, ngx_str_t *count);
void ngx_http_apimon_admin_client(ngx_http_request_t *r, ngx_str_t *who,
    ngx_str_t *addr);
ngx_uint_t ngx_http_apimon_admin_is(ngx_str_t *s, char *text);
ngx_uint_t ngx_http_apimon_admin_valid_name(u_char *p, size_t len);
ngx_uint_t ngx_http_apimon_admin_valid_email(u_char *p, size_t len);
ngx_uint_t ngx_http_apimon_admin_valid_uuid(u_char *p, size_t len);
ngx_int_t ngx_http_apimon_admin_body_string(ngx_http_request_t *r,
    ngx_http_apimon_admin_ctx_t *ctx, char *field, ngx_uint_t required,
    ngx_str_t *value);
ngx_int_t ngx_http_apimon_admin_body_time(ngx_http_request_t *r,
    ngx_http_apimon_admin_ctx_t *ctx, char *field, ngx_str_t *value);
ngx_int_t ngx_http_apimon_admin_header(ngx_http_request_t *r, char *key,
    ngx_str_t *v);
ngx_int_t ngx_http_apimon_admin_location(ngx_http_request_t *r,
    ngx_str_t *name);
ngx_int_t ngx_http_apimon_admin_products(ngx_http_request_t *r,
    ngx_http_apimon_admin_ctx_t *ctx);
ngx_int_t ngx_http_apimon_admin_owners_list(ngx_http_request_t *r,
    ngx_http_apimon_admin_ctx_t *ctx);
ngx_int_t ngx_http_apimon_admin_owner_create(ngx_http_request_t *r,
    ngx_http_apimon_admin_ctx_t *ctx);
ngx_int_t ngx_http_apimon_admin_owner_get(ngx_http_request_t *r,
    ngx_http_apimon_admin_ctx_t *ctx);
ngx_int_t ngx_http_apimon_admin_owner_update(ngx_http_request_t *r,
    ngx_http_apimon_admin_ctx_t *ctx);
ngx_int_t ngx_http_apimon_admin_subs_list(ngx_http_request_t *r,
    ngx_http_apimon_admin_ctx_t *ctx);
ngx_int_t ngx_http_apimon_admin_sub_purchase(ngx_http_request_t *r,
    ngx_http_apimon_admin_ctx_t *ctx);
ngx_int_t ngx_http_apimon_admin_sub_get(ngx_http_request_t *r,
    ngx_http_apimon_admin_ctx_t *ctx);
ngx_int_t ngx_http_apimon_admin_sub_action(ngx_http_request_t *r,
    ngx_http_apimon_admin_ctx_t *ctx);
ngx_int_t ngx_http_apimon_admin_sub_usage(ngx_http_request_t *r,
    ngx_http_apimon_admin_ctx_t *ctx);
ngx_int_t ngx_http_apimon_admin_sub_key(ngx_http_request_t *r,
    ngx_http_apimon_admin_ctx_t *ctx);
ngx_int_t ngx_http_apimon_admin_audit(ngx_http_request_t *r,
    ngx_http_apimon_admin_ctx_t *ctx);


#endif /* _NGX_HTTP_APIMON_ADMIN_H_INCLUDED_ */
