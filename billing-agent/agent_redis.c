/*
 * Redis for the billing agent: see agent_redis.h.  The one user of the
 * scripts' texts; the callers include the generated header for the names.
 */

#include "agent_redis.h"
#include "redis_addr.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <ngx_http_apimon_scripts.h>


/* one handshake command: 0, or -1 with Redis's error (never the password) */
static int
ar_handshake_cmd(redisContext *c, const char *name, char *err, size_t errlen,
    const char *what, const char *fmt, const char *arg)
{
    redisReply  *r;
    int          rc = 0;

    r = redisCommand(c, fmt, arg);
    if (r == NULL || r->type == REDIS_REPLY_ERROR) {
        snprintf(err, errlen, "Redis %s failed at %s: %s", what, name,
                 r ? r->str : c->errstr);
        rc = -1;
    }
    if (r) {
        freeReplyObject(r);
    }
    return rc;
}


/*
 * AUTH, SELECT, or else a PING: a Redis that wants a password we do not
 * have says so now (NOAUTH), not at the first command of the run
 */
static int
ar_handshake(redisContext *c, const ar_addr_t *a, const char *name,
    const char *password, char *err, size_t errlen)
{
    char  db[8];

    if (password && *password
        && ar_handshake_cmd(c, name, err, errlen, "AUTH", "AUTH %s",
                            password) != 0)
    {
        return -1;
    }

    if (a->db != 0) {
        snprintf(db, sizeof(db), "%d", a->db);
        return ar_handshake_cmd(c, name, err, errlen, "SELECT", "SELECT %s",
                                db);
    }

    if (password == NULL || *password == '\0') {
        return ar_handshake_cmd(c, name, err, errlen, "PING", "PING%s", "");
    }

    return 0;
}


/* a password read from a file leaves no copy in freed memory */
static void
ar_password_free(char *p)
{
    if (p) {
        explicit_bzero(p, strlen(p));
        free(p);
    }
}


redisContext *
ar_connect(const char *addr, const char *password, char *err, size_t errlen)
{
    redisContext    *c;
    struct timeval   tv;
    ar_addr_t        a;
    char             name[300], *file_password = NULL;
    int              rc;

    if (ar_addr_parse(addr, &a, err, errlen) != 0) {
        return NULL;
    }
    ar_addr_name(&a, name, sizeof(name));

    /* a password file, as the module's, wins over APIMON_REDIS_PASSWORD */
    if (a.password_file[0]) {
        file_password = ar_addr_password(&a, err, errlen);
        if (file_password == NULL) {
            return NULL;
        }
        password = file_password;
    }

    tv.tv_sec = a.connect_timeout_ms / 1000;
    tv.tv_usec = (a.connect_timeout_ms % 1000) * 1000;

    c = a.path[0] ? redisConnectUnixWithTimeout(a.path, tv)
                  : redisConnectWithTimeout(a.host, a.port, tv);

    if (c == NULL || c->err) {
        snprintf(err, errlen, "cannot connect to Redis at %s: %s", name,
                 c ? c->errstr : "out of memory");
        if (c) {
            redisFree(c);
        }
        ar_password_free(file_password);
        return NULL;
    }

    /* the handshake within the connect timeout; then a stuck Redis must
     * not hang a cron job forever */
    redisSetTimeout(c, tv);
    rc = ar_handshake(c, &a, name, password, err, errlen);

    ar_password_free(file_password);

    if (rc != 0) {
        redisFree(c);
        return NULL;
    }

    tv.tv_sec = 30;
    tv.tv_usec = 0;
    redisSetTimeout(c, tv);

    return c;
}


static redisReply *
ar_call(redisContext *c, const char *cmd, const char *body, size_t bodylen,
    int nkeys, const char **argv, int argc)
{
    const char  **av;
    size_t       *al;
    char          nk[16];
    redisReply   *r;
    int           i;

    av = xmalloc(sizeof(char *) * (size_t) (argc + 3));
    al = xmalloc(sizeof(size_t) * (size_t) (argc + 3));
    snprintf(nk, sizeof(nk), "%d", nkeys);

    av[0] = cmd;
    al[0] = strlen(cmd);
    av[1] = body;
    al[1] = bodylen;
    av[2] = nk;
    al[2] = strlen(nk);
    for (i = 0; i < argc; i++) {
        av[i + 3] = argv[i];
        al[i + 3] = strlen(argv[i]);
    }

    r = redisCommandArgv(c, argc + 3, av, al);
    free(av);
    free(al);
    return r;
}


redisReply *
ar_script(redisContext *c, unsigned script, int nkeys, const char **argv,
    int argc)
{
    const apimon_script_t  *sc = &apimon_scripts[script];
    redisReply             *r;

    r = ar_call(c, "EVALSHA", sc->sha1, 40, nkeys, argv, argc);

    /* NOSCRIPT: Redis lost its script cache and did not run it: send it */
    if (r && r->type == REDIS_REPLY_ERROR
        && strncmp(r->str, "NOSCRIPT", 8) == 0)
    {
        freeReplyObject(r);
        r = ar_call(c, "EVAL", sc->text, sc->len, nkeys, argv, argc);
    }

    return r;
}


int
ar_script_error(const redisReply *r, char *code, size_t codelen,
    const char **msg)
{
    const char  *p, *colon;
    size_t       n;

    if (r == NULL || r->type != REDIS_REPLY_ERROR) {
        return -1;
    }

    p = r->str;
    if (strncmp(p, "ERR ", 4) == 0) {
        p += 4;
    }
    if (strncmp(p, "apimon ", 7) != 0) {
        return -1;
    }
    p += 7;
    colon = strchr(p, ':');
    if (colon == NULL) {
        return -1;
    }
    n = (size_t) (colon - p);
    if (n >= codelen) {
        n = codelen - 1;
    }
    memcpy(code, p, n);
    code[n] = '\0';
    for (colon++; *colon == ' '; colon++) { /* void */ }
    *msg = colon;
    return 0;
}


int
ar_lock_acquire(redisContext *c, const char *token, int64_t ttl_ms)
{
    redisReply  *r;
    int          rc;

    r = redisCommand(c, "SET %s %s NX PX %lld", AR_LOCK_KEY, token,
                     (long long) ttl_ms);
    if (r == NULL || r->type == REDIS_REPLY_ERROR) {
        rc = -1;
    } else {
        rc = (r->type == REDIS_REPLY_STATUS) ? 1 : 0;
    }
    if (r) {
        freeReplyObject(r);
    }
    return rc;
}


/*
 * Compare-and-act without a script of our own: WATCH the key, check the
 * token, then MULTI/EXEC; EXEC fails if anyone touched the key meanwhile.
 */
static int
ar_lock_owned_exec(redisContext *c, const char *token, const char *cmd,
    int64_t ttl_ms)
{
    redisReply  *r;
    int          owned, rc = -1;

    r = redisCommand(c, "WATCH %s", AR_LOCK_KEY);
    if (r == NULL) {
        return -1;
    }
    freeReplyObject(r);

    r = redisCommand(c, "GET %s", AR_LOCK_KEY);
    if (r == NULL) {
        return -1;
    }
    owned = (r->type == REDIS_REPLY_STRING && strcmp(r->str, token) == 0);
    freeReplyObject(r);

    if (!owned) {
        r = redisCommand(c, "UNWATCH");
        if (r) {
            freeReplyObject(r);
        }
        return 0;
    }

    redisAppendCommand(c, "MULTI");
    if (strcmp(cmd, "DEL") == 0) {
        redisAppendCommand(c, "DEL %s", AR_LOCK_KEY);
    } else {
        redisAppendCommand(c, "PEXPIRE %s %lld", AR_LOCK_KEY,
                           (long long) ttl_ms);
    }
    redisAppendCommand(c, "EXEC");

    for (int i = 0; i < 3; i++) {
        if (redisGetReply(c, (void **) &r) != REDIS_OK) {
            return -1;
        }
        if (i == 2) {
            rc = (r->type == REDIS_REPLY_ARRAY) ? 1 : 0;
        }
        freeReplyObject(r);
    }
    return rc;
}


int
ar_lock_refresh(redisContext *c, const char *token, int64_t ttl_ms)
{
    return ar_lock_owned_exec(c, token, "PEXPIRE", ttl_ms);
}


int
ar_lock_release(redisContext *c, const char *token)
{
    return ar_lock_owned_exec(c, token, "DEL", 0);
}


int
ar_time_ms(redisContext *c, int64_t *ms, char *err, size_t errlen)
{
    redisReply  *r;
    int64_t      sec, usec;
    int          rc = -1;

    r = redisCommand(c, "TIME");
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 2
        && r->element[0]->type == REDIS_REPLY_STRING
        && r->element[1]->type == REDIS_REPLY_STRING
        && agent_parse_i64(r->element[0]->str, r->element[0]->len, &sec) == 0
        && agent_parse_i64(r->element[1]->str, r->element[1]->len, &usec)
           == 0)
    {
        *ms = sec * 1000 + usec / 1000;
        rc = 0;
    } else {
        snprintf(err, errlen, "Redis TIME: %s", r == NULL ? c->errstr
                 : r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
    }
    if (r) {
        freeReplyObject(r);
    }
    return rc;
}


/* what keeps usage and quotas through a Redis crash (README, "Redis") */
static const struct {
    const char  *name;
    const char  *ok[2];      /* accepted values */
    const char  *wanted;
} ar_persistence_rules[] = {
    { "appendonly", { "yes", NULL }, "yes" },
    { "appendfsync", { "everysec", "always" }, "everysec" },
    { "maxmemory-policy", { "noeviction", NULL }, "noeviction" },
};


int
ar_persistence(redisContext *c, char *msg, size_t msglen)
{
    redisReply  *r;
    size_t       i, used = 0;
    const char  *v;
    int          bad = 0, n;

    msg[0] = '\0';
    for (i = 0; i < sizeof(ar_persistence_rules)
                    / sizeof(ar_persistence_rules[0]); i++)
    {
        r = redisCommand(c, "CONFIG GET %s", ar_persistence_rules[i].name);
        if (r == NULL || r->type == REDIS_REPLY_ERROR) {
            /* managed Redis often renames or denies CONFIG */
            snprintf(msg, msglen, "%s", r ? r->str : c->errstr);
            if (r) {
                freeReplyObject(r);
            }
            return -1;
        }
        v = (r->type == REDIS_REPLY_ARRAY && r->elements == 2
             && r->element[1]->type == REDIS_REPLY_STRING)
            ? r->element[1]->str : NULL;
        if (v && strcasecmp(v, ar_persistence_rules[i].ok[0]) != 0
            && (ar_persistence_rules[i].ok[1] == NULL
                || strcasecmp(v, ar_persistence_rules[i].ok[1]) != 0))
        {
            n = snprintf(msg + used, msglen - used, "%s%s is \"%s\" (needs "
                         "%s)", bad ? ", " : "", ar_persistence_rules[i].name,
                         v, ar_persistence_rules[i].wanted);
            used += (n > 0 && (size_t) n < msglen - used) ? (size_t) n : 0;
            bad = 1;
        }
        freeReplyObject(r);
    }
    return bad;
}
