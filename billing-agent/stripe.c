/*
 * Stripe-compatible HTTP client: see stripe.h.
 */

#include "stripe.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>


static char  *stripe_auth;          /* "Authorization: Bearer ..." */


static size_t
stripe_write_cb(char *p, size_t size, size_t n, void *data)
{
    abuf_add(data, p, size * n);
    return size * n;
}


/* case-insensitive "Name: value" match; value trimmed into val */
static int
header_is(const char *line, size_t len, const char *name, char *val,
    size_t vlen)
{
    size_t  nl = strlen(name), i = 0;

    if (len <= nl + 1 || strncasecmp(line, name, nl) != 0 || line[nl] != ':') {
        return 0;
    }
    line += nl + 1;
    len -= nl + 1;
    while (len && (*line == ' ' || *line == '\t')) {
        line++;
        len--;
    }
    while (len && (line[len - 1] == '\r' || line[len - 1] == '\n'
                   || line[len - 1] == ' '))
    {
        len--;
    }
    for (i = 0; i < len && i + 1 < vlen; i++) {
        val[i] = line[i];
    }
    val[i] = '\0';
    return 1;
}


static size_t
stripe_header_cb(char *p, size_t size, size_t n, void *data)
{
    stripe_resp_t  *r = data;
    char            v[32];

    if (header_is(p, size * n, "Stripe-Should-Retry", v, sizeof(v))) {
        r->should_retry = strcasecmp(v, "true") == 0;
    } else if (header_is(p, size * n, "Idempotent-Replayed", v, sizeof(v))) {
        r->replayed = strcasecmp(v, "true") == 0;
    }
    return size * n;
}


int
stripe_init(stripe_t *s, const char *base, const char *secret,
    double max_rps, long timeout_ms, int max_retries, char *err,
    size_t errlen)
{
    size_t  n;

    memset(s, 0, sizeof(*s));

    if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0) {
        snprintf(err, errlen, "curl_global_init failed");
        return -1;
    }
    s->curl = curl_easy_init();
    if (s->curl == NULL) {
        snprintf(err, errlen, "curl_easy_init failed");
        return -1;
    }

    s->base = xstrdup(base);
    n = strlen(s->base);
    while (n && s->base[n - 1] == '/') {
        s->base[--n] = '\0';
    }

    stripe_auth = xmalloc(strlen(secret) + 32);
    sprintf(stripe_auth, "Authorization: Bearer %s", secret);

    s->max_rps = max_rps;
    s->timeout_ms = timeout_ms;
    s->max_retries = max_retries;
    s->seed = (unsigned) (time(NULL) ^ getpid());
    s->next_us = 0;
    return 0;
}


void
stripe_free(stripe_t *s)
{
    if (stripe_auth) {
        /* do not leave the secret lying in freed memory */
        memset(stripe_auth, 0, strlen(stripe_auth));
        free(stripe_auth);
        stripe_auth = NULL;
    }
    if (s->curl) {
        curl_easy_cleanup(s->curl);
    }
    free(s->base);
    memset(s, 0, sizeof(*s));
}


void
stripe_resp_init(stripe_resp_t *r)
{
    memset(r, 0, sizeof(*r));
    abuf_init(&r->body);
}


void
stripe_resp_free(stripe_resp_t *r)
{
    abuf_free(&r->body);
}


static void
stripe_throttle(stripe_t *s)
{
    int64_t  now, gap;

    if (s->max_rps <= 0) {
        return;
    }
    gap = (int64_t) (1e6 / s->max_rps);
    now = agent_now_us();
    if (now < s->next_us) {
        agent_sleep_us(s->next_us - now);
        now = s->next_us;
    }
    s->next_us = now + gap;
}


/* the API's own error message, type and code, if the body is one */
static void
stripe_api_error(stripe_resp_t *r, int *idem)
{
    cJSON       *j, *e, *m, *t, *c;

    *idem = 0;
    j = cJSON_ParseWithLength(r->body.data ? r->body.data : "", r->body.len);
    e = j ? cJSON_GetObjectItemCaseSensitive(j, "error") : NULL;
    if (!cJSON_IsObject(e)) {
        snprintf(r->error, sizeof(r->error), "HTTP %ld", r->status);
        cJSON_Delete(j);
        return;
    }
    m = cJSON_GetObjectItemCaseSensitive(e, "message");
    t = cJSON_GetObjectItemCaseSensitive(e, "type");
    c = cJSON_GetObjectItemCaseSensitive(e, "code");
    snprintf(r->error, sizeof(r->error), "HTTP %ld %s%s%s: %s", r->status,
             cJSON_IsString(t) ? t->valuestring : "error",
             cJSON_IsString(c) ? "/" : "",
             cJSON_IsString(c) ? c->valuestring : "",
             cJSON_IsString(m) ? m->valuestring : "(no message)");
    if (cJSON_IsString(t) && strcmp(t->valuestring, "idempotency_error") == 0) {
        *idem = 1;
    }
    cJSON_Delete(j);
}


static void
stripe_classify(stripe_resp_t *r)
{
    int  idem;

    if (r->status >= 200 && r->status < 300) {
        r->cls = STRIPE_OK;
        return;
    }

    stripe_api_error(r, &idem);

    if (r->status == 401 || r->status == 403) {
        r->cls = STRIPE_AUTH;
    } else if (r->status >= 500) {
        /* the server may have acted before failing */
        r->cls = STRIPE_UNKNOWN;
    } else if (r->status == 400 && idem) {
        r->cls = STRIPE_IDEMPOTENCY;
    } else if (r->should_retry == 1) {
        r->cls = STRIPE_RETRY;
    } else if (r->should_retry == 0) {
        r->cls = STRIPE_FINAL;
    } else if (r->status == 409 || r->status == 429) {
        /* 409: the same key is still in flight; 429: nothing was done */
        r->cls = STRIPE_RETRY;
    } else {
        r->cls = STRIPE_FINAL;
    }
}


void
stripe_request(stripe_t *s, const char *path, const char *body,
    const char *idem_key, stripe_resp_t *r)
{
    struct curl_slist  *h = NULL;
    abuf_t              url, ik;
    char                cerr[CURL_ERROR_SIZE];
    CURLcode            rc;

    abuf_reset(&r->body);
    r->status = 0;
    r->should_retry = -1;
    r->replayed = 0;
    r->error[0] = '\0';
    cerr[0] = '\0';

    abuf_init(&url);
    abuf_init(&ik);
    abuf_printf(&url, "%s%s", s->base, path);

    h = curl_slist_append(h, stripe_auth);
    h = curl_slist_append(h, "Stripe-Version: " STRIPE_VERSION);
    h = curl_slist_append(h, "User-Agent: apimon-billing-agent/1");
    h = curl_slist_append(h, "Accept: application/json");
    /* no 100-continue round trip on bigger bodies */
    h = curl_slist_append(h, "Expect:");
    if (idem_key) {
        abuf_printf(&ik, "Idempotency-Key: %s", idem_key);
        h = curl_slist_append(h, ik.data);
    }
    if (body) {
        h = curl_slist_append(h,
                "Content-Type: application/x-www-form-urlencoded");
    }

    curl_easy_reset(s->curl);
    curl_easy_setopt(s->curl, CURLOPT_URL, url.data);
    curl_easy_setopt(s->curl, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(s->curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(s->curl, CURLOPT_TIMEOUT_MS, s->timeout_ms);
    curl_easy_setopt(s->curl, CURLOPT_CONNECTTIMEOUT_MS,
                     s->timeout_ms < 10000 ? s->timeout_ms : 10000L);
    curl_easy_setopt(s->curl, CURLOPT_WRITEFUNCTION, stripe_write_cb);
    curl_easy_setopt(s->curl, CURLOPT_WRITEDATA, &r->body);
    curl_easy_setopt(s->curl, CURLOPT_HEADERFUNCTION, stripe_header_cb);
    curl_easy_setopt(s->curl, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(s->curl, CURLOPT_ERRORBUFFER, cerr);
    if (body) {
        curl_easy_setopt(s->curl, CURLOPT_POST, 1L);
        curl_easy_setopt(s->curl, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(s->curl, CURLOPT_POSTFIELDSIZE, (long) strlen(body));
    } else {
        curl_easy_setopt(s->curl, CURLOPT_HTTPGET, 1L);
    }

    stripe_throttle(s);
    s->requests++;
    rc = curl_easy_perform(s->curl);

    if (rc != CURLE_OK) {
        r->status = 0;
        snprintf(r->error, sizeof(r->error), "%s",
                 cerr[0] ? cerr : curl_easy_strerror(rc));
        /* a refused connection never reached the server */
        r->cls = (rc == CURLE_COULDNT_CONNECT
                  || rc == CURLE_COULDNT_RESOLVE_HOST)
                 ? STRIPE_RETRY : STRIPE_UNKNOWN;
    } else {
        curl_easy_getinfo(s->curl, CURLINFO_RESPONSE_CODE, &r->status);
        stripe_classify(r);
    }

    /* the handle outlives this frame: drop pointers into it */
    curl_easy_setopt(s->curl, CURLOPT_HTTPHEADER, NULL);
    curl_easy_setopt(s->curl, CURLOPT_ERRORBUFFER, NULL);
    curl_slist_free_all(h);
    abuf_free(&url);
    abuf_free(&ik);
}


int64_t
stripe_backoff_us(stripe_t *s, int retry)
{
    int64_t  us;

    us = 500000 * (1 + (int64_t) retry * retry);
    if (us > 5000000) {
        us = 5000000;
    }
    /* jitter to 75-100% so parallel agents do not retry in step */
    return us * (75 + rand_r(&s->seed) % 26) / 100;
}


/* RFC 3986 unreserved characters: sent as they are */
static int
unreserved(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
           || (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_'
           || c == '~';
}


static void
form_escape(abuf_t *b, const char *s)
{
    const char  *p;
    char        *e;

    /* most values (numbers, ids, keys) need no escaping: skip the copy */
    for (p = s; *p && unreserved((unsigned char) *p); p++) { /* void */ }
    if (*p == '\0') {
        abuf_add(b, s, (size_t) (p - s));
        return;
    }

    e = curl_easy_escape(NULL, s, (int) strlen(s));
    if (e == NULL) {
        fputs("billing-agent: out of memory\n", stderr);
        exit(AGENT_EXIT_CONFIG);
    }
    abuf_adds(b, e);
    curl_free(e);
}


void
stripe_form_add(abuf_t *b, const char *key, const char *value)
{
    if (b->len) {
        abuf_add(b, "&", 1);
    }
    form_escape(b, key);
    abuf_add(b, "=", 1);
    form_escape(b, value);
}


/*
 * Calls each(obj, arg) for every object of one list page; *more, *last
 * set.  The callback's non-zero return ends the scan with it; -1 bad body.
 */
static int
stripe_scan_page(stripe_resp_t *r, stripe_each_pt each, void *arg,
    int *more, char *last, size_t lastlen)
{
    cJSON  *j, *data, *it, *id;
    int     rc = 0;

    j = cJSON_ParseWithLength(r->body.data ? r->body.data : "", r->body.len);
    data = j ? cJSON_GetObjectItemCaseSensitive(j, "data") : NULL;
    if (!cJSON_IsArray(data)) {
        snprintf(r->error, sizeof(r->error), "list: bad JSON");
        cJSON_Delete(j);
        return -1;
    }

    last[0] = '\0';
    cJSON_ArrayForEach(it, data) {
        id = cJSON_GetObjectItemCaseSensitive(it, "id");
        if (!cJSON_IsString(id)) {
            continue;
        }
        snprintf(last, lastlen, "%s", id->valuestring);
        if (rc == 0) {
            rc = each(it, arg);
        }
    }
    *more = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "has_more"));
    cJSON_Delete(j);
    return rc;
}


typedef struct {
    const char  *key;
    char        *item;
    size_t       itemlen;
} stripe_find_t;


static int
stripe_find_each(cJSON *it, void *arg)
{
    stripe_find_t  *f = arg;
    cJSON          *md, *k, *id;

    md = cJSON_GetObjectItemCaseSensitive(it, "metadata");
    k = md ? cJSON_GetObjectItemCaseSensitive(md, "apimon_key") : NULL;
    id = cJSON_GetObjectItemCaseSensitive(it, "id");
    if (cJSON_IsString(k) && strcmp(k->valuestring, f->key) == 0) {
        snprintf(f->item, f->itemlen, "%s", id->valuestring);
        return 1;
    }
    return 0;
}


int
stripe_find_item(stripe_t *s, const char *customer, const char *key,
    char *item, size_t itemlen, stripe_resp_t *r)
{
    return stripe_find(s, "invoiceitems", customer, key, item, itemlen, r);
}


int
stripe_find(stripe_t *s, const char *list, const char *customer,
    const char *key, char *item, size_t itemlen, stripe_resp_t *r)
{
    stripe_find_t  f = { key, item, itemlen };

    return stripe_list(s, list, customer, stripe_find_each, &f, r);
}


int
stripe_list(stripe_t *s, const char *list, const char *customer,
    stripe_each_pt each, void *arg, stripe_resp_t *r)
{
    abuf_t  path, query;
    char    last[256] = "";
    int     more = 1, rc, attempt;

    abuf_init(&path);
    abuf_init(&query);

    while (more) {
        /* the query is built on its own: stripe_form_add puts a '&' before
         * every pair but the first of its buffer */
        abuf_reset(&query);
        stripe_form_add(&query, "customer", customer);
        stripe_form_add(&query, "limit", "100");
        if (last[0]) {
            stripe_form_add(&query, "starting_after", last);
        }
        abuf_reset(&path);
        abuf_printf(&path, "/v1/%s?%s", list, query.data);

        /* a GET is safe to repeat: retry transient failures here */
        for (attempt = 0; ; attempt++) {
            stripe_request(s, path.data, NULL, NULL, r);
            if (r->cls == STRIPE_OK) {
                break;
            }
            if ((r->cls != STRIPE_UNKNOWN && r->cls != STRIPE_RETRY)
                || attempt >= s->max_retries)
            {
                abuf_free(&path);
                abuf_free(&query);
                return -1;
            }
            agent_sleep_us(stripe_backoff_us(s, attempt));
        }

        rc = stripe_scan_page(r, each, arg, &more, last, sizeof(last));
        if (rc != 0) {
            abuf_free(&path);
            abuf_free(&query);
            return rc;
        }
        if (last[0] == '\0') {
            break;
        }
    }

    abuf_free(&path);
    abuf_free(&query);
    return 0;
}
