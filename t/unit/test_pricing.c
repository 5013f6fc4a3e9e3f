/*
 * Pricing unit tests: periods, pro-rating, rounding and every model, each
 * table row one case.  Instants are written as ISO text and converted with
 * libc's timegm, an independent check of pricing.c's own calendar.
 */

#define _GNU_SOURCE
#include <stdlib.h>

#include "pricing.h"
#include "tap.h"
#include "unit_period.h"

#define DAY 86400000LL

/* ---- periods ------------------------------------------------------------ */

static void
test_period_parse(void)
{
    static const struct {
        const char *text;
        int         rc, days;
        const char *start, *end;
    } t[] = {
        { "2026-02", 0, 28, "2026-02-01", "2026-03-01" },
        { "2028-02", 0, 29, "2028-02-01", "2028-03-01" },   /* leap */
        { "2024-02", 0, 29, "2024-02-01", "2024-03-01" },
        { "2000-02", 0, 29, "2000-02-01", "2000-03-01" },   /* /400: leap */
        { "2100-02", 0, 28, "2100-02-01", "2100-03-01" },   /* /100: not */
        { "2026-04", 0, 30, "2026-04-01", "2026-05-01" },
        { "2026-01", 0, 31, "2026-01-01", "2026-02-01" },
        { "2026-12", 0, 31, "2026-12-01", "2027-01-01" },
        { "1970-01", 0, 31, "1970-01-01", "1970-02-01" },
        { "2026-13", -1, 0, NULL, NULL },
        { "2026-00", -1, 0, NULL, NULL },
        { "2026-2", -1, 0, NULL, NULL },
        { "2026-02x", -1, 0, NULL, NULL },
        { "26-02", -1, 0, NULL, NULL },
        { "2026/02", -1, 0, NULL, NULL },
        { " 2026-02", -1, 0, NULL, NULL },
        { "2026-+2", -1, 0, NULL, NULL },
        { "1969-12", -1, 0, NULL, NULL },
        { "", -1, 0, NULL, NULL },
    };
    apimon_period_t  p;
    size_t           i;

    for (i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        int rc = apimon_period_parse(t[i].text, &p);

        if (!is_int(rc, t[i].rc, "period_parse('%s') rc", t[i].text)
            || rc != 0)
        {
            continue;
        }
        ok(p.days == t[i].days && p.start_ms == at(t[i].start)
           && p.end_ms == at(t[i].end),
           "period_parse('%s'): %d days, [%s, %s)", t[i].text, p.days,
           t[i].start, t[i].end);
    }
    is_int(apimon_period_parse(NULL, &p), -1, "period_parse(NULL)");
}

static void
test_period_of(void)
{
    static const struct {
        const char *at;
        int64_t     offset;
        const char *want;
    } t[] = {
        { "2026-02-28T23:59", 59999, "2026-02" },   /* last ms of Feb */
        { "2026-03-01", 0, "2026-03" },
        { "2028-02-29T12:00", 0, "2028-02" },
        { "2000-12-31T23:59", 59999, "2000-12" },
        { "2001-01-01", 0, "2001-01" },
        { "1970-01-01", 0, "1970-01" },
        { "2100-03-01", -1, "2100-02" },
    };
    apimon_period_t  p, q;
    char             buf[16];
    size_t           i;
    int              y, m, bad = 0;

    for (i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        apimon_period_of(at(t[i].at) + t[i].offset, &p);
        apimon_period_format(&p, buf, sizeof(buf));
        is_str(buf, t[i].want, "period_of(%s%+lld ms)", t[i].at,
            (long long) t[i].offset);
    }
    apimon_period_of(-5, &p);
    apimon_period_format(&p, buf, sizeof(buf));
    is_str(buf, "1970-01", "period_of before 1970 clamps to 1970-01");

    /* every month 1970..2400: boundaries agree with timegm, of() and
     * prev() are consistent */
    for (y = 1970; y <= 2400; y++) {
        for (m = 1; m <= 12; m++) {
            char text[16], day[24];

            snprintf(text, sizeof(text), "%04d-%02d", y, m);
            snprintf(day, sizeof(day), "%s-01", text);
            p = period(text);
            apimon_period_of(p.end_ms - 1, &q);
            bad += p.start_ms != at(day) || q.start_ms != p.start_ms
                || q.days != p.days;
            apimon_period_of(p.end_ms, &q);
            apimon_period_prev(&q, &q);
            bad += q.start_ms != p.start_ms || q.end_ms != p.end_ms;
        }
    }
    is_int(bad, 0, "5,172 months 1970..2400 agree with timegm, of, prev");

    p = period("2026-01");
    apimon_period_prev(&p, &q);
    ok(q.year == 2025 && q.month == 12 && q.days == 31,
        "prev of 2026-01 is 2025-12");
    p = period("2028-03");
    apimon_period_prev(&p, &q);
    ok(q.year == 2028 && q.month == 2 && q.days == 29,
        "prev of 2028-03 is 2028-02 with 29 days");
}

/* ---- pro-rating --------------------------------------------------------- */

static void
test_active_days(void)
{
    static const struct {
        const char *what, *period, *start, *end;
        int         days;
    } t[] = {
        { "whole month, started before, open", "2026-02", "2025-11-03",
          "", 28 },
        { "started before, ended after", "2026-02", "2026-01-15",
          "2026-03-15", 28 },
        { "start inside (day counts)", "2026-02", "2026-02-19", "", 10 },
        { "start inside late in the day", "2026-02", "2026-02-19T23:59",
          "", 10 },
        { "end inside, partial day counts", "2026-02", "2026-01-01",
          "2026-02-10T12:00", 10 },
        { "end at 00:00 does not count that day", "2026-02", "2026-01-01",
          "2026-02-10", 9 },
        { "end one minute into a day", "2026-02", "2026-01-01",
          "2026-02-10T00:01", 10 },
        { "both inside", "2026-02", "2026-02-05T10:00", "2026-02-07T09:00",
          3 },
        { "one-day subscription", "2026-02", "2026-02-05T10:00",
          "2026-02-05T11:00", 1 },
        { "one full day 00:00 to 00:00", "2026-02", "2026-02-05",
          "2026-02-06", 1 },
        { "empty: start equals end", "2026-02", "2026-02-05T10:00",
          "2026-02-05T10:00", 0 },
        { "ended before the period", "2026-02", "2025-12-01", "2026-01-31",
          0 },
        { "ended exactly at the period start", "2026-02", "2025-12-01",
          "2026-02-01", 0 },
        { "starts after the period", "2026-02", "2026-03-01", "", 0 },
        { "ends at the period end exactly", "2026-02", "2026-02-01",
          "2026-03-01", 28 },
        { "leap February whole", "2028-02", "2028-01-01", "", 29 },
        { "leap February, start on the 29th", "2028-02", "2028-02-29T18:00",
          "", 1 },
        { "common February from the 15th", "2027-02", "2027-02-15", "", 14 },
        { "30-day month from the 16th", "2026-04", "2026-04-16", "", 15 },
        { "31-day month, last hour only", "2026-01", "2026-01-31T23:00", "",
          1 },
        { "31-day month, first 16 days", "2026-01", "2025-06-01",
          "2026-01-16T08:00", 16 },
    };
    size_t i;

    for (i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        apimon_period_t p = period(t[i].period);

        is_int(apimon_active_days(&p, at(t[i].start), at(t[i].end)),
            t[i].days, "active days %s: %s", t[i].period, t[i].what);
    }
}

static void
test_round(void)
{
    static const struct {
        int64_t num, den, want;
    } t[] = {
        { 5, 2, 3 }, { 3, 2, 2 }, { 1, 2, 1 }, { 1, 3, 0 }, { 2, 3, 1 },
        { 0, 7, 0 }, { 14, 28, 1 }, { 13, 28, 0 }, { 15, 28, 1 },
        { 29000, 28, 1036 }, { 42, 28, 2 },
        { -5, 2, -2 }, { -7, 2, -3 }, { 5, -2, -2 },
        { 10, 0, 0 },
        { INT64_MAX, 2, INT64_MAX / 2 + 1 },
        { INT64_MAX, INT64_MAX, 1 },
    };
    size_t i;

    for (i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        is_int(apimon_round_half_up(t[i].num, t[i].den), t[i].want,
            "round_half_up(%lld, %lld)", (long long) t[i].num,
            (long long) t[i].den);
    }
}

/* ---- models ------------------------------------------------------------- */

#define TIERS3 { { 1000, 0, 0 }, { 10000, 5, 1000 }, { -1, 2, 0 } }

static const apimon_pricing_t FREE = { .model = APIMON_MODEL_FREE };
static const apimon_pricing_t FLAT = { .model = APIMON_MODEL_FLAT,
    .currency = "usd", .amount = 2900 };
static const apimon_pricing_t FLAT1 = { .model = APIMON_MODEL_FLAT,
    .currency = "usd", .amount = 1 };
static const apimon_pricing_t FLAT3 = { .model = APIMON_MODEL_FLAT,
    .currency = "usd", .amount = 3 };
static const apimon_pricing_t FLAT1000 = { .model = APIMON_MODEL_FLAT,
    .currency = "usd", .amount = 1000 };
static const apimon_pricing_t FLAT13 = { .model = APIMON_MODEL_FLAT,
    .currency = "usd", .amount = 13 };
static const apimon_pricing_t FLAT15 = { .model = APIMON_MODEL_FLAT,
    .currency = "usd", .amount = 15 };
static const apimon_pricing_t MET_UP = { .model = APIMON_MODEL_METERED,
    .currency = "usd", .unit_amount = 50, .unit_size = 1000, .round_up = 1 };
static const apimon_pricing_t MET_DOWN = { .model = APIMON_MODEL_METERED,
    .currency = "usd", .unit_amount = 50, .unit_size = 1000, .round_up = 0 };
static const apimon_pricing_t MET_CALL = { .model = APIMON_MODEL_METERED,
    .currency = "jpy", .unit_amount = 2, .unit_size = 1, .round_up = 1 };
static const apimon_pricing_t FWO = {
    .model = APIMON_MODEL_FLAT_WITH_OVERAGE, .currency = "usd",
    .amount = 9900, .included_units = 100, .unit_amount = 50,
    .unit_size = 1000, .round_up = 1 };
static const apimon_pricing_t GRAD = { .model = APIMON_MODEL_GRADUATED,
    .currency = "usd", .unit_size = 1, .round_up = 1, .tiers = TIERS3,
    .ntiers = 3 };
static const apimon_pricing_t VOL = { .model = APIMON_MODEL_VOLUME,
    .currency = "usd", .unit_size = 1, .round_up = 1, .tiers = TIERS3,
    .ntiers = 3 };
static const apimon_pricing_t GOLD = { .model = APIMON_MODEL_GRADUATED,
    .currency = "usd", .unit_size = 1000, .round_up = 1,
    .tiers = { { 1000, 40, 5000 }, { 10000, 25, 0 }, { -1, 10, 0 } },
    .ntiers = 3 };
static const apimon_pricing_t ONE_TIER = { .model = APIMON_MODEL_VOLUME,
    .currency = "usd", .unit_size = 100, .round_up = 0,
    .tiers = { { -1, 7, 300 } }, .ntiers = 1 };
static const apimon_pricing_t PKG = { .model = APIMON_MODEL_PACKAGE,
    .currency = "eur", .amount = 2000, .package_size = 50000 };

typedef struct {
    const char *id;
    int64_t     qty, amount;
} want_line_t;

static const struct {
    const char             *what;
    const apimon_pricing_t *pr;
    const char             *period, *start, *end;
    int64_t                 calls;
    int                     n;
    want_line_t             l[2];
} cases[] = {
    { "free bills nothing", &FREE, "2026-02", "2026-01-01", "", 999999, 0,
      { { NULL, 0, 0 } } },

    /* flat and pro-rating */
    { "flat, whole month", &FLAT, "2026-02", "2025-01-01", "", 5, 1,
      { { "fee", 28, 2900 } } },
    { "flat, start inside: 2900*10/28=1035.71", &FLAT, "2026-02",
      "2026-02-19T09:00", "", 0, 1, { { "fee", 10, 1036 } } },
    { "flat, end inside", &FLAT, "2026-02", "2025-01-01", "2026-02-10T12:00",
      0, 1, { { "fee", 10, 1036 } } },
    { "flat, start and end inside: 3 days", &FLAT, "2026-02",
      "2026-02-05T10:00", "2026-02-07T09:00", 0, 1,
      { { "fee", 3, 311 } } },              /* 310.71 */
    { "flat, one-day subscription: 103.57", &FLAT, "2026-02",
      "2026-02-05T10:00", "2026-02-05T11:00", 0, 1, { { "fee", 1, 104 } } },
    { "flat, not active in the period", &FLAT, "2026-02", "2026-03-02", "",
      0, 1, { { "fee", 0, 0 } } },
    { "flat, leap February from the 29th: 2900/29", &FLAT, "2028-02",
      "2028-02-29", "", 0, 1, { { "fee", 1, 100 } } },
    { "flat, common February, 14 days: exactly half", &FLAT, "2027-02",
      "2027-02-15", "", 0, 1, { { "fee", 14, 1450 } } },
    { "flat, 30-day month, 15 days", &FLAT1000, "2026-04", "2026-04-16", "",
      0, 1, { { "fee", 15, 500 } } },
    { "flat, 31-day month, 16 days: 516.13", &FLAT1000, "2026-01",
      "2026-01-16", "", 0, 1, { { "fee", 16, 516 } } },
    { "flat, 31-day month, 1 day: 32.26", &FLAT1000, "2026-01",
      "2026-01-31T23:00", "", 0, 1, { { "fee", 1, 32 } } },
    { "half a cent rounds up: 1 * 14/28", &FLAT1, "2026-02", "2026-02-15",
      "", 0, 1, { { "fee", 14, 1 } } },
    { "half a cent rounds up: 3 * 14/28 = 1.5", &FLAT3, "2026-02",
      "2026-02-15", "", 0, 1, { { "fee", 14, 2 } } },
    { "half a cent rounds up: 1 * 15/30", &FLAT1, "2026-04", "2026-04-16",
      "", 0, 1, { { "fee", 15, 1 } } },
    { "below half rounds down: 13/28", &FLAT13, "2026-02", "2026-02-28", "",
      0, 1, { { "fee", 1, 0 } } },
    { "above half rounds up: 15/28", &FLAT15, "2026-02", "2026-02-28", "",
      0, 1, { { "fee", 1, 1 } } },

    /* metered */
    { "metered up: 12,345 calls = 13 units", &MET_UP, "2026-02",
      "2025-01-01", "", 12345, 1, { { "usage", 13, 650 } } },
    { "metered down: 12,345 calls = 12 units", &MET_DOWN, "2026-02",
      "2025-01-01", "", 12345, 1, { { "usage", 12, 600 } } },
    { "metered up: exactly one unit", &MET_UP, "2026-02", "2025-01-01", "",
      1000, 1, { { "usage", 1, 50 } } },
    { "metered up: one call over a unit", &MET_UP, "2026-02", "2025-01-01",
      "", 1001, 1, { { "usage", 2, 100 } } },
    { "metered down: under one unit is free", &MET_DOWN, "2026-02",
      "2025-01-01", "", 999, 1, { { "usage", 0, 0 } } },
    { "metered: zero usage", &MET_UP, "2026-02", "2025-01-01", "", 0, 1,
      { { "usage", 0, 0 } } },
    { "metered: not pro-rated", &MET_CALL, "2026-02", "2026-02-27", "",
      12345, 1, { { "usage", 12345, 24690 } } },

    /* flat with overage */
    { "overage: whole month, 50 units over", &FWO, "2026-02", "2025-01-01",
      "", 150000, 2, { { "fee", 28, 9900 }, { "overage", 50, 2500 } } },
    { "overage: usage exactly the included units", &FWO, "2026-02",
      "2025-01-01", "", 100000, 2, { { "fee", 28, 9900 },
      { "overage", 0, 0 } } },
    { "overage: one call over rounds to one unit", &FWO, "2026-02",
      "2025-01-01", "", 100001, 2, { { "fee", 28, 9900 },
      { "overage", 1, 50 } } },
    { "overage: fee pro-rated, included units not", &FWO, "2026-02",
      "2026-02-19", "", 100000, 2, { { "fee", 10, 3536 },
      { "overage", 0, 0 } } },
    { "overage: zero usage", &FWO, "2026-04", "2026-04-30", "", 0, 2,
      { { "fee", 1, 330 }, { "overage", 0, 0 } } },

    /* graduated: 0-1000 free, 1001-10000 at 5 (+10.00 once), then 2 */
    { "graduated: zero usage", &GRAD, "2026-02", "2025-01-01", "", 0, 1,
      { { "usage", 0, 0 } } },
    { "graduated: on the first edge", &GRAD, "2026-02", "2025-01-01", "",
      1000, 1, { { "usage", 1000, 0 } } },
    { "graduated: one over the first edge", &GRAD, "2026-02", "2025-01-01",
      "", 1001, 1, { { "usage", 1001, 1005 } } },
    { "graduated: on the second edge", &GRAD, "2026-02", "2025-01-01", "",
      10000, 1, { { "usage", 10000, 46000 } } },
    { "graduated: one over the second edge", &GRAD, "2026-02", "2025-01-01",
      "", 10001, 1, { { "usage", 10001, 46002 } } },
    { "graduated: 12,345", &GRAD, "2026-02", "2025-01-01", "", 12345, 1,
      { { "usage", 12345, 50690 } } },

    /* volume on the same tiers */
    { "volume: zero usage", &VOL, "2026-02", "2025-01-01", "", 0, 1,
      { { "usage", 0, 0 } } },
    { "volume: on the first edge", &VOL, "2026-02", "2025-01-01", "", 1000,
      1, { { "usage", 1000, 0 } } },
    { "volume: one over the first edge", &VOL, "2026-02", "2025-01-01", "",
      1001, 1, { { "usage", 1001, 6005 } } },
    { "volume: on the second edge", &VOL, "2026-02", "2025-01-01", "", 10000,
      1, { { "usage", 10000, 51000 } } },
    { "volume: one over the second edge", &VOL, "2026-02", "2025-01-01", "",
      10001, 1, { { "usage", 10001, 20002 } } },
    { "volume: 12,345", &VOL, "2026-02", "2025-01-01", "", 12345, 1,
      { { "usage", 12345, 24690 } } },
    { "volume: one open tier, flat once, units down", &ONE_TIER, "2026-02",
      "2025-01-01", "", 1099, 1, { { "usage", 10, 370 } } },

    /* graduated with units and a first-tier flat fee */
    { "gold: one call is one unit and the platform fee", &GOLD, "2026-02",
      "2025-01-01", "", 1, 1, { { "usage", 1, 5040 } } },
    { "gold: 12,345,678 calls", &GOLD, "2026-02", "2025-01-01", "",
      12345678, 1, { { "usage", 12346, 40000 + 5000 + 225000 + 23460 } } },
    { "gold: zero usage, no fee", &GOLD, "2026-02", "2025-01-01", "", 0, 1,
      { { "usage", 0, 0 } } },

    /* package */
    { "package: zero usage bills one package", &PKG, "2026-02", "2025-01-01",
      "", 0, 1, { { "usage", 1, 2000 } } },
    { "package: one call, one package", &PKG, "2026-02", "2025-01-01", "", 1,
      1, { { "usage", 1, 2000 } } },
    { "package: exactly one package", &PKG, "2026-02", "2025-01-01", "",
      50000, 1, { { "usage", 1, 2000 } } },
    { "package: not live in the period, no usage: nothing", &PKG,
      "2026-02", "2026-03-05", "", 0, 1, { { "usage", 0, 0 } } },
    { "package: one call over", &PKG, "2026-02", "2025-01-01", "", 50001, 1,
      { { "usage", 2, 4000 } } },
};

static void
test_models(void)
{
    apimon_line_t  lines[APIMON_MAX_LINES];
    size_t         i;
    int            j;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        apimon_period_t  p = period(cases[i].period);
        int              n, good;

        memset(lines, 0x55, sizeof(lines));
        n = apimon_price(cases[i].pr, &p, at(cases[i].start),
            at(cases[i].end), cases[i].calls, "Test", lines,
            APIMON_MAX_LINES);
        good = n == cases[i].n;
        for (j = 0; good && j < n; j++) {
            good = strcmp(lines[j].id, cases[i].l[j].id) == 0
                && lines[j].quantity == cases[i].l[j].qty
                && lines[j].amount == cases[i].l[j].amount;
        }
        if (!ok(good, "%s", cases[i].what)) {
            diag("n=%d want %d", n, cases[i].n);
            for (j = 0; j < n; j++) {
                diag("%s qty %lld amount %lld [%s]", lines[j].id,
                    (long long) lines[j].quantity,
                    (long long) lines[j].amount, lines[j].description);
            }
        }
    }
}

/* ---- descriptions ------------------------------------------------------- */

static int
printable(const char *s)
{
    for (; *s; s++) {
        if ((unsigned char) *s < 0x20 || (unsigned char) *s > 0x7e) {
            return 0;
        }
    }
    return 1;
}

static void
test_descriptions(void)
{
    static const struct {
        const apimon_pricing_t *pr;
        const char             *start;
        int64_t                 calls;
        int                     line;
        const char             *want;
    } t[] = {
        { &FLAT, "2026-02-19", 0, 0,
          "Gold (weather-gold) 2026-02: 10 of 28 days" },
        { &MET_UP, "2025-01-01", 12345, 0, "Gold (weather-gold) 2026-02: "
          "12,345 calls = 13 units of 1,000 x 0.50 usd" },
        { &MET_CALL, "2025-01-01", 1234567, 0, "Gold (weather-gold) 2026-02: "
          "1,234,567 calls x 2 jpy" },
        { &FWO, "2025-01-01", 150000, 1, "Gold (weather-gold) 2026-02: "
          "150,000 calls = 150 units of 1,000, 100 included, 50 over "
          "x 0.50 usd" },
        { &GRAD, "2025-01-01", 12345, 0, "Gold (weather-gold) 2026-02: "
          "12,345 calls, graduated: 1,000 x 0.00 usd + 9,000 x 0.05 usd "
          "+ 10.00 usd flat + 2,345 x 0.02 usd" },
        { &VOL, "2025-01-01", 1001, 0, "Gold (weather-gold) 2026-02: "
          "1,001 calls, volume tier 2: 1,001 x 0.05 usd + 10.00 usd flat" },
        { &GOLD, "2025-01-01", 1, 0, "Gold (weather-gold) 2026-02: "
          "1 call = 1 unit of 1,000, graduated: 1 x 0.40 usd + 50.00 usd "
          "flat" },
        { &PKG, "2025-01-01", 0, 0, "Gold (weather-gold) 2026-02: "
          "0 calls = 1 package of 50,000 x 20.00 eur" },
        { &PKG, "2025-01-01", 50001, 0, "Gold (weather-gold) 2026-02: "
          "50,001 calls = 2 packages of 50,000 x 20.00 eur" },
    };
    apimon_period_t  p = period("2026-02");
    apimon_line_t    l[APIMON_MAX_LINES];
    char             label[400];
    size_t           i;
    int              n;

    for (i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        n = apimon_price(t[i].pr, &p, at(t[i].start), 0, t[i].calls,
            "Gold (weather-gold)", l, APIMON_MAX_LINES);
        is_str(n > t[i].line ? l[t[i].line].description : "", t[i].want,
            "description %zu (%s)", i, apimon_model_name(t[i].pr->model));
    }

    memset(label, 'x', sizeof(label) - 1);
    label[sizeof(label) - 1] = '\0';
    n = apimon_price(&FWO, &p, at("2025-01-01"), 0, 150000, label, l, 4);
    ok(n == 2 && strlen(l[1].description) <= 199
       && strstr(l[1].description, "50 over x 0.50 usd") != NULL,
       "a long label is cut, the counted part survives (%zu chars)",
       strlen(l[1].description));
    n = apimon_price(&FLAT, &p, at("2025-01-01"), 0, 0,
        "Gold \xe2\x98\x80\n(weather-gold)", l, 4);
    ok(n == 1 && printable(l[0].description),
        "non-ASCII and control characters are replaced: %s",
        l[0].description);
    n = apimon_price(&FLAT, &p, at("2025-01-01"), 0, 0, NULL, l, 4);
    is_str(l[0].description, "2026-02: 28 of 28 days", "no label");
}

/* ---- guards ------------------------------------------------------------- */

static void
test_guards(void)
{
    static const struct {
        const char      *what;
        apimon_pricing_t pr;
        const char      *err;
    } bad[] = {
        { "unknown model", { .model = 99, .currency = "usd" },
          "model: unknown model" },
        { "currency upper case", { .model = APIMON_MODEL_FLAT,
          .currency = "USD", .amount = 1 }, "currency: must be 3 lowercase" },
        { "currency missing", { .model = APIMON_MODEL_FLAT, .amount = 1 },
          "currency: must be 3 lowercase" },
        { "negative amount", { .model = APIMON_MODEL_FLAT, .currency = "usd",
          .amount = -1 }, "amount: must be >= 0" },
        { "amount 10^12", { .model = APIMON_MODEL_FLAT, .currency = "usd",
          .amount = APIMON_MAX_AMOUNT }, "amount: must be less than 10^12" },
        { "unit size 0", { .model = APIMON_MODEL_METERED, .currency = "usd",
          .unit_amount = 1 }, "unitSize: must be >= 1" },
        { "rounding 2", { .model = APIMON_MODEL_METERED, .currency = "usd",
          .unit_amount = 1, .unit_size = 1, .round_up = 2 }, "rounding:" },
        { "negative included units", {
          .model = APIMON_MODEL_FLAT_WITH_OVERAGE, .currency = "usd",
          .unit_size = 1, .included_units = -1 }, "includedUnits: must be" },
        { "package size 0", { .model = APIMON_MODEL_PACKAGE,
          .currency = "usd", .amount = 5 }, "packageSize: must be >= 1" },
        { "no tiers", { .model = APIMON_MODEL_GRADUATED, .currency = "usd",
          .unit_size = 1 }, "tiers: must have at least one tier" },
        { "tiers not ascending", { .model = APIMON_MODEL_VOLUME,
          .currency = "usd", .unit_size = 1, .ntiers = 3,
          .tiers = { { 1000, 1, 0 }, { 1000, 1, 0 }, { -1, 1, 0 } } },
          "tiers[1].upTo: must be greater than 1000" },
        { "open tier in the middle", { .model = APIMON_MODEL_GRADUATED,
          .currency = "usd", .unit_size = 1, .ntiers = 2,
          .tiers = { { -1, 1, 0 }, { -1, 1, 0 } } },
          "tiers[0].upTo: only the last tier may be open" },
        { "last tier bounded", { .model = APIMON_MODEL_GRADUATED,
          .currency = "usd", .unit_size = 1, .ntiers = 2,
          .tiers = { { 10, 1, 0 }, { 20, 1, 0 } } },
          "tiers[1].upTo: the last tier must be open" },
        { "first bound 0", { .model = APIMON_MODEL_GRADUATED,
          .currency = "usd", .unit_size = 1, .ntiers = 2,
          .tiers = { { 0, 1, 0 }, { -1, 1, 0 } } },
          "tiers[0].upTo: must be >= 1" },
        { "negative flat amount", { .model = APIMON_MODEL_GRADUATED,
          .currency = "usd", .unit_size = 1, .ntiers = 1,
          .tiers = { { -1, 1, -3 } } }, "tiers[0].flatAmount: must be >= 0" },
        { "too many tiers", { .model = APIMON_MODEL_GRADUATED,
          .currency = "usd", .unit_size = 1, .ntiers = APIMON_MAX_TIERS + 1 },
          "tiers: at most 16 tiers" },
    };
    static const apimon_pricing_t HUGE_UNIT = { .model = APIMON_MODEL_METERED,
        .currency = "usd", .unit_amount = APIMON_MAX_AMOUNT - 1,
        .unit_size = 1, .round_up = 1 };
    static const apimon_pricing_t HUGE_PKG = { .model = APIMON_MODEL_PACKAGE,
        .currency = "usd", .amount = APIMON_MAX_AMOUNT - 1,
        .package_size = 1 };
    static const apimon_pricing_t HUGE_TIER = {
        .model = APIMON_MODEL_GRADUATED, .currency = "usd", .unit_size = 1,
        .ntiers = 2, .tiers = { { 1, 0, APIMON_MAX_AMOUNT - 1 },
        { -1, APIMON_MAX_AMOUNT - 1, APIMON_MAX_AMOUNT - 1 } } };
    static const apimon_pricing_t BIG_OK = { .model = APIMON_MODEL_METERED,
        .currency = "usd", .unit_amount = APIMON_MAX_AMOUNT - 1,
        .unit_size = APIMON_MAX_AMOUNT - 1, .round_up = 1 };
    apimon_period_t  p = period("2026-02"), weird = p;
    apimon_line_t    l[APIMON_MAX_LINES];
    char             err[256];
    size_t           i;
    int64_t          t0 = at("2025-01-01");

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        is_int(apimon_price(&bad[i].pr, &p, t0, 0, 10, "x", l, 4), -1,
            "inconsistent pricing refused: %s", bad[i].what);
        is_int(apimon_pricing_check(&bad[i].pr, err, sizeof(err)), -1,
            "pricing_check refuses: %s", bad[i].what);
        like(err, bad[i].err, "message names the field: %s", bad[i].what);
    }
    is_int(apimon_pricing_check(&GOLD, err, sizeof(err)), 0,
        "pricing_check accepts gold");

    is_int(apimon_price(&MET_UP, &p, t0, 0, -1, "x", l, 4), -1,
        "negative calls refused");
    is_int(apimon_price(&MET_UP, &p, t0, 0, APIMON_MAX_CALLS + 1, "x", l, 4),
        -1, "calls above 10^15 refused");
    is_int(apimon_price(&MET_UP, &p, t0, 0, APIMON_MAX_CALLS, "x", l, 4), 1,
        "calls at 10^15 priced");
    is_int(l[0].amount, 50 * (APIMON_MAX_CALLS / 1000),
        "10^15 calls at 0.50 per 1,000");
    is_int(apimon_price(&HUGE_UNIT, &p, t0, 0, APIMON_MAX_CALLS, "x", l, 4),
        -1, "metered product overflowing int64 refused");
    is_int(apimon_price(&HUGE_PKG, &p, t0, 0, APIMON_MAX_CALLS, "x", l, 4),
        -1, "package product overflowing int64 refused");
    is_int(apimon_price(&HUGE_TIER, &p, t0, 0, APIMON_MAX_CALLS, "x", l, 4),
        -1, "graduated sum overflowing int64 refused");
    is_int(apimon_price(&BIG_OK, &p, t0, 0, APIMON_MAX_CALLS, "x", l, 4), 1,
        "largest prices with largest units still fit");
    is_int(l[0].amount, 1001 * (APIMON_MAX_AMOUNT - 1),
        "... 1,001 units of the largest price");
    is_int(apimon_price(&FWO, &p, t0, 0, 1, "x", l, 1), -1,
        "too few lines for flat_with_overage refused");
    is_int(apimon_price(&FREE, &p, t0, 0, 1, "x", NULL, 0), 0,
        "free needs no line buffer");
    weird.days = 40;
    is_int(apimon_price(&FLAT, &weird, t0, 0, 1, "x", l, 4), -1,
        "a period that is no month refused");
    is_int(apimon_price(NULL, &p, t0, 0, 1, "x", l, 4), -1, "NULL pricing");
}

static void
test_names(void)
{
    static const struct {
        int64_t     minor;
        const char *cur, *want;
    } t[] = {
        { 1234, "usd", "12.34 usd" }, { 5, "usd", "0.05 usd" },
        { 50, "jpy", "50 jpy" }, { 1234, "kwd", "1.234 kwd" },
        { -150, "eur", "-1.50 eur" }, { 0, "usd", "0.00 usd" },
        { 999999999999LL, "usd", "9999999999.99 usd" },
    };
    apimon_model_e  m;
    char            buf[64];
    size_t          i;
    int             k, round = 1;

    for (i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        apimon_format_amount(t[i].minor, t[i].cur, buf, sizeof(buf));
        is_str(buf, t[i].want, "format_amount(%lld, %s)",
            (long long) t[i].minor, t[i].cur);
    }
    for (k = APIMON_MODEL_FREE; k <= APIMON_MODEL_PACKAGE; k++) {
        round = round && apimon_model_parse(apimon_model_name(k), &m) == 0
            && (int) m == k;
    }
    ok(round, "model names round-trip");
    ok(apimon_model(APIMON_MODEL_PACKAGE) != NULL
       && apimon_model((apimon_model_e) (APIMON_MODEL_PACKAGE + 1)) == NULL,
       "a row per model, none past the last");
    is_int(apimon_model_parse("tiered", &m), -1, "unknown model name");
    is_str(apimon_model_name(APIMON_MODEL_FLAT_WITH_OVERAGE),
        "flat_with_overage", "model name");
}

int
main(void)
{
    test_period_parse();
    test_period_of();
    test_active_days();
    test_round();
    test_models();
    test_descriptions();
    test_guards();
    test_names();
    return tap_done();
}
