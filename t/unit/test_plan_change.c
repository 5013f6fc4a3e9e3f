/*
 * A month across plans (apimon_plan_segments), each table row one case: the
 * parts each plan of a subscription's history bills, the day of a change
 * going to the new plan; then a part priced as docs/pricing.md, "Plan
 * changes", shows (29.00 to 49.00 on the 16th of November).
 */

#define _GNU_SOURCE
#include <stdlib.h>

#include "pricing.h"
#include "tap.h"
#include "unit_period.h"

typedef struct {
    const char  *name;
    const char  *plan[5];         /* NULL-terminated */
    const char  *from[5];         /* the first is not read */
    const char  *period, *start, *end;
    int          n;               /* parts, -1 refused */
    struct {
        const char *plan, *start, *end;
        int         days;
    }            want[4];
} scase_t;

static const scase_t  cases[] = {
    { "no change: the term", { "a", NULL }, { "" }, "2026-11",
      "2026-10-01", "", 1, { { "a", "2026-10-01", "", 30 } } },
    { "a change mid-month: its day to the new plan", { "a", "b", NULL },
      { "", "2026-11-16T10:00" }, "2026-11", "2026-10-01", "", 2,
      { { "a", "2026-10-01", "2026-11-16", 15 },
        { "b", "2026-11-16", "", 15 } } },
    { "a change at 00:00", { "a", "b", NULL }, { "", "2026-11-16" },
      "2026-11", "2026-10-01", "", 2,
      { { "a", "2026-10-01", "2026-11-16", 15 },
        { "b", "2026-11-16", "", 15 } } },
    { "a change at the period's end (periodEnd): the month is the old plan's",
      { "a", "b", NULL }, { "", "2026-12-01" }, "2026-11", "2026-10-01", "",
      1, { { "a", "2026-10-01", "2026-12-01", 30 } } },
    { "... and the next month the new plan's", { "a", "b", NULL },
      { "", "2026-12-01" }, "2026-12", "2026-10-01", "", 1,
      { { "b", "2026-12-01", "", 31 } } },
    { "a month before the change: the old plan", { "a", "b", NULL },
      { "", "2026-11-16T10:00" }, "2026-10", "2026-10-01", "", 1,
      { { "a", "2026-10-01", "2026-11-16", 31 } } },
    { "changed on its first day: the new plan only", { "a", "b", NULL },
      { "", "2026-11-03T18:00" }, "2026-11", "2026-11-03T09:00", "", 1,
      { { "b", "2026-11-03T09:00", "", 28 } } },
    { "two changes in one day: the last one's", { "a", "b", "c", NULL },
      { "", "2026-11-10T09:00", "2026-11-10T17:00" }, "2026-11",
      "2026-10-01", "", 2,
      { { "a", "2026-10-01", "2026-11-10", 9 },
        { "c", "2026-11-10", "", 21 } } },
    { "away and back within a day: one part", { "a", "b", "a", NULL },
      { "", "2026-11-10T09:00", "2026-11-10T17:00" }, "2026-11",
      "2026-10-01", "", 1, { { "a", "2026-10-01", "", 30 } } },
    { "ended after the change: the new plan to the end",
      { "a", "b", NULL }, { "", "2026-11-10T12:00" }, "2026-11",
      "2026-10-01", "2026-11-20T08:00", 2,
      { { "a", "2026-10-01", "2026-11-10", 9 },
        { "b", "2026-11-10", "2026-11-20T08:00", 11 } } },
    { "ended before a change it had pending: none after",
      { "a", "b", NULL }, { "", "2026-12-01" }, "2026-11", "2026-10-01",
      "2026-11-20T08:00", 1, { { "a", "2026-10-01", "2026-11-20T08:00", 20 } } },
    { "three plans in a month", { "a", "b", "c", NULL },
      { "", "2026-11-08", "2026-11-22T23:59" }, "2026-11", "2026-10-01", "",
      3, { { "a", "2026-10-01", "2026-11-08", 7 },
           { "b", "2026-11-08", "2026-11-22", 14 },
           { "c", "2026-11-22", "", 9 } } },
    { "bought after the change was made (start later): the new plan",
      { "a", "b", NULL }, { "", "2026-11-02" }, "2026-11", "2026-11-10", "",
      1, { { "b", "2026-11-10", "", 21 } } },
    { "no day in the month", { "a", "b", NULL }, { "", "2026-11-16" },
      "2026-09", "2026-10-01", "", 0, { { NULL, NULL, NULL, 0 } } },
};

static void
test_cases(void)
{
    apimon_plan_entry_t  h[5];
    apimon_segment_t     out[4];
    apimon_period_t      p;
    size_t               i, j, n;
    int                  k;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const scase_t *c = &cases[i];

        for (n = 0; c->plan[n]; n++) {
            h[n].plan = c->plan[n];
            h[n].from_ms = n ? at(c->from[n]) : 0;
        }
        p = period(c->period);
        k = apimon_plan_segments(h, n, &p, at(c->start), at(c->end), out, 4);
        if (!is_int(k, c->n, "%s: parts", c->name) || k <= 0) {
            continue;
        }
        for (j = 0; j < (size_t) k; j++) {
            ok(strcmp(out[j].plan, c->want[j].plan) == 0, "%s: part %zu "
               "is plan %s", c->name, j + 1, c->want[j].plan);
            is_int(out[j].start_ms, at(c->want[j].start), "%s: part %zu "
                   "from", c->name, j + 1);
            is_int(out[j].end_ms, at(c->want[j].end), "%s: part %zu to",
                   c->name, j + 1);
            is_int(apimon_active_days(&p, out[j].start_ms, out[j].end_ms),
                   c->want[j].days, "%s: part %zu days", c->name, j + 1);
        }
    }
}

/* more plans in a month than the caller has room for: refused */
static void
test_too_many(void)
{
    static const char   *names[] = { "a", "b", "c", "d", "e" };
    apimon_plan_entry_t  h[5];
    apimon_segment_t     out[4];
    apimon_period_t      p = period("2026-11");
    size_t               i;

    for (i = 0; i < 5; i++) {
        h[i].plan = names[i];
        h[i].from_ms = at("2026-11-01") + (int64_t) i * 3 * 86400000LL;
    }
    is_int(apimon_plan_segments(h, 5, &p, at("2026-10-01"), 0, out, 4), -1,
           "five plans in a month, room for four: refused");
    is_int(apimon_plan_segments(h, 4, &p, at("2026-10-01"), 0, out, 4), 4,
           "four plans, room for four: four parts");
}

/* the parts priced: 29.00 to 49.00 on the 16th, a 30-day month */
static void
test_priced(void)
{
    static const apimon_pricing_t  bronze = { .model = APIMON_MODEL_FLAT,
        .currency = "usd", .amount = 2900 };
    static const apimon_pricing_t  gold = { .model = APIMON_MODEL_FLAT,
        .currency = "usd", .amount = 4900 };
    apimon_plan_entry_t  h[2] = { { 0, "bronze" }, { 0, "gold" } };
    apimon_segment_t     out[4];
    apimon_line_t        l[APIMON_MAX_LINES];
    apimon_period_t      p = period("2026-11");

    h[1].from_ms = at("2026-11-16T10:00");
    if (!is_int(apimon_plan_segments(h, 2, &p, at("2026-10-01"), 0, out, 4),
                2, "priced: two parts"))
    {
        return;
    }
    is_int(apimon_price(&bronze, &p, out[0].start_ms, out[0].end_ms, 0,
                        "Bronze (bronze)", l, APIMON_MAX_LINES), 1,
           "bronze: one line");
    is_int(l[0].amount, 1450, "bronze: 29.00 x 15 / 30 = 14.50");
    ok(strstr(l[0].description, "Bronze (bronze) 2026-11: 15 of 30 days")
       != NULL, "bronze: the description names the plan (%s)",
       l[0].description);
    is_int(apimon_price(&gold, &p, out[1].start_ms, out[1].end_ms, 0,
                        "Gold (gold)", l, APIMON_MAX_LINES), 1,
           "gold: one line");
    is_int(l[0].amount, 2450, "gold: 49.00 x 15 / 30 = 24.50");
}

int
main(void)
{
    test_cases();
    test_too_many();
    test_priced();
    return tap_done();
}
