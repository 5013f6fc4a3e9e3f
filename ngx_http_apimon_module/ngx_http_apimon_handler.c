/*
 * The access phase handler: take the key, check its shape, ask Redis (the
 * "check" script, through the batcher of ngx_http_apimon_batch.c) and
 * suspend the request until the answer comes.
 *
 * The handler runs again when the request is resumed, and again after an
 * internal redirect (try_files, index, error_page): the context is found
 * again (ngx_http_apimon_get_ctx), so a request is checked (and counted)
 * once.
 */


#include "ngx_http_apimon.h"
#include "ngx_http_apimon_metrics.h"


static ngx_int_t ngx_http_apimon_decide(ngx_http_request_t *r,
    ngx_http_apimon_ctx_t *ctx, ngx_http_apimon_loc_conf_t *alcf);
static ngx_int_t ngx_http_apimon_check(ngx_http_request_t *r,
    ngx_http_apimon_ctx_t *ctx, ngx_http_apimon_loc_conf_t *alcf,
    ngx_http_apimon_main_conf_t *amcf, ngx_str_t *key);


/* postconfiguration and exit_process: the handler's state is the batcher */

ngx_int_t
ngx_http_apimon_handler_init(ngx_conf_t *cf)
{
    ngx_http_apimon_main_conf_t  *amcf;

    amcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_apimon_module);

    return ngx_http_apimon_batch_init(cf, amcf);
}


void
ngx_http_apimon_handler_exit(ngx_http_apimon_main_conf_t *amcf)
{
    ngx_http_apimon_batch_exit(amcf);
    ngx_http_apimon_lease_exit(amcf);
}


ngx_int_t
ngx_http_apimon_handler(ngx_http_request_t *r)
{
    ngx_int_t                     rc;
    ngx_str_t                     key;
    ngx_http_apimon_ctx_t        *ctx;
    ngx_http_apimon_loc_conf_t   *alcf;
    ngx_http_apimon_main_conf_t  *amcf;

    alcf = ngx_http_get_module_loc_conf(r, ngx_http_apimon_module);

    if (!alcf->enable) {
        return NGX_DECLINED;
    }

    ctx = ngx_http_apimon_get_ctx(r);

    if (ctx) {
        if (ctx->waiting) {
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

    ngx_http_apimon_redact_log(r, ctx, alcf);

    if (alcf->api.len == 0) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "apimon: \"apimon_api\" is not set for this location");
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ngx_http_complex_value(r, alcf->key, &key) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->key = key;

    rc = ngx_http_apimon_hide_key(r, alcf);
    if (rc != NGX_OK) {
        return rc;
    }

    if (key.len == 0) {
        ctx->result = NGX_HTTP_APIMON_MISSING_KEY;
        return ngx_http_apimon_decide(r, ctx, alcf);
    }

    amcf = ngx_http_get_module_main_conf(r, ngx_http_apimon_module);

    if (ngx_http_apimon_key_valid(&key, amcf->key_secrets, alcf->key_legacy,
                                  &ctx->key_version, r->connection->log)
        != NGX_OK)
    {
        ctx->result = NGX_HTTP_APIMON_INVALID_KEY;
        return ngx_http_apimon_decide(r, ctx, alcf);
    }

    return ngx_http_apimon_check(r, ctx, alcf, amcf, &key);
}


static ngx_int_t
ngx_http_apimon_decide(ngx_http_request_t *r, ngx_http_apimon_ctx_t *ctx,
    ngx_http_apimon_loc_conf_t *alcf)
{
    ngx_uint_t  status;

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "apimon: result \"%V\"",
                   ngx_http_apimon_result_name(ctx->result));

    status = ngx_http_apimon_result(ctx->result)->status;

    if (status && alcf->dry_run
        && !(ctx->result == NGX_HTTP_APIMON_REDIS_ERROR
             && alcf->on_redis_error == NGX_HTTP_APIMON_REDIS_OPEN))
    {
        /* the refusal is only noted: the check counted no usage for it */
        ctx->dry_run = 1;
    }

    if (!ctx->counted) {
        ctx->counted = 1;
        ngx_http_apimon_metrics_check(alcf, ctx->result, ctx->dry_run);

        if (ctx->result == NGX_HTTP_APIMON_REDIS_ERROR) {
            (void) ngx_http_apimon_redis_outage(1);
        }

        if (ctx->dry_run) {
            ngx_log_error(alcf->log_level, r->connection->log, 0,
                          "apimon: dry run, not refused: %V%s%V",
                          ngx_http_apimon_result_name(ctx->result),
                          ctx->subscription.len ? ", subscription " : "",
                          &ctx->subscription);
        }
    }

    if (status == 0) {
        /* allowed: access granted (what counts with "satisfy any") */
        return NGX_OK;
    }

    if (ctx->dry_run) {
        return NGX_DECLINED;
    }

    if (ctx->result == NGX_HTTP_APIMON_QUOTA_EXCEEDED) {
        status = alcf->quota_status;

    } else if (ctx->result == NGX_HTTP_APIMON_REDIS_ERROR
               && alcf->on_redis_error == NGX_HTTP_APIMON_REDIS_OPEN)
    {
        return NGX_DECLINED;
    }

    if (r->error_page) {
        /* the error page of this very refusal: let it be served */
        return NGX_DECLINED;
    }

    return ngx_http_apimon_refuse(r, ctx, status);
}


static ngx_int_t
ngx_http_apimon_check(ngx_http_request_t *r, ngx_http_apimon_ctx_t *ctx,
    ngx_http_apimon_loc_conf_t *alcf, ngx_http_apimon_main_conf_t *amcf,
    ngx_str_t *key)
{
    u_char     *p;
    ngx_int_t   rc;

    p = ngx_cpymem(ctx->skey, "apimon:sub:{", sizeof("apimon:sub:{") - 1);
    ngx_http_apimon_key_sub_id(key, p);
    p += NGX_HTTP_APIMON_SUB_ID_LEN;
    *p = '}';

    ngx_http_apimon_key_digest(key, ctx->digest);

    if (amcf->unknown
        && ngx_http_apimon_unknown_find(amcf->unknown, ctx->digest) == NGX_OK)
    {
        ngx_log_debug0(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "apimon: Redis just called this key unknown");

        ctx->result = NGX_HTTP_APIMON_INVALID_KEY;
        return ngx_http_apimon_decide(r, ctx, alcf);
    }

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "apimon: check %*s", NGX_HTTP_APIMON_SKEY_LEN, ctx->skey);

    if (amcf->lease_zone) {
        rc = ngx_http_apimon_lease_check(r, ctx, alcf, amcf);

        if (rc == NGX_OK) {
            return ngx_http_apimon_decide(r, ctx, alcf);
        }

        if (rc == NGX_AGAIN) {
            return NGX_AGAIN;
        }
    }

    ctx->conf = alcf;

    /* notice a client that goes away while the check is in flight */
    r->read_event_handler = ngx_http_test_reading;

    ngx_http_apimon_batch_add(ctx);

    return NGX_AGAIN;
}
