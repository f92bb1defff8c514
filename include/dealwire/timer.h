/*
 * timer — periodic jobs on the worker pool (docs/architecture.md, "The path of a monitor's alert").
 *
 * One timer thread sleeps until the earliest deadline of its timers, then submits each due
 * timer's function to the worker pool as a job. A timer whose previous run is still queued or
 * running when it is due again skips that tick (counted, and logged at most once a minute):
 * a run is never started twice, and a slow run never piles jobs up in the pool. Deadlines
 * advance by whole periods from the start, so runs do not drift; ticks missed while a run
 * overran are skipped, not caught up. The first run is one period after dw_timers_add().
 *
 * The set is bounded (DW_TIMERS_MAX), and dw_timers_stop() is prompt: it wakes the timer
 * thread at once and then waits only for the runs already submitted (a run in progress
 * finishes; there is no cancellation point inside one).
 *
 * Synchronization: one mutex guards every timer's state. dw_timers_add() from any thread; the
 * timer thread and the end of each run take the mutex briefly; the timer functions run on
 * workers without it. Lock order: the timers' mutex, then the pool's (the thread submits
 * while holding its own mutex; a run never holds the pool's).
 */
#ifndef DEALWIRE_TIMER_H
#define DEALWIRE_TIMER_H

#include <stdint.h>

struct dw_timers;
struct dw_workers;

/* The most timers one struct dw_timers holds. */
#define DW_TIMERS_MAX 16

/* The longest period (about 31 years): deadlines then never overflow int64_t. */
#define DW_TIMER_PERIOD_MAX_NS 1000000000000000000LL

/* A timer's function: runs on a worker thread once per period, never twice at a time. */
typedef void dw_timer_fn(void *arg);

/* thread: main. Starts the timer thread, with no timers yet; due runs go to pool (borrowed:
 * it must outlive dw_timers_stop()). Returns the set, or NULL after a log line when the
 * thread cannot be started. */
struct dw_timers *dw_timers_start(struct dw_workers *pool);

/* thread: any but the timer functions'. Adds a timer that runs fn(arg) on the pool every
 * period_ns nanoseconds (1..DW_TIMER_PERIOD_MAX_NS), the first time one period from now. name
 * (copied, for log lines) says what it runs. arg is borrowed until dw_timers_stop() returns.
 * Returns 0, -EINVAL for a bad argument, -ENOSPC when DW_TIMERS_MAX timers exist, or -ESHUTDOWN
 * once stopping. */
int dw_timers_add(struct dw_timers *ts, const char *name, int64_t period_ns, dw_timer_fn *fn,
                  void *arg);

/* thread: main, never from a timer's function (it waits for them). Stops the timer thread,
 * waits for the runs already submitted to finish, and frees the set. NULL is a no-op. */
void dw_timers_stop(struct dw_timers *ts);

#endif
