/*
 * `billing-agent bill --create-invoices` (bill_private.h): the lines a run
 * posted or found posted wait per customer; after the last batch each
 * customer whose lines all resolved gets one invoice of its pending items,
 * and its lines are done.
 */

#include "bill_private.h"

#include <stdlib.h>
#include <string.h>


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


/* a posted line: it waits for its customer's invoice, or is done */
void
bill_settle(bill_t *b, bill_sub_t *s, int i, const char *field)
{
    ledger_entry_t  *e = &s->led[i];
    bill_cust_t     *c;

    if (!b->o->create_invoices) {
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


/* the invoice's outcome, its row the total of the lines this run saw */
static void
bill_invoice_outcome(bill_t *b, const char *customer, bill_cust_t *c,
    const char *field, ledger_entry_t *inv, bill_out_e o, const char *error)
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
    row.stripe_id = inv->item;
    row.error = error;
    bill_record(b, o, field, inv, &row);
}


/* POST /v1/invoices until it is answered or the retries run out */
static void
bill_invoice_post(bill_t *b, ledger_entry_t *inv, stripe_resp_t *r)
{
    int  retry = 0;

    /* an invoice only takes pending items: repeating it cannot charge
     * twice, and the key makes a repeat return the same invoice */
    for ( ;; ) {
        stripe_request(&b->stripe, "/v1/invoices", inv->body, inv->key, r);
        if (r->cls != STRIPE_RETRY && r->cls != STRIPE_UNKNOWN) {
            return;
        }
        if (retry >= b->o->max_retries) {
            return;
        }
        agent_sleep_us(stripe_backoff_us(&b->stripe, retry++));
    }
}


/* the customer's invoice entry, computed now if absent; -1 run stops */
static int
bill_invoice_entry(bill_t *b, const char *customer, const char *field,
    ledger_entry_t *inv)
{
    redisReply  *rep;
    char         key[320];
    abuf_t       body;

    rep = redisCommand(b->c, "HGET %s %s", b->bill_key, field);
    if (rep == NULL) {
        b->fatal = AGENT_EXIT_FAILED;
        return -1;
    }
    if (rep->type == REDIS_REPLY_STRING) {
        ledger_parse(rep->str, rep->len, inv);
    }
    freeReplyObject(rep);
    if (inv->state != LEDGER_ABSENT) {
        return 0;
    }

    snprintf(key, sizeof(key), "apimon-%s-invoice-%s", b->ym, customer);
    abuf_init(&body);
    stripe_form_add(&body, "customer", customer);
    stripe_form_add(&body, "pending_invoice_items_behavior", "include");
    bill_md_add(&body, "apimon_key", key);
    bill_md_add(&body, "apimon_period", b->ptext);
    inv->key = xstrdup(key);
    inv->body = xstrndup(body.data, body.len);
    inv->customer = xstrdup(customer);
    abuf_free(&body);
    return bill_move(b, field, inv, LEDGER_COMPUTED);
}


static void
bill_invoice(bill_t *b, const char *customer, bill_cust_t *c)
{
    ledger_entry_t  inv;
    stripe_resp_t   r;
    char            field[300];
    size_t          i;

    memset(&inv, 0, sizeof(inv));
    snprintf(field, sizeof(field), "invoice|%s", customer);
    if (bill_invoice_entry(b, customer, field, &inv) != 0) {
        ledger_entry_free(&inv);
        return;
    }

    if (inv.state == LEDGER_FAILED) {
        b->n[BILL_N_FAILED]++;
        ledger_entry_free(&inv);
        return;
    }

    if (inv.state != LEDGER_DONE) {
        stripe_resp_init(&r);
        bill_invoice_post(b, &inv, &r);

        if (r.cls == STRIPE_AUTH) {
            bill_fatal_auth(b, &r);
        } else if (r.cls == STRIPE_OK
                   && (inv.item = bill_item_id(&r)) != NULL)
        {
            agent_log("invoice %s for %s", inv.item, customer);
            bill_invoice_outcome(b, customer, c, field, &inv, BILL_INVOICED,
                                 NULL);
        } else if (r.cls == STRIPE_FINAL || r.cls == STRIPE_IDEMPOTENCY) {
            inv.error = xstrdup(r.error);
            agent_err("invoice for %s refused: %s", customer, r.error);
            bill_invoice_outcome(b, customer, c, field, &inv, BILL_FAILED,
                                 r.error);
        } else {
            agent_err("invoice for %s: outcome unknown (%s); rerun",
                      customer, r.error);
            bill_invoice_outcome(b, customer, c, field, &inv, BILL_UNKNOWN,
                                 r.error);
        }
        stripe_resp_free(&r);
    }

    if (inv.state == LEDGER_DONE) {
        for (i = 0; i < c->n && !b->fatal; i++) {
            free(c->entries[i].invoice);
            c->entries[i].invoice = xstrdup(inv.item ? inv.item : "");
            if (bill_move(b, c->fields[i], &c->entries[i], LEDGER_DONE) == 0) {
                b->n[BILL_N_DONE]++;
            }
        }
    }
    ledger_entry_free(&inv);
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
        if (c->n == 0) {
            continue;
        }
        if (c->blocked) {
            agent_err("customer %s: a line is unresolved, no invoice yet",
                      b->custs.slots[i].key);
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
    free(c->fields);
    free(c->entries);
    free(c);
}
