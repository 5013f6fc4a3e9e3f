/*
 * The agent's Redis address: see redis_addr.h.  The same forms as the
 * module's apimon_redis, so one value serves both; a host name is fine
 * here (the agent may block), as it is in the module, which resolves it
 * when the configuration is loaded.
 */

#include "redis_addr.h"
#include "util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>


static int
addr_port(const char *s, size_t n, int *port)
{
    int64_t  v;

    if (n == 0 || n > 5 || agent_parse_i64(s, n, &v) != 0 || s[0] == '-'
        || s[0] == '+' || v < 1 || v > 65535)
    {
        return -1;
    }
    *port = (int) v;
    return 0;
}


/* a DNS name or an IPv4 address: what getaddrinfo() may be given */
static int
addr_host_ok(const char *s, size_t n)
{
    size_t  i;

    if (n == 0 || n > 253) {
        return 0;
    }
    for (i = 0; i < n; i++) {
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z')
              || (s[i] >= '0' && s[i] <= '9') || s[i] == '.' || s[i] == '-'
              || s[i] == '_'))
        {
            return 0;
        }
    }
    return 1;
}


static int
addr_tcp(const char *s, size_t n, ar_addr_t *a, char *err, size_t errlen)
{
    const char     *colon, *close;
    size_t          hlen;
    unsigned char   in6[16];

    if (s[0] == '[') {
        close = memchr(s, ']', n);
        hlen = close ? (size_t) (close - s - 1) : 0;
        if (close == NULL || hlen == 0 || hlen >= sizeof(a->host)) {
            snprintf(err, errlen, "bad IPv6 address \"%.*s\" ([addr]:port)",
                     (int) n, s);
            return -1;
        }
        memcpy(a->host, s + 1, hlen);
        a->host[hlen] = '\0';
        if (inet_pton(AF_INET6, a->host, in6) != 1) {
            snprintf(err, errlen, "bad IPv6 address \"%s\"", a->host);
            return -1;
        }
        colon = close + 1 < s + n ? close + 1 : NULL;
        if (colon && *colon != ':') {
            snprintf(err, errlen, "bad address \"%.*s\": ':' and a port may "
                     "follow ']'", (int) n, s);
            return -1;
        }

    } else {
        colon = memchr(s, ':', n);
        if (colon && memchr(colon + 1, ':', n - (size_t) (colon - s) - 1)) {
            snprintf(err, errlen, "bad address \"%.*s\": an IPv6 address "
                     "goes in brackets, [::1]:6379", (int) n, s);
            return -1;
        }
        hlen = colon ? (size_t) (colon - s) : n;
        if (!addr_host_ok(s, hlen)) {
            snprintf(err, errlen, "bad host \"%.*s\" in \"%.*s\"", (int) hlen,
                     s, (int) n, s);
            return -1;
        }
        memcpy(a->host, s, hlen);
        a->host[hlen] = '\0';
    }

    if (colon && addr_port(colon + 1, n - (size_t) (colon + 1 - s), &a->port)
        != 0)
    {
        snprintf(err, errlen, "bad port in \"%.*s\" (1 to 65535)", (int) n, s);
        return -1;
    }
    return 0;
}


static int
addr_unix(const char *s, size_t n, ar_addr_t *a, char *err, size_t errlen)
{
    if (n == 0) {
        snprintf(err, errlen, "\"unix:\" needs the path of a socket");
        return -1;
    }
    if (n >= sizeof(a->path)) {
        snprintf(err, errlen, "unix socket path \"%.*s\" is longer than %zu "
                 "bytes", (int) n, s, sizeof(a->path) - 1);
        return -1;
    }
    memcpy(a->path, s, n);
    a->path[n] = '\0';
    return 0;
}


/* nginx's time forms the agent takes: N (seconds), Nms, Ns, Nm */
static int
addr_timeout(const char *s, size_t n, long *ms)
{
    int64_t  v, unit = 1000;
    size_t   d = n;

    if (n > 2 && strncmp(s + n - 2, "ms", 2) == 0) {
        unit = 1;
        d = n - 2;
    } else if (n > 1 && s[n - 1] == 's') {
        d = n - 1;
    } else if (n > 1 && s[n - 1] == 'm') {
        unit = 60000;
        d = n - 1;
    }
    if (d == 0 || s[0] < '0' || s[0] > '9' || agent_parse_i64(s, d, &v) != 0
        || v <= 0 || v > 3600000 || v * unit > 3600000)
    {
        return -1;
    }
    *ms = (long) (v * unit);
    return 0;
}


static int
addr_param(const char *s, size_t n, ar_addr_t *a, unsigned *seen, char *err,
    size_t errlen)
{
    static const char  *names[] = { "db=", "password_file=",
                                    "connect_timeout=" };
    const char         *v;
    size_t              i, k, vn;
    int64_t             db;

    for (i = 0; i < 3; i++) {
        k = strlen(names[i]);
        if (n >= k && strncmp(s, names[i], k) == 0) {
            break;
        }
    }
    if (i == 3) {
        snprintf(err, errlen, "unknown parameter \"%.*s\" (db=, "
                 "password_file=, connect_timeout=)", (int) n, s);
        return -1;
    }
    if (*seen & (1u << i)) {
        snprintf(err, errlen, "\"%s\" given twice", names[i]);
        return -1;
    }
    *seen |= 1u << i;
    v = s + k;
    vn = n - k;

    switch (i) {
    case 0:
        if (vn == 0 || v[0] < '0' || v[0] > '9'
            || agent_parse_i64(v, vn, &db) != 0 || db > 65535)
        {
            snprintf(err, errlen, "invalid database number \"%.*s\" (0 to "
                     "65535)", (int) n, s);
            return -1;
        }
        a->db = (int) db;
        return 0;
    case 1:
        if (vn == 0 || vn >= sizeof(a->password_file)) {
            snprintf(err, errlen, "password_file= needs a file name");
            return -1;
        }
        memcpy(a->password_file, v, vn);
        a->password_file[vn] = '\0';
        return 0;
    default:
        if (addr_timeout(v, vn, &a->connect_timeout_ms) != 0) {
            snprintf(err, errlen, "invalid connect timeout \"%.*s\" (500ms, "
                     "2s, 1m; at most 1h)", (int) n, s);
            return -1;
        }
        return 0;
    }
}


int
ar_addr_parse(const char *spec, ar_addr_t *a, char *err, size_t errlen)
{
    const char  *p, *end;
    unsigned     seen = 0;
    int          first = 1, rc;
    size_t       n;

    memset(a, 0, sizeof(*a));
    a->port = AR_ADDR_DEFAULT_PORT;
    a->connect_timeout_ms = AR_ADDR_DEFAULT_TIMEOUT_MS;

    for (p = spec; ; p = end) {
        p += strspn(p, " \t");
        if (*p == '\0') {
            break;
        }
        end = p + strcspn(p, " \t");
        n = (size_t) (end - p);

        if (!first) {
            rc = addr_param(p, n, a, &seen, err, errlen);
        } else if (n >= 5 && strncmp(p, "unix:", 5) == 0) {
            rc = addr_unix(p + 5, n - 5, a, err, errlen);
        } else if (p[0] == '/') {
            rc = addr_unix(p, n, a, err, errlen);
        } else {
            rc = addr_tcp(p, n, a, err, errlen);
        }
        if (rc != 0) {
            return -1;
        }
        first = 0;
    }

    if (first) {
        snprintf(err, errlen, "empty Redis address");
        return -1;
    }
    return 0;
}


void
ar_addr_name(const ar_addr_t *a, char *buf, size_t len)
{
    if (a->path[0]) {
        snprintf(buf, len, "unix:%s", a->path);
    } else if (strchr(a->host, ':')) {
        snprintf(buf, len, "[%s]:%d", a->host, a->port);
    } else {
        snprintf(buf, len, "%s:%d", a->host, a->port);
    }
}


char *
ar_addr_password(const ar_addr_t *a, char *err, size_t errlen)
{
    char     buf[AR_ADDR_PASSWORD_MAX + 1], *p;
    ssize_t  n;
    size_t   len;
    int      fd;

    fd = open(a->password_file, O_RDONLY | O_CLOEXEC);
    if (fd == -1) {
        snprintf(err, errlen, "password_file %s: %s", a->password_file,
                 strerror(errno));
        return NULL;
    }
    /* one byte more than allowed tells a file that is too long */
    n = read(fd, buf, sizeof(buf));
    close(fd);
    if (n < 0) {
        snprintf(err, errlen, "password_file %s: %s", a->password_file,
                 strerror(errno));
        return NULL;
    }
    if ((size_t) n > AR_ADDR_PASSWORD_MAX) {
        snprintf(err, errlen, "password_file %s is too long (over %d bytes)",
                 a->password_file, AR_ADDR_PASSWORD_MAX);
        return NULL;
    }
    len = (size_t) n;
    while (len && (buf[len - 1] == '\n' || buf[len - 1] == '\r'
                   || buf[len - 1] == ' ' || buf[len - 1] == '\t'))
    {
        len--;
    }
    if (len == 0) {
        snprintf(err, errlen, "password_file %s is empty", a->password_file);
        explicit_bzero(buf, sizeof(buf));
        return NULL;
    }
    p = xstrndup(buf, len);
    explicit_bzero(buf, sizeof(buf));
    return p;
}
