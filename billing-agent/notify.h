/*
 * billing-agent notify: the events of the Redis Stream apimon:events
 * (schema/README.md, "Events") delivered to the catalog's webhooks, signed
 * (docs/webhooks.md), through the consumer group apimon-notify.
 */

#ifndef APIMON_NOTIFY_H
#define APIMON_NOTIFY_H

#include <stdint.h>

#define NOTIFY_STREAM  "apimon:events"
#define NOTIFY_DEAD    "apimon:events:dead"
#define NOTIFY_GROUP   "apimon-notify"

typedef struct {
    const char  *redis_addr;
    const char  *redis_password;   /* may be NULL */
    const char  *consumer;         /* NULL: <hostname>-<pid> */
    int          once;             /* exit when nothing is left to read */
    int          max_attempts;     /* deliveries before the dead letter */
    int64_t      claim_idle_ms;    /* XAUTOCLAIM entries idle that long */
    long         timeout_ms;       /* per webhook request */
} notify_opts_t;

/* runs until SIGTERM/SIGINT (or drained with once); an exit code */
int notify_run(const notify_opts_t *o);

#endif
