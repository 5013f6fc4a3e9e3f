
/*
 * apimon: the management API's answers: JSON (never cached, never replaced
 * by nginx's 304 or 412) and problems (application/problem+json, written by
 * ngx_http_apimon_problem.c, as the enforcing locations' refusals are).
 */


#include "ngx_http_apimon_admin.h"


/* the problem "code" (and "type", tag:apimon,2026:<code>) and "title" */

typedef struct {
    ngx_uint_t   status;
    ngx_str_t    code;
    ngx_str_t    title;
} ngx_http_apimon_admin_problem_t;


static ngx_http_apimon_admin_problem_t  ngx_http_apimon_admin_problems[] = {
    { NGX_HTTP_BAD_REQUEST, ngx_string("bad_request"),
      ngx_string("Bad Request") },
    { NGX_HTTP_UNAUTHORIZED, ngx_string("unauthorized"),
      ngx_string("Unauthorized") },
    { NGX_HTTP_FORBIDDEN, ngx_string("forbidden"), ngx_string("Forbidden") },
    { NGX_HTTP_NOT_FOUND, ngx_string("not_found"), ngx_string("Not Found") },
    { NGX_HTTP_NOT_ALLOWED, ngx_string("method_not_allowed"),
      ngx_string("Method Not Allowed") },
    { NGX_HTTP_CONFLICT, ngx_string("conflict"), ngx_string("Conflict") },
    { NGX_HTTP_PRECONDITION_FAILED, ngx_string("precondition_failed"),
      ngx_string("Precondition Failed") },
    { NGX_HTTP_REQUEST_ENTITY_TOO_LARGE, ngx_string("body_too_large"),
      ngx_string("Payload Too Large") },
    { NGX_HTTP_UNSUPPORTED_MEDIA_TYPE, ngx_string("unsupported_media_type"),
      ngx_string("Unsupported Media Type") },
    { NGX_HTTP_UNPROCESSABLE_ENTITY, ngx_string("idempotency_mismatch"),
      ngx_string("Unprocessable Content") },
    { NGX_HTTP_SERVICE_UNAVAILABLE, ngx_string("redis_unavailable"),
      ngx_string("Service Unavailable") },
    { 0, ngx_string("internal"), ngx_string("Internal Server Error") }
};


static ngx_str_t  ngx_http_apimon_admin_json_type =
    ngx_string("application/json");
static ngx_str_t  ngx_http_apimon_admin_nostore = ngx_string("no-store");


/* headers */

ngx_int_t
ngx_http_apimon_admin_header(ngx_http_request_t *r, char *key, ngx_str_t *v)
{
    ngx_table_elt_t  *h;

    h = ngx_http_apimon_add_header(r, key, ngx_strlen(key));
    if (h == NULL) {
        return NGX_ERROR;
    }

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
    char       *text;
    size_t      len;
    ngx_buf_t  *b;

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

    if (ngx_http_apimon_admin_header(r, "Cache-Control",
                                     &ngx_http_apimon_admin_nostore)
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_apimon_send_buf(r, status,
                                    &ngx_http_apimon_admin_json_type, b);
}


/*
 * A problem answer, its detail formatted from fmt; NGX_DONE: sent, the
 * result of sending it is in ctx->rc.
 */

ngx_int_t
ngx_http_apimon_admin_error(ngx_http_request_t *r, ngx_uint_t status,
    const char *fmt, ...)
{
    u_char                           *p;
    u_char                            buf[512];
    va_list                           args;
    ngx_str_t                         detail;
    ngx_http_apimon_admin_ctx_t      *ctx;
    ngx_http_apimon_admin_problem_t  *pr;

    va_start(args, fmt);
    p = ngx_vslprintf(buf, buf + sizeof(buf) - 1, fmt, args);
    va_end(args);

    detail.data = buf;
    detail.len = p - buf;

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "apimon admin: %ui: %V", status, &detail);

    for (pr = ngx_http_apimon_admin_problems; pr->status; pr++) {
        if (pr->status == status) {
            break;
        }
    }

    ctx = ngx_http_get_module_ctx(r, ngx_http_apimon_admin_module);

    if (ngx_http_apimon_admin_header(r, "Cache-Control",
                                     &ngx_http_apimon_admin_nostore)
        != NGX_OK)
    {
        ctx->rc = NGX_HTTP_INTERNAL_SERVER_ERROR;
        return NGX_DONE;
    }

    if (status == NGX_HTTP_UNPROCESSABLE_ENTITY) {
        ngx_str_set(&r->headers_out.status_line, "422 Unprocessable Content");
    }

    ctx->rc = ngx_http_apimon_problem(r, status, &pr->code, &pr->title,
                                      &detail);

    return NGX_DONE;
}


/* a reply of a script or command that is JSON text */

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
