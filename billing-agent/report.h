/*
 * --report FILE: one row per line of the run, CSV or JSON lines (chosen by
 * the file's extension: .json, .jsonl, .ndjson → JSON lines).
 * --report-html FILE: the same rows and the month's usage on one page
 * (report_html.c), written at report_close.
 */

#ifndef APIMON_REPORT_H
#define APIMON_REPORT_H

#include <stdint.h>
#include <stdio.h>

typedef struct report_html_s  report_html_t;

typedef struct {
    FILE           *f;
    int             json;
    report_html_t  *html;
} report_t;

typedef struct {
    const char  *period;
    const char  *subscription;
    const char  *customer;
    const char  *owner;
    const char  *plan;
    const char  *model;
    const char  *line;
    int64_t      quantity;
    int64_t      amount;
    const char  *currency;
    const char  *status;
    const char  *stripe_id;
    const char  *error;
} report_row_t;

/* path NULL: no report (rows are dropped) */
int report_open(report_t *r, const char *path, char *err, size_t errlen);
/* path NULL: no HTML report */
int report_open_html(report_t *r, const char *path, char *err,
    size_t errlen);
void report_row(report_t *r, const report_row_t *row);
/* one field of a subscription's usage hash of the month (HTML only) */
void report_usage(report_t *r, const char *sub, const char *field,
    size_t flen, const char *val, size_t vlen);
int report_close(report_t *r);

/* report_html.c */
report_html_t *report_html_open(const char *path, char *err, size_t errlen);
void report_html_row(report_html_t *h, const report_row_t *row);
void report_html_usage(report_html_t *h, const char *sub, const char *field,
    size_t flen, const char *val, size_t vlen);
int report_html_close(report_html_t *h);

#endif
