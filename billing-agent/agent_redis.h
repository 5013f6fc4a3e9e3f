/*
 * The billing agent's Redis access: synchronous hiredis (a batch program),
 * the schema scripts by EVALSHA with an EVAL fallback, pipelined batches
 * and the run lock.
 */

#ifndef APIMON_AGENT_REDIS_H
#define APIMON_AGENT_REDIS_H

#include <stddef.h>
#include <stdint.h>

#include <hiredis/hiredis.h>

/*
 * addr: the forms of redis_addr.h ("host[:port]", "[ipv6][:port]",
 * "unix:/path" or "/path", then db=, password_file=, connect_timeout=);
 * password (may be NULL) is used unless addr names a password_file.
 * Sends AUTH and SELECT.  NULL with a message in err on failure.
 */
redisContext *ar_connect(const char *addr, const char *password, char *err,
    size_t errlen);

/*
 * Calls a script: APIMON_SCRIPT_<NAME> of the list schema/embed.sh generates
 * (ngx_http_apimon_scripts.h, the module's list too), nkeys keys then args,
 * all C strings.  Returns the reply (caller frees) or NULL on a connection
 * error (message in c->errstr).
 */
redisReply *ar_script(redisContext *c, unsigned script, int nkeys,
    const char **argv, int argc);

/*
 * A script error reply "ERR apimon <code>: <message>": the code into code
 * (e.g. "conflict") and a pointer to the message; 0 if it is one, -1 if the
 * reply is no script error.
 */
int ar_script_error(const redisReply *r, char *code, size_t codelen,
    const char **msg);

/* the run lock: 1 acquired, 0 held by another token, -1 Redis error */
int ar_lock_acquire(redisContext *c, const char *token, int64_t ttl_ms);
/* extends the TTL if we still own it: 1 yes, 0 lost, -1 error */
int ar_lock_refresh(redisContext *c, const char *token, int64_t ttl_ms);
/* deletes it only if we own it */
int ar_lock_release(redisContext *c, const char *token);

#define AR_LOCK_KEY  "apimon:bill:lock"

/* Redis's clock (TIME) in ms: 0, or -1 with the reason in err */
int ar_time_ms(redisContext *c, int64_t *ms, char *err, size_t errlen);

/*
 * Redis's persistence, by CONFIG GET: 0 appendonly yes, appendfsync
 * everysec (or always) and maxmemory-policy noeviction; 1 some are off
 * ("appendonly is \"no\" (needs yes), ..." in msg); -1 CONFIG is not
 * allowed (the error in msg).
 */
int ar_persistence(redisContext *c, char *msg, size_t msglen);

#endif
