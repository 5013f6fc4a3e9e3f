
/*
 * apimon: counters in shared memory, every worker adding to the same ones,
 * kept across reloads; "apimon_metrics;" answers them in the Prometheus
 * text exposition format (ngx_http_apimon_metrics.c).
 *
 * The label values are bounded by the configuration: the APIs of the
 * enforcing locations, the results, the worker numbers, the rows of the
 * management API's route table and a fixed list of status codes.
 */


#ifndef _NGX_HTTP_APIMON_METRICS_H_INCLUDED_
#define _NGX_HTTP_APIMON_METRICS_H_INCLUDED_


#include "ngx_http_apimon.h"


#define NGX_HTTP_APIMON_METRICS_APIS      256   /* a row more: the rest */
#define NGX_HTTP_APIMON_METRICS_RESULTS   32    /* dry runs: the upper half */
#define NGX_HTTP_APIMON_METRICS_WORKERS   64
#define NGX_HTTP_APIMON_METRICS_ROUTES    64    /* a row more: unrouted */
#define NGX_HTTP_APIMON_METRICS_API_LEN   64


/* the zone, made at configuration time (postconfiguration) */
ngx_int_t ngx_http_apimon_metrics_init(ngx_conf_t *cf);
/* an enforcing location's API gets its row (merge_loc_conf) */
ngx_int_t ngx_http_apimon_metrics_api(ngx_conf_t *cf,
    ngx_http_apimon_loc_conf_t *alcf);
/* the "apimon_metrics" directive */
char *ngx_http_apimon_metrics(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);

/* a request's decision, counted once per request */
void ngx_http_apimon_metrics_check(ngx_http_apimon_loc_conf_t *alcf,
    ngx_uint_t result, ngx_uint_t dry_run);
/* a monotonic clock in microseconds, and one Redis round trip */
uint64_t ngx_http_apimon_metrics_usec(void);
void ngx_http_apimon_metrics_redis_time(uint64_t usec);
void ngx_http_apimon_metrics_batch(ngx_uint_t n);
/* this worker's Redis connection */
void ngx_http_apimon_metrics_connected(ngx_uint_t up);
void ngx_http_apimon_metrics_reconnect(void);
void ngx_http_apimon_metrics_circuit_open(void);
/* a management request: its route's row (or the count: none) */
void ngx_http_apimon_metrics_admin(ngx_uint_t route, ngx_uint_t status);


#endif /* _NGX_HTTP_APIMON_METRICS_H_INCLUDED_ */
