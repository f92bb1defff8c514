/*
 * test_timer — periodic jobs on a real worker pool: a timer runs once per period (and not
 * before the first period is up), two timers keep their own periods, a run that overruns its
 * period is never started twice (ticks are skipped and counted instead), dw_timers_stop() is
 * prompt when nothing runs and waits for a run in progress, the deadline arithmetic skips
 * missed ticks without drift, and bad arguments and a full set are refused. Run under the
 * tsan preset, this is also the check that the busy flag hand-over is race free.
 */
#include "../../src/timer.c"

#include "dealwire/worker.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <unistd.h>

#include <cmocka.h>

#include "test_util.h"

#define MS 1000000LL

/* What a timer's function records, under its own lock. */
struct probe {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    unsigned runs;
    int64_t first_run_ns;
    int active, max_active; /* runs in progress now, and at most */
    int64_t sleep_ns;       /* how long each run takes */
};

static void probe_init(struct probe *p, int64_t sleep_ns)
{
    memset(p, 0, sizeof(*p));
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->cond, NULL);
    p->sleep_ns = sleep_ns;
}

static void probe_destroy(struct probe *p)
{
    pthread_mutex_destroy(&p->lock);
    pthread_cond_destroy(&p->cond);
}

static void probe_run(void *arg)
{
    struct probe *p = arg;

    pthread_mutex_lock(&p->lock);
    if (p->runs == 0 && p->active == 0)
        p->first_run_ns = dw_now_mono_ns();
    p->active++;
    if (p->active > p->max_active)
        p->max_active = p->active;
    pthread_mutex_unlock(&p->lock);

    if (p->sleep_ns > 0)
        usleep((useconds_t)(p->sleep_ns / 1000));

    pthread_mutex_lock(&p->lock);
    p->active--;
    p->runs++;
    pthread_cond_broadcast(&p->cond);
    pthread_mutex_unlock(&p->lock);
}

/* Waits (at most 10 s) until p has finished n runs. */
static void probe_wait(struct probe *p, unsigned n)
{
    struct timespec deadline;

    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += 10;
    pthread_mutex_lock(&p->lock);
    while (p->runs < n) {
        if (pthread_cond_timedwait(&p->cond, &p->lock, &deadline) == ETIMEDOUT)
            break;
    }
    pthread_mutex_unlock(&p->lock);
    if (p->runs < n)
        fail_msg("only %u of %u runs within 10 s", p->runs, n);
}

static unsigned probe_runs(struct probe *p)
{
    unsigned n;

    pthread_mutex_lock(&p->lock);
    n = p->runs;
    pthread_mutex_unlock(&p->lock);
    return n;
}

/* ------------------------------------------------------------------------------------------ */

static void test_next_deadline(void **state)
{
    (void)state;
    assert_int_equal(next_deadline(100, 10, 50), 100);  /* not due: unchanged */
    assert_int_equal(next_deadline(100, 10, 100), 110); /* due now: the next period */
    assert_int_equal(next_deadline(100, 10, 105), 110);
    assert_int_equal(next_deadline(100, 10, 110), 120); /* on a tick: the one after */
    assert_int_equal(next_deadline(100, 10, 147), 150); /* overran: missed ticks skipped */
    assert_int_equal(next_deadline(0, 30 * MS, 95 * MS), 120 * MS);
}

static void test_runs_every_period(void **state)
{
    struct dw_workers *pool = dw_workers_start(2);
    struct dw_timers *ts;
    struct probe p;
    int64_t t0;

    (void)state;
    probe_init(&p, 0);
    ts = dw_timers_start(pool);
    assert_non_null(ts);
    t0 = dw_now_mono_ns();
    assert_int_equal(dw_timers_add(ts, "probe", 20 * MS, probe_run, &p), 0);
    probe_wait(&p, 5);
    /* The first run one period after adding, then one per period: 5 runs take 100 ms. */
    assert_true(p.first_run_ns - t0 >= 20 * MS);
    assert_true(dw_now_mono_ns() - t0 >= 100 * MS);
    dw_timers_stop(ts);
    assert_int_equal(p.max_active, 1);
    dw_workers_stop(pool);
    probe_destroy(&p);
}

static void test_two_timers_keep_their_periods(void **state)
{
    struct dw_workers *pool = dw_workers_start(2);
    struct dw_timers *ts = dw_timers_start(pool);
    struct probe fast, slow;
    unsigned nfast, nslow;

    (void)state;
    probe_init(&fast, 0);
    probe_init(&slow, 0);
    assert_int_equal(dw_timers_add(ts, "slow", 200 * MS, probe_run, &slow), 0);
    assert_int_equal(dw_timers_add(ts, "fast", 10 * MS, probe_run, &fast), 0);
    probe_wait(&slow, 2); /* >= 400 ms */
    nfast = probe_runs(&fast);
    dw_timers_stop(ts);
    nslow = probe_runs(&slow);
    /* The fast timer kept its own period while the thread also slept toward the slow one's
     * deadline (a loose bound, for loaded machines and sanitizers: 40 ticks were due). */
    assert_true(nfast >= 10);
    assert_true(nslow >= 2 && nslow <= 3);
    dw_workers_stop(pool);
    probe_destroy(&fast);
    probe_destroy(&slow);
}

static void test_an_overrunning_run_is_not_started_twice(void **state)
{
    struct dw_workers *pool = dw_workers_start(4);
    struct dw_timers *ts = dw_timers_start(pool);
    unsigned long skipped;
    struct probe p;

    (void)state;
    probe_init(&p, 50 * MS);        /* ten periods per run */
    dw_log_set_level(DW_LOG_ERROR); /* the skipped ticks' warning is expected */
    assert_int_equal(dw_timers_add(ts, "slow", 5 * MS, probe_run, &p), 0);
    probe_wait(&p, 4);
    pthread_mutex_lock(&ts->lock);
    skipped = ts->timers[0].skipped;
    pthread_mutex_unlock(&ts->lock);
    dw_timers_stop(ts);
    dw_log_set_level(DW_LOG_INFO);
    /* Four workers were free, and still no two runs overlapped. */
    assert_int_equal(p.max_active, 1);
    assert_true(skipped >= 4);
    dw_workers_stop(pool);
    probe_destroy(&p);
}

static void test_stop_is_prompt(void **state)
{
    struct dw_workers *pool = dw_workers_start(1);
    struct dw_timers *ts = dw_timers_start(pool);
    struct probe p;
    int64_t t0;

    (void)state;
    probe_init(&p, 0);
    assert_int_equal(dw_timers_add(ts, "hourly", 3600 * (1000 * MS), probe_run, &p), 0);
    usleep(20000); /* let the thread go to sleep on the hour-long deadline */
    t0 = dw_now_mono_ns();
    dw_timers_stop(ts);
    assert_true(dw_now_mono_ns() - t0 < 500 * MS);
    assert_int_equal(p.runs, 0);
    dw_workers_stop(pool);
    probe_destroy(&p);
}

static void test_stop_waits_for_the_run_in_progress(void **state)
{
    struct dw_workers *pool = dw_workers_start(1);
    struct dw_timers *ts = dw_timers_start(pool);
    struct probe p;
    int active;

    (void)state;
    probe_init(&p, 200 * MS);
    assert_int_equal(dw_timers_add(ts, "long", 10 * MS, probe_run, &p), 0);
    for (int i = 0; i < 1000; i++) {
        pthread_mutex_lock(&p.lock);
        active = p.active;
        pthread_mutex_unlock(&p.lock);
        if (active)
            break;
        usleep(1000);
    }
    assert_int_equal(active, 1);
    dw_timers_stop(ts); /* returns only after the run, which p's fields then show */
    assert_int_equal(p.active, 0);
    assert_int_equal(p.runs, 1);
    dw_workers_stop(pool);
    probe_destroy(&p);
}

static void test_bad_arguments_and_a_full_set(void **state)
{
    struct dw_workers *pool = dw_workers_start(1);
    struct dw_timers *ts = dw_timers_start(pool);
    struct probe p;

    (void)state;
    probe_init(&p, 0);
    assert_null(dw_timers_start(NULL));
    assert_int_equal(dw_timers_add(NULL, "x", MS, probe_run, &p), -EINVAL);
    assert_int_equal(dw_timers_add(ts, NULL, MS, probe_run, &p), -EINVAL);
    assert_int_equal(dw_timers_add(ts, "x", MS, NULL, &p), -EINVAL);
    assert_int_equal(dw_timers_add(ts, "x", 0, probe_run, &p), -EINVAL);
    assert_int_equal(dw_timers_add(ts, "x", -1, probe_run, &p), -EINVAL);
    assert_int_equal(dw_timers_add(ts, "x", DW_TIMER_PERIOD_MAX_NS + 1, probe_run, &p), -EINVAL);
    for (int i = 0; i < DW_TIMERS_MAX; i++)
        assert_int_equal(dw_timers_add(ts, "x", DW_TIMER_PERIOD_MAX_NS, probe_run, &p), 0);
    assert_int_equal(dw_timers_add(ts, "x", MS, probe_run, &p), -ENOSPC);
    dw_timers_stop(ts);
    dw_timers_stop(NULL);
    assert_int_equal(p.runs, 0);
    dw_workers_stop(pool);
    probe_destroy(&p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_next_deadline),
        cmocka_unit_test(test_runs_every_period),
        cmocka_unit_test(test_two_timers_keep_their_periods),
        cmocka_unit_test(test_an_overrunning_run_is_not_started_twice),
        cmocka_unit_test(test_stop_is_prompt),
        cmocka_unit_test(test_stop_waits_for_the_run_in_progress),
        cmocka_unit_test(test_bad_arguments_and_a_full_set),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
