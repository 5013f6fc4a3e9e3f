
/*
 * apimon: the public JSON shapes of the management API's resources.
 *
 * Where a resource's public shape is built: here, in C, for every resource
 * and every endpoint.  The scripts answer with records in Redis's own terms
 * (a subscription's hash without its key digests and check state, which
 * never leave Redis; an owner's hash; usage fields; the catalog document),
 * the terms the audit stream, the billing agent and the tests read too.
 * Not in Lua, because Redis's cjson writes an empty array as {} and numbers
 * with 14 significant digits, and because presentation is the C side's
 * (Apigee's names, times as strings of ms, endTime omitted when open).
 */


#include "ngx_http_apimon_admin.h"


/* subscriptions */

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


/*
 * "attributes", kept by the scripts as JSON text, as the array it holds
 * (none: []); "to" may be "from"
 */

static ngx_int_t
ngx_http_apimon_admin_attributes(cJSON *to, cJSON *from)
{
    cJSON  *item, *list;

    item = cJSON_GetObjectItemCaseSensitive(from, "attributes");
    list = cJSON_IsString(item) ? cJSON_Parse(item->valuestring) : NULL;

    if (!cJSON_IsArray(list)) {
        cJSON_Delete(list);
        list = cJSON_CreateArray();
    }

    cJSON_DeleteItemFromObjectCaseSensitive(to, "attributes");

    if (list == NULL || !cJSON_AddItemToObject(to, "attributes", list)) {
        cJSON_Delete(list);
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* a plan change waiting for the period's end (subscription_plan.lua) */

static ngx_int_t
ngx_http_apimon_admin_pending_plan(cJSON *out, cJSON *raw)
{
    cJSON  *next;

    if (!cJSON_IsString(cJSON_GetObjectItemCaseSensitive(raw, "nextPlan"))) {
        return NGX_OK;
    }

    next = cJSON_AddObjectToObject(out, "pendingPlan");
    if (next == NULL) {
        return NGX_ERROR;
    }

    ngx_http_apimon_admin_copy_string(next, "plan", raw, "nextPlan");
    ngx_http_apimon_admin_copy_string(next, "apiproduct", raw, "nextProduct");
    ngx_http_apimon_admin_copy_string(next, "effectiveAt", raw, "nextAt");

    return NGX_OK;
}


/* a subscription hash (as JSON) -> the public, Apigee-shaped resource */

cJSON *
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

    if (ngx_http_apimon_admin_attributes(out, raw) != NGX_OK
        || ngx_http_apimon_admin_pending_plan(out, raw) != NGX_OK)
    {
        cJSON_Delete(out);
        return NULL;
    }

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



/* the catalog */

/*
 * A catalog product with its plans, and the plan a purchase naming only the
 * product gets (defaultPlan: declared, or the only plan).
 */

/* a catalog object with the lifecycle and attributes members it omits */

static cJSON *
ngx_http_apimon_admin_catalog_item(cJSON *item, char *flag, cJSON *dflt)
{
    cJSON  *out;

    out = cJSON_Duplicate(item, 1);

    if (out && !cJSON_HasObjectItem(out, flag)) {
        cJSON_AddItemToObject(out, flag, dflt);
        dflt = NULL;
    }

    cJSON_Delete(dflt);

    if (out && !cJSON_HasObjectItem(out, "attributes")) {
        cJSON_AddArrayToObject(out, "attributes");
    }

    return out;
}


cJSON *
ngx_http_apimon_admin_product_json(cJSON *product, cJSON *plans)
{
    cJSON  *out, *list, *plan, *owner, *name, *only, *item;

    out = ngx_http_apimon_admin_catalog_item(product, "state",
                                             cJSON_CreateString("active"));
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
            item = ngx_http_apimon_admin_catalog_item(plan, "retired",
                                                      cJSON_CreateFalse());
            cJSON_AddItemToArray(list, item);
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


/* the catalog's products, each with its plans: {"apiProduct": [...]} */

cJSON *
ngx_http_apimon_admin_products_json(cJSON *catalog)
{
    cJSON  *products, *plans, *product, *out, *list;

    products = cJSON_GetObjectItemCaseSensitive(catalog, "products");
    plans = cJSON_GetObjectItemCaseSensitive(catalog, "plans");

    out = cJSON_CreateObject();
    list = cJSON_AddArrayToObject(out, "apiProduct");

    if (list == NULL) {
        cJSON_Delete(out);
        return NULL;
    }

    cJSON_ArrayForEach(product, products) {
        cJSON_AddItemToArray(list,
                          ngx_http_apimon_admin_product_json(product, plans));
    }

    return out;
}


/* one product of the catalog, or NULL */

cJSON *
ngx_http_apimon_admin_product_find(cJSON *catalog, ngx_str_t *want)
{
    cJSON  *product, *name;

    cJSON_ArrayForEach(product,
                      cJSON_GetObjectItemCaseSensitive(catalog, "products"))
    {
        name = cJSON_GetObjectItemCaseSensitive(product, "name");

        if (cJSON_IsString(name)
            && ngx_strlen(name->valuestring) == want->len
            && ngx_strncmp(name->valuestring, want->data, want->len) == 0)
        {
            return product;
        }
    }

    return NULL;
}


/* owners and pages */

/*
 * An owner: its record is its resource, the hash's fields being Apigee's
 * names (email or name, firstName, ..., createdAt, lastModifiedAt) and
 * customer.
 */

cJSON *
ngx_http_apimon_admin_owner_json(cJSON *raw)
{
    /* the version is the ETag header's */
    cJSON_DeleteItemFromObjectCaseSensitive(raw, "ver");

    /* a record from before owners had a status */
    if (!cJSON_HasObjectItem(raw, "status")) {
        cJSON_AddStringToObject(raw, "status", "active");
    }

    /* raw is the resource: on a failure it goes without its attributes */
    (void) ngx_http_apimon_admin_attributes(raw, raw);

    return raw;
}


/* an HGETALL reply as a record: every field a string */

cJSON *
ngx_http_apimon_admin_hash_json(redisReply *reply)
{
    size_t   i;
    cJSON   *out;

    out = cJSON_CreateObject();
    if (out == NULL) {
        return NULL;
    }

    for (i = 0; i + 1 < reply->elements; i += 2) {
        cJSON_AddStringToObject(out, reply->element[i]->str,
                                reply->element[i + 1]->str);
    }

    return out;
}


/*
 * A page from owner_list or subscription_list: the next start key, then
 * one JSON item each; "shape" (or NULL) turns an item into its resource.
 */

cJSON *
ngx_http_apimon_admin_page_json(ngx_http_request_t *r, redisReply *reply,
    char *name, cJSON *(*shape)(cJSON *raw))
{
    size_t   i;
    cJSON   *out, *list, *item, *raw;

    if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 1) {
        return NULL;
    }

    out = cJSON_CreateObject();
    list = cJSON_AddArrayToObject(out, name);

    if (list == NULL) {
        cJSON_Delete(out);
        return NULL;
    }

    for (i = 1; i < reply->elements; i++) {
        raw = ngx_http_apimon_admin_parse(r, reply->element[i]);
        item = (raw && shape) ? shape(raw) : raw;

        if (item != raw) {
            cJSON_Delete(raw);
        }

        if (item == NULL) {
            cJSON_Delete(out);
            return NULL;
        }

        cJSON_AddItemToArray(list, item);
    }

    if (reply->element[0]->type == REDIS_REPLY_STRING
        && reply->element[0]->len > 0)
    {
        cJSON_AddStringToObject(out, "nextStartKey", reply->element[0]->str);
    }

    return out;
}



/* usage and audit */

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


/*
 * The usage of ctx->from .. ctx->to from subscription_usage's fields
 * "<YYYYMMDD>|<api>|<ok|reason>": one row per day and API, and the total.
 */

cJSON *
ngx_http_apimon_admin_usage_json(ngx_http_apimon_admin_ctx_t *ctx,
    redisReply *reply)
{
    char         buf[64];
    u_char      *f, *api, *what, *last;
    size_t       i;
    cJSON       *out, *list, *row, *item;
    ngx_str_t    prev;
    double       n, accepted, refused;
    redisReply  *field, *value;

    if (reply->type != REDIS_REPLY_ARRAY) {
        return NULL;
    }

    out = cJSON_CreateObject();
    if (out == NULL) {
        return NULL;
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
        return NULL;
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
                return NULL;
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
        return NULL;
    }

    cJSON_AddNumberToObject(item, "accepted", accepted);
    cJSON_AddNumberToObject(item, "refused", refused);

    return out;
}


/*
 * A page of the audit stream (XRANGE): {"entries": [...], "nextSince"?},
 * each entry its id and fields, "before" and "after" as JSON.
 */

cJSON *
ngx_http_apimon_admin_audit_json(ngx_http_apimon_admin_ctx_t *ctx,
    redisReply *reply)
{
    char        *name;
    size_t       i, j;
    cJSON       *out, *list, *entry, *v;
    redisReply  *e, *fields, *last;

    if (reply->type != REDIS_REPLY_ARRAY) {
        return NULL;
    }

    out = cJSON_CreateObject();
    list = cJSON_AddArrayToObject(out, "entries");

    if (list == NULL) {
        cJSON_Delete(out);
        return NULL;
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

    return out;
}
