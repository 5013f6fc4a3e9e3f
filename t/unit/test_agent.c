/*
 * Unit tests of the billing agent's pure helpers: form encoding, Stripe's
 * backoff, ledger entries, the CSV/JSON report, the string map.
 */

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ledger.h"
#include "report.h"
#include "stripe.h"
#include "tap.h"
#include "util.h"


static void
test_form(void)
{
    abuf_t  b;

    abuf_init(&b);
    stripe_form_add(&b, "customer", "cus_123");
    stripe_form_add(&b, "amount", "-42");
    is_str(b.data, "customer=cus_123&amount=-42", "plain values unchanged");

    abuf_reset(&b);
    stripe_form_add(&b, "period[start]", "1");
    is_str(b.data, "period%5Bstart%5D=1", "brackets in keys encoded");

    abuf_reset(&b);
    stripe_form_add(&b, "description", "Gold: 1,000 calls & more = 5%+x/y");
    is_str(b.data, "description=Gold%3A%201%2C000%20calls%20%26%20more%20%3D"
           "%205%25%2Bx%2Fy", "reserved characters encoded");

    abuf_reset(&b);
    stripe_form_add(&b, "metadata[plan]", "caf\xc3\xa9~._-");
    is_str(b.data, "metadata%5Bplan%5D=caf%C3%A9~._-",
           "UTF-8 bytes encoded, unreserved kept");

    abuf_reset(&b);
    stripe_form_add(&b, "description", "");
    is_str(b.data, "description=", "empty value");
    abuf_free(&b);
}


static void
test_backoff(void)
{
    stripe_t  s;
    int64_t   want[] = { 500000, 1000000, 2500000, 5000000, 5000000 };
    int64_t   us;
    int       n, i, inside = 1;

    memset(&s, 0, sizeof(s));
    s.seed = 42;
    for (n = 0; n < 5; n++) {
        for (i = 0; i < 200; i++) {
            us = stripe_backoff_us(&s, n);
            if (us < want[n] * 75 / 100 || us > want[n]) {
                inside = 0;
            }
        }
        ok(inside, "retry %d: 0.5 s x (1 + n^2) capped at 5 s, 75-100%%", n);
    }
}


static void
test_ledger(void)
{
    ledger_entry_t  e, c;
    const char     *j = "{\"state\":\"posted\",\"key\":\"k1\",\"body\":\"a=1\","
                        "\"item\":\"ii_1\",\"error\":\"\",\"updated_ms\":\"5\"}";

    is_int(ledger_parse(j, strlen(j), &e), 0, "ledger entry parsed");
    is_int(e.state, LEDGER_POSTED, "state posted");
    is_str(e.key, "k1", "key");
    is_str(e.item, "ii_1", "item");
    ok(e.error == NULL, "empty error is NULL");

    memset(&c, 0, sizeof(c));
    ledger_entry_copy(&c, &e);
    is_str(c.body, "a=1", "copy holds the body");
    ledger_entry_free(&c);
    ledger_entry_free(&e);

    is_int(ledger_parse("{\"state\":\"weird\"}", 17, &e), 0,
           "unknown state parses");
    is_int(e.state, LEDGER_FAILED, "unknown state counts as failed");
    ledger_entry_free(&e);

    is_int(ledger_parse("not json", 8, &e), -1, "garbage refused");
    is_int(e.state, LEDGER_FAILED, "garbage counts as failed: never posted");
    ledger_entry_free(&e);
    is_str(ledger_state_name(LEDGER_DONE), "done", "state names");
}


/* what a line bills is stored with it; entries of earlier agents have it
 * read from their body */
static void
test_ledger_billed(void)
{
    ledger_entry_t  e, c;
    const char     *now = "{\"state\":\"computed\",\"key\":\"k\","
                          "\"body\":\"customer=cus_B&amount=1&currency=eur\","
                          "\"customer\":\"cus_A\",\"amount\":"
                          "\"9007199254740993\",\"currency\":\"usd\"}";
    const char     *old = "{\"state\":\"computed\",\"key\":\"k\","
                          "\"body\":\"customer=cus_%2B1&amount=-250&"
                          "currency=jpy&description=x\",\"item\":\"\"}";
    const char     *none = "{\"state\":\"done\",\"key\":\"k\"}";

    is_int(ledger_parse(now, strlen(now), &e), 0, "entry with its billing");
    is_str(e.customer, "cus_A", "customer from the entry, not the body");
    is_int(e.amount, 9007199254740993LL, "amount exact beyond 2^53");
    is_str(e.currency, "usd", "currency from the entry");
    memset(&c, 0, sizeof(c));
    ledger_entry_copy(&c, &e);
    ok(strcmp(c.customer, "cus_A") == 0 && c.amount == e.amount
       && strcmp(c.currency, "usd") == 0, "copy holds what it bills");
    ledger_entry_free(&c);
    ledger_entry_free(&e);

    is_int(ledger_parse(old, strlen(old), &e), 0, "entry of an earlier agent");
    is_str(e.customer, "cus_+1", "its customer from the body, decoded");
    is_int(e.amount, -250, "its amount from the body");
    is_str(e.currency, "jpy", "its currency from the body");
    ledger_entry_free(&e);

    is_int(ledger_parse(none, strlen(none), &e), 0, "entry without a body");
    ok(e.customer == NULL && e.amount == 0 && e.currency[0] == '\0',
       "bills nothing");
    ledger_entry_free(&e);
}


static char *
slurp(const char *path)
{
    FILE   *f = fopen(path, "r");
    char   *buf = calloc(1, 4096);

    if (f) {
        size_t n = fread(buf, 1, 4095, f);
        buf[n] = '\0';
        fclose(f);
    }
    return buf;
}


static void
test_report(void)
{
    report_t      r;
    report_row_t  row;
    char          path[] = "/tmp/apimon-report-XXXXXX.csv", err[256], *s;
    int           fd;

    fd = mkstemps(path, 4);
    close(fd);

    memset(&row, 0, sizeof(row));
    row.period = "2026-01";
    row.subscription = "s1";
    row.customer = "cus_1";
    row.owner = "developer:a@b.c";
    row.plan = "gold";
    row.model = "flat";
    row.line = "fee";
    row.quantity = 31;
    row.amount = 2900;
    row.currency = "usd";
    row.status = "failed";
    row.error = "HTTP 400: bad \"value\", really";

    is_int(report_open(&r, path, err, sizeof(err)), 0, "CSV report opened");
    ok(!r.json, ".csv is CSV");
    report_row(&r, &row);
    is_int(report_close(&r), 0, "closed");
    s = slurp(path);
    like(s, "period,subscription,customer,owner,plan,model,line,quantity,"
         "amount,currency,status,stripe_id,error\n", "header");
    like(s, "\n2026-01,s1,cus_1,developer:a@b.c,gold,flat,fee,31,2900,usd,"
         "failed,,\"HTTP 400: bad \"\"value\"\", really\"\n",
         "quoted field with comma and quotes");
    free(s);
    unlink(path);

    strcpy(path + strlen(path) - 4, ".jsonl");
    is_int(report_open(&r, path, err, sizeof(err)), 0, "JSON report opened");
    ok(r.json, ".jsonl is JSON lines");
    report_row(&r, &row);
    report_close(&r);
    s = slurp(path);
    like(s, "\"amount\":2900", "amount is a JSON number");
    like(s, "\"error\":\"HTTP 400: bad \\\"value\\\", really\"",
         "error escaped");
    free(s);
    unlink(path);

    is_int(report_open(&r, "/nonexistent/dir/r.csv", err, sizeof(err)), -1,
           "unwritable report refused");
    like(err, "cannot write report", "with a message");
}


static void
test_map(void)
{
    amap_t  m;
    char    k[32];
    int     i, all = 1;

    amap_init(&m);
    for (i = 0; i < 5000; i++) {
        snprintf(k, sizeof(k), "key%d", i);
        amap_put(&m, k, (void *) (intptr_t) (i + 1));
    }
    for (i = 0; i < 5000; i++) {
        snprintf(k, sizeof(k), "key%d", i);
        if ((intptr_t) amap_get(&m, k) != i + 1) {
            all = 0;
        }
    }
    ok(all, "5000 keys stored and found across rehashes");
    ok(amap_get(&m, "missing") == NULL, "absent key");
    is_int((int64_t) m.n, 5000, "count");
    amap_free(&m, NULL);
}


int
main(void)
{
    test_form();
    test_backoff();
    test_ledger();
    test_ledger_billed();
    test_report();
    test_map();
    return tap_done();
}
