/*
 * Shared by the pricing unit tests: "2026-02" → its period, and ISO text →
 * ms by libc's timegm (an independent check of pricing.c's own calendar;
 * define _GNU_SOURCE first), or exit 2 (a typo in a test table, not a
 * result).
 */

#ifndef APIMON_UNIT_PERIOD_H
#define APIMON_UNIT_PERIOD_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pricing.h"

static inline apimon_period_t
period(const char *text)
{
    apimon_period_t p;

    if (apimon_period_parse(text, &p) != 0) {
        fprintf(stderr, "bad test period %s\n", text);
        exit(2);
    }
    return p;
}

/* "2026-02-19T10:30" (UTC) → ms; "" → 0 (open end) */
static inline int64_t
at(const char *iso)
{
    struct tm  tm;
    int        y, mo, d, h = 0, mi = 0;

    if (iso == NULL || iso[0] == '\0') {
        return 0;
    }
    if (sscanf(iso, "%d-%d-%dT%d:%d", &y, &mo, &d, &h, &mi) < 3) {
        fprintf(stderr, "bad test instant %s\n", iso);
        exit(2);
    }
    memset(&tm, 0, sizeof(tm));
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    return (int64_t) timegm(&tm) * 1000;
}

#endif
