/*
 * `billing-agent bill --create-invoices` (bill_private.h).  Per customer
 * and month, three steps, each with its own idempotency key and ledger
 * field, each looked for at Stripe before it is repeated after a crash:
 *
 *   "invoice|<cus>"   POST /v1/invoices (pending_invoice_items_behavior=
 *                     exclude, auto_advance=false): an empty draft, made
 *                     before the customer's first line is posted;
 *                     computed → posted (draft, id known) → done (final)
 *   lines             POST /v1/invoiceitems with invoice=<that draft>: the
 *                     invoice holds exactly our items, never another
 *                     pending item of the customer
 *   "finalize|<cus>"  POST /v1/invoices/<id>/finalize (auto_advance=true:
 *                     Stripe then sends or charges it), once every line of
 *                     the customer resolved; computed → done.  --draft
 *                     leaves the draft (a later run without it finalizes)
 *
 * The draft is created with auto_advance=false so that Stripe does not
 * finalize it on its own (an hour after creation) while items are added.
 */

#include "bill_private.h"

#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>


static bill_cust_t *
bill_cust(bill_t *b, const char *customer)
{
    bill_cust_t  *c = amap_get(&b->custs, customer);

    if (c == NULL) {
        c = xcalloc(1, sizeof(*c));
        amap_put(&b->custs, customer, c);
    }
    return c;
}


/* a line of the customer is unresolved: no invoice for it this run */
void
bill_block(bill_t *b, const char *customer)
{
    bill_cust(b, customer)->blocked = 1;
}


/* the ledger entry of field into e; 0, or -1 (run stops) */
static int
bill_entry_read(bill_t *b, const char *field, ledger_entry_t *e)
{
    redisReply  *rep;

    ledger_entry_free(e);
    rep = redisCommand(b->c, "HGET %s %s", b->bill_key, field);
    if (rep == NULL || rep->type == REDIS_REPLY_ERROR) {
        agent_err("Redis: HGET %s %s: %s", b->bill_key, field,
                  rep ? rep->str : b->c->errstr);
        if (rep) {
            freeReplyObject(rep);
        }
        b->fatal = AGENT_EXIT_FAILED;
        return -1;
    }
    if (rep->type == REDIS_REPLY_STRING) {
        ledger_parse(rep->str, rep->len, e);
    }
    freeReplyObject(rep);
    return 0;
}


/* the customer's invoice entry, read once per run; -1 run stops */
static int
bill_inv_load(bill_t *b, const char *customer, bill_cust_t *c)
{
    char  field[300];

    if (c->loaded) {
        return 0;
    }
    snprintf(field, sizeof(field), "invoice|%s", customer);
    if (bill_entry_read(b, field, &c->inv) != 0) {
        return -1;
    }
    c->loaded = 1;
    c->resume = (c->inv.state == LEDGER_COMPUTED);
    return 0;
}


/* a POST until it is answered or the retries run out */
static void
bill_post_retried(bill_t *b, const char *path, const char *body,
    const char *key, stripe_resp_t *r)
{
    int  retry = 0;

    for ( ;; ) {
        stripe_request(&b->stripe, path, body, key, r);
        if (r->cls != STRIPE_RETRY && r->cls != STRIPE_UNKNOWN) {
            return;
        }
        if (retry >= b->o->max_retries) {
            return;
        }
        agent_sleep_us(stripe_backoff_us(&b->stripe, retry++));
    }
}


/* the draft's entry computed: its key and exact body */
static int
bill_inv_compute(bill_t *b, const char *customer, const char *field,
    ledger_entry_t *inv)
{
    char    key[320];
    abuf_t  body;

    snprintf(key, sizeof(key), "apimon-%s-invoice-%s", b->ym, customer);
    abuf_init(&body);
    stripe_form_add(&body, "customer", customer);
    stripe_form_add(&body, "pending_invoice_items_behavior", "exclude");
    stripe_form_add(&body, "auto_advance", "false");
    bill_md_add(&body, "apimon_key", key);
    bill_md_add(&body, "apimon_period", b->ptext);
    inv->key = xstrdup(key);
    inv->body = xstrndup(body.data, body.len);
    inv->customer = xstrdup(customer);
    abuf_free(&body);
    return bill_move(b, field, inv, LEDGER_COMPUTED);
}


/* creates the computed draft (or finds it, after a crash); 0 posted */
static int
bill_inv_create(bill_t *b, const char *customer, bill_cust_t *c,
    const char *field, char *why, size_t len)
{
    ledger_entry_t  *inv = &c->inv;
    stripe_resp_t    r;
    char             found[256];
    int              rc = -1;

    stripe_resp_init(&r);
    if (c->resume) {
        rc = stripe_find(&b->stripe, "invoices", customer, inv->key, found,
                         sizeof(found), &r);
        if (rc < 0) {
            snprintf(why, len, "cannot list the invoices: %s", r.error);
            goto done;
        }
    }
    if (rc == 1) {
        inv->item = xstrdup(found);
        agent_log("reconciled %s: found %s", inv->key, found);
    } else {
        bill_post_retried(b, "/v1/invoices", inv->body, inv->key, &r);
        if (r.cls == STRIPE_AUTH) {
            bill_fatal_auth(b, &r);
            goto done;
        }
        if (r.cls == STRIPE_FINAL || r.cls == STRIPE_IDEMPOTENCY) {
            inv->error = xstrdup(r.error);
            snprintf(why, len, "invoice refused: %s", r.error);
            bill_move(b, field, inv, LEDGER_FAILED);
            goto done;
        }
        if (r.cls != STRIPE_OK || (inv->item = bill_item_id(&r)) == NULL) {
            c->resume = 1;
            snprintf(why, len, "invoice: outcome unknown (%s)", r.error);
            goto done;
        }
        agent_log("invoice %s (draft) for %s", inv->item, customer);
    }
    rc = bill_move(b, field, inv, LEDGER_POSTED);
    if (rc != 0) {
        snprintf(why, len, "ledger write failed");
    }

done:
    stripe_resp_free(&r);
    return rc == 0 ? 0 : -1;
}


/*
 * The id of the customer's draft invoice of the month, created if need
 * be; NULL with the reason in why.  *final: it is finalized already.
 */
static const char *
bill_inv_draft(bill_t *b, const char *customer, int *final, char *why,
    size_t len)
{
    bill_cust_t  *c = bill_cust(b, customer);
    char          field[300];

    *final = 0;
    if (bill_inv_load(b, customer, c) != 0) {
        snprintf(why, len, "the ledger cannot be read");
        return NULL;
    }
    snprintf(field, sizeof(field), "invoice|%s", customer);

    switch (c->inv.state) {

    case LEDGER_POSTED:
        return c->inv.item;

    case LEDGER_DONE:
        *final = 1;
        snprintf(why, len, "invoice %s is finalized", c->inv.item);
        return NULL;

    case LEDGER_FAILED:
        snprintf(why, len, "its invoice was refused: %s",
                 c->inv.error ? c->inv.error : "?");
        return NULL;

    case LEDGER_ABSENT:
        if (bill_inv_compute(b, customer, field, &c->inv) != 0) {
            snprintf(why, len, "the ledger cannot be written");
            return NULL;
        }
        /* fall through */

    case LEDGER_COMPUTED:
        if (bill_stripe_start(b) != 0 || bill_month_started(b) != 0
            || bill_inv_create(b, customer, c, field, why, len) != 0)
        {
            if (b->fatal && why[0] == '\0') {
                snprintf(why, len, "the run stopped");
            }
            return NULL;
        }
        return c->inv.item;
    }

    return NULL;
}


/*
 * Before line i is computed: with --create-invoices the line is attached
 * to its customer's draft (the body's invoice=).  -1: the line cannot be
 * posted now, its outcome recorded.
 */
int
bill_attach(bill_t *b, bill_sub_t *s, int i)
{
    return bill_attach_to(b, s, i, s->customer);
}


int
bill_attach_to(bill_t *b, bill_sub_t *s, int i, const char *customer)
{
    ledger_entry_t  *e = &s->led[i];
    const char      *id;
    char             why[600] = "";
    int              final;

    free(e->invoice);
    e->invoice = NULL;
    if (!b->o->create_invoices || b->o->dry_run) {
        return 0;
    }

    id = bill_inv_draft(b, customer, &final, why, sizeof(why));
    if (id) {
        e->invoice = xstrdup(id);
        return 0;
    }
    if (final) {
        /* a line new to a month already invoiced (say --retry-failed) */
        agent_log("%s %s: %s; the line stays pending for the customer's "
                  "next invoice", s->id, s->lines[i].id, why);
        return 0;
    }
    if (b->fatal) {
        return -1;
    }
    agent_err("line %s %s not posted: customer %s: %s; rerun", s->id,
              s->lines[i].id, customer, why);
    bill_block(b, customer);
    bill_outcome(b, s, i, BILL_UNKNOWN, why);
    return -1;
}


/* a posted line: it waits for its customer's invoice, or is done */
void
bill_settle(bill_t *b, bill_sub_t *s, int i, const char *field)
{
    ledger_entry_t  *e = &s->led[i];
    bill_cust_t     *c;

    if (!b->o->create_invoices || e->invoice == NULL) {
        bill_outcome(b, s, i, BILL_DONE, NULL);
        return;
    }
    c = bill_cust(b, e->customer ? e->customer : "");
    c->fields = xrealloc(c->fields, (c->n + 1) * sizeof(char *));
    c->entries = xrealloc(c->entries, (c->n + 1) * sizeof(ledger_entry_t));
    c->fields[c->n] = xstrdup(field);
    memset(&c->entries[c->n], 0, sizeof(ledger_entry_t));
    ledger_entry_copy(&c->entries[c->n], e);
    c->n++;
    bill_outcome(b, s, i, BILL_POSTED, NULL);
}


/* a done line on a draft a --draft run left: finalize it this time */
void
bill_settled(bill_t *b, const ledger_entry_t *e)
{
    if (b->o->create_invoices && !b->o->dry_run && !b->o->draft
        && e->invoice && e->customer)
    {
        bill_cust(b, e->customer)->want = 1;
    }
}


/* the invoice's outcome, its row the total of the lines this run saw */
static void
bill_inv_outcome(bill_t *b, const char *customer, bill_cust_t *c,
    const char *field, bill_out_e o, const char *error)
{
    report_row_t  row;
    size_t        i;

    memset(&row, 0, sizeof(row));
    row.period = b->ptext;
    row.customer = customer;
    row.line = "invoice";
    row.quantity = (int64_t) c->n;
    row.currency = "";
    for (i = 0; i < c->n; i++) {
        row.amount += c->entries[i].amount;
        row.currency = c->entries[i].currency;
    }
    row.stripe_id = c->inv.item;
    row.error = error;
    bill_record(b, o, field, &c->inv, &row);
}


/* the invoice's status at Stripe into buf ("" unknown); -1 GET failed */
static int
bill_inv_status(bill_t *b, const char *id, char *buf, size_t len,
    stripe_resp_t *r)
{
    char    path[320];
    cJSON  *j, *st;
    int     attempt;

    buf[0] = '\0';
    snprintf(path, sizeof(path), "/v1/invoices/%s", id);
    for (attempt = 0; ; attempt++) {
        stripe_request(&b->stripe, path, NULL, NULL, r);
        if (r->cls == STRIPE_OK) {
            break;
        }
        if ((r->cls != STRIPE_UNKNOWN && r->cls != STRIPE_RETRY)
            || attempt >= b->o->max_retries)
        {
            return -1;
        }
        agent_sleep_us(stripe_backoff_us(&b->stripe, attempt));
    }
    j = cJSON_ParseWithLength(r->body.data ? r->body.data : "", r->body.len);
    st = j ? cJSON_GetObjectItemCaseSensitive(j, "status") : NULL;
    if (cJSON_IsString(st)) {
        snprintf(buf, len, "%s", st->valuestring);
    }
    cJSON_Delete(j);
    return 0;
}


/*
 * POST .../finalize once: a computed step found by an earlier run is first
 * checked (the invoice no longer a draft: it was finalized).  0 final.
 */
static int
bill_inv_finalize(bill_t *b, const char *customer, bill_cust_t *c,
    char *why, size_t len)
{
    ledger_entry_t   fin;
    stripe_resp_t    r;
    char             field[300], path[320], key[340], status[32];
    int              rc = -1, resume;

    memset(&fin, 0, sizeof(fin));
    snprintf(field, sizeof(field), "finalize|%s", customer);
    if (bill_entry_read(b, field, &fin) != 0) {
        return -1;
    }
    resume = (fin.state == LEDGER_COMPUTED);
    if (fin.state == LEDGER_ABSENT) {
        snprintf(key, sizeof(key), "%s-finalize", c->inv.key);
        fin.key = xstrdup(key);
        fin.body = xstrdup("auto_advance=true");
        fin.item = xstrdup(c->inv.item);
        if (bill_move(b, field, &fin, LEDGER_COMPUTED) != 0) {
            goto done;
        }
    }

    stripe_resp_init(&r);
    snprintf(path, sizeof(path), "/v1/invoices/%s/finalize", c->inv.item);
    if (fin.state == LEDGER_COMPUTED) {
        if (resume && bill_inv_status(b, c->inv.item, status,
                                      sizeof(status), &r) == 0
            && status[0] && strcmp(status, "draft") != 0)
        {
            agent_log("reconciled %s: %s is %s", fin.key, c->inv.item,
                      status);
        } else {
            bill_post_retried(b, path, fin.body, fin.key, &r);
            if (r.cls == STRIPE_AUTH) {
                bill_fatal_auth(b, &r);
                goto free;
            }
            /* refused: finalized meanwhile (by hand, or a lost answer)? */
            if (r.cls == STRIPE_FINAL
                && bill_inv_status(b, c->inv.item, status, sizeof(status),
                                   &r) == 0
                && status[0] && strcmp(status, "draft") != 0)
            {
                r.cls = STRIPE_OK;
            }
            if (r.cls != STRIPE_OK) {
                snprintf(why, len, "finalize %s: %s", c->inv.item, r.error);
                goto free;
            }
            agent_log("invoice %s of %s finalized", c->inv.item, customer);
        }
        if (bill_move(b, field, &fin, LEDGER_DONE) != 0) {
            goto free;
        }
    }
    rc = 0;

free:
    stripe_resp_free(&r);
done:
    ledger_entry_free(&fin);
    return rc;
}


static void
bill_invoice(bill_t *b, const char *customer, bill_cust_t *c)
{
    char    field[300], why[600] = "";
    size_t  i;

    snprintf(field, sizeof(field), "invoice|%s", customer);
    if (bill_inv_load(b, customer, c) != 0 || c->inv.item == NULL) {
        return;
    }

    if (c->inv.state == LEDGER_POSTED && !b->o->draft) {
        if (bill_inv_finalize(b, customer, c, why, sizeof(why)) == 0) {
            bill_inv_outcome(b, customer, c, field, BILL_INVOICED, NULL);
        } else if (!b->fatal) {
            agent_err("invoice %s of %s stays a draft: %s; rerun",
                      c->inv.item, customer, why);
            bill_inv_outcome(b, customer, c, field, BILL_UNKNOWN, why);
            return;
        }
    } else if (c->inv.state == LEDGER_POSTED) {
        agent_log("invoice %s of %s left a draft (--draft)", c->inv.item,
                  customer);
    }

    /* the lines are on the invoice (their body named it): done */
    for (i = 0; i < c->n && !b->fatal; i++) {
        if (bill_move(b, c->fields[i], &c->entries[i], LEDGER_DONE) == 0) {
            b->n[BILL_N_DONE]++;
        }
    }
}


void
bill_invoices(bill_t *b)
{
    size_t        i;
    bill_cust_t  *c;

    for (i = 0; i < b->custs.cap && !b->fatal; i++) {
        if (b->custs.slots[i].key == NULL) {
            continue;
        }
        c = b->custs.slots[i].val;
        if (c->n == 0 && !c->want) {
            continue;
        }
        if (c->blocked) {
            agent_err("customer %s: a line is unresolved, its invoice stays "
                      "a draft", b->custs.slots[i].key);
            continue;
        }
        if (bill_stopped(b) || bill_lock_keep(b) != 0
            || bill_stripe_start(b) != 0)
        {
            return;
        }
        bill_invoice(b, b->custs.slots[i].key, c);
    }
}


void
bill_cust_free(void *p)
{
    bill_cust_t  *c = p;
    size_t        i;

    for (i = 0; i < c->n; i++) {
        free(c->fields[i]);
        ledger_entry_free(&c->entries[i]);
    }
    ledger_entry_free(&c->inv);
    free(c->fields);
    free(c->entries);
    free(c);
}
