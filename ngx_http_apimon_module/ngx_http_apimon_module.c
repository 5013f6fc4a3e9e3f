/*
 * apimon: API keys, rate limits and quotas enforced in Redis.
 * Directives, configuration and the module definition.
 */


#include "ngx_http_apimon.h"
#include "ngx_http_apimon_metrics.h"


static void *ngx_http_apimon_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_apimon_init_main_conf(ngx_conf_t *cf, void *conf);
static void *ngx_http_apimon_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_apimon_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static ngx_int_t ngx_http_apimon_preconfiguration(ngx_conf_t *cf);
static ngx_int_t ngx_http_apimon_postconfiguration(ngx_conf_t *cf);
static ngx_int_t ngx_http_apimon_init_process(ngx_cycle_t *cycle);
static void ngx_http_apimon_exit_process(ngx_cycle_t *cycle);

static char *ngx_http_apimon_redis(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_apimon_redis_address(ngx_conf_t *cf,
    ngx_http_apimon_main_conf_t *amcf, ngx_str_t *addr);
static char *ngx_http_apimon_redis_password(ngx_conf_t *cf,
    ngx_http_apimon_main_conf_t *amcf, ngx_str_t *file);
static char *ngx_http_apimon_key_secret_file(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_apimon_unknown_key_cache(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_apimon_api(ngx_conf_t *cf, void *post, void *data);
static char *ngx_http_apimon_key(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_apimon_rate(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_apimon_quota(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_apimon_status_bounds(ngx_conf_t *cf, void *post,
    void *data);
static char *ngx_http_apimon_conf_set_enum(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_int_t ngx_http_apimon_valid_name(ngx_str_t *name);
static void ngx_http_apimon_key_source(ngx_http_apimon_loc_conf_t *alcf,
    ngx_str_t *value);
static ngx_int_t ngx_http_apimon_number_text(ngx_conf_t *cf, ngx_str_t *s,
    ngx_uint_t n);


static ngx_conf_post_t  ngx_http_apimon_api_post = {
    ngx_http_apimon_api
};


static ngx_conf_num_bounds_t  ngx_http_apimon_quota_status_bounds = {
    ngx_http_apimon_status_bounds, 400, 599
};


static ngx_conf_enum_t  ngx_http_apimon_on_redis_error_values[] = {
    { ngx_string("open"), NGX_HTTP_APIMON_REDIS_OPEN },
    { ngx_string("closed"), NGX_HTTP_APIMON_REDIS_CLOSED },
    { ngx_null_string, 0 }
};


/* as limit_req_log_level */
static ngx_conf_enum_t  ngx_http_apimon_log_levels[] = {
    { ngx_string("info"), NGX_LOG_INFO },
    { ngx_string("notice"), NGX_LOG_NOTICE },
    { ngx_string("warn"), NGX_LOG_WARN },
    { ngx_string("error"), NGX_LOG_ERR },
    { ngx_null_string, 0 }
};


static ngx_command_t  ngx_http_apimon_commands[] = {

    { ngx_string("apimon_redis"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
      ngx_http_apimon_redis,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("apimon_redis_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_apimon_loc_conf_t, timeout),
      NULL },

    { ngx_string("apimon"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_apimon_loc_conf_t, enable),
      NULL },

    { ngx_string("apimon_api"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_apimon_loc_conf_t, api),
      &ngx_http_apimon_api_post },

    { ngx_string("apimon_key"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_apimon_key,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_apimon_loc_conf_t, key),
      NULL },

    { ngx_string("apimon_hide_key"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_apimon_loc_conf_t, hide_key),
      NULL },

    { ngx_string("apimon_key_secret_file"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_apimon_key_secret_file,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("apimon_key_legacy"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_apimon_loc_conf_t, key_legacy),
      NULL },

    { ngx_string("apimon_unknown_key_cache"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE12,
      ngx_http_apimon_unknown_key_cache,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("apimon_lease"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
      ngx_http_apimon_lease,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("apimon_rate"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_apimon_rate,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("apimon_quota"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE12,
      ngx_http_apimon_quota,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("apimon_quota_status"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_apimon_loc_conf_t, quota_status),
      &ngx_http_apimon_quota_status_bounds },

    { ngx_string("apimon_on_redis_error"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_apimon_conf_set_enum,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_apimon_loc_conf_t, on_redis_error),
      ngx_http_apimon_on_redis_error_values },

    { ngx_string("apimon_log_level"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_apimon_conf_set_enum,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_apimon_loc_conf_t, log_level),
      ngx_http_apimon_log_levels },

    { ngx_string("apimon_dry_run"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_apimon_loc_conf_t, dry_run),
      NULL },

    { ngx_string("apimon_metrics"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_apimon_metrics,
      0,
      0,
      NULL },

    { ngx_string("apimon_legacy_headers"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_apimon_loc_conf_t, legacy_headers),
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_apimon_module_ctx = {
    ngx_http_apimon_preconfiguration,      /* preconfiguration */
    ngx_http_apimon_postconfiguration,     /* postconfiguration */

    ngx_http_apimon_create_main_conf,      /* create main configuration */
    ngx_http_apimon_init_main_conf,        /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_apimon_create_loc_conf,       /* create location configuration */
    ngx_http_apimon_merge_loc_conf         /* merge location configuration */
};


ngx_module_t  ngx_http_apimon_module = {
    NGX_MODULE_V1,
    &ngx_http_apimon_module_ctx,           /* module context */
    ngx_http_apimon_commands,              /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    ngx_http_apimon_init_process,          /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_apimon_exit_process,          /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static ngx_str_t  ngx_http_apimon_default_key = ngx_string("$http_x_api_key");


static void *
ngx_http_apimon_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_apimon_main_conf_t  *amcf;

    amcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_apimon_main_conf_t));
    if (amcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     amcf->redis_addr = { 0, NULL };
     *     amcf->redis_host = { 0, NULL };
     *     amcf->redis_port = 0;
     *     amcf->redis_unix = { 0, NULL };
     *     amcf->redis_password = { 0, NULL };
     *     amcf->configured = 0;
     *     amcf->key_secrets = NULL;
     *     amcf->unknown = NULL;
     *     amcf->batcher = NULL;       (made by postconfiguration)
     *     amcf->lease_zone = NULL;    (apimon_lease)
     *     amcf->lease_set = 0;
     */

    amcf->redis_db = NGX_CONF_UNSET;
    amcf->connect_timeout = NGX_CONF_UNSET_MSEC;
    amcf->unknown_max = NGX_CONF_UNSET_UINT;
    amcf->unknown_ttl = NGX_CONF_UNSET_MSEC;
    amcf->lease_calls = NGX_CONF_UNSET_UINT;
    amcf->lease_time = NGX_CONF_UNSET_MSEC;
    amcf->lease_flush = NGX_CONF_UNSET_MSEC;

    amcf->redis = ngx_http_apimon_redis_create(cf);
    if (amcf->redis == NULL) {
        return NULL;
    }

    return amcf;
}


static char *
ngx_http_apimon_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_http_apimon_main_conf_t *amcf = conf;

    ngx_conf_init_value(amcf->redis_db, 0);
    ngx_conf_init_msec_value(amcf->connect_timeout,
                             NGX_HTTP_APIMON_CONNECT_TIMEOUT);
    ngx_conf_init_uint_value(amcf->unknown_max, NGX_HTTP_APIMON_UNKNOWN_MAX);
    ngx_conf_init_msec_value(amcf->unknown_ttl, NGX_HTTP_APIMON_UNKNOWN_TTL);

    if (ngx_http_apimon_lease_init_conf(cf, amcf) != NGX_CONF_OK) {
        return NGX_CONF_ERROR;
    }

    if (amcf->configured && amcf->unknown_max) {
        /* each worker fills its own copy */
        amcf->unknown = ngx_http_apimon_unknown_create(cf->pool,
                                                       amcf->unknown_max,
                                                       amcf->unknown_ttl);
        if (amcf->unknown == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    return NGX_CONF_OK;
}


static void *
ngx_http_apimon_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_apimon_loc_conf_t  *alcf;

    alcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_apimon_loc_conf_t));
    if (alcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     alcf->api = { 0, NULL };
     *     alcf->hide_header = { 0, NULL };
     *     alcf->hide_arg = { 0, NULL };
     *     alcf->quota_unit = { 0, NULL };
     *     alcf->rate_n_text = { 0, NULL };
     *     ...
     */

    alcf->enable = NGX_CONF_UNSET;
    alcf->key = NGX_CONF_UNSET_PTR;
    alcf->hide_key = NGX_CONF_UNSET;
    alcf->key_legacy = NGX_CONF_UNSET;
    alcf->rate_n = NGX_CONF_UNSET_UINT;
    alcf->rate_w = NGX_CONF_UNSET_UINT;
    alcf->quota_n = NGX_CONF_UNSET_UINT;
    alcf->quota_status = NGX_CONF_UNSET_UINT;
    alcf->on_redis_error = NGX_CONF_UNSET_UINT;
    alcf->log_level = NGX_CONF_UNSET_UINT;
    alcf->dry_run = NGX_CONF_UNSET;
    alcf->legacy_headers = NGX_CONF_UNSET;
    alcf->timeout = NGX_CONF_UNSET_MSEC;

    return alcf;
}


static char *
ngx_http_apimon_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_apimon_loc_conf_t *prev = parent;
    ngx_http_apimon_loc_conf_t *conf = child;

    ngx_http_core_loc_conf_t          *clcf;
    ngx_http_compile_complex_value_t   ccv;
    ngx_http_apimon_main_conf_t       *amcf;

    ngx_conf_merge_value(conf->enable, prev->enable, 0);
    ngx_conf_merge_str_value(conf->api, prev->api, "");
    ngx_conf_merge_value(conf->hide_key, prev->hide_key, 1);
    ngx_conf_merge_value(conf->key_legacy, prev->key_legacy, 1);
    ngx_conf_merge_uint_value(conf->quota_status, prev->quota_status,
                              NGX_HTTP_FORBIDDEN);
    ngx_conf_merge_uint_value(conf->on_redis_error, prev->on_redis_error,
                              NGX_HTTP_APIMON_REDIS_CLOSED);
    ngx_conf_merge_uint_value(conf->log_level, prev->log_level,
                              NGX_LOG_INFO);
    ngx_conf_merge_value(conf->dry_run, prev->dry_run, 0);
    ngx_conf_merge_value(conf->legacy_headers, prev->legacy_headers, 0);
    ngx_conf_merge_msec_value(conf->timeout, prev->timeout,
                              NGX_HTTP_APIMON_DEFAULT_TIMEOUT);

    if (conf->rate_n == NGX_CONF_UNSET_UINT) {
        conf->rate_n = (prev->rate_n == NGX_CONF_UNSET_UINT) ? 0
                                                             : prev->rate_n;
        conf->rate_w = (prev->rate_w == NGX_CONF_UNSET_UINT) ? 0
                                                             : prev->rate_w;
    }

    if (conf->quota_n == NGX_CONF_UNSET_UINT) {
        conf->quota_n = (prev->quota_n == NGX_CONF_UNSET_UINT) ? 0
                                                               : prev->quota_n;
        conf->quota_unit = prev->quota_unit;
    }

    if (conf->key == NGX_CONF_UNSET_PTR) {

        if (prev->key == NGX_CONF_UNSET_PTR) {
            prev->key = ngx_palloc(cf->pool, sizeof(ngx_http_complex_value_t));
            if (prev->key == NULL) {
                return NGX_CONF_ERROR;
            }

            ngx_memzero(&ccv, sizeof(ngx_http_compile_complex_value_t));

            ccv.cf = cf;
            ccv.value = &ngx_http_apimon_default_key;
            ccv.complex_value = prev->key;

            if (ngx_http_compile_complex_value(&ccv) != NGX_OK) {
                return NGX_CONF_ERROR;
            }

            ngx_http_apimon_key_source(prev, &ngx_http_apimon_default_key);
        }

        conf->key = prev->key;
        conf->hide_header = prev->hide_header;
        conf->hide_arg = prev->hide_arg;
    }

    if (ngx_http_apimon_number_text(cf, &conf->rate_n_text, conf->rate_n)
           != NGX_OK
        || ngx_http_apimon_number_text(cf, &conf->rate_w_text, conf->rate_w)
           != NGX_OK
        || ngx_http_apimon_number_text(cf, &conf->quota_n_text, conf->quota_n)
           != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    if (!conf->enable) {
        return NGX_CONF_OK;
    }

    amcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_apimon_module);

    if (!amcf->configured) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"apimon\" is on, but \"apimon_redis\" "
                           "is not set in the http block");
        return NGX_CONF_ERROR;
    }

    /*
     * while locations are merged, the core module's configuration at hand
     * is the location's; a server's own has no name
     */

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    if (conf->api.len == 0 && clcf->name.len) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"apimon\" is on in location \"%V\", but "
                           "\"apimon_api\" is not set", &clcf->name);
        return NGX_CONF_ERROR;
    }

    if (!conf->key_legacy && amcf->key_secrets == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"apimon_key_legacy\" is off, but "
                           "\"apimon_key_secret_file\" is not set: "
                           "no key could be valid");
        return NGX_CONF_ERROR;
    }

    if (conf->api.len
        && ngx_http_apimon_metrics_api(cf, conf) != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_apimon_number_text(ngx_conf_t *cf, ngx_str_t *s, ngx_uint_t n)
{
    u_char  *p;

    p = ngx_pnalloc(cf->pool, NGX_INT_T_LEN);
    if (p == NULL) {
        return NGX_ERROR;
    }

    s->data = p;
    s->len = ngx_sprintf(p, "%ui", n) - p;

    return NGX_OK;
}


static ngx_int_t
ngx_http_apimon_preconfiguration(ngx_conf_t *cf)
{
    return ngx_http_apimon_add_variables(cf);
}


static ngx_int_t
ngx_http_apimon_postconfiguration(ngx_conf_t *cf)
{
    ngx_http_handler_pt        *h;
    ngx_http_core_main_conf_t  *cmcf;

    if (ngx_http_apimon_handler_init(cf) != NGX_OK
        || ngx_http_apimon_metrics_init(cf) != NGX_OK)
    {
        return NGX_ERROR;
    }

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_ACCESS_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_apimon_handler;

    return ngx_http_apimon_headers_init(cf);
}


static ngx_int_t
ngx_http_apimon_init_process(ngx_cycle_t *cycle)
{
    ngx_http_apimon_main_conf_t  *amcf;

    if (ngx_process != NGX_PROCESS_WORKER
        && ngx_process != NGX_PROCESS_SINGLE)
    {
        /* the cache manager and loader never check requests */
        return NGX_OK;
    }

    amcf = NULL;

    if (ngx_get_conf(cycle->conf_ctx, ngx_http_module)) {
        amcf = ngx_http_cycle_get_module_main_conf(cycle,
                                                   ngx_http_apimon_module);
    }

    if (ngx_http_apimon_redis_init_process(cycle, amcf) != NGX_OK) {
        return NGX_ERROR;
    }

    return ngx_http_apimon_lease_init_process(cycle, amcf);
}


static void
ngx_http_apimon_exit_process(ngx_cycle_t *cycle)
{
    if (ngx_get_conf(cycle->conf_ctx, ngx_http_module)) {
        ngx_http_apimon_handler_exit(
            ngx_http_cycle_get_module_main_conf(cycle, ngx_http_apimon_module));
    }

    ngx_http_apimon_redis_exit_process(cycle);
    ngx_http_apimon_key_exit();
}


/* apimon_redis <ip[:port]|[ipv6][:port]|unix:/path> [db=N] [password_file=F]
 *              [connect_timeout=T] */

static char *
ngx_http_apimon_redis(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_apimon_main_conf_t *amcf = conf;

    char        *rv;
    ngx_str_t   *value, s;
    ngx_int_t    n;
    ngx_msec_t   ms;
    ngx_uint_t   i;

    if (amcf->configured) {
        return "is duplicate";
    }

    value = cf->args->elts;

    rv = ngx_http_apimon_redis_address(cf, amcf, &value[1]);
    if (rv != NGX_CONF_OK) {
        return rv;
    }

    for (i = 2; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "db=", 3) == 0) {
            n = ngx_atoi(value[i].data + 3, value[i].len - 3);
            if (n == NGX_ERROR || n > 65535) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "\"apimon_redis\": invalid database "
                                   "number \"%V\"", &value[i]);
                return NGX_CONF_ERROR;
            }

            amcf->redis_db = n;
            continue;
        }

        if (ngx_strncmp(value[i].data, "password_file=", 14) == 0) {
            s.data = value[i].data + 14;
            s.len = value[i].len - 14;

            rv = ngx_http_apimon_redis_password(cf, amcf, &s);
            if (rv != NGX_CONF_OK) {
                return rv;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "connect_timeout=", 16) == 0) {
            s.data = value[i].data + 16;
            s.len = value[i].len - 16;

            ms = ngx_parse_time(&s, 0);
            if (ms == (ngx_msec_t) NGX_ERROR || ms == 0) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "\"apimon_redis\": invalid connect "
                                   "timeout \"%V\"", &value[i]);
                return NGX_CONF_ERROR;
            }

            amcf->connect_timeout = ms;
            continue;
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"apimon_redis\": invalid parameter \"%V\"",
                           &value[i]);
        return NGX_CONF_ERROR;
    }

    amcf->configured = 1;

    return NGX_CONF_OK;
}


/*
 * ip[:port], [ipv6][:port], name[:port] or unix:path.  A name is resolved
 * here, when the configuration is loaded, as upstream servers are: hiredis
 * would resolve it with a blocking call in the worker.  Of its addresses
 * the first is used (nginx lists IPv4 ones first).
 */

static char *
ngx_http_apimon_redis_address(ngx_conf_t *cf,
    ngx_http_apimon_main_conf_t *amcf, ngx_str_t *addr)
{
    u_char              *p;
    ngx_url_t            u;
    struct sockaddr_un  *saun;

    ngx_memzero(&u, sizeof(ngx_url_t));

    u.url = *addr;
    u.default_port = 6379;

    if (ngx_parse_url(cf->pool, &u) != NGX_OK) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"apimon_redis\": invalid address \"%V\" (%s)",
                           addr, u.err ? u.err : "no memory");
        return NGX_CONF_ERROR;
    }

    if (u.naddrs == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"apimon_redis\": no address for \"%V\"",
                           &u.host);
        return NGX_CONF_ERROR;
    }

    amcf->redis_addr = *addr;

    if (u.family == AF_UNIX) {
        saun = (struct sockaddr_un *) u.addrs[0].sockaddr;

        amcf->redis_unix.data = (u_char *) saun->sun_path;
        amcf->redis_unix.len = ngx_strlen(saun->sun_path);

        return NGX_CONF_OK;
    }

    /* the address as hiredis takes it: "::1", not "[::1]" */

    p = ngx_pnalloc(cf->pool, NGX_SOCKADDR_STRLEN + 1);
    if (p == NULL) {
        return NGX_CONF_ERROR;
    }

    amcf->redis_host.data = p;
    amcf->redis_host.len = ngx_sock_ntop(u.addrs[0].sockaddr,
                                         u.addrs[0].socklen, p,
                                         NGX_SOCKADDR_STRLEN, 0);
    p[amcf->redis_host.len] = '\0';

    amcf->redis_port = u.port;

    return NGX_CONF_OK;
}


static char *
ngx_http_apimon_redis_password(ngx_conf_t *cf,
    ngx_http_apimon_main_conf_t *amcf, ngx_str_t *file)
{
    size_t     n;
    ngx_str_t  text;

    if (ngx_http_apimon_secret_read(cf, file, "password file ",
                                    NGX_HTTP_APIMON_PASSWORD_MAX, &text)
        != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    n = text.len;

    while (n > 0 && (text.data[n - 1] == '\n' || text.data[n - 1] == '\r'
                     || text.data[n - 1] == ' ' || text.data[n - 1] == '\t'))
    {
        n--;
    }

    if (n == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"apimon_redis\": password file \"%V\" is "
                           "empty", file);
        ngx_http_apimon_secret_free(&text);
        return NGX_CONF_ERROR;
    }

    amcf->redis_password.data = ngx_pnalloc(cf->pool, n);

    if (amcf->redis_password.data) {
        ngx_memcpy(amcf->redis_password.data, text.data, n);
        amcf->redis_password.len = n;
    }

    ngx_http_apimon_secret_free(&text);

    return amcf->redis_password.data ? NGX_CONF_OK : NGX_CONF_ERROR;
}


/* apimon_key_secret_file <file> */

static char *
ngx_http_apimon_key_secret_file(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_apimon_main_conf_t *amcf = conf;

    ngx_str_t  *value;

    if (amcf->key_secrets) {
        return "is duplicate";
    }

    value = cf->args->elts;

    amcf->key_secrets = ngx_http_apimon_key_secrets_read(cf, &value[1]);

    return amcf->key_secrets ? NGX_CONF_OK : NGX_CONF_ERROR;
}


/*
 * apimon_unknown_key_cache max=N [ttl=T] | off: max is required, each
 * parameter once; any second line is a duplicate, whatever the first set
 */

static char *
ngx_http_apimon_unknown_key_cache(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_apimon_main_conf_t *amcf = conf;

    ngx_int_t    n;
    ngx_str_t   *value, s;
    ngx_msec_t   ms;
    ngx_uint_t   i;

    if (amcf->unknown_max != NGX_CONF_UNSET_UINT
        || amcf->unknown_ttl != NGX_CONF_UNSET_MSEC)
    {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (value[1].len == 3 && ngx_strncmp(value[1].data, "off", 3) == 0) {
        if (cf->args->nelts != 2) {
            goto invalid;
        }

        amcf->unknown_max = 0;
        return NGX_CONF_OK;
    }

    for (i = 1; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "max=", 4) == 0) {
            if (amcf->unknown_max != NGX_CONF_UNSET_UINT) {
                goto twice;
            }

            n = ngx_atoi(value[i].data + 4, value[i].len - 4);
            if (n < 1 || n > 1048576) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "\"apimon_unknown_key_cache\": invalid "
                                   "\"%V\", expected max=1..1048576",
                                   &value[i]);
                return NGX_CONF_ERROR;
            }

            amcf->unknown_max = n;
            continue;
        }

        if (ngx_strncmp(value[i].data, "ttl=", 4) == 0) {
            if (amcf->unknown_ttl != NGX_CONF_UNSET_MSEC) {
                goto twice;
            }

            s.data = value[i].data + 4;
            s.len = value[i].len - 4;

            ms = ngx_parse_time(&s, 0);
            if (ms == (ngx_msec_t) NGX_ERROR || ms == 0 || ms > 3600000) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "\"apimon_unknown_key_cache\": invalid "
                                   "\"%V\", expected a time from 1ms "
                                   "to 1h", &value[i]);
                return NGX_CONF_ERROR;
            }

            amcf->unknown_ttl = ms;
            continue;
        }

        goto invalid;
    }

    if (amcf->unknown_max == NGX_CONF_UNSET_UINT) {
        goto invalid;
    }

    return NGX_CONF_OK;

twice:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "\"apimon_unknown_key_cache\": \"%*s\" is given "
                       "twice", (size_t) 3, value[i].data);
    return NGX_CONF_ERROR;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "\"apimon_unknown_key_cache\": expected "
                       "max=N [ttl=time] or off");
    return NGX_CONF_ERROR;
}


/* apimon_api <name>: the name the catalog's products list */

static char *
ngx_http_apimon_api(ngx_conf_t *cf, void *post, void *data)
{
    ngx_str_t  *name = data;

    if (ngx_http_apimon_valid_name(name) != NGX_OK) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"apimon_api\": invalid API name \"%V\", "
                           "expected 1-64 of A-Z a-z 0-9 . _ -", name);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_apimon_valid_name(ngx_str_t *name)
{
    u_char      ch;
    ngx_uint_t  i;

    if (name->len == 0 || name->len > 64) {
        return NGX_ERROR;
    }

    for (i = 0; i < name->len; i++) {
        ch = name->data[i];

        if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z')
            || (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' || ch == '-')
        {
            continue;
        }

        return NGX_ERROR;
    }

    return NGX_OK;
}


static char *
ngx_http_apimon_key(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_apimon_loc_conf_t *alcf = conf;

    char       *rv;
    ngx_str_t  *value;

    value = cf->args->elts;

    if (value[1].len == 0) {
        return "takes an empty value";
    }

    rv = ngx_http_set_complex_value_slot(cf, cmd, conf);

    if (rv == NGX_CONF_OK) {
        ngx_http_apimon_key_source(alcf, &value[1]);
    }

    return rv;
}


/*
 * The key can be hidden from the upstream when it is exactly one
 * "$http_<name>" (a request header) or "$arg_<name>" (a query argument).
 */

static void
ngx_http_apimon_key_source(ngx_http_apimon_loc_conf_t *alcf,
    ngx_str_t *value)
{
    ngx_str_t   name;
    ngx_uint_t  i;

    name = *value;

    if (name.len < 2 || name.data[0] != '$') {
        return;
    }

    name.data++;
    name.len--;

    if (name.data[0] == '{') {
        if (name.data[name.len - 1] != '}') {
            return;
        }

        name.data++;
        name.len -= 2;
    }

    for (i = 0; i < name.len; i++) {
        if (!((name.data[i] >= 'a' && name.data[i] <= 'z')
              || (name.data[i] >= 'A' && name.data[i] <= 'Z')
              || (name.data[i] >= '0' && name.data[i] <= '9')
              || name.data[i] == '_'))
        {
            return;
        }
    }


    if (name.len > 5 && ngx_strncasecmp(name.data, (u_char *) "http_", 5) == 0)
    {
        alcf->hide_header.data = name.data + 5;
        alcf->hide_header.len = name.len - 5;
        return;
    }

    if (name.len > 4 && ngx_strncasecmp(name.data, (u_char *) "arg_", 4) == 0) {
        alcf->hide_arg.data = name.data + 4;
        alcf->hide_arg.len = name.len - 4;
    }
}


/* apimon_rate <N>r/s|r/m|r/h | off */

static char *
ngx_http_apimon_rate(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_apimon_loc_conf_t *alcf = conf;

    u_char      *p;
    size_t       len;
    ngx_int_t    n;
    ngx_str_t   *value;
    ngx_uint_t   w;

    if (alcf->rate_n != NGX_CONF_UNSET_UINT) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (value[1].len == 3 && ngx_strncmp(value[1].data, "off", 3) == 0) {
        alcf->rate_n = 0;
        alcf->rate_w = 0;
        return NGX_CONF_OK;
    }

    p = value[1].data;
    len = value[1].len;

    if (len < 4 || p[len - 3] != 'r' || p[len - 2] != '/') {
        goto invalid;
    }

    switch (p[len - 1]) {
    case 's':
        w = 1;
        break;
    case 'm':
        w = 60;
        break;
    case 'h':
        w = 3600;
        break;
    default:
        goto invalid;
    }

    n = ngx_atoi(p, len - 3);
    if (n <= 0) {
        goto invalid;
    }

    alcf->rate_n = n;
    alcf->rate_w = w;

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "\"apimon_rate\": invalid rate \"%V\", expected "
                       "<N>r/s, <N>r/m or <N>r/h with N >= 1", &value[1]);
    return NGX_CONF_ERROR;
}


/* apimon_quota <N> minute|hour|day|week|month | off */

static char *
ngx_http_apimon_quota(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_apimon_loc_conf_t *alcf = conf;

    ngx_int_t    n;
    ngx_str_t   *value;
    ngx_uint_t   i;

    static ngx_str_t  units[] = {
        ngx_string("minute"),
        ngx_string("hour"),
        ngx_string("day"),
        ngx_string("week"),
        ngx_string("month"),
        ngx_null_string
    };

    if (alcf->quota_n != NGX_CONF_UNSET_UINT) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (cf->args->nelts == 2) {
        if (value[1].len == 3 && ngx_strncmp(value[1].data, "off", 3) == 0) {
            alcf->quota_n = 0;
            return NGX_CONF_OK;
        }

        goto invalid;
    }

    n = ngx_atoi(value[1].data, value[1].len);
    if (n <= 0) {
        goto invalid;
    }

    for (i = 0; units[i].len; i++) {
        if (units[i].len == value[2].len
            && ngx_strncmp(units[i].data, value[2].data, value[2].len) == 0)
        {
            alcf->quota_n = n;
            alcf->quota_unit = units[i];
            return NGX_CONF_OK;
        }
    }

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "\"apimon_quota\": invalid quota, expected "
                       "<N> minute|hour|day|week|month with N >= 1, or off");
    return NGX_CONF_ERROR;
}


/* ngx_conf_check_num_bounds(), in words that name the directive */

static char *
ngx_http_apimon_status_bounds(ngx_conf_t *cf, void *post, void *data)
{
    ngx_conf_num_bounds_t  *bounds = post;
    ngx_int_t              *np = data;

    ngx_str_t  *value;

    if (*np >= bounds->low && *np <= bounds->high) {
        return NGX_CONF_OK;
    }

    value = cf->args->elts;

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "\"%V\": status \"%V\" must be between %i and %i",
                       &value[0], &value[1], bounds->low, bounds->high);
    return NGX_CONF_ERROR;
}


/*
 * ngx_conf_set_enum_slot(), with a message that names the directive and the
 * values it takes
 */

static char *
ngx_http_apimon_conf_set_enum(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_conf_enum_t  *e = cmd->post;

    u_char      *p, *last;
    ngx_str_t   *value;
    ngx_uint_t   i;
    u_char       buf[256];

    value = cf->args->elts;

    for (i = 0; e[i].name.len; i++) {
        if (e[i].name.len == value[1].len
            && ngx_strcasecmp(e[i].name.data, value[1].data) == 0)
        {
            return ngx_conf_set_enum_slot(cf, cmd, conf);
        }
    }

    p = buf;
    last = buf + sizeof(buf);

    for (i = 0; e[i].name.len; i++) {
        p = ngx_slprintf(p, last, "%s\"%V\"",
                         i == 0 ? "" : (e[i + 1].name.len ? ", " : " or "),
                         &e[i].name);
    }

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "\"%V\": invalid value \"%V\", expected %*s",
                       &value[0], &value[1], (size_t) (p - buf), buf);
    return NGX_CONF_ERROR;
}
