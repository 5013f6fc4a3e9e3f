/*
 * The billing ledger: see ledger.h and schema/README.md.
 */

#include "ledger.h"
#include "agent_redis.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <cjson/cJSON.h>
#include <ngx_http_apimon_scripts.h>


static const char  *ledger_names[] = {
    "", "computed", "posted", "done", "failed"
};


const char *
ledger_state_name(ledger_state_e s)
{
    return ledger_names[s];
}


static char *
json_str(cJSON *o, const char *name)
{
    cJSON  *v = cJSON_GetObjectItemCaseSensitive(o, name);

    return (cJSON_IsString(v) && v->valuestring[0])
           ? xstrdup(v->valuestring) : NULL;
}


/* one value of a form body, decoded ("" if absent) */
static void
form_get(const char *body, const char *name, char *buf, size_t len)
{
    const char  *p = body, *amp, *eq;
    char        *k, *v;
    int          kl, vl;

    buf[0] = '\0';
    while (p && *p) {
        amp = strchr(p, '&');
        eq = strchr(p, '=');
        if (eq && (amp == NULL || eq < amp)) {
            k = curl_easy_unescape(NULL, p, (int) (eq - p), &kl);
            if (k && strcmp(k, name) == 0) {
                v = curl_easy_unescape(NULL, eq + 1,
                        (int) (amp ? amp - eq - 1 : (long) strlen(eq + 1)),
                        &vl);
                if (v) {
                    snprintf(buf, len, "%s", v);
                    curl_free(v);
                }
                curl_free(k);
                return;
            }
            curl_free(k);
        }
        p = amp ? amp + 1 : NULL;
    }
}


/*
 * What the line bills (an entry with a body always has a customer, "" if
 * none).  Entries written by earlier agents, which did not store these,
 * live on in users' Redis, and a computed one may still be posted: their
 * values come from the body, exactly what was (or will be) sent.
 */
static void
ledger_billed(cJSON *j, ledger_entry_t *e)
{
    cJSON  *a = cJSON_GetObjectItemCaseSensitive(j, "amount");
    char    buf[256], *cur;

    e->customer = json_str(j, "customer");
    if (e->customer == NULL && e->body) {
        form_get(e->body, "customer", buf, sizeof(buf));
        e->customer = xstrdup(buf);
        form_get(e->body, "amount", buf, sizeof(buf));
        agent_parse_i64(buf, strlen(buf), &e->amount);
        form_get(e->body, "currency", e->currency, sizeof(e->currency));
        return;
    }
    if (cJSON_IsString(a)) {
        agent_parse_i64(a->valuestring, strlen(a->valuestring), &e->amount);
    }
    cur = json_str(j, "currency");
    snprintf(e->currency, sizeof(e->currency), "%s", cur ? cur : "");
    free(cur);
}


int
ledger_parse(const char *json, size_t len, ledger_entry_t *e)
{
    cJSON   *j, *st;
    size_t   i;

    memset(e, 0, sizeof(*e));

    j = cJSON_ParseWithLength(json, len);
    st = j ? cJSON_GetObjectItemCaseSensitive(j, "state") : NULL;
    if (!cJSON_IsString(st)) {
        /* unreadable: treat as failed so nobody posts it blindly */
        e->state = LEDGER_FAILED;
        e->error = xstrdup("unreadable ledger entry");
        cJSON_Delete(j);
        return -1;
    }

    e->state = LEDGER_FAILED;
    for (i = 1; i < sizeof(ledger_names) / sizeof(ledger_names[0]); i++) {
        if (strcmp(st->valuestring, ledger_names[i]) == 0) {
            e->state = (ledger_state_e) i;
        }
    }
    e->key = json_str(j, "key");
    e->body = json_str(j, "body");
    e->item = json_str(j, "item");
    e->error = json_str(j, "error");
    e->invoice = json_str(j, "invoice");
    ledger_billed(j, e);
    cJSON_Delete(j);
    return 0;
}


void
ledger_entry_free(ledger_entry_t *e)
{
    free(e->key);
    free(e->body);
    free(e->item);
    free(e->error);
    free(e->invoice);
    free(e->customer);
    memset(e, 0, sizeof(*e));
}


static char *
dup_or_null(const char *s)
{
    return s ? xstrdup(s) : NULL;
}


void
ledger_entry_copy(ledger_entry_t *dst, const ledger_entry_t *src)
{
    ledger_entry_t  t;

    t.state = src->state;
    t.key = dup_or_null(src->key);
    t.body = dup_or_null(src->body);
    t.item = dup_or_null(src->item);
    t.error = dup_or_null(src->error);
    t.invoice = dup_or_null(src->invoice);
    t.customer = dup_or_null(src->customer);
    t.amount = src->amount;
    memcpy(t.currency, src->currency, sizeof(t.currency));
    ledger_entry_free(dst);
    *dst = t;
}


static char *
ledger_json(const ledger_entry_t *e, int64_t now)
{
    cJSON  *j = cJSON_CreateObject();
    char    ts[24], amount[24], *s;

    snprintf(ts, sizeof(ts), "%lld", (long long) now);
    snprintf(amount, sizeof(amount), "%lld", (long long) e->amount);
    cJSON_AddStringToObject(j, "state", ledger_names[e->state]);
    cJSON_AddStringToObject(j, "key", e->key ? e->key : "");
    cJSON_AddStringToObject(j, "body", e->body ? e->body : "");
    cJSON_AddStringToObject(j, "item", e->item ? e->item : "");
    cJSON_AddStringToObject(j, "error", e->error ? e->error : "");
    if (e->invoice) {
        cJSON_AddStringToObject(j, "invoice", e->invoice);
    }
    /* the amount as text, like every number here: exact beyond 2^53 */
    if (e->customer) {
        cJSON_AddStringToObject(j, "customer", e->customer);
        cJSON_AddStringToObject(j, "amount", amount);
        cJSON_AddStringToObject(j, "currency", e->currency);
    }
    cJSON_AddStringToObject(j, "updated_ms", ts);
    s = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    if (s == NULL) {
        fputs("billing-agent: out of memory\n", stderr);
        exit(AGENT_EXIT_CONFIG);
    }
    return s;
}


int
ledger_write(redisContext *c, const char *bill_key, const char *field,
    ledger_state_e expected, const ledger_entry_t *e, char *err,
    size_t errlen)
{
    const char  *argv[5];
    char         now[24], code[32];
    const char  *msg;
    redisReply  *r;
    char        *json;
    int          rc;

    json = ledger_json(e, agent_now_ms());
    snprintf(now, sizeof(now), "%lld", (long long) agent_now_ms());

    argv[0] = bill_key;
    argv[1] = field;
    argv[2] = ledger_names[expected];
    argv[3] = json;
    argv[4] = now;

    r = ar_script(c, APIMON_SCRIPT_BILLING_LINE, 1, argv, 5);
    cJSON_free(json);

    if (r == NULL) {
        snprintf(err, errlen, "Redis: %s", c->errstr);
        return -1;
    }

    if (r->type == REDIS_REPLY_ERROR) {
        if (ar_script_error(r, code, sizeof(code), &msg) == 0
            && strcmp(code, "conflict") == 0)
        {
            snprintf(err, errlen, "%s", msg);
            rc = 1;
        } else {
            snprintf(err, errlen, "Redis: %s", r->str);
            rc = -1;
        }
        freeReplyObject(r);
        return rc;
    }

    freeReplyObject(r);
    return 0;
}
