/*
 * The Redis transport: what each new connection sends before its calls.
 * AUTH and SELECT when configured and SCRIPT LOAD of every compiled-in
 * script are the handshake: the connection is ready when all have answered,
 * and a refused AUTH or SELECT drops it.  CONFIG GET of the persistence
 * settings only warns, and nothing waits for it.
 */


#include "ngx_http_apimon_redis.h"


/* the handshake's privdata: a script's index, or one of these */
#define NGX_HTTP_APIMON_HS_AUTH           -1
#define NGX_HTTP_APIMON_HS_SELECT         -2
#define NGX_HTTP_APIMON_HS_PING           -3


static void ngx_http_apimon_redis_command_hs(redisAsyncContext *ac,
    intptr_t what, int argc, const char **argv, size_t *argvlen);
static void ngx_http_apimon_redis_handshake_reply(redisAsyncContext *ac,
    void *r, void *privdata);
static void ngx_http_apimon_redis_persistence(redisAsyncContext *ac);
static void ngx_http_apimon_redis_persistence_reply(redisAsyncContext *ac,
    void *r, void *privdata);


/* the handshake's commands, by -1 - privdata */
static const char  *ngx_http_apimon_redis_hs_names[] = {
    "AUTH", "SELECT", "PING"
};


void
ngx_http_apimon_redis_handshake(redisAsyncContext *ac)
{
    const char                   *argv[2];
    size_t                        argvlen[2];
    u_char                        db[NGX_INT_T_LEN];
    ngx_http_apimon_redis_t      *rs;
    ngx_http_apimon_main_conf_t  *amcf;

    rs = ngx_http_apimon_redis_get();
    amcf = rs->amcf;

    rs->handshake = 0;

    if (amcf->redis_password.len) {
        argv[1] = (const char *) amcf->redis_password.data;
        argvlen[1] = amcf->redis_password.len;

        ngx_http_apimon_redis_command_hs(ac, NGX_HTTP_APIMON_HS_AUTH, 2, argv,
                                         argvlen);
    }

    if (amcf->redis_db > 0) {
        argv[1] = (const char *) db;
        argvlen[1] = ngx_sprintf(db, "%i", amcf->redis_db) - db;

        ngx_http_apimon_redis_command_hs(ac, NGX_HTTP_APIMON_HS_SELECT, 2,
                                         argv, argvlen);
    }

    rs->handshake += ngx_http_apimon_redis_load_scripts(ac,
                                        ngx_http_apimon_redis_handshake_reply);

    ngx_http_apimon_redis_persistence(ac);

    if (rs->handshake == 0) {
        /* nothing to send: ping, so that the connect is noticed */
        ngx_http_apimon_redis_command_hs(ac, NGX_HTTP_APIMON_HS_PING, 1, argv,
                                         argvlen);
    }
}


/* one command of the handshake: argv[0] is set here */

static void
ngx_http_apimon_redis_command_hs(redisAsyncContext *ac, intptr_t what,
    int argc, const char **argv, size_t *argvlen)
{
    argv[0] = ngx_http_apimon_redis_hs_names[-1 - what];
    argvlen[0] = ngx_strlen(argv[0]);

    if (redisAsyncCommandArgv(ac, ngx_http_apimon_redis_handshake_reply,
                              (void *) what, argc, argv, argvlen)
        == REDIS_OK)
    {
        ngx_http_apimon_redis_get()->handshake++;
    }
}


static void
ngx_http_apimon_redis_handshake_reply(redisAsyncContext *ac, void *r,
    void *privdata)
{
    intptr_t                  what;
    redisReply               *reply;
    ngx_http_apimon_redis_t  *rs;

    rs = ngx_http_apimon_redis_get();
    reply = r;
    what = (intptr_t) privdata;

    if (ac != rs->ac || rs->state != NGX_HTTP_APIMON_REDIS_CONNECTING) {
        /* a stale connection going away */
        return;
    }

    if (reply == NULL) {
        /* the connection is closing: on_connect/on_disconnect say why */
        return;
    }

    if (what >= 0) {
        ngx_http_apimon_redis_script_loaded((ngx_uint_t) what, reply,
                                            rs->log);

    } else if (reply->type == REDIS_REPLY_ERROR) {
        ngx_log_error(NGX_LOG_ERR, rs->log, 0,
                      "apimon: redis at %V refused %s: %*s",
                      &rs->amcf->redis_addr,
                      ngx_http_apimon_redis_hs_names[-1 - what],
                      (size_t) reply->len, reply->str);
        ngx_http_apimon_redis_drop();
        return;
    }

    if (--rs->handshake == 0) {
        ngx_http_apimon_redis_ready_state();
    }
}


/*
 * Usage counts and quotas survive a Redis crash only with an append-only
 * file synced every second and no eviction.  One warning per connection
 * when CONFIG GET shows otherwise, one notice when CONFIG is refused
 * (managed Redis).  The replies are not part of the handshake: nothing
 * waits for them.
 */

typedef struct {
    ngx_uint_t   due;          /* replies still to come */
    ngx_uint_t   denied;
    u_char      *last;
    u_char       found[256];   /* "appendonly \"no\", ..." */
} ngx_http_apimon_redis_persist_t;


static const char  *ngx_http_apimon_redis_persist_rules[][3] = {
    /* setting, accepted values */
    { "appendonly", "yes", NULL },
    { "appendfsync", "everysec", "always" },
    { "maxmemory-policy", "noeviction", NULL },
};

#define NGX_HTTP_APIMON_PERSIST_RULES                                         \
    (sizeof(ngx_http_apimon_redis_persist_rules)                             \
     / sizeof(ngx_http_apimon_redis_persist_rules[0]))


static void
ngx_http_apimon_redis_persistence(redisAsyncContext *ac)
{
    ngx_uint_t                        i;
    const char                       *argv[3];
    size_t                            argvlen[3];
    ngx_http_apimon_redis_t          *rs;
    ngx_http_apimon_redis_persist_t  *ps;

    rs = ngx_http_apimon_redis_get();

    ps = ngx_calloc(sizeof(ngx_http_apimon_redis_persist_t), rs->log);
    if (ps == NULL) {
        return;
    }

    ps->last = ps->found;

    for (i = 0; i < NGX_HTTP_APIMON_PERSIST_RULES; i++) {
        argv[0] = "CONFIG";
        argvlen[0] = 6;
        argv[1] = "GET";
        argvlen[1] = 3;
        argv[2] = ngx_http_apimon_redis_persist_rules[i][0];
        argvlen[2] = ngx_strlen(argv[2]);

        if (redisAsyncCommandArgv(ac, ngx_http_apimon_redis_persistence_reply,
                                  ps, 3, argv, argvlen)
            == REDIS_OK)
        {
            ps->due++;
        }
    }

    if (ps->due == 0) {
        ngx_free(ps);
    }
}


static void
ngx_http_apimon_redis_persistence_reply(redisAsyncContext *ac, void *r,
    void *privdata)
{
    ngx_uint_t                        i;
    redisReply                       *reply, *name, *value;
    const char                      **rule;
    ngx_http_apimon_redis_t          *rs;
    ngx_http_apimon_redis_persist_t  *ps;

    rs = ngx_http_apimon_redis_get();
    reply = r;
    ps = privdata;

    /* NULL: the connection is closing, its reason is logged elsewhere */
    if (reply != NULL && ac == rs->ac) {

        if (reply->type == REDIS_REPLY_ERROR) {
            if (!ps->denied) {
                ps->denied = 1;
                ngx_log_error(NGX_LOG_NOTICE, rs->log, 0,
                              "apimon: redis at %V refused CONFIG GET (%*s): "
                              "its persistence settings are not checked",
                              &rs->amcf->redis_addr, (size_t) reply->len,
                              reply->str);
            }

        } else if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 2
                   && reply->element[0]->type == REDIS_REPLY_STRING
                   && reply->element[1]->type == REDIS_REPLY_STRING)
        {
            name = reply->element[0];
            value = reply->element[1];

            for (i = 0; i < NGX_HTTP_APIMON_PERSIST_RULES; i++) {
                rule = ngx_http_apimon_redis_persist_rules[i];

                if (ngx_strcmp(name->str, rule[0]) != 0
                    || ngx_strcasecmp((u_char *) value->str,
                                      (u_char *) rule[1]) == 0
                    || (rule[2] && ngx_strcasecmp((u_char *) value->str,
                                                  (u_char *) rule[2]) == 0))
                {
                    continue;
                }

                ps->last = ngx_slprintf(ps->last,
                                        ps->found + sizeof(ps->found),
                                        "%s%s \"%*s\"",
                                        ps->last == ps->found ? "" : ", ",
                                        rule[0], (size_t) value->len,
                                        value->str);
            }
        }

        if (ps->due == 1 && ps->last != ps->found) {
            ngx_log_error(NGX_LOG_WARN, rs->log, 0,
                          "apimon: redis at %V may lose usage counts and "
                          "quotas on a crash: %*s; apimon needs appendonly "
                          "yes, appendfsync everysec, maxmemory-policy "
                          "noeviction", &rs->amcf->redis_addr,
                          (size_t) (ps->last - ps->found), ps->found);
        }
    }

    if (--ps->due == 0) {
        ngx_free(ps);
    }
}
