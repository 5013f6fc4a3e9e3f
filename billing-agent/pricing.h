/*
 * Pricing: pure functions, no I/O.  Money is int64_t minor units; the one
 * rounding rule is half-up per line (see schema/README.md).
 */

#ifndef APIMON_PRICING_H
#define APIMON_PRICING_H

#include <stddef.h>
#include <stdint.h>

#define APIMON_MAX_TIERS   16
#define APIMON_MAX_LINES   4

/* every integer of a catalog's pricing (amounts in minor units, sizes,
 * included units, tier bounds) is below this: 10^12 keeps them exact through
 * Redis' cjson, which prints numbers with 14 significant digits */
#define APIMON_MAX_AMOUNT  1000000000000LL         /* 10^12 */
/* apimon_price refuses more calls than this in one period as absurd */
#define APIMON_MAX_CALLS   1000000000000000LL      /* 10^15 */

typedef enum {
    APIMON_MODEL_FREE = 0,
    APIMON_MODEL_FLAT,
    APIMON_MODEL_METERED,
    APIMON_MODEL_FLAT_WITH_OVERAGE,
    APIMON_MODEL_GRADUATED,
    APIMON_MODEL_VOLUME,
    APIMON_MODEL_PACKAGE
} apimon_model_e;

typedef struct {
    int64_t        up_to;          /* units; -1 = no upper bound */
    int64_t        unit_amount;
    int64_t        flat_amount;
} apimon_tier_t;

typedef struct {
    apimon_model_e model;
    char           currency[4];    /* lowercase ISO 4217, "" for free */
    int64_t        amount;         /* flat fee, or price of one package */
    int64_t        unit_amount;
    int64_t        unit_size;      /* calls per unit, >= 1 */
    int            round_up;       /* partial units: 1 up, 0 down */
    int64_t        included_units;
    int64_t        package_size;
    apimon_tier_t  tiers[APIMON_MAX_TIERS];
    size_t         ntiers;
} apimon_pricing_t;

/* a closed UTC calendar month: [start_ms, end_ms) */
typedef struct {
    int            year;
    int            month;          /* 1..12 */
    int64_t        start_ms;
    int64_t        end_ms;
    int            days;
} apimon_period_t;

typedef struct {
    char           id[16];         /* "fee", "usage", "overage" */
    int64_t        quantity;       /* days for a fee, units or calls else */
    int64_t        amount;         /* minor units */
    char           description[200];
} apimon_line_t;

/* days from 1970-01-01 to y-m-d (UTC, proleptic Gregorian): the agent's
 * one calendar, behind every period and usage day */
int64_t apimon_days_from_civil(int64_t y, int m, int d);

/* "2026-02" → period; -1 on a malformed or impossible month */
int apimon_period_parse(const char *text, apimon_period_t *p);
/* the month that contains t_ms */
void apimon_period_of(int64_t t_ms, apimon_period_t *p);
/* the month before p */
void apimon_period_prev(const apimon_period_t *p, apimon_period_t *prev);

/* UTC days of [start_ms, end_ms) (end 0 = open) that fall in the period,
 * counting a partial first and last day */
int apimon_active_days(const apimon_period_t *p, int64_t start_ms,
    int64_t end_ms);

/* num / den rounded to the nearest integer, exact halves up (toward +inf):
 * floor(num / den + 1/2).  A negative den flips both signs; den 0 gives 0 */
int64_t apimon_round_half_up(int64_t num, int64_t den);

/*
 * The lines of one subscription for one period: calls are the accepted calls
 * billable in the period.  Returns the number of lines written (lines with
 * amount 0 are still returned, the caller decides), or -1 if the pricing is
 * inconsistent.  description names the plan's model and quantity.
 *
 * Details (docs/pricing.md has worked examples):
 * - lines by model: free none; flat `fee`; metered, graduated, volume and
 *   package `usage`; flat_with_overage `fee` then `overage`.  nlines of
 *   APIMON_MAX_LINES is always enough.
 * - `fee`: quantity = active days (apimon_active_days), amount =
 *   round_half_up(amount * days / p->days), never above amount.
 * - units = calls / unitSize, a partial unit up or down (round_up); usage
 *   quantity is units (packages for package), overage quantity the units
 *   above included_units.  Zero units cost nothing in every model, tier flat
 *   amounts included; package bills at least one package when the
 *   subscription was active on at least one day of the period.
 * - plan_name is the label that starts each description, e.g.
 *   "Gold (weather-gold)" → "Gold (weather-gold) 2026-02: 10 of 28 days";
 *   NULL for none.  Descriptions are printable ASCII (others become '?'),
 *   at most 199 characters; a long label is cut before the counted part.
 * - -1 also when calls < 0 or > APIMON_MAX_CALLS, when an amount would
 *   overflow int64_t, when nlines is too small, or p is not a month.
 */
int apimon_price(const apimon_pricing_t *pricing, const apimon_period_t *p,
    int64_t start_ms, int64_t end_ms, int64_t calls, const char *plan_name,
    apimon_line_t *lines, size_t nlines);

/*
 * Additions beyond the pinned interface above.
 */

/* the pricing fields a model takes beside model and currency (catalog.c
 * spells them as the catalog does) */
#define APIMON_USES_AMOUNT       0x01    /* amount, required */
#define APIMON_USES_INCLUDED     0x02    /* includedUnits, required */
#define APIMON_USES_UNIT_AMOUNT  0x04    /* unitAmount, required */
#define APIMON_USES_TIERS        0x08    /* tiers, required */
#define APIMON_USES_UNITS        0x10    /* unitSize and rounding, optional */
#define APIMON_USES_PACKAGE      0x20    /* packageSize, required */

typedef struct apimon_price_ctx_s  apimon_price_ctx_t;

/*
 * One row per pricing model (pricing.c): adding a model is its enum name,
 * its row and its pricing function; the catalog reads and checks the
 * fields its row names, and pricing writes the lines its function emits.
 */
typedef struct {
    const char    *name;           /* the catalog's "model" */
    unsigned       uses;           /* APIMON_USES_* */
    size_t         nlines;         /* the lines it writes */
    int          (*price)(apimon_price_ctx_t *c);    /* NULL: no lines */
} apimon_model_t;

/* the row of m, NULL past the last model */
const apimon_model_t *apimon_model(apimon_model_e m);

/* "flat" ... "package" for a model, "?" if out of range */
const char *apimon_model_name(apimon_model_e m);
/* the catalog's model name → enum; -1 if unknown */
int apimon_model_parse(const char *name, apimon_model_e *m);

/*
 * 0 if the pricing is consistent, else -1 with "field: reason" in err, the
 * field named as in the catalog's pricing object ("tiers[1].upTo: must be
 * greater than 1000"), so the catalog prefixes "plans[N].pricing.".  This is
 * the check apimon_price applies before it prices anything.
 */
int apimon_pricing_check(const apimon_pricing_t *pricing, char *err,
    size_t errlen);

/* one month of a subscription's accepted calls, split by its term */
typedef struct {
    int64_t        calls;          /* on days it was in effect: billed */
    int64_t        unbilled;       /* on days wholly outside: reported */
} apimon_usage_t;

/*
 * The usage rule: adds one field of a month's usage hash to u.  Only
 * "<YYYYMMDD>|<api>|ok" fields count (accepted calls; schema/README.md);
 * refusals by reason and unreadable fields or counts are skipped.  A day
 * counts as billed when the subscription [start_ms, end_ms) (end 0 = open)
 * was in effect for some of it: calls on a day wholly after the end or
 * before the start are unbilled.
 */
void apimon_usage_add(apimon_usage_t *u, int64_t start_ms, int64_t end_ms,
    const char *field, size_t flen, const char *count, size_t clen);

/* "2026-02" into buf (at least 8 bytes) */
void apimon_period_format(const apimon_period_t *p, char *buf, size_t len);

/*
 * apimon_price, and on -1 the reason in err ("pricing.amount: ...", "... calls
 * in one period: more than 10^15 ...", "an amount does not fit ..."), for
 * the report and the log.  err may be NULL.
 */
#define APIMON_PRICE_ERRLEN  256
int apimon_price_why(const apimon_pricing_t *pricing,
    const apimon_period_t *p, int64_t start_ms, int64_t end_ms,
    int64_t calls, const char *plan_name, apimon_line_t *lines,
    size_t nlines, char *err, size_t errlen);

/*
 * The step Stripe requires of every amount in a currency, in minor units:
 * 10 for the three-decimal currencies (bhd, jod, kwd, omr, tnd: the last
 * digit must be 0), 100 for isk and ugx (whole units, written with two
 * decimals that must be 00), 1 for every other currency.  Prices must be
 * whole steps; pro-rated fees are rounded to the nearest step.
 */
int64_t apimon_currency_step(const char *currency);

/* digits after the decimal point of a currency: 0 jpy, 3 kwd, 2 usd ... */
int apimon_currency_exponent(const char *currency);
/* 1234 usd → "12.34 usd", 50 jpy → "50 jpy" (ASCII, always terminated) */
void apimon_format_amount(int64_t minor, const char *currency, char *buf,
    size_t len);

/*
 * Price versions and suspensions (docs/pricing.md, "Price changes" and
 * "Suspended subscriptions").
 */

/* one version of a plan's prices, in force from from_ms on (the first is
 * in force before its from_ms too) */
typedef struct {
    int64_t           from_ms;
    apimon_pricing_t  pr;
} apimon_version_t;

/* [start_ms, end_ms) */
typedef struct {
    int64_t           start_ms;
    int64_t           end_ms;
} apimon_span_t;

#define APIMON_MAX_VERSIONS  64     /* in force in one period: more is
                                       refused */

/* what a subscription's period is priced with beside its usage */
typedef struct {
    const apimon_version_t *v;      /* ascending from_ms, nv >= 1 */
    size_t                  nv;
    const apimon_span_t    *paused; /* suspended spans not charged for
                                       fees (suspension pause); NULL = none */
    size_t                  npaused;
} apimon_history_t;

/*
 * apimon_price_why across the versions in force in the period: a day is
 * priced with the version in force at its start (00:00 UTC).  The fee is
 * round_half_up(sum of each version's amount x its charged days / days in
 * the month), a charged day being a day of the term not wholly inside a
 * paused span; every other line is each version's line for the whole
 * period weighted by the days of the term each was in force, rounded once.
 * With one version and no paused day it is exactly apimon_price_why.
 * A plan may have any number of versions; only those in force in the
 * period count (at most APIMON_MAX_VERSIONS).
 * Versions in different currencies within one period are refused.
 */
int apimon_price_history(const apimon_history_t *h, const apimon_period_t *p,
    int64_t start_ms, int64_t end_ms, int64_t calls, const char *plan_name,
    apimon_line_t *lines, size_t nlines, char *err, size_t errlen);

/* the version that prices the period's last day of the term [start_ms,
 * end_ms) (the latest in force in the period when none): the currency and
 * model its lines are in */
const apimon_pricing_t *apimon_history_pricing(const apimon_history_t *h,
    const apimon_period_t *p, int64_t start_ms, int64_t end_ms);

/*
 * Plan changes (docs/pricing.md, "Plan changes").  A subscription's plan
 * history is its plans in order, each from the ms it took over (the
 * first: the plan bought, from the start).  Each plan bills the days it
 * held, the day of a change going to the new plan, which is in force at its
 * end: a change at t ends the plan before it at 00:00 UTC of t's day.
 */
#define APIMON_MAX_SEGMENTS  8      /* plans of one subscription in one
                                       period: more is refused */

typedef struct {
    int64_t           from_ms;      /* the first entry's is not read */
    const char       *plan;
} apimon_plan_entry_t;

typedef struct {
    const char       *plan;
    int64_t           start_ms;
    int64_t           end_ms;       /* 0 = open */
} apimon_segment_t;

/*
 * The parts of the term [start_ms, end_ms) (end 0 = open) that the plans
 * of history h (n entries, ascending) held in period p, in order, each
 * [start, end) at most the term: a plan with no day in p has no part (nor
 * one that a later change of the same day replaced), and a plan that
 * follows itself (changed away and back within a day) is one part.  Returns the number
 * of parts written (0 when the term has no day in p), -1 when there are
 * more than max.  Each part is priced like a whole subscription
 * (apimon_price_history with its span, its calls by apimon_usage_add).
 */
int apimon_plan_segments(const apimon_plan_entry_t *h, size_t n,
    const apimon_period_t *p, int64_t start_ms, int64_t end_ms,
    apimon_segment_t *out, size_t max);

/* "2026-11-16" (00:00 UTC) or RFC 3339 "2026-11-16T10:00:00Z",
 * "...T10:00:00.5+02:00" → ms since the epoch; -1 if malformed */
int apimon_time_parse(const char *text, int64_t *ms);

#endif
