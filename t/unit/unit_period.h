/*
 * Shared by the pricing unit tests: "2026-02" → its period, or exit 2 (a
 * typo in a test table, not a result).
 */

#ifndef APIMON_UNIT_PERIOD_H
#define APIMON_UNIT_PERIOD_H

#include <stdio.h>
#include <stdlib.h>

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

#endif
