/*
 * What the client sees: RateLimit-Policy and RateLimit (structured fields,
 * draft-ietf-httpapi-ratelimit-headers), Retry-After, the legacy
 * X-RateLimit-* fields, refusals (their problem+json body is written by
 * ngx_http_apimon_problem.c), and the $apimon_* variables.
 */


#include "ngx_http_apimon.h"


static ngx_int_t ngx_http_apimon_header_filter(ngx_http_request_t *r);
static ngx_int_t ngx_http_apimon_ratelimit_headers(ngx_http_request_t *r,
    ngx_http_apimon_ctx_t *ctx);
static ngx_int_t ngx_http_apimon_legacy_headers(ngx_http_request_t *r,
    ngx_http_apimon_ctx_t *ctx);
static ngx_int_t ngx_http_apimon_add_number_header(ngx_http_request_t *r,
    const char *name, ngx_uint_t n);
static ngx_int_t ngx_http_apimon_error_page(ngx_http_request_t *r,
    ngx_uint_t status);
static ngx_int_t ngx_http_apimon_send_problem(ngx_http_request_t *r,
    ngx_http_apimon_ctx_t *ctx, ngx_uint_t status);

static ngx_int_t ngx_http_apimon_variable_set(ngx_http_variable_value_t *v,
    u_char *data, size_t len);
static ngx_int_t ngx_http_apimon_variable_str(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_apimon_variable_result(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_apimon_variable_remaining(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);


static ngx_http_output_header_filter_pt  ngx_http_next_header_filter;


static ngx_http_variable_t  ngx_http_apimon_vars[] = {

    { ngx_string("apimon_subscription"), NULL,
      ngx_http_apimon_variable_str,
      offsetof(ngx_http_apimon_ctx_t, subscription),
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("apimon_plan"), NULL,
      ngx_http_apimon_variable_str,
      offsetof(ngx_http_apimon_ctx_t, plan),
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("apimon_product"), NULL,
      ngx_http_apimon_variable_str,
      offsetof(ngx_http_apimon_ctx_t, product),
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("apimon_key_version"), NULL,
      ngx_http_apimon_variable_str,
      offsetof(ngx_http_apimon_ctx_t, key_version),
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("apimon_result"), NULL,
      ngx_http_apimon_variable_result, 0,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("apimon_quota_remaining"), NULL,
      ngx_http_apimon_variable_remaining, 1,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("apimon_rate_remaining"), NULL,
      ngx_http_apimon_variable_remaining, 0,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

      ngx_http_null_variable
};


ngx_int_t
ngx_http_apimon_headers_init(ngx_conf_t *cf)
{
    ngx_http_next_header_filter = ngx_http_top_header_filter;
    ngx_http_top_header_filter = ngx_http_apimon_header_filter;

    return NGX_OK;
}


/* every response of a checked request carries the limits */

static ngx_int_t
ngx_http_apimon_header_filter(ngx_http_request_t *r)
{
    ngx_http_apimon_ctx_t  *ctx;

    ctx = ngx_http_apimon_get_ctx(r);

    if (ctx == NULL || ctx->nwindows == 0 || ctx->waiting) {
        return ngx_http_next_header_filter(r);
    }

    if (ngx_http_apimon_ratelimit_headers(r, ctx) != NGX_OK) {
        return NGX_ERROR;
    }

    if (ctx->legacy_headers && ngx_http_apimon_legacy_headers(r, ctx) != NGX_OK)
    {
        return NGX_ERROR;
    }

    return ngx_http_next_header_filter(r);
}


/*
 *   RateLimit-Policy: "plan-rate";q=5;w=1, "plan-quota";q=1000;w=2678400
 *   RateLimit: "plan-rate";r=4;t=1, "plan-quota";r=998;t=86000
 */

static ngx_int_t
ngx_http_apimon_ratelimit_headers(ngx_http_request_t *r,
    ngx_http_apimon_ctx_t *ctx)
{
    size_t                     len;
    u_char                    *policy, *state, *p, *s;
    ngx_uint_t                 i;
    ngx_table_elt_t           *h;
    ngx_http_apimon_window_t  *w;

    len = 0;

    for (i = 0; i < ctx->nwindows; i++) {
        len += sizeof(", \"\";q=;w=") - 1 + ctx->windows[i].name.len
               + 2 * NGX_INT_T_LEN;
    }

    policy = ngx_pnalloc(r->pool, len);
    state = ngx_pnalloc(r->pool, len);

    if (policy == NULL || state == NULL) {
        return NGX_ERROR;
    }

    p = policy;
    s = state;

    for (i = 0; i < ctx->nwindows; i++) {
        w = &ctx->windows[i];

        if (i) {
            p = ngx_cpymem(p, ", ", 2);
            s = ngx_cpymem(s, ", ", 2);
        }

        /* window names are [a-z-]: no escaping needed in an sf-string */
        p = ngx_sprintf(p, "\"%V\";q=%ui;w=%ui", &w->name, w->limit, w->window);
        s = ngx_sprintf(s, "\"%V\";r=%ui;t=%ui", &w->name, w->remaining,
                        w->reset);
    }

    h = ngx_http_apimon_add_header(r, "RateLimit-Policy",
                                   sizeof("RateLimit-Policy") - 1);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->value.data = policy;
    h->value.len = p - policy;

    h = ngx_http_apimon_add_header(r, "RateLimit", sizeof("RateLimit") - 1);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->value.data = state;
    h->value.len = s - state;

    return NGX_OK;
}


/* X-RateLimit-*: the window closest to refusing */

static ngx_int_t
ngx_http_apimon_legacy_headers(ngx_http_request_t *r,
    ngx_http_apimon_ctx_t *ctx)
{
    ngx_uint_t                 i;
    ngx_http_apimon_window_t  *w, *min;

    min = &ctx->windows[0];

    for (i = 1; i < ctx->nwindows; i++) {
        w = &ctx->windows[i];

        if (w->remaining < min->remaining
            || (w->remaining == min->remaining && w->reset > min->reset))
        {
            min = w;
        }
    }

    if (ngx_http_apimon_add_number_header(r, "X-RateLimit-Limit", min->limit)
        != NGX_OK
        || ngx_http_apimon_add_number_header(r, "X-RateLimit-Remaining",
                                             min->remaining)
           != NGX_OK
        || ngx_http_apimon_add_number_header(r, "X-RateLimit-Reset",
                                             min->reset)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


ngx_table_elt_t *
ngx_http_apimon_add_header(ngx_http_request_t *r, const char *name,
    size_t len)
{
    ngx_table_elt_t  *h;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NULL;
    }

    h->hash = 1;
    h->key.data = (u_char *) name;
    h->key.len = len;
    h->lowcase_key = NULL;
    h->value.len = 0;
    h->value.data = NULL;

    return h;
}


static ngx_int_t
ngx_http_apimon_add_number_header(ngx_http_request_t *r, const char *name,
    ngx_uint_t n)
{
    u_char           *p;
    ngx_table_elt_t  *h;

    p = ngx_pnalloc(r->pool, NGX_INT_T_LEN);
    if (p == NULL) {
        return NGX_ERROR;
    }

    h = ngx_http_apimon_add_header(r, name, ngx_strlen(name));
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->value.data = p;
    h->value.len = ngx_sprintf(p, "%ui", n) - p;

    return NGX_OK;
}


/*
 * A refusal: 401 with WWW-Authenticate, 429 and quota refusals with
 * Retry-After, and an application/problem+json body, unless an error_page
 * is configured for the status: then nginx serves that page.
 */

ngx_int_t
ngx_http_apimon_refuse(ngx_http_request_t *r, ngx_http_apimon_ctx_t *ctx,
    ngx_uint_t status)
{
    ngx_int_t                    rc;
    ngx_table_elt_t             *h;
    ngx_http_core_loc_conf_t    *clcf;
    ngx_http_apimon_loc_conf_t  *alcf;

    alcf = ngx_http_get_module_loc_conf(r, ngx_http_apimon_module);

    ngx_log_error(alcf->log_level, r->connection->log, 0,
                  "apimon: refused with %ui: %V%s%V", status,
                  ngx_http_apimon_result_name(ctx->result),
                  ctx->subscription.len ? ", subscription " : "",
                  &ctx->subscription);

    if (status == NGX_HTTP_UNAUTHORIZED) {
        h = ngx_http_apimon_add_header(r, "WWW-Authenticate",
                                       sizeof("WWW-Authenticate") - 1);
        if (h == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        ngx_str_set(&h->value, "ApiKey realm=\"apimon\"");

        r->headers_out.www_authenticate = h;
    }

    if ((ctx->result == NGX_HTTP_APIMON_RATE_LIMITED
         || ctx->result == NGX_HTTP_APIMON_QUOTA_EXCEEDED)
        && ctx->retry_after)
    {
        if (ngx_http_apimon_add_number_header(r, "Retry-After",
                                              ctx->retry_after)
            != NGX_OK)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);

    if (clcf->satisfy == NGX_HTTP_SATISFY_ANY
        && (status == NGX_HTTP_UNAUTHORIZED || status == NGX_HTTP_FORBIDDEN))
    {
        /* "satisfy any": another access module may still let it through */
        return status;
    }

    if (ngx_http_apimon_error_page(r, status) == NGX_OK) {
        return status;
    }

    rc = ngx_http_apimon_send_problem(r, ctx, status);

    ngx_http_finalize_request(r, rc);

    return NGX_DONE;
}


static ngx_int_t
ngx_http_apimon_error_page(ngx_http_request_t *r, ngx_uint_t status)
{
    ngx_uint_t                 i;
    ngx_http_err_page_t       *err_page;
    ngx_http_core_loc_conf_t  *clcf;

    clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);

    if (clcf->error_pages == NULL || r->uri_changes == 0) {
        return NGX_DECLINED;
    }

    err_page = clcf->error_pages->elts;

    for (i = 0; i < clcf->error_pages->nelts; i++) {
        if ((ngx_uint_t) err_page[i].status == status) {
            return NGX_OK;
        }
    }

    return NGX_DECLINED;
}


/* the result's fixed texts only: nothing of the request, never the key */

static ngx_int_t
ngx_http_apimon_send_problem(ngx_http_request_t *r,
    ngx_http_apimon_ctx_t *ctx, ngx_uint_t status)
{
    ngx_int_t                  rc;
    ngx_http_apimon_result_t  *res;

    rc = ngx_http_discard_request_body(r);

    if (rc != NGX_OK) {
        return rc;
    }

    res = ngx_http_apimon_result(ctx->result);

    return ngx_http_apimon_problem(r, status, &res->name, &res->title,
                                   &res->detail);
}


/* variables */

ngx_int_t
ngx_http_apimon_add_variables(ngx_conf_t *cf)
{
    ngx_http_variable_t  *var, *v;

    for (v = ngx_http_apimon_vars; v->name.len; v++) {
        var = ngx_http_add_variable(cf, &v->name, v->flags);
        if (var == NULL) {
            return NGX_ERROR;
        }

        var->get_handler = v->get_handler;
        var->data = v->data;
    }

    return NGX_OK;
}


/* the values are per request: never cached across requests */

static ngx_int_t
ngx_http_apimon_variable_set(ngx_http_variable_value_t *v, u_char *data,
    size_t len)
{
    if (len == 0) {
        v->not_found = 1;
        return NGX_OK;
    }

    v->len = len;
    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;
    v->data = data;

    return NGX_OK;
}


static ngx_int_t
ngx_http_apimon_variable_str(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_str_t              *s;
    ngx_http_apimon_ctx_t  *ctx;

    ctx = ngx_http_apimon_get_ctx(r);

    if (ctx == NULL) {
        v->not_found = 1;
        return NGX_OK;
    }

    s = (ngx_str_t *) ((u_char *) ctx + data);

    return ngx_http_apimon_variable_set(v, s->data, s->len);
}


static ngx_int_t
ngx_http_apimon_variable_result(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    u_char                 *p;
    ngx_str_t              *s;
    ngx_http_apimon_ctx_t  *ctx;

    ctx = ngx_http_apimon_get_ctx(r);

    if (ctx == NULL || ctx->result == NGX_HTTP_APIMON_NONE) {
        v->not_found = 1;
        return NGX_OK;
    }

    s = ngx_http_apimon_result_name(ctx->result);

    if (ctx->dry_run) {
        /* "dry_run_quota_exceeded": what would have been refused */
        p = ngx_pnalloc(r->pool, sizeof("dry_run_") - 1 + s->len);
        if (p == NULL) {
            return NGX_ERROR;
        }

        ngx_memcpy(ngx_cpymem(p, "dry_run_", sizeof("dry_run_") - 1),
                   s->data, s->len);

        return ngx_http_apimon_variable_set(v, p,
                                            sizeof("dry_run_") - 1 + s->len);
    }

    return ngx_http_apimon_variable_set(v, s->data, s->len);
}


/* the smallest "remaining" over the quota (data 1) or rate (0) windows */

static ngx_int_t
ngx_http_apimon_variable_remaining(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    u_char                 *p;
    ngx_uint_t              i, found, min;
    ngx_http_apimon_ctx_t  *ctx;

    ctx = ngx_http_apimon_get_ctx(r);

    if (ctx == NULL) {
        v->not_found = 1;
        return NGX_OK;
    }

    found = 0;
    min = 0;

    for (i = 0; i < ctx->nwindows; i++) {
        if (ctx->windows[i].quota != data) {
            continue;
        }

        if (!found || ctx->windows[i].remaining < min) {
            min = ctx->windows[i].remaining;
            found = 1;
        }
    }

    if (!found) {
        v->not_found = 1;
        return NGX_OK;
    }

    p = ngx_pnalloc(r->pool, NGX_INT_T_LEN);
    if (p == NULL) {
        return NGX_ERROR;
    }

    return ngx_http_apimon_variable_set(v, p, ngx_sprintf(p, "%ui", min) - p);
}
