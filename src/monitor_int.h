/*
 * monitor_int.h — what monitor.c (scheduling, the checks before a round, logging) shares with
 * the rounds in monitor_deals.c and monitor_watch.c (the demo simulator's ticks included).
 * Everything here is thread: worker (the rounds block on libpq and send through the hub;
 * workers are registered with RCU).
 */
#ifndef DEALWIRE_MONITOR_INT_H
#define DEALWIRE_MONITOR_INT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include <libpq-fe.h>

struct dw_hub;
struct dw_store;

/* One round of one monitor: what it works with, and what it reports. */
struct dw_monitor_round {
    struct dw_store *st;          /* the worker's own store (borrowed) */
    struct dw_hub *hub;           /* borrowed */
    const char *node;             /* this daemon, as recorded in the database ("host:port") */
    const _Atomic bool *stopping; /* set by dw_monitors_stop(): end the round early */
    char summary[256];            /* what the round did, for the debug line */
    char why[256];                /* when the round fails for a reason not in the store */
};

/* The rounds. Each returns 0, or what dw_store_exec() returned (-EAGAIN: skip quietly;
 * -EIO: dw_store_error() says why), or -EPROTO with r->why set when a row made no sense
 * (the other rows were still sent). */
typedef int dw__monitor_round_fn(struct dw_monitor_round *r);
int dw__monitor_hot_deals(struct dw_monitor_round *r); /* monitor_deals.c */
int dw__monitor_trending(struct dw_monitor_round *r);  /* monitor_deals.c */
int dw__monitor_watches(struct dw_monitor_round *r);   /* monitor_watch.c */
/* Not a monitor: one tick of the demo market simulator (demo.h), on the monitors' timers. */
int dw__monitor_demo_activity(struct dw_monitor_round *r); /* monitor_deals.c */

/* thread: worker. Runs sql (nparams text parameters) on r->st in a transaction of its own,
 * with JIT compilation off for it (see monitor.c), and returns 0 and *res (the caller
 * PQclear()s it) only once the transaction committed; otherwise what dw_store_exec() or the
 * COMMIT returned, with *res NULL. */
int dw__monitor_exec(struct dw_monitor_round *r, PGresult **res, const char *sql, int nparams,
                     const char *const *params);

/* What runs in the statement's transaction, after it, with its result (borrowed): 0 to
 * commit, or a negative errno to roll back. */
typedef int dw__monitor_then_fn(struct dw_store *st, PGresult *res, void *arg);

/* thread: worker. dw__monitor_exec(), and then(st, res, arg) before the COMMIT: the price
 * watches write their alerts to the inbox in the transaction that records them. */
int dw__monitor_exec_then(struct dw_monitor_round *r, PGresult **res, const char *sql, int nparams,
                          const char *const *params, dw__monitor_then_fn *then, void *arg);

#endif
