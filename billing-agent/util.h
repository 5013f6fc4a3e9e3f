/*
 * Small helpers shared by the billing agent: logging, clocks, a growable
 * buffer and a string-keyed hash map.  The agent is a batch program: an
 * allocation failure ends it (exit 2) rather than being threaded through
 * every caller.
 */

#ifndef APIMON_UTIL_H
#define APIMON_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* exit codes, documented in README.md (billing-agent, EXIT STATUS) */
#define AGENT_EXIT_OK       0
#define AGENT_EXIT_FAILED   1       /* some lines failed/unmapped: rerun */
#define AGENT_EXIT_CONFIG   2       /* configuration, usage or environment */
#define AGENT_EXIT_LOCKED   3       /* another run holds the lock */
#define AGENT_EXIT_UNSAFE   4       /* Redis would lose usage on a crash */
#define AGENT_EXIT_CLOCK    5       /* too near the end of a billed month */

typedef struct {
    char    *data;
    size_t   len;
    size_t   cap;
} abuf_t;

void abuf_init(abuf_t *b);
void abuf_free(abuf_t *b);
void abuf_reset(abuf_t *b);
void abuf_add(abuf_t *b, const void *p, size_t n);
void abuf_adds(abuf_t *b, const char *s);
void abuf_printf(abuf_t *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* string → pointer, open addressing; keys are copied */
typedef struct {
    char    *key;
    void    *val;
} amap_slot_t;

typedef struct {
    amap_slot_t  *slots;
    size_t        cap;
    size_t        n;
} amap_t;

void amap_init(amap_t *m);
void *amap_get(const amap_t *m, const char *key);
/* returns the stored slot (new or existing) so callers can set val */
amap_slot_t *amap_put(amap_t *m, const char *key, void *val);
void amap_free(amap_t *m, void (*free_val)(void *));

void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);

int64_t agent_now_ms(void);
int64_t agent_now_us(void);          /* monotonic */
void agent_sleep_us(int64_t us);

/* "2026-01-31T12:00:00Z" */
void agent_iso_time(int64_t ms, char *buf, size_t len);

extern int agent_quiet;
/* one line on stderr, prefixed with the UTC time; never pass secrets */
void agent_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void agent_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/*
 * The secret in an owner-only file (a file readable by others is treated
 * as leaked and refused), trailing whitespace trimmed; what names it in
 * the messages ("--stripe-key-file").  NULL with the reason in err.
 */
char *agent_read_secret(const char *path, const char *what, char *err,
    size_t errlen);

/* parse a decimal int64; -1 if s is not entirely a number */
int agent_parse_i64(const char *s, size_t len, int64_t *out);

#endif
