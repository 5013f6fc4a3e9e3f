/*
 * --metrics-file: the outcome of a run as a node-exporter textfile
 * (Prometheus text format), written atomically (a temporary file in the
 * same directory, then rename) so the collector never reads half of it.
 */

#ifndef APIMON_METRICS_FILE_H
#define APIMON_METRICS_FILE_H

#include <stddef.h>
#include <stdint.h>

#define METRICS_FILE_OUTCOMES    16
#define METRICS_FILE_CURRENCIES  32

typedef struct {
    char      outcome[24];
    char      currency[8];
    uint64_t  lines;
    int64_t   amount;                /* minor units */
} metrics_file_row_t;

typedef struct {
    int64_t             start_us;    /* monotonic */
    size_t              n;
    /* outcome × currency ("" for rows without one): bounded by both */
    metrics_file_row_t  rows[METRICS_FILE_OUTCOMES * 4];
} metrics_file_t;

void metrics_file_init(metrics_file_t *m);
/* one outcome of the run (a report row): its status, currency, amount */
void metrics_file_add(metrics_file_t *m, const char *outcome,
    const char *currency, int64_t amount);
/* 0, or -1 with err set */
int metrics_file_write(const metrics_file_t *m, const char *path,
    int exit_code, char *err, size_t errlen);

#endif
