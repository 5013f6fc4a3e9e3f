/*
 * The Redis address of the billing agent, in the forms the module's
 * apimon_redis directive takes, as one string:
 *
 *   <host[:port] | [ipv6][:port] | unix:/path | /path>
 *       [db=N] [password_file=FILE] [connect_timeout=TIME]
 *
 * Parsing is pure (t/unit/test_redis_addr.c); ar_connect() uses it.
 */

#ifndef APIMON_REDIS_ADDR_H
#define APIMON_REDIS_ADDR_H

#include <stddef.h>

#define AR_ADDR_DEFAULT_PORT        6379
#define AR_ADDR_DEFAULT_TIMEOUT_MS  5000
#define AR_ADDR_PASSWORD_MAX        1024      /* as the module's */

typedef struct {
    char   host[256];          /* no brackets; "" for a unix socket */
    int    port;
    char   path[108];          /* the socket; "" for TCP */
    int    db;                 /* 0 by default */
    char   password_file[4096];    /* "" when not given */
    long   connect_timeout_ms;
} ar_addr_t;

/* 0, or -1 with the reason in err (which names the part at fault) */
int ar_addr_parse(const char *spec, ar_addr_t *a, char *err, size_t errlen);

/* "127.0.0.1:6379", "[::1]:6380", "unix:/run/redis.sock" into buf */
void ar_addr_name(const ar_addr_t *a, char *buf, size_t len);

/*
 * The password of password_file: trailing blanks and newlines removed.
 * Returns a malloc'ed string, or NULL with the reason in err.
 */
char *ar_addr_password(const ar_addr_t *a, char *err, size_t errlen);

#endif
