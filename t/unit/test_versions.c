/*
 * Price versions and suspensions (apimon_price_history) and the times of
 * `catalog apply --effective` (apimon_time_parse), each table row one case.
 * docs/pricing.md, "Price changes" and "Suspended subscriptions", shows the
 * same numbers.
 */

#define _GNU_SOURCE
#include <stdlib.h>

#include "pricing.h"
#include "tap.h"
#include "unit_period.h"

static const apimon_pricing_t FLAT29 = { .model = APIMON_MODEL_FLAT,
    .currency = "usd", .amount = 2900 };
static const apimon_pricing_t FLAT39 = { .model = APIMON_MODEL_FLAT,
    .currency = "usd", .amount = 3900 };
static const apimon_pricing_t FLAT39E = { .model = APIMON_MODEL_FLAT,
    .currency = "eur", .amount = 3900 };
static const apimon_pricing_t MET50 = { .model = APIMON_MODEL_METERED,
    .currency = "usd", .unit_amount = 50, .unit_size = 1000, .round_up = 1 };
static const apimon_pricing_t MET70 = { .model = APIMON_MODEL_METERED,
    .currency = "usd", .unit_amount = 70, .unit_size = 1000, .round_up = 1 };
static const apimon_pricing_t FWO99 = {
    .model = APIMON_MODEL_FLAT_WITH_OVERAGE, .currency = "usd",
    .amount = 9900, .included_units = 10, .unit_amount = 50,
    .unit_size = 1000, .round_up = 1 };
static const apimon_pricing_t FWO129 = {
    .model = APIMON_MODEL_FLAT_WITH_OVERAGE, .currency = "usd",
    .amount = 12900, .included_units = 10, .unit_amount = 30,
    .unit_size = 1000, .round_up = 1 };

typedef struct {
    const char              *name;
    const apimon_pricing_t  *pr[3];      /* NULL-terminated */
    const char              *from[3];    /* the first is "" (since ever) */
    const char              *paused[3][2];
    const char              *period, *start, *end;
    int64_t                  calls;
    int                      rc;
    int64_t                  amount[2];  /* of the lines, in order */
    int64_t                  qty0;
    const char              *desc0;      /* a part of line 0's text */
} vcase_t;

#define NOV_16  { "", "2026-11-16" }

static const vcase_t  cases[] = {
    { "29 to 39 on the 16th of November: 15 days each",
      { &FLAT29, &FLAT39 }, NOV_16, { { NULL } }, "2026-11", "2026-10-01",
      "", 0, 1, { 3400 }, 30, "30 of 30 days: 15 at 29.00 usd + 15 at "
      "39.00 usd" },
    { "October after the change: the old price",
      { &FLAT29, &FLAT39 }, NOV_16, { { NULL } }, "2026-10", "2026-10-01",
      "", 0, 1, { 2900 }, 31, "31 of 31 days" },
    { "December: the new price",
      { &FLAT29, &FLAT39 }, NOV_16, { { NULL } }, "2026-12", "2026-10-01",
      "", 0, 1, { 3900 }, 31, "31 of 31 days" },
    { "started after the change: new price, pro-rated",
      { &FLAT29, &FLAT39 }, NOV_16, { { NULL } }, "2026-11", "2026-11-20",
      "", 0, 1, { 1430 }, 11, "11 of 30 days" },
    { "started before it: 6 old days, 15 new",
      { &FLAT29, &FLAT39 }, NOV_16, { { NULL } }, "2026-11",
      "2026-11-10T18:00", "", 0, 1, { 2530 }, 21, "6 at 29.00 usd + 15 at" },
    { "a change at 10:00 counts from the next day",
      { &FLAT29, &FLAT39 }, { "", "2026-11-16T10:00" }, { { NULL } },
      "2026-11", "2026-10-01", "", 0, 1, { 3367 }, 30, "16 at 29.00 usd" },
    { "three versions in one month",
      { &FLAT29, &FLAT39, &FLAT29 }, { "", "2026-11-11", "2026-11-21" },
      { { NULL } }, "2026-11", "2026-10-01", "", 0, 1,
      { (2900 * 20 + 3900 * 10 + 15) / 30 }, 30, "10 at 29.00 usd + 10 at "
      "39.00 usd + 10 at 29.00 usd" },
    { "metered: each version's line weighted by its days",
      { &MET50, &MET70 }, NOV_16, { { NULL } }, "2026-11", "2026-10-01",
      "", 12345, 1, { 780 }, 13, "(2 price versions by day)" },
    { "flat_with_overage: fee by days, overage weighted",
      { &FWO99, &FWO129 }, NOV_16, { { NULL } }, "2026-11", "2026-10-01",
      "", 20000, 2, { 11400, 400 }, 30, "15 at 99.00 usd + 15 at 129.00" },
    { "a change of currency within a period is refused",
      { &FLAT29, &FLAT39E }, NOV_16, { { NULL } }, "2026-11", "2026-10-01",
      "", 0, -1, { 0 }, 0, NULL },
    { "a change of currency in the next period is not",
      { &FLAT29, &FLAT39E }, { "", "2026-12-01" }, { { NULL } }, "2026-11",
      "2026-10-01", "", 0, 1, { 2900 }, 30, "30 of 30 days" },
    { "pause: 6 whole days suspended in February",
      { &FLAT29 }, { "" }, { { "2026-02-05T10:00", "2026-02-12T08:00" } },
      "2026-02", "2026-01-01", "", 0, 1, { 2279 }, 22,
      "22 of 28 days (6 suspended not charged)" },
    { "pause: suspended to the end (still suspended)",
      { &FLAT29 }, { "" }, { { "2026-02-20", "9999-12-31" } }, "2026-02",
      "2026-01-01", "", 0, 1, { 1968 }, 19, "(9 suspended not charged)" },
    { "pause: suspended all month",
      { &FLAT29 }, { "" }, { { "2026-01-20", "2026-03-02" } }, "2026-02",
      "2026-01-01", "", 0, 1, { 0 }, 0, "0 of 28 days" },
    { "pause: overlapping spans count once",
      { &FLAT29 }, { "" }, { { "2026-02-05", "2026-02-08" },
                             { "2026-02-07", "2026-02-10" } },
      "2026-02", "2026-01-01", "", 0, 1, { 2382 }, 23, "(5 suspended" },
    { "pause: a partial suspended day is charged",
      { &FLAT29 }, { "" }, { { "2026-02-05T10:00", "2026-02-05T12:00" } },
      "2026-02", "2026-01-01", "", 0, 1, { 2900 }, 28, "28 of 28 days" },
    { "pause: metered usage is not touched",
      { &MET50 }, { "" }, { { "2026-02-05", "2026-02-12" } }, "2026-02",
      "2026-01-01", "", 12345, 1, { 650 }, 13, "12,345 calls" },
    { "pause and a price change: 10 old charged days, 15 new",
      { &FLAT29, &FLAT39 }, NOV_16, { { "2026-10-20", "2026-11-06" } },
      "2026-11", "2026-10-01", "", 0, 1, { 2917 }, 25,
      "25 of 30 days: 10 at 29.00 usd + 15 at 39.00 usd (5 suspended" },
    { "pause after the end of the term: nothing to subtract",
      { &FLAT29 }, { "" }, { { "2026-02-20", "2026-02-25" } }, "2026-02",
      "2026-01-01", "2026-02-15", 0, 1, { 1450 }, 14, "14 of 28 days" },
};

static void
test_history(void)
{
    apimon_version_t  v[3];
    apimon_span_t     sp[3];
    apimon_history_t  h;
    apimon_line_t     l[APIMON_MAX_LINES];
    apimon_period_t   p;
    char              err[APIMON_PRICE_ERRLEN];
    size_t            i, k;
    int               n, j;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const vcase_t *c = &cases[i];

        memset(&h, 0, sizeof(h));
        for (k = 0; k < 3 && c->pr[k]; k++) {
            v[k].pr = *c->pr[k];
            v[k].from_ms = at(c->from[k]);
        }
        h.v = v;
        h.nv = k;
        for (k = 0; k < 3 && c->paused[k][0]; k++) {
            sp[k].start_ms = at(c->paused[k][0]);
            sp[k].end_ms = at(c->paused[k][1]);
        }
        h.paused = k ? sp : NULL;
        h.npaused = k;
        p = period(c->period);
        err[0] = '\0';
        n = apimon_price_history(&h, &p, at(c->start), at(c->end), c->calls,
            "Plan (p)", l, APIMON_MAX_LINES, err, sizeof(err));
        if (!is_int(n, c->rc, "%s: lines", c->name) || n < 0) {
            if (n < 0) {
                ok(err[0] != '\0', "%s: says why (%s)", c->name, err);
            }
            continue;
        }
        for (j = 0; j < n; j++) {
            is_int(l[j].amount, c->amount[j], "%s: line %s amount", c->name,
                l[j].id);
        }
        is_int(l[0].quantity, c->qty0, "%s: quantity", c->name);
        ok(strstr(l[0].description, c->desc0) != NULL, "%s: text '%s'",
            c->name, l[0].description);
    }
}

/* one version, no pause: exactly apimon_price_why */
static void
test_same(void)
{
    apimon_version_t  v = { 0, FWO99 };
    apimon_history_t  h = { &v, 1, NULL, 0 };
    apimon_line_t     a[APIMON_MAX_LINES], b[APIMON_MAX_LINES];
    apimon_period_t   p = period("2026-02");
    int               na, nb;

    na = apimon_price_history(&h, &p, at("2026-02-19T09:00"), 0, 15000,
        "S (s)", a, APIMON_MAX_LINES, NULL, 0);
    nb = apimon_price_why(&FWO99, &p, at("2026-02-19T09:00"), 0, 15000,
        "S (s)", b, APIMON_MAX_LINES, NULL, 0);
    ok(na == 2 && nb == 2 && memcmp(a, b, sizeof(a[0]) * 2) == 0,
        "one version: the lines of apimon_price_why, byte for byte");
}

/* any number of versions over the years; at most 64 within one period */
static void
test_many(void)
{
    static apimon_version_t  v[100];
    apimon_history_t         h = { v, 100, NULL, 0 };
    apimon_line_t            l[APIMON_MAX_LINES];
    apimon_period_t          p = period("2026-11");
    char                     err[APIMON_PRICE_ERRLEN];
    size_t                   i;
    int                      n;

    for (i = 0; i < 100; i++) {
        v[i].pr = FLAT29;
        v[i].pr.amount = 1000 + 10 * (int64_t) i;
        /* the 1st of each month from 2020-01 */
        v[i].from_ms = i ? apimon_days_from_civil(2020 + (int) i / 12,
            (int) i % 12 + 1, 1) * 86400000LL : 0;
    }
    n = apimon_price_history(&h, &p, at("2020-01-01"), 0, 0, NULL, l,
        APIMON_MAX_LINES, err, sizeof(err));
    /* 2026-11 is version 6 * 12 + 10 = 82 */
    ok(n == 1 && l[0].amount == 1820, "100 versions: the one of 2026-11 "
        "(%d, %lld)", n, n > 0 ? (long long) l[0].amount : -1LL);
    is_int(apimon_history_pricing(&h, &p, at("2020-01-01"), 0)->amount, 1820,
        "100 versions: history_pricing");

    for (i = 1; i < 100; i++) {
        v[i].from_ms = at("2026-11-02") + (int64_t) i * 60000;
    }
    n = apimon_price_history(&h, &p, at("2020-01-01"), 0, 0, NULL, l,
        APIMON_MAX_LINES, err, sizeof(err));
    ok(n == -1 && strstr(err, "more than 64 price versions") != NULL,
        "99 versions within a month: refused (%s)", err);
}

static void
test_time_parse(void)
{
    static const struct {
        const char *text;
        int         rc;
        const char *want;
        int64_t     plus;
    } t[] = {
        { "2026-11-16", 0, "2026-11-16", 0 },
        { "2026-11-16T10:00:00Z", 0, "2026-11-16T10:00", 0 },
        { "2026-11-16t10:00:00z", 0, "2026-11-16T10:00", 0 },
        { "2026-11-16T10:00:00.5Z", 0, "2026-11-16T10:00", 500 },
        { "2026-11-16T10:00:07.123456Z", 0, "2026-11-16T10:00", 7123 },
        { "2026-11-16T12:00:00+02:00", 0, "2026-11-16T10:00", 0 },
        { "2026-11-16T08:30:00-01:30", 0, "2026-11-16T10:00", 0 },
        { "2028-02-29", 0, "2028-02-29", 0 },
        { "2026-02-29", -1, NULL, 0 },
        { "2026-11-31", -1, NULL, 0 },
        { "2026-11-00", -1, NULL, 0 },
        { "2026-13-01", -1, NULL, 0 },
        { "2026-11-16T24:00:00Z", -1, NULL, 0 },
        { "2026-11-16T10:60:00Z", -1, NULL, 0 },
        { "2026-11-16T10:00:00", -1, NULL, 0 },
        { "2026-11-16T10:00Z", -1, NULL, 0 },
        { "2026-11-16 10:00:00Z", -1, NULL, 0 },
        { "2026-11-16T10:00:00.Z", -1, NULL, 0 },
        { "2026-11-16T10:00:00+0200", -1, NULL, 0 },
        { "2026-11-16T10:00:00Zjunk", -1, NULL, 0 },
        { "2026/11/16", -1, NULL, 0 },
        { "2026-11-1", -1, NULL, 0 },
        { "", -1, NULL, 0 },
    };
    int64_t  ms;
    size_t   i;

    for (i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        int rc = apimon_time_parse(t[i].text, &ms);

        if (is_int(rc, t[i].rc, "time_parse('%s') rc", t[i].text)
            && rc == 0)
        {
            is_int(ms, at(t[i].want) + t[i].plus, "time_parse('%s')",
                t[i].text);
        }
    }
    is_int(apimon_time_parse(NULL, &ms), -1, "time_parse(NULL)");
}

int
main(void)
{
    test_history();
    test_same();
    test_many();
    test_time_parse();
    return tap_done();
}
