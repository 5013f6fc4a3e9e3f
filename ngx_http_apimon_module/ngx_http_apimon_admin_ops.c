
/*
 * apimon: the management API's endpoints.  Each one checks its input and
 * starts one Redis call (ngx_http_apimon_admin_script/command); its reply
 * handler turns the reply into the answer.
 */


#include "ngx_http_apimon_admin.h"


/* copies a member as a string (times are shown as strings of ms) */

static void
ngx_http_apimon_admin_copy_string(cJSON *to, char *name, cJSON *from,
    char *field)
{
    char    buf[32];
    cJSON  *item;

    item = cJSON_GetObjectItemCaseSensitive(from, field);

    if (cJSON_IsString(item)) {
        cJSON_AddStringToObject(to, name, item->valuestring);

    } else if (cJSON_IsNumber(item)) {
        ngx_snprintf((u_char *) buf, sizeof(buf), "%L%Z",
                     (int64_t) item->valuedouble);
        cJSON_AddStringToObject(to, name, buf);
    }
}


static void
ngx_http_apimon_admin_copy_number(cJSON *to, char *name, cJSON *from,
    char *field)
{
    cJSON  *item;

    item = cJSON_GetObjectItemCaseSensitive(from, field);

    if (cJSON_IsNumber(item)) {
        cJSON_AddNumberToObject(to, name, item->valuedouble);

    } else if (cJSON_IsString(item)) {
        cJSON_AddNumberToObject(to, name, strtod(item->valuestring, NULL));
    }
}


/* a subscription hash (as JSON) -> the public, Apigee-shaped resource */

static cJSON *
ngx_http_apimon_admin_sub_json(cJSON *raw)
{
    cJSON  *out, *item, *quota, *q;

    out = cJSON_CreateObject();
    if (out == NULL) {
        return NULL;
    }

    ngx_http_apimon_admin_copy_string(out, "name", raw, "id");
    ngx_http_apimon_admin_copy_string(out, "apiproduct", raw, "product");
    ngx_http_apimon_admin_copy_string(out, "plan", raw, "plan");
    ngx_http_apimon_admin_copy_string(out, "state", raw, "state");

    item = cJSON_GetObjectItemCaseSensitive(raw, "owner_kind");

    if (cJSON_IsString(item)) {
        ngx_http_apimon_admin_copy_string(out,
                                ngx_strcmp(item->valuestring, "developer") == 0
                                ? "developer" : "appGroup", raw, "owner");
    }

    ngx_http_apimon_admin_copy_string(out, "startTime", raw, "startTime");

    item = cJSON_GetObjectItemCaseSensitive(raw, "endTime");

    if ((cJSON_IsString(item) && item->valuestring[0] != '\0'
         && ngx_strcmp(item->valuestring, "0") != 0)
        || (cJSON_IsNumber(item) && item->valuedouble != 0))
    {
        ngx_http_apimon_admin_copy_string(out, "endTime", raw, "endTime");
    }

    ngx_http_apimon_admin_copy_string(out, "createdAt", raw, "createdAt");
    ngx_http_apimon_admin_copy_string(out, "lastModifiedAt", raw,
                                      "lastModifiedAt");

    quota = cJSON_GetObjectItemCaseSensitive(raw, "quota");

    if (cJSON_IsObject(quota)) {
        q = cJSON_AddObjectToObject(out, "quota");
        if (q == NULL) {
            cJSON_Delete(out);
            return NULL;
        }

        if (cJSON_GetObjectItemCaseSensitive(quota, "limit") == NULL) {
            return out;     /* the plan has no quota: {} */
        }

        ngx_http_apimon_admin_copy_number(q, "limit", quota, "limit");
        ngx_http_apimon_admin_copy_number(q, "used", quota, "used");
        ngx_http_apimon_admin_copy_number(q, "remaining", quota, "remaining");
        ngx_http_apimon_admin_copy_string(q, "unit", raw, "quota_unit");
        ngx_http_apimon_admin_copy_string(q, "periodStart", quota,
                                          "periodStart");
        ngx_http_apimon_admin_copy_string(q, "periodEnd", quota, "periodEnd");
        ngx_http_apimon_admin_copy_string(q, "remainingTime", quota,
                                          "remainingMs");
    }

    return out;
}


/* catalog: GET /apiproducts, GET /apiproducts/{name} */

static ngx_int_t ngx_http_apimon_admin_products_reply(ngx_http_request_t *r,
    ngx_http_apimon_admin_ctx_t *ctx, redisReply *reply);


ngx_int_t
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


/*
 * A catalog product with its plans, and the plan a purchase naming only the
 * product gets (defaultPlan: declared, or the only plan).
 */

static cJSON *
ngx_http_apimon_admin_product_json(cJSON *product, cJSON *plans)
{
    cJSON  *out, *list, *plan, *owner, *name, *only;

    out = cJSON_Duplicate(product, 1);
    if (out == NULL) {
        return NULL;
    }

    list = cJSON_AddArrayToObject(out, "plans");
    if (list == NULL) {
        cJSON_Delete(out);
        return NULL;
    }

    name = cJSON_GetObjectItemCaseSensitive(product, "name");
    only = NULL;

    cJSON_ArrayForEach(plan, plans) {
        owner = cJSON_GetObjectItemCaseSensitive(plan, "product");

        if (cJSON_IsString(owner) && cJSON_IsString(name)
            && ngx_strcmp(owner->valuestring, name->valuestring) == 0)
        {
            cJSON_AddItemToArray(list, cJSON_Duplicate(plan, 1));
            only = plan;
        }
    }

    if (cJSON_GetArraySize(list) == 1
        && !cJSON_HasObjectItem(product, "defaultPlan"))
    {
        name = cJSON_GetObjectItemCaseSensitive(only, "name");

        if (cJSON_IsString(name)) {
            cJSON_AddStringToObject(out, "defaultPlan", name->valuestring);
        }
    }

    return out;
}


static ngx_int_t
ngx_http_apimon_admin_products_reply(ngx_http_request_t *r,
    ngx_http_apimon_admin_ctx_t *ctx, redisReply *reply)
{
    cJSON  *catalog, *products, *plans, *product, *name, *out, *list;

    catalog = NULL;

    if (reply->type != REDIS_REPLY_NIL) {
        catalog = ngx_http_apimon_admin_parse(r, reply);
        if (catalog == NULL) {
            return ngx_http_apimon_admin_error(r,
                                          NGX_HTTP_INTERNAL_SERVER_ERROR,
                                          "the stored catalog is unreadable");
        }
    }

    products = cJSON_GetObjectItemCaseSensitive(catalog, "products");
    plans = cJSON_GetObjectItemCaseSensitive(catalog, "plans");

    if (ctx->endpoint == NGX_HTTP_APIMON_ADMIN_PRODUCT) {
        cJSON_ArrayForEach(product, products) {
            name = cJSON_GetObjectItemCaseSensitive(product, "name");

            if (cJSON_IsString(name)
                && ngx_strlen(name->valuestring) == ctx->name.len
                && ngx_strncmp(name->valuestring, ctx->name.data,
                               ctx->name.len) == 0)
            {
                out = ngx_http_apimon_admin_product_json(product, plans);
                cJSON_Delete(catalog);
                return ngx_http_apimon_admin_send(r, NGX_HTTP_OK, out);
            }
        }

        cJSON_Delete(catalog);
        return ngx_http_apimon_admin_error(r, NGX_HTTP_NOT_FOUND,
                                           "no such apiproduct: %V",
                                           &ctx->name);
    }

    out = cJSON_CreateObject();
    list = cJSON_AddArrayToObject(out, "apiProduct");

    if (list == NULL) {
        cJSON_Delete(out);
        cJSON_Delete(catalog);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cJSON_ArrayForEach(product, products) {
        cJSON_AddItemToArray(list,
                          ngx_http_apimon_admin_product_json(product, plans));
    }

    cJSON_Delete(catalog);

    return ngx_http_apimon_admin_send(r, NGX_HTTP_OK, out);
}


/*
 * A page from owner_list or subscription_list: the next start key, then
 * one JSON item each; "shape" (or NULL) turns an item into its resource.
 */

static ngx_int_t
ngx_http_apimon_admin_page_reply(ngx_http_request_t *r, redisReply *reply,
    char *name, cJSON *(*shape)(cJSON *raw))
{
    size_t   i;
    cJSON   *out, *list, *item, *raw;

    if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 1) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    out = cJSON_CreateObject();
    list = cJSON_AddArrayToObject(out, name);

    if (list == NULL) {
        cJSON_Delete(out);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    for (i = 1; i < reply->elements; i++) {
        raw = ngx_http_apimon_admin_parse(r, reply->element[i]);
        item = (raw && shape) ? shape(raw) : raw;

        if (item != raw) {
            cJSON_Delete(raw);
        }

        if (item == NULL) {
            cJSON_Delete(out);
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        cJSON_AddItemToArray(list, item);
    }

    if (reply->element[0]->type == REDIS_REPLY_STRING
        && reply->element[0]->len > 0)
    {
        cJSON_AddStringToObject(out, "nextStartKey", reply->element[0]->str);
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


ngx_int_t
ngx_http_apimon_admin_owners_list(ngx_http_request_t *r,
    ngx_http_apimon_admin_ctx_t *ctx)
{
    ngx_int_t  rc;
    ngx_str_t  args[3];

    args[0] = ctx->kind;

    rc = ngx_http_apimon_admin_page(r, ctx, &args[1], &args[2]);
    if (rc != NGX_OK) {
        return rc;
    }

    return ngx_http_apimon_admin_script(r, ctx,
                                        NGX_HTTP_APIMON_ADMIN_OWNER_LIST_SCRIPT,
                                        NULL,
                                        args, 3,
                                        ngx_http_apimon_admin_owners_reply);
}


static ngx_int_t
ngx_http_apimon_admin_owners_reply(ngx_http_request_t *r,
    ngx_http_apimon_admin_ctx_t *ctx, redisReply *reply)
{
    return ngx_http_apimon_admin_page_reply(r, reply,
                                            ctx->kind.data[0] == 'd'
                                            ? "developer" : "appGroups", NULL);
}


/* the body for owner_put: the fields as sent, the id from the path */

static ngx_int_t
ngx_http_apimon_admin_owner_put(ngx_http_request_t *r,
    ngx_http_apimon_admin_ctx_t *ctx, char *mode)
{
    char       *text;
    ngx_str_t   args[7];

    text = cJSON_PrintUnformatted(ctx->body);
    if (text == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    args[2].len = ngx_strlen(text);
    args[2].data = ngx_pnalloc(r->pool, args[2].len);

    if (args[2].data == NULL) {
        cJSON_free(text);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_memcpy(args[2].data, text, args[2].len);
    cJSON_free(text);

    args[0] = ctx->kind;
    args[1] = ctx->owner;
    args[3].data = (u_char *) mode;
    args[3].len = ngx_strlen(mode);
    ngx_str_set(&args[4], "0");
    ngx_http_apimon_admin_client(r, &args[5], &args[6]);

    return ngx_http_apimon_admin_script(r, ctx,
                                        NGX_HTTP_APIMON_ADMIN_OWNER_PUT_SCRIPT,
                                        NULL,
                                        args, 7,
                                        ngx_http_apimon_admin_owner_reply);
}


ngx_int_t
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


ngx_int_t
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

    if (ctx->status == NGX_HTTP_CREATED
        && ngx_http_apimon_admin_location(r, &ctx->owner) != NGX_OK)
    {
        cJSON_Delete(json);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_apimon_admin_send(r, ctx->status, json);
}


ngx_int_t
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
    size_t   i;
    cJSON   *out;

    if (reply->type != REDIS_REPLY_ARRAY) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (reply->elements == 0) {
        return ngx_http_apimon_admin_error(r, NGX_HTTP_NOT_FOUND,
                                           "no such %V: %V",
                                           &ctx->kind, &ctx->owner);
    }

    out = cJSON_CreateObject();
    if (out == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    for (i = 0; i + 1 < reply->elements; i += 2) {
        cJSON_AddStringToObject(out, reply->element[i]->str,
                                reply->element[i + 1]->str);
    }

    return ngx_http_apimon_admin_send(r, NGX_HTTP_OK, out);
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


ngx_int_t
ngx_http_apimon_admin_subs_list(ngx_http_request_t *r,
    ngx_http_apimon_admin_ctx_t *ctx)
{
    ngx_int_t  rc;
    ngx_str_t  args[4];

    args[0] = ctx->kind;
    args[1] = ctx->owner;

    rc = ngx_http_apimon_admin_page(r, ctx, &args[2], &args[3]);
    if (rc != NGX_OK) {
        return rc;
    }

    if (args[2].len
        && !ngx_http_apimon_admin_valid_uuid(args[2].data, args[2].len))
    {
        return ngx_http_apimon_admin_error(r, NGX_HTTP_BAD_REQUEST,
                                           "startKey: not a subscription "
                                           "name");
    }

    return ngx_http_apimon_admin_script(r, ctx,
                                        NGX_HTTP_APIMON_ADMIN_SUB_LIST_SCRIPT,
                                        NULL, args, 4,
                                        ngx_http_apimon_admin_subs_reply);
}


static ngx_int_t
ngx_http_apimon_admin_subs_reply(ngx_http_request_t *r,
    ngx_http_apimon_admin_ctx_t *ctx, redisReply *reply)
{
    return ngx_http_apimon_admin_page_reply(r, reply,
                                            ctx->kind.data[0] == 'd'
                                            ? "developerSubscriptions"
                                            : "appGroupSubscriptions",
                                            ngx_http_apimon_admin_sub_json);
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

ngx_int_t
ngx_http_apimon_admin_sub_purchase(ngx_http_request_t *r,
    ngx_http_apimon_admin_ctx_t *ctx)
{
    ngx_int_t   rc;
    ngx_str_t   key, args[12];

    rc = ngx_http_apimon_admin_body_string(r, ctx, "apiproduct", 1, &args[3]);
    if (rc != NGX_OK) {
        return rc;
    }

    if (!ngx_http_apimon_admin_valid_name(args[3].data, args[3].len)) {
        return ngx_http_apimon_admin_error(r, NGX_HTTP_BAD_REQUEST,
                               "apiproduct: must match ^[A-Za-z0-9._-]{1,64}$");
    }

    rc = ngx_http_apimon_admin_body_string(r, ctx, "plan", 0, &args[4]);

    if (rc == NGX_DECLINED) {
        ngx_str_set(&args[4], "");

    } else if (rc != NGX_OK) {
        return rc;

    } else if (!ngx_http_apimon_admin_valid_name(args[4].data, args[4].len)) {
        return ngx_http_apimon_admin_error(r, NGX_HTTP_BAD_REQUEST,
                                     "plan: must match ^[A-Za-z0-9._-]{1,64}$");
    }

    rc = ngx_http_apimon_admin_body_time(r, ctx, "startTime", &args[8]);

    if (rc == NGX_DECLINED) {
        ngx_str_set(&args[8], "0");

    } else if (rc != NGX_OK) {
        return rc;
    }

    rc = ngx_http_apimon_admin_body_time(r, ctx, "endTime", &args[9]);

    if (rc == NGX_DECLINED) {
        ngx_str_set(&args[9], "0");

    } else if (rc != NGX_OK) {
        return rc;
    }

    if (ngx_http_apimon_uuid(ctx->sub_id, r->connection->log) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    args[0].data = ctx->sub_id;
    args[0].len = NGX_HTTP_APIMON_SUB_ID_LEN;
    ctx->name = args[0];

    if (ngx_http_apimon_admin_new_key(r, ctx, 0, &args[5]) != NGX_OK
        || ngx_http_apimon_admin_new_key(r, ctx, 1, &args[6]) != NGX_OK
        || ngx_http_apimon_admin_sub_key_name(r, &args[0], &key) != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    args[1] = ctx->kind;
    args[2] = ctx->owner;
    ngx_str_set(&args[7], "0");
    ngx_http_apimon_admin_client(r, &args[10], &args[11]);

    ctx->status = NGX_HTTP_CREATED;

    return ngx_http_apimon_admin_script(r, ctx,
                                        NGX_HTTP_APIMON_ADMIN_SUB_CREATE_SCRIPT,
                                        &key, args, 12,
                                        ngx_http_apimon_admin_sub_reply);
}


ngx_int_t
ngx_http_apimon_admin_sub_get(ngx_http_request_t *r,
    ngx_http_apimon_admin_ctx_t *ctx)
{
    ngx_str_t  key, args[3];

    if (ngx_http_apimon_admin_sub_key_name(r, &ctx->name, &key) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_str_set(&args[0], "0");
    args[1] = ctx->kind;
    args[2] = ctx->owner;
    ctx->status = NGX_HTTP_OK;

    return ngx_http_apimon_admin_script(r, ctx,
                                        NGX_HTTP_APIMON_ADMIN_SUB_VIEW_SCRIPT,
                                        &key, args, 3,
                                        ngx_http_apimon_admin_sub_reply);
}


ngx_int_t
ngx_http_apimon_admin_sub_action(ngx_http_request_t *r,
    ngx_http_apimon_admin_ctx_t *ctx)
{
    ngx_str_t  key, args[6];

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
    ngx_str_set(&args[1], "0");
    args[2] = ctx->kind;
    args[3] = ctx->owner;
    ngx_http_apimon_admin_client(r, &args[4], &args[5]);
    ctx->status = NGX_HTTP_OK;

    return ngx_http_apimon_admin_script(r, ctx,
                                        NGX_HTTP_APIMON_ADMIN_SUB_STATE_SCRIPT,
                                        &key, args, 6,
                                        ngx_http_apimon_admin_sub_reply);
}


ngx_int_t
ngx_http_apimon_admin_sub_key(ngx_http_request_t *r,
    ngx_http_apimon_admin_ctx_t *ctx)
{
    ngx_uint_t  slot;
    ngx_str_t   key, args[7];

    ngx_memcpy(ctx->sub_id, ctx->name.data, NGX_HTTP_APIMON_SUB_ID_LEN);

    slot = (ctx->action.data[0] == 'p') ? 0 : 1;

    if (ngx_http_apimon_admin_new_key(r, ctx, slot, &args[1]) != NGX_OK
        || ngx_http_apimon_admin_sub_key_name(r, &ctx->name, &key) != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    args[0] = ctx->action;
    ngx_str_set(&args[2], "0");
    args[3] = ctx->kind;
    args[4] = ctx->owner;
    ngx_http_apimon_admin_client(r, &args[5], &args[6]);
    ctx->status = NGX_HTTP_OK;

    return ngx_http_apimon_admin_script(r, ctx,
                                        NGX_HTTP_APIMON_ADMIN_SUB_KEY_SCRIPT,
                                        &key, args, 7,
                                        ngx_http_apimon_admin_sub_reply);
}


/* the subscription, with the keys made by this request (shown only here) */

static ngx_int_t
ngx_http_apimon_admin_sub_reply(ngx_http_request_t *r,
    ngx_http_apimon_admin_ctx_t *ctx, redisReply *reply)
{
    char    key[NGX_HTTP_APIMON_KEY_MAX_LEN + 1];
    cJSON  *raw, *out;

    raw = ngx_http_apimon_admin_parse(r, reply);
    if (raw == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
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


ngx_int_t
ngx_http_apimon_admin_sub_usage(ngx_http_request_t *r,
    ngx_http_apimon_admin_ctx_t *ctx)
{
    ngx_int_t  rc, from, to;
    ngx_str_t  key, args[4];

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

    args[0] = ctx->kind;
    args[1] = ctx->owner;
    args[2] = ctx->from;
    args[3] = ctx->to;

    return ngx_http_apimon_admin_script(r, ctx,
                                        NGX_HTTP_APIMON_ADMIN_SUB_USAGE_SCRIPT,
                                        &key, args, 4,
                                        ngx_http_apimon_admin_usage_reply);
}


/* "YYYYMMDD" -> "YYYY-MM-DD" */

static void
ngx_http_apimon_admin_iso_day(u_char *day, char *out)
{
    ngx_sprintf((u_char *) out, "%*s-%*s-%*s%Z", (size_t) 4, day,
                (size_t) 2, day + 4, (size_t) 2, day + 6);
}


/* one day of one API: {"date", "api", "accepted", "refused", "refusedBy"} */

static cJSON *
ngx_http_apimon_admin_usage_row(u_char *day, u_char *api, size_t len)
{
    char    buf[65];
    cJSON  *row;

    row = cJSON_CreateObject();
    if (row == NULL) {
        return NULL;
    }

    ngx_http_apimon_admin_iso_day(day, buf);
    cJSON_AddStringToObject(row, "date", buf);

    ngx_sprintf((u_char *) buf, "%*s%Z", ngx_min(len, 64), api);
    cJSON_AddStringToObject(row, "api", buf);

    cJSON_AddNumberToObject(row, "accepted", 0);
    cJSON_AddNumberToObject(row, "refused", 0);
    cJSON_AddObjectToObject(row, "refusedBy");

    return row;
}


static ngx_int_t
ngx_http_apimon_admin_usage_reply(ngx_http_request_t *r,
    ngx_http_apimon_admin_ctx_t *ctx, redisReply *reply)
{
    char         buf[64];
    u_char      *f, *api, *what, *last;
    size_t       i;
    cJSON       *out, *list, *row, *item;
    ngx_str_t    prev;
    double       n, accepted, refused;
    redisReply  *field, *value;

    if (reply->type != REDIS_REPLY_ARRAY) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    out = cJSON_CreateObject();
    if (out == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_sprintf((u_char *) buf, "%V%Z", &ctx->name);
    cJSON_AddStringToObject(out, "name", buf);
    ngx_http_apimon_admin_iso_day(ctx->from.data, buf);
    cJSON_AddStringToObject(out, "from", buf);
    ngx_http_apimon_admin_iso_day(ctx->to.data, buf);
    cJSON_AddStringToObject(out, "to", buf);

    list = cJSON_AddArrayToObject(out, "usage");
    if (list == NULL) {
        cJSON_Delete(out);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    row = NULL;
    ngx_str_null(&prev);
    accepted = 0;
    refused = 0;

    /* fields "<YYYYMMDD>|<api>|<ok|reason>", sorted: one row per day+api */

    for (i = 0; i + 1 < reply->elements; i += 2) {
        field = reply->element[i];
        value = reply->element[i + 1];

        f = (u_char *) field->str;
        last = f + field->len;

        if (field->len < 12 || f[8] != '|') {
            continue;
        }

        api = f + 9;
        what = ngx_strlchr(api, last, '|');
        if (what == NULL) {
            continue;
        }

        n = (value->type == REDIS_REPLY_STRING) ? strtod(value->str, NULL)
                                                : (double) value->integer;

        /* a new "<day>|<api>|" starts a new row */

        if (row == NULL
            || (size_t) (what - f) != prev.len
            || ngx_strncmp(f, prev.data, prev.len) != 0)
        {
            row = ngx_http_apimon_admin_usage_row(f, api, what - api);
            if (row == NULL) {
                cJSON_Delete(out);
                return NGX_HTTP_INTERNAL_SERVER_ERROR;
            }

            cJSON_AddItemToArray(list, row);
            prev.data = f;
            prev.len = what - f;
        }

        what++;

        if (last - what == 2 && ngx_strncmp(what, "ok", 2) == 0) {
            item = cJSON_GetObjectItem(row, "accepted");
            cJSON_SetNumberValue(item, item->valuedouble + n);
            accepted += n;
            continue;
        }

        item = cJSON_GetObjectItem(row, "refused");
        cJSON_SetNumberValue(item, item->valuedouble + n);
        refused += n;

        ngx_sprintf((u_char *) buf, "%*s%Z", ngx_min((size_t) (last - what),
                                                     sizeof(buf) - 1), what);
        cJSON_AddNumberToObject(cJSON_GetObjectItem(row, "refusedBy"), buf, n);
    }

    item = cJSON_AddObjectToObject(out, "total");
    if (item == NULL) {
        cJSON_Delete(out);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cJSON_AddNumberToObject(item, "accepted", accepted);
    cJSON_AddNumberToObject(item, "refused", refused);

    return ngx_http_apimon_admin_send(r, NGX_HTTP_OK, out);
}


/* audit: GET /audit?since=<ms or entry id>&count=N */

static ngx_int_t ngx_http_apimon_admin_audit_reply(ngx_http_request_t *r,
    ngx_http_apimon_admin_ctx_t *ctx, redisReply *reply);


ngx_int_t
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
    char        *name;
    size_t       i, j;
    cJSON       *out, *list, *entry, *v;
    redisReply  *e, *fields, *last;

    if (reply->type != REDIS_REPLY_ARRAY) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    out = cJSON_CreateObject();
    list = cJSON_AddArrayToObject(out, "entries");

    if (list == NULL) {
        cJSON_Delete(out);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    last = NULL;

    for (i = 0; i < reply->elements; i++) {
        e = reply->element[i];

        if (e->type != REDIS_REPLY_ARRAY || e->elements != 2
            || e->element[0]->type != REDIS_REPLY_STRING
            || e->element[1]->type != REDIS_REPLY_ARRAY)
        {
            continue;
        }

        last = e->element[0];
        fields = e->element[1];

        entry = cJSON_CreateObject();
        cJSON_AddItemToArray(list, entry);
        cJSON_AddStringToObject(entry, "id", last->str);

        for (j = 0; j + 1 < fields->elements; j += 2) {
            name = fields->element[j]->str;

            if (ngx_strcmp(name, "before") == 0
                || ngx_strcmp(name, "after") == 0)
            {
                v = cJSON_ParseWithLength(fields->element[j + 1]->str,
                                          fields->element[j + 1]->len);
                if (v == NULL) {
                    v = cJSON_CreateNull();
                }

                cJSON_AddItemToObject(entry, name, v);
                continue;
            }

            cJSON_AddStringToObject(entry, name, fields->element[j + 1]->str);
        }
    }

    if (last && reply->elements == ctx->count) {
        cJSON_AddStringToObject(out, "nextSince", last->str);
    }

    return ngx_http_apimon_admin_send(r, NGX_HTTP_OK, out);
}


