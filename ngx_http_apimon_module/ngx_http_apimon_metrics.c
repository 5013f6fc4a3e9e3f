
/*
 * apimon metrics: one shared-memory zone of atomic counters.  The zone
 * keeps its name and size, so a reload finds it again with the counts of
 * the workers before (as every nginx zone of the same name and size).  Rows
 * are only added, by the master while it loads a configuration; workers
 * only add to counters.  "apimon_metrics;" prints them (Prometheus text
 * exposition format 0.0.4).
 */


#include "ngx_http_apimon.h"
#include "ngx_http_apimon_metrics.h"
#include "ngx_http_apimon_admin.h"

#include <time.h>


#define NGX_HTTP_APIMON_METRICS_LATENCY   12
#define NGX_HTTP_APIMON_METRICS_SIZES     7
#define NGX_HTTP_APIMON_METRICS_CODES     21    /* the last: any other */
#define NGX_HTTP_APIMON_METRICS_MAGIC     0x61706d31


typedef struct {
    ngx_atomic_t               bucket[NGX_HTTP_APIMON_METRICS_LATENCY];
    ngx_atomic_t               count;
    ngx_atomic_t               sum;           /* microseconds, or units */
} ngx_http_apimon_histogram_t;


typedef struct {
    ngx_uint_t                 magic;
    ngx_uint_t                 napis;
    size_t                     api_len[NGX_HTTP_APIMON_METRICS_APIS];
    u_char                     api[NGX_HTTP_APIMON_METRICS_APIS]
                                  [NGX_HTTP_APIMON_METRICS_API_LEN];
    ngx_atomic_t               checks[NGX_HTTP_APIMON_METRICS_APIS + 1]
                                     [NGX_HTTP_APIMON_METRICS_RESULTS];
    ngx_http_apimon_histogram_t  latency;
    ngx_http_apimon_histogram_t  batch;
    ngx_atomic_t               connected[NGX_HTTP_APIMON_METRICS_WORKERS];
    ngx_atomic_t               reconnects[NGX_HTTP_APIMON_METRICS_WORKERS];
    ngx_atomic_t               circuit_opens;
    ngx_atomic_t               admin[NGX_HTTP_APIMON_METRICS_ROUTES + 1]
                                    [NGX_HTTP_APIMON_METRICS_CODES];
} ngx_http_apimon_metrics_sh_t;


/* an API of this configuration, and its row in the zone */
struct ngx_http_apimon_metrics_api_s {
    ngx_str_t                  name;
    ngx_uint_t                 row;
};


struct ngx_http_apimon_metrics_conf_s {
    ngx_shm_zone_t            *zone;
    ngx_http_apimon_metrics_sh_t  *sh;        /* NULL: not yet mapped */
    ngx_array_t                apis;          /* of *_metrics_api_t * */
};


static ngx_int_t ngx_http_apimon_metrics_init_zone(ngx_shm_zone_t *zone,
    void *data);
static ngx_http_apimon_metrics_conf_t *ngx_http_apimon_metrics_conf(
    ngx_conf_t *cf);
static ngx_int_t ngx_http_apimon_metrics_handler(ngx_http_request_t *r);
static u_char *ngx_http_apimon_metrics_checks(u_char *p,
    ngx_http_apimon_metrics_sh_t *sh);
static u_char *ngx_http_apimon_metrics_histogram(u_char *p,
    const char *name, const char *help, ngx_http_apimon_histogram_t *h,
    const char **le, ngx_uint_t n, ngx_uint_t usec);
static u_char *ngx_http_apimon_metrics_redis(u_char *p,
    ngx_http_apimon_metrics_sh_t *sh);
static u_char *ngx_http_apimon_metrics_admins(u_char *p,
    ngx_http_apimon_metrics_sh_t *sh);


static ngx_str_t  ngx_http_apimon_metrics_name = ngx_string("apimon_metrics");
static ngx_str_t  ngx_http_apimon_metrics_type =
    ngx_string("text/plain; version=0.0.4; charset=utf-8");


/* Redis round trips: upper bounds in microseconds, and as printed */
static ngx_uint_t  ngx_http_apimon_latency_us[] = {
    250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000,
    500000, 1000000
};

static const char  *ngx_http_apimon_latency_le[] = {
    "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025",
    "0.05", "0.1", "0.25", "0.5", "1"
};

/* requests per check script call (at most NGX_HTTP_APIMON_BATCH_MAX) */
static ngx_uint_t  ngx_http_apimon_size_le_n[] = { 1, 2, 4, 8, 16, 32, 64 };

static const char  *ngx_http_apimon_size_le[] = {
    "1", "2", "4", "8", "16", "32", "64"
};

/* the management API's answers; the last row counts any other */
static ngx_uint_t  ngx_http_apimon_metrics_codes[] = {
    200, 201, 204, 304, 400, 401, 403, 404, 405, 406, 409, 411, 412, 413,
    415, 422, 429, 500, 502, 503
};


static ngx_http_apimon_metrics_conf_t *
ngx_http_apimon_metrics_conf(ngx_conf_t *cf)
{
    ngx_http_apimon_main_conf_t  *amcf;

    amcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_apimon_module);

    if (amcf->metrics == NULL) {
        amcf->metrics = ngx_pcalloc(cf->pool,
                                    sizeof(ngx_http_apimon_metrics_conf_t));
        if (amcf->metrics == NULL) {
            return NULL;
        }

        if (ngx_array_init(&amcf->metrics->apis, cf->pool, 4,
                           sizeof(ngx_http_apimon_metrics_api_t *))
            != NGX_OK)
        {
            return NULL;
        }
    }

    return amcf->metrics;
}


ngx_int_t
ngx_http_apimon_metrics_init(ngx_conf_t *cf)
{
    size_t                           size;
    ngx_http_apimon_metrics_conf_t  *mcf;

    mcf = ngx_http_apimon_metrics_conf(cf);
    if (mcf == NULL) {
        return NGX_ERROR;
    }

    /* a constant: the same size finds the zone again on reload */
    size = 8 * ngx_pagesize + sizeof(ngx_http_apimon_metrics_sh_t);

    mcf->zone = ngx_shared_memory_add(cf, &ngx_http_apimon_metrics_name, size,
                                      &ngx_http_apimon_module);
    if (mcf->zone == NULL) {
        return NGX_ERROR;
    }

    mcf->zone->init = ngx_http_apimon_metrics_init_zone;
    mcf->zone->data = mcf;

    return NGX_OK;
}


ngx_int_t
ngx_http_apimon_metrics_api(ngx_conf_t *cf, ngx_http_apimon_loc_conf_t *alcf)
{
    ngx_uint_t                       i;
    ngx_http_apimon_metrics_api_t  **api, *a;
    ngx_http_apimon_metrics_conf_t  *mcf;

    mcf = ngx_http_apimon_metrics_conf(cf);
    if (mcf == NULL) {
        return NGX_ERROR;
    }

    api = mcf->apis.elts;

    for (i = 0; i < mcf->apis.nelts; i++) {
        if (api[i]->name.len == alcf->api.len
            && ngx_strncmp(api[i]->name.data, alcf->api.data, alcf->api.len)
               == 0)
        {
            alcf->metrics = api[i];
            return NGX_OK;
        }
    }

    a = ngx_pcalloc(cf->pool, sizeof(ngx_http_apimon_metrics_api_t));
    if (a == NULL) {
        return NGX_ERROR;
    }

    a->name = alcf->api;
    a->row = NGX_HTTP_APIMON_METRICS_APIS;

    api = ngx_array_push(&mcf->apis);
    if (api == NULL) {
        return NGX_ERROR;
    }

    *api = a;
    alcf->metrics = a;

    return NGX_OK;
}


/* in the master, before the workers of this configuration start */

static ngx_int_t
ngx_http_apimon_metrics_init_zone(ngx_shm_zone_t *zone, void *data)
{
    ngx_uint_t                       i, j;
    ngx_slab_pool_t                 *shpool;
    ngx_http_apimon_metrics_sh_t    *sh;
    ngx_http_apimon_metrics_api_t  **api;
    ngx_http_apimon_metrics_conf_t  *mcf, *old;

    mcf = zone->data;
    old = data;
    shpool = (ngx_slab_pool_t *) zone->shm.addr;

    if (old) {
        sh = old->sh;

    } else if (zone->shm.exists) {
        sh = shpool->data;

    } else {
        sh = ngx_slab_calloc(shpool, sizeof(ngx_http_apimon_metrics_sh_t));
        if (sh == NULL) {
            return NGX_ERROR;
        }

        sh->magic = NGX_HTTP_APIMON_METRICS_MAGIC;
        shpool->data = sh;
    }

    mcf->sh = sh;

    api = mcf->apis.elts;

    for (i = 0; i < mcf->apis.nelts; i++) {

        for (j = 0; j < sh->napis; j++) {
            if (sh->api_len[j] == api[i]->name.len
                && ngx_strncmp(sh->api[j], api[i]->name.data,
                               api[i]->name.len) == 0)
            {
                break;
            }
        }

        if (j == sh->napis) {
            if (j == NGX_HTTP_APIMON_METRICS_APIS
                || api[i]->name.len > NGX_HTTP_APIMON_METRICS_API_LEN)
            {
                ngx_log_error(NGX_LOG_WARN, zone->shm.log, 0,
                              "apimon metrics: no row left for API \"%V\", "
                              "counted as api=\"_other\"", &api[i]->name);
                continue;
            }

            ngx_memcpy(sh->api[j], api[i]->name.data, api[i]->name.len);
            sh->api_len[j] = api[i]->name.len;
            sh->napis++;
        }

        api[i]->row = j;
    }

    return NGX_OK;
}


char *
ngx_http_apimon_metrics(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_core_loc_conf_t  *clcf;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_apimon_metrics_handler;

    return NGX_CONF_OK;
}


/* counting: lock-free, from any worker */

static ngx_inline ngx_http_apimon_metrics_sh_t *
ngx_http_apimon_metrics_sh(void)
{
    ngx_http_apimon_main_conf_t  *amcf;

    amcf = ngx_http_cycle_get_module_main_conf(ngx_cycle,
                                               ngx_http_apimon_module);

    if (amcf == NULL || amcf->metrics == NULL) {
        return NULL;
    }

    return amcf->metrics->sh;
}


void
ngx_http_apimon_metrics_check(ngx_http_apimon_loc_conf_t *alcf,
    ngx_uint_t result, ngx_uint_t dry_run)
{
    ngx_uint_t                     row;
    ngx_http_apimon_metrics_sh_t  *sh;

    sh = ngx_http_apimon_metrics_sh();

    if (sh == NULL || result >= NGX_HTTP_APIMON_METRICS_RESULTS / 2) {
        return;
    }

    if (dry_run) {
        result += NGX_HTTP_APIMON_METRICS_RESULTS / 2;
    }

    row = alcf->metrics ? alcf->metrics->row : NGX_HTTP_APIMON_METRICS_APIS;

    (void) ngx_atomic_fetch_add(&sh->checks[row][result], 1);
}


uint64_t
ngx_http_apimon_metrics_usec(void)
{
    struct timespec  ts;

    /* vDSO: no system call; nginx's cached time has milliseconds only */
    (void) clock_gettime(CLOCK_MONOTONIC, &ts);

    return (uint64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}


static void
ngx_http_apimon_histogram_add(ngx_http_apimon_histogram_t *h,
    ngx_uint_t *le, ngx_uint_t n, ngx_uint_t v)
{
    ngx_uint_t  i;

    for (i = 0; i < n; i++) {
        if (v <= le[i]) {
            (void) ngx_atomic_fetch_add(&h->bucket[i], 1);
            break;
        }
    }

    (void) ngx_atomic_fetch_add(&h->sum, v);
    (void) ngx_atomic_fetch_add(&h->count, 1);
}


void
ngx_http_apimon_metrics_redis_time(uint64_t usec)
{
    ngx_http_apimon_metrics_sh_t  *sh;

    sh = ngx_http_apimon_metrics_sh();

    if (sh) {
        ngx_http_apimon_histogram_add(&sh->latency,
                                      ngx_http_apimon_latency_us,
                                      NGX_HTTP_APIMON_METRICS_LATENCY,
                                      (ngx_uint_t) usec);
    }
}


void
ngx_http_apimon_metrics_batch(ngx_uint_t n)
{
    ngx_http_apimon_metrics_sh_t  *sh;

    sh = ngx_http_apimon_metrics_sh();

    if (sh) {
        ngx_http_apimon_histogram_add(&sh->batch, ngx_http_apimon_size_le_n,
                                      NGX_HTTP_APIMON_METRICS_SIZES, n);
    }
}


void
ngx_http_apimon_metrics_connected(ngx_uint_t up)
{
    ngx_http_apimon_metrics_sh_t  *sh;

    sh = ngx_http_apimon_metrics_sh();

    if (sh && ngx_worker < NGX_HTTP_APIMON_METRICS_WORKERS) {
        sh->connected[ngx_worker] = up;
    }
}


void
ngx_http_apimon_metrics_reconnect(void)
{
    ngx_http_apimon_metrics_sh_t  *sh;

    sh = ngx_http_apimon_metrics_sh();

    if (sh && ngx_worker < NGX_HTTP_APIMON_METRICS_WORKERS) {
        (void) ngx_atomic_fetch_add(&sh->reconnects[ngx_worker], 1);
    }
}


void
ngx_http_apimon_metrics_circuit_open(void)
{
    ngx_http_apimon_metrics_sh_t  *sh;

    sh = ngx_http_apimon_metrics_sh();

    if (sh) {
        (void) ngx_atomic_fetch_add(&sh->circuit_opens, 1);
    }
}


void
ngx_http_apimon_metrics_admin(ngx_uint_t route, ngx_uint_t status)
{
    ngx_uint_t                     i;
    ngx_http_apimon_metrics_sh_t  *sh;

    sh = ngx_http_apimon_metrics_sh();

    if (sh == NULL) {
        return;
    }

    if (route > NGX_HTTP_APIMON_METRICS_ROUTES) {
        route = NGX_HTTP_APIMON_METRICS_ROUTES;
    }

    for (i = 0; i < NGX_HTTP_APIMON_METRICS_CODES - 1; i++) {
        if (ngx_http_apimon_metrics_codes[i] == status) {
            break;
        }
    }

    (void) ngx_atomic_fetch_add(&sh->admin[route][i], 1);
}


/* the answer */

static ngx_int_t
ngx_http_apimon_metrics_handler(ngx_http_request_t *r)
{
    size_t                         size;
    ngx_int_t                      rc;
    ngx_buf_t                     *b;
    ngx_http_apimon_metrics_sh_t  *sh;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    sh = ngx_http_apimon_metrics_sh();
    if (sh == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* a generous bound: about 200 bytes per series */
    size = 8192
           + (sh->napis + 1) * NGX_HTTP_APIMON_METRICS_RESULTS
             * (NGX_HTTP_APIMON_METRICS_API_LEN + 96)
           + NGX_HTTP_APIMON_METRICS_WORKERS * 200
           + (NGX_HTTP_APIMON_METRICS_ROUTES + 1)
             * NGX_HTTP_APIMON_METRICS_CODES * 160;

    b = ngx_create_temp_buf(r->pool, size);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b->last = ngx_http_apimon_metrics_checks(b->last, sh);

    b->last = ngx_http_apimon_metrics_histogram(b->last,
                  "apimon_redis_request_duration_seconds",
                  "Redis round trips of the module's calls, in seconds.",
                  &sh->latency, ngx_http_apimon_latency_le,
                  NGX_HTTP_APIMON_METRICS_LATENCY, 1);

    b->last = ngx_http_apimon_metrics_histogram(b->last,
                  "apimon_check_batch_size",
                  "Requests checked per check script call.",
                  &sh->batch, ngx_http_apimon_size_le,
                  NGX_HTTP_APIMON_METRICS_SIZES, 0);

    b->last = ngx_http_apimon_metrics_redis(b->last, sh);
    b->last = ngx_http_apimon_metrics_admins(b->last, sh);

    r->disable_not_modified = 1;

    return ngx_http_apimon_send_buf(r, NGX_HTTP_OK,
                                    &ngx_http_apimon_metrics_type, b);
}


static u_char *
ngx_http_apimon_metrics_checks(u_char *p, ngx_http_apimon_metrics_sh_t *sh)
{
    ngx_str_t   *name, api, overage;
    ngx_uint_t   row, res, n, found;

    p = ngx_sprintf(p,
        "# HELP apimon_checks_total Requests checked, by API and result.\n"
        "# TYPE apimon_checks_total counter\n");

    ngx_str_set(&overage, "allowed_overage");
    found = (ngx_http_apimon_result_find(&overage) != NGX_HTTP_APIMON_NONE);

    for (row = 0; row <= NGX_HTTP_APIMON_METRICS_APIS; row++) {

        if (row < sh->napis) {
            api.len = sh->api_len[row];
            api.data = sh->api[row];

        } else if (row == NGX_HTTP_APIMON_METRICS_APIS) {
            ngx_str_set(&api, "_other");

        } else {
            continue;
        }

        if (row == NGX_HTTP_APIMON_METRICS_APIS) {
            /* the overflow row, only when something was counted in it */
            n = 0;

            for (res = 0; res < NGX_HTTP_APIMON_METRICS_RESULTS; res++) {
                n += sh->checks[row][res];
            }

            if (n == 0) {
                continue;
            }
        }

        for (res = 1; res < NGX_HTTP_APIMON_METRICS_RESULTS / 2; res++) {
            name = ngx_http_apimon_result_name(res);

            if (name->len == 0) {
                break;
            }

            p = ngx_sprintf(p, "apimon_checks_total{api=\"%V\","
                            "result=\"%V\"} %uA\n",
                            &api, name, sh->checks[row][res]);
        }

        /* what apimon_dry_run let through: the refusals' own series */
        for (res = 1; res < NGX_HTTP_APIMON_METRICS_RESULTS / 2; res++) {
            name = ngx_http_apimon_result_name(res);

            if (name->len == 0) {
                break;
            }

            if (ngx_http_apimon_result(res)->status == 0) {
                continue;
            }

            p = ngx_sprintf(p, "apimon_checks_total{api=\"%V\","
                            "result=\"dry_run_%V\"} %uA\n", &api, name,
                            sh->checks[row]
                                      [res + NGX_HTTP_APIMON_METRICS_RESULTS
                                             / 2]);
        }

        if (!found) {
            /* the result of issue 10 (overage): defined, never counted yet */
            p = ngx_sprintf(p, "apimon_checks_total{api=\"%V\","
                            "result=\"allowed_overage\"} 0\n", &api);
        }
    }

    return p;
}


static u_char *
ngx_http_apimon_metrics_histogram(u_char *p, const char *name,
    const char *help, ngx_http_apimon_histogram_t *h, const char **le,
    ngx_uint_t n, ngx_uint_t usec)
{
    ngx_uint_t    i;
    ngx_atomic_t  cum, count, sum;

    /* read count first: the buckets are at least as many, never fewer */
    count = h->count;
    sum = h->sum;

    p = ngx_sprintf(p, "# HELP %s %s\n# TYPE %s histogram\n",
                    name, help, name);

    cum = 0;

    for (i = 0; i < n; i++) {
        cum += h->bucket[i];

        if (cum > count) {
            count = cum;
        }

        p = ngx_sprintf(p, "%s_bucket{le=\"%s\"} %uA\n", name, le[i], cum);
    }

    p = ngx_sprintf(p, "%s_bucket{le=\"+Inf\"} %uA\n", name, count);

    if (usec) {
        p = ngx_sprintf(p, "%s_sum %uA.%06uA\n", name, sum / 1000000,
                        sum % 1000000);

    } else {
        p = ngx_sprintf(p, "%s_sum %uA\n", name, sum);
    }

    return ngx_sprintf(p, "%s_count %uA\n", name, count);
}


static u_char *
ngx_http_apimon_metrics_redis(u_char *p, ngx_http_apimon_metrics_sh_t *sh)
{
    ngx_uint_t         i, n;
    ngx_core_conf_t   *ccf;

    ccf = (ngx_core_conf_t *) ngx_get_conf(ngx_cycle->conf_ctx,
                                           ngx_core_module);

    n = ccf->worker_processes;

    if (n > NGX_HTTP_APIMON_METRICS_WORKERS) {
        n = NGX_HTTP_APIMON_METRICS_WORKERS;
    }

    p = ngx_sprintf(p,
        "# HELP apimon_redis_connected Whether the worker's Redis connection "
        "is ready (1) or not (0).\n"
        "# TYPE apimon_redis_connected gauge\n");

    for (i = 0; i < n; i++) {
        p = ngx_sprintf(p, "apimon_redis_connected{worker=\"%ui\"} %uA\n",
                        i, sh->connected[i]);
    }

    p = ngx_sprintf(p,
        "# HELP apimon_redis_reconnects_total Reconnect attempts "
        "to Redis, per worker.\n"
        "# TYPE apimon_redis_reconnects_total counter\n");

    for (i = 0; i < n; i++) {
        p = ngx_sprintf(p, "apimon_redis_reconnects_total{worker=\"%ui\"} "
                        "%uA\n", i, sh->reconnects[i]);
    }

    return ngx_sprintf(p,
        "# HELP apimon_redis_circuit_opens_total Times a worker's circuit "
        "breaker opened (calls fail at once while Redis is down).\n"
        "# TYPE apimon_redis_circuit_opens_total counter\n"
        "apimon_redis_circuit_opens_total %uA\n", sh->circuit_opens);
}


static u_char *
ngx_http_apimon_metrics_admins(u_char *p, ngx_http_apimon_metrics_sh_t *sh)
{
    ngx_uint_t                      i, c;
    ngx_http_apimon_admin_route_t  *rt;

    p = ngx_sprintf(p,
        "# HELP apimon_admin_requests_total Management API requests, by "
        "endpoint (a route table row) and status code.\n"
        "# TYPE apimon_admin_requests_total counter\n");

    rt = ngx_http_apimon_admin_routes;

    for (i = 0; i <= NGX_HTTP_APIMON_METRICS_ROUTES; i++) {

        for (c = 0; c < NGX_HTTP_APIMON_METRICS_CODES; c++) {
            if (sh->admin[i][c] == 0) {
                continue;
            }

            if (i < NGX_HTTP_APIMON_METRICS_ROUTES && rt[i].method.len) {
                p = ngx_sprintf(p, "apimon_admin_requests_total{endpoint=\""
                                "%V %s\",", &rt[i].method, rt[i].path);

            } else {
                p = ngx_sprintf(p, "apimon_admin_requests_total{endpoint=\""
                                "none\",");
            }

            if (c < NGX_HTTP_APIMON_METRICS_CODES - 1) {
                p = ngx_sprintf(p, "code=\"%ui\"} %uA\n",
                                ngx_http_apimon_metrics_codes[c],
                                sh->admin[i][c]);

            } else {
                p = ngx_sprintf(p, "code=\"other\"} %uA\n", sh->admin[i][c]);
            }
        }

        if (i < NGX_HTTP_APIMON_METRICS_ROUTES && rt[i].method.len == 0) {
            /* past the table's end: only the unrouted row is left */
            i = NGX_HTTP_APIMON_METRICS_ROUTES - 1;
        }
    }

    return p;
}
