/*
 * API keys: shape, tag or checksum, digest, generation (schema/README.md,
 * "API keys"), the per-worker cache of keys Redis called unknown, and the
 * one reader of secret files (key secrets, the Redis password, admin tokens).
 *
 *   version 2:  ak2_ <32 hex: subscription id> <32 base32: 160 random bits>
 *               <16 base32: tag>
 *   version 1:  ak_ <32 hex: subscription id> <32 base32: 160 random bits>
 *               <7 base32: crc>
 *
 * The tag is HMAC-SHA-256, under a secret only nginx knows, of the first 68
 * characters, cut to 80 bits: a forged key fails it and never costs Redis a
 * call.  The checksum of version 1 is the CRC-32 (IEEE) of the first 67
 * characters, as 7 base32 digits, most significant first: it catches typing
 * errors, not forgeries.
 */


#include "ngx_http_apimon.h"

#include <sys/random.h>
#include <openssl/evp.h>
#include <openssl/crypto.h>


#define NGX_HTTP_APIMON_KEY_V1_PREFIX   "ak_"
#define NGX_HTTP_APIMON_KEY_V2_PREFIX   "ak2_"
#define NGX_HTTP_APIMON_SECRET_BYTES    20
#define NGX_HTTP_APIMON_SECRET_LEN      32
#define NGX_HTTP_APIMON_CRC_LEN         7
#define NGX_HTTP_APIMON_TAG_BYTES       10
#define NGX_HTTP_APIMON_TAG_LEN         16
#define NGX_HTTP_APIMON_HMAC_BLOCK      64

#define NGX_HTTP_APIMON_KEY_SECRET_MIN       32    /* bytes of one secret */
#define NGX_HTTP_APIMON_KEY_SECRETS_MAX      4     /* accepted at once */
#define NGX_HTTP_APIMON_KEY_SECRET_FILE_MAX  4096  /* bytes of the file */


/* the two shapes: what precedes the check digits, and how many they are */
typedef struct {
    ngx_str_t                  version;       /* $apimon_key_version */
    ngx_str_t                  prefix;
    size_t                     signed_len;
    size_t                     check_len;
} ngx_http_apimon_key_shape_t;


struct ngx_http_apimon_unknown_s {
    ngx_uint_t                 max;
    ngx_msec_t                 ttl;
    struct {
        u_char                 digest[NGX_HTTP_APIMON_DIGEST_LEN];
        ngx_msec_t             expires;
    }                          entry[1];      /* max of them */
};


static ngx_http_apimon_key_shape_t *ngx_http_apimon_key_kind(ngx_str_t *key);
static ngx_http_apimon_key_shape_t *ngx_http_apimon_key_shape(ngx_str_t *key);
static ngx_int_t ngx_http_apimon_key_tag_valid(ngx_str_t *key,
    ngx_array_t *secrets);
static ngx_int_t ngx_http_apimon_key_secret_init(
    ngx_http_apimon_key_secret_t *s, u_char *data, size_t len);
static char *ngx_http_apimon_key_secret_line(ngx_conf_t *cf, void *data,
    u_char *p, u_char *last, ngx_str_t *file, ngx_uint_t line);
static void ngx_http_apimon_key_secrets_wipe(void *data);
static ngx_int_t ngx_http_apimon_key_tag(ngx_http_apimon_key_secret_t *s,
    u_char *key, u_char *out);
static ngx_int_t ngx_http_apimon_sha256(u_char *a, size_t alen, u_char *b,
    size_t blen, u_char *md);
static void ngx_http_apimon_base32(u_char *dst, u_char *src, size_t len);
static void ngx_http_apimon_key_crc(u_char *key, u_char *out);
static ngx_uint_t ngx_http_apimon_unknown_slot(ngx_http_apimon_unknown_t *c,
    u_char *digest);


static ngx_http_apimon_key_shape_t  ngx_http_apimon_key_v1 = {
    ngx_string("1"),
    ngx_string(NGX_HTTP_APIMON_KEY_V1_PREFIX),
    sizeof(NGX_HTTP_APIMON_KEY_V1_PREFIX) - 1 + NGX_HTTP_APIMON_SUB_HEX_LEN
        + NGX_HTTP_APIMON_SECRET_LEN,
    NGX_HTTP_APIMON_CRC_LEN
};

static ngx_http_apimon_key_shape_t  ngx_http_apimon_key_v2 = {
    ngx_string("2"),
    ngx_string(NGX_HTTP_APIMON_KEY_V2_PREFIX),
    sizeof(NGX_HTTP_APIMON_KEY_V2_PREFIX) - 1 + NGX_HTTP_APIMON_SUB_HEX_LEN
        + NGX_HTTP_APIMON_SECRET_LEN,
    NGX_HTTP_APIMON_TAG_LEN
};


static u_char  ngx_http_apimon_b32[] = "abcdefghijklmnopqrstuvwxyz234567";


static ngx_inline ngx_uint_t
ngx_http_apimon_is_hex(u_char ch)
{
    return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f');
}


static ngx_inline ngx_uint_t
ngx_http_apimon_is_b32(u_char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= '2' && ch <= '7');
}


/* the shape a string claims by its prefix and length, or NULL */

static ngx_http_apimon_key_shape_t *
ngx_http_apimon_key_kind(ngx_str_t *key)
{
    ngx_http_apimon_key_shape_t  *shape;

    shape = (key->len == NGX_HTTP_APIMON_KEY_V2_LEN) ? &ngx_http_apimon_key_v2
            : (key->len == NGX_HTTP_APIMON_KEY_V1_LEN) ? &ngx_http_apimon_key_v1
            : NULL;

    if (shape == NULL
        || ngx_strncmp(key->data, shape->prefix.data, shape->prefix.len) != 0)
    {
        return NULL;
    }

    return shape;
}


/* the shape a string has: its kind, and the digits of that kind, or NULL */

static ngx_http_apimon_key_shape_t *
ngx_http_apimon_key_shape(ngx_str_t *key)
{
    u_char                       *p;
    ngx_uint_t                    i;
    ngx_http_apimon_key_shape_t  *shape;

    shape = ngx_http_apimon_key_kind(key);

    if (shape == NULL) {
        return NULL;
    }

    p = key->data + shape->prefix.len;

    for (i = 0; i < NGX_HTTP_APIMON_SUB_HEX_LEN; i++) {
        if (!ngx_http_apimon_is_hex(p[i])) {
            return NULL;
        }
    }

    p += NGX_HTTP_APIMON_SUB_HEX_LEN;

    for (i = 0; i < NGX_HTTP_APIMON_SECRET_LEN + shape->check_len; i++) {
        if (!ngx_http_apimon_is_b32(p[i])) {
            return NULL;
        }
    }

    return shape;
}


/*
 * a key's prefix and length: what the error log redacts (a mistyped key is
 * still most of a secret; any other value is no key, and is not redacted)
 */

ngx_uint_t
ngx_http_apimon_key_like(ngx_str_t *key)
{
    return ngx_http_apimon_key_kind(key) != NULL;
}


ngx_int_t
ngx_http_apimon_key_valid(ngx_str_t *key, ngx_array_t *secrets,
    ngx_flag_t legacy, ngx_str_t *version, ngx_log_t *log)
{
    u_char                        crc[NGX_HTTP_APIMON_CRC_LEN];
    ngx_http_apimon_key_shape_t  *shape;

    shape = ngx_http_apimon_key_shape(key);

    if (shape == NULL) {
        ngx_log_debug0(NGX_LOG_DEBUG_HTTP, log, 0, "apimon: malformed key");
        return NGX_DECLINED;
    }

    *version = shape->version;

    if (shape == &ngx_http_apimon_key_v2) {

        /* without a secret the tag cannot be told: Redis decides */

        if (secrets && ngx_http_apimon_key_tag_valid(key, secrets) != NGX_OK) {
            ngx_log_debug0(NGX_LOG_DEBUG_HTTP, log, 0,
                           "apimon: key tag does not verify");
            return NGX_DECLINED;
        }

        return NGX_OK;
    }

    if (!legacy) {
        ngx_log_debug0(NGX_LOG_DEBUG_HTTP, log, 0,
                       "apimon: version 1 key refused (apimon_key_legacy off)");
        return NGX_DECLINED;
    }

    ngx_http_apimon_key_crc(key->data, crc);

    if (ngx_memcmp(crc, key->data + shape->signed_len, shape->check_len) != 0) {
        ngx_log_debug0(NGX_LOG_DEBUG_HTTP, log, 0,
                       "apimon: key checksum does not match");
        return NGX_DECLINED;
    }

    return NGX_OK;
}


/* the tag under any of the secrets (the first signs, the others are old) */

static ngx_int_t
ngx_http_apimon_key_tag_valid(ngx_str_t *key, ngx_array_t *secrets)
{
    ngx_uint_t                     i;
    ngx_http_apimon_key_secret_t  *s;
    u_char                         tag[NGX_HTTP_APIMON_TAG_LEN];

    s = secrets->elts;

    for (i = 0; i < secrets->nelts; i++) {

        if (ngx_http_apimon_key_tag(&s[i], key->data, tag) != NGX_OK) {
            return NGX_ERROR;
        }

        /* constant time: a timing must not tell how much of a tag is right */

        if (CRYPTO_memcmp(tag, key->data + ngx_http_apimon_key_v2.signed_len,
                          NGX_HTTP_APIMON_TAG_LEN)
            == 0)
        {
            return NGX_OK;
        }
    }

    return NGX_DECLINED;
}


/* HMAC-SHA-256 (RFC 2104) of the signed part of a version 2 key, cut */

static ngx_int_t
ngx_http_apimon_key_tag(ngx_http_apimon_key_secret_t *s, u_char *key,
    u_char *out)
{
    u_char  md[32];

    if (ngx_http_apimon_sha256(s->ipad, NGX_HTTP_APIMON_HMAC_BLOCK, key,
                               ngx_http_apimon_key_v2.signed_len, md)
           != NGX_OK
        || ngx_http_apimon_sha256(s->opad, NGX_HTTP_APIMON_HMAC_BLOCK, md,
                                  sizeof(md), md)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    ngx_http_apimon_base32(out, md, NGX_HTTP_APIMON_TAG_BYTES);
    ngx_explicit_memzero(md, sizeof(md));

    return NGX_OK;
}


static ngx_int_t
ngx_http_apimon_key_secret_init(ngx_http_apimon_key_secret_t *s,
    u_char *data, size_t len)
{
    ngx_uint_t    i;
    unsigned int  n;
    u_char        k[NGX_HTTP_APIMON_HMAC_BLOCK];

    ngx_memzero(k, sizeof(k));

    if (len > NGX_HTTP_APIMON_HMAC_BLOCK) {
        /*
         * a key longer than a block is hashed first; not with the process's
         * digest state: this runs in the master, which never frees it
         */
        if (EVP_Digest(data, len, k, &n, EVP_sha256(), NULL) != 1) {
            return NGX_ERROR;
        }

    } else {
        ngx_memcpy(k, data, len);
    }

    for (i = 0; i < NGX_HTTP_APIMON_HMAC_BLOCK; i++) {
        s->ipad[i] = k[i] ^ 0x36;
        s->opad[i] = k[i] ^ 0x5c;
    }

    ngx_explicit_memzero(k, sizeof(k));

    return NGX_OK;
}


/*
 * apimon_key_secret_file: one secret per line, the first signs new keys, the
 * others (older secrets) are still accepted.  NULL: an error, logged.
 */

ngx_array_t *
ngx_http_apimon_key_secrets_read(ngx_conf_t *cf, ngx_str_t *file)
{
    ngx_array_t         *secrets;
    ngx_pool_cleanup_t  *cln;

    /* never grown: the secrets stay where the cleanup wipes them */
    secrets = ngx_array_create(cf->pool, NGX_HTTP_APIMON_KEY_SECRETS_MAX,
                               sizeof(ngx_http_apimon_key_secret_t));
    cln = ngx_pool_cleanup_add(cf->pool, 0);

    if (secrets == NULL || cln == NULL) {
        return NULL;
    }

    cln->handler = ngx_http_apimon_key_secrets_wipe;
    cln->data = secrets;

    if (ngx_http_apimon_secret_lines(cf, file,
                                     NGX_HTTP_APIMON_KEY_SECRET_FILE_MAX,
                                     ngx_http_apimon_key_secret_line, secrets)
        != NGX_CONF_OK)
    {
        return NULL;
    }

    if (secrets->nelts == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"apimon_key_secret_file\": \"%V\" holds no "
                           "secret", file);
        return NULL;
    }

    return secrets;
}


static char *
ngx_http_apimon_key_secret_line(ngx_conf_t *cf, void *data, u_char *p,
    u_char *last, ngx_str_t *file, ngx_uint_t line)
{
    ngx_array_t  *secrets = data;

    ngx_http_apimon_key_secret_t  *s;

    if (last - p < NGX_HTTP_APIMON_KEY_SECRET_MIN) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"apimon_key_secret_file\": the secret on line "
                           "%ui of \"%V\" is too short (at least %d bytes; "
                           "e.g. openssl rand -hex 32)", line, file,
                           NGX_HTTP_APIMON_KEY_SECRET_MIN);
        return NGX_CONF_ERROR;
    }

    if (secrets->nelts == NGX_HTTP_APIMON_KEY_SECRETS_MAX) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"apimon_key_secret_file\": \"%V\" holds more "
                           "than %d secrets", file,
                           NGX_HTTP_APIMON_KEY_SECRETS_MAX);
        return NGX_CONF_ERROR;
    }

    s = ngx_array_push(secrets);
    if (s == NULL
        || ngx_http_apimon_key_secret_init(s, p, last - p) != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/* the configuration is freed (a reload): its secrets do not linger */

static void
ngx_http_apimon_key_secrets_wipe(void *data)
{
    ngx_array_t  *a = data;

    ngx_explicit_memzero(a->elts, a->nalloc * a->size);
}


void
ngx_http_apimon_key_sub_id(ngx_str_t *key, u_char *out)
{
    u_char  *hex;

    hex = key->data + ngx_http_apimon_key_shape(key)->prefix.len;

    /* 8-4-4-4-12 */
    out = ngx_cpymem(out, hex, 8);
    *out++ = '-';
    out = ngx_cpymem(out, hex + 8, 4);
    *out++ = '-';
    out = ngx_cpymem(out, hex + 12, 4);
    *out++ = '-';
    out = ngx_cpymem(out, hex + 16, 4);
    *out++ = '-';
    (void) ngx_cpymem(out, hex + 20, 12);
}


/*
 * The digest algorithm and context are made once per process and reused:
 * with OpenSSL 3, EVP_Digest(..., EVP_sha256(), ...) looks the algorithm up
 * (under a lock) and allocates a context on every call.
 */

static EVP_MD_CTX  *ngx_http_apimon_md_ctx;
static EVP_MD      *ngx_http_apimon_md_fetched;


void
ngx_http_apimon_key_digest(ngx_str_t *key, u_char *out)
{
    u_char  md[32];

    if (ngx_http_apimon_sha256(key->data, key->len, NULL, 0, md) != NGX_OK) {
        /* cannot happen with a working libcrypto; never matches a digest */
        ngx_memset(out, '-', NGX_HTTP_APIMON_DIGEST_LEN);
        return;
    }

    ngx_hex_dump(out, md, sizeof(md));
}


/* SHA-256 of a followed by b, 32 bytes; md may be b */

static ngx_int_t
ngx_http_apimon_sha256(u_char *a, size_t alen, u_char *b, size_t blen,
    u_char *md)
{
    unsigned int   len;
    const EVP_MD  *sha256;

#if (OPENSSL_VERSION_NUMBER >= 0x30000000L)
    if (ngx_http_apimon_md_fetched == NULL) {
        ngx_http_apimon_md_fetched = EVP_MD_fetch(NULL, "SHA256", NULL);
    }
#endif

    sha256 = ngx_http_apimon_md_fetched ? ngx_http_apimon_md_fetched
                                        : EVP_sha256();

    if (ngx_http_apimon_md_ctx == NULL) {
        ngx_http_apimon_md_ctx = EVP_MD_CTX_new();
    }

    len = 0;

    if (ngx_http_apimon_md_ctx == NULL
        || EVP_DigestInit_ex(ngx_http_apimon_md_ctx, sha256, NULL) != 1
        || EVP_DigestUpdate(ngx_http_apimon_md_ctx, a, alen) != 1
        || (blen && EVP_DigestUpdate(ngx_http_apimon_md_ctx, b, blen) != 1)
        || EVP_DigestFinal_ex(ngx_http_apimon_md_ctx, md, &len) != 1
        || len != 32)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* the worker exits: the module may be unloaded, free what it holds */

void
ngx_http_apimon_key_exit(void)
{
    if (ngx_http_apimon_md_ctx) {
        EVP_MD_CTX_free(ngx_http_apimon_md_ctx);
        ngx_http_apimon_md_ctx = NULL;
    }

#if (OPENSSL_VERSION_NUMBER >= 0x30000000L)
    if (ngx_http_apimon_md_fetched) {
        EVP_MD_free(ngx_http_apimon_md_fetched);
        ngx_http_apimon_md_fetched = NULL;
    }
#endif
}


ngx_int_t
ngx_http_apimon_key_generate(u_char *sub_id, ngx_array_t *secrets,
    u_char *out, size_t *len, ngx_log_t *log)
{
    u_char                       *p;
    ngx_uint_t                    i, n;
    ngx_http_apimon_key_shape_t  *shape;
    u_char                        secret[NGX_HTTP_APIMON_SECRET_BYTES];

    shape = secrets ? &ngx_http_apimon_key_v2 : &ngx_http_apimon_key_v1;

    p = ngx_cpymem(out, shape->prefix.data, shape->prefix.len);

    n = 0;

    for (i = 0; i < NGX_HTTP_APIMON_SUB_ID_LEN; i++) {

        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (sub_id[i] != '-') {
                return NGX_ERROR;
            }
            continue;
        }

        if (!ngx_http_apimon_is_hex(ngx_tolower(sub_id[i]))) {
            return NGX_ERROR;
        }

        p[n++] = ngx_tolower(sub_id[i]);
    }

    p += NGX_HTTP_APIMON_SUB_HEX_LEN;

    if (ngx_http_apimon_random(secret, sizeof(secret), log) != NGX_OK) {
        return NGX_ERROR;
    }

    ngx_http_apimon_base32(p, secret, sizeof(secret));
    ngx_explicit_memzero(secret, sizeof(secret));

    p = out + shape->signed_len;

    if (secrets == NULL) {
        ngx_http_apimon_key_crc(out, p);

    } else if (ngx_http_apimon_key_tag(secrets->elts, out, p) != NGX_OK) {
        ngx_log_error(NGX_LOG_ALERT, log, 0, "apimon: HMAC-SHA-256 failed");
        return NGX_ERROR;
    }

    *len = shape->signed_len + shape->check_len;

    return NGX_OK;
}


ngx_int_t
ngx_http_apimon_uuid(u_char *out, ngx_log_t *log)
{
    u_char  b[16], hex[32];

    if (ngx_http_apimon_random(b, sizeof(b), log) != NGX_OK) {
        return NGX_ERROR;
    }

    b[6] = (b[6] & 0x0f) | 0x40;    /* version 4 */
    b[8] = (b[8] & 0x3f) | 0x80;    /* RFC 4122 variant */

    ngx_hex_dump(hex, b, sizeof(b));

    out = ngx_cpymem(out, hex, 8);
    *out++ = '-';
    out = ngx_cpymem(out, hex + 8, 4);
    *out++ = '-';
    out = ngx_cpymem(out, hex + 12, 4);
    *out++ = '-';
    out = ngx_cpymem(out, hex + 16, 4);
    *out++ = '-';
    (void) ngx_cpymem(out, hex + 20, 12);

    return NGX_OK;
}


/*
 * A 32-byte key for another use of the first key secret (label names the
 * use): HMAC-SHA-256(secret, label), so it can be made again by every
 * worker and never reveals the secret.  NGX_DECLINED: no secrets.
 */

ngx_int_t
ngx_http_apimon_key_derive(ngx_array_t *secrets, char *label, u_char *out)
{
    ngx_http_apimon_key_secret_t  *s;

    if (secrets == NULL || secrets->nelts == 0) {
        return NGX_DECLINED;
    }

    s = secrets->elts;

    if (ngx_http_apimon_sha256(s->ipad, NGX_HTTP_APIMON_HMAC_BLOCK,
                               (u_char *) label, ngx_strlen(label), out)
           != NGX_OK
        || ngx_http_apimon_sha256(s->opad, NGX_HTTP_APIMON_HMAC_BLOCK, out,
                                  32, out)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


ngx_int_t
ngx_http_apimon_random(u_char *buf, size_t len, ngx_log_t *log)
{
    ssize_t  n;

    while (len) {
        n = getrandom(buf, len, 0);

        if (n == -1) {
            if (ngx_errno == NGX_EINTR) {
                continue;
            }

            ngx_log_error(NGX_LOG_ALERT, log, ngx_errno,
                          "apimon: getrandom() failed");
            return NGX_ERROR;
        }

        buf += n;
        len -= n;
    }

    return NGX_OK;
}


/* RFC 4648 base32, lowercase, no padding; len is a multiple of 5 */

static void
ngx_http_apimon_base32(u_char *dst, u_char *src, size_t len)
{
    uint64_t    v;
    ngx_int_t   i;
    size_t      n;

    for (n = 0; n + 5 <= len; n += 5) {
        v = ((uint64_t) src[n] << 32) | ((uint64_t) src[n + 1] << 24)
            | ((uint64_t) src[n + 2] << 16) | ((uint64_t) src[n + 3] << 8)
            | (uint64_t) src[n + 4];

        for (i = 7; i >= 0; i--) {
            *dst++ = ngx_http_apimon_b32[(v >> (i * 5)) & 0x1f];
        }
    }
}


static void
ngx_http_apimon_key_crc(u_char *key, u_char *out)
{
    uint32_t   crc;
    ngx_int_t  i;

    crc = ngx_crc32_long(key, ngx_http_apimon_key_v1.signed_len);

    for (i = NGX_HTTP_APIMON_CRC_LEN - 1; i >= 0; i--) {
        *out++ = ngx_http_apimon_b32[((uint64_t) crc >> (i * 5)) & 0x1f];
    }
}


/*
 * The unknown-key cache: direct mapped by the digest, an entry is replaced
 * by any other digest of its slot.  An entry is never renewed by a hit, so
 * a key that became valid (a Redis restored from a backup, keys imported)
 * is refused for at most the TTL after Redis last called it unknown.
 */

ngx_http_apimon_unknown_t *
ngx_http_apimon_unknown_create(ngx_pool_t *pool, ngx_uint_t max,
    ngx_msec_t ttl)
{
    ngx_http_apimon_unknown_t  *c;

    c = ngx_pcalloc(pool, sizeof(ngx_http_apimon_unknown_t)
                          + (max - 1) * sizeof(c->entry[0]));
    if (c == NULL) {
        return NULL;
    }

    c->max = max;
    c->ttl = ttl;

    return c;
}


static ngx_uint_t
ngx_http_apimon_unknown_slot(ngx_http_apimon_unknown_t *c, u_char *digest)
{
    /* a digest is hex of SHA-256: its first 8 digits are evenly spread */
    return (ngx_uint_t) ngx_hextoi(digest, 8) % c->max;
}


ngx_int_t
ngx_http_apimon_unknown_find(ngx_http_apimon_unknown_t *c, u_char *digest)
{
    ngx_uint_t  i;

    i = ngx_http_apimon_unknown_slot(c, digest);

    if (c->entry[i].expires == 0
        || (ngx_msec_int_t) (c->entry[i].expires - ngx_current_msec) <= 0
        || ngx_memcmp(c->entry[i].digest, digest, NGX_HTTP_APIMON_DIGEST_LEN)
           != 0)
    {
        return NGX_DECLINED;
    }

    return NGX_OK;
}


void
ngx_http_apimon_unknown_add(ngx_http_apimon_unknown_t *c, u_char *digest)
{
    ngx_uint_t  i;

    i = ngx_http_apimon_unknown_slot(c, digest);

    ngx_memcpy(c->entry[i].digest, digest, NGX_HTTP_APIMON_DIGEST_LEN);

    /* 0 marks an empty slot */
    c->entry[i].expires = (ngx_current_msec + c->ttl) | 1;
}


/*
 * Secret files: apimon_redis password_file=, apimon_key_secret_file and
 * apimon_admin_token_file.  The messages name the directive (the first
 * argument of the line being parsed) and the file, never what it holds;
 * what was read is wiped before it is freed.
 */

ngx_int_t
ngx_http_apimon_secret_read(ngx_conf_t *cf, ngx_str_t *file, const char *what,
    size_t max, ngx_str_t *text)
{
    ssize_t     n;
    u_char     *buf;
    ngx_str_t  *directive;
    ngx_file_t  f;

    directive = cf->args->elts;

    if (ngx_conf_full_name(cf->cycle, file, 1) != NGX_OK) {
        return NGX_ERROR;
    }

    ngx_memzero(&f, sizeof(ngx_file_t));
    f.name = *file;
    f.log = cf->log;

    f.fd = ngx_open_file(file->data, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);
    if (f.fd == NGX_INVALID_FILE) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "\"%V\": could not open %s\"%V\"",
                           directive, what, file);
        return NGX_ERROR;
    }

    /* one byte more than allowed tells a file that is too long */
    buf = ngx_alloc(max + 1, cf->log);

    n = buf ? ngx_read_file(&f, buf, max + 1, 0) : NGX_ERROR;

    if (ngx_close_file(f.fd) == NGX_FILE_ERROR) {
        ngx_conf_log_error(NGX_LOG_ALERT, cf, ngx_errno,
                           ngx_close_file_n " \"%V\" failed", file);
    }

    if (buf == NULL) {
        return NGX_ERROR;
    }

    text->data = buf;
    text->len = max + 1;

    if (n == NGX_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\": could not read %s\"%V\"",
                           directive, what, file);
        ngx_http_apimon_secret_free(text);
        return NGX_ERROR;
    }

    if ((size_t) n > max) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\": %s\"%V\" is too long (over %uz bytes)",
                           directive, what, file, max);
        ngx_http_apimon_secret_free(text);
        return NGX_ERROR;
    }

    text->len = n;

    return NGX_OK;
}


char *
ngx_http_apimon_secret_lines(ngx_conf_t *cf, ngx_str_t *file, size_t max,
    ngx_http_apimon_secret_line_pt handler, void *data)
{
    char        *rv;
    u_char      *p, *eol, *end, *last;
    ngx_str_t    text;
    ngx_uint_t   line;

    if (ngx_http_apimon_secret_read(cf, file, "", max, &text) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    rv = NGX_CONF_OK;
    last = text.data + text.len;
    line = 1;

    for (p = text.data; p < last && rv == NGX_CONF_OK; p = eol + 1, line++) {
        eol = ngx_strlchr(p, last, '\n');
        if (eol == NULL) {
            eol = last;
        }

        for (end = eol; end > p; end--) {
            if (end[-1] != '\r' && end[-1] != ' ' && end[-1] != '\t') {
                break;
            }
        }

        if (end > p) {
            rv = handler(cf, data, p, end, file, line);
        }
    }

    ngx_http_apimon_secret_free(&text);

    return rv;
}


void
ngx_http_apimon_secret_free(ngx_str_t *text)
{
    ngx_explicit_memzero(text->data, text->len);
    ngx_free(text->data);
}
