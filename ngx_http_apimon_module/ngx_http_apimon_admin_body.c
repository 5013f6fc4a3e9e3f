
/*
 * apimon: what a management API request brings: its body (one JSON object,
 * every member of which is honoured or refused by name) and its query
 * arguments.
 */


#include "ngx_http_apimon_admin.h"

#include <math.h>


static ngx_int_t ngx_http_apimon_admin_members(ngx_http_request_t *r,
    ngx_http_apimon_admin_ctx_t *ctx, u_char *text, u_char *last);
static ngx_int_t ngx_http_apimon_admin_unknown(ngx_http_request_t *r,
    char *name);


/* request body: one JSON object, at most apimon_admin_body_max bytes */

ngx_int_t
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
        if (ctx->route->body == NGX_HTTP_APIMON_ADMIN_BODY_OPTIONAL) {
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

    ctx->raw_body.data = text;
    ctx->raw_body.len = (size_t) size;

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
 * row does not take, repeated ones (cJSON would use the first, the
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

        if (ctx->route->fields == NULL) {
            continue;
        }

        for (f = ctx->route->fields; *f; f++) {
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
    return ngx_http_apimon_admin_error(r, NGX_HTTP_BAD_REQUEST,
                                       "%*s: unknown field",
                                       ngx_min(ngx_strlen(name), 64), name);
}


/* a JSON value as text in the request's pool, for a script to check */

ngx_int_t
ngx_http_apimon_admin_body_json(ngx_http_request_t *r, cJSON *json,
    ngx_str_t *value)
{
    char  *text;

    text = cJSON_PrintUnformatted(json);
    if (text == NULL) {
        return NGX_ERROR;
    }

    value->len = ngx_strlen(text);
    value->data = ngx_pnalloc(r->pool, value->len + 1);

    if (value->data == NULL) {
        cJSON_free(text);
        return NGX_ERROR;
    }

    ngx_memcpy(value->data, text, value->len);
    cJSON_free(text);

    return NGX_OK;
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
