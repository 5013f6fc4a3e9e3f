
/*
 * apimon: safe retries of the management API (Idempotency-Key on a purchase
 * and on :regenerate).  The key names apimon:idem:<hex> (hex: SHA-256 of
 * the organization and the key); the script that makes the change keeps
 * there, in the same atomic call, the request's fingerprint (SHA-256 of
 * method, path and body) and its answer for 24 hours, and replays it for
 * the same key (lib.lua idem_replay; another fingerprint: 422).  The answer
 * holds the new keys, which Redis must never see in plaintext: they are
 * sealed here with AES-256-GCM under a key derived from the first
 * apimon_key_secret_file secret, the idempotency digest as associated data,
 * and opened here when replayed.
 */


#include "ngx_http_apimon_admin.h"

#include <openssl/evp.h>


#define NGX_HTTP_APIMON_IDEM_MAX   255     /* bytes of a key, as Stripe's */
#define NGX_HTTP_APIMON_IDEM_IV    12
#define NGX_HTTP_APIMON_IDEM_TAG   16
#define NGX_HTTP_APIMON_IDEM_TEXT  (2 * NGX_HTTP_APIMON_KEY_MAX_LEN + 1)


static ngx_int_t ngx_http_apimon_admin_idem_crypt(ngx_http_request_t *r,
    ngx_http_apimon_admin_ctx_t *ctx, ngx_uint_t seal, u_char *in,
    size_t len, u_char *out);


/* the request's Idempotency-Key: NGX_OK and value, or NGX_DECLINED */

ngx_int_t
ngx_http_apimon_admin_idem_header(ngx_http_request_t *r, ngx_str_t *value)
{
    ngx_str_t                  var = ngx_string("http_idempotency_key");
    ngx_http_variable_value_t  vv;

    /* the lookup of $http_idempotency_key, without a variable index */

    ngx_memzero(&vv, sizeof(vv));

    if (ngx_http_variable_unknown_header(&vv, &var,
                                         &r->headers_in.headers.part,
                                         sizeof("http_") - 1)
           != NGX_OK
        || vv.not_found)
    {
        return NGX_DECLINED;
    }

    value->data = vv.data;
    value->len = vv.len;

    return NGX_OK;
}


static void
ngx_http_apimon_admin_idem_hex(u_char *out, ngx_str_t *a, ngx_str_t *b,
    ngx_str_t *c)
{
    u_char      md[SHA256_DIGEST_LENGTH];
    SHA256_CTX  sha;

    SHA256_Init(&sha);
    SHA256_Update(&sha, a->data, a->len);
    SHA256_Update(&sha, "\n", 1);
    SHA256_Update(&sha, b->data, b->len);

    if (c) {
        SHA256_Update(&sha, "\n", 1);
        SHA256_Update(&sha, c->data, c->len);
    }

    SHA256_Final(md, &sha);
    ngx_hex_dump(out, md, sizeof(md));
}


/*
 * The three script arguments of an Idempotency-Key: its digest, the
 * request's fingerprint and the new keys sealed (all "" without the
 * header).  Called once the keys are made.
 */

ngx_int_t
ngx_http_apimon_admin_idem_args(ngx_http_request_t *r,
    ngx_http_apimon_admin_ctx_t *ctx, ngx_str_t *args)
{
    u_char                            *p;
    size_t                             len;
    ngx_int_t                          rc;
    ngx_str_t                          key;
    ngx_uint_t                         i;
    u_char                             text[NGX_HTTP_APIMON_IDEM_TEXT];
    u_char                             sealed[NGX_HTTP_APIMON_IDEM_IV
                                              + NGX_HTTP_APIMON_IDEM_TEXT
                                              + NGX_HTTP_APIMON_IDEM_TAG];
    ngx_http_apimon_admin_loc_conf_t  *alcf;

    ngx_str_set(&args[0], "");
    ngx_str_set(&args[1], "");
    ngx_str_set(&args[2], "");

    if (ngx_http_apimon_admin_idem_header(r, &key) != NGX_OK) {
        return NGX_OK;
    }

    for (i = 0; i < key.len; i++) {
        if (key.data[i] < 0x20 || key.data[i] > 0x7e) {
            break;
        }
    }

    if (key.len == 0 || key.len > NGX_HTTP_APIMON_IDEM_MAX || i < key.len) {
        return ngx_http_apimon_admin_error(r, NGX_HTTP_BAD_REQUEST,
                                     "Idempotency-Key: must be 1 to %d "
                                     "printable ASCII characters",
                                     NGX_HTTP_APIMON_IDEM_MAX);
    }

    alcf = ngx_http_get_module_loc_conf(r, ngx_http_apimon_admin_module);

    p = ngx_pnalloc(r->pool, 2 * NGX_HTTP_APIMON_DIGEST_LEN);
    if (p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_http_apimon_admin_idem_hex(p, &alcf->org, &key, NULL);
    ctx->idem.data = p;
    ctx->idem.len = NGX_HTTP_APIMON_DIGEST_LEN;
    args[0] = ctx->idem;

    ngx_http_apimon_admin_idem_hex(p + NGX_HTTP_APIMON_DIGEST_LEN,
                                   &r->method_name, &r->uri, &ctx->raw_body);
    args[1].data = p + NGX_HTTP_APIMON_DIGEST_LEN;
    args[1].len = NGX_HTTP_APIMON_DIGEST_LEN;

    /* "<primary>\n<secondary>", either empty when not made here */

    len = 0;

    for (i = 0; i < 2; i++) {
        if (ctx->key_set & (1 << i)) {
            ngx_memcpy(text + len, ctx->keys[i], ctx->key_len[i]);
            len += ctx->key_len[i];
        }

        if (i == 0) {
            text[len++] = '\n';
        }
    }

    rc = ngx_http_apimon_admin_idem_crypt(r, ctx, 1, text, len, sealed);
    ngx_explicit_memzero(text, sizeof(text));

    if (rc != NGX_OK) {
        return rc;
    }

    len += NGX_HTTP_APIMON_IDEM_IV + NGX_HTTP_APIMON_IDEM_TAG;

    args[2].data = ngx_pnalloc(r->pool, 2 * len);
    if (args[2].data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    args[2].len = ngx_hex_dump(args[2].data, sealed, len) - args[2].data;

    return NGX_OK;
}


/*
 * AES-256-GCM: seal "in" into iv|ciphertext|tag, or open iv|ciphertext|tag
 * (len: of the whole) into "out"; NGX_DONE: an error answer was sent.
 */

static ngx_int_t
ngx_http_apimon_admin_idem_crypt(ngx_http_request_t *r,
    ngx_http_apimon_admin_ctx_t *ctx, ngx_uint_t seal, u_char *in,
    size_t len, u_char *out)
{
    int                           n, ok;
    u_char                       *iv, *tag;
    ngx_int_t                     rc;
    EVP_CIPHER_CTX               *c;
    u_char                        key[32];
    ngx_http_apimon_main_conf_t  *amcf;

    amcf = ngx_http_get_module_main_conf(r, ngx_http_apimon_module);

    rc = ngx_http_apimon_key_derive(amcf->key_secrets,
                                    "apimon idempotency seal 1", key);

    if (rc == NGX_DECLINED) {
        return ngx_http_apimon_admin_error(r, NGX_HTTP_BAD_REQUEST,
                                     "Idempotency-Key: needs "
                                     "apimon_key_secret_file (the keys "
                                     "kept for a replay are sealed under "
                                     "it)");
    }

    if (rc != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (seal) {
        iv = out;
        if (ngx_http_apimon_random(iv, NGX_HTTP_APIMON_IDEM_IV,
                                   r->connection->log)
            != NGX_OK)
        {
            ngx_explicit_memzero(key, sizeof(key));
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        tag = out + NGX_HTTP_APIMON_IDEM_IV + len;
        out += NGX_HTTP_APIMON_IDEM_IV;

    } else {
        iv = in;
        len -= NGX_HTTP_APIMON_IDEM_IV + NGX_HTTP_APIMON_IDEM_TAG;
        in += NGX_HTTP_APIMON_IDEM_IV;
        tag = in + len;
    }

    c = EVP_CIPHER_CTX_new();

    ok = c != NULL
         && EVP_CipherInit_ex(c, EVP_aes_256_gcm(), NULL, key, iv, seal)
         && EVP_CipherUpdate(c, NULL, &n, ctx->idem.data, ctx->idem.len)
         && EVP_CipherUpdate(c, out, &n, in, len)
         && (seal || EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG,
                                         NGX_HTTP_APIMON_IDEM_TAG, tag))
         && EVP_CipherFinal_ex(c, out + n, &n)
         && (!seal || EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG,
                                          NGX_HTTP_APIMON_IDEM_TAG, tag));

    EVP_CIPHER_CTX_free(c);
    ngx_explicit_memzero(key, sizeof(key));

    if (!ok) {
        if (seal) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        /* another secret, or a changed record */
        return ngx_http_apimon_admin_error(r, NGX_HTTP_CONFLICT,
                                     "Idempotency-Key: the answer kept for "
                                     "it cannot be opened (the key secret "
                                     "changed); retry with a new key");
    }

    return NGX_OK;
}


/*
 * A script's answer that is a replay (lib.lua idem_replay): the keys it
 * made, opened, and "Idempotent-Replayed: true".  NGX_DECLINED: not a
 * replay; NGX_DONE: an error answer was sent.
 */

ngx_int_t
ngx_http_apimon_admin_idem_replay(ngx_http_request_t *r,
    ngx_http_apimon_admin_ctx_t *ctx, cJSON *raw)
{
    u_char      *nl;
    size_t       len;
    cJSON       *sealed, *id;
    ngx_int_t    rc;
    ngx_str_t    yes = ngx_string("true");
    ngx_uint_t   i;
    u_char       bin[NGX_HTTP_APIMON_IDEM_IV + NGX_HTTP_APIMON_IDEM_TEXT
                     + NGX_HTTP_APIMON_IDEM_TAG];
    u_char       text[NGX_HTTP_APIMON_IDEM_TEXT];

    if (!cJSON_HasObjectItem(raw, "idem_replayed")) {
        return NGX_DECLINED;
    }

    sealed = cJSON_GetObjectItemCaseSensitive(raw, "idem_sealed");
    id = cJSON_GetObjectItemCaseSensitive(raw, "id");
    len = cJSON_IsString(sealed) ? ngx_strlen(sealed->valuestring) : 0;

    if (len % 2 || len / 2 > sizeof(bin)
        || len / 2 < NGX_HTTP_APIMON_IDEM_IV + NGX_HTTP_APIMON_IDEM_TAG + 1
        || !cJSON_IsString(id)
        || ngx_strlen(id->valuestring) != NGX_HTTP_APIMON_SUB_ID_LEN)
    {
        return NGX_ERROR;
    }

    for (i = 0; i < len / 2; i++) {
        rc = ngx_hextoi((u_char *) sealed->valuestring + 2 * i, 2);
        if (rc == NGX_ERROR) {
            return NGX_ERROR;
        }

        bin[i] = (u_char) rc;
    }

    len /= 2;

    rc = ngx_http_apimon_admin_idem_crypt(r, ctx, 0, bin, len, text);
    if (rc != NGX_OK) {
        return rc;
    }

    len -= NGX_HTTP_APIMON_IDEM_IV + NGX_HTTP_APIMON_IDEM_TAG;
    nl = ngx_strlchr(text, text + len, '\n');

    if (nl == NULL || nl - text > NGX_HTTP_APIMON_KEY_MAX_LEN
        || text + len - nl - 1 > NGX_HTTP_APIMON_KEY_MAX_LEN)
    {
        ngx_explicit_memzero(text, sizeof(text));
        return NGX_ERROR;
    }

    ctx->key_set = 0;
    ctx->key_len[0] = nl - text;
    ctx->key_len[1] = text + len - nl - 1;
    ngx_memcpy(ctx->keys[0], text, ctx->key_len[0]);
    ngx_memcpy(ctx->keys[1], nl + 1, ctx->key_len[1]);
    ngx_explicit_memzero(text, sizeof(text));

    for (i = 0; i < 2; i++) {
        if (ctx->key_len[i]) {
            ctx->key_set |= 1 << i;
        }
    }

    /* the first answer's subscription, for its Location */
    ngx_memcpy(ctx->sub_id, id->valuestring, NGX_HTTP_APIMON_SUB_ID_LEN);
    ctx->name.data = ctx->sub_id;
    ctx->name.len = NGX_HTTP_APIMON_SUB_ID_LEN;

    cJSON_DeleteItemFromObjectCaseSensitive(raw, "idem_replayed");
    cJSON_DeleteItemFromObjectCaseSensitive(raw, "idem_sealed");

    if (ngx_http_apimon_admin_header(r, "Idempotent-Replayed", &yes)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}
