
/*
 * apimon: lease mode (apimon_lease).  The leases of a host live in one
 * shared memory zone, an rbtree keyed by the key digest and the location,
 * as limit_req keeps its states: every worker of the host, and the workers
 * of the next configuration after a reload, see the same leases, so what
 * a lease counted is never tied to one worker's memory.
 *
 * A lease is a number of calls a subscription may make at one location
 * until it expires; "used" counts the calls served from it.  This file
 * keeps the zone and its entries; carving leases from Redis and returning
 * what is unused is the lease operation's.
 */


#include "ngx_http_apimon.h"
#include "ngx_http_apimon_lease.h"


static ngx_int_t ngx_http_apimon_lease_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);
static void ngx_http_apimon_lease_insert(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel);
static ngx_http_apimon_lease_node_t *ngx_http_apimon_lease_lookup(
    ngx_http_apimon_lease_shctx_t *sh, ngx_uint_t hash, u_char *digest,
    ngx_uint_t loc);
static char *ngx_http_apimon_lease_param(ngx_conf_t *cf,
    ngx_http_apimon_main_conf_t *amcf, ngx_str_t *v);


static ngx_str_t  ngx_http_apimon_lease_zone_name =
    ngx_string("apimon_lease");


/*
 * apimon_lease size [calls=N] [time=T] [flush=T] | off: size is the
 * shared memory of the host's leases (at least 32k: ngx_slab's own
 * pages); one line only
 */

char *
ngx_http_apimon_lease(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_apimon_main_conf_t *amcf = conf;

    ssize_t          size;
    ngx_str_t       *value;
    ngx_uint_t       i;
    ngx_shm_zone_t  *zone;

    if (amcf->lease_set) {
        return "is duplicate";
    }

    amcf->lease_set = 1;
    value = cf->args->elts;

    if (value[1].len == 3 && ngx_strncmp(value[1].data, "off", 3) == 0) {
        if (cf->args->nelts != 2) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"apimon_lease\": \"off\" takes no "
                               "parameters");
            return NGX_CONF_ERROR;
        }

        return NGX_CONF_OK;
    }

    size = ngx_parse_size(&value[1]);

    if (size == NGX_ERROR || size < (ssize_t) (8 * ngx_pagesize)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"apimon_lease\": invalid size \"%V\", "
                           "expected at least %uzk or \"off\"",
                           &value[1], 8 * ngx_pagesize / 1024);
        return NGX_CONF_ERROR;
    }

    for (i = 2; i < cf->args->nelts; i++) {
        if (ngx_http_apimon_lease_param(cf, amcf, &value[i])
            != NGX_CONF_OK)
        {
            return NGX_CONF_ERROR;
        }
    }

    zone = ngx_shared_memory_add(cf, &ngx_http_apimon_lease_zone_name, size,
                                 &ngx_http_apimon_module);
    if (zone == NULL) {
        return NGX_CONF_ERROR;
    }

    amcf->leaser = ngx_pcalloc(cf->pool, sizeof(ngx_http_apimon_leaser_t));
    if (amcf->leaser == NULL) {
        return NGX_CONF_ERROR;
    }

    zone->init = ngx_http_apimon_lease_init_zone;
    zone->data = amcf;
    amcf->lease_zone = zone;

    return NGX_CONF_OK;
}


static char *
ngx_http_apimon_lease_param(ngx_conf_t *cf,
    ngx_http_apimon_main_conf_t *amcf, ngx_str_t *v)
{
    ngx_int_t    n;
    ngx_str_t    s;
    ngx_msec_t   ms, *to, max;

    if (v->len > 6 && ngx_strncmp(v->data, "calls=", 6) == 0) {
        if (amcf->lease_calls != NGX_CONF_UNSET_UINT) {
            goto twice;
        }

        n = ngx_atoi(v->data + 6, v->len - 6);
        if (n < 1 || n > NGX_HTTP_APIMON_LEASE_MAX_CALLS) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"apimon_lease\": invalid \"%V\", expected "
                               "calls=1..%d", v,
                               NGX_HTTP_APIMON_LEASE_MAX_CALLS);
            return NGX_CONF_ERROR;
        }

        amcf->lease_calls = n;
        return NGX_CONF_OK;
    }

    if (v->len > 5 && ngx_strncmp(v->data, "time=", 5) == 0) {
        to = &amcf->lease_time;
        s.data = v->data + 5;
        s.len = v->len - 5;
        max = 10000;

    } else if (v->len > 6 && ngx_strncmp(v->data, "flush=", 6) == 0) {
        to = &amcf->lease_flush;
        s.data = v->data + 6;
        s.len = v->len - 6;
        max = 10000;

    } else {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"apimon_lease\": invalid parameter \"%V\", "
                           "expected calls=, time= or flush=", v);
        return NGX_CONF_ERROR;
    }

    if (*to != NGX_CONF_UNSET_MSEC) {
        goto twice;
    }

    ms = ngx_parse_time(&s, 0);
    if (ms == (ngx_msec_t) NGX_ERROR || ms < 10 || ms > max) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"apimon_lease\": invalid \"%V\", expected a "
                           "time from 10ms to %Ms", v, max / 1000);
        return NGX_CONF_ERROR;
    }

    *to = ms;
    return NGX_CONF_OK;

twice:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "\"apimon_lease\": \"%V\": the parameter is given "
                       "twice", v);
    return NGX_CONF_ERROR;
}


/* the defaults, and a flush interval within the lease's lifetime */

char *
ngx_http_apimon_lease_init_conf(ngx_conf_t *cf,
    ngx_http_apimon_main_conf_t *amcf)
{
    ngx_conf_init_uint_value(amcf->lease_calls,
                             NGX_HTTP_APIMON_LEASE_CALLS);
    ngx_conf_init_msec_value(amcf->lease_time, NGX_HTTP_APIMON_LEASE_TIME);
    ngx_conf_init_msec_value(amcf->lease_flush,
                             NGX_HTTP_APIMON_LEASE_FLUSH);

    if (amcf->lease_zone && amcf->lease_flush > amcf->lease_time) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"apimon_lease\": flush=%Mms is longer than "
                           "the lease time=%Mms", amcf->lease_flush,
                           amcf->lease_time);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/*
 * A reload keeps the zone (same name and size): the new workers inherit the
 * old ones' leases and return what they did not use.
 */

static ngx_int_t
ngx_http_apimon_lease_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_http_apimon_main_conf_t *amcf = shm_zone->data;
    ngx_http_apimon_main_conf_t *old = data;

    size_t                          len;
    ngx_slab_pool_t                *shpool;
    ngx_http_apimon_lease_shctx_t  *sh;

    shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (old) {
        amcf->lease_sh = old->lease_sh;
        amcf->lease_shpool = shpool;
        return NGX_OK;
    }

    if (shm_zone->shm.exists) {
        amcf->lease_sh = shpool->data;
        amcf->lease_shpool = shpool;
        return NGX_OK;
    }

    sh = ngx_slab_alloc(shpool, sizeof(ngx_http_apimon_lease_shctx_t));
    if (sh == NULL) {
        return NGX_ERROR;
    }

    shpool->data = sh;
    ngx_rbtree_init(&sh->rbtree, &sh->sentinel,
                    ngx_http_apimon_lease_insert);
    ngx_queue_init(&sh->queue);

    len = sizeof(" in apimon_lease zone \"\"")
          + ngx_http_apimon_lease_zone_name.len;

    shpool->log_ctx = ngx_slab_alloc(shpool, len);
    if (shpool->log_ctx == NULL) {
        return NGX_ERROR;
    }

    ngx_sprintf(shpool->log_ctx, " in apimon_lease zone \"%V\"%Z",
                &ngx_http_apimon_lease_zone_name);

    amcf->lease_sh = sh;
    amcf->lease_shpool = shpool;

    return NGX_OK;
}


/* ordered by hash, then digest, then location */

static ngx_int_t
ngx_http_apimon_lease_cmp(ngx_http_apimon_lease_node_t *a,
    u_char *digest, ngx_uint_t loc)
{
    ngx_int_t  rc;

    rc = ngx_memcmp(a->digest, digest, NGX_HTTP_APIMON_DIGEST_LEN);
    if (rc != 0) {
        return rc;
    }

    return (ngx_int_t) a->loc - (ngx_int_t) loc;
}


static void
ngx_http_apimon_lease_insert(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel)
{
    ngx_rbtree_node_t             **p;
    ngx_http_apimon_lease_node_t   *ln, *lnt;

    ln = (ngx_http_apimon_lease_node_t *) node;

    for ( ;; ) {

        if (node->key < temp->key) {
            p = &temp->left;

        } else if (node->key > temp->key) {
            p = &temp->right;

        } else {
            lnt = (ngx_http_apimon_lease_node_t *) temp;
            p = ngx_http_apimon_lease_cmp(ln, lnt->digest, lnt->loc) < 0
                ? &temp->left : &temp->right;
        }

        if (*p == sentinel) {
            break;
        }

        temp = *p;
    }

    *p = node;
    node->parent = temp;
    node->left = sentinel;
    node->right = sentinel;
    ngx_rbt_red(node);
}


static ngx_http_apimon_lease_node_t *
ngx_http_apimon_lease_lookup(ngx_http_apimon_lease_shctx_t *sh,
    ngx_uint_t hash, u_char *digest, ngx_uint_t loc)
{
    ngx_int_t                      rc;
    ngx_rbtree_node_t             *node, *sentinel;
    ngx_http_apimon_lease_node_t  *ln;

    node = sh->rbtree.root;
    sentinel = sh->rbtree.sentinel;

    while (node != sentinel) {

        if (hash < node->key) {
            node = node->left;
            continue;
        }

        if (hash > node->key) {
            node = node->right;
            continue;
        }

        ln = (ngx_http_apimon_lease_node_t *) node;
        rc = ngx_http_apimon_lease_cmp(ln, digest, loc);

        if (rc == 0) {
            return ln;
        }

        node = (rc > 0) ? node->left : node->right;
    }

    return NULL;
}


/* the entry of a digest and location, made IDLE when there is none */

static ngx_http_apimon_lease_node_t *
ngx_http_apimon_lease_get(ngx_http_apimon_main_conf_t *amcf, u_char *digest,
    ngx_uint_t loc)
{
    ngx_uint_t                     hash;
    ngx_http_apimon_lease_node_t  *ln;

    hash = ngx_crc32_short(digest, NGX_HTTP_APIMON_DIGEST_LEN);

    ln = ngx_http_apimon_lease_lookup(amcf->lease_sh, hash, digest, loc);
    if (ln) {
        return ln;
    }

    ln = ngx_slab_calloc_locked(amcf->lease_shpool,
                                sizeof(ngx_http_apimon_lease_node_t));
    if (ln == NULL) {
        return NULL;
    }

    ngx_memcpy(ln->digest, digest, NGX_HTTP_APIMON_DIGEST_LEN);
    ln->loc = loc;
    ln->node.key = hash;
    ln->state = NGX_HTTP_APIMON_LEASE_IDLE;
    ln->size = ngx_min(NGX_HTTP_APIMON_LEASE_FIRST, amcf->lease_calls);
    ln->cap = amcf->lease_calls;
    ln->expires = ngx_current_msec + 10 * amcf->lease_time;
    ngx_rbtree_insert(&amcf->lease_sh->rbtree, &ln->node);
    ngx_queue_insert_head(&amcf->lease_sh->queue, &ln->queue);

    return ln;
}


/* what a lease did not serve, to return (ln becomes IDLE) */

static void
ngx_http_apimon_lease_out(ngx_http_apimon_main_conf_t *amcf,
    ngx_http_apimon_lease_node_t *ln, ngx_http_apimon_lease_t *out)
{
    uint64_t    m;
    ngx_uint_t  n;

    /* the next carve: twice what this one served, within its cap */
    for (n = 0, m = ln->keep; m; m &= m - 1) {
        n++;
    }

    ln->size = ngx_min(ln->cap, ngx_max(NGX_HTTP_APIMON_LEASE_FIRST, 2 * n));

    out->ret_k = ln->k;
    out->ret_keep = ln->keep;
    out->ret_id.len = ln->id_len;
    out->ret_id.data = out->ret_id_data;
    ngx_memcpy(out->ret_id_data, ln->id, ln->id_len);

    ln->state = NGX_HTTP_APIMON_LEASE_IDLE;
    ln->k = 0;
    ln->free = 0;
    ln->keep = 0;
    ln->expires = ngx_current_msec + amcf->lease_time;
}


/*
 * One call of digest at loc.  NGX_OK: served from the lease (out->text is
 * the reply of its carve, out->served the calls served from it so far);
 * NGX_DECLINED: the caller carves a lease of out->size calls with the id
 * it puts in out->id (the entry waits for it), and returns out->ret_* first
 * whenever out->ret_k is set (with any rc); NGX_BUSY: the caller asks Redis as without a
 * lease (another carve is under way, near the end of a quota, zone full).
 */

ngx_int_t
ngx_http_apimon_lease_take(ngx_http_apimon_main_conf_t *amcf,
    u_char *digest, ngx_uint_t loc, ngx_http_apimon_lease_t *out)
{
    ngx_int_t                      rc;
    uint64_t                       bit;
    ngx_http_apimon_lease_node_t  *ln;

    out->ret_k = 0;
    rc = NGX_BUSY;

    ngx_shmtx_lock(&amcf->lease_shpool->mutex);

    ln = ngx_http_apimon_lease_get(amcf, digest, loc);

    if (ln == NULL) {
        goto done;
    }

    if (ln->state == NGX_HTTP_APIMON_LEASE_LEASED) {

        if (ln->free
            && (ngx_msec_int_t) (ln->expires - ngx_current_msec) > 0)
        {
            bit = ln->free & (~ln->free + 1);
            ln->free &= ~bit;
            ln->keep |= bit;
            ln->served++;

            out->served = ln->served;
            out->text_len = ln->text_len;
            ngx_memcpy(out->text, ln->text, ln->text_len);

            rc = NGX_OK;
            goto done;
        }

        /* spent or over: returned by this caller, then carved again */
        ngx_http_apimon_lease_out(amcf, ln, out);
    }

    if (ln->state == NGX_HTTP_APIMON_LEASE_IDLE
        && (ngx_msec_int_t) (ln->expires - ngx_current_msec) <= 0)
    {
        /* per-request checks last one lease time */
        ln->size = ngx_min(NGX_HTTP_APIMON_LEASE_FIRST, amcf->lease_calls);
        ln->cap = amcf->lease_calls;
    }

    if (ln->state == NGX_HTTP_APIMON_LEASE_CARVING
        || (ln->size <= 1
            && (ngx_msec_int_t) (ln->expires - ngx_current_msec) > 0))
    {
        goto done;
    }

    ln->state = NGX_HTTP_APIMON_LEASE_CARVING;
    ln->k = ngx_max(ln->size, 1);
    ln->keep = 0;
    ln->free = 0;
    ln->id_len = out->id.len;
    ngx_memcpy(ln->id, out->id.data, out->id.len);
    /* a carve that never ends (its worker killed) is returned whole */
    ln->expires = ngx_current_msec + NGX_HTTP_APIMON_LEASE_CARVE_TIMEOUT;

    out->size = ln->k;
    rc = NGX_DECLINED;

done:

    ngx_shmtx_unlock(&amcf->lease_shpool->mutex);

    return rc;
}


/*
 * A carve answered: its elements "allowed" (bits of free) are the lease,
 * keep those already answered; size the next carve.  NGX_ERROR: the
 * entry is gone (zone full): the caller returns what is not kept.
 */

ngx_int_t
ngx_http_apimon_lease_grant(ngx_http_apimon_main_conf_t *amcf,
    ngx_http_apimon_lease_t *lease)
{
    ngx_int_t                      rc;
    ngx_http_apimon_lease_node_t  *ln;

    rc = NGX_OK;

    ngx_shmtx_lock(&amcf->lease_shpool->mutex);

    ln = ngx_http_apimon_lease_get(amcf, lease->digest, lease->loc);

    if (ln == NULL
        || lease->text_len > NGX_HTTP_APIMON_LEASE_TEXT_LEN
        || ln->state != NGX_HTTP_APIMON_LEASE_CARVING
        || ln->id_len != lease->id.len
        || ngx_memcmp(ln->id, lease->id.data, ln->id_len) != 0)
    {
        /* given up (returned whole) or taken over: this one goes back */
        rc = NGX_ERROR;
        goto done;
    }

    ln->state = NGX_HTTP_APIMON_LEASE_LEASED;
    ln->k = lease->ret_k;
    ln->free = lease->free & ~lease->ret_keep;
    ln->keep = lease->ret_keep;
    ln->served = 0;
    ln->cap = lease->size;
    ln->size = ngx_min(ln->size, ln->cap);
    ln->expires = ngx_current_msec + amcf->lease_time;
    ln->id_len = lease->id.len;
    ngx_memcpy(ln->id, lease->id.data, lease->id.len);
    ln->text_len = lease->text_len;
    ngx_memcpy(ln->text, lease->text, lease->text_len);

done:

    ngx_shmtx_unlock(&amcf->lease_shpool->mutex);

    return rc;
}


/* a carve that got no reply: the entry is free again (size: per request) */

void
ngx_http_apimon_lease_fail(ngx_http_apimon_main_conf_t *amcf,
    ngx_http_apimon_lease_t *lease)
{
    ngx_http_apimon_lease_node_t  *ln;

    ngx_shmtx_lock(&amcf->lease_shpool->mutex);

    ln = ngx_http_apimon_lease_get(amcf, lease->digest, lease->loc);

    if (ln && ln->state == NGX_HTTP_APIMON_LEASE_CARVING
        && ln->id_len == lease->id.len
        && ngx_memcmp(ln->id, lease->id.data, ln->id_len) == 0)
    {
        ln->state = NGX_HTTP_APIMON_LEASE_IDLE;
        ln->k = 0;
        ln->size = 1;
        ln->cap = 1;
        ln->expires = ngx_current_msec + amcf->lease_time;
    }

    ngx_shmtx_unlock(&amcf->lease_shpool->mutex);
}


/*
 * The flush: each lease over (expired, spent; every one when "all") is
 * returned by whichever worker sees it first: a lease of a worker killed,
 * or of the configuration before a reload, by a survivor; a carve whose
 * worker never saw its reply is returned whole.  Entries idle for 10 lease
 * times are forgotten.  "handler" only queues a Redis call (no lock).
 */

void
ngx_http_apimon_lease_expire(ngx_http_apimon_main_conf_t *amcf,
    ngx_uint_t all, ngx_http_apimon_lease_return_pt handler)
{
    ngx_queue_t                   *q, *next;
    ngx_http_apimon_lease_t        out;
    ngx_http_apimon_lease_node_t  *ln;

    ngx_shmtx_lock(&amcf->lease_shpool->mutex);

    for (q = ngx_queue_head(&amcf->lease_sh->queue);
         q != ngx_queue_sentinel(&amcf->lease_sh->queue);
         q = next)
    {
        next = ngx_queue_next(q);
        ln = ngx_queue_data(q, ngx_http_apimon_lease_node_t, queue);

        if (!all && (ngx_msec_int_t) (ln->expires - ngx_current_msec) > 0
            && (ln->state != NGX_HTTP_APIMON_LEASE_LEASED || ln->free))
        {
            continue;
        }

        switch (ln->state) {

        case NGX_HTTP_APIMON_LEASE_LEASED:
            ngx_http_apimon_lease_out(amcf, ln, &out);
            handler(&out);
            break;

        case NGX_HTTP_APIMON_LEASE_CARVING:
            if (all) {
                /* its worker still waits for the reply */
                break;
            }

            ln->keep = 0;
            ngx_http_apimon_lease_out(amcf, ln, &out);
            handler(&out);
            break;

        default: /* IDLE */
            if (all) {
                break;
            }

            ngx_queue_remove(q);
            ngx_rbtree_delete(&amcf->lease_sh->rbtree, &ln->node);
            ngx_slab_free_locked(amcf->lease_shpool, ln);
        }
    }

    ngx_shmtx_unlock(&amcf->lease_shpool->mutex);
}
