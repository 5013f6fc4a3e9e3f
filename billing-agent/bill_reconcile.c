/*
 * `billing-agent reconcile --period YYYY-MM` (bill_private.h): when the
 * ledger of a month was lost after Stripe forgot the idempotency keys (24
 * hours), only what Stripe holds tells which lines were posted.  The run
 * reads the month's subscriptions like `bill` (the customers they map to,
 * and those their remaining entries name), lists each customer's invoices
 * and invoice items, and for every object of ours of the month (metadata
 * apimon_period, apimon_key; items also apimon_subscription, apimon_line,
 * as bill_post.c sends them) writes the ledger entry that is missing:
 *
 *   item on an invoice no longer a draft   "<sub>|<line>" done
 *   item pending or on a draft             "<sub>|<line>" posted (the next
 *                                          `bill` settles or invoices it)
 *   our invoice, a draft                   "invoice|<cus>" posted
 *   our invoice, finalized                 "invoice|<cus>" and
 *                                          "finalize|<cus>" done
 *
 * An entry present is left as it is.  Each object is printed, one line,
 * tab-separated.  Then "month|reconciled" (and "month|started") are set:
 * `bill` posts again.  Nothing is posted here.
 */

#include "bill_private.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>


typedef struct {
    bill_t       *b;
    const char   *customer;
    amap_t        status;        /* invoice id → its status */
    amap_t        seen;          /* line field → item id, this run */
    char          inv_prefix[40];
    uint64_t      rebuilt;
    uint64_t      present;
    uint64_t      objects;
} rec_t;


static void
rec_customer(bill_t *b, const char *customer)
{
    if (customer && customer[0] && amap_get(&b->custs, customer) == NULL) {
        amap_put(&b->custs, customer, xcalloc(1, sizeof(bill_cust_t)));
    }
}


/* a subscription of the month: its customers are listed */
void
bill_reconcile_sub(bill_t *b, bill_sub_t *s)
{
    int  i;

    rec_customer(b, s->customer);
    for (i = 0; i < s->nlines; i++) {
        rec_customer(b, s->led[i].customer);
    }
}


static const char *
md_str(cJSON *o, const char *name)
{
    cJSON  *md = cJSON_GetObjectItemCaseSensitive(o, "metadata");
    cJSON  *v = md ? cJSON_GetObjectItemCaseSensitive(md, name) : NULL;

    return cJSON_IsString(v) ? v->valuestring : NULL;
}


static const char *
obj_str(cJSON *o, const char *name)
{
    cJSON  *v = cJSON_GetObjectItemCaseSensitive(o, name);

    return cJSON_IsString(v) ? v->valuestring : NULL;
}


/* writes e under field if the ledger has none; "rebuilt" or "in ledger" */
static const char *
rec_write(rec_t *rc, const char *field, ledger_entry_t *e)
{
    char  err[512];
    int   w;

    w = ledger_write(rc->b->c, rc->b->bill_key, field, LEDGER_ABSENT, e, err,
                     sizeof(err));
    if (w == 0) {
        rc->rebuilt++;
        return "rebuilt";
    }
    if (w == 1) {
        rc->present++;
        return "in the ledger";
    }
    agent_err("ledger %s %s: %s", rc->b->bill_key, field, err);
    rc->b->fatal = AGENT_EXIT_FAILED;
    return "ledger write failed";
}


static int
rec_invoice(cJSON *o, void *arg)
{
    rec_t           *rc = arg;
    ledger_entry_t   e;
    const char      *key, *id, *st, *done;
    char             field[300], fkey[340];

    key = md_str(o, "apimon_key");
    id = obj_str(o, "id");
    st = obj_str(o, "status");
    if (key == NULL || id == NULL || st == NULL
        || strncmp(key, rc->inv_prefix, strlen(rc->inv_prefix)) != 0)
    {
        return 0;
    }
    amap_put(&rc->status, id, xstrdup(st));
    rc->objects++;

    memset(&e, 0, sizeof(e));
    e.state = strcmp(st, "draft") == 0 ? LEDGER_POSTED : LEDGER_DONE;
    e.key = (char *) key;
    e.item = (char *) id;
    e.customer = (char *) rc->customer;
    snprintf(field, sizeof(field), "invoice|%s", rc->customer);
    done = rec_write(rc, field, &e);
    printf("invoice\t%s\t%s\t%s\t%s\n", id, rc->customer, st, done);

    if (e.state == LEDGER_DONE) {
        snprintf(fkey, sizeof(fkey), "%s-finalize", key);
        e.key = fkey;
        e.customer = NULL;
        snprintf(field, sizeof(field), "finalize|%s", rc->customer);
        rec_write(rc, field, &e);
    }
    return rc->b->fatal ? -1 : 0;
}


static int
rec_item(cJSON *o, void *arg)
{
    rec_t           *rc = arg;
    ledger_entry_t   e;
    const char      *key, *id, *sub, *line, *cur, *inv, *st, *done, *prev;
    cJSON           *amount;
    char             field[300];

    key = md_str(o, "apimon_key");
    sub = md_str(o, "apimon_subscription");
    line = md_str(o, "apimon_line");
    id = obj_str(o, "id");
    cur = obj_str(o, "currency");
    amount = cJSON_GetObjectItemCaseSensitive(o, "amount");
    if (key == NULL || sub == NULL || line == NULL || id == NULL
        || cur == NULL || !cJSON_IsNumber(amount)
        || strcmp(md_str(o, "apimon_period") ? md_str(o, "apimon_period")
                                             : "", rc->b->ptext) != 0)
    {
        return 0;
    }
    rc->objects++;
    snprintf(field, sizeof(field), "%s|%s", sub, line);
    if ((prev = amap_get(&rc->seen, field)) != NULL) {
        agent_err("line %s has two items at Stripe, %s and %s: one was "
                  "posted twice (by hand, or before this agent kept a "
                  "ledger); the ledger keeps %s", field, prev, id, prev);
        return 0;
    }
    amap_put(&rc->seen, field, xstrdup(id));

    inv = obj_str(o, "invoice");
    st = inv ? amap_get(&rc->status, inv) : NULL;
    memset(&e, 0, sizeof(e));
    e.state = (st && strcmp(st, "draft") != 0) ? LEDGER_DONE : LEDGER_POSTED;
    e.key = (char *) key;
    e.item = (char *) id;
    e.invoice = (char *) inv;
    e.customer = (char *) rc->customer;
    e.amount = (int64_t) amount->valuedouble;
    snprintf(e.currency, sizeof(e.currency), "%s", cur);
    done = rec_write(rc, field, &e);
    printf("item\t%s\t%s\t%s\t%" PRId64 "\t%s\t%s\t%s\n", id, rc->customer,
           field, e.amount, cur, inv ? inv : "-", done);
    return rc->b->fatal ? -1 : 0;
}


/* one customer's invoices (their statuses first), then its items */
static int
rec_one(bill_t *b, rec_t *rc, const char *customer)
{
    stripe_resp_t  r;
    int            rv;

    rc->customer = customer;
    stripe_resp_init(&r);
    rv = stripe_list(&b->stripe, "invoices", customer, rec_invoice, rc, &r);
    if (rv == 0) {
        rv = stripe_list(&b->stripe, "invoiceitems", customer, rec_item, rc,
                         &r);
    }
    if (rv != 0 && !b->fatal) {
        if (r.cls == STRIPE_AUTH) {
            bill_fatal_auth(b, &r);
        } else {
            agent_err("reconcile %s: cannot list the objects of %s: %s; "
                      "nothing is marked reconciled, rerun", b->ptext,
                      customer, r.error);
        }
    }
    stripe_resp_free(&r);
    return rv == 0 ? 0 : -1;
}


int
bill_reconcile(bill_t *b)
{
    rec_t   rc;
    size_t  i;
    int     failed = 0;

    if (bill_stripe_start(b) != 0) {
        return b->fatal;
    }
    memset(&rc, 0, sizeof(rc));
    rc.b = b;
    amap_init(&rc.status);
    amap_init(&rc.seen);
    snprintf(rc.inv_prefix, sizeof(rc.inv_prefix), "apimon-%s-invoice-",
             b->ym);

    for (i = 0; i < b->custs.cap && !b->fatal; i++) {
        if (b->custs.slots[i].key && !bill_stopped(b)
            && bill_lock_keep(b) == 0
            && rec_one(b, &rc, b->custs.slots[i].key) != 0)
        {
            failed = 1;
        }
    }

    if (!failed && !b->fatal
        && (bill_mark(b, BILL_STARTED_FIELD, "started") != 0
            || bill_mark(b, BILL_RECONCILED_FIELD, "reconciled") != 0))
    {
        b->fatal = AGENT_EXIT_FAILED;
    }
    agent_log("reconcile %s: %zu customers, %" PRIu64 " objects of ours at "
              "Stripe: %" PRIu64 " ledger entries rebuilt, %" PRIu64
              " already there%s", b->ptext, b->custs.n, rc.objects,
              rc.rebuilt, rc.present,
              (failed || b->fatal) ? "; NOT reconciled" : "");
    amap_free(&rc.status, free);
    amap_free(&rc.seen, free);
    return b->fatal ? b->fatal : failed ? AGENT_EXIT_FAILED : AGENT_EXIT_OK;
}
