/*
 * ticker — DESIGN: one thread per ticker, sleeping on a condition variable on the monotonic
 * clock between ticks, so that a stop wakes it at once. Blocking on libpq is what it is for, so
 * it takes the worker role (dw_thread_set_role) and a store of its own (dw_db_store: one per
 * thread).
 */
#define DW_LOG_MODULE "ticker"
#include "dealwire/ticker.h"
#include "dealwire/db.h"
#include "dealwire/log.h"
#include "dealwire/mem.h"
#include "dealwire/rcu.h"
#include "dealwire/store.h"
#include "dealwire/thread.h"
#include "dealwire/time.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* While the schema is not up to date yet, look again this often. */
#define SCHEMA_POLL_NS DW_NSEC_PER_SEC

struct dw_ticker {
    struct dw_db *db;
    int64_t period_ns;
    dw_ticker_fn *tick, *last;
    void *arg;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;   /* on CLOCK_MONOTONIC */
    _Atomic bool stopping; /* set under lock (the waits' predicate), read anywhere */
};

/* Waits until the monotonic time deadline (ns) or the stop. Returns true when stopping. */
static bool wait_until(struct dw_ticker *t, int64_t deadline)
{
    struct timespec ts = {.tv_sec = (time_t)(deadline / DW_NSEC_PER_SEC),
                          .tv_nsec = (long)(deadline % DW_NSEC_PER_SEC)};
    bool stop;

    pthread_mutex_lock(&t->lock);
    while (!atomic_load_explicit(&t->stopping, memory_order_relaxed)) {
        if (pthread_cond_timedwait(&t->cond, &t->lock, &ts) == ETIMEDOUT)
            break;
    }
    stop = atomic_load_explicit(&t->stopping, memory_order_relaxed);
    pthread_mutex_unlock(&t->lock);
    return stop;
}

static bool schema_ready(const struct dw_ticker *t)
{
    struct dw_store_status s;

    dw_store_health_read(dw_db_health(t->db), &s);
    return s.schema_ready;
}

static void *ticker_main(void *arg)
{
    struct dw_ticker *t = arg;
    struct dw_store *st;
    bool ticked = false;

    dw_thread_set_role(DW_THREAD_WORKER); /* blocks on libpq */
    dw_rcu_register();
    st = dw_db_store(t->db);
    for (;;) {
        if (!schema_ready(t)) {
            if (wait_until(t, dw_now_mono_ns() + SCHEMA_POLL_NS))
                break;
            continue;
        }
        t->tick(st, t->arg);
        ticked = true;
        if (wait_until(t, dw_now_mono_ns() + t->period_ns))
            break;
    }
    if (ticked && t->last)
        t->last(st, t->arg);
    dw_rcu_unregister();
    return NULL;
}

struct dw_ticker *dw_ticker_start(struct dw_db *db, const char *what, int64_t period_ns,
                                  dw_ticker_fn *tick, dw_ticker_fn *last, void *arg)
{
    struct dw_ticker *t = dw_xcalloc(1, sizeof(*t));
    pthread_condattr_t attr;
    int err;

    t->db = db;
    t->period_ns = period_ns;
    t->tick = tick;
    t->last = last;
    t->arg = arg;
    atomic_init(&t->stopping, false);
    pthread_mutex_init(&t->lock, NULL);
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC); /* dw_now_mono_ns's clock */
    pthread_cond_init(&t->cond, &attr);
    pthread_condattr_destroy(&attr);
    err = pthread_create(&t->thread, NULL, ticker_main, t);
    if (err) {
        dw_log(DW_LOG_ERROR, "cannot start the %s thread: %s", what, strerror(err));
        pthread_mutex_destroy(&t->lock);
        pthread_cond_destroy(&t->cond);
        free(t);
        return NULL;
    }
    return t;
}

bool dw_ticker_stopping(const struct dw_ticker *t)
{
    return atomic_load_explicit(&t->stopping, memory_order_relaxed);
}

void dw_ticker_stop(struct dw_ticker *t)
{
    if (!t)
        return;
    pthread_mutex_lock(&t->lock);
    atomic_store_explicit(&t->stopping, true, memory_order_relaxed);
    pthread_cond_broadcast(&t->cond);
    pthread_mutex_unlock(&t->lock);
    pthread_join(t->thread, NULL);
    pthread_mutex_destroy(&t->lock);
    pthread_cond_destroy(&t->cond);
    free(t);
}
