/*
 * Unit tests of the agent's Redis address (redis_addr.c): every form the
 * module's apimon_redis takes, and the refusals, each naming its fault.
 */

#include <stdio.h>
#include <string.h>

#include "redis_addr.h"
#include "tap.h"


typedef struct {
    const char  *spec;
    const char  *name;          /* ar_addr_name(), or NULL: refused */
    int          db;
    const char  *password_file;
    long         timeout_ms;
    const char  *err;           /* part of the refusal's message */
} addr_case_t;

static const addr_case_t  cases[] = {
    { "127.0.0.1:6380", "127.0.0.1:6380", 0, "", 5000, NULL },
    { "127.0.0.1", "127.0.0.1:6379", 0, "", 5000, NULL },
    { "localhost", "localhost:6379", 0, "", 5000, NULL },
    { "redis-1.example.net:7000", "redis-1.example.net:7000", 0, "", 5000,
      NULL },
    { "[::1]:6381", "[::1]:6381", 0, "", 5000, NULL },
    { "[::1]", "[::1]:6379", 0, "", 5000, NULL },
    { "[2001:db8::7]:1", "[2001:db8::7]:1", 0, "", 5000, NULL },
    { "unix:/run/redis/redis.sock", "unix:/run/redis/redis.sock", 0, "",
      5000, NULL },
    { "/tmp/r.sock", "unix:/tmp/r.sock", 0, "", 5000, NULL },
    { "127.0.0.1:6379 db=3", "127.0.0.1:6379", 3, "", 5000, NULL },
    { "  [::1]:6379\tdb=65535  password_file=/etc/p  connect_timeout=250ms ",
      "[::1]:6379", 65535, "/etc/p", 250, NULL },
    { "unix:/s password_file=rel/pw connect_timeout=2s", "unix:/s", 0,
      "rel/pw", 2000, NULL },
    { "h connect_timeout=3", "h:6379", 0, "", 3000, NULL },
    { "h connect_timeout=1m", "h:6379", 0, "", 60000, NULL },

    { "", NULL, 0, "", 0, "empty Redis address" },
    { "   ", NULL, 0, "", 0, "empty Redis address" },
    { "::1", NULL, 0, "", 0, "goes in brackets" },
    { "::1:6379", NULL, 0, "", 0, "goes in brackets" },
    { "[::1", NULL, 0, "", 0, "bad IPv6 address" },
    { "[]:6379", NULL, 0, "", 0, "bad IPv6 address" },
    { "[not-v6]:6379", NULL, 0, "", 0, "bad IPv6 address \"not-v6\"" },
    { "[::1]6379", NULL, 0, "", 0, "may follow ']'" },
    { "127.0.0.1:0", NULL, 0, "", 0, "bad port" },
    { "127.0.0.1:65536", NULL, 0, "", 0, "bad port" },
    { "127.0.0.1:", NULL, 0, "", 0, "bad port" },
    { "127.0.0.1:+1", NULL, 0, "", 0, "bad port" },
    { "127.0.0.1:63x", NULL, 0, "", 0, "bad port" },
    { ":6379", NULL, 0, "", 0, "bad host" },
    { "ho/st:1", NULL, 0, "", 0, "bad host" },
    { "unix:", NULL, 0, "", 0, "needs the path" },
    { "unix:/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
      "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", NULL, 0, "", 0,
      "longer than 107 bytes" },
    { "h db=", NULL, 0, "", 0, "invalid database number" },
    { "h db=-1", NULL, 0, "", 0, "invalid database number" },
    { "h db=65536", NULL, 0, "", 0, "invalid database number" },
    { "h db=1 db=2", NULL, 0, "", 0, "\"db=\" given twice" },
    { "h password_file=", NULL, 0, "", 0, "needs a file name" },
    { "h connect_timeout=0", NULL, 0, "", 0, "invalid connect timeout" },
    { "h connect_timeout=ms", NULL, 0, "", 0, "invalid connect timeout" },
    { "h connect_timeout=2h", NULL, 0, "", 0, "invalid connect timeout" },
    { "h connect_timeout=61m", NULL, 0, "", 0, "invalid connect timeout" },
    { "h password=secret", NULL, 0, "", 0, "unknown parameter" },
    { "h:1 h:2", NULL, 0, "", 0, "unknown parameter \"h:2\"" },
};


int
main(void)
{
    const addr_case_t  *c;
    ar_addr_t           a;
    char                err[256], name[300];
    size_t              i;
    int                 rc;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        c = &cases[i];
        err[0] = '\0';
        rc = ar_addr_parse(c->spec, &a, err, sizeof(err));

        if (c->name == NULL) {
            is_int(rc, -1, "\"%s\" refused", c->spec);
            like(err, c->err, "\"%s\": the reason", c->spec);
            continue;
        }

        if (!is_int(rc, 0, "\"%s\" parsed", c->spec)) {
            diag("%s", err);
            continue;
        }
        ar_addr_name(&a, name, sizeof(name));
        is_str(name, c->name, "\"%s\": address", c->spec);
        is_int(a.db, c->db, "\"%s\": db", c->spec);
        is_str(a.password_file, c->password_file, "\"%s\": password_file",
               c->spec);
        is_int(a.connect_timeout_ms, c->timeout_ms, "\"%s\": connect timeout",
               c->spec);
    }

    return tap_done();
}
