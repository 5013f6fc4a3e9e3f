/*
 * The access phase handler: take the key, check its shape, ask Redis (the
 * "check" script) and suspend the request until the answer comes.
 *
 * The handler runs again when the request is resumed, and again after an
 * internal redirect (try_files, index, error_page): the context is found
 * through the request pool's cleanup list, so a request is checked (and
 * counted) once.
 */


#include "ngx_http_apimon.h"


#define NGX_HTTP_APIMON_CHECK_ARGS  10


static ngx_int_t ngx_http_apimon_decide(ngx_http_request_t *r,
    ngx_http_apimon_ctx_t *ctx, ngx_http_apimon_loc_conf_t *alcf);
static ngx_http_apimon_ctx_t *ngx_http_apimon_create_ctx(
    ngx_http_request_t *r);
static void ngx_http_apimon_cleanup(void *data);
static ngx_int_t ngx_http_apimon_check(ngx_http_request_t *r,
    ngx_http_apimon_ctx_t *ctx, ngx_http_apimon_loc_conf_t *alcf,
    ngx_str_t *key);
static void ngx_http_apimon_check_done(redisReply *reply, const char *err,
    void *data);
static void ngx_http_apimon_check_result(ngx_http_request_t *r,
    ngx_http_apimon_ctx_t *ctx, u_char *data, size_t len);
static ngx_int_t ngx_http_apimon_parse_reply(ngx_http_request_t *r,
    ngx_http_apimon_ctx_t *ctx, u_char *data, size_t len);
static ngx_int_t ngx_http_apimon_text_uint(ngx_str_t *s, ngx_uint_t *n);
static ngx_int_t ngx_http_apimon_hide_header(ngx_http_request_t *r,
    ngx_str_t *name);
static ngx_int_t ngx_http_apimon_remove_header(ngx_http_request_t *r,
    ngx_list_part_t *part, ngx_uint_t i);
static ngx_int_t ngx_http_apimon_hide_arg(ngx_http_request_t *r,
    ngx_str_t *name);


static ngx_int_t  ngx_http_apimon_check_script = NGX_ERROR;


static struct {
    ngx_str_t                 name;
    ngx_http_apimon_result_e  result;
} ngx_http_apimon_results[] = {
    { ngx_string("allowed"), NGX_HTTP_APIMON_ALLOWED },
    { ngx_string("invalid_key"), NGX_HTTP_APIMON_INVALID_KEY },
    { ngx_string("inactive"), NGX_HTTP_APIMON_INACTIVE },
    { ngx_string("not_entitled"), NGX_HTTP_APIMON_NOT_ENTITLED },
    { ngx_string("rate_limited"), NGX_HTTP_APIMON_RATE_LIMITED },
    { ngx_string("quota_exceeded"), NGX_HTTP_APIMON_QUOTA_EXCEEDED },
    { ngx_null_string, NGX_HTTP_APIMON_NONE }
};


ngx_int_t
ngx_http_apimon_handler_init(ngx_conf_t *cf)
{
    ngx_http_apimon_check_script = ngx_http_apimon_redis_script_index("check");

    if (ngx_http_apimon_check_script == NGX_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "apimon: the \"check\" script is not compiled in");
        return NGX_ERROR;
    }

    return NGX_OK;
}


ngx_int_t
ngx_http_apimon_handler(ngx_http_request_t *r)
{
    ngx_str_t                    key;
    ngx_http_apimon_ctx_t       *ctx;
    ngx_http_apimon_loc_conf_t  *alcf;

    alcf = ngx_http_get_module_loc_conf(r, ngx_http_apimon_module);

    if (!alcf->enable) {
        return NGX_DECLINED;
    }

    ctx = ngx_http_apimon_get_ctx(r);

    if (ctx) {
        if (ctx->call) {
            return NGX_AGAIN;
        }

        if (ctx->result != NGX_HTTP_APIMON_NONE) {
            return ngx_http_apimon_decide(r, ctx, alcf);
        }

    } else {
        ctx = ngx_http_apimon_create_ctx(r);
        if (ctx == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    ctx->legacy_headers = alcf->legacy_headers;

    if (alcf->api.len == 0) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "apimon: \"apimon_api\" is not set for this location");
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ngx_http_complex_value(r, alcf->key, &key) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (alcf->hide_key) {
        if (alcf->hide_header.len) {
            if (ngx_http_apimon_hide_header(r, &alcf->hide_header) != NGX_OK) {
                return NGX_HTTP_BAD_REQUEST;
            }

        } else if (alcf->hide_arg.len) {
            if (ngx_http_apimon_hide_arg(r, &alcf->hide_arg) != NGX_OK) {
                return NGX_HTTP_INTERNAL_SERVER_ERROR;
            }
        }
    }

    if (key.len == 0) {
        ctx->result = NGX_HTTP_APIMON_MISSING_KEY;
        return ngx_http_apimon_decide(r, ctx, alcf);
    }

    if (ngx_http_apimon_key_valid(&key) != NGX_OK) {
        ngx_log_debug0(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "apimon: malformed key");

        ctx->result = NGX_HTTP_APIMON_INVALID_KEY;
        return ngx_http_apimon_decide(r, ctx, alcf);
    }

    return ngx_http_apimon_check(r, ctx, alcf, &key);
}


static ngx_int_t
ngx_http_apimon_decide(ngx_http_request_t *r, ngx_http_apimon_ctx_t *ctx,
    ngx_http_apimon_loc_conf_t *alcf)
{
    ngx_uint_t  status;

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "apimon: result \"%V\"",
                   ngx_http_apimon_result_name(ctx->result));

    switch (ctx->result) {

    case NGX_HTTP_APIMON_ALLOWED:
        /* access granted (what counts with "satisfy any") */
        return NGX_OK;

    case NGX_HTTP_APIMON_MISSING_KEY:
    case NGX_HTTP_APIMON_INVALID_KEY:
        status = NGX_HTTP_UNAUTHORIZED;
        break;

    case NGX_HTTP_APIMON_INACTIVE:
    case NGX_HTTP_APIMON_NOT_ENTITLED:
        status = NGX_HTTP_FORBIDDEN;
        break;

    case NGX_HTTP_APIMON_RATE_LIMITED:
        status = NGX_HTTP_TOO_MANY_REQUESTS;
        break;

    case NGX_HTTP_APIMON_QUOTA_EXCEEDED:
        status = alcf->quota_status;
        break;

    default: /* NGX_HTTP_APIMON_REDIS_ERROR */
        if (alcf->on_redis_error == NGX_HTTP_APIMON_REDIS_OPEN) {
            return NGX_DECLINED;
        }

        status = NGX_HTTP_SERVICE_UNAVAILABLE;
        break;
    }

    if (r->error_page) {
        /* the error page of this very refusal: let it be served */
        return NGX_DECLINED;
    }

    return ngx_http_apimon_refuse(r, ctx, status);
}


ngx_http_apimon_ctx_t *
ngx_http_apimon_get_ctx(ngx_http_request_t *r)
{
    ngx_pool_cleanup_t     *cln;
    ngx_http_apimon_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_apimon_module);

    if (ctx || !(r->internal || r->filter_finalize)) {
        return ctx;
    }

    /* an internal redirect cleared the module contexts */

    for (cln = r->pool->cleanup; cln; cln = cln->next) {
        if (cln->handler == ngx_http_apimon_cleanup) {
            ctx = cln->data;

            if (ctx->request == r) {
                ngx_http_set_ctx(r, ctx, ngx_http_apimon_module);
                return ctx;
            }
        }
    }

    return NULL;
}


static ngx_http_apimon_ctx_t *
ngx_http_apimon_create_ctx(ngx_http_request_t *r)
{
    ngx_pool_cleanup_t     *cln;
    ngx_http_apimon_ctx_t  *ctx;

    cln = ngx_pool_cleanup_add(r->pool, sizeof(ngx_http_apimon_ctx_t));
    if (cln == NULL) {
        return NULL;
    }

    ctx = cln->data;
    ngx_memzero(ctx, sizeof(ngx_http_apimon_ctx_t));

    ctx->request = r;

    cln->handler = ngx_http_apimon_cleanup;

    ngx_http_set_ctx(r, ctx, ngx_http_apimon_module);

    return ctx;
}


/* the request is freed: a reply still due is dropped */

static void
ngx_http_apimon_cleanup(void *data)
{
    ngx_http_apimon_ctx_t  *ctx = data;

    if (ctx->call) {
        ngx_http_apimon_redis_cancel(ctx->call);
        ctx->call = NULL;
    }
}


static ngx_int_t
ngx_http_apimon_check(ngx_http_request_t *r, ngx_http_apimon_ctx_t *ctx,
    ngx_http_apimon_loc_conf_t *alcf, ngx_str_t *key)
{
    u_char       *p;
    const char   *argv[NGX_HTTP_APIMON_CHECK_ARGS];
    size_t        argvlen[NGX_HTTP_APIMON_CHECK_ARGS];
    u_char        skey[sizeof("apimon:sub:{}") - 1
                       + NGX_HTTP_APIMON_SUB_ID_LEN];
    u_char        digest[NGX_HTTP_APIMON_DIGEST_LEN];

    p = ngx_cpymem(skey, "apimon:sub:{", sizeof("apimon:sub:{") - 1);
    ngx_http_apimon_key_sub_id(key, p);
    p += NGX_HTTP_APIMON_SUB_ID_LEN;
    *p++ = '}';

    ngx_http_apimon_key_digest(key, digest);

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "apimon: check %*s", (size_t) (p - skey), skey);

    /* a batch of one: 1 key, now, then the request's 7 arguments */
    argv[0] = "1";
    argvlen[0] = 1;
    argv[1] = (const char *) skey;
    argvlen[1] = p - skey;
    argv[2] = "0";                              /* now: Redis TIME */
    argvlen[2] = 1;
    argv[3] = (const char *) digest;
    argvlen[3] = NGX_HTTP_APIMON_DIGEST_LEN;
    argv[4] = (const char *) alcf->api.data;
    argvlen[4] = alcf->api.len;
    argv[5] = (const char *) alcf->rate_n_text.data;
    argvlen[5] = alcf->rate_n_text.len;
    argv[6] = (const char *) alcf->rate_w_text.data;
    argvlen[6] = alcf->rate_w_text.len;
    argv[7] = (const char *) alcf->quota_n_text.data;
    argvlen[7] = alcf->quota_n_text.len;
    argv[8] = (const char *) alcf->quota_unit.data;
    argvlen[8] = alcf->quota_unit.len;
    argv[9] = (const char *) alcf->api.data;   /* scope: the API */
    argvlen[9] = alcf->api.len;

    if (argv[8] == NULL) {
        argv[8] = "";
    }

    ctx->call = ngx_http_apimon_redis_script(ngx_http_apimon_check_script,
                                             NGX_HTTP_APIMON_CHECK_ARGS,
                                             argv, argvlen, alcf->timeout,
                                             ngx_http_apimon_check_done, ctx);

    if (ctx->call == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* notice a client that goes away while the check is in flight */
    r->read_event_handler = ngx_http_test_reading;

    return NGX_AGAIN;
}


static void
ngx_http_apimon_check_done(redisReply *reply, const char *err, void *data)
{
    ngx_http_apimon_ctx_t *ctx = data;

    ngx_connection_t    *c;
    ngx_http_request_t  *r;

    r = ctx->request;
    c = r->connection;

    ctx->call = NULL;

    if (reply == NULL) {
        ngx_log_error(NGX_LOG_WARN, c->log, 0,
                      "apimon: key check failed: %s", err);
        ctx->result = NGX_HTTP_APIMON_REDIS_ERROR;

    } else if (reply->type == REDIS_REPLY_ERROR) {
        ngx_log_error(NGX_LOG_ERR, c->log, 0,
                      "apimon: the check script failed: %*s",
                      (size_t) reply->len, reply->str);
        ctx->result = NGX_HTTP_APIMON_REDIS_ERROR;

    } else if (reply->type != REDIS_REPLY_ARRAY
               || reply->elements != 1
               || reply->element[0]->type != REDIS_REPLY_STRING)
    {
        ngx_log_error(NGX_LOG_ERR, c->log, 0,
                      "apimon: unexpected reply from the check script");
        ctx->result = NGX_HTTP_APIMON_REDIS_ERROR;

    } else {
        ngx_http_apimon_check_result(r, ctx, (u_char *) reply->element[0]->str,
                                     reply->element[0]->len);
    }

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, c->log, 0,
                   "apimon: subscription \"%V\": %V, %ui windows",
                   &ctx->subscription,
                   ngx_http_apimon_result_name(ctx->result), ctx->nwindows);

    r->read_event_handler = ngx_http_block_reading;
    r->write_event_handler = ngx_http_core_run_phases;

    ngx_http_core_run_phases(r);
    ngx_http_run_posted_requests(c);
}


/* one request's element of the check reply: its result, or "!<error>" */

static void
ngx_http_apimon_check_result(ngx_http_request_t *r, ngx_http_apimon_ctx_t *ctx,
    u_char *data, size_t len)
{
    if (len > 0 && data[0] == '!') {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "apimon: the check script failed: %*s",
                      len - 1, data + 1);
        ctx->result = NGX_HTTP_APIMON_REDIS_ERROR;
        return;
    }

    if (ngx_http_apimon_parse_reply(r, ctx, data, len) != NGX_OK) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "apimon: unexpected reply from the check script: %*s",
                      len, data);
        ctx->result = NGX_HTTP_APIMON_REDIS_ERROR;
        ctx->nwindows = 0;
    }
}


/*
 * One element of the check script's reply (schema/README.md):
 * "result|subscription|plan|product|retry-after", then
 * "|name|limit|window|remaining|reset" per window.  The text is copied once
 * into the request pool; the strings of the context point into it.
 */

static ngx_int_t
ngx_http_apimon_parse_reply(ngx_http_request_t *r, ngx_http_apimon_ctx_t *ctx,
    u_char *data, size_t len)
{
    u_char                    *p, *last, *copy;
    ngx_str_t                  f[5 + 5 * NGX_HTTP_APIMON_MAX_WINDOWS];
    ngx_uint_t                 i, n, w;
    ngx_http_apimon_window_t  *win;

    copy = ngx_pnalloc(r->pool, len);
    if (copy == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(copy, data, len);

    p = copy;
    last = copy + len;

    for (n = 0; /* void */; n++) {
        if (n == sizeof(f) / sizeof(ngx_str_t)) {
            return NGX_ERROR;
        }

        f[n].data = p;

        while (p < last && *p != '|') {
            p++;
        }

        f[n].len = p - f[n].data;

        if (p == last) {
            n++;
            break;
        }

        p++;
    }

    if (n < 5 || (n - 5) % 5 != 0) {
        return NGX_ERROR;
    }

    for (i = 0; ngx_http_apimon_results[i].name.len; i++) {
        if (ngx_http_apimon_results[i].name.len == f[0].len
            && ngx_strncmp(ngx_http_apimon_results[i].name.data, f[0].data,
                           f[0].len)
               == 0)
        {
            break;
        }
    }

    if (ngx_http_apimon_results[i].name.len == 0) {
        return NGX_ERROR;
    }

    ctx->subscription = f[1];
    ctx->plan = f[2];
    ctx->product = f[3];

    if (ngx_http_apimon_text_uint(&f[4], &ctx->retry_after) != NGX_OK) {
        return NGX_ERROR;
    }

    ctx->nwindows = 0;

    for (w = 0; 5 + w * 5 < n; w++) {
        win = &ctx->windows[w];

        win->name = f[5 + w * 5];

        if (ngx_http_apimon_text_uint(&f[6 + w * 5], &win->limit) != NGX_OK
            || ngx_http_apimon_text_uint(&f[7 + w * 5], &win->window) != NGX_OK
            || ngx_http_apimon_text_uint(&f[8 + w * 5], &win->remaining)
               != NGX_OK
            || ngx_http_apimon_text_uint(&f[9 + w * 5], &win->reset) != NGX_OK)
        {
            return NGX_ERROR;
        }

        win->quota = (win->name.len >= 5
                      && ngx_strncmp(win->name.data + win->name.len - 5,
                                     "quota", 5) == 0);

        ctx->nwindows++;
    }

    ctx->result = ngx_http_apimon_results[i].result;

    return NGX_OK;
}


/* a decimal number of the reply; negative ones (never sent) read as 0 */

static ngx_int_t
ngx_http_apimon_text_uint(ngx_str_t *s, ngx_uint_t *n)
{
    ngx_int_t  v;

    if (s->len > 0 && s->data[0] == '-') {
        *n = 0;
        return NGX_OK;
    }

    v = ngx_atoi(s->data, s->len);
    if (v == NGX_ERROR) {
        return NGX_ERROR;
    }

    *n = v;
    return NGX_OK;
}


/*
 * apimon_hide_key: the key header is taken out of r->headers_in.headers,
 * so that no upstream module passes it on.  nginx 1.22 has no way to remove
 * a request header: the list part is compacted, and the pointers that
 * r->headers_in keeps to the elements that moved are updated.
 */

static ngx_int_t
ngx_http_apimon_hide_header(ngx_http_request_t *r, ngx_str_t *name)
{
    u_char            ch;
    ngx_uint_t        i, n;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }

            part = part->next;
            h = part->elts;
            i = 0;

            if (part->nelts == 0) {
                i = (ngx_uint_t) -1;
                continue;
            }
        }

        if (h[i].key.len != name->len) {
            continue;
        }

        for (n = 0; n < name->len; n++) {
            ch = h[i].lowcase_key[n];

            if (ch == '-') {
                ch = '_';
            }

            if (ch != ngx_tolower(name->data[n])) {
                break;
            }
        }

        if (n != name->len) {
            continue;
        }

        if (ngx_http_apimon_remove_header(r, part, i) != NGX_OK) {
            return NGX_ERROR;
        }

        /* the next element is now at i */
        i--;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_apimon_remove_header(ngx_http_request_t *r, ngx_list_part_t *part,
    ngx_uint_t i)
{
    ngx_uint_t         j, k, n;
    ngx_list_part_t   *prev;
    ngx_table_elt_t   *h, **p, **first, **last;
    ngx_array_t       *a[2];

    h = part->elts;

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "apimon: hiding header \"%V\" from the upstream",
                   &h[i].key);

    /* the known-header pointers of r->headers_in, from "host" to "user" */
    first = &r->headers_in.host;
    last = (ngx_table_elt_t **) &r->headers_in.user;

    a[0] = &r->headers_in.cookies;
#if (NGX_HTTP_X_FORWARDED_FOR)
    a[1] = &r->headers_in.x_forwarded_for;
#else
    a[1] = NULL;
#endif

    for (p = first; p < last; p++) {
        if (*p == &h[i]) {
            *p = NULL;
        }
    }

    for (k = 0; k < 2; k++) {
        if (a[k] == NULL || a[k]->elts == NULL) {
            continue;
        }

        p = a[k]->elts;

        for (n = 0; n < a[k]->nelts; n++) {
            if (p[n] == &h[i]) {
                /* cannot happen for a custom header; keep it consistent */
                ngx_memmove(&p[n], &p[n + 1],
                            (a[k]->nelts - n - 1) * sizeof(ngx_table_elt_t *));
                a[k]->nelts--;
                n--;
            }
        }
    }

    for (j = i + 1; j < part->nelts; j++) {
        h[j - 1] = h[j];

        for (p = first; p < last; p++) {
            if (*p == &h[j]) {
                *p = &h[j - 1];
            }
        }

        for (k = 0; k < 2; k++) {
            if (a[k] == NULL || a[k]->elts == NULL) {
                continue;
            }

            p = a[k]->elts;

            for (n = 0; n < a[k]->nelts; n++) {
                if (p[n] == &h[j]) {
                    p[n] = &h[j - 1];
                }
            }
        }
    }

    part->nelts--;

    if (part->nelts || part == r->headers_in.headers.last) {
        return NGX_OK;
    }

    /*
     * nginx's list walkers expect every part but the last to hold elements:
     * unlink an emptied part
     */

    if (part == &r->headers_in.headers.part) {
        /* twenty or more copies of the key header */
        return NGX_ERROR;
    }

    for (prev = &r->headers_in.headers.part; prev->next != part;
         prev = prev->next)
    {
        /* void */
    }

    prev->next = part->next;

    return NGX_OK;
}


/* take "name=value" out of $args; the upstream then gets $uri?$args */

static ngx_int_t
ngx_http_apimon_hide_arg(ngx_http_request_t *r, ngx_str_t *name)
{
    u_char  *p, *last, *start, *end, *eq, *dst, *out;

    if (r->args.len == 0) {
        return NGX_OK;
    }

    out = ngx_pnalloc(r->pool, r->args.len);
    if (out == NULL) {
        return NGX_ERROR;
    }

    dst = out;
    p = r->args.data;
    last = p + r->args.len;

    while (p < last) {
        start = p;
        end = ngx_strlchr(p, last, '&');

        if (end == NULL) {
            end = last;
        }

        eq = ngx_strlchr(start, end, '=');

        if (eq == NULL) {
            eq = end;
        }

        p = (end < last) ? end + 1 : last;

        if ((size_t) (eq - start) == name->len
            && ngx_strncasecmp(start, name->data, name->len) == 0)
        {
            continue;
        }

        if (dst != out) {
            *dst++ = '&';
        }

        dst = ngx_cpymem(dst, start, end - start);
    }

    if ((size_t) (dst - out) == r->args.len) {
        return NGX_OK;
    }

    ngx_log_debug0(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "apimon: hiding the key argument from the upstream");

    r->args.data = out;
    r->args.len = dst - out;

    /* the request line is rebuilt from $uri and $args */
    r->valid_unparsed_uri = 0;

    return NGX_OK;
}
