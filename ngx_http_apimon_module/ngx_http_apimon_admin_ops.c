
/*
 * apimon: the management API's operations and its route table.  Each
 * operation checks its input and makes one Redis call (its row's script, or
 * a plain read command); its reply handler answers with the resource
 * shaped by ngx_http_apimon_admin_json.c.
 *
 * Adding an endpoint: a row of ngx_http_apimon_admin_routes[] (at the end
 * of this file), its operation here, its script in schema/lua (taking the
 * leading arguments of lib.lua's apimon_mgmt_args).
 */


#include "ngx_http_apimon_admin.h"


/* catalog: GET /apiproducts, GET /apiproducts/{product} */


static ngx_int_t ngx_http_apimon_admin_products_reply(ngx_http_request_t *r,
    ngx_http_apimon_admin_ctx_t *ctx, redisReply *reply);


static ngx_int_t
ngx_http_apimon_admin_products(ngx_http_request_t *r,
    ngx_http_apimon_admin_ctx_t *ctx)
{
    ngx_str_t  args[3] = {
        ngx_string("HGET"),
        ngx_string("apimon:catalog"),
        ngx_string("json")
    };

    return ngx_http_apimon_admin_command(r, ctx, args, 3,
                                         ngx_http_apimon_admin_products_reply);
}


static ngx_int_t
ngx_http_apimon_admin_products_reply(ngx_http_request_t *r,
    ngx_http_apimon_admin_ctx_t *ctx, redisReply *reply)
{
    cJSON  *catalog, *product, *out;

    catalog = NULL;

    if (reply->type != REDIS_REPLY_NIL) {
        catalog = ngx_http_apimon_admin_parse(r, reply);
        if (catalog == NULL) {
            return ngx_http_apimon_admin_error(r,
                                          NGX_HTTP_INTERNAL_SERVER_ERROR,
                                          "the stored catalog is unreadable");
        }
    }

    if (ctx->name.len == 0) {
        out = ngx_http_apimon_admin_products_json(catalog);

    } else {
        product = ngx_http_apimon_admin_product_find(catalog, &ctx->name);

        if (product == NULL) {
            cJSON_Delete(catalog);
            return ngx_http_apimon_admin_error(r, NGX_HTTP_NOT_FOUND,
                                               "no such apiproduct: %V",
                                               &ctx->name);
        }

        out = ngx_http_apimon_admin_product_json(product,
                        cJSON_GetObjectItemCaseSensitive(catalog, "plans"));
    }

    cJSON_Delete(catalog);

    if (out && ngx_http_apimon_admin_etag_json(r, out) != NGX_OK) {
        cJSON_Delete(out);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_apimon_admin_send(r, NGX_HTTP_OK, out);
}


/* developers and app groups */

static ngx_int_t ngx_http_apimon_admin_owners_reply(ngx_http_request_t *r,
    ngx_http_apimon_admin_ctx_t *ctx, redisReply *reply);
static ngx_int_t ngx_http_apimon_admin_owner_reply(ngx_http_request_t *r,
    ngx_http_apimon_admin_ctx_t *ctx, redisReply *reply);
static ngx_int_t ngx_http_apimon_admin_owner_hash_reply(ngx_http_request_t *r,
    ngx_http_apimon_admin_ctx_t *ctx, redisReply *reply);


static ngx_int_t
ngx_http_apimon_admin_owners_list(ngx_http_request_t *r,
    ngx_http_apimon_admin_ctx_t *ctx)
{
    ngx_int_t  rc;
    ngx_str_t  args[2];

    rc = ngx_http_apimon_admin_page(r, ctx, &args[0], &args[1]);
    if (rc != NGX_OK) {
        return rc;
    }

    return ngx_http_apimon_admin_script(r, ctx, NULL, args, 2,
                                        ngx_http_apimon_admin_owners_reply);
}


static ngx_int_t
ngx_http_apimon_admin_owners_reply(ngx_http_request_t *r,
    ngx_http_apimon_admin_ctx_t *ctx, redisReply *reply)
{
    cJSON  *out;

    out = ngx_http_apimon_admin_page_json(r, reply,
                                          ctx->kind.data[0] == 'd'
                                          ? "developer" : "appGroups",
                                          ngx_http_apimon_admin_owner_json);

    return ngx_http_apimon_admin_send(r, NGX_HTTP_OK, out);
}


/*
 * owner_put: the fields as sent (the id from the path), and If-Match, which
 * an update compares with the record in the same call
 */

static ngx_int_t
ngx_http_apimon_admin_owner_put(ngx_http_request_t *r,
    ngx_http_apimon_admin_ctx_t *ctx, char *mode)
{
    ngx_str_t   args[3];

    if (ngx_http_apimon_admin_body_json(r, ctx->body, &args[0]) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    args[1].data = (u_char *) mode;
    args[1].len = ngx_strlen(mode);

    ngx_http_apimon_admin_if_match(r, &args[2]);

    return ngx_http_apimon_admin_script(r, ctx, NULL, args, 3,
                                        ngx_http_apimon_admin_owner_reply);
}


static ngx_int_t
ngx_http_apimon_admin_owner_create(ngx_http_request_t *r,
    ngx_http_apimon_admin_ctx_t *ctx)
{
    char        *field;
    ngx_int_t    rc;
    ngx_uint_t   dev;

    dev = (ctx->kind.data[0] == 'd');
    field = dev ? "email" : "name";

    rc = ngx_http_apimon_admin_body_string(r, ctx, field, 1, &ctx->owner);
    if (rc != NGX_OK) {
        return rc;
    }

    if (dev && !ngx_http_apimon_admin_valid_email(ctx->owner.data,
                                                  ctx->owner.len))
    {
        return ngx_http_apimon_admin_error(r, NGX_HTTP_BAD_REQUEST,
                                           "email: not an email address");
    }

    if (!dev && !ngx_http_apimon_admin_valid_name(ctx->owner.data,
                                                  ctx->owner.len))
    {
        return ngx_http_apimon_admin_error(r, NGX_HTTP_BAD_REQUEST,
                                     "name: must match ^[A-Za-z0-9._-]{1,64}$");
    }

    ctx->status = NGX_HTTP_CREATED;

    return ngx_http_apimon_admin_owner_put(r, ctx, "create");
}


static ngx_int_t
ngx_http_apimon_admin_owner_update(ngx_http_request_t *r,
    ngx_http_apimon_admin_ctx_t *ctx)
{
    ctx->status = NGX_HTTP_OK;

    return ngx_http_apimon_admin_owner_put(r, ctx, "update");
}


static ngx_int_t
ngx_http_apimon_admin_owner_reply(ngx_http_request_t *r,
    ngx_http_apimon_admin_ctx_t *ctx, redisReply *reply)
{
    cJSON  *json;

    json = ngx_http_apimon_admin_parse(r, reply);

    if (json && ngx_http_apimon_admin_etag(r, json) != NGX_OK) {
        cJSON_Delete(json);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    json = json ? ngx_http_apimon_admin_owner_json(json) : NULL;

    if (ctx->status == NGX_HTTP_CREATED
        && ngx_http_apimon_admin_location(r, &ctx->owner) != NGX_OK)
    {
        cJSON_Delete(json);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_apimon_admin_send(r, ctx->status, json);
}


static ngx_int_t
ngx_http_apimon_admin_owner_get(ngx_http_request_t *r,
    ngx_http_apimon_admin_ctx_t *ctx)
{
    u_char     *p;
    ngx_str_t   args[2];

    ngx_str_set(&args[0], "HGETALL");

    args[1].len = sizeof("apimon::") - 1 + ctx->kind.len + ctx->owner.len;
    args[1].data = ngx_pnalloc(r->pool, args[1].len);
    if (args[1].data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_sprintf(args[1].data, "apimon:%V:%V", &ctx->kind, &ctx->owner);
    args[1].len = p - args[1].data;

    return ngx_http_apimon_admin_command(r, ctx, args, 2,
                                      ngx_http_apimon_admin_owner_hash_reply);
}


static ngx_int_t
ngx_http_apimon_admin_owner_hash_reply(ngx_http_request_t *r,
    ngx_http_apimon_admin_ctx_t *ctx, redisReply *reply)
{
    cJSON  *raw;

    if (reply->type != REDIS_REPLY_ARRAY) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (reply->elements == 0) {
        return ngx_http_apimon_admin_error(r, NGX_HTTP_NOT_FOUND,
                                           "no such %V: %V",
                                           &ctx->kind, &ctx->owner);
    }

    raw = ngx_http_apimon_admin_hash_json(reply);
    if (raw == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ngx_http_apimon_admin_etag(r, raw) != NGX_OK) {
        cJSON_Delete(raw);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_apimon_admin_send(r, NGX_HTTP_OK,
                                      ngx_http_apimon_admin_owner_json(raw));
}


/* subscriptions */

static ngx_int_t ngx_http_apimon_admin_subs_reply(ngx_http_request_t *r,
    ngx_http_apimon_admin_ctx_t *ctx, redisReply *reply);
static ngx_int_t ngx_http_apimon_admin_sub_reply(ngx_http_request_t *r,
    ngx_http_apimon_admin_ctx_t *ctx, redisReply *reply);
static ngx_int_t ngx_http_apimon_admin_usage_reply(ngx_http_request_t *r,
    ngx_http_apimon_admin_ctx_t *ctx, redisReply *reply);


/* "apimon:sub:{<id>}" */

static ngx_int_t
ngx_http_apimon_admin_sub_key_name(ngx_http_request_t *r, ngx_str_t *id,
    ngx_str_t *key)
{
    u_char  *p;

    key->data = ngx_pnalloc(r->pool, sizeof("apimon:sub:{}") - 1 + id->len);
    if (key->data == NULL) {
        return NGX_ERROR;
    }

    p = ngx_sprintf(key->data, "apimon:sub:{%V}", id);
    key->len = p - key->data;

    return NGX_OK;
}


static ngx_int_t
ngx_http_apimon_admin_subs_list(ngx_http_request_t *r,
    ngx_http_apimon_admin_ctx_t *ctx)
{
    ngx_int_t  rc;
    ngx_str_t  args[2];

    rc = ngx_http_apimon_admin_page(r, ctx, &args[0], &args[1]);
    if (rc != NGX_OK) {
        return rc;
    }

    if (args[0].len
        && !ngx_http_apimon_admin_valid_uuid(args[0].data, args[0].len))
    {
        return ngx_http_apimon_admin_error(r, NGX_HTTP_BAD_REQUEST,
                                           "startKey: not a subscription "
                                           "name");
    }

    return ngx_http_apimon_admin_script(r, ctx, NULL, args, 2,
                                        ngx_http_apimon_admin_subs_reply);
}


static ngx_int_t
ngx_http_apimon_admin_subs_reply(ngx_http_request_t *r,
    ngx_http_apimon_admin_ctx_t *ctx, redisReply *reply)
{
    cJSON  *out;

    out = ngx_http_apimon_admin_page_json(r, reply,
                                          ctx->kind.data[0] == 'd'
                                          ? "developerSubscriptions"
                                          : "appGroupSubscriptions",
                                          ngx_http_apimon_admin_sub_json);

    return ngx_http_apimon_admin_send(r, NGX_HTTP_OK, out);
}


/* a new key for slot 0 (primary) or 1 (secondary), and its digest */

static ngx_int_t
ngx_http_apimon_admin_new_key(ngx_http_request_t *r,
    ngx_http_apimon_admin_ctx_t *ctx, ngx_uint_t slot, ngx_str_t *digest)
{
    ngx_str_t                     key;
    ngx_http_apimon_main_conf_t  *amcf;

    /* tagged under the secret the enforcing locations verify */
    amcf = ngx_http_get_module_main_conf(r, ngx_http_apimon_module);

    if (ngx_http_apimon_key_generate(ctx->sub_id, amcf->key_secrets,
                                     ctx->keys[slot], &ctx->key_len[slot],
                                     r->connection->log)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    digest->len = NGX_HTTP_APIMON_DIGEST_LEN;
    digest->data = ngx_pnalloc(r->pool, NGX_HTTP_APIMON_DIGEST_LEN);
    if (digest->data == NULL) {
        return NGX_ERROR;
    }

    key.data = ctx->keys[slot];
    key.len = ctx->key_len[slot];

    ngx_http_apimon_key_digest(&key, digest->data);

    ctx->key_set |= 1 << slot;

    return NGX_OK;
}


/*
 * The purchase: apiproduct, and plan unless the product has a default one
 * (subscription_create resolves it); startTime (absent: now) and endTime
 * (absent: open-ended), whose ranges the script checks.
 */

static ngx_int_t
ngx_http_apimon_admin_sub_purchase(ngx_http_request_t *r,
    ngx_http_apimon_admin_ctx_t *ctx)
{
    cJSON      *attrs;
    ngx_int_t   rc;
    ngx_str_t   key, args[11];

    /* subscription_create: id, product, plan, the two key digests,
     * startTime, endTime, the Idempotency-Key's three, attributes (JSON,
     * checked by the script) */

    rc = ngx_http_apimon_admin_body_string(r, ctx, "apiproduct", 1, &args[1]);
    if (rc != NGX_OK) {
        return rc;
    }

    if (!ngx_http_apimon_admin_valid_name(args[1].data, args[1].len)) {
        return ngx_http_apimon_admin_error(r, NGX_HTTP_BAD_REQUEST,
                               "apiproduct: must match ^[A-Za-z0-9._-]{1,64}$");
    }

    rc = ngx_http_apimon_admin_body_string(r, ctx, "plan", 0, &args[2]);

    if (rc == NGX_DECLINED) {
        ngx_str_set(&args[2], "");

    } else if (rc != NGX_OK) {
        return rc;

    } else if (!ngx_http_apimon_admin_valid_name(args[2].data, args[2].len)) {
        return ngx_http_apimon_admin_error(r, NGX_HTTP_BAD_REQUEST,
                                     "plan: must match ^[A-Za-z0-9._-]{1,64}$");
    }

    rc = ngx_http_apimon_admin_body_time(r, ctx, "startTime", &args[5]);

    if (rc == NGX_DECLINED) {
        ngx_str_set(&args[5], "0");

    } else if (rc != NGX_OK) {
        return rc;
    }

    rc = ngx_http_apimon_admin_body_time(r, ctx, "endTime", &args[6]);

    if (rc == NGX_DECLINED) {
        ngx_str_set(&args[6], "0");

    } else if (rc != NGX_OK) {
        return rc;
    }

    if (ngx_http_apimon_uuid(ctx->sub_id, r->connection->log) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    args[0].data = ctx->sub_id;
    args[0].len = NGX_HTTP_APIMON_SUB_ID_LEN;
    ctx->name = args[0];

    if (ngx_http_apimon_admin_new_key(r, ctx, 0, &args[3]) != NGX_OK
        || ngx_http_apimon_admin_new_key(r, ctx, 1, &args[4]) != NGX_OK
        || ngx_http_apimon_admin_sub_key_name(r, &args[0], &key) != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    rc = ngx_http_apimon_admin_idem_args(r, ctx, &args[7]);
    if (rc != NGX_OK) {
        return rc;
    }

    attrs = cJSON_GetObjectItemCaseSensitive(ctx->body, "attributes");
    ngx_str_set(&args[10], "");

    if (attrs && ngx_http_apimon_admin_body_json(r, attrs, &args[10])
                 != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->status = NGX_HTTP_CREATED;

    return ngx_http_apimon_admin_script(r, ctx, &key, args, 11,
                                        ngx_http_apimon_admin_sub_reply);
}


static ngx_int_t
ngx_http_apimon_admin_sub_get(ngx_http_request_t *r,
    ngx_http_apimon_admin_ctx_t *ctx)
{
    ngx_str_t  key;

    if (ngx_http_apimon_admin_sub_key_name(r, &ctx->name, &key) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->status = NGX_HTTP_OK;

    return ngx_http_apimon_admin_script(r, ctx, &key, NULL, 0,
                                        ngx_http_apimon_admin_sub_reply);
}


/* PUT: its attributes (subscription_put checks the members) */

static ngx_int_t
ngx_http_apimon_admin_sub_update(ngx_http_request_t *r,
    ngx_http_apimon_admin_ctx_t *ctx)
{
    ngx_str_t  key, args[2];

    if (ngx_http_apimon_admin_body_json(r, ctx->body, &args[0]) != NGX_OK
        || ngx_http_apimon_admin_sub_key_name(r, &ctx->name, &key) != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_http_apimon_admin_if_match(r, &args[1]);

    ctx->status = NGX_HTTP_OK;

    return ngx_http_apimon_admin_script(r, ctx, &key, args, 2,
                                        ngx_http_apimon_admin_sub_reply);
}


static ngx_int_t
ngx_http_apimon_admin_sub_action(ngx_http_request_t *r,
    ngx_http_apimon_admin_ctx_t *ctx)
{
    ngx_str_t  key, args[2];

    if (ngx_http_apimon_admin_idem_header(r, &key) == NGX_OK) {
        return ngx_http_apimon_admin_error(r, NGX_HTTP_BAD_REQUEST,
                                     "Idempotency-Key: taken by a purchase "
                                     "and :regenerate only (an action is "
                                     "guarded by If-Match)");
    }

    if (!ngx_http_apimon_admin_is(&ctx->action, "activate")
        && !ngx_http_apimon_admin_is(&ctx->action, "suspend")
        && !ngx_http_apimon_admin_is(&ctx->action, "resume")
        && !ngx_http_apimon_admin_is(&ctx->action, "cancel")
        && !ngx_http_apimon_admin_is(&ctx->action, "expire"))
    {
        return ngx_http_apimon_admin_error(r, NGX_HTTP_BAD_REQUEST,
                                     "unknown action \"%V\" (expected "
                                     "activate, suspend, resume, cancel or "
                                     "expire)", &ctx->action);
    }

    if (ngx_http_apimon_admin_sub_key_name(r, &ctx->name, &key) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    args[0] = ctx->action;
    ngx_http_apimon_admin_if_match(r, &args[1]);

    ctx->status = NGX_HTTP_OK;

    return ngx_http_apimon_admin_script(r, ctx, &key, args, 2,
                                        ngx_http_apimon_admin_sub_reply);
}


static ngx_int_t
ngx_http_apimon_admin_sub_key(ngx_http_request_t *r,
    ngx_http_apimon_admin_ctx_t *ctx)
{
    ngx_int_t   rc;
    ngx_uint_t  slot;
    ngx_str_t   key, args[6];

    ngx_memcpy(ctx->sub_id, ctx->name.data, NGX_HTTP_APIMON_SUB_ID_LEN);

    slot = (ctx->action.data[0] == 'p') ? 0 : 1;

    if (ngx_http_apimon_admin_new_key(r, ctx, slot, &args[1]) != NGX_OK
        || ngx_http_apimon_admin_sub_key_name(r, &ctx->name, &key) != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    args[0] = ctx->action;
    ngx_http_apimon_admin_if_match(r, &args[2]);

    rc = ngx_http_apimon_admin_idem_args(r, ctx, &args[3]);
    if (rc != NGX_OK) {
        return rc;
    }

    ctx->status = NGX_HTTP_OK;

    return ngx_http_apimon_admin_script(r, ctx, &key, args, 6,
                                        ngx_http_apimon_admin_sub_reply);
}


/*
 * :changePlan {"plan", "effective"}: the plan (its name's form checked
 * here, the rest by subscription_plan), "now" (absent) or "periodEnd";
 * If-Match and Idempotency-Key as for the other changes
 */

static ngx_int_t
ngx_http_apimon_admin_sub_plan(ngx_http_request_t *r,
    ngx_http_apimon_admin_ctx_t *ctx)
{
    ngx_int_t  rc;
    ngx_str_t  key, args[6];

    rc = ngx_http_apimon_admin_body_string(r, ctx, "plan", 1, &args[0]);
    if (rc != NGX_OK) {
        return rc;
    }

    if (!ngx_http_apimon_admin_valid_name(args[0].data, args[0].len)) {
        return ngx_http_apimon_admin_error(r, NGX_HTTP_BAD_REQUEST,
                                     "plan: must match ^[A-Za-z0-9._-]{1,64}$");
    }

    rc = ngx_http_apimon_admin_body_string(r, ctx, "effective", 0, &args[1]);

    if (rc == NGX_DECLINED) {
        ngx_str_set(&args[1], "now");

    } else if (rc != NGX_OK) {
        return rc;

    } else if (!ngx_http_apimon_admin_is(&args[1], "now")
               && !ngx_http_apimon_admin_is(&args[1], "periodEnd"))
    {
        return ngx_http_apimon_admin_error(r, NGX_HTTP_BAD_REQUEST,
                                           "effective: must be \"now\" or "
                                           "\"periodEnd\"");
    }

    if (ngx_http_apimon_admin_sub_key_name(r, &ctx->name, &key) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_http_apimon_admin_if_match(r, &args[2]);

    /* no key is made: the replay of a change answers the record alone */
    rc = ngx_http_apimon_admin_idem_args(r, ctx, &args[3]);
    if (rc != NGX_OK) {
        return rc;
    }

    ctx->status = NGX_HTTP_OK;

    return ngx_http_apimon_admin_script(r, ctx, &key, args, 6,
                                        ngx_http_apimon_admin_sub_reply);
}


/*
 * the subscription, with the keys made by this request (shown only here)
 * or, replayed for its Idempotency-Key, by the first one
 */

static ngx_int_t
ngx_http_apimon_admin_sub_reply(ngx_http_request_t *r,
    ngx_http_apimon_admin_ctx_t *ctx, redisReply *reply)
{
    char       key[NGX_HTTP_APIMON_KEY_MAX_LEN + 1];
    cJSON     *raw, *out;
    ngx_int_t  rc;

    raw = ngx_http_apimon_admin_parse(r, reply);
    if (raw == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    rc = ngx_http_apimon_admin_idem_replay(r, ctx, raw);

    if (rc == NGX_DONE || rc == NGX_ERROR
        || ngx_http_apimon_admin_etag(r, raw) != NGX_OK)
    {
        cJSON_Delete(raw);
        return (rc == NGX_DONE) ? rc : NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    out = ngx_http_apimon_admin_sub_json(raw);
    cJSON_Delete(raw);

    if (out == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ctx->key_set & 1) {
        *ngx_cpymem(key, ctx->keys[0], ctx->key_len[0]) = '\0';
        cJSON_AddStringToObject(out, "primary", key);
    }

    if (ctx->key_set & 2) {
        *ngx_cpymem(key, ctx->keys[1], ctx->key_len[1]) = '\0';
        cJSON_AddStringToObject(out, "secondary", key);
    }

    ngx_explicit_memzero(key, sizeof(key));

    if (ctx->status == NGX_HTTP_CREATED) {
        if (ngx_http_apimon_admin_location(r, &ctx->name) != NGX_OK) {
            cJSON_Delete(out);
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    return ngx_http_apimon_admin_send(r, ctx->status, out);
}


/* usage: GET .../subscriptions/{name}/usage?from=YYYY-MM-DD&to=YYYY-MM-DD */

/* a valid Gregorian date -> "YYYYMMDD" and its day number */

static ngx_int_t
ngx_http_apimon_admin_date(ngx_str_t *in, u_char *out, ngx_int_t *days)
{
    ngx_int_t  y, m, d, mdays;
    static ngx_int_t  month_days[] = {
        31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31
    };

    if (in->len != 10 || in->data[4] != '-' || in->data[7] != '-') {
        return NGX_ERROR;
    }

    y = ngx_atoi(in->data, 4);
    m = ngx_atoi(in->data + 5, 2);
    d = ngx_atoi(in->data + 8, 2);

    if (y < 1970 || m < 1 || m > 12 || d < 1) {
        return NGX_ERROR;
    }

    mdays = month_days[m - 1];

    if (m == 2 && ((y % 4 == 0 && y % 100 != 0) || y % 400 == 0)) {
        mdays = 29;
    }

    if (d > mdays) {
        return NGX_ERROR;
    }

    ngx_memcpy(out, in->data, 4);
    ngx_memcpy(out + 4, in->data + 5, 2);
    ngx_memcpy(out + 6, in->data + 8, 2);

    /* days since 1970-01-01 (days from civil) */

    if (m <= 2) {
        y--;
    }

    *days = 365 * y + y / 4 - y / 100 + y / 400
            + (153 * ((m + 9) % 12) + 2) / 5 + d - 719469;

    return NGX_OK;
}


static ngx_int_t
ngx_http_apimon_admin_usage_day(ngx_http_request_t *r, char *name,
    ngx_str_t *out, ngx_int_t *days)
{
    ngx_str_t  v;

    switch (ngx_http_apimon_admin_arg(r, name, &v)) {

    case NGX_ERROR:
        return NGX_HTTP_INTERNAL_SERVER_ERROR;

    case NGX_DECLINED:
        return ngx_http_apimon_admin_error(r, NGX_HTTP_BAD_REQUEST,
                                           "%s: is required (YYYY-MM-DD)",
                                           name);
    }

    out->data = ngx_pnalloc(r->pool, 8);
    if (out->data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    out->len = 8;

    if (ngx_http_apimon_admin_date(&v, out->data, days) != NGX_OK) {
        return ngx_http_apimon_admin_error(r, NGX_HTTP_BAD_REQUEST,
                                           "%s: must be a date YYYY-MM-DD",
                                           name);
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_apimon_admin_sub_usage(ngx_http_request_t *r,
    ngx_http_apimon_admin_ctx_t *ctx)
{
    ngx_int_t  rc, from, to;
    ngx_str_t  key, args[2];

    rc = ngx_http_apimon_admin_usage_day(r, "from", &ctx->from, &from);
    if (rc != NGX_OK) {
        return rc;
    }

    rc = ngx_http_apimon_admin_usage_day(r, "to", &ctx->to, &to);
    if (rc != NGX_OK) {
        return rc;
    }

    if (to < from) {
        return ngx_http_apimon_admin_error(r, NGX_HTTP_BAD_REQUEST,
                                           "to: must not be before from");
    }

    if (to - from >= NGX_HTTP_APIMON_ADMIN_USAGE_DAYS) {
        return ngx_http_apimon_admin_error(r, NGX_HTTP_BAD_REQUEST,
                                           "to: at most %d days after from",
                                        NGX_HTTP_APIMON_ADMIN_USAGE_DAYS - 1);
    }

    if (ngx_http_apimon_admin_sub_key_name(r, &ctx->name, &key) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    args[0] = ctx->from;
    args[1] = ctx->to;

    return ngx_http_apimon_admin_script(r, ctx, &key, args, 2,
                                        ngx_http_apimon_admin_usage_reply);
}


static ngx_int_t
ngx_http_apimon_admin_usage_reply(ngx_http_request_t *r,
    ngx_http_apimon_admin_ctx_t *ctx, redisReply *reply)
{
    return ngx_http_apimon_admin_send(r, NGX_HTTP_OK,
                              ngx_http_apimon_admin_usage_json(ctx, reply));
}


/* audit: GET /audit?since=<ms or entry id>&count=N */

static ngx_int_t ngx_http_apimon_admin_audit_reply(ngx_http_request_t *r,
    ngx_http_apimon_admin_ctx_t *ctx, redisReply *reply);


static ngx_int_t
ngx_http_apimon_admin_audit(ngx_http_request_t *r,
    ngx_http_apimon_admin_ctx_t *ctx)
{
    u_char      *p, *dash;
    ngx_int_t    rc;
    ngx_str_t    since, args[6];

    rc = ngx_http_apimon_admin_page(r, ctx, &since, &args[5]);
    if (rc != NGX_OK) {
        return rc;
    }

    ngx_str_set(&args[0], "XRANGE");
    ngx_str_set(&args[1], "apimon:audit");
    ngx_str_set(&args[2], "-");
    ngx_str_set(&args[3], "+");
    ngx_str_set(&args[4], "COUNT");

    switch (ngx_http_apimon_admin_arg(r, "since", &since)) {

    case NGX_ERROR:
        return NGX_HTTP_INTERNAL_SERVER_ERROR;

    case NGX_DECLINED:
        break;

    default:

        /* "<ms>": entries from that instant on; "<ms>-<seq>" (an entry's
         * id, e.g. the last one seen): the entries after it */

        dash = ngx_strlchr(since.data, since.data + since.len, '-');

        if (ngx_atoof(since.data, dash ? (size_t) (dash - since.data)
                                       : since.len) == NGX_ERROR
            || (dash && ngx_atoof(dash + 1, since.data + since.len - dash - 1)
                        == NGX_ERROR))
        {
            return ngx_http_apimon_admin_error(r, NGX_HTTP_BAD_REQUEST,
                                         "since: must be milliseconds since "
                                         "the epoch or an entry id");
        }

        if (dash == NULL) {
            args[2] = since;
            break;
        }

        args[2].data = ngx_pnalloc(r->pool, since.len + 1);
        if (args[2].data == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        p = ngx_sprintf(args[2].data, "(%V", &since);
        args[2].len = p - args[2].data;
    }

    return ngx_http_apimon_admin_command(r, ctx, args, 6,
                                         ngx_http_apimon_admin_audit_reply);
}


static ngx_int_t
ngx_http_apimon_admin_audit_reply(ngx_http_request_t *r,
    ngx_http_apimon_admin_ctx_t *ctx, redisReply *reply)
{
    return ngx_http_apimon_admin_send(r, NGX_HTTP_OK,
                              ngx_http_apimon_admin_audit_json(ctx, reply));
}


/*
 * The members each body may have: any other one is refused by name, never
 * ignored.  The owners' bodies are checked by owner_put, which knows the
 * fields of each kind.
 */

static char  *ngx_http_apimon_admin_no_fields[] = { NULL };

static char  *ngx_http_apimon_admin_purchase_fields[] = {
    "apiproduct", "plan", "startTime", "endTime", "attributes", NULL
};

static char  *ngx_http_apimon_admin_plan_fields[] = {
    "plan", "effective", NULL
};


/*
 * The route table: method, path (below {base}, named parts in braces: see
 * ngx_http_apimon_admin_route.c), operation, script, body, its members.
 * The rows of one path are listed in the order Allow names their methods.
 */

ngx_http_apimon_admin_route_t  ngx_http_apimon_admin_routes[] = {

    { ngx_string("GET"), "apiproducts",
      ngx_http_apimon_admin_products, NGX_HTTP_APIMON_ADMIN_COMMAND,
      NGX_HTTP_APIMON_ADMIN_NO_BODY, NULL },

    { ngx_string("GET"), "apiproducts/{product}",
      ngx_http_apimon_admin_products, NGX_HTTP_APIMON_ADMIN_COMMAND,
      NGX_HTTP_APIMON_ADMIN_NO_BODY, NULL },

    { ngx_string("GET"), "{owners}",
      ngx_http_apimon_admin_owners_list, APIMON_SCRIPT_OWNER_LIST,
      NGX_HTTP_APIMON_ADMIN_NO_BODY, NULL },

    { ngx_string("POST"), "{owners}",
      ngx_http_apimon_admin_owner_create, APIMON_SCRIPT_OWNER_PUT,
      NGX_HTTP_APIMON_ADMIN_BODY, NULL },

    { ngx_string("GET"), "{owners}/{owner}",
      ngx_http_apimon_admin_owner_get, NGX_HTTP_APIMON_ADMIN_COMMAND,
      NGX_HTTP_APIMON_ADMIN_NO_BODY, NULL },

    { ngx_string("PUT"), "{owners}/{owner}",
      ngx_http_apimon_admin_owner_update, APIMON_SCRIPT_OWNER_PUT,
      NGX_HTTP_APIMON_ADMIN_BODY, NULL },

    { ngx_string("GET"), "{owners}/{owner}/subscriptions",
      ngx_http_apimon_admin_subs_list, APIMON_SCRIPT_SUBSCRIPTION_LIST,
      NGX_HTTP_APIMON_ADMIN_NO_BODY, NULL },

    { ngx_string("POST"), "{owners}/{owner}/subscriptions",
      ngx_http_apimon_admin_sub_purchase, APIMON_SCRIPT_SUBSCRIPTION_CREATE,
      NGX_HTTP_APIMON_ADMIN_BODY, ngx_http_apimon_admin_purchase_fields },

    { ngx_string("GET"), "{owners}/{owner}/subscriptions/{sub}",
      ngx_http_apimon_admin_sub_get, APIMON_SCRIPT_SUBSCRIPTION_VIEW,
      NGX_HTTP_APIMON_ADMIN_NO_BODY, NULL },

    { ngx_string("PUT"), "{owners}/{owner}/subscriptions/{sub}",
      ngx_http_apimon_admin_sub_update, APIMON_SCRIPT_SUBSCRIPTION_PUT,
      NGX_HTTP_APIMON_ADMIN_BODY, NULL },

    /* before {action}: the first row that matches is taken */
    { ngx_string("POST"), "{owners}/{owner}/subscriptions/{sub}:changePlan",
      ngx_http_apimon_admin_sub_plan, APIMON_SCRIPT_SUBSCRIPTION_PLAN,
      NGX_HTTP_APIMON_ADMIN_BODY, ngx_http_apimon_admin_plan_fields },

    { ngx_string("POST"), "{owners}/{owner}/subscriptions/{sub}:{action}",
      ngx_http_apimon_admin_sub_action, APIMON_SCRIPT_SUBSCRIPTION_STATE,
      NGX_HTTP_APIMON_ADMIN_BODY_OPTIONAL, ngx_http_apimon_admin_no_fields },

    { ngx_string("GET"), "{owners}/{owner}/subscriptions/{sub}/usage",
      ngx_http_apimon_admin_sub_usage, APIMON_SCRIPT_SUBSCRIPTION_USAGE,
      NGX_HTTP_APIMON_ADMIN_NO_BODY, NULL },

    { ngx_string("POST"),
      "{owners}/{owner}/subscriptions/{sub}/keys/{slot}:regenerate",
      ngx_http_apimon_admin_sub_key, APIMON_SCRIPT_SUBSCRIPTION_KEY,
      NGX_HTTP_APIMON_ADMIN_BODY_OPTIONAL, ngx_http_apimon_admin_no_fields },

    { ngx_string("GET"), "audit",
      ngx_http_apimon_admin_audit, NGX_HTTP_APIMON_ADMIN_COMMAND,
      NGX_HTTP_APIMON_ADMIN_NO_BODY, NULL },

    { ngx_null_string, NULL, NULL, 0, 0, NULL }
};
