/*
 * The billing ledger: one JSON entry per line in apimon:bill:<YYYYMM>,
 * field "<sub-id>|<line>", moved computed → posted → done (or failed) by
 * the billing_line script, which compares the stored state first so two
 * agents can never both post a line.
 */

#ifndef APIMON_LEDGER_H
#define APIMON_LEDGER_H

#include <stddef.h>
#include <stdint.h>

#include <hiredis/hiredis.h>

typedef enum {
    LEDGER_ABSENT = 0,
    LEDGER_COMPUTED,       /* body and key recorded; a POST may be under way */
    LEDGER_POSTED,         /* Stripe holds the item (id recorded) */
    LEDGER_DONE,           /* nothing left to do for the line */
    LEDGER_FAILED          /* refused by the API; reported, not retried */
} ledger_state_e;

typedef struct {
    ledger_state_e  state;
    char           *key;       /* Idempotency-Key and metadata[apimon_key] */
    char           *body;      /* the exact form body */
    char           *item;      /* Stripe id (ii_..., in_...) */
    char           *error;
    char           *invoice;   /* invoice id, once invoiced by this agent */
    /* what the body bills, so nobody parses it back: set with the body */
    char           *customer;
    int64_t         amount;    /* minor units */
    char            currency[8];
} ledger_entry_t;

const char *ledger_state_name(ledger_state_e s);

/*
 * 0 ok; -1 if the text is no ledger entry (then e->state is FAILED).  An
 * entry of an agent before customer/amount/currency were stored has them
 * read from its body instead.
 */
int ledger_parse(const char *json, size_t len, ledger_entry_t *e);
void ledger_entry_free(ledger_entry_t *e);
/* copies the strings of src into dst (dst freed first) */
void ledger_entry_copy(ledger_entry_t *dst, const ledger_entry_t *src);

/*
 * Moves field from `expected` to e->state, storing e.
 * 0 done, 1 conflict (another writer; message in err), -1 Redis error.
 */
int ledger_write(redisContext *c, const char *bill_key, const char *field,
    ledger_state_e expected, const ledger_entry_t *e, char *err,
    size_t errlen);

#endif
