/*
 * `billing-agent bill`: exactly-once posting (bill_private.h).  Before a
 * POST the line's exact body and idempotency key are stored (computed);
 * after it the Stripe id (posted, then done).  A line found computed at the
 * start of a run, or whose POST ended in a timeout, a lost connection or a
 * 5xx, is first looked for among the customer's invoice items by its key,
 * and only posted again (with the same key) if it is not there.
 */

#include "bill_private.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#define BILL_MD_KEY_MAX      40     /* Stripe metadata limits */
#define BILL_MD_VALUE_MAX    500


typedef enum {
    PUSH_POSTED,
    PUSH_FAILED,
    PUSH_UNKNOWN,
    PUSH_FATAL
} push_e;


void
bill_fatal_auth(bill_t *b, stripe_resp_t *r)
{
    agent_err("the Stripe API rejected the secret key (%s); set "
              "STRIPE_API_KEY or --stripe-key-file to a valid key. "
              "Nothing more is posted", r->error);
    b->fatal = AGENT_EXIT_CONFIG;
}


/* a cheap authenticated GET before the first write: a bad key fails fast */
int
bill_stripe_start(bill_t *b)
{
    stripe_resp_t  r;
    int            attempt;

    if (b->stripe_ready) {
        return 0;
    }

    stripe_resp_init(&r);
    for (attempt = 0; ; attempt++) {
        stripe_request(&b->stripe, "/v1/invoiceitems?limit=1", NULL, NULL,
                       &r);
        if (r.cls == STRIPE_OK) {
            break;
        }
        if (r.cls == STRIPE_AUTH) {
            bill_fatal_auth(b, &r);
            stripe_resp_free(&r);
            return -1;
        }
        if ((r.cls != STRIPE_RETRY && r.cls != STRIPE_UNKNOWN)
            || attempt >= b->o->max_retries)
        {
            agent_err("the Stripe API at %s does not answer (%s); nothing "
                      "was posted, rerun later", b->stripe.base, r.error);
            b->fatal = AGENT_EXIT_FAILED;
            stripe_resp_free(&r);
            return -1;
        }
        agent_sleep_us(stripe_backoff_us(&b->stripe, attempt));
    }

    stripe_resp_free(&r);
    b->stripe_ready = 1;
    return 0;
}


char *
bill_item_id(stripe_resp_t *r)
{
    cJSON  *j, *id;
    char   *s = NULL;

    j = cJSON_ParseWithLength(r->body.data ? r->body.data : "", r->body.len);
    id = j ? cJSON_GetObjectItemCaseSensitive(j, "id") : NULL;
    if (cJSON_IsString(id)) {
        s = xstrdup(id->valuestring);
    }
    cJSON_Delete(j);
    return s;
}


void
bill_md_add(abuf_t *body, const char *key, const char *value)
{
    char  k[64], v[BILL_MD_VALUE_MAX + 1];

    /* our keys are constants well inside the limit; values are cut */
    snprintf(k, sizeof(k), "metadata[%.*s]", BILL_MD_KEY_MAX, key);
    snprintf(v, sizeof(v), "%s", value);
    stripe_form_add(body, k, v);
}


/* the form body of line i, from what its entry e bills */
static void
bill_body(bill_t *b, const bill_sub_t *s, int i, const ledger_entry_t *e,
    abuf_t *body)
{
    const apimon_line_t  *l = &s->lines[i];
    int64_t               ps, pe;
    char                  num[32];

    /* the part of the month the subscription was in effect, in seconds */
    ps = s->start_ms > b->p.start_ms ? s->start_ms : b->p.start_ms;
    pe = (s->end_ms != 0 && s->end_ms < b->p.end_ms) ? s->end_ms
                                                     : b->p.end_ms;
    if (pe < ps) {
        pe = ps;
    }

    abuf_reset(body);
    stripe_form_add(body, "customer", e->customer);
    snprintf(num, sizeof(num), "%" PRId64, e->amount);
    stripe_form_add(body, "amount", num);
    stripe_form_add(body, "currency", e->currency);
    stripe_form_add(body, "description", l->description);
    if (e->invoice) {
        stripe_form_add(body, "invoice", e->invoice);
    }
    snprintf(num, sizeof(num), "%" PRId64, ps / 1000);
    stripe_form_add(body, "period[start]", num);
    snprintf(num, sizeof(num), "%" PRId64, (pe + 999) / 1000);
    stripe_form_add(body, "period[end]", num);
    bill_md_add(body, "apimon_key", e->key);
    bill_md_add(body, "apimon_subscription", s->id);
    bill_md_add(body, "apimon_period", b->ptext);
    bill_md_add(body, "apimon_line", l->id);
    bill_md_add(body, "apimon_plan", s->plan);
    snprintf(num, sizeof(num), "%" PRId64, l->quantity);
    bill_md_add(body, "apimon_quantity", num);
}


/* deterministic per (subscription, period, line, pricing version) */
void
bill_key(bill_t *b, const bill_sub_t *s, int i, char *buf, size_t len)
{
    snprintf(buf, len, "apimon-%s-%s-%s-v%" PRId64, b->ym, s->id,
             s->lines[i].id, b->catalog_version);
}


/*
 * The line's entry as computed now: what it bills, its key and the exact
 * body, all recorded before the POST so that a rerun sends the same.
 */
void
bill_compute(bill_t *b, bill_sub_t *s, int i, const char *key, abuf_t *body)
{
    ledger_entry_t  *e = &s->led[i];

    free(e->key);
    free(e->body);
    free(e->error);
    free(e->customer);
    e->error = NULL;
    e->customer = xstrdup(s->customer);
    e->amount = s->lines[i].amount;
    snprintf(e->currency, sizeof(e->currency), "%s", s->bp->pr.currency);
    e->key = xstrdup(key);
    bill_body(b, s, i, e, body);
    e->body = xstrndup(body->data, body->len);
}


/* strips a trailing "-<ch><digits>" from key[0..*len); its number or 0 */
static long
key_tail(const char *key, size_t *len, char ch)
{
    size_t  i = *len;

    while (i > 0 && key[i - 1] >= '0' && key[i - 1] <= '9') {
        i--;
    }
    if (i == *len || i < 2 || key[i - 1] != ch || key[i - 2] != '-') {
        return 0;
    }
    *len = i - 2;
    return strtol(key + i, NULL, 10);
}


/*
 * Keys are <base>[-r<N>][-u<M>]: -r from --retry-failed, -u from re-keying
 * after a replayed 5xx.  The base length and both numbers.
 */
static size_t
key_parts(const char *key, long *r, long *u)
{
    size_t  len = strlen(key);

    *u = key_tail(key, &len, 'u');
    *r = key_tail(key, &len, 'r');
    return len;
}


/* every occurrence of from in s replaced by to (keys: no escaping needed) */
static char *
str_replace_all(const char *s, const char *from, const char *to)
{
    abuf_t       out;
    const char  *p;
    size_t       fl = strlen(from);

    abuf_init(&out);
    while ((p = strstr(s, from)) != NULL) {
        abuf_add(&out, s, (size_t) (p - s));
        abuf_adds(&out, to);
        s = p + fl;
    }
    abuf_adds(&out, s);
    return out.data;
}


/*
 * A replayed 5xx means the first request under the key has finished with
 * an error, and the listing just showed no item under it: the key can only
 * ever replay that error (for 24 hours at Stripe), so the line moves to a
 * fresh key, recorded in the ledger before it is used.
 */
static int
bill_rekey(bill_t *b, const char *field, ledger_entry_t *e)
{
    char    key[320];
    char   *body, *old_key, *old_body;
    long    r, u;
    size_t  base;

    base = key_parts(e->key, &r, &u);
    if (r) {
        snprintf(key, sizeof(key), "%.*s-r%ld-u%ld", (int) base, e->key, r,
                 u + 1);
    } else {
        snprintf(key, sizeof(key), "%.*s-u%ld", (int) base, e->key, u + 1);
    }
    body = str_replace_all(e->body, e->key, key);

    old_key = e->key;
    old_body = e->body;
    e->key = xstrdup(key);
    e->body = body;
    if (bill_move(b, field, e, LEDGER_COMPUTED) != 0) {
        free(e->key);
        free(e->body);
        e->key = old_key;
        e->body = old_body;
        return -1;
    }
    agent_log("%s: the key %s only replays a 5xx and no item holds it; "
              "now %s", field, old_key, key);
    free(old_key);
    free(old_body);
    return 0;
}


/*
 * Sends one computed line until Stripe holds it, refuses it, or the retries
 * run out.  resume: the line was computed by an earlier run, or a previous
 * attempt's outcome is unknown, so look for it before posting.
 */
static push_e
bill_post(bill_t *b, const char *field, const char *customer,
    ledger_entry_t *e, int resume, stripe_resp_t *r)
{
    char  found[256];
    int   retry = 0, rc, rekey = 0;

    for ( ;; ) {
        if (resume) {
            rc = stripe_find_item(&b->stripe, customer, e->key, found,
                                  sizeof(found), r);
            if (rc == 1) {
                free(e->item);
                e->item = xstrdup(found);
                agent_log("reconciled %s: found %s", e->key, found);
                return PUSH_POSTED;
            }
            if (rc < 0) {
                if (r->cls == STRIPE_AUTH) {
                    bill_fatal_auth(b, r);
                    return PUSH_FATAL;
                }
                return PUSH_UNKNOWN;
            }
            if (rekey && bill_rekey(b, field, e) != 0) {
                return PUSH_FATAL;
            }
        }

        stripe_request(&b->stripe, "/v1/invoiceitems", e->body, e->key, r);

        switch (r->cls) {

        case STRIPE_OK:
            free(e->item);
            e->item = bill_item_id(r);
            if (e->item == NULL) {
                snprintf(r->error, sizeof(r->error), "2xx without an id");
                resume = 1;
                break;
            }
            return PUSH_POSTED;

        case STRIPE_AUTH:
            bill_fatal_auth(b, r);
            return PUSH_FATAL;

        case STRIPE_IDEMPOTENCY:
        case STRIPE_FINAL:
            return PUSH_FAILED;

        case STRIPE_RETRY:
            resume = 0;
            break;

        case STRIPE_UNKNOWN:
            resume = 1;
            rekey = (r->replayed && r->status >= 500);
            break;
        }

        if (retry >= b->o->max_retries) {
            return PUSH_UNKNOWN;
        }
        agent_log("%s: %s; retrying", e->key, r->error);
        agent_sleep_us(stripe_backoff_us(&b->stripe, retry++));
    }
}


/* one priced line whose ledger entry is absent or computed */
static void
bill_push_line(bill_t *b, bill_sub_t *s, int i, const char *field)
{
    ledger_entry_t  *e = &s->led[i];
    stripe_resp_t    r;
    int              resume;

    if (bill_stopped(b) || bill_lock_keep(b) != 0
        || bill_stripe_start(b) != 0 || bill_month_started(b) != 0)
    {
        return;
    }

    resume = (e->state == LEDGER_COMPUTED);
    if (!resume && bill_move(b, field, e, LEDGER_COMPUTED) != 0) {
        return;
    }

    stripe_resp_init(&r);

    switch (bill_post(b, field, e->customer, e, resume, &r)) {

    case PUSH_POSTED:
        b->unknown_streak = 0;
        if (bill_move(b, field, e, LEDGER_POSTED) != 0) {
            break;
        }
        agent_log("posted %s %s: %" PRId64 " %s to %s as %s%s", s->id,
                  s->lines[i].id, e->amount, e->currency, e->customer,
                  e->item, r.replayed ? " (replayed)" : "");
        b->n[BILL_N_POSTED]++;
        bill_settle(b, s, i, field);
        break;

    case PUSH_FAILED:
        b->unknown_streak = 0;
        free(e->error);
        e->error = xstrdup(r.error);
        agent_err("line %s %s refused: %s", s->id, s->lines[i].id, r.error);
        bill_outcome(b, s, i, BILL_FAILED, r.error);
        break;

    case PUSH_UNKNOWN:
        agent_err("line %s %s: outcome unknown after retries (%s); it stays "
                  "computed and is reconciled by the next run", s->id,
                  s->lines[i].id, r.error);
        bill_block(b, e->customer);
        bill_outcome(b, s, i, BILL_UNKNOWN, r.error);
        if (++b->unknown_streak >= BILL_UNKNOWN_STREAK) {
            agent_err("%d lines in a row unresolved: the API is failing; "
                      "stopping, rerun to resume", b->unknown_streak);
            b->fatal = AGENT_EXIT_FAILED;
        }
        break;

    case PUSH_FATAL:
        break;
    }

    stripe_resp_free(&r);
}


/*
 * --create-invoices and a line computed by an earlier run (or agent) whose
 * body names no invoice: if Stripe holds no item under its key, the body
 * gets its customer's draft (invoice=) and, being another request now, a
 * fresh key; an item found is posted already and stays pending.  0 send
 * it, 1 settled here, -1 not now (outcome recorded) or the run stops.
 */
int
bill_onto_invoice(bill_t *b, bill_sub_t *s, int i, const char *field)
{
    ledger_entry_t  *e = &s->led[i];
    stripe_resp_t    r;
    char             found[256];
    char            *body;
    int              rc;

    if (!b->o->create_invoices || b->o->dry_run || e->body == NULL
        || e->customer == NULL || e->customer[0] == '\0'
        || strstr(e->body, "&invoice=") != NULL)
    {
        return 0;
    }
    if (bill_stopped(b) || bill_stripe_start(b) != 0) {
        return -1;
    }

    stripe_resp_init(&r);
    rc = stripe_find_item(&b->stripe, e->customer, e->key, found,
                          sizeof(found), &r);
    stripe_resp_free(&r);
    if (rc < 0) {
        bill_block(b, e->customer);
        bill_outcome(b, s, i, BILL_UNKNOWN,
                     "cannot list the customer's items");
        return -1;
    }
    if (rc == 1) {
        free(e->item);
        e->item = xstrdup(found);
        agent_log("reconciled %s: found %s, pending (not on an invoice of "
                  "ours)", e->key, found);
        if (bill_move(b, field, e, LEDGER_POSTED) == 0) {
            bill_settle(b, s, i, field);
        }
        return 1;
    }

    if (bill_attach_to(b, s, i, e->customer) != 0) {
        return -1;
    }
    if (e->invoice == NULL) {
        return 0;                    /* the invoice is final: pending */
    }
    body = xmalloc(strlen(e->body) + strlen(e->invoice) + 10);
    sprintf(body, "%s&invoice=%s", e->body, e->invoice);
    free(e->body);
    e->body = body;
    return bill_rekey(b, field, e) == 0 ? 0 : -1;
}


/*
 * A line whose entry holds its key and body (computed now, or by a run that
 * stopped): posted, or with --dry-run the request printed instead.
 */
void
bill_send(bill_t *b, bill_sub_t *s, int i, const char *field)
{
    ledger_entry_t  *e = &s->led[i];

    if (!b->o->dry_run) {
        bill_push_line(b, s, i, field);
        return;
    }
    if (b->o->mode != BILL_MODE_REPORT) {
        printf("POST /v1/invoiceitems\tIdempotency-Key: %s\t%s\n", e->key,
               e->body);
    }
    bill_outcome(b, s, i, e->state == LEDGER_COMPUTED ? BILL_DRY_RESUME
                                                      : BILL_DRY, NULL);
}


/*
 * --retry-failed: a line the API refused for good gets a fresh key
 * ("...-r1", "-r2", ...) and a body priced and mapped anew.  The old key is
 * looked up first: an item stored under it (say by a conflicting request of
 * ours) is taken as the line's item instead of posting a second one.
 */
void
bill_retry_failed(bill_t *b, bill_sub_t *s, int i, const char *field,
    abuf_t *body)
{
    ledger_entry_t  *e = &s->led[i];
    stripe_resp_t    r;
    char             key[300], found[256];
    long             n = 0, u;
    int              rc;

    bill_key(b, s, i, key, sizeof(key));
    if (e->key && key_parts(e->key, &n, &u) == strlen(key)
        && strncmp(e->key, key, strlen(key)) == 0)
    {
        /* the same pricing version: count on from the last retry */
    } else {
        n = 0;
    }
    snprintf(key + strlen(key), sizeof(key) - strlen(key), "-r%ld", n + 1);

    if (!b->o->dry_run && e->key && e->body) {
        if (bill_stopped(b) || bill_stripe_start(b) != 0) {
            return;
        }
        stripe_resp_init(&r);
        rc = e->customer[0] ? stripe_find_item(&b->stripe, e->customer,
                                               e->key, found, sizeof(found),
                                               &r)
                            : 0;
        stripe_resp_free(&r);
        if (rc < 0) {
            bill_outcome(b, s, i, BILL_UNKNOWN,
                         "cannot list the customer's items");
            return;
        }
        if (rc == 1) {
            free(e->item);
            e->item = xstrdup(found);
            agent_log("retry %s: the old key %s is stored as %s", field,
                      e->key, found);
            if (bill_move(b, field, e, LEDGER_POSTED) == 0) {
                bill_outcome(b, s, i, BILL_DONE, NULL);
            }
            return;
        }
    }

    if (bill_attach(b, s, i) != 0) {
        return;
    }
    bill_compute(b, s, i, key, body);
    agent_log("retrying failed line %s with key %s", field, key);
    bill_send(b, s, i, field);
}
