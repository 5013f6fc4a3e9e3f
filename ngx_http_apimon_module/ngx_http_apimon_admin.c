
/*
 * apimon: the management API (Apigee-shaped REST), served by "apimon_admin".
 *
 * Every request is authenticated (bearer token from apimon_admin_token_file),
 * routed to one row of the route table (ngx_http_apimon_admin_route.c), its
 * body (if any) read asynchronously and checked (_admin_body.c), and
 * answered from exactly one asynchronous Redis call made by the row's
 * operation (_admin_ops.c): a provisioning script of schema/ for changes
 * (each one also appends to the audit stream), a read script or a plain
 * command for reads.  The request context keeps the call; a pool cleanup
 * cancels it when the request goes away first.  This file: the module, its
 * configuration and the token file, the request flow, authentication.
 */


#include "ngx_http_apimon_admin.h"
#include "ngx_http_apimon_metrics.h"

#include <openssl/crypto.h>


static ngx_int_t ngx_http_apimon_admin_handler(ngx_http_request_t *r);
static void ngx_http_apimon_admin_body_handler(ngx_http_request_t *r);
static void ngx_http_apimon_admin_run(ngx_http_request_t *r,
    ngx_http_apimon_admin_ctx_t *ctx);
static void ngx_http_apimon_admin_cleanup(void *data);
static ngx_int_t ngx_http_apimon_admin_auth(ngx_http_request_t *r,
    ngx_http_apimon_admin_ctx_t *ctx);


static ngx_int_t ngx_http_apimon_admin_init(ngx_conf_t *cf);
static ngx_int_t ngx_http_apimon_admin_log(ngx_http_request_t *r);
static void *ngx_http_apimon_admin_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_apimon_admin_merge_loc_conf(ngx_conf_t *cf,
    void *parent, void *child);
static char *ngx_http_apimon_admin(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_apimon_admin_token_file(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);


static ngx_command_t  ngx_http_apimon_admin_commands[] = {

    { ngx_string("apimon_admin"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_apimon_admin,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("apimon_admin_token_file"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_apimon_admin_token_file,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("apimon_organization"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_apimon_admin_loc_conf_t, org),
      NULL },

    { ngx_string("apimon_admin_body_max"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_apimon_admin_loc_conf_t, body_max),
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_apimon_admin_module_ctx = {
    NULL,                                  /* preconfiguration */
    ngx_http_apimon_admin_init,            /* postconfiguration */

    NULL,                                  /* create main configuration */
    NULL,                                  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_apimon_admin_create_loc_conf, /* create location configuration */
    ngx_http_apimon_admin_merge_loc_conf   /* merge location configuration */
};


ngx_module_t  ngx_http_apimon_admin_module = {
    NGX_MODULE_V1,
    &ngx_http_apimon_admin_module_ctx,     /* module context */
    ngx_http_apimon_admin_commands,        /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    NULL,                                  /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    NULL,                                  /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


/* request flow */

static ngx_int_t
ngx_http_apimon_admin_handler(ngx_http_request_t *r)
{
    ngx_int_t                           rc;
    ngx_pool_cleanup_t                 *cln;
    ngx_http_apimon_admin_ctx_t        *ctx;
    ngx_http_apimon_admin_loc_conf_t   *alcf;

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_apimon_admin_ctx_t));
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln->handler = ngx_http_apimon_admin_cleanup;
    cln->data = ctx;

    ctx->request = r;
    ngx_http_set_ctx(r, ctx, ngx_http_apimon_admin_module);

    /*
     * The not-modified filter would replace a 200 with its own 412 or 304
     * when the request has If-Match, If-Unmodified-Since or If-None-Match:
     * after the change was made, and with the only copy of a new key.
     * Every answer here is the API's own.
     */

    r->disable_not_modified = 1;

    /* bad requests are answered at once; NGX_DONE: answered */

    alcf = ngx_http_get_module_loc_conf(r, ngx_http_apimon_admin_module);

    rc = ngx_http_apimon_admin_auth(r, ctx);

    if (rc == NGX_OK) {
        rc = ngx_http_apimon_admin_route(r, ctx);
    }

    if (rc == NGX_OK && ctx->route->body != NGX_HTTP_APIMON_ADMIN_NO_BODY) {
        rc = ngx_http_apimon_admin_media_type(r);
    }

    if (rc == NGX_OK
        && ctx->route->body != NGX_HTTP_APIMON_ADMIN_NO_BODY
        && r->headers_in.content_length_n > (off_t) alcf->body_max)
    {
        rc = ngx_http_apimon_admin_error(r, NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                         "request body is larger than %uz "
                                         "bytes", alcf->body_max);
    }

    if (rc != NGX_OK) {
        if (ngx_http_discard_request_body(r) != NGX_OK) {
            r->keepalive = 0;
        }

        return ngx_http_apimon_admin_final(ctx, rc);
    }

    if (ctx->route->body == NGX_HTTP_APIMON_ADMIN_NO_BODY) {
        rc = ngx_http_discard_request_body(r);
        if (rc != NGX_OK) {
            return rc;
        }

        r->main->count++;
        ngx_http_apimon_admin_run(r, ctx);
        return NGX_DONE;
    }

    r->request_body_in_single_buf = 1;

    rc = ngx_http_read_client_request_body(r,
                                           ngx_http_apimon_admin_body_handler);

    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return rc;
    }

    return NGX_DONE;
}


static void
ngx_http_apimon_admin_body_handler(ngx_http_request_t *r)
{
    ngx_int_t                     rc;
    ngx_http_apimon_admin_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_apimon_admin_module);

    rc = ngx_http_apimon_admin_read_json(r, ctx);

    if (rc != NGX_OK) {
        ngx_http_finalize_request(r, ngx_http_apimon_admin_final(ctx, rc));
        return;
    }

    ngx_http_apimon_admin_run(r, ctx);
}


/*
 * Runs the row's operation; it either answers at once (bad input) or
 * starts one Redis call whose reply handler answers.  Finalizes exactly
 * once.
 */

static void
ngx_http_apimon_admin_run(ngx_http_request_t *r,
    ngx_http_apimon_admin_ctx_t *ctx)
{
    ngx_int_t  rc;

    rc = ctx->route->op(r, ctx);

    if (ctx->call) {
        /* a client that goes away ends the request (499): its pool
         * cleanup then cancels the call */
        r->read_event_handler = ngx_http_test_reading;
        r->write_event_handler = ngx_http_request_empty_handler;
        return;
    }

    ngx_http_finalize_request(r, ngx_http_apimon_admin_final(ctx, rc));
}


/*
 * NGX_DONE from a step means "answered" (an error was sent): the result
 * of sending it is in ctx->rc.
 */

ngx_int_t
ngx_http_apimon_admin_final(ngx_http_apimon_admin_ctx_t *ctx, ngx_int_t rc)
{
    return (rc == NGX_DONE) ? ctx->rc : rc;
}


static void
ngx_http_apimon_admin_cleanup(void *data)
{
    ngx_http_apimon_admin_ctx_t  *ctx = data;

    if (ctx->call) {
        ngx_http_apimon_redis_cancel(ctx->call);
        ctx->call = NULL;
    }

    if (ctx->body) {
        cJSON_Delete(ctx->body);
        ctx->body = NULL;
    }

    if (ctx->key_set) {
        ngx_explicit_memzero(ctx->keys, sizeof(ctx->keys));
    }
}


/* authentication: "Authorization: Bearer <token>" */

static ngx_int_t
ngx_http_apimon_admin_auth(ngx_http_request_t *r,
    ngx_http_apimon_admin_ctx_t *ctx)
{
    u_char                             digest[SHA256_DIGEST_LENGTH];
    ngx_str_t                          token;
    ngx_uint_t                         i, found;
    ngx_table_elt_t                   *h;
    ngx_http_apimon_admin_token_t     *t;
    ngx_http_apimon_admin_loc_conf_t  *alcf;

    alcf = ngx_http_get_module_loc_conf(r, ngx_http_apimon_admin_module);

    if (alcf->tokens == NULL) {
        return ngx_http_apimon_admin_error(r, NGX_HTTP_FORBIDDEN,
                                     "the management API has no tokens "
                                     "(apimon_admin_token_file is not set)");
    }

    h = r->headers_in.authorization;

    if (h == NULL
        || h->value.len <= sizeof("Bearer ") - 1
        || ngx_strncasecmp(h->value.data, (u_char *) "Bearer ",
                           sizeof("Bearer ") - 1)
           != 0)
    {
        goto unauthorized;
    }

    token.data = h->value.data + sizeof("Bearer ") - 1;
    token.len = h->value.len - (sizeof("Bearer ") - 1);

    /* compare digests: the time taken does not depend on the token */

    SHA256(token.data, token.len, digest);

    t = alcf->tokens->elts;
    found = alcf->tokens->nelts;

    for (i = 0; i < alcf->tokens->nelts; i++) {
        if (CRYPTO_memcmp(digest, t[i].digest, SHA256_DIGEST_LENGTH) == 0
            && found == alcf->tokens->nelts)
        {
            found = i;
        }
    }

    if (found == alcf->tokens->nelts) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "apimon admin: wrong bearer token");
        goto unauthorized;
    }

    ctx->who = t[found].name;

    return NGX_OK;

unauthorized:

    r->headers_out.www_authenticate = ngx_list_push(&r->headers_out.headers);
    if (r->headers_out.www_authenticate == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    r->headers_out.www_authenticate->hash = 1;
    ngx_str_set(&r->headers_out.www_authenticate->key, "WWW-Authenticate");
    ngx_str_set(&r->headers_out.www_authenticate->value,
                "Bearer realm=\"apimon\"");

    return ngx_http_apimon_admin_error(r, NGX_HTTP_UNAUTHORIZED,
                                       "a valid bearer token is required");
}


/* configuration */

static ngx_int_t
ngx_http_apimon_admin_init(ngx_conf_t *cf)
{
    ngx_http_handler_pt        *h;
    ngx_http_core_main_conf_t  *cmcf;

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_LOG_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_apimon_admin_log;

    return ngx_http_apimon_admin_routes_check(cf);
}


/* the log phase: a management request in the metrics, by route and status */

static ngx_int_t
ngx_http_apimon_admin_log(ngx_http_request_t *r)
{
    ngx_uint_t                    route;
    ngx_http_apimon_admin_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_apimon_admin_module);

    if (ctx == NULL) {
        return NGX_OK;
    }

    route = ctx->route ? (ngx_uint_t) (ctx->route - ngx_http_apimon_admin_routes)
                       : NGX_HTTP_APIMON_METRICS_ROUTES;

    ngx_http_apimon_metrics_admin(route, r->headers_out.status);

    return NGX_OK;
}


static void *
ngx_http_apimon_admin_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_apimon_admin_loc_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_http_apimon_admin_loc_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     conf->org = { 0, NULL };
     */

    conf->tokens = NGX_CONF_UNSET_PTR;
    conf->body_max = NGX_CONF_UNSET_SIZE;

    return conf;
}


static char *
ngx_http_apimon_admin_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child)
{
    ngx_http_apimon_admin_loc_conf_t  *prev = parent;
    ngx_http_apimon_admin_loc_conf_t  *conf = child;

    ngx_conf_merge_ptr_value(conf->tokens, prev->tokens, NULL);
    ngx_conf_merge_str_value(conf->org, prev->org, "default");
    ngx_conf_merge_size_value(conf->body_max, prev->body_max, 16384);

    return NGX_CONF_OK;
}


static char *
ngx_http_apimon_admin(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_core_loc_conf_t  *clcf;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_apimon_admin_handler;

    return NGX_CONF_OK;
}


/*
 * The token file: one token per line, either "<name>:<token>" or a bare
 * token (named "admin"); empty lines and lines starting with "#" are
 * skipped.  Tokens are at least 16 characters; only their SHA-256 digests
 * are kept.
 */

static char *
ngx_http_apimon_admin_token_line(ngx_conf_t *cf, void *data, u_char *p,
    u_char *last, ngx_str_t *file, ngx_uint_t line)
{
    ngx_array_t  *tokens = data;

    u_char                         *colon;
    ngx_str_t                       token;
    ngx_http_apimon_admin_token_t  *t;

    while (p < last && (*p == ' ' || *p == '\t')) {
        p++;
    }

    if (*p == '#') {
        return NGX_CONF_OK;
    }

    t = ngx_array_push(tokens);
    if (t == NULL) {
        return NGX_CONF_ERROR;
    }

    colon = ngx_strlchr(p, last, ':');

    if (colon == NULL) {
        ngx_str_set(&t->name, "admin");
        token.data = p;
        token.len = last - p;

    } else {
        t->name.len = colon - p;
        t->name.data = ngx_pnalloc(cf->pool, t->name.len);
        if (t->name.data == NULL) {
            return NGX_CONF_ERROR;
        }

        ngx_memcpy(t->name.data, p, t->name.len);
        token.data = colon + 1;
        token.len = last - colon - 1;

        if (!ngx_http_apimon_admin_valid_name(t->name.data, t->name.len)) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"%V\", line %ui: a token name must match "
                               "^[A-Za-z0-9._-]{1,64}$", file, line);
            return NGX_CONF_ERROR;
        }
    }

    if (token.len < NGX_HTTP_APIMON_ADMIN_TOKEN_MIN) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\", line %ui: a token must have at least %d "
                           "characters", file, line,
                           NGX_HTTP_APIMON_ADMIN_TOKEN_MIN);
        return NGX_CONF_ERROR;
    }

    SHA256(token.data, token.len, t->digest);

    return NGX_CONF_OK;
}


static char *
ngx_http_apimon_admin_token_file(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_apimon_admin_loc_conf_t  *alcf = conf;

    char       *rv;
    ngx_str_t  *value, file;

    if (alcf->tokens != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    value = cf->args->elts;
    file = value[1];

    alcf->tokens = ngx_array_create(cf->pool, 2,
                                    sizeof(ngx_http_apimon_admin_token_t));
    if (alcf->tokens == NULL) {
        return NGX_CONF_ERROR;
    }

    rv = ngx_http_apimon_secret_lines(cf, &file,
                                      NGX_HTTP_APIMON_ADMIN_TOKEN_FILE_MAX,
                                      ngx_http_apimon_admin_token_line,
                                      alcf->tokens);

    if (rv == NGX_CONF_OK && alcf->tokens->nelts == 0) {
        ngx_conf_log_error(NGX_LOG_WARN, cf, 0,
                           "\"%V\" holds no token: every management API "
                           "request will be refused", &file);
    }

    return rv;
}
