/*
 * The run report: see report.h.
 */

#include "report.h"

#include <errno.h>
#include <inttypes.h>
#include <string.h>

#include <cjson/cJSON.h>

static const char  *report_cols =
    "period,subscription,customer,owner,plan,model,line,quantity,amount,"
    "currency,status,stripe_id,error";


static int
ends_with(const char *s, const char *suffix)
{
    size_t  n = strlen(s), m = strlen(suffix);

    return n >= m && strcmp(s + n - m, suffix) == 0;
}


int
report_open(report_t *r, const char *path, char *err, size_t errlen)
{
    r->f = NULL;
    r->json = 0;
    r->html = NULL;
    if (path == NULL) {
        return 0;
    }

    r->json = ends_with(path, ".json") || ends_with(path, ".jsonl")
              || ends_with(path, ".ndjson");

    r->f = (strcmp(path, "-") == 0) ? stdout : fopen(path, "w");
    if (r->f == NULL) {
        snprintf(err, errlen, "cannot write report %s: %s", path,
                 strerror(errno));
        return -1;
    }
    if (!r->json) {
        fprintf(r->f, "%s\n", report_cols);
    }
    return 0;
}


/* RFC 4180: quote fields holding a comma, quote or line break */
static void
csv_field(FILE *f, const char *s, int last)
{
    if (s == NULL) {
        s = "";
    }
    if (strpbrk(s, ",\"\r\n") == NULL) {
        fputs(s, f);
    } else {
        fputc('"', f);
        for ( /* void */ ; *s; s++) {
            if (*s == '"') {
                fputc('"', f);
            }
            fputc(*s, f);
        }
        fputc('"', f);
    }
    fputc(last ? '\n' : ',', f);
}


static void
report_csv(report_t *r, const report_row_t *w)
{
    char  q[24], a[24];

    snprintf(q, sizeof(q), "%" PRId64, w->quantity);
    snprintf(a, sizeof(a), "%" PRId64, w->amount);
    csv_field(r->f, w->period, 0);
    csv_field(r->f, w->subscription, 0);
    csv_field(r->f, w->customer, 0);
    csv_field(r->f, w->owner, 0);
    csv_field(r->f, w->plan, 0);
    csv_field(r->f, w->model, 0);
    csv_field(r->f, w->line, 0);
    csv_field(r->f, q, 0);
    csv_field(r->f, a, 0);
    csv_field(r->f, w->currency, 0);
    csv_field(r->f, w->status, 0);
    csv_field(r->f, w->stripe_id, 0);
    csv_field(r->f, w->error, 1);
}


static void
add_str(cJSON *j, const char *name, const char *v)
{
    cJSON_AddStringToObject(j, name, v ? v : "");
}


/* cJSON numbers are doubles: money and counts go out as exact integer text */
static void
add_int(cJSON *j, const char *name, int64_t v)
{
    char  num[24];

    snprintf(num, sizeof(num), "%" PRId64, v);
    cJSON_AddRawToObject(j, name, num);
}


static void
report_json(report_t *r, const report_row_t *w)
{
    cJSON  *j = cJSON_CreateObject();
    char   *s;

    add_str(j, "period", w->period);
    add_str(j, "subscription", w->subscription);
    add_str(j, "customer", w->customer);
    add_str(j, "owner", w->owner);
    add_str(j, "plan", w->plan);
    add_str(j, "model", w->model);
    add_str(j, "line", w->line);
    add_int(j, "quantity", w->quantity);
    add_int(j, "amount", w->amount);
    add_str(j, "currency", w->currency);
    add_str(j, "status", w->status);
    add_str(j, "stripe_id", w->stripe_id);
    add_str(j, "error", w->error);
    s = cJSON_PrintUnformatted(j);
    if (s) {
        fprintf(r->f, "%s\n", s);
        cJSON_free(s);
    }
    cJSON_Delete(j);
}


int
report_open_html(report_t *r, const char *path, char *err, size_t errlen)
{
    if (path == NULL) {
        return 0;
    }
    r->html = report_html_open(path, err, errlen);
    return r->html ? 0 : -1;
}


void
report_usage(report_t *r, const char *sub, const char *field, size_t flen,
    const char *val, size_t vlen)
{
    if (r->html) {
        report_html_usage(r->html, sub, field, flen, val, vlen);
    }
}


void
report_row(report_t *r, const report_row_t *row)
{
    if (r->html) {
        report_html_row(r->html, row);
    }
    if (r->f == NULL) {
        return;
    }
    if (r->json) {
        report_json(r, row);
    } else {
        report_csv(r, row);
    }
}


int
report_close(report_t *r)
{
    int  rc = 0;

    if (r->html && report_html_close(r->html) != 0) {
        rc = -1;
    }
    r->html = NULL;
    if (r->f && r->f != stdout) {
        rc = fclose(r->f) != 0 ? -1 : rc;
    } else if (r->f) {
        rc = fflush(r->f) != 0 ? -1 : rc;
    }
    r->f = NULL;
    return rc == 0 ? 0 : -1;
}
