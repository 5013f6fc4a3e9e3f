/*
 * --report FILE: one row per line of the run, CSV or JSON lines (chosen by
 * the file's extension: .json, .jsonl, .ndjson → JSON lines).
 */

#ifndef APIMON_REPORT_H
#define APIMON_REPORT_H

#include <stdint.h>
#include <stdio.h>

typedef struct {
    FILE  *f;
    int    json;
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
void report_row(report_t *r, const report_row_t *row);
int report_close(report_t *r);

#endif
