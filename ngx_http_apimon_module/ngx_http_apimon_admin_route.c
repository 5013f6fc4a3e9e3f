
/*
 * apimon: the management API's routing and its Redis calls.
 *
 * One route table (ngx_http_apimon_admin_routes[], beside the operations
 * in ngx_http_apimon_admin_ops.c) has a row per method and path; one
 * matcher finds the request's row, or answers 404, or 405 with Allow
 * naming the methods of the rows whose path matched.  An operation makes
 * one Redis call: its row's script, with the leading arguments every
 * management script takes, or a plain read command.
 */


#include "ngx_http_apimon_admin.h"


/*
 * A named part of a path pattern, "{owner}".  Its value is the segment's
 * text up to the next ":" (Apigee's "name:action") or to the segment's
 * end, never empty; it is kept in the request context at "offset",
 * without its final "s" when "plural" ("developers" keeps "developer").
 * A value that "valid" refuses is not for this row or, when the part has
 * a "refusal", for no row: unless another row matches, the answer is a
 * 404 whose detail is "refusal" given the owner kind and the value.
 */

typedef struct {
    ngx_str_t                        name;
    size_t                           offset;
    ngx_uint_t                     (*valid)(ngx_http_apimon_admin_ctx_t *ctx,
                                            ngx_str_t *value);
    char                            *refusal;
    ngx_uint_t                       plural;
} ngx_http_apimon_admin_part_t;


typedef struct {
    ngx_http_apimon_admin_part_t    *part;       /* NULL: none */
    ngx_str_t                        kind;
    ngx_str_t                        value;
} ngx_http_apimon_admin_refusal_t;


static ngx_uint_t ngx_http_apimon_admin_valid_owners(
    ngx_http_apimon_admin_ctx_t *ctx, ngx_str_t *value);
static ngx_uint_t ngx_http_apimon_admin_valid_owner(
    ngx_http_apimon_admin_ctx_t *ctx, ngx_str_t *value);
static ngx_uint_t ngx_http_apimon_admin_valid_sub(
    ngx_http_apimon_admin_ctx_t *ctx, ngx_str_t *value);
static ngx_uint_t ngx_http_apimon_admin_valid_slot(
    ngx_http_apimon_admin_ctx_t *ctx, ngx_str_t *value);
static void ngx_http_apimon_admin_redis_done(redisReply *reply,
    const char *err, void *data);


#define ngx_http_apimon_admin_in(field)                                      \
    offsetof(ngx_http_apimon_admin_ctx_t, field)

static ngx_http_apimon_admin_part_t  ngx_http_apimon_admin_parts[] = {

    /* developers, appgroups: the owner kind */
    { ngx_string("owners"), ngx_http_apimon_admin_in(kind),
      ngx_http_apimon_admin_valid_owners, NULL, 1 },

    /* an email of a developer, a name of an app group */
    { ngx_string("owner"), ngx_http_apimon_admin_in(owner),
      ngx_http_apimon_admin_valid_owner, "no such %V: %V", 0 },

    /* any name: an unknown one is its operation's 404 */
    { ngx_string("product"), ngx_http_apimon_admin_in(name), NULL, NULL, 0 },

    /* a subscription's name, its id */
    { ngx_string("sub"), ngx_http_apimon_admin_in(name),
      ngx_http_apimon_admin_valid_sub, "no such subscription", 0 },

    /* any: its operation knows its actions */
    { ngx_string("action"), ngx_http_apimon_admin_in(action), NULL, NULL, 0 },

    /* primary, secondary: a key */
    { ngx_string("slot"), ngx_http_apimon_admin_in(action),
      ngx_http_apimon_admin_valid_slot, NULL, 0 },

    { ngx_null_string, 0, NULL, NULL, 0 }
};


/* names and values */

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




/* the checks of the named parts */

static ngx_uint_t
ngx_http_apimon_admin_valid_owners(ngx_http_apimon_admin_ctx_t *ctx,
    ngx_str_t *value)
{
    return ngx_http_apimon_admin_is(value, "developers")
           || ngx_http_apimon_admin_is(value, "appgroups");
}


static ngx_uint_t
ngx_http_apimon_admin_valid_owner(ngx_http_apimon_admin_ctx_t *ctx,
    ngx_str_t *value)
{
    if (ngx_http_apimon_admin_is(&ctx->kind, "developer")) {
        return ngx_http_apimon_admin_valid_email(value->data, value->len);
    }

    return ngx_http_apimon_admin_valid_name(value->data, value->len);
}


static ngx_uint_t
ngx_http_apimon_admin_valid_sub(ngx_http_apimon_admin_ctx_t *ctx,
    ngx_str_t *value)
{
    return ngx_http_apimon_admin_valid_uuid(value->data, value->len);
}


static ngx_uint_t
ngx_http_apimon_admin_valid_slot(ngx_http_apimon_admin_ctx_t *ctx,
    ngx_str_t *value)
{
    return ngx_http_apimon_admin_is(value, "primary")
           || ngx_http_apimon_admin_is(value, "secondary");
}


/* matching */

static ngx_http_apimon_admin_part_t *
ngx_http_apimon_admin_part(u_char *name, size_t len)
{
    ngx_http_apimon_admin_part_t  *part;

    for (part = ngx_http_apimon_admin_parts; part->name.len; part++) {
        if (part->name.len == len
            && ngx_strncmp(part->name.data, name, len) == 0)
        {
            return part;
        }
    }

    return NULL;
}


/* one segment against one segment of a pattern, [p, end) */

static ngx_int_t
ngx_http_apimon_admin_match_seg(ngx_http_apimon_admin_ctx_t *ctx, u_char *p,
    u_char *end, ngx_str_t *seg, ngx_http_apimon_admin_refusal_t *ref)
{
    u_char                        *s, *last, *close;
    ngx_str_t                      value, *keep;
    ngx_http_apimon_admin_part_t  *part;

    s = seg->data;
    last = s + seg->len;

    while (p < end) {

        if (*p != '{') {
            if (s == last || *s != *p) {
                return NGX_DECLINED;
            }

            s++;
            p++;
            continue;
        }

        /* the table's braces and names are checked at configuration time */
        close = ngx_strlchr(p, end, '}');
        part = ngx_http_apimon_admin_part(p + 1, close - p - 1);

        value.data = s;

        while (s < last && *s != ':') {
            s++;
        }

        value.len = s - value.data;

        if (value.len == 0) {
            return NGX_DECLINED;
        }

        if (part->valid && !part->valid(ctx, &value)) {
            if (part->refusal == NULL) {
                return NGX_DECLINED;
            }

            if (ref->part == NULL) {
                ref->part = part;
                ref->kind = ctx->kind;
                ref->value = value;
            }

            return NGX_ABORT;
        }

        keep = (ngx_str_t *) ((u_char *) ctx + part->offset);
        keep->data = value.data;
        keep->len = value.len - part->plural;

        p = close + 1;
    }

    return (s == last) ? NGX_OK : NGX_DECLINED;
}


/* a row's path against the path's segments; keeps the named parts */

static ngx_int_t
ngx_http_apimon_admin_match(ngx_http_apimon_admin_ctx_t *ctx, char *path,
    ngx_str_t *seg, ngx_uint_t n, ngx_http_apimon_admin_refusal_t *ref)
{
    u_char      *p, *end;
    ngx_int_t    rc;
    ngx_uint_t   i;

    ngx_str_null(&ctx->kind);
    ngx_str_null(&ctx->owner);
    ngx_str_null(&ctx->name);
    ngx_str_null(&ctx->action);

    p = (u_char *) path;

    for (i = 0; *p; i++) {
        end = (u_char *) ngx_strchr(p, '/');
        if (end == NULL) {
            end = p + ngx_strlen(p);
        }

        if (i == n) {
            return NGX_DECLINED;
        }

        rc = ngx_http_apimon_admin_match_seg(ctx, p, end, &seg[i], ref);
        if (rc != NGX_OK) {
            return rc;
        }

        p = *end ? end + 1 : end;
    }

    return (i == n) ? NGX_OK : NGX_DECLINED;
}


/*
 * The segments after "/v1/organizations/" (the location's prefix comes
 * before it); empty ones, a trailing slash, are skipped.
 */

static ngx_int_t
ngx_http_apimon_admin_segments(ngx_http_request_t *r, ngx_str_t *seg,
    ngx_uint_t *n)
{
    u_char  *p, *last, *start;

    p = (u_char *) ngx_strnstr(r->uri.data, "/v1/organizations/", r->uri.len);
    last = r->uri.data + r->uri.len;

    if (p == NULL) {
        return NGX_DECLINED;
    }

    p += sizeof("/v1/organizations/") - 1;
    *n = 0;

    while (p < last) {
        start = p;

        while (p < last && *p != '/') {
            p++;
        }

        if (p > start) {
            if (*n == NGX_HTTP_APIMON_ADMIN_MAX_SEGS) {
                return NGX_DECLINED;
            }

            seg[*n].data = start;
            seg[*n].len = p - start;
            (*n)++;
        }

        p++;
    }

    return NGX_OK;
}


/* 405: the methods of the rows whose path matched, in table order */

static ngx_int_t
ngx_http_apimon_admin_not_allowed(ngx_http_request_t *r, ngx_str_t *allow)
{
    if (ngx_http_apimon_admin_header(r, "Allow", allow) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_apimon_admin_error(r, NGX_HTTP_NOT_ALLOWED,
                                       "method %V not allowed here "
                                       "(allowed: %V)",
                                       &r->method_name, allow);
}


/*
 * <location prefix>/v1/organizations/{org}/<a row's path>: sets ctx->route
 * and the named parts, or answers (NGX_DONE).
 */

ngx_int_t
ngx_http_apimon_admin_route(ngx_http_request_t *r,
    ngx_http_apimon_admin_ctx_t *ctx)
{
    u_char                            *p;
    ngx_str_t                          seg[NGX_HTTP_APIMON_ADMIN_MAX_SEGS];
    ngx_str_t                          allow;
    ngx_uint_t                         n;
    ngx_http_apimon_admin_route_t     *rt;
    ngx_http_apimon_admin_refusal_t    ref;
    ngx_http_apimon_admin_loc_conf_t  *alcf;

    if (ngx_http_apimon_admin_segments(r, seg, &n) != NGX_OK) {
        goto not_found;
    }

    alcf = ngx_http_get_module_loc_conf(r, ngx_http_apimon_admin_module);

    if (n == 0 || seg[0].len != alcf->org.len
        || ngx_strncmp(seg[0].data, alcf->org.data, alcf->org.len) != 0)
    {
        return ngx_http_apimon_admin_error(r, NGX_HTTP_NOT_FOUND,
                                           "no such organization: %V",
                                           n ? &seg[0] : &r->uri);
    }

    ref.part = NULL;

    /* every method once: "GET, POST, PUT" */
    allow.data = ngx_pnalloc(r->pool, sizeof("GET, POST, PUT") - 1);
    if (allow.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    allow.len = 0;

    for (rt = ngx_http_apimon_admin_routes; rt->path; rt++) {
        if (ngx_http_apimon_admin_match(ctx, rt->path, &seg[1], n - 1, &ref)
            != NGX_OK)
        {
            continue;
        }

        if (ngx_http_apimon_admin_is(&r->method_name,
                                     (char *) rt->method.data))
        {
            ctx->route = rt;
            return NGX_OK;
        }

        if (ngx_strnstr(allow.data, (char *) rt->method.data, allow.len)) {
            continue;
        }

        p = allow.data + allow.len;

        if (allow.len) {
            p = ngx_cpymem(p, ", ", 2);
        }

        p = ngx_cpymem(p, rt->method.data, rt->method.len);
        allow.len = p - allow.data;
    }

    if (allow.len) {
        return ngx_http_apimon_admin_not_allowed(r, &allow);
    }

    if (ref.part) {
        return ngx_http_apimon_admin_error(r, NGX_HTTP_NOT_FOUND,
                                           ref.part->refusal, &ref.kind,
                                           &ref.value);
    }

not_found:

    return ngx_http_apimon_admin_error(r, NGX_HTTP_NOT_FOUND,
                                       "no such resource: %V", &r->uri);
}


/*
 * At configuration time: every row's path has balanced braces around
 * known names, every row a method that fits the Allow buffer; a mistake
 * in a new row stops nginx -t.
 */

ngx_int_t
ngx_http_apimon_admin_routes_check(ngx_conf_t *cf)
{
    u_char                         *p, *close;
    ngx_http_apimon_admin_route_t  *rt;

    for (rt = ngx_http_apimon_admin_routes; rt->path; rt++) {

        if (!ngx_http_apimon_admin_is(&rt->method, "GET")
            && !ngx_http_apimon_admin_is(&rt->method, "POST")
            && !ngx_http_apimon_admin_is(&rt->method, "PUT"))
        {
            goto bad;
        }

        for (p = (u_char *) rt->path; *p; p++) {
            if (*p == '}') {
                goto bad;
            }

            if (*p != '{') {
                continue;
            }

            close = p + 1;

            while (*close && *close != '}' && *close != '{' && *close != '/')
            {
                close++;
            }

            if (*close != '}'
                || ngx_http_apimon_admin_part(p + 1, close - p - 1) == NULL)
            {
                goto bad;
            }

            p = close;
        }
    }

    return NGX_OK;

bad:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "apimon: bad management API route %V \"%s\"",
                       &rt->method, rt->path);

    return NGX_ERROR;
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
 * One call of the row's script.  key (or NULL) is its only KEYS entry; its
 * arguments are the leading ones every management script takes (lib.lua):
 * now ("0": Redis's clock), who (the token's name), addr (the client's),
 * owner kind and owner (of the path; empty when it has none), then args.
 */

ngx_int_t
ngx_http_apimon_admin_script(ngx_http_request_t *r,
    ngx_http_apimon_admin_ctx_t *ctx, ngx_str_t *key, ngx_str_t *args,
    ngx_uint_t nargs, ngx_http_apimon_admin_reply_pt reply)
{
    size_t       *argvlen;
    ngx_str_t     all[2 + NGX_HTTP_APIMON_ADMIN_LEAD_ARGS
                      + NGX_HTTP_APIMON_ADMIN_MAX_ARGS];
    ngx_uint_t    n;
    const char  **argv;

    if (ctx->route->script == NGX_HTTP_APIMON_ADMIN_COMMAND
        || nargs > NGX_HTTP_APIMON_ADMIN_MAX_ARGS)
    {
        ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                      "apimon admin: route %V \"%s\" has no script",
                      &ctx->route->method, ctx->route->path);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    n = 0;

    if (key) {
        ngx_str_set(&all[n], "1");
        n++;
        all[n++] = *key;

    } else {
        ngx_str_set(&all[n], "0");
        n++;
    }

    ngx_str_set(&all[n], "0");
    n++;
    all[n++] = ctx->who;
    all[n++] = r->connection->addr_text;
    all[n++] = ctx->kind;
    all[n++] = ctx->owner;

    ngx_memcpy(&all[n], args, nargs * sizeof(ngx_str_t));
    n += nargs;

    if (ngx_http_apimon_admin_argv(r, all, n, &argv, &argvlen) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "apimon admin: script of %V \"%s\"",
                   &ctx->route->method, ctx->route->path);

    ctx->reply = reply;
    ctx->call = ngx_http_apimon_redis_script(ctx->route->script,
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

    } else if (p - code == 12 && ngx_strncmp(code, "precondition", 12) == 0)
    {
        status = NGX_HTTP_PRECONDITION_FAILED;

    } else if (p - code == 11 && ngx_strncmp(code, "idempotency", 11) == 0) {
        status = NGX_HTTP_UNPROCESSABLE_ENTITY;

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
