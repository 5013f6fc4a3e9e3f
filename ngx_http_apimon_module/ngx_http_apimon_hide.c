/*
 * Keeping the key from where it does not belong: apimon_hide_key takes the
 * key header or argument out of the request before it goes upstream, and
 * the request's error log lines show the key redacted.
 */


#include "ngx_http_apimon.h"


static ngx_int_t ngx_http_apimon_hide_header(ngx_http_request_t *r,
    ngx_str_t *name);
static void ngx_http_apimon_repoint_header(ngx_http_request_t *r,
    ngx_table_elt_t *from, ngx_table_elt_t *to);
static ngx_int_t ngx_http_apimon_remove_header(ngx_http_request_t *r,
    ngx_list_part_t *part, ngx_uint_t i);
static ngx_int_t ngx_http_apimon_hide_arg(ngx_http_request_t *r,
    ngx_str_t *name);
static u_char *ngx_http_apimon_log_handler(ngx_http_request_t *r,
    ngx_http_request_t *sr, u_char *buf, size_t len);
static u_char *ngx_http_apimon_redact(ngx_http_apimon_ctx_t *ctx,
    u_char *p, u_char *last, u_char *buf, u_char *end);


/* NGX_OK, or the status to answer (a request the key cannot be taken from) */

ngx_int_t
ngx_http_apimon_hide_key(ngx_http_request_t *r,
    ngx_http_apimon_loc_conf_t *alcf)
{
    if (!alcf->hide_key) {
        return NGX_OK;
    }

    if (alcf->hide_header.len) {
        if (ngx_http_apimon_hide_header(r, &alcf->hide_header) != NGX_OK) {
            return NGX_HTTP_BAD_REQUEST;
        }

    } else if (alcf->hide_arg.len) {
        if (ngx_http_apimon_hide_arg(r, &alcf->hide_arg) != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

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


/*
 * r->headers_in keeps pointers into the header list: the known headers (from
 * "host" to "user") and the cookie and X-Forwarded-For arrays.  Those that
 * point at "from" are made to point at "to", or forgotten when "to" is NULL.
 */

static void
ngx_http_apimon_repoint_header(ngx_http_request_t *r, ngx_table_elt_t *from,
    ngx_table_elt_t *to)
{
    ngx_uint_t         k, n;
    ngx_array_t       *a[2];
    ngx_table_elt_t  **p, **last;

    last = (ngx_table_elt_t **) &r->headers_in.user;

    for (p = &r->headers_in.host; p < last; p++) {
        if (*p == from) {
            *p = to;
        }
    }

    a[0] = &r->headers_in.cookies;
#if (NGX_HTTP_X_FORWARDED_FOR)
    a[1] = &r->headers_in.x_forwarded_for;
#else
    a[1] = NULL;
#endif

    for (k = 0; k < 2; k++) {
        if (a[k] == NULL || a[k]->elts == NULL) {
            continue;
        }

        p = a[k]->elts;

        for (n = 0; n < a[k]->nelts; n++) {
            if (p[n] != from) {
                continue;
            }

            if (to) {
                p[n] = to;
                continue;
            }

            /* cannot happen for a custom header; keep it consistent */
            ngx_memmove(&p[n], &p[n + 1],
                        (a[k]->nelts - n - 1) * sizeof(ngx_table_elt_t *));
            a[k]->nelts--;
            n--;
        }
    }
}


static ngx_int_t
ngx_http_apimon_remove_header(ngx_http_request_t *r, ngx_list_part_t *part,
    ngx_uint_t i)
{
    ngx_uint_t         j;
    ngx_list_part_t   *prev;
    ngx_table_elt_t   *h;

    h = part->elts;

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "apimon: hiding header \"%V\" from the upstream",
                   &h[i].key);

    ngx_http_apimon_repoint_header(r, &h[i], NULL);

    for (j = i + 1; j < part->nelts; j++) {
        h[j - 1] = h[j];
        ngx_http_apimon_repoint_header(r, &h[j], &h[j - 1]);
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


/*
 * The context nginx appends to a request's error log lines (client, server,
 * request line, upstream, host, referrer) would carry a key sent in the
 * query string, and in a referrer: the request's log handler is wrapped so
 * that every line logged with it from the access phase on, apimon's and
 * nginx's, shows "[redacted]" instead of the key argument's value and of
 * the key itself.
 */

#define NGX_HTTP_APIMON_REDACTED      "[redacted]"
#define NGX_HTTP_APIMON_REDACT_MIN    8       /* shorter keys: by name only */

void
ngx_http_apimon_redact_log(ngx_http_request_t *r, ngx_http_apimon_ctx_t *ctx,
    ngx_http_apimon_loc_conf_t *alcf)
{
    if (r != r->main || r->log_handler == ngx_http_apimon_log_handler) {
        return;
    }

    ctx->key_arg = alcf->hide_arg;
    ctx->log_handler = r->log_handler;
    r->log_handler = ngx_http_apimon_log_handler;
}


static u_char *
ngx_http_apimon_log_handler(ngx_http_request_t *r, ngx_http_request_t *sr,
    u_char *buf, size_t len)
{
    u_char                  *p;
    u_char                   text[NGX_MAX_ERROR_STR];
    ngx_http_apimon_ctx_t   *ctx;

    ctx = ngx_http_apimon_get_ctx(r);

    if (ctx == NULL || ctx->log_handler == NULL) {
        /* cannot happen: the context lives as long as the request */
        return ngx_snprintf(buf, len, ", request: " NGX_HTTP_APIMON_REDACTED);
    }

    if (len > sizeof(text)) {
        len = sizeof(text);
    }

    p = ctx->log_handler(r, sr, text, len);

    return ngx_http_apimon_redact(ctx, text, p, buf, buf + len);
}


/* copy [p, last) to buf, the key argument's values and the key redacted */

static u_char *
ngx_http_apimon_redact(ngx_http_apimon_ctx_t *ctx, u_char *p, u_char *last,
    u_char *buf, u_char *end)
{
    size_t      n;
    ngx_str_t  *arg, *key;

    arg = &ctx->key_arg;
    key = &ctx->key;

    while (p < last && buf < end) {

        if (arg->len
            && (*p == '?' || *p == '&')
            && (size_t) (last - p) > arg->len + 1
            && p[arg->len + 1] == '='
            && ngx_strncasecmp(p + 1, arg->data, arg->len) == 0)
        {
            n = ngx_min((size_t) (end - buf), arg->len + 2);
            buf = ngx_cpymem(buf, p, n);
            p += arg->len + 2;

            while (p < last && *p != '&' && *p != '#' && *p != ' '
                   && *p != '"')
            {
                p++;
            }

        } else if (key->len >= NGX_HTTP_APIMON_REDACT_MIN
                   && (size_t) (last - p) >= key->len
                   && ngx_strncmp(p, key->data, key->len) == 0)
        {
            p += key->len;

        } else {
            *buf++ = *p++;
            continue;
        }

        n = ngx_min((size_t) (end - buf), sizeof(NGX_HTTP_APIMON_REDACTED) - 1);
        buf = ngx_cpymem(buf, NGX_HTTP_APIMON_REDACTED, n);
    }

    return buf;
}
