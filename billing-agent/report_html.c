/*
 * --report-html FILE (report.h): one self-contained page of a month's run,
 * written when the report closes.  No script, no style sheet or font from
 * elsewhere: inline CSS and SVG only, so it opens from a mail attachment.
 * Every text from Redis or the API is HTML-escaped; money is shown in
 * major units with the currency's decimals (apimon_format_amount), the
 * exact minor units kept in data-minor attributes.
 *
 * "Billed" is what the lines bill whatever the API did with them yet:
 * status done, posted, dry_run or dry_run_resume; failed, unknown and
 * unmapped lines are totalled apart.  Invoice rows repeat their lines and
 * are not added in.
 */

#include "report.h"
#include "pricing.h"
#include "util.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#define HTML_TOP_LINES  10      /* the largest lines shown */
#define HTML_TOP_SUBS   12      /* subscriptions charted, by calls */
#define HTML_DAYS       31


typedef struct {
    char     *sub;
    char     *customer;
    char     *plan;
    char     *line;
    char     *currency;
    char     *status;
    int64_t   quantity;
    int64_t   amount;
} html_line_t;

typedef struct {
    char     *sub;
    int64_t   day[HTML_DAYS];
    int64_t   total;
} html_use_t;

/* a total of one group: its key "a|b", lines and minor units */
typedef struct {
    const char  *key;
    int64_t      n;
    int64_t      amount;
} html_sum_t;

struct report_html_s {
    FILE         *f;
    char          period[24];   /* "2026-01", or "2026-01 to 2026-03" */
    html_line_t  *lines;
    size_t        n;
    size_t        cap;
    amap_t        use;          /* subscription → html_use_t */
    amap_t        refused;      /* reason → int64_t calls */
};


report_html_t *
report_html_open(const char *path, char *err, size_t errlen)
{
    report_html_t  *h;
    FILE           *f;

    f = fopen(path, "w");
    if (f == NULL) {
        snprintf(err, errlen, "cannot write the HTML report %s: %s", path,
                 strerror(errno));
        return NULL;
    }
    h = xcalloc(1, sizeof(*h));
    h->f = f;
    amap_init(&h->use);
    amap_init(&h->refused);
    return h;
}


static char *
dup0(const char *s)
{
    return xstrdup(s ? s : "");
}


void
report_html_row(report_html_t *h, const report_row_t *w)
{
    html_line_t  *l;

    /* a run of several months: one page, titled with the first and last */
    if (w->period && h->period[0] == '\0') {
        snprintf(h->period, sizeof(h->period), "%.7s", w->period);
    } else if (w->period && strncmp(h->period, w->period, 7) != 0
               && (strlen(h->period) < 11
                   || strcmp(h->period + 11, w->period) != 0))
    {
        snprintf(h->period + 7, sizeof(h->period) - 7, " to %.7s",
                 w->period);
    }
    if (h->n == h->cap) {
        h->cap = h->cap ? 2 * h->cap : 64;
        h->lines = xrealloc(h->lines, h->cap * sizeof(html_line_t));
    }
    l = &h->lines[h->n++];
    l->sub = dup0(w->subscription);
    l->customer = dup0(w->customer);
    l->plan = dup0(w->plan);
    l->line = dup0(w->line);
    l->currency = dup0(w->currency);
    l->status = dup0(w->status);
    l->quantity = w->quantity;
    l->amount = w->amount;
}


/* one field of a usage hash: "<YYYYMMDD>|<api>|<ok or reason>" = calls */
void
report_html_usage(report_html_t *h, const char *sub, const char *field,
    size_t flen, const char *val, size_t vlen)
{
    html_use_t  *u;
    int64_t      calls, *r;
    const char  *reason;
    char         rs[64];
    int          day;

    if (flen < 12 || field[8] != '|' || agent_parse_i64(val, vlen, &calls)
        || calls <= 0 || field[6] < '0' || field[6] > '3'
        || field[7] < '0' || field[7] > '9')
    {
        return;
    }
    day = (field[6] - '0') * 10 + (field[7] - '0');
    reason = memchr(field + 9, '|', flen - 9);
    if (day < 1 || day > HTML_DAYS || reason == NULL) {
        return;
    }
    reason++;
    snprintf(rs, sizeof(rs), "%.*s", (int) (field + flen - reason), reason);

    if (strcmp(rs, "ok") != 0) {
        if ((r = amap_get(&h->refused, rs)) == NULL) {
            r = xcalloc(1, sizeof(*r));
            amap_put(&h->refused, rs, r);
        }
        *r += calls;
        return;
    }
    if ((u = amap_get(&h->use, sub)) == NULL) {
        u = xcalloc(1, sizeof(*u));
        u->sub = xstrdup(sub);
        amap_put(&h->use, sub, u);
    }
    u->day[day - 1] += calls;
    u->total += calls;
}


/* ------------------------------------------------------------- writing */

static void
esc(FILE *f, const char *s)
{
    for ( /* void */ ; s && *s; s++) {
        switch (*s) {
        case '&':  fputs("&amp;", f);  break;
        case '<':  fputs("&lt;", f);   break;
        case '>':  fputs("&gt;", f);   break;
        case '"':  fputs("&quot;", f); break;
        case '\'': fputs("&#39;", f);  break;
        default:   fputc(*s, f);
        }
    }
}


/* a table cell of money: major units shown, minor units kept exact */
static void
money_td(FILE *f, int64_t minor, const char *currency)
{
    char  buf[64];

    apimon_format_amount(minor, currency, buf, sizeof(buf));
    fprintf(f, "<td class=m data-minor=\"%" PRId64 "\">", minor);
    esc(f, buf);
    fputs("</td>", f);
}


static int
billed(const html_line_t *l)
{
    static const char  *ok[] = { "done", "posted", "dry_run",
                                 "dry_run_resume" };
    size_t              i;

    if (strcmp(l->line, "invoice") == 0) {
        return -1;                   /* repeats its lines */
    }
    for (i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        if (strcmp(l->status, ok[i]) == 0) {
            return 1;
        }
    }
    return 0;
}


/* adds (n, amount) to the group "a|b" of m */
static void
sum_add(amap_t *m, const char *a, const char *b, int64_t n, int64_t amount)
{
    html_sum_t  *s;
    amap_slot_t *slot;
    char         key[512];

    snprintf(key, sizeof(key), "%s|%s", a, b);
    if ((s = amap_get(m, key)) == NULL) {
        s = xcalloc(1, sizeof(*s));
        slot = amap_put(m, key, s);
        s->key = slot->key;
    }
    s->n += n;
    s->amount += amount;
}


static int
sum_cmp(const void *x, const void *y)
{
    return strcmp((*(html_sum_t * const *) x)->key,
                  (*(html_sum_t * const *) y)->key);
}


/* the groups of m sorted by key; *n their count */
static html_sum_t **
sums_sorted(const amap_t *m, size_t *n)
{
    html_sum_t  **v = xcalloc(m->n + 1, sizeof(*v));
    size_t        i;

    *n = 0;
    for (i = 0; i < m->cap; i++) {
        if (m->slots[i].key) {
            v[(*n)++] = m->slots[i].val;
        }
    }
    qsort(v, *n, sizeof(*v), sum_cmp);
    return v;
}


/* a table of the groups of m: a and b columns, lines, amount (b: cur) */
static void
sums_table(FILE *f, const char *id, const char *title, const char *ha,
    const char *hb, const amap_t *m, int cur_first)
{
    html_sum_t  **v;
    const char   *bar;
    char          a[256];
    size_t        n, i;

    v = sums_sorted(m, &n);
    fprintf(f, "<h2>%s</h2>\n<table id=%s><tr><th>%s</th><th>%s</th>"
            "<th>lines</th><th>amount</th></tr>\n", title, id, ha, hb);
    for (i = 0; i < n; i++) {
        bar = strchr(v[i]->key, '|');
        snprintf(a, sizeof(a), "%.*s", (int) (bar - v[i]->key), v[i]->key);
        fputs("<tr><td>", f);
        esc(f, a);
        fputs("</td><td>", f);
        esc(f, bar + 1);
        fprintf(f, "</td><td class=n>%" PRId64 "</td>", v[i]->n);
        money_td(f, v[i]->amount, cur_first ? a : bar + 1);
        fputs("</tr>\n", f);
    }
    if (n == 0) {
        fputs("<tr><td colspan=4>none</td></tr>\n", f);
    }
    fputs("</table>\n", f);
    free(v);
}


static void
html_head(report_html_t *h)
{
    char  now[32];

    agent_iso_time(agent_now_ms(), now, sizeof(now));
    fputs("<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>\n"
          "<title>apimon billing ", h->f);
    esc(h->f, h->period);
    fputs("</title>\n<style>\n"
          "body{font:14px/1.4 sans-serif;margin:1.5em;color:#222}\n"
          "table{border-collapse:collapse;margin:.5em 0 1.5em}\n"
          "td,th{border:1px solid #ccc;padding:2px 8px;text-align:left}\n"
          "td.m,td.n{text-align:right;font-variant-numeric:tabular-nums}\n"
          ".card{display:inline-block;border:1px solid #ccc;padding:.5em 1em;"
          "margin:0 .5em .5em 0}\n.card b{font-size:1.6em;display:block}\n"
          "svg{display:block;margin:.2em 0 1em}\n"
          "</style></head><body>\n<h1>apimon billing report ", h->f);
    esc(h->f, h->period);
    fprintf(h->f, "</h1>\n<p>Generated %s (UTC). Amounts in major units; "
            "billed = lines done, posted or (dry run) to be posted.</p>\n",
            now);
}


/* the first screen: billed per currency, then the outcome counts */
static void
html_summary(report_html_t *h, const amap_t *cur, const amap_t *status)
{
    html_sum_t  **v;
    char          buf[64];
    size_t        n, i;

    v = sums_sorted(cur, &n);
    fputs("<div id=billed>\n", h->f);
    for (i = 0; i < n; i++) {
        apimon_format_amount(v[i]->amount, strchr(v[i]->key, '|') + 1, buf,
                             sizeof(buf));
        fprintf(h->f, "<div class=card data-minor=\"%" PRId64 "\">billed"
                "<b>", v[i]->amount);
        esc(h->f, buf);
        fprintf(h->f, "</b>%" PRId64 " line%s</div>\n", v[i]->n,
                v[i]->n == 1 ? "" : "s");
    }
    if (n == 0) {
        fputs("<div class=card>billed<b>nothing</b></div>\n", h->f);
    }
    fputs("</div>\n", h->f);
    free(v);

    v = sums_sorted(status, &n);
    fputs("<h2>Outcomes</h2>\n<table id=outcomes><tr><th>status</th>"
          "<th>report rows</th></tr>\n", h->f);
    for (i = 0; i < n; i++) {
        fputs("<tr><td>", h->f);
        if (v[i]->key[0] != '|') {
            fputs("invoice ", h->f);
        }
        esc(h->f, strchr(v[i]->key, '|') + 1);
        fprintf(h->f, "</td><td class=n>%" PRId64 "</td></tr>\n", v[i]->n);
    }
    fputs("</table>\n", h->f);
    free(v);
}


static int
line_cmp(const void *x, const void *y)
{
    const html_line_t  *a = *(html_line_t * const *) x;
    const html_line_t  *b = *(html_line_t * const *) y;

    return a->amount < b->amount ? 1 : a->amount > b->amount ? -1
           : strcmp(a->sub, b->sub);
}


static void
html_largest(report_html_t *h)
{
    html_line_t  **v = xcalloc(h->n + 1, sizeof(*v));
    size_t         n = 0, i;

    for (i = 0; i < h->n; i++) {
        if (billed(&h->lines[i]) == 1 && h->lines[i].amount != 0) {
            v[n++] = &h->lines[i];
        }
    }
    qsort(v, n, sizeof(*v), line_cmp);
    fputs("<h2>Largest lines</h2>\n<table id=largest><tr><th>subscription"
          "</th><th>customer</th><th>plan</th><th>line</th><th>quantity</th>"
          "<th>amount</th></tr>\n", h->f);
    for (i = 0; i < n && i < HTML_TOP_LINES; i++) {
        fputs("<tr><td>", h->f);
        esc(h->f, v[i]->sub);
        fputs("</td><td>", h->f);
        esc(h->f, v[i]->customer);
        fputs("</td><td>", h->f);
        esc(h->f, v[i]->plan);
        fputs("</td><td>", h->f);
        esc(h->f, v[i]->line);
        fprintf(h->f, "</td><td class=n>%" PRId64 "</td>", v[i]->quantity);
        money_td(h->f, v[i]->amount, v[i]->currency);
        fputs("</tr>\n", h->f);
    }
    fputs("</table>\n", h->f);
    free(v);
}


static int
use_cmp(const void *x, const void *y)
{
    const html_use_t  *a = *(html_use_t * const *) x;
    const html_use_t  *b = *(html_use_t * const *) y;

    return a->total < b->total ? 1 : a->total > b->total ? -1
           : strcmp(a->sub, b->sub);
}


/* one bar chart: a bar per day, scaled to the subscription's busiest day */
static void
html_chart(report_html_t *h, const html_use_t *u)
{
    FILE     *f = h->f;
    int64_t   max = 1;
    size_t    i;
    int       d, hgt;

    for (d = 0; d < HTML_DAYS; d++) {
        max = u->day[d] > max ? u->day[d] : max;
    }
    fputs("<h3>", f);
    esc(f, u->sub);
    /* its plan and customer, from its first row */
    for (i = 0; i < h->n; i++) {
        if (strcmp(h->lines[i].sub, u->sub) == 0) {
            fputs(" (", f);
            esc(f, h->lines[i].plan);
            fputs(h->lines[i].customer[0] ? ", " : "", f);
            esc(f, h->lines[i].customer);
            fputs(")", f);
            break;
        }
    }
    fprintf(f, ": %" PRId64 " calls, at most %" PRId64 " a day</h3>\n"
            "<svg width=%d height=70 role=img><title>calls per day</title>\n",
            u->total, max, HTML_DAYS * 14 + 2);
    for (d = 0; d < HTML_DAYS; d++) {
        hgt = (int) (u->day[d] * 50 / max);
        if (u->day[d] > 0 && hgt == 0) {
            hgt = 1;
        }
        fprintf(f, "<rect x=%d y=%d width=11 height=%d fill=\"#36c\">"
                "<title>day %d: %" PRId64 "</title></rect>", 1 + d * 14,
                52 - hgt, hgt, d + 1, u->day[d]);
        if (d % 5 == 0) {
            fprintf(f, "<text x=%d y=66 font-size=10>%d</text>", 1 + d * 14,
                    d + 1);
        }
    }
    fputs("\n</svg>\n", f);
}


static void
html_usage(report_html_t *h)
{
    html_use_t  **v = xcalloc(h->use.n + 1, sizeof(*v));
    size_t        n = 0, i;

    for (i = 0; i < h->use.cap; i++) {
        if (h->use.slots[i].key) {
            v[n++] = h->use.slots[i].val;
        }
    }
    qsort(v, n, sizeof(*v), use_cmp);
    fputs("<h2>Usage per subscription per day (accepted calls)</h2>\n",
          h->f);
    for (i = 0; i < n && i < HTML_TOP_SUBS; i++) {
        html_chart(h, v[i]);
    }
    if (n > HTML_TOP_SUBS) {
        fprintf(h->f, "<p>%zu more subscriptions with usage not charted."
                "</p>\n", n - HTML_TOP_SUBS);
    }
    if (n == 0) {
        fputs("<p>No usage read.</p>\n", h->f);
    }
    free(v);
}


static void
html_refusals(report_html_t *h)
{
    amap_t        m;
    html_sum_t  **v;
    size_t        n, i;

    amap_init(&m);
    for (i = 0; i < h->refused.cap; i++) {
        if (h->refused.slots[i].key) {
            sum_add(&m, "", h->refused.slots[i].key,
                    *(int64_t *) h->refused.slots[i].val, 0);
        }
    }
    v = sums_sorted(&m, &n);
    fputs("<h2>Refused calls by reason</h2>\n<table id=refusals><tr><th>"
          "reason</th><th>calls</th></tr>\n", h->f);
    for (i = 0; i < n; i++) {
        fputs("<tr><td>", h->f);
        esc(h->f, v[i]->key + 1);
        fprintf(h->f, "</td><td class=n>%" PRId64 "</td></tr>\n", v[i]->n);
    }
    if (n == 0) {
        fputs("<tr><td colspan=2>none</td></tr>\n", h->f);
    }
    fputs("</table>\n", h->f);
    free(v);
    amap_free(&m, free);
}


static void
html_body(report_html_t *h)
{
    amap_t        cur, plan, cust, notb, status;
    html_line_t  *l;
    size_t        i;
    int           bl;

    amap_init(&cur);
    amap_init(&plan);
    amap_init(&cust);
    amap_init(&notb);
    amap_init(&status);
    for (i = 0; i < h->n; i++) {
        l = &h->lines[i];
        bl = billed(l);
        /* an invoice row is no line: counted apart */
        sum_add(&status, bl < 0 ? "invoice" : "", l->status, 1, 0);
        if (bl == 1) {
            sum_add(&cur, "", l->currency, 1, l->amount);
            sum_add(&plan, l->currency, l->plan, 1, l->amount);
            sum_add(&cust, l->customer, l->currency, 1, l->amount);
        } else if (bl == 0 && l->amount != 0) {
            sum_add(&notb, l->currency, l->status, 1, l->amount);
        }
    }

    html_summary(h, &cur, &status);
    sums_table(h->f, "totals", "Billed per currency and plan", "currency",
               "plan", &plan, 1);
    sums_table(h->f, "customers", "Billed per customer", "customer",
               "currency", &cust, 0);
    sums_table(h->f, "notbilled", "Not billed (refused or unresolved)",
               "currency", "status", &notb, 1);
    html_largest(h);
    html_usage(h);
    html_refusals(h);
    fputs("</body></html>\n", h->f);

    amap_free(&cur, free);
    amap_free(&plan, free);
    amap_free(&cust, free);
    amap_free(&notb, free);
    amap_free(&status, free);
}


static void
use_free(void *p)
{
    html_use_t  *u = p;

    free(u->sub);
    free(u);
}


int
report_html_close(report_html_t *h)
{
    size_t  i;
    int     rc;

    html_head(h);
    html_body(h);
    rc = ferror(h->f) ? -1 : 0;
    if (fclose(h->f) != 0) {
        rc = -1;
    }
    for (i = 0; i < h->n; i++) {
        free(h->lines[i].sub);
        free(h->lines[i].customer);
        free(h->lines[i].plan);
        free(h->lines[i].line);
        free(h->lines[i].currency);
        free(h->lines[i].status);
    }
    free(h->lines);
    amap_free(&h->use, use_free);
    amap_free(&h->refused, free);
    free(h);
    return rc;
}
