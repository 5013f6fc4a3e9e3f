
/*
 * apimon: conditional requests of the management API.  Every resource read
 * or changed is answered with an ETag: an owner's or a subscription's is its
 * record's version (each change bumps it, schema/README.md "ETags"), a
 * product's the SHA-1 of the product as shown.  If-Match is never judged
 * here: its value goes to the script that makes the change, which compares
 * it with the record in the same atomic call (412, nothing changed).  And
 * the bodies' media type: JSON only (415).
 */


#include "ngx_http_apimon_admin.h"


/* the request's If-Match, or "" */

void
ngx_http_apimon_admin_if_match(ngx_http_request_t *r, ngx_str_t *value)
{
    if (r->headers_in.if_match) {
        *value = r->headers_in.if_match->value;
        return;
    }

    ngx_str_set(value, "");
}


/* ETag: "<ver>" of a record (a string or a number; absent: version 0) */

ngx_int_t
ngx_http_apimon_admin_etag(ngx_http_request_t *r, cJSON *raw)
{
    u_char     *p;
    cJSON      *ver;
    ngx_str_t   v;

    ver = cJSON_GetObjectItemCaseSensitive(raw, "ver");

    v.data = ngx_pnalloc(r->pool, NGX_INT64_LEN + 2);
    if (v.data == NULL) {
        return NGX_ERROR;
    }

    if (cJSON_IsString(ver) && ver->valuestring[0] != '\0'
        && ngx_strlen(ver->valuestring) <= NGX_INT64_LEN)
    {
        p = ngx_sprintf(v.data, "\"%s\"", ver->valuestring);

    } else if (cJSON_IsNumber(ver)) {
        p = ngx_sprintf(v.data, "\"%L\"", (int64_t) ver->valuedouble);

    } else {
        p = ngx_cpymem(v.data, "\"0\"", 3);
    }

    v.len = p - v.data;

    return ngx_http_apimon_admin_header(r, "ETag", &v);
}


/* ETag of a resource that has no version (a catalog product): its SHA-1 */

ngx_int_t
ngx_http_apimon_admin_etag_json(ngx_http_request_t *r, cJSON *json)
{
    char       *text;
    u_char      md[SHA_DIGEST_LENGTH];
    ngx_str_t   v;

    text = cJSON_PrintUnformatted(json);
    if (text == NULL) {
        return NGX_ERROR;
    }

    SHA1((u_char *) text, ngx_strlen(text), md);
    cJSON_free(text);

    v.len = 2 * SHA_DIGEST_LENGTH + 2;
    v.data = ngx_pnalloc(r->pool, v.len);
    if (v.data == NULL) {
        return NGX_ERROR;
    }

    v.data[0] = '"';
    ngx_hex_dump(v.data + 1, md, SHA_DIGEST_LENGTH);
    v.data[v.len - 1] = '"';

    return ngx_http_apimon_admin_header(r, "ETag", &v);
}


/*
 * A request with a body must say it is JSON: application/json or any
 * application/<x>+json, parameters (charset) allowed; NGX_DONE: 415 sent.
 */

ngx_int_t
ngx_http_apimon_admin_media_type(ngx_http_request_t *r)
{
    u_char      *p, *last;
    ngx_str_t    type;

    if (r->headers_in.content_length_n <= 0 && !r->headers_in.chunked) {
        return NGX_OK;      /* no body: nothing to type */
    }

    if (r->headers_in.content_type == NULL) {
        goto unsupported;
    }

    type = r->headers_in.content_type->value;
    last = ngx_strlchr(type.data, type.data + type.len, ';');
    last = last ? last : type.data + type.len;

    while (last > type.data && (last[-1] == ' ' || last[-1] == '\t')) {
        last--;
    }

    p = type.data;
    type.len = last - p;

    if (type.len > sizeof("application/") - 1
        && ngx_strncasecmp(p, (u_char *) "application/",
                           sizeof("application/") - 1) == 0
        && ((type.len == sizeof("application/json") - 1
             && ngx_strncasecmp(p, (u_char *) "application/json",
                                type.len) == 0)
            || (type.len > sizeof("application/+json") - 1
                && ngx_strncasecmp(last - 5, (u_char *) "+json", 5) == 0)))
    {
        return NGX_OK;
    }

unsupported:

    return ngx_http_apimon_admin_error(r, NGX_HTTP_UNSUPPORTED_MEDIA_TYPE,
                                       "Content-Type: the body must be "
                                       "application/json");
}
