/*
 * Helpers for the billing agent: see util.h.
 */

#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>

int agent_quiet;


static void
oom(void)
{
    fputs("billing-agent: out of memory\n", stderr);
    exit(AGENT_EXIT_CONFIG);
}


void *
xmalloc(size_t n)
{
    void  *p = malloc(n ? n : 1);

    if (p == NULL) {
        oom();
    }
    return p;
}


void *
xcalloc(size_t n, size_t size)
{
    void  *p = calloc(n ? n : 1, size ? size : 1);

    if (p == NULL) {
        oom();
    }
    return p;
}


void *
xrealloc(void *p, size_t n)
{
    p = realloc(p, n ? n : 1);
    if (p == NULL) {
        oom();
    }
    return p;
}


char *
xstrdup(const char *s)
{
    return xstrndup(s, strlen(s));
}


char *
xstrndup(const char *s, size_t n)
{
    char  *p = xmalloc(n + 1);

    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}


void
abuf_init(abuf_t *b)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}


void
abuf_free(abuf_t *b)
{
    free(b->data);
    abuf_init(b);
}


void
abuf_reset(abuf_t *b)
{
    b->len = 0;
    if (b->data) {
        b->data[0] = '\0';
    }
}


static void
abuf_grow(abuf_t *b, size_t need)
{
    size_t  cap;

    if (b->len + need + 1 <= b->cap) {
        return;
    }
    cap = b->cap ? b->cap : 256;
    while (cap < b->len + need + 1) {
        cap *= 2;
    }
    b->data = xrealloc(b->data, cap);
    b->cap = cap;
}


void
abuf_add(abuf_t *b, const void *p, size_t n)
{
    abuf_grow(b, n);
    memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
}


void
abuf_adds(abuf_t *b, const char *s)
{
    abuf_add(b, s, strlen(s));
}


void
abuf_printf(abuf_t *b, const char *fmt, ...)
{
    va_list  ap;
    int      n;

    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) {
        return;
    }
    abuf_grow(b, (size_t) n);
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t) n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t) n;
}


/* FNV-1a: short keys, no adversary */
static size_t
hash_str(const char *s)
{
    uint64_t  h = 1469598103934665603ULL;

    while (*s) {
        h ^= (unsigned char) *s++;
        h *= 1099511628211ULL;
    }
    return (size_t) h;
}


void
amap_init(amap_t *m)
{
    m->slots = NULL;
    m->cap = 0;
    m->n = 0;
}


static amap_slot_t *
amap_find(const amap_t *m, const char *key)
{
    size_t  i;

    i = hash_str(key) & (m->cap - 1);
    while (m->slots[i].key != NULL && strcmp(m->slots[i].key, key) != 0) {
        i = (i + 1) & (m->cap - 1);
    }
    return &m->slots[i];
}


void *
amap_get(const amap_t *m, const char *key)
{
    amap_slot_t  *s;

    if (m->cap == 0) {
        return NULL;
    }
    s = amap_find(m, key);
    return s->key ? s->val : NULL;
}


static void
amap_rehash(amap_t *m)
{
    amap_slot_t  *old = m->slots;
    size_t        oldcap = m->cap, i;

    m->cap = oldcap ? oldcap * 2 : 64;
    m->slots = xcalloc(m->cap, sizeof(amap_slot_t));
    for (i = 0; i < oldcap; i++) {
        if (old[i].key) {
            *amap_find(m, old[i].key) = old[i];
        }
    }
    free(old);
}


amap_slot_t *
amap_put(amap_t *m, const char *key, void *val)
{
    amap_slot_t  *s;

    /* keep the load below 1/2 so probes stay short */
    if ((m->n + 1) * 2 > m->cap) {
        amap_rehash(m);
    }
    s = amap_find(m, key);
    if (s->key == NULL) {
        s->key = xstrdup(key);
        m->n++;
    }
    s->val = val;
    return s;
}


void
amap_free(amap_t *m, void (*free_val)(void *))
{
    size_t  i;

    for (i = 0; i < m->cap; i++) {
        if (m->slots[i].key) {
            free(m->slots[i].key);
            if (free_val) {
                free_val(m->slots[i].val);
            }
        }
    }
    free(m->slots);
    amap_init(m);
}


int64_t
agent_now_ms(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}


int64_t
agent_now_us(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}


void
agent_sleep_us(int64_t us)
{
    struct timespec  ts;

    if (us <= 0) {
        return;
    }
    ts.tv_sec = us / 1000000;
    ts.tv_nsec = (us % 1000000) * 1000;
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {
        /* resume the remaining time */
    }
}


void
agent_iso_time(int64_t ms, char *buf, size_t len)
{
    time_t     t = (time_t) (ms / 1000);
    struct tm  tm;

    gmtime_r(&t, &tm);
    strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}


static void
vlog(const char *level, const char *fmt, va_list ap)
{
    char  ts[32];

    agent_iso_time(agent_now_ms(), ts, sizeof(ts));
    fprintf(stderr, "%s billing-agent[%s]: ", ts, level);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
}


void
agent_log(const char *fmt, ...)
{
    va_list  ap;

    if (agent_quiet) {
        return;
    }
    va_start(ap, fmt);
    vlog("info", fmt, ap);
    va_end(ap);
}


void
agent_err(const char *fmt, ...)
{
    va_list  ap;

    va_start(ap, fmt);
    vlog("error", fmt, ap);
    va_end(ap);
}


int
agent_parse_i64(const char *s, size_t len, int64_t *out)
{
    int64_t  v = 0;
    size_t   i = 0;
    int      neg = 0;

    if (len > 0 && s[0] == '-') {
        neg = 1;
        i = 1;
    }
    if (i == len || len - i > 18) {
        return -1;
    }
    for ( /* void */ ; i < len; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return -1;
        }
        v = v * 10 + (s[i] - '0');
    }
    *out = neg ? -v : v;
    return 0;
}


/*
 * The secret from an owner-only file: a key readable by others is treated
 * as leaked configuration and refused.
 */
char *
agent_read_secret(const char *path, const char *what, char *err,
    size_t errlen)
{
    struct stat  st;
    char         buf[4096];
    ssize_t      n;
    size_t       i, len;
    int          fd;

    fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd == -1) {
        snprintf(err, errlen, "%s %s: %s", what, path,
                 strerror(errno));
        return NULL;
    }
    if (fstat(fd, &st) == -1 || !S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "%s %s: not a regular file",
                 what, path);
        close(fd);
        return NULL;
    }
    if (st.st_uid != geteuid() || (st.st_mode & 077) != 0) {
        snprintf(err, errlen, "%s %s: must be owned by this "
                 "user and not readable by others (chmod 600)", what, path);
        close(fd);
        return NULL;
    }
    n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n < 0) {
        snprintf(err, errlen, "%s %s: %s", what, path,
                 strerror(errno));
        return NULL;
    }
    len = (size_t) n;
    while (len && (buf[len - 1] == '\n' || buf[len - 1] == '\r'
                   || buf[len - 1] == ' ' || buf[len - 1] == '\t'))
    {
        len--;
    }
    buf[len] = '\0';
    for (i = 0; i < len; i++) {
        if ((unsigned char) buf[i] <= ' ' || buf[i] == 0x7f) {
            snprintf(err, errlen, "%s %s: the secret holds "
                     "whitespace or control characters", what, path);
            memset(buf, 0, sizeof(buf));
            return NULL;
        }
    }
    if (len == 0) {
        snprintf(err, errlen, "%s %s: empty", what, path);
        return NULL;
    }
    return xstrndup(buf, len);
}
