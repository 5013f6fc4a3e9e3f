/*
 * A minimal TAP producer for the C unit tests in t/unit/, read by
 * `prove --exec ''`.  Header-only so that no test helper ends up in the
 * agent's objects.  Usage: ok(), is_int(), is_str(), like(), then
 * return tap_done() from main: it prints the plan and exits non-zero when
 * a test failed.
 */

#ifndef APIMON_TAP_H
#define APIMON_TAP_H

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

static int tap_run, tap_failed;

static inline void __attribute__((format(printf, 2, 0)))
tap_vline(int pass, const char *fmt, va_list ap)
{
    tap_run++;
    if (!pass) {
        tap_failed++;
    }
    printf("%s %d - ", pass ? "ok" : "not ok", tap_run);
    vprintf(fmt, ap);
    printf("\n");
}

static inline int __attribute__((format(printf, 2, 3)))
ok(int pass, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    tap_vline(pass, fmt, ap);
    va_end(ap);
    return pass;
}

static inline int __attribute__((format(printf, 3, 4)))
is_int(int64_t got, int64_t want, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    tap_vline(got == want, fmt, ap);
    va_end(ap);
    if (got != want) {
        printf("#   got:      %lld\n#   expected: %lld\n", (long long) got,
            (long long) want);
    }
    return got == want;
}

static inline int __attribute__((format(printf, 3, 4)))
is_str(const char *got, const char *want, const char *fmt, ...)
{
    va_list  ap;
    int      pass = got != NULL && want != NULL && strcmp(got, want) == 0;

    va_start(ap, fmt);
    tap_vline(pass, fmt, ap);
    va_end(ap);
    if (!pass) {
        printf("#   got:      '%s'\n#   expected: '%s'\n",
            got ? got : "(null)", want ? want : "(null)");
    }
    return pass;
}

/* got contains want */
static inline int __attribute__((format(printf, 3, 4)))
like(const char *got, const char *want, const char *fmt, ...)
{
    va_list  ap;
    int      pass = got != NULL && want != NULL && strstr(got, want) != NULL;

    va_start(ap, fmt);
    tap_vline(pass, fmt, ap);
    va_end(ap);
    if (!pass) {
        printf("#   got:      '%s'\n#   expected to contain: '%s'\n",
            got ? got : "(null)", want ? want : "(null)");
    }
    return pass;
}

static inline void __attribute__((format(printf, 1, 2)))
diag(const char *fmt, ...)
{
    va_list ap;

    printf("# ");
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
}

static inline int
tap_done(void)
{
    printf("1..%d\n", tap_run);
    fflush(stdout);
    return tap_failed ? 1 : 0;
}

#endif
