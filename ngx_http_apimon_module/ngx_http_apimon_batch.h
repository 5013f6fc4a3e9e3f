/*
 * The check batcher's private header (ngx_http_apimon_batch.c: queue,
 * pack, send, the reply; ngx_http_apimon_refund.c: the batch records and
 * the refunds of the checks that got no answer).
 */


#ifndef _NGX_HTTP_APIMON_BATCH_H_INCLUDED_
#define _NGX_HTTP_APIMON_BATCH_H_INCLUDED_


#include "ngx_http_apimon.h"


/*
 * The check script's arguments and reply: see "The check's layout" in
 * schema/README.md (check.lua and check_refund.lua name the same counts).
 * EVALSHA's argv is the number of keys, one key per request, then ARGV.
 */
#define NGX_HTTP_APIMON_CHECK_HEAD_ARGS     2   /* now, L */
#define NGX_HTTP_APIMON_CHECK_LOC_ARGS      6   /* per location */
#define NGX_HTTP_APIMON_CHECK_REQ_ARGS      2   /* per request */
#define NGX_HTTP_APIMON_CHECK_ID_ARGS       1   /* the batch id */
#define NGX_HTTP_APIMON_CHECK_REPLY_HEAD    5   /* of each reply element */
#define NGX_HTTP_APIMON_CHECK_WINDOW_FIELDS 5   /* per window of an element */

/* check_refund: the number of keys, the record's key, the id, the requests */
#define NGX_HTTP_APIMON_REFUND_ARGS         4

/*
 * requests per EVALSHA (at most 64: a refund has a bit per request), each
 * with at most one location
 */
#define NGX_HTTP_APIMON_BATCH_MAX   64
#define NGX_HTTP_APIMON_BATCH_ARGS  (1 + NGX_HTTP_APIMON_BATCH_MAX            \
    + NGX_HTTP_APIMON_CHECK_HEAD_ARGS                                         \
    + NGX_HTTP_APIMON_CHECK_LOC_ARGS * NGX_HTTP_APIMON_BATCH_MAX              \
    + NGX_HTTP_APIMON_CHECK_REQ_ARGS * NGX_HTTP_APIMON_BATCH_MAX              \
    + NGX_HTTP_APIMON_CHECK_ID_ARGS)

/* the fields of a reply element */
#define NGX_HTTP_APIMON_REPLY_FIELDS  (NGX_HTTP_APIMON_CHECK_REPLY_HEAD       \
    + NGX_HTTP_APIMON_CHECK_WINDOW_FIELDS * NGX_HTTP_APIMON_MAX_WINDOWS)


/*
 * Batch records: a worker uses NGX_HTTP_APIMON_SLOTS record keys in turn,
 * apimon:batch:<worker>:<slot>; a slot is busy from the batch's send until
 * its reply, or until its refund is done.  A batch sent while every slot is
 * busy carries no id: what it counts cannot be refunded.
 */
#define NGX_HTTP_APIMON_SLOTS       64
#define NGX_HTTP_APIMON_WORKER_LEN  (3 * NGX_INT_T_LEN)
#define NGX_HTTP_APIMON_ID_LEN      (NGX_HTTP_APIMON_WORKER_LEN              \
                                     + 2 * NGX_INT_T_LEN + 2)

/* a record lives 60 s (check.lua): no refund is tried after that */
#define NGX_HTTP_APIMON_RECORD_TTL  60000

/* a refund Redis refused for now (OOM, BUSY, ...) is retried after ... */
#define NGX_HTTP_APIMON_REFUND_RETRY_MIN  100     /* ms, doubled each time */
#define NGX_HTTP_APIMON_REFUND_RETRY_MAX  5000

#define NGX_HTTP_APIMON_SLOT_FREE   0
#define NGX_HTTP_APIMON_SLOT_BATCH  1        /* its batch is in flight */
#define NGX_HTTP_APIMON_SLOT_REFUND 2        /* a refund is due */


typedef struct {
    ngx_uint_t                     state;
    ngx_uint_t                     seq;       /* of the batch recorded */
    uint64_t                       mask;      /* requests to refund */
    ngx_http_apimon_redis_call_t  *call;      /* the refund in flight */
    ngx_msec_t                     expires;   /* its record is gone */
    ngx_msec_t                     delay;     /* of the next retry; 0: none */
    unsigned                       all:1;     /* every request */
} ngx_http_apimon_slot_t;


/*
 * A batch in flight.  A request that goes away drops out (its slot becomes
 * NULL); when none is left, the reply is still awaited when the batch has
 * a record (its counts are then refunded), else the call is cancelled.
 */
struct ngx_http_apimon_batch_s {
    ngx_http_apimon_redis_call_t  *call;
    ngx_queue_t                    queue;     /* bt->batches */
    ngx_int_t                      slot;      /* -1: no record */
    ngx_uint_t                     n;
    ngx_uint_t                     live;
    unsigned                       replying:1;
    ngx_http_apimon_ctx_t         *ctx[1];    /* n of them */
};


/* the worker's checks waiting to be sent, and the scratch to send them */
struct ngx_http_apimon_batcher_s {
    ngx_int_t                      script;    /* index of "check" */
    ngx_int_t                      refund;    /* ... of "check_refund" */
    ngx_queue_t                    pending;   /* ctx->queue */
    ngx_queue_t                    batches;   /* in flight */
    ngx_uint_t                     npending;
    ngx_uint_t                     inflight;  /* batches sent, reply due */
    ngx_event_t                    flush;     /* posted */
    ngx_event_t                    retry;     /* refunds refused for now */
    ngx_connection_t               dummy;     /* event data (debug log) */
    ngx_msec_t                     failing_since; /* the script errs */
    ngx_uint_t                     failed;    /* requests, since */
    unsigned                       initialized:1;
    unsigned                       failing:1; /* logged once, till it works */

    /* this worker's name in record keys: pid, start time, random */
    u_char                         worker[NGX_HTTP_APIMON_WORKER_LEN];
    size_t                         worker_len;
    ngx_uint_t                     seq;
    ngx_uint_t                     next_slot;
    ngx_http_apimon_slot_t         slots[NGX_HTTP_APIMON_SLOTS];

    /* not 10 KB of stack: the transport copies the arguments */
    u_char                         nums[3 * NGX_HTTP_APIMON_BATCH_MAX
                                        * NGX_INT_T_LEN
                                        + NGX_HTTP_APIMON_ID_LEN];
    u_char                        *last;      /* of nums */
    ngx_uint_t                     argc;
    const char                    *argv[NGX_HTTP_APIMON_BATCH_ARGS];
    size_t                         argvlen[NGX_HTTP_APIMON_BATCH_ARGS];
    ngx_uint_t                     loc_of[NGX_HTTP_APIMON_BATCH_MAX];
    ngx_http_apimon_loc_conf_t    *locs[NGX_HTTP_APIMON_BATCH_MAX];
};


/* the worker's batcher, kept with the http{} configuration */

static ngx_inline ngx_http_apimon_batcher_t *
ngx_http_apimon_batcher_get(void)
{
    ngx_http_apimon_main_conf_t  *amcf;

    amcf = ngx_http_cycle_get_module_main_conf(ngx_cycle,
                                               ngx_http_apimon_module);

    return amcf->batcher;
}


/* a free slot for a batch's record (state BATCH), or -1: none */
ngx_int_t ngx_http_apimon_slot_take(ngx_http_apimon_batcher_t *bt);
/* its batch id, at most NGX_HTTP_APIMON_ID_LEN bytes at p */
u_char *ngx_http_apimon_slot_id(ngx_http_apimon_batcher_t *bt, u_char *p,
    ngx_uint_t slot);
/* the batch is answered or given up: refund its requests in mask, or all */
void ngx_http_apimon_slot_release(ngx_http_apimon_batch_t *b, uint64_t mask,
    ngx_uint_t all);
/* an error reply that may pass when sent again (OOM, BUSY, ...) */
ngx_uint_t ngx_http_apimon_refund_transient(redisReply *reply);
/* the connection is ready (again): the refunds due are sent */
void ngx_http_apimon_refund_ready(void);
/* the retry timer, made with the batcher (bt->dummy set) */
void ngx_http_apimon_refund_init(ngx_http_apimon_batcher_t *bt);


#endif /* _NGX_HTTP_APIMON_BATCH_H_INCLUDED_ */
