/*
 * Lease mode (ngx_http_apimon_lease.c: the directive, the shared memory
 * zone and its entries; ngx_http_apimon_lease_ops.c: carving leases from
 * Redis, serving from them, returning what they did not serve).
 */


#ifndef _NGX_HTTP_APIMON_LEASE_H_INCLUDED_
#define _NGX_HTTP_APIMON_LEASE_H_INCLUDED_


#include "ngx_http_apimon.h"


#define NGX_HTTP_APIMON_LEASE_CALLS      64      /* at most, per lease */
#define NGX_HTTP_APIMON_LEASE_FIRST      2       /* a key's first carve */
/* a return is tried until its record expires (60 s after the carve) */
#define NGX_HTTP_APIMON_LEASE_RETURN_TTL 45000
/* a quitting worker tries its returns that long */
#define NGX_HTTP_APIMON_LEASE_QUIT_WAIT  5000
#define NGX_HTTP_APIMON_LEASE_MAX_CALLS  64      /* bits of a mask */
#define NGX_HTTP_APIMON_LEASE_TIME       1000    /* ms */
#define NGX_HTTP_APIMON_LEASE_FLUSH      100     /* ms */
#define NGX_HTTP_APIMON_LEASE_ID_LEN     128     /* its batch id in Redis */
#define NGX_HTTP_APIMON_LEASE_WORKER_LEN (3 * NGX_INT_T_LEN)
/* a carve's EVALSHA: key count, k keys, now, L, a location, k requests, id */
#define NGX_HTTP_APIMON_LEASE_ARGS       (1 + NGX_HTTP_APIMON_LEASE_MAX_CALLS \
    + 2 + 6 + 2 * NGX_HTTP_APIMON_LEASE_MAX_CALLS + 1)
#define NGX_HTTP_APIMON_LEASE_TEXT_LEN   384     /* the carve's reply */
/* a carve not answered by then is returned whole (its worker is gone) */
#define NGX_HTTP_APIMON_LEASE_CARVE_TIMEOUT  30000

#define NGX_HTTP_APIMON_LEASE_IDLE       0
#define NGX_HTTP_APIMON_LEASE_CARVING    1
#define NGX_HTTP_APIMON_LEASE_LEASED     2


struct ngx_http_apimon_lease_shctx_s {
    ngx_rbtree_t                   rbtree;
    ngx_rbtree_node_t              sentinel;
    ngx_queue_t                    queue;     /* every entry */
};


/*
 * An entry: a carve is the check of "k" identical calls in one script
 * call (element i of its reply is bit i - 1); "free" are the calls it
 * allowed that no request used yet, "keep" those answered to requests
 * (what its return leaves counted in Redis).
 */
typedef struct {
    ngx_rbtree_node_t              node;      /* key: crc32 of the digest */
    ngx_queue_t                    queue;
    ngx_msec_t                     expires;   /* of the state */
    ngx_uint_t                     loc;
    ngx_uint_t                     state;
    ngx_uint_t                     size;      /* calls of the next carve */
    ngx_uint_t                     cap;       /* ... at most (what is left) */
    ngx_uint_t                     k;
    uint64_t                       free;
    uint64_t                       keep;
    ngx_uint_t                     served;
    size_t                         id_len;
    u_char                         id[NGX_HTTP_APIMON_LEASE_ID_LEN];
    size_t                         text_len;
    u_char                         text[NGX_HTTP_APIMON_LEASE_TEXT_LEN];
    u_char                         digest[NGX_HTTP_APIMON_DIGEST_LEN];
} ngx_http_apimon_lease_node_t;


/* what goes in and out of the zone (on the stack, not shared) */
typedef struct {
    u_char                         digest[NGX_HTTP_APIMON_DIGEST_LEN];
    ngx_uint_t                     loc;
    ngx_uint_t                     size;
    ngx_uint_t                     served;
    uint64_t                       free;
    ngx_str_t                      id;
    size_t                         text_len;
    u_char                         text[NGX_HTTP_APIMON_LEASE_TEXT_LEN];

    /* a lease to return: its calls, those answered, its id */
    ngx_uint_t                     ret_k;
    uint64_t                       ret_keep;
    ngx_str_t                      ret_id;
    u_char                         ret_id_data[NGX_HTTP_APIMON_LEASE_ID_LEN];
} ngx_http_apimon_lease_t;

/* a return not made yet (per worker) */
typedef struct {
    ngx_queue_t                    queue;
    ngx_msec_t                     until;     /* its record is gone */
    size_t                         key_len;
    size_t                         id_len;
    size_t                         list_len;
    u_char                         key[sizeof("apimon:batch:")
                                       + NGX_HTTP_APIMON_LEASE_ID_LEN];
    u_char                         id[NGX_HTTP_APIMON_LEASE_ID_LEN];
    u_char                         list[NGX_HTTP_APIMON_LEASE_MAX_CALLS * 3];
} ngx_http_apimon_lret_t;


/* per worker (a copy of the configuration's after the fork) */
struct ngx_http_apimon_leaser_s {
    ngx_event_t                    flush;
    ngx_queue_t                    retry;     /* ngx_http_apimon_lret_t */
    ngx_queue_t                    carves;    /* in flight */
    ngx_msec_t                     quit_until;
    ngx_uint_t                     quitting;  /* unsigned:1 */
    ngx_connection_t               dummy;     /* event data (debug log) */
    ngx_uint_t                     seq;
    u_char                         worker[NGX_HTTP_APIMON_LEASE_WORKER_LEN];
    size_t                         worker_len; /* 0: not a worker */
};


typedef void (*ngx_http_apimon_lease_return_pt)(ngx_http_apimon_lease_t *l);


ngx_int_t ngx_http_apimon_lease_take(ngx_http_apimon_main_conf_t *amcf,
    u_char *digest, ngx_uint_t loc, ngx_http_apimon_lease_t *out);
ngx_int_t ngx_http_apimon_lease_grant(ngx_http_apimon_main_conf_t *amcf,
    ngx_http_apimon_lease_t *lease);
void ngx_http_apimon_lease_fail(ngx_http_apimon_main_conf_t *amcf,
    ngx_http_apimon_lease_t *lease);
void ngx_http_apimon_lease_expire(ngx_http_apimon_main_conf_t *amcf,
    ngx_uint_t all, ngx_http_apimon_lease_return_pt handler);


#endif /* _NGX_HTTP_APIMON_LEASE_H_INCLUDED_ */
