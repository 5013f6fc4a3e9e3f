/*
 * API keys: shape, checksum, digest, generation (schema/README.md, "API keys").
 *
 *   ak_ <32 hex: subscription id> <32 base32: 160 random bits> <7 base32: crc>
 *
 * The checksum is the CRC-32 (IEEE) of the first 67 characters, as 7 base32
 * digits, most significant first.
 */


#include "ngx_http_apimon.h"

#include <sys/random.h>
#include <openssl/evp.h>


#define NGX_HTTP_APIMON_KEY_PREFIX_LEN  3
#define NGX_HTTP_APIMON_SECRET_BYTES    20
#define NGX_HTTP_APIMON_SECRET_LEN      32
#define NGX_HTTP_APIMON_CRC_LEN         7
#define NGX_HTTP_APIMON_SIGNED_LEN      (NGX_HTTP_APIMON_KEY_PREFIX_LEN       \
                                         + NGX_HTTP_APIMON_SUB_HEX_LEN        \
                                         + NGX_HTTP_APIMON_SECRET_LEN)


static ngx_int_t ngx_http_apimon_random(u_char *buf, size_t len,
    ngx_log_t *log);
static void ngx_http_apimon_base32(u_char *dst, u_char *src, size_t len);
static void ngx_http_apimon_key_crc(u_char *key, u_char *out);


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


ngx_int_t
ngx_http_apimon_key_valid(ngx_str_t *key)
{
    u_char      *p;
    ngx_uint_t   i;
    u_char       crc[NGX_HTTP_APIMON_CRC_LEN];

    if (key->len != NGX_HTTP_APIMON_KEY_LEN) {
        return NGX_DECLINED;
    }

    p = key->data;

    if (ngx_strncmp(p, NGX_HTTP_APIMON_KEY_PREFIX,
                    NGX_HTTP_APIMON_KEY_PREFIX_LEN)
        != 0)
    {
        return NGX_DECLINED;
    }

    p += NGX_HTTP_APIMON_KEY_PREFIX_LEN;

    for (i = 0; i < NGX_HTTP_APIMON_SUB_HEX_LEN; i++) {
        if (!ngx_http_apimon_is_hex(p[i])) {
            return NGX_DECLINED;
        }
    }

    p += NGX_HTTP_APIMON_SUB_HEX_LEN;

    for (i = 0; i < NGX_HTTP_APIMON_SECRET_LEN + NGX_HTTP_APIMON_CRC_LEN; i++) {
        if (!ngx_http_apimon_is_b32(p[i])) {
            return NGX_DECLINED;
        }
    }

    ngx_http_apimon_key_crc(key->data, crc);

    if (ngx_memcmp(crc, key->data + NGX_HTTP_APIMON_SIGNED_LEN,
                   NGX_HTTP_APIMON_CRC_LEN)
        != 0)
    {
        return NGX_DECLINED;
    }

    return NGX_OK;
}


void
ngx_http_apimon_key_sub_id(ngx_str_t *key, u_char *out)
{
    u_char  *hex;

    hex = key->data + NGX_HTTP_APIMON_KEY_PREFIX_LEN;

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
    unsigned int   len;
    u_char         md[EVP_MAX_MD_SIZE];
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
        || EVP_DigestUpdate(ngx_http_apimon_md_ctx, key->data, key->len) != 1
        || EVP_DigestFinal_ex(ngx_http_apimon_md_ctx, md, &len) != 1
        || len != 32)
    {
        /* cannot happen with a working libcrypto; never matches a digest */
        ngx_memset(out, '-', NGX_HTTP_APIMON_DIGEST_LEN);
        return;
    }

    ngx_hex_dump(out, md, 32);
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
ngx_http_apimon_key_generate(u_char *sub_id, u_char *out, ngx_log_t *log)
{
    u_char      *p;
    ngx_uint_t   i, n;
    u_char       secret[NGX_HTTP_APIMON_SECRET_BYTES];

    p = ngx_cpymem(out, NGX_HTTP_APIMON_KEY_PREFIX,
                   NGX_HTTP_APIMON_KEY_PREFIX_LEN);

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

    ngx_http_apimon_key_crc(out, out + NGX_HTTP_APIMON_SIGNED_LEN);

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


static ngx_int_t
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

    crc = ngx_crc32_long(key, NGX_HTTP_APIMON_SIGNED_LEN);

    for (i = NGX_HTTP_APIMON_CRC_LEN - 1; i >= 0; i--) {
        *out++ = ngx_http_apimon_b32[((uint64_t) crc >> (i * 5)) & 0x1f];
    }
}
