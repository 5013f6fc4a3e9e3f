/*
 * billing-agent notify: reads apimon:events with the consumer group
 * apimon-notify, POSTs each event as JSON to the webhooks of the applied
 * catalog (apimon:catalog:settings and the event plan's
 * apimon:plan:<name>:rules), signed "Apimon-Signature: t=<s>,v1=<hex>"
 * (HMAC-SHA256 over "<t>.<body>"), and acknowledges an event only once
 * every webhook answered 2xx.  Retries with backoff on 5xx, 429, timeouts
 * and connection errors; after --max-attempts, or on another 4xx, the event
 * goes to apimon:events:dead and is acknowledged in the same MULTI.
 * At least once: a crash between a 2xx and the XACK delivers again, with the
 * same event id (docs/webhooks.md).
 */

#include "notify.h"
#include "agent_redis.h"
#include "util.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <ngx_http_apimon_version.h>

#define NOTIFY_BATCH        10
#define NOTIFY_BLOCK_MS     1000
#define NOTIFY_MAX_TARGETS  16
#define NOTIFY_DEAD_MAXLEN  "100000"
#define NOTIFY_BACKOFF_MS   250      /* doubled per attempt, at most 5 s */

/* the event fields that are numbers in the JSON body */
static const char *const numeric[] = { "threshold", "used", "limit",
    "periodStart", "periodEnd", "time", NULL };

typedef enum {
    DELIVER_OK = 0,
    DELIVER_RETRY,                   /* 5xx, 429, timeout, connection */
    DELIVER_FINAL                    /* another answer: retrying won't help */
} deliver_e;

typedef struct {
    char  *url;
    char  *secret_file;
    int    done;
} target_t;

static volatile sig_atomic_t  notify_stop;


static void
notify_signal(int sig)
{
    (void) sig;
    notify_stop = 1;
}


static int
is_numeric(const char *name)
{
    const char *const *n;

    for (n = numeric; *n != NULL; n++) {
        if (strcmp(*n, name) == 0) {
            return 1;
        }
    }
    return 0;
}


/* the entry's fields as a JSON object: the body every webhook gets */
static char *
event_body(const redisReply *fields, const char **id, const char **plan)
{
    cJSON    *o = cJSON_CreateObject();
    char     *body;
    int64_t   v;
    size_t    i;

    for (i = 0; i + 1 < fields->elements; i += 2) {
        const char  *k = fields->element[i]->str;
        const char  *s = fields->element[i + 1]->str;

        if (k == NULL || s == NULL) {
            continue;
        }
        if (strcmp(k, "id") == 0) {
            *id = s;
        } else if (strcmp(k, "plan") == 0) {
            *plan = s;
        }
        if (is_numeric(k) && agent_parse_i64(s, strlen(s), &v) == 0) {
            cJSON_AddItemToObject(o, k, cJSON_CreateNumber((double) v));
        } else {
            cJSON_AddItemToObject(o, k, cJSON_CreateString(s));
        }
    }
    body = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return body;
}


/* adds the webhooks of a stored JSON list [{"url","secretFile"}] */
static void
add_targets(const char *json, target_t *t, size_t *n)
{
    cJSON        *arr = json ? cJSON_Parse(json) : NULL;
    const cJSON  *w, *url, *file;

    cJSON_ArrayForEach(w, arr) {
        url = cJSON_GetObjectItemCaseSensitive(w, "url");
        file = cJSON_GetObjectItemCaseSensitive(w, "secretFile");
        if (*n < NOTIFY_MAX_TARGETS && cJSON_IsString(url)
            && cJSON_IsString(file))
        {
            t[*n].url = xstrdup(url->valuestring);
            t[*n].secret_file = xstrdup(file->valuestring);
            t[*n].done = 0;
            (*n)++;
        }
    }
    cJSON_Delete(arr);
}


/* the catalog's webhooks, then the plan's; -1 on a Redis error */
static int
load_targets(redisContext *c, const char *plan, target_t *t, size_t *n)
{
    redisReply  *r;

    *n = 0;
    r = redisCommand(c, "HGET apimon:catalog:settings webhooks");
    if (r == NULL) {
        return -1;
    }
    add_targets(r->type == REDIS_REPLY_STRING ? r->str : NULL, t, n);
    freeReplyObject(r);
    if (plan == NULL || plan[0] == '\0') {
        return 0;
    }
    r = redisCommand(c, "HGET apimon:plan:%s:rules webhooks", plan);
    if (r == NULL) {
        return -1;
    }
    add_targets(r->type == REDIS_REPLY_STRING ? r->str : NULL, t, n);
    freeReplyObject(r);
    return 0;
}


static void
free_targets(target_t *t, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++) {
        free(t[i].url);
        free(t[i].secret_file);
    }
}


/* "t=<unix seconds>,v1=<hex HMAC-SHA256 of '<t>.<body>'>" */
static void
sign(const char *secret, const char *body, int64_t t, char *out, size_t len)
{
    unsigned char  mac[EVP_MAX_MD_SIZE];
    unsigned int   maclen = 0, i;
    abuf_t         msg;
    size_t         n;

    abuf_init(&msg);
    abuf_printf(&msg, "%lld.", (long long) t);
    abuf_adds(&msg, body);
    HMAC(EVP_sha256(), secret, (int) strlen(secret),
         (const unsigned char *) msg.data, msg.len, mac, &maclen);
    abuf_free(&msg);
    n = (size_t) snprintf(out, len, "t=%lld,v1=", (long long) t);
    for (i = 0; i < maclen && n + 3 <= len; i++) {
        n += (size_t) snprintf(out + n, len - n, "%02x", mac[i]);
    }
}


/*
 * "https://host:port" of a URL for the logs: the path and query of a
 * webhook URL may hold a token (Slack-style hooks), the host does not.
 */
static void
url_origin(const char *url, char *out, size_t len)
{
    const char  *p = strstr(url, "://");
    const char  *at, *end;

    p = p ? p + 3 : url;
    end = p + strcspn(p, "/?#");
    at = memchr(p, '@', (size_t) (end - p));
    snprintf(out, len, "%.*s%.*s", (int) (p - url), url,
             (int) (end - (at ? at + 1 : p)), at ? at + 1 : p);
}


/* printable ASCII only in a header value */
static void
header_safe(char *s)
{
    for (; *s != '\0'; s++) {
        if ((unsigned char) *s < 0x20 || (unsigned char) *s >= 0x7f) {
            *s = '?';
        }
    }
}


static size_t
discard(char *p, size_t size, size_t nmemb, void *data)
{
    (void) p;
    (void) data;
    return size * nmemb;
}


static deliver_e
deliver(const notify_opts_t *o, target_t *t, const char *id,
    const char *body, char *why, size_t whylen)
{
    struct curl_slist  *h = NULL;
    CURL               *curl;
    CURLcode            rc;
    char               *secret, err[512], hdr[256], cerr[CURL_ERROR_SIZE];
    long                status = 0;

    secret = agent_read_secret(t->secret_file, "secretFile", err,
                               sizeof(err));
    if (secret == NULL) {
        snprintf(why, whylen, "%s", err);
        return DELIVER_RETRY;        /* the operator may fix the file */
    }
    snprintf(hdr, sizeof(hdr), "Apimon-Signature: ");
    sign(secret, body, agent_now_ms() / 1000, hdr + strlen(hdr),
         sizeof(hdr) - strlen(hdr));
    memset(secret, 0, strlen(secret));
    free(secret);

    h = curl_slist_append(h, "Content-Type: application/json");
    h = curl_slist_append(h, hdr);
    snprintf(hdr, sizeof(hdr), "Apimon-Event-Id: %.200s", id);
    header_safe(hdr);
    h = curl_slist_append(h, hdr);
    h = curl_slist_append(h, "User-Agent: apimon-billing-agent/"
                             APIMON_VERSION);
    h = curl_slist_append(h, "Expect:");

    curl = curl_easy_init();
    if (curl == NULL) {
        curl_slist_free_all(h);
        snprintf(why, whylen, "curl_easy_init failed");
        return DELIVER_RETRY;
    }
    cerr[0] = '\0';
    curl_easy_setopt(curl, CURLOPT_URL, t->url);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, o->timeout_ms);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, o->timeout_ms);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, (long) strlen(body));
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, cerr);
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
    rc = curl_easy_perform(curl);
    if (rc == CURLE_OK) {
        curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    }
    curl_easy_cleanup(curl);
    curl_slist_free_all(h);

    if (rc != CURLE_OK) {
        snprintf(why, whylen, "%s", cerr[0] ? cerr : curl_easy_strerror(rc));
        return DELIVER_RETRY;
    }
    snprintf(why, whylen, "HTTP %ld", status);
    if (status >= 200 && status < 300) {
        return DELIVER_OK;
    }
    return status >= 500 || status == 429 || status == 408
           ? DELIVER_RETRY : DELIVER_FINAL;
}


/* the entry into apimon:events:dead and its XACK, in one MULTI */
static int
park(redisContext *c, const char *sid, const redisReply *fields, int attempts,
    const char *why)
{
    const char  **argv;
    size_t       *lens, n = 0, i;
    char          att[16], now[24];
    redisReply   *r;
    int           rc = 0;

    argv = xcalloc(fields->elements + 16, sizeof(char *));
    lens = xcalloc(fields->elements + 16, sizeof(size_t));
#define ARG(s) (argv[n] = (s), lens[n] = strlen(argv[n]), n++)
    ARG("XADD");
    ARG(NOTIFY_DEAD);
    ARG("MAXLEN");
    ARG("~");
    ARG(NOTIFY_DEAD_MAXLEN);
    ARG("*");
    for (i = 0; i + 1 < fields->elements; i += 2) {
        if (fields->element[i]->str && fields->element[i + 1]->str) {
            ARG(fields->element[i]->str);
            ARG(fields->element[i + 1]->str);
        }
    }
    snprintf(att, sizeof(att), "%d", attempts);
    snprintf(now, sizeof(now), "%lld", (long long) agent_now_ms());
    ARG("streamId");
    ARG(sid);
    ARG("attempts");
    ARG(att);
    ARG("reason");
    ARG(why);
    ARG("failedAt");
    ARG(now);
#undef ARG
    redisAppendCommand(c, "MULTI");
    redisAppendCommandArgv(c, (int) n, argv, lens);
    redisAppendCommand(c, "XACK %s %s %s", NOTIFY_STREAM, NOTIFY_GROUP, sid);
    redisAppendCommand(c, "EXEC");
    for (i = 0; i < 4; i++) {
        if (redisGetReply(c, (void **) &r) != REDIS_OK) {
            rc = -1;
            break;
        }
        if (r->type == REDIS_REPLY_ERROR) {
            agent_err("notify: Redis: %s", r->str);
            rc = -1;
        }
        freeReplyObject(r);
    }
    free(argv);
    free(lens);
    return rc;
}


static int
ack(redisContext *c, const char *sid)
{
    redisReply *r = redisCommand(c, "XACK %s %s %s", NOTIFY_STREAM,
                                 NOTIFY_GROUP, sid);

    if (r == NULL) {
        return -1;
    }
    freeReplyObject(r);
    return 0;
}


/* delivers every webhook of one entry; -1 on a Redis error */
static int
handle_entry(const notify_opts_t *o, redisContext *c, const redisReply *e)
{
    const redisReply  *fields;
    const char        *sid, *id = NULL, *plan = NULL;
    target_t           t[NOTIFY_MAX_TARGETS];
    size_t             n = 0, i, left;
    char               why[600] = "no webhook in the catalog", *body;
    char               origin[256];
    int                attempt, rc, final = 0;
    int64_t            backoff = NOTIFY_BACKOFF_MS;

    if (e->type != REDIS_REPLY_ARRAY || e->elements < 2
        || e->element[0]->type != REDIS_REPLY_STRING)
    {
        return 0;
    }
    sid = e->element[0]->str;
    fields = e->element[1];
    if (fields->type != REDIS_REPLY_ARRAY) {
        return ack(c, sid);          /* trimmed away meanwhile */
    }
    body = event_body(fields, &id, &plan);
    if (id == NULL) {
        id = sid;
    }
    if (load_targets(c, plan, t, &n) != 0) {
        free(body);
        return -1;
    }
    left = n;
    for (attempt = 1; left > 0 && !final; attempt++) {
        for (i = 0; i < n; i++) {
            if (t[i].done) {
                continue;
            }
            rc = deliver(o, &t[i], id, body, why, sizeof(why));
            if (rc == DELIVER_OK) {
                t[i].done = 1;
                left--;
            } else {
                url_origin(t[i].url, origin, sizeof(origin));
                agent_log("notify: event %s to %s: %s (attempt %d)", id,
                          origin, why, attempt);
                final |= rc == DELIVER_FINAL;
            }
        }
        if (left == 0 || final || attempt >= o->max_attempts || notify_stop) {
            break;
        }
        agent_sleep_us(backoff * 1000);
        backoff = backoff * 2 > 5000 ? 5000 : backoff * 2;
    }
    if (n > 0 && left == 0) {
        agent_log("notify: event %s delivered to %zu webhook(s)", id, n);
        rc = ack(c, sid);
    } else if (notify_stop && !final && n > 0) {
        rc = 0;                      /* left pending: delivered again later */
    } else {
        agent_err("notify: event %s parked in %s: %s", id, NOTIFY_DEAD, why);
        rc = park(c, sid, fields, n > 0 ? attempt : 0, why);
    }
    free_targets(t, n);
    free(body);
    return rc;
}


/* handles the entries of an XREADGROUP / XAUTOCLAIM list; their count or -1 */
static int
handle_list(const notify_opts_t *o, redisContext *c, const redisReply *list)
{
    size_t i;

    if (list == NULL || list->type != REDIS_REPLY_ARRAY) {
        return 0;
    }
    for (i = 0; i < list->elements && !notify_stop; i++) {
        if (handle_entry(o, c, list->element[i]) != 0) {
            return -1;
        }
    }
    return (int) list->elements;
}


static int
ensure_group(redisContext *c)
{
    redisReply  *r;
    int          rc = 0;

    r = redisCommand(c, "XGROUP CREATE %s %s 0 MKSTREAM", NOTIFY_STREAM,
                     NOTIFY_GROUP);
    if (r == NULL) {
        agent_err("notify: Redis: %s", c->errstr);
        return -1;
    }
    if (r->type == REDIS_REPLY_ERROR && strncmp(r->str, "BUSYGROUP", 9) != 0) {
        agent_err("notify: XGROUP CREATE: %s", r->str);
        rc = -1;
    }
    freeReplyObject(r);
    return rc;
}


/* entries of a consumer gone idle for claim_idle_ms: now ours */
static int
claim(const notify_opts_t *o, redisContext *c, const char *me)
{
    redisReply  *r;
    int          n;

    r = redisCommand(c, "XAUTOCLAIM %s %s %s %lld 0-0 COUNT %d",
                     NOTIFY_STREAM, NOTIFY_GROUP, me,
                     (long long) o->claim_idle_ms, NOTIFY_BATCH);
    if (r == NULL || r->type == REDIS_REPLY_ERROR) {
        agent_err("notify: XAUTOCLAIM: %s", r ? r->str : c->errstr);
        if (r) {
            freeReplyObject(r);
        }
        return -1;
    }
    n = r->type == REDIS_REPLY_ARRAY && r->elements >= 2
        ? handle_list(o, c, r->element[1]) : 0;
    freeReplyObject(r);
    return n;
}


/* our own pending entries (from) "0", or new ones ">"; count or -1 */
static int
read_group(const notify_opts_t *o, redisContext *c, const char *me,
    const char *from, int block)
{
    redisReply  *r;
    int          n = 0;

    if (block) {
        r = redisCommand(c, "XREADGROUP GROUP %s %s COUNT %d BLOCK %d "
                         "STREAMS %s %s", NOTIFY_GROUP, me, NOTIFY_BATCH,
                         NOTIFY_BLOCK_MS, NOTIFY_STREAM, from);
    } else {
        r = redisCommand(c, "XREADGROUP GROUP %s %s COUNT %d STREAMS %s %s",
                         NOTIFY_GROUP, me, NOTIFY_BATCH, NOTIFY_STREAM, from);
    }
    if (r == NULL || r->type == REDIS_REPLY_ERROR) {
        agent_err("notify: XREADGROUP: %s", r ? r->str : c->errstr);
        if (r) {
            freeReplyObject(r);
        }
        return -1;
    }
    /* [[stream, [entries]]] or nil */
    if (r->type == REDIS_REPLY_ARRAY && r->elements > 0
        && r->element[0]->elements >= 2)
    {
        n = handle_list(o, c, r->element[0]->element[1]);
    }
    freeReplyObject(r);
    return n;
}


/* one connection's work: -1 on a Redis error, else done (stop or drained) */
static int
notify_session(const notify_opts_t *o, redisContext *c, const char *me)
{
    int  n, m;

    if (ensure_group(c) != 0) {
        return -1;
    }
    /* what this consumer read before and did not acknowledge */
    do {
        n = read_group(o, c, me, "0", 0);
    } while (n > 0 && !notify_stop);
    if (n < 0) {
        return -1;
    }
    while (!notify_stop) {
        m = claim(o, c, me);
        n = m < 0 ? -1 : read_group(o, c, me, ">", !o->once);
        if (m < 0 || n < 0) {
            return -1;
        }
        if (o->once && n == 0 && m == 0) {
            break;
        }
    }
    return 0;
}


int
notify_run(const notify_opts_t *o)
{
    struct sigaction  sa;
    redisContext     *c;
    char              me[128], host[64], err[512];
    int               rc;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = notify_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    if (o->consumer) {
        snprintf(me, sizeof(me), "%s", o->consumer);
    } else {
        if (gethostname(host, sizeof(host)) != 0) {
            snprintf(host, sizeof(host), "agent");
        }
        host[sizeof(host) - 1] = '\0';
        snprintf(me, sizeof(me), "%s-%ld", host, (long) getpid());
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0) {
        agent_err("notify: curl_global_init failed");
        return AGENT_EXIT_CONFIG;
    }
    c = ar_connect(o->redis_addr, o->redis_password, err, sizeof(err));
    if (c == NULL) {
        agent_err("%s", err);
        curl_global_cleanup();
        return AGENT_EXIT_CONFIG;
    }
    agent_log("notify: consumer %s of %s on %s", me, NOTIFY_GROUP,
              NOTIFY_STREAM);
    for ( ;; ) {
        rc = notify_session(o, c, me);
        redisFree(c);
        c = NULL;
        if (rc == 0 || o->once || notify_stop) {
            break;
        }
        /* Redis went away: the unacknowledged entries stay pending */
        agent_sleep_us(1000000);
        c = ar_connect(o->redis_addr, o->redis_password, err, sizeof(err));
        while (c == NULL && !notify_stop) {
            agent_sleep_us(1000000);
            c = ar_connect(o->redis_addr, o->redis_password, err,
                           sizeof(err));
        }
        if (c == NULL) {
            break;
        }
    }
    if (c) {
        redisFree(c);
    }
    curl_global_cleanup();
    return rc == 0 ? AGENT_EXIT_OK : AGENT_EXIT_FAILED;
}
