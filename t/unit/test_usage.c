/*
 * The usage rule (apimon_usage_add): which fields of a month's usage hash
 * count, and whether a day's calls are billed or fall outside the
 * subscription's term; and the calendar under it.  Each table row is one
 * case: one field added to an empty sum, then every row's field added in
 * turn to one sum.
 */

#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>

#include "pricing.h"
#include "tap.h"
#include "unit_period.h"

typedef struct {
    const char  *name;
    const char  *start;          /* ISO, the subscription's startTime */
    const char  *end;            /* ISO, "" = open-ended */
    const char  *field;
    const char  *count;
    int64_t      calls;
    int64_t      unbilled;
} usage_case_t;

static const usage_case_t  cases[] = {
    { "accepted calls of a day in the term", "2026-01-01", "",
      "20260115|weather|ok", "10", 10, 0 },
    { "refusals by reason do not count", "2026-01-01", "",
      "20260115|weather|rate_limited", "7", 0, 0 },
    { "quota refusals do not count", "2026-01-01", "",
      "20260115|weather|quota_exceeded", "7", 0, 0 },
    { "the first day counts when the start is inside it",
      "2026-01-15T12:00", "", "20260115|weather|ok", "3", 3, 0 },
    { "the day before the start is outside the term", "2026-01-15", "",
      "20260114|weather|ok", "4", 0, 4 },
    { "the day the start falls in, a minute before its end",
      "2026-01-14T23:59", "", "20260114|weather|ok", "5", 5, 0 },
    { "the day the term ends at 00:00 is outside it", "2026-01-01",
      "2026-01-20", "20260120|weather|ok", "6", 0, 6 },
    { "the day the term ends in is inside it", "2026-01-01",
      "2026-01-20T00:01", "20260120|weather|ok", "8", 8, 0 },
    { "the last day before the end counts", "2026-01-01", "2026-01-20",
      "20260119|weather|ok", "9", 9, 0 },
    { "a leap day", "2028-02-01", "2028-03-01", "20280229|maps|ok", "2", 2,
      0 },
    { "an api name with dots and dashes", "2026-01-01", "",
      "20260131|geo.v2-beta|ok", "11", 11, 0 },
    { "a field too short to hold a day", "2026-01-01", "", "2026011|ok",
      "1", 0, 0 },
    { "a day that is not digits", "2026-01-01", "", "2026ab15|weather|ok",
      "1", 0, 0 },
    { "no separator after the day", "2026-01-01", "",
      "202601151|weather|ok", "1", 0, 0 },
    { "a count that is no number", "2026-01-01", "", "20260115|weather|ok",
      "12x", 0, 0 },
    { "a count of 19 digits", "2026-01-01", "", "20260115|weather|ok",
      "1000000000000000000", 0, 0 },
    { "an empty count", "2026-01-01", "", "20260115|weather|ok", "", 0, 0 },
};

#define NCASES  (sizeof(cases) / sizeof(cases[0]))


static void
add(apimon_usage_t *u, const usage_case_t *c)
{
    apimon_usage_add(u, at(c->start), at(c->end), c->field, strlen(c->field),
                     c->count, strlen(c->count));
}


static void
test_rule(void)
{
    apimon_usage_t  u, sum;
    int64_t         calls = 0, unbilled = 0;
    size_t          i;

    memset(&sum, 0, sizeof(sum));
    for (i = 0; i < NCASES; i++) {
        memset(&u, 0, sizeof(u));
        add(&u, &cases[i]);
        ok(u.calls == cases[i].calls && u.unbilled == cases[i].unbilled,
           "%s: %lld billed, %lld outside (want %lld, %lld)", cases[i].name,
           (long long) u.calls, (long long) u.unbilled,
           (long long) cases[i].calls, (long long) cases[i].unbilled);
        add(&sum, &cases[i]);
        calls += cases[i].calls;
        unbilled += cases[i].unbilled;
    }
    is_int(sum.calls, calls, "the fields of a hash add up: billed");
    is_int(sum.unbilled, unbilled, "the fields of a hash add up: outside");
}


static void
test_calendar(void)
{
    static const struct {
        int64_t      y;
        int          m, d;
        const char  *iso;
    } days[] = {
        { 1970, 1, 1, "1970-01-01" },
        { 1969, 12, 31, "1969-12-31" },
        { 2000, 2, 29, "2000-02-29" },
        { 2000, 3, 1, "2000-03-01" },
        { 2026, 1, 15, "2026-01-15" },
        { 2100, 3, 1, "2100-03-01" },
        { 9999, 12, 31, "9999-12-31" },
    };
    size_t  i;

    for (i = 0; i < sizeof(days) / sizeof(days[0]); i++) {
        is_int(apimon_days_from_civil(days[i].y, days[i].m, days[i].d)
               * 86400000LL, at(days[i].iso), "day number of %s (timegm)",
               days[i].iso);
    }
    /* usage days past a month's end are read as the days after it */
    is_int(apimon_days_from_civil(2026, 2, 30),
           apimon_days_from_civil(2026, 3, 2), "2026-02-30 is 2026-03-02");
}


int
main(void)
{
    test_rule();
    test_calendar();
    return tap_done();
}
