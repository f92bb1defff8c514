/*
 * monitor — DESIGN: the three monitors are three timers (timer.h) whose runs are rounds on
 * the worker pool. This file owns what every round does the same way: the checks before it
 * (anyone connected? schema up to date?), the worker's store, the timing, and what is logged
 * after it. The rounds themselves, one set-based statement each (per batch for the watches),
 * are in monitor_deals.c and monitor_watch.c. With --demo-activity a fourth timer runs the
 * demo market simulator's ticks (demo.h) as rounds, under the same rules.
 *
 * Several nodes on one database: a round runs only on the node that leads the monitors
 * (leader.h: a PostgreSQL advisory lock), so one node announces each hot deal and price alert.
 * What a round records (hot_deal_announcements, price_watch_alerts) still makes a second
 * round, on a node that just lost the lead, announce nothing twice.
 *
 * The one idea: a round never runs twice at once (the timer skips a tick while the previous
 * run is busy), so a monitor's own fields (the failure counters below) are only ever touched
 * by one worker at a time, each hand-over ordered by the timer's and the pool's mutexes.
 *
 * Statements: each round's statement runs in a transaction of its own with SET LOCAL jit = off.
 * PostgreSQL compiles a statement whose estimated cost passes jit_above_cost, and the watch
 * round's estimate grows with the watches (it passed it at 100,000 with an earlier form of the
 * join: 505 ms per round with JIT, 118 ms without). The compiled code is not kept across
 * rounds, so each round would pay the ~350 ms again for a scan that takes ~100 ms. The rows
 * are handed to the round only after COMMIT: what a round sends is recorded.
 *
 * Logging: -EAGAIN is the database being away, which the store already logged once for the
 * whole process, so a round skipped for it logs at debug only. Any other failure is a bug or
 * a broken schema, and repeats every round: it logs one warning, then at most one a minute
 * with the count of the failures in between.
 */
#define DW_LOG_MODULE "monitor"
#include "dealwire/monitor.h"
#include "dealwire/config.h"
#include "dealwire/db.h"
#include "dealwire/demo.h"
#include "dealwire/hub.h"
#include "dealwire/leader.h"
#include "dealwire/log.h"
#include "dealwire/mem.h"
#include "dealwire/metrics.h"
#include "dealwire/time.h"
#include "dealwire/store.h"
#include "dealwire/timer.h"
#include "monitor_int.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A failing monitor logs at most one warning per this interval. */
#define FAIL_LOG_INTERVAL_NS (60 * DW_NSEC_PER_SEC)

struct monitor {
    struct dw_monitors *mons;
    const char *name;
    dw__monitor_round_fn *round;
    int period_s;
    /* Touched by one round at a time (see the top of this file). */
    int64_t fail_logged_ns;       /* monotonic time of the last warning; 0 for never */
    unsigned long fails_unlogged; /* failed rounds since then */
};

/* MON_DEMO is the demo market simulator (--demo-activity), scheduled only when it is on. */
enum { MON_HOT_DEALS, MON_TRENDING, MON_WATCHES, MON_DEMO, MON__COUNT };
/* /metrics labels rounds by monitor in the same order. */
_Static_assert((int)MON__COUNT == (int)DW_METRICS_MON__COUNT, "metrics.h names every monitor");

struct dw_monitors {
    struct dw_db *db;   /* borrowed */
    struct dw_hub *hub; /* borrowed */
    struct dw_timers *timers;
    struct dw_leader *leader; /* rounds run only while this node leads (leader.h) */
    bool cluster;             /* --redis: what a round sends reaches every node's clients */
    _Atomic bool stopping;
    char node[128];
    struct monitor mon[MON__COUNT];
};

/* ------------------------------------------------------------------------------------------
 * Helpers
 * ------------------------------------------------------------------------------------------ */

struct exec {
    PGresult *res;
    const char *sql;
    int nparams;
    const char *const *params;
    dw__monitor_then_fn *then;
    void *arg;
};

static int exec_in_tx(struct dw_store *st, void *arg)
{
    struct exec *e = arg;
    int r = dw_store_run(st, "SET LOCAL jit = off", 0, NULL);

    if (r < 0)
        return r;
    r = dw_store_exec(st, &e->res, e->sql, e->nparams, e->params);
    if (r < 0 || !e->then)
        return r;
    return e->then(st, e->res, e->arg);
}

int dw__monitor_exec(struct dw_monitor_round *r, PGresult **res, const char *sql, int nparams,
                     const char *const *params)
{
    return dw__monitor_exec_then(r, res, sql, nparams, params, NULL, NULL);
}

int dw__monitor_exec_then(struct dw_monitor_round *r, PGresult **res, const char *sql, int nparams,
                          const char *const *params, dw__monitor_then_fn *then, void *arg)
{
    struct exec e = {.sql = sql, .nparams = nparams, .params = params, .then = then, .arg = arg};
    int rc = dw_store_tx(r->st, exec_in_tx, &e);

    *res = NULL;
    if (rc < 0) {
        PQclear(e.res); /* run, but not committed: not ours to send */
        return rc;
    }
    *res = e.res;
    return 0;
}

/* ------------------------------------------------------------------------------------------
 * A round
 * ------------------------------------------------------------------------------------------ */

static void report_failure(struct monitor *m, const struct dw_monitor_round *r)
{
    int64_t now = dw_now_mono_ns();
    const char *why = r->why[0] ? r->why : dw_store_error(r->st);

    m->fails_unlogged++;
    if (m->fail_logged_ns != 0 && now - m->fail_logged_ns < FAIL_LOG_INTERVAL_NS)
        return;
    if (m->fails_unlogged > 1)
        dw_log(DW_LOG_WARN, "%s round failed: %s; %lu failed rounds since the last report", m->name,
               why, m->fails_unlogged);
    else
        dw_log(DW_LOG_WARN, "%s round failed: %s", m->name, why);
    m->fail_logged_ns = now;
    m->fails_unlogged = 0;
}

/* A timer's run: one round of monitor m, on a worker. */
static void run_round(void *arg)
{
    struct monitor *m = arg;
    struct dw_monitors *mons = m->mons;
    struct dw_store_status db;
    struct dw_monitor_round r;
    int64_t t0, took;
    int rc;

    if (atomic_load(&mons->stopping))
        return;
    if (!mons->cluster && dw_hub_connection_count(mons->hub) == 0) {
        dw_log(DW_LOG_DEBUG, "%s round skipped: no connections", m->name);
        return;
    }
    dw_store_health_read(dw_db_health(mons->db), &db);
    if (!db.schema_ready) {
        dw_log(DW_LOG_DEBUG, "%s round skipped: schema not ready", m->name);
        return;
    }
    if (!dw_leader_is_leader(mons->leader)) {
        /* A leader that lost the database stops leading at once (leader.h). */
        dw_log(DW_LOG_DEBUG, "%s round skipped: %s", m->name,
               db.state == DW_STORE_DOWN ? "database unavailable"
                                         : "another node leads the monitors");
        return;
    }

    memset(&r, 0, sizeof(r));
    r.st = dw_db_store(mons->db);
    r.hub = mons->hub;
    r.node = mons->node;
    r.stopping = &mons->stopping;
    t0 = dw_now_mono_ns();
    rc = m->round(&r);
    took = dw_now_mono_ns() - t0;
    dw_metrics_monitor_round((enum dw_metrics_monitor)(m - mons->mon), rc, took);
    if (rc == 0) {
        dw_log(DW_LOG_DEBUG, "%s round done in %.1f ms (%s)", m->name, (double)took / 1e6,
               r.summary);
    } else if (rc == -EAGAIN) {
        dw_log(DW_LOG_DEBUG, "%s round skipped: database unavailable (%s)", m->name,
               dw_store_error(r.st));
    } else {
        report_failure(m, &r);
    }
}

/* ------------------------------------------------------------------------------------------
 * Public API
 * ------------------------------------------------------------------------------------------ */

struct dw_monitors *dw_monitors_start(const struct dw_config *cfg, struct dw_db *db,
                                      struct dw_hub *hub, struct dw_workers *pool)
{
    struct dw_monitors *mons;

    if (!cfg || !db || !hub || !pool)
        return NULL;
    mons = dw_xcalloc(1, sizeof(*mons));
    mons->db = db;
    mons->hub = hub;
    atomic_init(&mons->stopping, false);
    dw_leader_node_name(cfg->port, mons->node);
    mons->cluster = cfg->redis != NULL;

    mons->mon[MON_HOT_DEALS] = (struct monitor){
        .name = "hot_deals", .round = dw__monitor_hot_deals, .period_s = cfg->hot_deal_interval};
    mons->mon[MON_TRENDING] = (struct monitor){
        .name = "trending", .round = dw__monitor_trending, .period_s = cfg->trending_interval};
    mons->mon[MON_WATCHES] = (struct monitor){
        .name = "price_watches", .round = dw__monitor_watches, .period_s = cfg->watch_interval};
    mons->mon[MON_DEMO] = (struct monitor){.name = "demo_activity",
                                           .round = dw__monitor_demo_activity,
                                           .period_s = cfg->demo_activity};

    mons->leader = dw_leader_start(db, mons->node, mons->cluster);
    mons->timers = mons->leader ? dw_timers_start(pool) : NULL;
    if (!mons->timers) {
        dw_leader_stop(mons->leader);
        free(mons);
        return NULL;
    }
    for (int i = 0; i < MON__COUNT; i++) {
        struct monitor *m = &mons->mon[i];
        int r;

        m->mons = mons;
        if (m->period_s == 0)
            continue; /* off */
        r = dw_timers_add(mons->timers, m->name, (int64_t)m->period_s * DW_NSEC_PER_SEC, run_round,
                          m);
        if (r < 0)
            dw_panic("cannot schedule the %s monitor: %s", m->name, strerror(-r));
    }
    dw_log(DW_LOG_INFO,
           "monitors scheduled as %s: hot deals every %d s, trending every %d s, price watches "
           "every %d s (while clients are connected)",
           mons->node, cfg->hot_deal_interval, cfg->trending_interval, cfg->watch_interval);
    if (cfg->demo_activity > 0)
        dw_log(DW_LOG_INFO,
               "demo activity every %d s (while clients are connected): a new hot deal and a "
               "price under a watch, on demo deals only (" DW_DEMO_DEAL_PREFIX "*)",
               cfg->demo_activity);
    return mons;
}

void dw_monitors_stop(struct dw_monitors *mons)
{
    if (!mons)
        return;
    atomic_store(&mons->stopping, true);
    dw_timers_stop(mons->timers);
    dw_leader_stop(mons->leader); /* its session ends: another node may lead */
    free(mons);
}
