
/*
 * apimon: the results of a request check (one row each: the name in
 * $apimon_result and in a refusal's "code", its status, its fixed texts),
 * and the one writer of application/problem+json answers (RFC 9457), for
 * the enforcing locations and the management API alike.
 */


#include "ngx_http_apimon.h"


/* indexed by ngx_http_apimon_result_e */
static ngx_http_apimon_result_t  ngx_http_apimon_results[] = {

    /* none yet: never let through undecided */
    { ngx_null_string, NGX_HTTP_SERVICE_UNAVAILABLE, ngx_null_string,
      ngx_null_string },

    { ngx_string("allowed"), 0, ngx_null_string, ngx_null_string },

    { ngx_string("missing_key"), NGX_HTTP_UNAUTHORIZED,
      ngx_string("Missing API key"),
      ngx_string("This API requires an API key.") },

    { ngx_string("invalid_key"), NGX_HTTP_UNAUTHORIZED,
      ngx_string("Invalid API key"),
      ngx_string("The API key is not valid.") },

    { ngx_string("inactive"), NGX_HTTP_FORBIDDEN,
      ngx_string("Subscription not active"),
      ngx_string("The subscription of this API key is not active.") },

    { ngx_string("not_entitled"), NGX_HTTP_FORBIDDEN,
      ngx_string("Not entitled"),
      ngx_string("The subscription of this API key does not include "
                 "this API.") },

    { ngx_string("rate_limited"), NGX_HTTP_TOO_MANY_REQUESTS,
      ngx_string("Rate limit exceeded"),
      ngx_string("Too many requests: the rate limit of the subscription "
                 "is reached.") },

    /* the status is apimon_quota_status's */
    { ngx_string("quota_exceeded"), NGX_HTTP_FORBIDDEN,
      ngx_string("Quota exceeded"),
      ngx_string("The quota of the subscription for this period is "
                 "used up.") },

    { ngx_string("redis_error"), NGX_HTTP_SERVICE_UNAVAILABLE,
      ngx_string("Service unavailable"),
      ngx_string("The API key could not be checked; try again later.") }
};


ngx_http_apimon_result_t *
ngx_http_apimon_result(ngx_http_apimon_result_e result)
{
    if ((ngx_uint_t) result >= sizeof(ngx_http_apimon_results)
                               / sizeof(ngx_http_apimon_result_t))
    {
        result = NGX_HTTP_APIMON_NONE;
    }

    return &ngx_http_apimon_results[result];
}


ngx_str_t *
ngx_http_apimon_result_name(ngx_http_apimon_result_e result)
{
    return &ngx_http_apimon_result(result)->name;
}


/* a result by its name (the check script's answer); NONE: no such one */

ngx_http_apimon_result_e
ngx_http_apimon_result_find(ngx_str_t *name)
{
    ngx_uint_t  i, n;

    n = sizeof(ngx_http_apimon_results) / sizeof(ngx_http_apimon_result_t);

    for (i = NGX_HTTP_APIMON_NONE + 1; i < n; i++) {
        if (ngx_http_apimon_results[i].name.len == name->len
            && ngx_strncmp(ngx_http_apimon_results[i].name.data, name->data,
                           name->len)
               == 0)
        {
            return (ngx_http_apimon_result_e) i;
        }
    }

    return NGX_HTTP_APIMON_NONE;
}


/* sends one buffer as the whole answer */

ngx_int_t
ngx_http_apimon_send_buf(ngx_http_request_t *r, ngx_uint_t status,
    ngx_str_t *type, ngx_buf_t *b)
{
    ngx_int_t    rc;
    ngx_chain_t  out;

    r->headers_out.status = status;
    r->headers_out.content_length_n = b->last - b->pos;
    r->headers_out.content_type = *type;
    r->headers_out.content_type_len = type->len;
    r->headers_out.content_type_lowcase = NULL;

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


/*
 * {"type":"tag:apimon,2026:<code>","title":...,"status":...,"detail":...,
 * "code":"<code>"} and a newline.  The texts are escaped for JSON: a
 * management API detail may quote the request (never a key or a token).
 */

ngx_int_t
ngx_http_apimon_problem(ngx_http_request_t *r, ngx_uint_t status,
    ngx_str_t *code, ngx_str_t *title, ngx_str_t *detail)
{
    size_t      len;
    ngx_buf_t  *b;

    static ngx_str_t  type = ngx_string("application/problem+json");

    len = sizeof("{\"type\":\"tag:apimon,2026:\",\"title\":\"\","
                 "\"status\":,\"detail\":\"\",\"code\":\"\"}\n") - 1
          + 2 * (code->len + ngx_escape_json(NULL, code->data, code->len))
          + title->len + ngx_escape_json(NULL, title->data, title->len)
          + detail->len + ngx_escape_json(NULL, detail->data, detail->len)
          + NGX_INT_T_LEN;

    b = ngx_create_temp_buf(r->pool, len);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b->last = ngx_cpymem(b->last, "{\"type\":\"tag:apimon,2026:",
                         sizeof("{\"type\":\"tag:apimon,2026:") - 1);
    b->last = (u_char *) ngx_escape_json(b->last, code->data, code->len);
    b->last = ngx_cpymem(b->last, "\",\"title\":\"",
                         sizeof("\",\"title\":\"") - 1);
    b->last = (u_char *) ngx_escape_json(b->last, title->data, title->len);
    b->last = ngx_sprintf(b->last, "\",\"status\":%ui,\"detail\":\"", status);
    b->last = (u_char *) ngx_escape_json(b->last, detail->data, detail->len);
    b->last = ngx_cpymem(b->last, "\",\"code\":\"",
                         sizeof("\",\"code\":\"") - 1);
    b->last = (u_char *) ngx_escape_json(b->last, code->data, code->len);
    b->last = ngx_cpymem(b->last, "\"}\n", 3);

    return ngx_http_apimon_send_buf(r, status, &type, b);
}
