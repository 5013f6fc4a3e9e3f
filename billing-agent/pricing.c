/*
 * Pricing: calendar periods, pro-rating and the seven pricing models.
 * Everything is int64_t in minor units; no floating point anywhere, and
 * every multiplication or sum that could overflow is checked.
 */

#include "pricing.h"
#include "util.h"                   /* agent_parse_i64 */

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define DAY_MS      86400000LL
#define MIN_YEAR    1970
#define MAX_YEAR    9999
/* 10000-01-01T00:00:00Z: instants are clamped below it */
#define END_MS      253402300800000LL

static void say(char *buf, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---- calendar ----------------------------------------------------------- */

static int
is_leap(int64_t y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int
month_days(int64_t y, int m)
{
    static const int days[12] = {
        31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31
    };

    return days[m - 1] + (m == 2 && is_leap(y));
}

/*
 * Days from 1970-01-01 to y-m-d in the proleptic Gregorian calendar, by
 * eras of 400 years (146097 days) counted from March, so that the leap day
 * ends a year; any y, m 1..12 and d give the day number, even d past the
 * month's end (the usage fields are read so).
 */
int64_t
apimon_days_from_civil(int64_t y, int m, int d)
{
    int64_t  era, yoe, doy, doe;

    y -= m <= 2;
    era = (y >= 0 ? y : y - 399) / 400;
    yoe = y - era * 400;
    doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

/* floor division: instants before 1970 still land on the right day */
static int64_t
floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;

    return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}

static void
period_set(int y, int m, apimon_period_t *p)
{
    p->year = y;
    p->month = m;
    p->days = month_days(y, m);
    p->start_ms = apimon_days_from_civil(y, m, 1) * DAY_MS;
    p->end_ms = p->start_ms + (int64_t) p->days * DAY_MS;
}

static int
digits(const char *s, int n, int *out)
{
    int i, v = 0;

    for (i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return -1;
        }
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 0;
}

int
apimon_period_parse(const char *text, apimon_period_t *p)
{
    int y, m;

    /* exactly YYYY-MM: "2026-2" or "2026-02x" are typos, not months */
    if (text == NULL || strlen(text) != 7 || text[4] != '-'
        || digits(text, 4, &y) != 0 || digits(text + 5, 2, &m) != 0)
    {
        return -1;
    }
    if (y < MIN_YEAR || y > MAX_YEAR || m < 1 || m > 12) {
        return -1;
    }
    period_set(y, m, p);
    return 0;
}

void
apimon_period_of(int64_t t_ms, apimon_period_t *p)
{
    int64_t  z;
    int64_t  y;
    int      m = 1;

    t_ms = t_ms < 0 ? 0 : (t_ms >= END_MS ? END_MS - 1 : t_ms);
    z = t_ms / DAY_MS;
    /* z / 366 never overshoots; a handful of steps corrects it */
    y = MIN_YEAR + z / 366;
    while (apimon_days_from_civil(y + 1, 1, 1) <= z) {
        y++;
    }
    while (m < 12 && apimon_days_from_civil(y, m + 1, 1) <= z) {
        m++;
    }
    period_set((int) y, m, p);
}

void
apimon_period_prev(const apimon_period_t *p, apimon_period_t *prev)
{
    if (p->month == 1) {
        period_set(p->year - 1, 12, prev);
    } else {
        period_set(p->year, p->month - 1, prev);
    }
}

void
apimon_period_format(const apimon_period_t *p, char *buf, size_t len)
{
    if (len > 0) {
        snprintf(buf, len, "%04d-%02d", p->year % 10000, p->month % 100);
    }
}

int
apimon_active_days(const apimon_period_t *p, int64_t start_ms, int64_t end_ms)
{
    int64_t s = start_ms > p->start_ms ? start_ms : p->start_ms;
    int64_t e = (end_ms == 0 || end_ms > p->end_ms) ? p->end_ms : end_ms;

    if (e <= s) {
        return 0;
    }
    /* the day of s counts, and so does a partially covered last day; an end
     * at exactly 00:00 covers nothing of that day */
    return (int) (floor_div(e + DAY_MS - 1, DAY_MS) - floor_div(s, DAY_MS));
}

/* ---- usage ------------------------------------------------------------- */

void
apimon_usage_add(apimon_usage_t *u, int64_t start_ms, int64_t end_ms,
    const char *field, size_t flen, const char *count, size_t clen)
{
    int64_t  v, ymd, day_ms;

    if (flen < 12 || memcmp(field + flen - 3, "|ok", 3) != 0
        || agent_parse_i64(field, 8, &ymd) != 0 || field[8] != '|'
        || agent_parse_i64(count, clen, &v) != 0)
    {
        return;                 /* refusals by reason, or not a usage field */
    }
    day_ms = apimon_days_from_civil(ymd / 10000, (int) (ymd / 100 % 100),
                                    (int) (ymd % 100)) * DAY_MS;
    if ((end_ms != 0 && day_ms >= end_ms) || day_ms + DAY_MS <= start_ms) {
        u->unbilled += v;
    } else {
        u->calls += v;
    }
}

/* ---- arithmetic --------------------------------------------------------- */

int64_t
apimon_round_half_up(int64_t num, int64_t den)
{
    int64_t q, r;

    if (den == 0 || num == INT64_MIN || den == INT64_MIN) {
        return 0;
    }
    if (den < 0) {
        num = -num;
        den = -den;
    }
    /* floor(num / den + 1/2), written so that nothing overflows */
    q = floor_div(num, den);
    r = num - q * den;
    return r >= den - r ? q + 1 : q;
}

static int
mul(int64_t a, int64_t b, int64_t *out)
{
    return __builtin_mul_overflow(a, b, out) ? -1 : 0;
}

static int
add(int64_t a, int64_t b, int64_t *out)
{
    return __builtin_add_overflow(a, b, out) ? -1 : 0;
}

static int64_t
ceil_div(int64_t a, int64_t b)
{
    return a / b + (a % b != 0);
}

/* calls → billing units of unit_size calls, the partial unit up or down */
static int64_t
units_of(const apimon_pricing_t *pr, int64_t calls)
{
    return pr->round_up ? ceil_div(calls, pr->unit_size)
                        : calls / pr->unit_size;
}

/* ---- names and formatting ----------------------------------------------- */

int
apimon_currency_exponent(const char *c)
{
    /* Stripe's zero- and three-decimal currencies; all others have two.
     * UGX is zero-decimal in ISO 4217 but two-decimal in Stripe's API
     * (5 UGX is 500), like ISK: see apimon_currency_step */
    static const char zero[] =
        ",bif,clp,djf,gnf,jpy,kmf,krw,mga,pyg,rwf,vnd,vuv,xaf,xof,xpf,";
    static const char three[] = ",bhd,jod,kwd,omr,tnd,";
    char key[6];

    if (c == NULL || strlen(c) != 3) {
        return 2;
    }
    snprintf(key, sizeof(key), ",%s,", c);
    return strstr(zero, key) ? 0 : (strstr(three, key) ? 3 : 2);
}

int64_t
apimon_currency_step(const char *c)
{
    char key[6];

    if (c == NULL || strlen(c) != 3) {
        return 1;
    }
    snprintf(key, sizeof(key), ",%s,", c);
    /* Stripe: three-decimal amounts must end in 0; ISK and UGX are whole
     * units written with two decimals that must be 00 */
    if (strstr(",bhd,jod,kwd,omr,tnd,", key)) {
        return 10;
    }
    return strstr(",isk,ugx,", key) ? 100 : 1;
}

/* 1234567 → "1,234,567": finance reads call counts more easily so */
static void
fmt_count(int64_t v, char *buf, size_t len)
{
    char     raw[24], out[32];
    size_t   n, i, j = 0;
    int      neg = v < 0;

    snprintf(raw, sizeof(raw), "%lld", (long long) v);
    n = strlen(raw);
    for (i = neg; i < n; i++) {
        if (i > (size_t) neg && (n - i) % 3 == 0) {
            out[j++] = ',';
        }
        out[j++] = raw[i];
    }
    out[j] = '\0';
    say(buf, len, "%s%s", neg ? "-" : "", out);
}

void
apimon_format_amount(int64_t minor, const char *currency, char *buf,
    size_t len)
{
    int       e = apimon_currency_exponent(currency);
    int64_t   scale = e == 0 ? 1 : (e == 3 ? 1000 : 100);
    uint64_t  mag = minor < 0 ? (uint64_t) 0 - (uint64_t) minor
                              : (uint64_t) minor;
    const char *sign = minor < 0 ? "-" : "";
    const char *cur = currency && currency[0] ? currency : "";
    const char *sp = cur[0] ? " " : "";

    if (len == 0) {
        return;
    }
    if (e == 0) {
        snprintf(buf, len, "%s%llu%s%s", sign, (unsigned long long) mag, sp,
            cur);
        return;
    }
    snprintf(buf, len, "%s%llu.%0*llu%s%s", sign,
        (unsigned long long) (mag / (uint64_t) scale), e,
        (unsigned long long) (mag % (uint64_t) scale), sp, cur);
}

/* snprintf that may truncate by design: descriptions are cut, not grown */
static void
say(char *buf, size_t len, const char *fmt, ...)
{
    va_list ap;

    if (len == 0) {
        return;
    }
    va_start(ap, fmt);
    vsnprintf(buf, len, fmt, ap);
    va_end(ap);
}

/* ---- consistency -------------------------------------------------------- */

static int
fail(char *err, size_t len, const char *fmt, ...)
{
    va_list ap;

    if (err != NULL && len > 0) {
        va_start(ap, fmt);
        vsnprintf(err, len, fmt, ap);
        va_end(ap);
    }
    return -1;
}

/* a price: in range, and a whole step of its currency (Stripe refuses
 * other amounts, and every line is then a whole step too) */
static int
check_amount(const apimon_pricing_t *pr, const char *field, int64_t v,
    char *err, size_t len)
{
    int64_t step = apimon_currency_step(pr->currency);

    if (v < 0) {
        return fail(err, len, "%s: must be >= 0", field);
    }
    if (v >= APIMON_MAX_AMOUNT) {
        return fail(err, len, "%s: must be less than 10^12", field);
    }
    if (v % step != 0) {
        return fail(err, len, "%s: must be a multiple of %lld in %s "
            "(Stripe accepts no other amounts in that currency)", field,
            (long long) step, pr->currency);
    }
    return 0;
}

static int
check_size(const char *field, int64_t v, int64_t min, char *err, size_t len)
{
    if (v < min) {
        return fail(err, len, "%s: must be >= %lld", field, (long long) min);
    }
    if (v >= APIMON_MAX_AMOUNT) {
        return fail(err, len, "%s: must be less than 10^12", field);
    }
    return 0;
}

static int
currency_ok(const char *c)
{
    size_t n = strnlen(c, 4), i;

    if (n != 3) {
        return 0;
    }
    for (i = 0; i < 3; i++) {
        if (c[i] < 'a' || c[i] > 'z') {
            return 0;
        }
    }
    return 1;
}

static int
check_tier(const apimon_pricing_t *pr, size_t i, char *err, size_t len)
{
    const apimon_tier_t *t = &pr->tiers[i];
    char                 f[40];
    int                  last = i + 1 == pr->ntiers;

    snprintf(f, sizeof(f), "tiers[%zu].upTo", i);
    if (t->up_to == -1 && !last) {
        return fail(err, len, "%s: only the last tier may be open (null)", f);
    }
    if (t->up_to != -1) {
        if (last) {
            return fail(err, len, "%s: the last tier must be open (null)", f);
        }
        if (i > 0 && t->up_to <= pr->tiers[i - 1].up_to) {
            return fail(err, len, "%s: must be greater than %lld", f,
                (long long) pr->tiers[i - 1].up_to);
        }
        if (check_size(f, t->up_to, 1, err, len) != 0) {
            return -1;
        }
    }
    snprintf(f, sizeof(f), "tiers[%zu].unitAmount", i);
    if (check_amount(pr, f, t->unit_amount, err, len) != 0) {
        return -1;
    }
    snprintf(f, sizeof(f), "tiers[%zu].flatAmount", i);
    return check_amount(pr, f, t->flat_amount, err, len);
}

static int
check_tiers(const apimon_pricing_t *pr, char *err, size_t len)
{
    size_t i;

    if (pr->ntiers < 1) {
        return fail(err, len, "tiers: must have at least one tier");
    }
    if (pr->ntiers > APIMON_MAX_TIERS) {
        return fail(err, len, "tiers: at most %d tiers", APIMON_MAX_TIERS);
    }
    for (i = 0; i < pr->ntiers; i++) {
        if (check_tier(pr, i, err, len) != 0) {
            return -1;
        }
    }
    return 0;
}

/* unitSize and rounding, shared by the models that count units */
static int
check_units(const apimon_pricing_t *pr, char *err, size_t len)
{
    if (pr->round_up != 0 && pr->round_up != 1) {
        return fail(err, len, "rounding: must be \"up\" or \"down\"");
    }
    return check_size("unitSize", pr->unit_size, 1, err, len);
}

/* the fields of the model's row, in the order their errors are reported */
static int
check_model(const apimon_pricing_t *pr, char *err, size_t len)
{
    unsigned  u = apimon_model(pr->model)->uses;

    if (((u & APIMON_USES_AMOUNT)
         && check_amount(pr, "amount", pr->amount, err, len) != 0)
        || ((u & APIMON_USES_INCLUDED)
            && check_size("includedUnits", pr->included_units, 0, err, len)
               != 0)
        || ((u & APIMON_USES_UNIT_AMOUNT)
            && check_amount(pr, "unitAmount", pr->unit_amount, err, len)
               != 0)
        || ((u & APIMON_USES_TIERS) && check_tiers(pr, err, len) != 0)
        || ((u & APIMON_USES_UNITS) && check_units(pr, err, len) != 0)
        || ((u & APIMON_USES_PACKAGE)
            && check_size("packageSize", pr->package_size, 1, err, len) != 0))
    {
        return -1;
    }
    return 0;
}

int
apimon_pricing_check(const apimon_pricing_t *pr, char *err, size_t len)
{
    if (pr == NULL) {
        return fail(err, len, "pricing: missing");
    }
    if (apimon_model(pr->model) == NULL) {
        return fail(err, len, "model: unknown model");
    }
    /* free may omit the currency; every other model bills in one */
    if ((pr->model != APIMON_MODEL_FREE || pr->currency[0] != '\0')
        && !currency_ok(pr->currency))
    {
        return fail(err, len, "currency: must be 3 lowercase letters "
            "(ISO 4217)");
    }
    return check_model(pr, err, len);
}

/* ---- lines -------------------------------------------------------------- */

struct apimon_price_ctx_s {
    const apimon_pricing_t *pr;
    const apimon_period_t  *p;
    const char             *label;
    int64_t                 calls;
    int                     days;
    apimon_line_t          *lines;
    size_t                  nlines;
    size_t                  n;
};

/* the plan label as ASCII: descriptions go to Stripe and to CSV reports */
static void
ascii_copy(char *dst, size_t room, const char *src)
{
    size_t i;

    for (i = 0; room > 0 && i + 1 < room && src[i] != '\0'; i++) {
        unsigned char c = (unsigned char) src[i];

        dst[i] = (c >= 0x20 && c < 0x7f) ? (char) c : '?';
    }
    if (room > 0) {
        dst[i] = '\0';
    }
}

static int
emit(apimon_price_ctx_t *c, const char *id, int64_t qty, int64_t amount,
    const char *tail)
{
    apimon_line_t  *l;
    char            head[16];
    size_t          tl, room, hl;

    if (c->n >= c->nlines) {
        return -1;
    }
    l = &c->lines[c->n++];
    memset(l, 0, sizeof(*l));
    say(l->id, sizeof(l->id), "%s", id);
    l->quantity = qty;
    l->amount = amount;

    /* "<label> 2026-02: <tail>"; the label is cut first, the tail (what
     * was counted) survives whole whenever it fits at all */
    apimon_period_format(c->p, head, sizeof(head));
    tl = strlen(tail);
    hl = strlen(head) + 3;                       /* " ", ": " */
    room = sizeof(l->description) > tl + hl + 1
         ? sizeof(l->description) - tl - hl : 1;
    ascii_copy(l->description, room, c->label);
    hl = strlen(l->description);
    say(l->description + hl, sizeof(l->description) - hl, "%s%s: %s",
        hl ? " " : "", head, tail);
    return 0;
}

static int
fee_line(apimon_price_ctx_t *c)
{
    int64_t  fee, step = apimon_currency_step(c->pr->currency);
    char     tail[64];

    if (mul(c->pr->amount, c->days, &fee) != 0) {
        return -1;
    }
    /* to the nearest whole step of the currency, in the one rounding */
    fee = apimon_round_half_up(fee, c->p->days * step) * step;
    if (fee > c->pr->amount) {
        fee = c->pr->amount;                 /* never above the full fee */
    }
    say(tail, sizeof(tail), "%d of %d days", c->days, c->p->days);
    return emit(c, "fee", c->days, fee, tail);
}

/* "12,345 calls" or "12,345 calls = 13 units of 1,000"; what is the
 * singular noun, "unit" or "package" */
static void
units_phrase(apimon_price_ctx_t *c, int64_t units, int64_t size,
    const char *what, char *buf, size_t len)
{
    char calls[32], n[32], sz[32];

    fmt_count(c->calls, calls, sizeof(calls));
    if (size == 1 && strcmp(what, "unit") == 0) {
        say(buf, len, "%s call%s", calls, c->calls == 1 ? "" : "s");
        return;
    }
    fmt_count(units, n, sizeof(n));
    fmt_count(size, sz, sizeof(sz));
    say(buf, len, "%s call%s = %s %s%s of %s", calls,
        c->calls == 1 ? "" : "s", n, what, units == 1 ? "" : "s", sz);
}

static int
metered_line(apimon_price_ctx_t *c)
{
    int64_t  units = units_of(c->pr, c->calls), amount;
    char     up[96], price[40], tail[160];

    if (mul(units, c->pr->unit_amount, &amount) != 0) {
        return -1;
    }
    units_phrase(c, units, c->pr->unit_size, "unit", up, sizeof(up));
    apimon_format_amount(c->pr->unit_amount, c->pr->currency, price,
        sizeof(price));
    say(tail, sizeof(tail), "%s x %s", up, price);
    return emit(c, "usage", units, amount, tail);
}

static int
overage_line(apimon_price_ctx_t *c)
{
    int64_t  units = units_of(c->pr, c->calls), over, amount;
    char     up[96], price[40], inc[32], ov[32], tail[180];

    over = units > c->pr->included_units ? units - c->pr->included_units : 0;
    if (mul(over, c->pr->unit_amount, &amount) != 0) {
        return -1;
    }
    units_phrase(c, units, c->pr->unit_size, "unit", up, sizeof(up));
    apimon_format_amount(c->pr->unit_amount, c->pr->currency, price,
        sizeof(price));
    fmt_count(c->pr->included_units, inc, sizeof(inc));
    fmt_count(over, ov, sizeof(ov));
    say(tail, sizeof(tail), "%s, %s included, %s over x %s", up, inc, ov,
        price);
    return emit(c, "overage", over, amount, tail);
}

/* appends " + 3 x 0.50 usd" style text while it fits; 0 when it did not */
static int
append(char *buf, size_t len, const char *fmt, ...)
{
    size_t   used = strlen(buf);
    va_list  ap;
    int      n;

    va_start(ap, fmt);
    n = vsnprintf(buf + used, len - used, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t) n >= len - used) {
        buf[used] = '\0';
        return 0;
    }
    return 1;
}

/* one tier's share: n units at its unit price plus its flat amount */
static int
tier_cost(const apimon_tier_t *t, int64_t n, int64_t *cost)
{
    int64_t u;

    return mul(n, t->unit_amount, &u) || add(u, t->flat_amount, cost)
        ? -1 : 0;
}

static int
graduated_line(apimon_price_ctx_t *c)
{
    const apimon_pricing_t *pr = c->pr;
    int64_t  units = units_of(pr, c->calls), prev = 0, total = 0, n, cost;
    char     up[96], parts[120] = "", price[40], cnt[32], tail[200];
    int      fits = 1;
    size_t   i;

    for (i = 0; i < pr->ntiers && units > prev; i++) {
        const apimon_tier_t *t = &pr->tiers[i];
        int64_t top = (t->up_to == -1 || t->up_to > units) ? units : t->up_to;

        n = top - prev;
        if (tier_cost(t, n, &cost) != 0 || add(total, cost, &total) != 0) {
            return -1;
        }
        apimon_format_amount(t->unit_amount, pr->currency, price,
            sizeof(price));
        fmt_count(n, cnt, sizeof(cnt));
        fits = fits && append(parts, sizeof(parts), "%s%s x %s",
            i ? " + " : "", cnt, price);
        if (t->flat_amount > 0) {
            apimon_format_amount(t->flat_amount, pr->currency, price,
                sizeof(price));
            fits = fits && append(parts, sizeof(parts), " + %s flat",
                price);
        }
        prev = t->up_to;
    }
    units_phrase(c, units, pr->unit_size, "unit", up, sizeof(up));
    if (units == 0) {
        say(tail, sizeof(tail), "%s, graduated tiers: no usage", up);
    } else if (fits) {
        say(tail, sizeof(tail), "%s, graduated: %s", up, parts);
    } else {
        say(tail, sizeof(tail), "%s, graduated over %zu tiers", up, i);
    }
    return emit(c, "usage", units, total, tail);
}

static int
volume_line(apimon_price_ctx_t *c)
{
    const apimon_pricing_t *pr = c->pr;
    int64_t  units = units_of(pr, c->calls), total = 0;
    char     up[96], price[40], flat[48] = "", cnt[32], tail[200];
    size_t   i = 0;

    units_phrase(c, units, pr->unit_size, "unit", up, sizeof(up));
    if (units == 0) {
        /* no usage, no usage charge: a base fee is what flat is for */
        say(tail, sizeof(tail), "%s, volume tiers: no usage", up);
        return emit(c, "usage", 0, 0, tail);
    }
    while (pr->tiers[i].up_to != -1 && units > pr->tiers[i].up_to) {
        i++;                          /* the last tier is open: it stops */
    }
    if (tier_cost(&pr->tiers[i], units, &total) != 0) {
        return -1;
    }
    apimon_format_amount(pr->tiers[i].unit_amount, pr->currency, price,
        sizeof(price));
    if (pr->tiers[i].flat_amount > 0) {
        char fa[40];

        apimon_format_amount(pr->tiers[i].flat_amount, pr->currency, fa,
            sizeof(fa));
        say(flat, sizeof(flat), " + %s flat", fa);
    }
    fmt_count(units, cnt, sizeof(cnt));
    say(tail, sizeof(tail), "%s, volume tier %zu: %s x %s%s", up, i + 1, cnt,
        price, flat);
    return emit(c, "usage", units, total, tail);
}

static int
package_line(apimon_price_ctx_t *c)
{
    int64_t  packs = ceil_div(c->calls, c->pr->package_size), amount;
    char     up[96], price[40], tail[160];

    if (packs < 1 && c->days > 0) {
        packs = 1;       /* one package at least, for a month it was live */
    }
    if (mul(packs, c->pr->amount, &amount) != 0) {
        return -1;
    }
    units_phrase(c, packs, c->pr->package_size, "package", up, sizeof(up));
    apimon_format_amount(c->pr->amount, c->pr->currency, price,
        sizeof(price));
    say(tail, sizeof(tail), "%s x %s", up, price);
    return emit(c, "usage", packs, amount, tail);
}

static int
fee_overage_lines(apimon_price_ctx_t *c)
{
    return fee_line(c) || overage_line(c) ? -1 : 0;
}

/* ---- models ------------------------------------------------------------- */

static const apimon_model_t  models[] = {
    [APIMON_MODEL_FREE] = { "free", 0, 0, NULL },
    [APIMON_MODEL_FLAT] = { "flat", APIMON_USES_AMOUNT, 1, fee_line },
    [APIMON_MODEL_METERED] = { "metered",
        APIMON_USES_UNIT_AMOUNT | APIMON_USES_UNITS, 1, metered_line },
    [APIMON_MODEL_FLAT_WITH_OVERAGE] = { "flat_with_overage",
        APIMON_USES_AMOUNT | APIMON_USES_INCLUDED | APIMON_USES_UNIT_AMOUNT
        | APIMON_USES_UNITS, 2, fee_overage_lines },
    [APIMON_MODEL_GRADUATED] = { "graduated",
        APIMON_USES_TIERS | APIMON_USES_UNITS, 1, graduated_line },
    [APIMON_MODEL_VOLUME] = { "volume",
        APIMON_USES_TIERS | APIMON_USES_UNITS, 1, volume_line },
    [APIMON_MODEL_PACKAGE] = { "package",
        APIMON_USES_AMOUNT | APIMON_USES_PACKAGE, 1, package_line },
};

#define NMODELS (sizeof(models) / sizeof(models[0]))

const apimon_model_t *
apimon_model(apimon_model_e m)
{
    return (unsigned) m < NMODELS ? &models[m] : NULL;
}

const char *
apimon_model_name(apimon_model_e m)
{
    return (unsigned) m < NMODELS ? models[m].name : "?";
}

int
apimon_model_parse(const char *name, apimon_model_e *m)
{
    size_t i;

    for (i = 0; name != NULL && i < NMODELS; i++) {
        if (strcmp(name, models[i].name) == 0) {
            *m = (apimon_model_e) i;
            return 0;
        }
    }
    return -1;
}

/* ---- pricing ------------------------------------------------------------ */

int
apimon_price(const apimon_pricing_t *pricing, const apimon_period_t *p,
    int64_t start_ms, int64_t end_ms, int64_t calls, const char *plan_name,
    apimon_line_t *lines, size_t nlines)
{
    return apimon_price_why(pricing, p, start_ms, end_ms, calls, plan_name,
        lines, nlines, NULL, 0);
}

int
apimon_price_why(const apimon_pricing_t *pricing, const apimon_period_t *p,
    int64_t start_ms, int64_t end_ms, int64_t calls, const char *plan_name,
    apimon_line_t *lines, size_t nlines, char *err, size_t errlen)
{
    apimon_price_ctx_t     c;
    const apimon_model_t  *m;
    char                   why[APIMON_PRICE_ERRLEN];

    if (pricing == NULL || p == NULL || (lines == NULL && nlines > 0)) {
        return fail(err, errlen, "nothing to price");
    }
    if (apimon_pricing_check(pricing, why, sizeof(why)) != 0) {
        return fail(err, errlen, "pricing.%s", why);
    }
    if (calls < 0 || calls > APIMON_MAX_CALLS) {
        return fail(err, errlen, "%lld accepted calls in one period: more "
            "than 10^15 is refused as absurd", (long long) calls);
    }
    if (p->days < 28 || p->days > 31) {
        return fail(err, errlen, "the period is not a calendar month");
    }
    c.pr = pricing;
    c.p = p;
    c.label = plan_name ? plan_name : "";
    c.calls = calls;
    c.days = apimon_active_days(p, start_ms, end_ms);
    c.lines = lines;
    c.nlines = nlines;
    c.n = 0;
    m = apimon_model(pricing->model);
    if (nlines < m->nlines) {
        return fail(err, errlen, "too few lines to hold the result");
    }
    if (m->price != NULL && m->price(&c) != 0) {
        return fail(err, errlen, "a line's amount does not fit a 64-bit "
            "integer (%lld calls)", (long long) calls);
    }
    return (int) c.n;
}


/* ---- price versions and suspensions ------------------------------------ */

#define DAY_MS  86400000LL

/* the days of the period each version prices: in the term, and charged
 * (not wholly inside a paused span) */
typedef struct {
    int      term[APIMON_MAX_VERSIONS];
    int      charged[APIMON_MAX_VERSIONS];
    int      nterm;                  /* versions with a term day */
    int      last;                   /* the version of the last term day */
    int      all_term;
    int      all_charged;
} days_t;

/* the versions in force in the period: from the one in force at its start
 * to the last that starts before its end (a plan may have any number) */
static void
window(const apimon_history_t *h, const apimon_period_t *p,
    apimon_history_t *w)
{
    size_t  i0 = 0, i1;

    *w = *h;
    while (i0 + 1 < h->nv && h->v[i0 + 1].from_ms <= p->start_ms) {
        i0++;
    }
    for (i1 = i0; i1 + 1 < h->nv && h->v[i1 + 1].from_ms < p->end_ms; i1++) {
        /* in force from inside the period */
    }
    w->v = h->v + i0;
    w->nv = i1 - i0 + 1;
}

/* [a, b) wholly covered by the spans (any order, overlaps allowed) */
static int
covered(const apimon_history_t *h, int64_t a, int64_t b)
{
    size_t  i;
    int     moved = 1;

    /* at most npaused passes, each moving a forward past one span */
    while (moved && a < b) {
        moved = 0;
        for (i = 0; i < h->npaused; i++) {
            if (h->paused[i].start_ms <= a && h->paused[i].end_ms > a) {
                a = h->paused[i].end_ms;
                moved = 1;
            }
        }
    }
    return a >= b;
}

static void
count_days(const apimon_history_t *h, const apimon_period_t *p,
    int64_t start_ms, int64_t end_ms, days_t *d)
{
    int64_t  ds, a, b;
    size_t   v = 0;
    int      i;

    memset(d, 0, sizeof(*d));
    d->last = -1;
    for (i = 0; i < p->days; i++) {
        ds = p->start_ms + i * DAY_MS;
        while (v + 1 < h->nv && h->v[v + 1].from_ms <= ds) {
            v++;
        }
        a = start_ms > ds ? start_ms : ds;
        b = (end_ms != 0 && end_ms < ds + DAY_MS) ? end_ms : ds + DAY_MS;
        if (a >= b) {
            continue;
        }
        if (d->term[v]++ == 0) {
            d->nterm++;
        }
        d->last = (int) v;
        d->all_term++;
        if (!covered(h, a, b)) {
            d->charged[v]++;
            d->all_charged++;
        }
    }
}

/* the line called id among n, or NULL */
static apimon_line_t *
line_of(apimon_line_t *l, int n, const char *id)
{
    int i;

    for (i = 0; i < n; i++) {
        if (strcmp(l[i].id, id) == 0) {
            return &l[i];
        }
    }
    return NULL;
}

/* the fee across versions, with its description */
static int
history_fee(const apimon_history_t *h, const apimon_period_t *p,
    const days_t *d, const char *label, apimon_line_t *out)
{
    apimon_price_ctx_t  c;
    int64_t             num = 0, t, step;
    char                tail[160], amt[40];
    size_t              v;
    int                 parts = 0;

    step = apimon_currency_step(h->v[d->last].pr.currency);
    say(tail, sizeof(tail), "%d of %d days", d->all_charged, p->days);
    for (v = 0; v < h->nv; v++) {
        const apimon_pricing_t *pr = &h->v[v].pr;

        if (d->charged[v] == 0 || !(apimon_model(pr->model)->uses
                                    & APIMON_USES_AMOUNT)
            || pr->model == APIMON_MODEL_PACKAGE)
        {
            continue;
        }
        if (mul(pr->amount, d->charged[v], &t) != 0
            || add(num, t, &num) != 0)
        {
            return -1;
        }
        if (d->nterm > 1) {
            apimon_format_amount(pr->amount, pr->currency, amt, sizeof(amt));
            append(tail, sizeof(tail), "%s%d at %s", parts++ ? " + " : ": ",
                d->charged[v], amt);
        }
    }
    if (d->all_charged < d->all_term) {
        append(tail, sizeof(tail), " (%d suspended not charged)",
            d->all_term - d->all_charged);
    }
    memset(&c, 0, sizeof(c));
    c.p = p;
    c.label = label ? label : "";
    c.lines = out;
    c.nlines = 1;
    return emit(&c, "fee", d->all_charged,
        apimon_round_half_up(num, p->days * step) * step, tail);
}

/* a usage line across versions: weighted by term days, rounded once */
static int
history_weigh(const apimon_history_t *h, const days_t *d,
    apimon_line_t all[][APIMON_MAX_LINES], const int *nl,
    apimon_line_t *out)
{
    int64_t         num = 0, t, step;
    apimon_line_t  *l;
    size_t          v;
    size_t          len;

    step = apimon_currency_step(h->v[d->last].pr.currency);
    for (v = 0; v < h->nv; v++) {
        l = d->term[v] ? line_of(all[v], nl[v], out->id) : NULL;
        if (l != NULL && (mul(l->amount, d->term[v], &t) != 0
                          || add(num, t, &num) != 0))
        {
            return -1;
        }
    }
    out->amount = apimon_round_half_up(num, (int64_t) d->all_term * step)
                  * step;
    len = strlen(out->description);
    if (len + 40 < sizeof(out->description)) {
        say(out->description + len, sizeof(out->description) - len,
            " (%d price versions by day)", d->nterm);
    }
    return 0;
}

static int
history_merge(const apimon_history_t *h, const apimon_period_t *p,
    const days_t *d, const char *label, apimon_line_t all[][APIMON_MAX_LINES],
    const int *nl, apimon_line_t *lines, size_t nlines)
{
    size_t  v, n = 0;
    int     i;

    /* every line any version writes, the latest version's text first */
    for (v = h->nv; v-- > 0;) {
        for (i = 0; d->term[v] && i < nl[v]; i++) {
            if (line_of(lines, (int) n, all[v][i].id) != NULL) {
                continue;
            }
            if (n >= nlines) {
                return -1;
            }
            lines[n] = all[v][i];
            if (strcmp(lines[n].id, "fee") == 0
                ? history_fee(h, p, d, label, &lines[n]) != 0
                : d->nterm > 1
                  && history_weigh(h, d, all, nl, &lines[n]) != 0)
            {
                return -1;
            }
            n++;
        }
    }
    return (int) n;
}

int
apimon_price_history(const apimon_history_t *h, const apimon_period_t *p,
    int64_t start_ms, int64_t end_ms, int64_t calls, const char *plan_name,
    apimon_line_t *lines, size_t nlines, char *err, size_t errlen)
{
    apimon_line_t     all[APIMON_MAX_VERSIONS][APIMON_MAX_LINES];
    int               nl[APIMON_MAX_VERSIONS], n;
    apimon_history_t  w;
    days_t            d;
    size_t            v;

    if (h == NULL || h->nv < 1 || p == NULL) {
        return fail(err, errlen, "nothing to price");
    }
    if (p->days < 28 || p->days > 31) {
        return fail(err, errlen, "the period is not a calendar month");
    }
    window(h, p, &w);
    if (w.nv > APIMON_MAX_VERSIONS) {
        return fail(err, errlen, "more than %d price versions in one period",
            APIMON_MAX_VERSIONS);
    }
    h = &w;
    count_days(h, p, start_ms, end_ms, &d);
    if (d.last < 0) {
        d.last = (int) h->nv - 1;    /* no term day: the latest in force */
    }
    if (d.nterm <= 1 && d.all_charged == d.all_term) {
        return apimon_price_why(&h->v[d.last].pr, p, start_ms, end_ms, calls,
            plan_name, lines, nlines, err, errlen);
    }
    for (v = 0; v < h->nv; v++) {
        nl[v] = 0;
        if (d.term[v] == 0) {
            continue;
        }
        if (strcmp(h->v[v].pr.currency, h->v[d.last].pr.currency) != 0) {
            return fail(err, errlen, "the price changed currency within "
                "the period (%s to %s)", h->v[v].pr.currency,
                h->v[d.last].pr.currency);
        }
        nl[v] = apimon_price_why(&h->v[v].pr, p, start_ms, end_ms, calls,
            plan_name, all[v], APIMON_MAX_LINES, err, errlen);
        if (nl[v] < 0) {
            return -1;
        }
    }
    n = history_merge(h, p, &d, plan_name, all, nl, lines, nlines);
    return n < 0 ? fail(err, errlen, "a line's amount does not fit a 64-bit "
        "integer, or too few lines") : n;
}


const apimon_pricing_t *
apimon_history_pricing(const apimon_history_t *h, const apimon_period_t *p,
    int64_t start_ms, int64_t end_ms)
{
    apimon_history_t  w;
    days_t            d;

    if (h == NULL || h->nv < 1 || p == NULL) {
        return NULL;
    }
    window(h, p, &w);
    if (w.nv > APIMON_MAX_VERSIONS) {
        return &w.v[w.nv - 1].pr;
    }
    count_days(&w, p, start_ms, end_ms, &d);
    return &w.v[d.last >= 0 ? d.last : (int) w.nv - 1].pr;
}


/* ---- plan changes ------------------------------------------------------ */

int
apimon_plan_segments(const apimon_plan_entry_t *h, size_t n,
    const apimon_period_t *p, int64_t start_ms, int64_t end_ms,
    apimon_segment_t *out, size_t max)
{
    int64_t  a, z, lo;
    size_t   i, k = 0;

    lo = start_ms;
    for (i = 0; i < n; i++) {
        /* the plan of entry i holds from 00:00 of its change's day to
         * 00:00 of the next change's day */
        a = i == 0 ? start_ms : floor_div(h[i].from_ms, DAY_MS) * DAY_MS;
        a = a > lo ? a : lo;
        z = i + 1 < n ? floor_div(h[i + 1].from_ms, DAY_MS) * DAY_MS : 0;
        if (end_ms != 0 && (z == 0 || z > end_ms)) {
            z = end_ms;
        }
        if (z != 0 && z <= a) {
            continue;
        }
        lo = a;
        if (apimon_active_days(p, a, z) == 0) {
            continue;
        }
        if (k > 0 && out[k - 1].end_ms == a
            && strcmp(out[k - 1].plan, h[i].plan) == 0)
        {
            out[k - 1].end_ms = z;      /* back the same day: one part */
            continue;
        }
        if (k == max) {
            return -1;
        }
        out[k].plan = h[i].plan;
        out[k].start_ms = a;
        out[k++].end_ms = z;
    }
    return (int) k;
}


/* digits of s[0..n), all of them; -1 if any is not one */
static int64_t
dig(const char *s, int n)
{
    int64_t  v = 0;
    int      i;

    for (i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return -1;
        }
        v = v * 10 + (s[i] - '0');
    }
    return v;
}

int
apimon_time_parse(const char *s, int64_t *ms)
{
    apimon_period_t  p;
    char             ym[8];
    int64_t          d, hh = 0, mi = 0, ss = 0, frac = 0, off = 0, scale;
    const char      *t;

    if (s == NULL || strlen(s) < 10 || s[4] != '-' || s[7] != '-') {
        return -1;
    }
    memcpy(ym, s, 7);
    ym[7] = '\0';
    d = dig(s + 8, 2);
    if (apimon_period_parse(ym, &p) != 0 || d < 1 || d > p.days) {
        return -1;
    }
    t = s + 10;
    if (*t != '\0') {
        if ((*t != 'T' && *t != 't') || strlen(t) < 10 || t[3] != ':'
            || t[6] != ':')
        {
            return -1;
        }
        hh = dig(t + 1, 2);
        mi = dig(t + 4, 2);
        ss = dig(t + 7, 2);
        if (hh < 0 || hh > 23 || mi < 0 || mi > 59 || ss < 0 || ss > 59) {
            return -1;
        }
        t += 9;
        if (*t == '.') {
            for (t++, scale = 100; *t >= '0' && *t <= '9'; t++) {
                frac += (*t - '0') * scale;
                scale /= 10;
            }
            if (t[-1] == '.') {
                return -1;
            }
        }
        if ((*t == 'Z' || *t == 'z') && t[1] == '\0') {
            off = 0;
        } else if ((*t == '+' || *t == '-') && strlen(t) == 6 && t[3] == ':'
                   && dig(t + 1, 2) >= 0 && dig(t + 1, 2) <= 23
                   && dig(t + 4, 2) >= 0 && dig(t + 4, 2) <= 59)
        {
            off = (dig(t + 1, 2) * 60 + dig(t + 4, 2)) * 60000;
            off = *t == '-' ? -off : off;
        } else {
            return -1;
        }
    }
    *ms = p.start_ms + (d - 1) * DAY_MS + ((hh * 60 + mi) * 60 + ss) * 1000
          + frac - off;
    return 0;
}
