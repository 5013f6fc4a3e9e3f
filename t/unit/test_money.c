/*
 * Money rules Stripe imposes and the report keeps: the step of each special
 * currency, rounding pro-rated fees to it, refusing prices that are not a
 * whole step, the reason a subscription is not priced, and integers written
 * exactly in the JSON report.  Each table row is one case.
 */

#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pricing.h"
#include "report.h"
#include "tap.h"
#include "unit_period.h"

static apimon_pricing_t
flat(const char *currency, int64_t amount)
{
    apimon_pricing_t pr;

    memset(&pr, 0, sizeof(pr));
    pr.model = APIMON_MODEL_FLAT;
    snprintf(pr.currency, sizeof(pr.currency), "%s", currency);
    pr.amount = amount;
    pr.unit_size = 1;
    pr.round_up = 1;
    return pr;
}

static void
test_steps(void)
{
    static const struct {
        const char *cur;
        int64_t     step;
        int         exponent;
    } t[] = {
        { "bhd", 10, 3 }, { "jod", 10, 3 }, { "kwd", 10, 3 },
        { "omr", 10, 3 }, { "tnd", 10, 3 },
        { "isk", 100, 2 }, { "ugx", 100, 2 },    /* whole units, "x.00" */
        { "huf", 1, 2 }, { "twd", 1, 2 },        /* special for payouts only */
        { "usd", 1, 2 }, { "eur", 1, 2 }, { "jpy", 1, 0 }, { "krw", 1, 0 },
        { "", 1, 2 }, { "kwdx", 1, 2 },
    };
    size_t i;

    for (i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        is_int(apimon_currency_step(t[i].cur), t[i].step, "step of '%s'",
            t[i].cur);
        is_int(apimon_currency_exponent(t[i].cur), t[i].exponent,
            "exponent of '%s'", t[i].cur);
    }
    is_int(apimon_currency_step(NULL), 1, "step of NULL");
}

/* pro-rated fees land on a whole step, half up, in one rounding */
static void
test_fee_rounding(void)
{
    static const struct {
        const char *cur, *period, *start;
        int64_t     amount, want;
    } t[] = {
        /* 10.000 kwd x 21 / 31 = 6.774 19 → 6.770 */
        { "kwd", "2026-01", "2026-01-11", 10000, 6770 },
        /* 1.000 bhd x 10 / 28 = 0.357 14 → 0.360 */
        { "bhd", "2026-02", "2026-02-19", 1000, 360 },
        /* 0.010 omr x 14 / 28 = 0.005 exactly: half up → 0.010 */
        { "omr", "2027-02", "2027-02-15", 10, 10 },
        /* 0.010 tnd x 13 / 28 = 0.004 64 → 0.000 */
        { "tnd", "2027-02", "2027-02-16", 10, 0 },
        /* full month: the amount itself */
        { "jod", "2026-02", "2026-01-01", 12340, 12340 },
        /* 1,000 isk x 21 / 31 = 677.42 isk → 677 isk = 67700 */
        { "isk", "2026-01", "2026-01-11", 100000, 67700 },
        /* 5,000 ugx x 16 / 31 = 2,580.65 → 2,581 ugx */
        { "ugx", "2026-01", "2026-01-16", 500000, 258100 },
        /* two-decimal currencies are unchanged: 29.00 x 10 / 28 = 10.36 */
        { "usd", "2026-02", "2026-02-19", 2900, 1036 },
        { "huf", "2026-02", "2026-02-19", 2900, 1036 },
    };
    apimon_pricing_t  pr;
    apimon_period_t   p;
    apimon_line_t     l[APIMON_MAX_LINES];
    size_t            i;

    for (i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        int64_t  s;

        pr = flat(t[i].cur, t[i].amount);
        p = period(t[i].period);
        /* the start day's midnight, if in the period */
        s = strncmp(t[i].start, t[i].period, 7) == 0 ? at(t[i].start) : 0;
        if (!is_int(apimon_price(&pr, &p, s, 0, 0, "x", l, APIMON_MAX_LINES),
                1, "%s %lld from %s: one line", t[i].cur,
                (long long) t[i].amount, t[i].start))
        {
            continue;
        }
        is_int(l[0].amount, t[i].want, "%s %lld from %s in %s: %lld",
            t[i].cur, (long long) t[i].amount, t[i].start, t[i].period,
            (long long) t[i].want);
    }
}

/* a price Stripe would refuse is refused by the catalog check already */
static void
test_price_steps(void)
{
    static const struct {
        apimon_model_e  model;
        const char     *cur;
        int64_t         amount, unit;
        const char     *err;       /* NULL: accepted */
    } t[] = {
        { APIMON_MODEL_FLAT, "kwd", 10005, 0,
          "amount: must be a multiple of 10 in kwd" },
        { APIMON_MODEL_FLAT, "kwd", 10000, 0, NULL },
        { APIMON_MODEL_FLAT, "isk", 150050, 0,
          "amount: must be a multiple of 100 in isk" },
        { APIMON_MODEL_FLAT, "ugx", 100, 0, NULL },
        { APIMON_MODEL_METERED, "bhd", 0, 5,
          "unitAmount: must be a multiple of 10 in bhd" },
        { APIMON_MODEL_METERED, "omr", 0, 50, NULL },
        { APIMON_MODEL_PACKAGE, "tnd", 7, 0,
          "amount: must be a multiple of 10 in tnd" },
        { APIMON_MODEL_FLAT, "usd", 10005, 0, NULL },
        { APIMON_MODEL_FLAT, "huf", 10001, 0, NULL },
    };
    apimon_pricing_t  pr;
    char              err[256];
    size_t            i;
    int               rc;

    for (i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        pr = flat(t[i].cur, t[i].amount);
        pr.model = t[i].model;
        pr.unit_amount = t[i].unit;
        pr.package_size = 10;
        err[0] = '\0';
        rc = apimon_pricing_check(&pr, err, sizeof(err));
        if (t[i].err == NULL) {
            is_int(rc, 0, "%s %s %lld/%lld accepted",
                apimon_model_name(t[i].model), t[i].cur,
                (long long) t[i].amount, (long long) t[i].unit);
            continue;
        }
        is_int(rc, -1, "%s %s %lld/%lld refused",
            apimon_model_name(t[i].model), t[i].cur,
            (long long) t[i].amount, (long long) t[i].unit);
        like(err, t[i].err, "... naming the field and the step");
    }

    /* tiers: every unit and flat amount */
    pr = flat("jod", 0);
    pr.model = APIMON_MODEL_GRADUATED;
    pr.ntiers = 2;
    pr.tiers[0].up_to = 10;
    pr.tiers[0].unit_amount = 10;
    pr.tiers[0].flat_amount = 1005;
    pr.tiers[1].up_to = -1;
    pr.tiers[1].unit_amount = 20;
    is_int(apimon_pricing_check(&pr, err, sizeof(err)), -1,
        "graduated jod with a flat amount off the step refused");
    like(err, "tiers[0].flatAmount: must be a multiple of 10 in jod",
        "... naming the tier");
}

/* the reason a subscription cannot be priced */
static void
test_reasons(void)
{
    apimon_pricing_t  pr = flat("usd", 2900), met = flat("usd", 0);
    apimon_period_t   p = period("2026-01");
    apimon_line_t     l[APIMON_MAX_LINES];
    char              err[APIMON_PRICE_ERRLEN];

    met.model = APIMON_MODEL_METERED;
    met.unit_amount = 999999999999LL;

    err[0] = '\0';
    is_int(apimon_price_why(&met, &p, 0, 0, APIMON_MAX_CALLS + 1, "x", l,
        APIMON_MAX_LINES, err, sizeof(err)), -1, "calls above 10^15");
    like(err, "1000000000000001 accepted calls in one period: more than "
        "10^15", "... says how many and the limit");

    err[0] = '\0';
    is_int(apimon_price_why(&met, &p, 0, 0, 10000000, "x", l,
        APIMON_MAX_LINES, err, sizeof(err)), -1, "an overflowing line");
    like(err, "does not fit a 64-bit integer", "... says so");

    err[0] = '\0';
    pr.amount = -1;
    is_int(apimon_price_why(&pr, &p, 0, 0, 0, "x", l, APIMON_MAX_LINES, err,
        sizeof(err)), -1, "an inconsistent pricing");
    like(err, "pricing.amount: must be >= 0", "... names the field");

    is_int(apimon_price_why(&met, &p, 0, 0, 9223372, "x", l,
        APIMON_MAX_LINES, err, sizeof(err)), 1, "the largest line priced");
    is_int(l[0].amount, 9223371999990776628LL, "... exactly");
}

/* JSON report rows: integers as written, however large */
static void
test_report_json(void)
{
    static const int64_t  amounts[] = {
        0, 1, -7, 1000000000000000LL, 9007199254740993LL,
        9223371999990776628LL, INT64_MAX, INT64_MIN
    };
    report_t      rep;
    report_row_t  row;
    char          path[] = "/tmp/apimon-test-money-XXXXXX.json";
    char          err[256], line[1024], want[64];
    FILE         *f;
    size_t        i;
    int           fd;

    fd = mkstemps(path, 5);
    if (fd < 0) {
        ok(0, "temporary report file");
        return;
    }
    close(fd);
    if (!is_int(report_open(&rep, path, err, sizeof(err)), 0,
            "report_open(%s)", path))
    {
        unlink(path);
        return;
    }
    memset(&row, 0, sizeof(row));
    row.period = "2026-01";
    row.line = "usage";
    row.status = "dry_run";
    for (i = 0; i < sizeof(amounts) / sizeof(amounts[0]); i++) {
        row.amount = amounts[i];
        row.quantity = amounts[i];
        report_row(&rep, &row);
    }
    is_int(report_close(&rep), 0, "report_close");

    f = fopen(path, "r");
    for (i = 0; f && i < sizeof(amounts) / sizeof(amounts[0]); i++) {
        if (fgets(line, sizeof(line), f) == NULL) {
            ok(0, "row %zu written", i);
            continue;
        }
        snprintf(want, sizeof(want), "\"amount\":%lld,",
            (long long) amounts[i]);
        like(line, want, "JSON amount %lld exact", (long long) amounts[i]);
        snprintf(want, sizeof(want), "\"quantity\":%lld,",
            (long long) amounts[i]);
        like(line, want, "JSON quantity %lld exact", (long long) amounts[i]);
    }
    if (f) {
        fclose(f);
    }
    unlink(path);
}

int
main(void)
{
    test_steps();
    test_fee_rounding();
    test_price_steps();
    test_reasons();
    test_report_json();
    return tap_done();
}
