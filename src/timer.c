/*
 * timer — DESIGN: a fixed array of timers and one thread that loops "run what is due, then
 * sleep until the earliest deadline" on a condition variable bound to CLOCK_MONOTONIC, so
 * that a wall-clock jump moves nothing and dw_timers_stop() (or a new timer) wakes it at once.
 * With at most DW_TIMERS_MAX timers a linear scan for the earliest deadline is all it needs.
 *
 * The one idea: a timer is "busy" from the moment its run is submitted until the run's last
 * statement, and a busy timer's tick is skipped. That flag, under the mutex, is what keeps a
 * round from running twice at once, and it is also what dw_timers_stop() waits on: once the
 * thread is joined no new run can start, and once no timer is busy none is left in the pool,
 * so the set can be freed.
 *
 * Threads: the timer thread (no RCU, no hub, no lws; it only submits jobs), the workers that
 * run the timers' functions, and whoever adds and stops (main).
 */
#define DW_LOG_MODULE "timer"
#include "dealwire/timer.h"
#include "dealwire/log.h"
#include "dealwire/mem.h"
#include "dealwire/time.h"
#include "dealwire/worker.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Skipped ticks are logged at most this often per timer. */
#define SKIP_LOG_INTERVAL_NS (60 * DW_NSEC_PER_SEC)

struct timer {
    struct dw_timers *owner;
    char name[32];
    dw_timer_fn *fn;
    void *arg;
    int64_t period_ns;
    int64_t deadline_ns;       /* monotonic: the next tick */
    bool busy;                 /* submitted and not yet finished */
    unsigned long runs;        /* finished runs */
    unsigned long skipped;     /* ticks skipped because busy, in total */
    unsigned long skipped_log; /* skipped when the last line was logged */
    int64_t skip_logged_ns;    /* monotonic time of that line, 0 for never */
};

struct dw_timers {
    struct dw_workers *pool; /* borrowed */
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t wake; /* CLOCK_MONOTONIC; the timer thread waits on it */
    pthread_cond_t idle; /* dw_timers_stop() waits on it for busy timers */
    bool stopping;       /* under lock */
    unsigned ntimers;    /* under lock */
    struct timer timers[DW_TIMERS_MAX];
};

/* ------------------------------------------------------------------------------------------
 * Deadlines (pure)
 * ------------------------------------------------------------------------------------------ */

/* The tick after deadline that is later than now: whole periods, so no drift and no burst of
 * catch-up ticks after an overrun or a suspend. */
static int64_t next_deadline(int64_t deadline, int64_t period, int64_t now)
{
    if (deadline > now)
        return deadline;
    return deadline + ((now - deadline) / period + 1) * period;
}

static struct timespec to_timespec(int64_t ns)
{
    return (struct timespec){.tv_sec = (time_t)(ns / DW_NSEC_PER_SEC),
                             .tv_nsec = (long)(ns % DW_NSEC_PER_SEC)};
}

/* ------------------------------------------------------------------------------------------
 * Runs
 * ------------------------------------------------------------------------------------------ */

/* The job submitted for one tick: the timer's function, then the end of "busy". */
static void run_timer(void *arg)
{
    struct timer *t = arg;
    struct dw_timers *ts = t->owner;

    t->fn(t->arg);
    pthread_mutex_lock(&ts->lock);
    t->busy = false;
    t->runs++;
    if (ts->stopping)
        pthread_cond_broadcast(&ts->idle);
    pthread_mutex_unlock(&ts->lock);
}

/* Called with the lock held, for a timer whose deadline has come. */
static void tick(struct dw_timers *ts, struct timer *t, int64_t now)
{
    int r;

    t->deadline_ns = next_deadline(t->deadline_ns, t->period_ns, now);
    if (t->busy) {
        t->skipped++;
        if (t->skip_logged_ns == 0 || now - t->skip_logged_ns >= SKIP_LOG_INTERVAL_NS) {
            dw_log(DW_LOG_WARN,
                   "%s: still running when due again (period %.1f s); %lu tick(s) skipped since "
                   "the last report",
                   t->name, (double)t->period_ns / DW_NSEC_PER_SEC, t->skipped - t->skipped_log);
            t->skip_logged_ns = now;
            t->skipped_log = t->skipped;
        }
        return;
    }
    t->busy = true;
    r = dw_workers_submit(ts->pool, run_timer, t);
    if (r < 0)
        t->busy = false; /* the pool is stopping: nothing was queued */
}

static void *timer_main(void *arg)
{
    struct dw_timers *ts = arg;

    pthread_mutex_lock(&ts->lock);
    while (!ts->stopping) {
        int64_t now = dw_now_mono_ns();
        int64_t next = INT64_MAX;

        for (unsigned i = 0; i < ts->ntimers; i++) {
            struct timer *t = &ts->timers[i];

            if (t->deadline_ns <= now)
                tick(ts, t, now);
            if (t->deadline_ns < next)
                next = t->deadline_ns;
        }
        if (next == INT64_MAX) {
            pthread_cond_wait(&ts->wake, &ts->lock);
        } else {
            struct timespec until = to_timespec(next);

            pthread_cond_timedwait(&ts->wake, &ts->lock, &until);
        }
    }
    pthread_mutex_unlock(&ts->lock);
    return NULL;
}

/* ------------------------------------------------------------------------------------------
 * Public API
 * ------------------------------------------------------------------------------------------ */

struct dw_timers *dw_timers_start(struct dw_workers *pool)
{
    pthread_condattr_t attr;
    struct dw_timers *ts;
    int err;

    if (!pool)
        return NULL;
    ts = dw_xcalloc(1, sizeof(*ts));
    ts->pool = pool;
    pthread_mutex_init(&ts->lock, NULL);
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&ts->wake, &attr);
    pthread_condattr_destroy(&attr);
    pthread_cond_init(&ts->idle, NULL);
    err = pthread_create(&ts->thread, NULL, timer_main, ts);
    if (err) {
        dw_log(DW_LOG_ERROR, "cannot start the timer thread: %s", strerror(err));
        pthread_mutex_destroy(&ts->lock);
        pthread_cond_destroy(&ts->wake);
        pthread_cond_destroy(&ts->idle);
        free(ts);
        return NULL;
    }
    return ts;
}

int dw_timers_add(struct dw_timers *ts, const char *name, int64_t period_ns, dw_timer_fn *fn,
                  void *arg)
{
    struct timer *t;
    int r = 0;

    if (!ts || !name || !fn || period_ns <= 0 || period_ns > DW_TIMER_PERIOD_MAX_NS)
        return -EINVAL;
    pthread_mutex_lock(&ts->lock);
    if (ts->stopping) {
        r = -ESHUTDOWN;
    } else if (ts->ntimers == DW_TIMERS_MAX) {
        r = -ENOSPC;
    } else {
        t = &ts->timers[ts->ntimers++];
        *t = (struct timer){.owner = ts, .fn = fn, .arg = arg, .period_ns = period_ns};
        snprintf(t->name, sizeof(t->name), "%s", name);
        t->deadline_ns = dw_now_mono_ns() + period_ns;
        pthread_cond_signal(&ts->wake); /* the earliest deadline may have changed */
    }
    pthread_mutex_unlock(&ts->lock);
    return r;
}

void dw_timers_stop(struct dw_timers *ts)
{
    bool busy;

    if (!ts)
        return;
    pthread_mutex_lock(&ts->lock);
    ts->stopping = true;
    pthread_cond_signal(&ts->wake);
    pthread_mutex_unlock(&ts->lock);
    pthread_join(ts->thread, NULL);

    /* No tick can submit anything now; wait for what was submitted. */
    pthread_mutex_lock(&ts->lock);
    do {
        busy = false;
        for (unsigned i = 0; i < ts->ntimers; i++)
            busy = busy || ts->timers[i].busy;
        if (busy)
            pthread_cond_wait(&ts->idle, &ts->lock);
    } while (busy);
    pthread_mutex_unlock(&ts->lock);

    pthread_mutex_destroy(&ts->lock);
    pthread_cond_destroy(&ts->wake);
    pthread_cond_destroy(&ts->idle);
    free(ts);
}
