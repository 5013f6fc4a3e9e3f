/*
 * The run's textfile for node-exporter: see metrics_file.h.
 */

#include "metrics_file.h"
#include "util.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>


void
metrics_file_init(metrics_file_t *m)
{
    memset(m, 0, sizeof(*m));
    m->start_us = agent_now_us();
}


void
metrics_file_add(metrics_file_t *m, const char *outcome,
    const char *currency, int64_t amount)
{
    size_t               i;
    metrics_file_row_t  *r;

    if (currency == NULL) {
        currency = "";
    }

    for (i = 0; i < m->n; i++) {
        r = &m->rows[i];
        if (strcmp(r->outcome, outcome) == 0
            && strcmp(r->currency, currency) == 0)
        {
            break;
        }
    }

    if (i == m->n) {
        if (m->n == sizeof(m->rows) / sizeof(m->rows[0])) {
            return;                  /* more currencies than a catalog has */
        }
        r = &m->rows[m->n++];
        snprintf(r->outcome, sizeof(r->outcome), "%s", outcome);
        snprintf(r->currency, sizeof(r->currency), "%s", currency);
    }

    r->lines++;
    r->amount += amount;
}


/* a label value: \ " and newline escaped (catalog texts, not ours) */
static void
metrics_file_label(FILE *f, const char *s)
{
    for ( /* void */ ; *s; s++) {
        if (*s == '\\' || *s == '"') {
            fputc('\\', f);
            fputc(*s, f);
        } else if (*s == '\n') {
            fputs("\\n", f);
        } else {
            fputc(*s, f);
        }
    }
}


static void
metrics_file_print(const metrics_file_t *m, FILE *f, int exit_code)
{
    size_t    i, j;
    uint64_t  n;
    int64_t   us = agent_now_us() - m->start_us;

    fputs("# HELP apimon_billing_outcomes What became of the lines of the "
          "last billing run, by outcome (the report's status).\n"
          "# TYPE apimon_billing_outcomes gauge\n", f);

    for (i = 0; i < m->n; i++) {
        /* an outcome once, over its currencies */
        for (j = 0; j < i; j++) {
            if (strcmp(m->rows[j].outcome, m->rows[i].outcome) == 0) {
                break;
            }
        }
        if (j < i) {
            continue;
        }
        n = 0;
        for (j = i; j < m->n; j++) {
            if (strcmp(m->rows[j].outcome, m->rows[i].outcome) == 0) {
                n += m->rows[j].lines;
            }
        }
        fputs("apimon_billing_outcomes{outcome=\"", f);
        metrics_file_label(f, m->rows[i].outcome);
        fprintf(f, "\"} %" PRIu64 "\n", n);
    }

    fputs("# HELP apimon_billing_amount_minor_units Amounts of the last "
          "billing run's lines, in minor units, by currency and outcome.\n"
          "# TYPE apimon_billing_amount_minor_units gauge\n", f);

    for (i = 0; i < m->n; i++) {
        if (m->rows[i].currency[0] == '\0') {
            continue;
        }
        fputs("apimon_billing_amount_minor_units{currency=\"", f);
        metrics_file_label(f, m->rows[i].currency);
        fputs("\",outcome=\"", f);
        metrics_file_label(f, m->rows[i].outcome);
        fprintf(f, "\"} %" PRId64 "\n", m->rows[i].amount);
    }

    fprintf(f,
            "# HELP apimon_billing_run_duration_seconds How long the last "
            "billing run took.\n"
            "# TYPE apimon_billing_run_duration_seconds gauge\n"
            "apimon_billing_run_duration_seconds %" PRId64 ".%06" PRId64 "\n"
            "# HELP apimon_billing_run_exit_code The last billing run's "
            "exit status (0: success).\n"
            "# TYPE apimon_billing_run_exit_code gauge\n"
            "apimon_billing_run_exit_code %d\n"
            "# HELP apimon_billing_run_timestamp_seconds When the last "
            "billing run ended (Unix time).\n"
            "# TYPE apimon_billing_run_timestamp_seconds gauge\n"
            "apimon_billing_run_timestamp_seconds %" PRId64 "\n",
            us / 1000000, us % 1000000, exit_code, agent_now_ms() / 1000);
}


int
metrics_file_write(const metrics_file_t *m, const char *path, int exit_code,
    char *err, size_t errlen)
{
    FILE  *f;
    char   tmp[4096];
    int    bad;

    /* same directory: rename(2) replaces the file in one step */
    if ((size_t) snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path,
                          (long) getpid()) >= sizeof(tmp))
    {
        snprintf(err, errlen, "--metrics-file %s: name too long", path);
        return -1;
    }

    f = fopen(tmp, "w");
    if (f == NULL) {
        snprintf(err, errlen, "--metrics-file %s: %s", tmp, strerror(errno));
        return -1;
    }

    metrics_file_print(m, f, exit_code);

    bad = (fflush(f) != 0 || fsync(fileno(f)) != 0);
    bad = (fclose(f) != 0) || bad;

    if (bad || rename(tmp, path) != 0) {
        snprintf(err, errlen, "--metrics-file %s: %s", path, strerror(errno));
        unlink(tmp);
        return -1;
    }

    return 0;
}
