
/*
 * apimon: the management API (Apigee-shaped REST), served by "apimon_admin".
 *
 * Every request is authenticated (bearer token from apimon_admin_token_file),
 * routed to one endpoint, its body (if any) read asynchronously and checked,
 * and answered from exactly one asynchronous Redis call: a provisioning
 * script of schema/ for changes (each one also appends to the audit stream),
 * a read script or a plain command for reads.  The request context keeps
 * the call; a pool cleanup cancels it when the request goes away first.
 */


#include "ngx_http_apimon_admin.h"

#include <math.h>
#include <openssl/crypto.h>


static ngx_int_t ngx_http_apimon_admin_handler(ngx_http_request_t *r);
static void ngx_http_apimon_admin_body_handler(ngx_http_request_t *r);
static void ngx_http_apimon_admin_run(ngx_http_request_t *r,
    ngx_http_apimon_admin_ctx_t *ctx);
static ngx_int_t ngx_http_apimon_admin_final(ngx_http_apimon_admin_ctx_t *ctx,
    ngx_int_t rc);
static void ngx_http_apimon_admin_cleanup(void *data);
static ngx_int_t ngx_http_apimon_admin_auth(ngx_http_request_t *r,
    ngx_http_apimon_admin_ctx_t *ctx);
static ngx_int_t ngx_http_apimon_admin_route(ngx_http_request_t *r,
    ngx_http_apimon_admin_ctx_t *ctx);
static ngx_int_t ngx_http_apimon_admin_read_json(ngx_http_request_t *r,
    ngx_http_apimon_admin_ctx_t *ctx);
static ngx_int_t ngx_http_apimon_admin_members(ngx_http_request_t *r,
    ngx_http_apimon_admin_ctx_t *ctx, u_char *text, u_char *last);
static ngx_int_t ngx_http_apimon_admin_unknown(ngx_http_request_t *r,
    char *name);

static void ngx_http_apimon_admin_redis_done(redisReply *reply,
    const char *err, void *data);


static ngx_int_t ngx_http_apimon_admin_init(ngx_conf_t *cf);
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


/*
 * The members each body may have: any other one is refused by name, never
 * ignored.  The owners' bodies are checked by owner_put, which knows the
 * fields of each kind.
 */

static char  *ngx_http_apimon_admin_no_fields[] = { NULL };

static char  *ngx_http_apimon_admin_purchase_fields[] = {
    "apiproduct", "plan", "startTime", "endTime", NULL
};


/* indexed by ngx_http_apimon_admin_endpoint_e */
static ngx_http_apimon_admin_endpoint_t  ngx_http_apimon_admin_endpoints[] = {
    { ngx_string("GET"),
      { { NGX_HTTP_GET, ngx_http_apimon_admin_products, 0, NULL },
        { 0, NULL, 0, NULL } } },
    { ngx_string("GET"),
      { { NGX_HTTP_GET, ngx_http_apimon_admin_products, 0, NULL },
        { 0, NULL, 0, NULL } } },
    { ngx_string("GET, POST"),
      { { NGX_HTTP_GET, ngx_http_apimon_admin_owners_list, 0, NULL },
        { NGX_HTTP_POST, ngx_http_apimon_admin_owner_create,
          NGX_HTTP_APIMON_ADMIN_BODY, NULL } } },
    { ngx_string("GET, PUT"),
      { { NGX_HTTP_GET, ngx_http_apimon_admin_owner_get, 0, NULL },
        { NGX_HTTP_PUT, ngx_http_apimon_admin_owner_update,
          NGX_HTTP_APIMON_ADMIN_BODY, NULL } } },
    { ngx_string("GET, POST"),
      { { NGX_HTTP_GET, ngx_http_apimon_admin_subs_list, 0, NULL },
        { NGX_HTTP_POST, ngx_http_apimon_admin_sub_purchase,
          NGX_HTTP_APIMON_ADMIN_BODY,
          ngx_http_apimon_admin_purchase_fields } } },
    { ngx_string("GET"),
      { { NGX_HTTP_GET, ngx_http_apimon_admin_sub_get, 0, NULL },
        { 0, NULL, 0, NULL } } },
    { ngx_string("POST"),
      { { NGX_HTTP_POST, ngx_http_apimon_admin_sub_action,
          NGX_HTTP_APIMON_ADMIN_BODY_OPTIONAL,
          ngx_http_apimon_admin_no_fields },
        { 0, NULL, 0, NULL } } },
    { ngx_string("GET"),
      { { NGX_HTTP_GET, ngx_http_apimon_admin_sub_usage, 0, NULL },
        { 0, NULL, 0, NULL } } },
    { ngx_string("POST"),
      { { NGX_HTTP_POST, ngx_http_apimon_admin_sub_key,
          NGX_HTTP_APIMON_ADMIN_BODY_OPTIONAL,
          ngx_http_apimon_admin_no_fields },
        { 0, NULL, 0, NULL } } },
    { ngx_string("GET"),
      { { NGX_HTTP_GET, ngx_http_apimon_admin_audit, 0, NULL },
        { 0, NULL, 0, NULL } } }
};


/* indexed by ngx_http_apimon_admin_script_e */
static const char  *ngx_http_apimon_admin_script_names[] = {
    "owner_put",
    "owner_list",
    "subscription_create",
    "subscription_list",
    "subscription_state",
    "subscription_key",
    "subscription_view",
    "subscription_usage"
};

/* the transport's indexes of those scripts */
static ngx_uint_t
    ngx_http_apimon_admin_script_index[NGX_HTTP_APIMON_ADMIN_NSCRIPTS];


static ngx_str_t  ngx_http_apimon_admin_json_type =
    ngx_string("application/json");
static ngx_str_t  ngx_http_apimon_admin_problem_type =
    ngx_string("application/problem+json");


/* request flow */

static ngx_int_t
ngx_http_apimon_admin_handler(ngx_http_request_t *r)
{
    ngx_int_t                           rc;
    ngx_uint_t                          i;
    ngx_pool_cleanup_t                 *cln;
    ngx_http_apimon_admin_op_t         *op;
    ngx_http_apimon_admin_ctx_t        *ctx;
    ngx_http_apimon_admin_endpoint_t   *ep;
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

    op = NULL;
    alcf = ngx_http_get_module_loc_conf(r, ngx_http_apimon_admin_module);

    rc = ngx_http_apimon_admin_auth(r, ctx);

    if (rc == NGX_OK) {
        rc = ngx_http_apimon_admin_route(r, ctx);
    }

    if (rc == NGX_OK) {
        ep = &ngx_http_apimon_admin_endpoints[ctx->endpoint];

        for (i = 0; i < 2; i++) {
            if (ep->ops[i].method == r->method) {
                op = &ep->ops[i];
                break;
            }
        }

        if (op == NULL) {
            rc = ngx_http_apimon_admin_error(r, NGX_HTTP_NOT_ALLOWED,
                                             "method %V not allowed here "
                                             "(allowed: %V)",
                                             &r->method_name, &ep->allow);

        } else if (op->body != NGX_HTTP_APIMON_ADMIN_NO_BODY
                   && r->headers_in.content_length_n > (off_t) alcf->body_max)
        {
            rc = ngx_http_apimon_admin_error(r,
                                     NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                     "request body is larger than %uz bytes",
                                     alcf->body_max);
        }
    }

    if (rc != NGX_OK) {
        if (ngx_http_discard_request_body(r) != NGX_OK) {
            r->keepalive = 0;
        }

        return ngx_http_apimon_admin_final(ctx, rc);
    }

    ctx->op = op;

    if (op->body == NGX_HTTP_APIMON_ADMIN_NO_BODY) {
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
 * Runs the endpoint; it either answers at once (bad input) or starts one
 * Redis call whose reply handler answers.  Finalizes exactly once.
 */

static void
ngx_http_apimon_admin_run(ngx_http_request_t *r,
    ngx_http_apimon_admin_ctx_t *ctx)
{
    ngx_int_t  rc;

    rc = ctx->op->start(r, ctx);

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

static ngx_int_t
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


/* routing */

ngx_uint_t
ngx_http_apimon_admin_is(ngx_str_t *s, char *text)
{
    size_t  len;

    len = ngx_strlen(text);

    return s->len == len && ngx_strncmp(s->data, text, len) == 0;
}


/* ^[A-Za-z0-9._-]{1,64}$, the catalog's and app groups' names */

ngx_uint_t
ngx_http_apimon_admin_valid_name(u_char *p, size_t len)
{
    size_t  i;

    if (len == 0 || len > 64) {
        return 0;
    }

    for (i = 0; i < len; i++) {
        if (!(isalnum(p[i]) || p[i] == '.' || p[i] == '_' || p[i] == '-')) {
            return 0;
        }
    }

    return 1;
}


/* local@domain, printable, no characters that matter in key names */

ngx_uint_t
ngx_http_apimon_admin_valid_email(u_char *p, size_t len)
{
    size_t      i;
    ngx_uint_t  at;

    if (len < 3 || len > 254) {
        return 0;
    }

    at = 0;

    for (i = 0; i < len; i++) {
        if (p[i] <= ' ' || p[i] >= 0x7f || p[i] == '/' || p[i] == ':'
            || p[i] == '{' || p[i] == '}' || p[i] == '"' || p[i] == '\\')
        {
            return 0;
        }

        if (p[i] == '@') {
            if (at || i == 0 || i == len - 1) {
                return 0;
            }

            at = 1;
        }
    }

    return at;
}


ngx_uint_t
ngx_http_apimon_admin_valid_uuid(u_char *p, size_t len)
{
    size_t  i;

    if (len != NGX_HTTP_APIMON_SUB_ID_LEN) {
        return 0;
    }

    for (i = 0; i < len; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (p[i] != '-') {
                return 0;
            }

        } else if (!((p[i] >= '0' && p[i] <= '9')
                     || (p[i] >= 'a' && p[i] <= 'f')))
        {
            return 0;
        }
    }

    return 1;
}


/* "name:action" -> name, action (action empty when there is no colon) */

static void
ngx_http_apimon_admin_split_action(ngx_str_t *seg, ngx_str_t *name,
    ngx_str_t *action)
{
    u_char  *colon;

    colon = ngx_strlchr(seg->data, seg->data + seg->len, ':');

    if (colon == NULL) {
        *name = *seg;
        ngx_str_null(action);
        return;
    }

    name->data = seg->data;
    name->len = colon - seg->data;
    action->data = colon + 1;
    action->len = seg->data + seg->len - action->data;
}


static ngx_int_t
ngx_http_apimon_admin_route_sub(ngx_http_request_t *r,
    ngx_http_apimon_admin_ctx_t *ctx, ngx_str_t *seg, ngx_uint_t n)
{
    ngx_str_t  last, sub;

    /* seg[0] is "{name}" or "{name}:action" */

    ngx_http_apimon_admin_split_action(&seg[0], &sub, &ctx->action);

    if (!ngx_http_apimon_admin_valid_uuid(sub.data, sub.len)) {
        return ngx_http_apimon_admin_error(r, NGX_HTTP_NOT_FOUND,
                                           "no such subscription");
    }

    ctx->name = sub;

    if (n == 1) {
        ctx->endpoint = ctx->action.len ? NGX_HTTP_APIMON_ADMIN_SUB_ACTION
                                        : NGX_HTTP_APIMON_ADMIN_SUB;
        return NGX_OK;
    }

    if (ctx->action.len) {
        goto not_found;
    }

    if (n == 2 && ngx_http_apimon_admin_is(&seg[1], "usage")) {
        ctx->endpoint = NGX_HTTP_APIMON_ADMIN_SUB_USAGE;
        return NGX_OK;
    }

    if (n == 3 && ngx_http_apimon_admin_is(&seg[1], "keys")) {
        ngx_http_apimon_admin_split_action(&seg[2], &ctx->action, &last);

        if ((ngx_http_apimon_admin_is(&ctx->action, "primary")
             || ngx_http_apimon_admin_is(&ctx->action, "secondary"))
            && ngx_http_apimon_admin_is(&last, "regenerate"))
        {
            ctx->endpoint = NGX_HTTP_APIMON_ADMIN_SUB_KEY;
            return NGX_OK;
        }
    }

not_found:

    return ngx_http_apimon_admin_error(r, NGX_HTTP_NOT_FOUND,
                                       "no such resource: %V", &r->uri);
}


static ngx_int_t
ngx_http_apimon_admin_route_owner(ngx_http_request_t *r,
    ngx_http_apimon_admin_ctx_t *ctx, ngx_str_t *seg, ngx_uint_t n)
{
    ngx_uint_t  valid;

    /* seg[0] is "developers" or "appgroups" */

    if (seg[0].data[0] == 'd') {
        ngx_str_set(&ctx->kind, "developer");

    } else {
        ngx_str_set(&ctx->kind, "appgroup");
    }

    if (n == 1) {
        ctx->endpoint = NGX_HTTP_APIMON_ADMIN_OWNERS;
        return NGX_OK;
    }

    ctx->owner = seg[1];

    valid = (ctx->kind.len == sizeof("developer") - 1)
            ? ngx_http_apimon_admin_valid_email(seg[1].data, seg[1].len)
            : ngx_http_apimon_admin_valid_name(seg[1].data, seg[1].len);

    if (!valid) {
        return ngx_http_apimon_admin_error(r, NGX_HTTP_NOT_FOUND,
                                           "no such %V: %V",
                                           &ctx->kind, &seg[1]);
    }

    if (n == 2) {
        ctx->endpoint = NGX_HTTP_APIMON_ADMIN_OWNER;
        return NGX_OK;
    }

    if (!ngx_http_apimon_admin_is(&seg[2], "subscriptions")) {
        return ngx_http_apimon_admin_error(r, NGX_HTTP_NOT_FOUND,
                                           "no such resource: %V", &r->uri);
    }

    if (n == 3) {
        ctx->endpoint = NGX_HTTP_APIMON_ADMIN_SUBS;
        return NGX_OK;
    }

    return ngx_http_apimon_admin_route_sub(r, ctx, &seg[3], n - 3);
}


/*
 * <location prefix>/v1/organizations/{org}/<resource...>; empty segments
 * (a trailing slash) are skipped.
 */

static ngx_int_t
ngx_http_apimon_admin_route(ngx_http_request_t *r,
    ngx_http_apimon_admin_ctx_t *ctx)
{
    u_char                            *p, *last, *start;
    ngx_str_t                          seg[NGX_HTTP_APIMON_ADMIN_MAX_SEGS];
    ngx_uint_t                         n;
    ngx_http_apimon_admin_loc_conf_t  *alcf;

    p = (u_char *) ngx_strnstr(r->uri.data, "/v1/organizations/", r->uri.len);
    last = r->uri.data + r->uri.len;

    if (p == NULL) {
        goto not_found;
    }

    p += sizeof("/v1/organizations/") - 1;
    n = 0;

    while (p < last) {
        start = p;

        while (p < last && *p != '/') {
            p++;
        }

        if (p > start) {
            if (n == NGX_HTTP_APIMON_ADMIN_MAX_SEGS) {
                goto not_found;
            }

            seg[n].data = start;
            seg[n].len = p - start;
            n++;
        }

        p++;
    }

    alcf = ngx_http_get_module_loc_conf(r, ngx_http_apimon_admin_module);

    if (n == 0 || seg[0].len != alcf->org.len
        || ngx_strncmp(seg[0].data, alcf->org.data, alcf->org.len) != 0)
    {
        return ngx_http_apimon_admin_error(r, NGX_HTTP_NOT_FOUND,
                                           "no such organization: %V",
                                           n ? &seg[0] : &r->uri);
    }

    if (n == 1) {
        goto not_found;
    }

    if (ngx_http_apimon_admin_is(&seg[1], "apiproducts") && n <= 3) {
        if (n == 2) {
            ctx->endpoint = NGX_HTTP_APIMON_ADMIN_PRODUCTS;
            return NGX_OK;
        }

        ctx->name = seg[2];
        ctx->endpoint = NGX_HTTP_APIMON_ADMIN_PRODUCT;
        return NGX_OK;
    }

    if (ngx_http_apimon_admin_is(&seg[1], "audit") && n == 2) {
        ctx->endpoint = NGX_HTTP_APIMON_ADMIN_AUDIT;
        return NGX_OK;
    }

    if (ngx_http_apimon_admin_is(&seg[1], "developers")
        || ngx_http_apimon_admin_is(&seg[1], "appgroups"))
    {
        return ngx_http_apimon_admin_route_owner(r, ctx, &seg[1], n - 1);
    }

not_found:

    return ngx_http_apimon_admin_error(r, NGX_HTTP_NOT_FOUND,
                                       "no such resource: %V", &r->uri);
}


/* request body: one JSON object, at most apimon_admin_body_max bytes */

static ngx_int_t
ngx_http_apimon_admin_read_json(ngx_http_request_t *r,
    ngx_http_apimon_admin_ctx_t *ctx)
{
    off_t                              size;
    u_char                            *text, *p;
    ssize_t                            n;
    ngx_buf_t                         *b;
    ngx_chain_t                       *cl;
    const char                        *end;
    ngx_http_apimon_admin_loc_conf_t  *alcf;

    alcf = ngx_http_get_module_loc_conf(r, ngx_http_apimon_admin_module);

    size = 0;

    if (r->request_body) {
        for (cl = r->request_body->bufs; cl; cl = cl->next) {
            size += ngx_buf_size(cl->buf);
        }
    }

    if (size > (off_t) alcf->body_max) {
        return ngx_http_apimon_admin_error(r,
                                     NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                     "request body is larger than %uz bytes",
                                     alcf->body_max);
    }

    if (size == 0) {
        if (ctx->op->body == NGX_HTTP_APIMON_ADMIN_BODY_OPTIONAL) {
            return NGX_OK;
        }

        return ngx_http_apimon_admin_error(r, NGX_HTTP_BAD_REQUEST,
                                     "request body: a JSON object is "
                                     "required");
    }

    text = ngx_pnalloc(r->pool, (size_t) size);
    if (text == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = text;

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        b = cl->buf;

        if (b->in_file) {
            n = ngx_read_file(b->file, p, (size_t) (b->file_last - b->file_pos),
                              b->file_pos);

            if (n != b->file_last - b->file_pos) {
                return NGX_HTTP_INTERNAL_SERVER_ERROR;
            }

            p += n;
            continue;
        }

        p = ngx_cpymem(p, b->pos, b->last - b->pos);
    }

    ctx->body = cJSON_ParseWithLengthOpts((char *) text, (size_t) size, &end,
                                          0);

    if (ctx->body == NULL) {
        end = cJSON_GetErrorPtr();

        return ngx_http_apimon_admin_error(r, NGX_HTTP_BAD_REQUEST,
                                     "request body: malformed JSON "
                                     "near byte %O",
                                     (off_t) ((end && (u_char *) end >= text
                                               && (u_char *) end <= p)
                                              ? (u_char *) end - text : 0));
    }

    while ((u_char *) end < p && isspace((u_char) *end)) {
        end++;
    }

    if ((u_char *) end != p) {
        return ngx_http_apimon_admin_error(r, NGX_HTTP_BAD_REQUEST,
                                     "request body: malformed JSON: text "
                                     "after the value at byte %O",
                                     (off_t) ((u_char *) end - text));
    }

    if (!cJSON_IsObject(ctx->body)) {
        return ngx_http_apimon_admin_error(r, NGX_HTTP_BAD_REQUEST,
                                     "request body: must be a JSON object");
    }

    return ngx_http_apimon_admin_members(r, ctx, text, p);
}


/*
 * What cJSON lets through unsaid: it keeps strings as C strings, so an
 * escaped NUL ("\u0000") silently cuts one short, and it takes raw control
 * characters in strings.  Both are refused, naming the body's member that
 * holds them (the text is well-formed JSON: cJSON parsed it).
 */

static ngx_int_t
ngx_http_apimon_admin_strings(u_char *p, u_char *last, ngx_str_t *member)
{
    u_char      *start;
    ngx_uint_t   depth, key, bad;

    depth = 0;
    key = 0;
    ngx_str_null(member);

    for ( /* void */ ; p < last; p++) {

        switch (*p) {

        case '{':
            key = (++depth == 1);
            continue;

        case '[':
            depth++;
            continue;

        case '}':
        case ']':
            depth--;
            continue;

        case ',':
            key = (depth == 1);
            continue;

        case '"':
            break;

        default:
            continue;
        }

        start = ++p;
        bad = 0;

        while (p < last && *p != '"') {
            if (*p < 0x20) {
                bad = 1;

            } else if (*p == '\\' && last - p > 1) {
                if (last - p > 5 && ngx_strncmp(p + 1, "u0000", 5) == 0) {
                    bad = 1;
                }

                p++;
            }

            p++;
        }

        /* a member name: the top object's strings after "{" or "," */

        if (key) {
            member->data = start;
            member->len = p - start;
            key = 0;
        }

        if (bad) {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/* a number cJSON could not hold (1e999 reads as infinity) anywhere in it */

static ngx_uint_t
ngx_http_apimon_admin_finite(cJSON *item)
{
    cJSON  *c;

    if (cJSON_IsNumber(item)) {
        return isfinite(item->valuedouble);
    }

    for (c = item->child; c; c = c->next) {
        if (!ngx_http_apimon_admin_finite(c)) {
            return 0;
        }
    }

    return 1;
}


/*
 * Every member of a body is honoured or refused by name: those the
 * endpoint does not take, repeated ones (cJSON would use the first, the
 * scripts' JSON decoder the last), unreadable values.
 */

static ngx_int_t
ngx_http_apimon_admin_members(ngx_http_request_t *r,
    ngx_http_apimon_admin_ctx_t *ctx, u_char *text, u_char *last)
{
    char        **f;
    size_t        len;
    cJSON        *m, *o;
    ngx_str_t     name;
    ngx_uint_t    n;

    if (ngx_http_apimon_admin_strings(text, last, &name) != NGX_OK) {
        return ngx_http_apimon_admin_error(r, NGX_HTTP_BAD_REQUEST,
                                     "%*s: a string must not hold U+0000 "
                                     "or an unescaped control character",
                                     ngx_min(name.len, 64), name.data);
    }

    n = 0;

    for (m = ctx->body->child; m; m = m->next) {

        if (++n > NGX_HTTP_APIMON_ADMIN_MAX_MEMBERS) {
            return ngx_http_apimon_admin_error(r, NGX_HTTP_BAD_REQUEST,
                                         "request body: at most %d members",
                                         NGX_HTTP_APIMON_ADMIN_MAX_MEMBERS);
        }

        len = ngx_min(ngx_strlen(m->string), 64);

        for (o = ctx->body->child; o != m; o = o->next) {
            if (ngx_strcmp(o->string, m->string) == 0) {
                return ngx_http_apimon_admin_error(r, NGX_HTTP_BAD_REQUEST,
                                                   "%*s: duplicate field",
                                                   len, m->string);
            }
        }

        if (!ngx_http_apimon_admin_finite(m)) {
            return ngx_http_apimon_admin_error(r, NGX_HTTP_BAD_REQUEST,
                                               "%*s: number out of range",
                                               len, m->string);
        }

        if (ctx->op->fields == NULL) {
            continue;
        }

        for (f = ctx->op->fields; *f; f++) {
            if (ngx_strcmp(*f, m->string) == 0) {
                break;
            }
        }

        if (*f == NULL) {
            return ngx_http_apimon_admin_unknown(r, m->string);
        }
    }

    return NGX_OK;
}


/* the one wording of a member nobody takes */

static ngx_int_t
ngx_http_apimon_admin_unknown(ngx_http_request_t *r, char *name)
{
    if (ngx_strcmp(name, "attributes") == 0) {
        return ngx_http_apimon_admin_error(r, NGX_HTTP_BAD_REQUEST,
                                     "attributes: not supported (custom "
                                     "attributes are not stored yet)");
    }

    return ngx_http_apimon_admin_error(r, NGX_HTTP_BAD_REQUEST,
                                       "%*s: unknown field",
                                       ngx_min(ngx_strlen(name), 64), name);
}


/*
 * A string member of the body: NGX_OK and *value set, NGX_DECLINED when
 * absent and optional, or the status of the error sent.
 */

ngx_int_t
ngx_http_apimon_admin_body_string(ngx_http_request_t *r,
    ngx_http_apimon_admin_ctx_t *ctx, char *field, ngx_uint_t required,
    ngx_str_t *value)
{
    cJSON  *item;

    item = cJSON_GetObjectItemCaseSensitive(ctx->body, field);

    if (item == NULL || cJSON_IsNull(item)) {
        if (!required) {
            return NGX_DECLINED;
        }

        return ngx_http_apimon_admin_error(r, NGX_HTTP_BAD_REQUEST,
                                           "%s: is required", field);
    }

    if (!cJSON_IsString(item)) {
        return ngx_http_apimon_admin_error(r, NGX_HTTP_BAD_REQUEST,
                                           "%s: must be a string", field);
    }

    value->data = (u_char *) item->valuestring;
    value->len = ngx_strlen(item->valuestring);

    return NGX_OK;
}


/*
 * A time member: ms since the epoch, a JSON integer or a string of digits
 * (Apigee shows times as strings), as decimal digits in *value; NGX_DECLINED
 * when absent.  Only its form is checked here, overflow included: its range
 * is the script's (apimon_time_arg, lib.lua).
 */

ngx_int_t
ngx_http_apimon_admin_body_time(ngx_http_request_t *r,
    ngx_http_apimon_admin_ctx_t *ctx, char *field, ngx_str_t *value)
{
    off_t    ms;
    cJSON   *item;
    u_char  *p;

    item = cJSON_GetObjectItemCaseSensitive(ctx->body, field);

    if (item == NULL || cJSON_IsNull(item)) {
        return NGX_DECLINED;
    }

    ms = NGX_ERROR;

    if (cJSON_IsString(item)) {
        ms = ngx_atoof((u_char *) item->valuestring,
                       ngx_strlen(item->valuestring));

    } else if (cJSON_IsNumber(item)
               && item->valuedouble >= 0
               && item->valuedouble < 9007199254740992.0   /* 2^53 */
               && item->valuedouble == (double) (int64_t) item->valuedouble)
    {
        ms = (off_t) item->valuedouble;
    }

    /* 0 would mean "now" to the script */

    if (ms <= 0) {
        return ngx_http_apimon_admin_error(r, NGX_HTTP_BAD_REQUEST,
                                     "%s: must be milliseconds since the "
                                     "epoch, a positive integer or a string "
                                     "of digits", field);
    }

    value->data = ngx_pnalloc(r->pool, NGX_OFF_T_LEN);
    if (value->data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_sprintf(value->data, "%O", ms);
    value->len = p - value->data;

    return NGX_OK;
}


/* responses */

ngx_int_t
ngx_http_apimon_admin_header(ngx_http_request_t *r, char *key, ngx_str_t *v)
{
    ngx_table_elt_t  *h;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->hash = 1;
    h->key.data = (u_char *) key;
    h->key.len = ngx_strlen(key);
    h->value = *v;

    return NGX_OK;
}


/* Location of a new resource: the request's path and its name */

ngx_int_t
ngx_http_apimon_admin_location(ngx_http_request_t *r, ngx_str_t *name)
{
    u_char     *p;
    ngx_str_t   v;

    v.data = ngx_pnalloc(r->pool, r->uri.len + 1 + name->len);
    if (v.data == NULL) {
        return NGX_ERROR;
    }

    p = ngx_cpymem(v.data, r->uri.data, r->uri.len);

    if (p > v.data && p[-1] != '/') {
        *p++ = '/';
    }

    p = ngx_cpymem(p, name->data, name->len);
    v.len = p - v.data;

    return ngx_http_apimon_admin_header(r, "Location", &v);
}


/* sends json (and frees it) */

ngx_int_t
ngx_http_apimon_admin_send(ngx_http_request_t *r, ngx_uint_t status,
    cJSON *json)
{
    char         *text;
    size_t        len;
    ngx_int_t     rc;
    ngx_str_t     nostore = ngx_string("no-store");
    ngx_buf_t    *b;
    ngx_chain_t   out;

    if (json == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    text = cJSON_PrintUnformatted(json);
    cJSON_Delete(json);

    if (text == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    len = ngx_strlen(text);

    b = ngx_create_temp_buf(r->pool, len + 1);
    if (b == NULL) {
        cJSON_free(text);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b->last = ngx_cpymem(b->last, text, len);
    *b->last++ = '\n';
    cJSON_free(text);

    r->headers_out.status = status;
    r->headers_out.content_length_n = len + 1;

    if (r->headers_out.content_type.len == 0) {
        r->headers_out.content_type = ngx_http_apimon_admin_json_type;
        r->headers_out.content_type_len = ngx_http_apimon_admin_json_type.len;
    }

    r->headers_out.content_type_lowcase = NULL;

    if (ngx_http_apimon_admin_header(r, "Cache-Control", &nostore) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}


/* the problem "type" (tag:apimon,2026:<code>), "code" and "title" */

typedef struct {
    ngx_uint_t   status;
    char        *code;
    char        *title;
} ngx_http_apimon_admin_problem_t;


static ngx_http_apimon_admin_problem_t  ngx_http_apimon_admin_problems[] = {
    { NGX_HTTP_BAD_REQUEST, "bad_request", "Bad Request" },
    { NGX_HTTP_UNAUTHORIZED, "unauthorized", "Unauthorized" },
    { NGX_HTTP_FORBIDDEN, "forbidden", "Forbidden" },
    { NGX_HTTP_NOT_FOUND, "not_found", "Not Found" },
    { NGX_HTTP_NOT_ALLOWED, "method_not_allowed", "Method Not Allowed" },
    { NGX_HTTP_CONFLICT, "conflict", "Conflict" },
    { NGX_HTTP_REQUEST_ENTITY_TOO_LARGE, "body_too_large",
      "Payload Too Large" },
    { NGX_HTTP_SERVICE_UNAVAILABLE, "redis_unavailable",
      "Service Unavailable" },
    { 0, "internal", "Internal Server Error" }
};


static ngx_http_apimon_admin_problem_t *
ngx_http_apimon_admin_problem(ngx_uint_t status)
{
    ngx_http_apimon_admin_problem_t  *p;

    for (p = ngx_http_apimon_admin_problems; p->status; p++) {
        if (p->status == status) {
            break;
        }
    }

    return p;
}


/* an application/problem+json answer (RFC 9457) */

ngx_int_t
ngx_http_apimon_admin_error(ngx_http_request_t *r, ngx_uint_t status,
    const char *fmt, ...)
{
    u_char                            *p;
    u_char                             detail[512], type[64];
    cJSON                             *json;
    ngx_http_apimon_admin_problem_t   *pr;
    va_list                            args;
    ngx_http_apimon_admin_ctx_t       *ctx;
    ngx_http_apimon_admin_endpoint_t  *ep;

    va_start(args, fmt);
    p = ngx_vslprintf(detail, detail + sizeof(detail) - 1, fmt, args);
    va_end(args);
    *p = '\0';

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "apimon admin: %ui: %s", status, detail);

    ctx = ngx_http_get_module_ctx(r, ngx_http_apimon_admin_module);

    if (status == NGX_HTTP_NOT_ALLOWED) {
        ep = &ngx_http_apimon_admin_endpoints[ctx->endpoint];

        if (ngx_http_apimon_admin_header(r, "Allow", &ep->allow) != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    json = cJSON_CreateObject();
    if (json == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    pr = ngx_http_apimon_admin_problem(status);
    p = ngx_sprintf(type, "tag:apimon,2026:%s%Z", pr->code);

    if (cJSON_AddStringToObject(json, "type", (char *) type) == NULL
        || cJSON_AddStringToObject(json, "title", pr->title) == NULL
        || cJSON_AddNumberToObject(json, "status", status) == NULL
        || cJSON_AddStringToObject(json, "detail", (char *) detail) == NULL
        || cJSON_AddStringToObject(json, "code", pr->code) == NULL)
    {
        cJSON_Delete(json);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    r->headers_out.content_type = ngx_http_apimon_admin_problem_type;
    r->headers_out.content_type_len = ngx_http_apimon_admin_problem_type.len;

    ctx = ngx_http_get_module_ctx(r, ngx_http_apimon_admin_module);
    ctx->rc = ngx_http_apimon_admin_send(r, status, json);

    return NGX_DONE;
}


/* Redis */

/* the location's apimon_redis_timeout, as for the request check */

static ngx_msec_t
ngx_http_apimon_admin_timeout(ngx_http_request_t *r)
{
    ngx_http_apimon_loc_conf_t  *lcf;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_apimon_module);

    return lcf->timeout;
}


static ngx_int_t
ngx_http_apimon_admin_argv(ngx_http_request_t *r, ngx_str_t *args,
    ngx_uint_t nargs, const char ***argv, size_t **argvlen)
{
    ngx_uint_t  i;

    *argv = ngx_palloc(r->pool, nargs * sizeof(char *));
    *argvlen = ngx_palloc(r->pool, nargs * sizeof(size_t));

    if (*argv == NULL || *argvlen == NULL) {
        return NGX_ERROR;
    }

    for (i = 0; i < nargs; i++) {
        (*argv)[i] = (const char *) args[i].data;
        (*argvlen)[i] = args[i].len;
    }

    return NGX_OK;
}


/*
 * One script call: key (or NULL) is its only KEYS entry; the argument
 * list is args.
 */

ngx_int_t
ngx_http_apimon_admin_script(ngx_http_request_t *r,
    ngx_http_apimon_admin_ctx_t *ctx, ngx_uint_t script, ngx_str_t *key,
    ngx_str_t *args, ngx_uint_t nargs, ngx_http_apimon_admin_reply_pt reply)
{
    size_t       *argvlen;
    ngx_str_t     all[NGX_HTTP_APIMON_ADMIN_MAX_ARGS + 2];
    ngx_uint_t    n;
    const char  **argv;

    n = 0;

    if (key) {
        ngx_str_set(&all[n], "1");
        n++;
        all[n++] = *key;

    } else {
        ngx_str_set(&all[n], "0");
        n++;
    }

    ngx_memcpy(&all[n], args, nargs * sizeof(ngx_str_t));
    n += nargs;

    if (ngx_http_apimon_admin_argv(r, all, n, &argv, &argvlen) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "apimon admin: script %s",
                   ngx_http_apimon_admin_script_names[script]);

    ctx->reply = reply;
    ctx->call = ngx_http_apimon_redis_script(
                                   ngx_http_apimon_admin_script_index[script],
                                   (int) n, argv, argvlen,
                                   ngx_http_apimon_admin_timeout(r),
                                   ngx_http_apimon_admin_redis_done, ctx);

    if (ctx->call == NULL) {
        return ngx_http_apimon_admin_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                           "redis is unavailable");
    }

    return NGX_OK;
}


ngx_int_t
ngx_http_apimon_admin_command(ngx_http_request_t *r,
    ngx_http_apimon_admin_ctx_t *ctx, ngx_str_t *args, ngx_uint_t nargs,
    ngx_http_apimon_admin_reply_pt reply)
{
    size_t       *argvlen;
    const char  **argv;

    if (ngx_http_apimon_admin_argv(r, args, nargs, &argv, &argvlen) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->reply = reply;
    ctx->call = ngx_http_apimon_redis_command((int) nargs, argv, argvlen,
                                              ngx_http_apimon_admin_timeout(r),
                                              ngx_http_apimon_admin_redis_done,
                                              ctx);

    if (ctx->call == NULL) {
        return ngx_http_apimon_admin_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                           "redis is unavailable");
    }

    return NGX_OK;
}


/* "ERR apimon <code>: <message>" -> HTTP status and detail */

static ngx_int_t
ngx_http_apimon_admin_script_error(ngx_http_request_t *r, redisReply *reply)
{
    u_char      *p, *last, *code;
    ngx_str_t    msg;
    ngx_uint_t   status;

    p = (u_char *) reply->str;
    last = p + reply->len;

    code = (u_char *) ngx_strnstr(p, "apimon ", reply->len);

    if (code == NULL) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "apimon admin: redis error: %*s", reply->len, p);
        return ngx_http_apimon_admin_error(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                           "redis error");
    }

    code += sizeof("apimon ") - 1;

    p = ngx_strlchr(code, last, ':');
    if (p == NULL) {
        p = last;
    }

    msg.data = (p + 2 <= last) ? p + 2 : last;
    msg.len = last - msg.data;

    if (p - code == 11 && ngx_strncmp(code, "bad_request", 11) == 0) {
        status = NGX_HTTP_BAD_REQUEST;

    } else if (p - code == 9 && ngx_strncmp(code, "not_found", 9) == 0) {
        status = NGX_HTTP_NOT_FOUND;

    } else if (p - code == 8 && ngx_strncmp(code, "conflict", 8) == 0) {
        status = NGX_HTTP_CONFLICT;

    } else {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "apimon admin: redis error: %*s", reply->len,
                      reply->str);
        status = NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_apimon_admin_error(r, status, "%V", &msg);
}


static void
ngx_http_apimon_admin_redis_done(redisReply *reply, const char *err,
    void *data)
{
    ngx_http_apimon_admin_ctx_t *ctx = data;

    ngx_int_t            rc;
    ngx_connection_t    *c;
    ngx_http_request_t  *r;

    r = ctx->request;
    c = r->connection;
    ctx->call = NULL;

    if (reply == NULL) {
        ngx_log_error(NGX_LOG_ERR, c->log, 0,
                      "apimon admin: redis: %s", err ? err : "no reply");
        rc = ngx_http_apimon_admin_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                         "redis is unavailable");

    } else if (reply->type == REDIS_REPLY_ERROR) {
        rc = ngx_http_apimon_admin_script_error(r, reply);

    } else {
        rc = ctx->reply(r, ctx, reply);
    }

    if (ctx->call == NULL) {
        ngx_http_finalize_request(r, ngx_http_apimon_admin_final(ctx, rc));
    }

    ngx_http_run_posted_requests(c);
}


/* JSON helpers */

cJSON *
ngx_http_apimon_admin_parse(ngx_http_request_t *r, redisReply *reply)
{
    cJSON  *json;

    if (reply->type != REDIS_REPLY_STRING) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "apimon admin: unexpected redis reply type %d",
                      reply->type);
        return NULL;
    }

    json = cJSON_ParseWithLength(reply->str, reply->len);

    if (json == NULL) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "apimon admin: redis replied with malformed JSON");
    }

    return json;
}


/* query arguments */

ngx_int_t
ngx_http_apimon_admin_arg(ngx_http_request_t *r, char *name, ngx_str_t *value)
{
    u_char     *dst, *src;
    ngx_str_t   raw;

    if (ngx_http_arg(r, (u_char *) name, ngx_strlen(name), &raw) != NGX_OK) {
        return NGX_DECLINED;
    }

    dst = ngx_pnalloc(r->pool, raw.len);
    if (dst == NULL && raw.len) {
        return NGX_ERROR;
    }

    value->data = dst;
    src = raw.data;

    ngx_unescape_uri(&dst, &src, raw.len, 0);

    value->len = dst - value->data;

    return NGX_OK;
}


/* startKey and count (default 100, at most 1000), as in Apigee */

ngx_int_t
ngx_http_apimon_admin_page(ngx_http_request_t *r,
    ngx_http_apimon_admin_ctx_t *ctx, ngx_str_t *start, ngx_str_t *count)
{
    ngx_int_t  n;

    ctx->count = NGX_HTTP_APIMON_ADMIN_PAGE;
    ngx_str_null(start);

    switch (ngx_http_apimon_admin_arg(r, "count", count)) {

    case NGX_OK:
        n = ngx_atoi(count->data, count->len);

        if (n < 1 || n > NGX_HTTP_APIMON_ADMIN_PAGE_MAX) {
            return ngx_http_apimon_admin_error(r, NGX_HTTP_BAD_REQUEST,
                                         "count: must be an integer from 1 "
                                         "to %d",
                                         NGX_HTTP_APIMON_ADMIN_PAGE_MAX);
        }

        ctx->count = n;
        break;

    case NGX_ERROR:
        return NGX_HTTP_INTERNAL_SERVER_ERROR;

    default:
        ngx_str_set(count, "100");
    }

    if (ngx_http_apimon_admin_arg(r, "startKey", start) == NGX_ERROR) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return NGX_OK;
}


/* the audit arguments: who (the token's name) and the client address */

void
ngx_http_apimon_admin_client(ngx_http_request_t *r, ngx_str_t *who,
    ngx_str_t *addr)
{
    ngx_http_apimon_admin_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_apimon_admin_module);

    *who = ctx->who;
    *addr = r->connection->addr_text;
}


/* configuration */

static ngx_int_t
ngx_http_apimon_admin_init(ngx_conf_t *cf)
{
    ngx_int_t   index;
    ngx_uint_t  i;

    for (i = 0; i < NGX_HTTP_APIMON_ADMIN_NSCRIPTS; i++) {
        index = ngx_http_apimon_redis_script_index(
                                       ngx_http_apimon_admin_script_names[i]);
        if (index == NGX_ERROR) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "apimon: script \"%s\" is not compiled in",
                               ngx_http_apimon_admin_script_names[i]);
            return NGX_ERROR;
        }

        ngx_http_apimon_admin_script_index[i] = index;
    }

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
