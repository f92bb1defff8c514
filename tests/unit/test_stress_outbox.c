/*
 * test_stress_outbox — one outbox, four producer threads, one consumer (role io), the way a
 * connection is used in the daemon: producers push wait-free and, when dw_outbox_push returns
 * true (they set the "scheduled" flag), hand the outbox to the consumer; the consumer sleeps
 * until handed it, then unschedules (which clears the flag: the outbox is off its "ready
 * queue", the hand-off count), collects and pops everything, as dw__conn_drain_ready does.
 *
 * The run is cut into rounds: every producer pushes a burst, then stops at a barrier, and the
 * consumer must receive the whole round through hand-offs alone before the next round starts.
 * So every round ends the way a quiet period does in the daemon, and each end checks that no
 * wake-up was lost (a lost one strands a message that nothing would rescue).
 *
 * What must hold:
 *   - every message arrives exactly once and in per-producer order (each carries
 *     {"p":producer,"s":seq});
 *   - no lost wake-up: the consumer collects ONLY when handed the outbox, never by polling, yet
 *     receives each round completely. A lost wake-up shows as a timeout (a bounded wait that
 *     exists only to fail instead of hanging);
 *   - the counts agree: consumer wake-ups <= hand-offs (push returned true), and at the end the
 *     flag is set exactly when a hand-off is unanswered, a collect alone leaves it set and only
 *     unschedule clears it; nothing stays queued and every message is freed (refcounts reach
 *     zero; the asan preset checks leaks).
 *
 * Must be clean under TSan: orderings come from the outbox's DW_TSAN_RELEASE/ACQUIRE and C11
 * atomics, the hand-off from a mutex and condition variable.
 */
#include "dealwire/msg.h"
#include "dealwire/outbox.h"
#include "dealwire/thread.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "test_util.h"

#define NPRODUCERS   4
#define PER_PRODUCER 100000
#define PER_ROUND    250 /* messages per producer per round */
#define NROUNDS      (PER_PRODUCER / PER_ROUND)
#define TOTAL        ((unsigned long)NPRODUCERS * PER_PRODUCER)
/* Generous: only reached when a wake-up was lost (or the machine is stalled). */
#define WAIT_LIMIT_S 20
/* Producers yield the CPU every this many pushes: pacing only (not synchronization), so the
 * consumer runs often and the flag changes hands many times per round. */
#define YIELD_EVERY 32

struct shared {
    struct dw_outbox ob;

    /* The hand-off: producers that won the scheduled flag bump `handoffs` and signal. */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    unsigned long handoffs; /* under lock: pushes that returned true */
    unsigned long taken;    /* under lock: hand-offs the consumer has answered */

    /* Producers and consumer meet at both ends of every round. */
    pthread_barrier_t round_start, round_end;

    /* Consumer results, read by the test thread after joining. */
    unsigned long received;
    unsigned long wakeups; /* times the consumer woke and collected */
    unsigned long errors;
    unsigned long next_seq[NPRODUCERS];
    char first_error[160];
    bool timed_out;
    unsigned long stuck_round;
};

struct producer {
    struct shared *sh;
    unsigned id;
    unsigned long scheduled; /* pushes that returned true */
};

static void *producer_main(void *arg)
{
    struct producer *p = arg;
    struct shared *sh = p->sh;
    unsigned long s = 0;

    dw_thread_set_role(DW_THREAD_WORKER);
    for (unsigned r = 0; r < NROUNDS; r++) {
        pthread_barrier_wait(&sh->round_start);
        for (unsigned k = 0; k < PER_ROUND; k++, s++) {
            char text[48];
            int len = snprintf(text, sizeof(text), "{\"p\":%u,\"s\":%lu}", p->id, s);
            struct dw_msg *m = dw_msg_new_text(DW_MSG_PRICE_ALERT, 0, text, (size_t)len);

            if (dw_outbox_push(&sh->ob, m)) {
                /* We set the flag: the consumer must be told, exactly as a producer puts the
                 * connection on the ready queue. */
                p->scheduled++;
                pthread_mutex_lock(&sh->lock);
                sh->handoffs++;
                pthread_cond_signal(&sh->cond);
                pthread_mutex_unlock(&sh->lock);
            }
            dw_msg_unref(m); /* the producer's own reference */
            if (k % YIELD_EVERY == YIELD_EVERY - 1)
                sched_yield();
        }
        pthread_barrier_wait(&sh->round_end);
    }
    return NULL;
}

static void record_error(struct shared *sh, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void record_error(struct shared *sh, const char *fmt, ...)
{
    va_list ap;

    if (sh->errors++ == 0) {
        va_start(ap, fmt);
        vsnprintf(sh->first_error, sizeof(sh->first_error), fmt, ap);
        va_end(ap);
    }
}

/* Waits for a hand-off not yet answered; false on timeout. */
static bool wait_handoff(struct shared *sh)
{
    struct timespec deadline;
    bool ok = true;

    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += WAIT_LIMIT_S;
    pthread_mutex_lock(&sh->lock);
    while (sh->taken == sh->handoffs) {
        if (pthread_cond_timedwait(&sh->cond, &sh->lock, &deadline) == ETIMEDOUT &&
            sh->taken == sh->handoffs) {
            ok = false;
            break;
        }
    }
    /* Every hand-off so far is answered by the unschedule + collect that follow. */
    sh->taken = sh->handoffs;
    pthread_mutex_unlock(&sh->lock);
    return ok;
}

/* Off the "ready queue": unschedules, collects once and checks everything popped. */
static void collect_and_pop(struct shared *sh)
{
    struct dw_msg *m;

    /* Clear the flag before collecting, so a push the collect misses hands off again. */
    dw_outbox_unschedule(&sh->ob);
    if (dw_outbox_collect(&sh->ob, TOTAL) != 0)
        record_error(sh, "collect dropped messages under a bound of %lu", TOTAL);
    while ((m = dw_outbox_pop(&sh->ob)) != NULL) {
        const char *text = dw_msg_payload(m);
        unsigned long p, s;

        if (!scan_ulong(&text, "{\"p\":", &p) || !scan_ulong(&text, ",\"s\":", &s) ||
            strcmp(text, "}") != 0 || p >= NPRODUCERS) {
            record_error(sh, "bad payload %s", dw_msg_payload(m));
        } else if (s != sh->next_seq[p]) {
            record_error(sh, "producer %lu: got seq %lu, expected %lu", p, s, sh->next_seq[p]);
            sh->next_seq[p] = s + 1;
        } else {
            sh->next_seq[p]++;
        }
        sh->received++;
        dw_msg_unref(m); /* the queue's reference: the last one, frees */
    }
}

static void *consumer_main(void *arg)
{
    struct shared *sh = arg;

    dw_thread_set_role(DW_THREAD_IO);
    for (unsigned r = 0; r < NROUNDS; r++) {
        unsigned long target = (unsigned long)(r + 1) * PER_ROUND * NPRODUCERS;

        pthread_barrier_wait(&sh->round_start);
        /* Only hand-offs make us unschedule and collect; after a timeout, just keep the
         * barriers going. */
        while (!sh->timed_out && sh->received < target) {
            if (!wait_handoff(sh)) {
                sh->timed_out = true;
                sh->stuck_round = r;
                break;
            }
            sh->wakeups++;
            collect_and_pop(sh);
        }
        pthread_barrier_wait(&sh->round_end);
    }
    return NULL;
}

static void test_four_producers_one_consumer(void **state)
{
    struct shared *sh = calloc(1, sizeof(*sh));
    struct producer prod[NPRODUCERS];
    pthread_t tp[NPRODUCERS], tc;
    unsigned long scheduled = 0;
    struct dw_msg *m;

    (void)state;
    assert_non_null(sh);
    dw_outbox_init(&sh->ob);
    pthread_mutex_init(&sh->lock, NULL);
    pthread_cond_init(&sh->cond, NULL);
    pthread_barrier_init(&sh->round_start, NULL, NPRODUCERS + 1);
    pthread_barrier_init(&sh->round_end, NULL, NPRODUCERS + 1);

    assert_int_equal(pthread_create(&tc, NULL, consumer_main, sh), 0);
    for (unsigned i = 0; i < NPRODUCERS; i++) {
        prod[i] = (struct producer){.sh = sh, .id = i};
        assert_int_equal(pthread_create(&tp[i], NULL, producer_main, &prod[i]), 0);
    }
    for (unsigned i = 0; i < NPRODUCERS; i++) {
        pthread_join(tp[i], NULL);
        scheduled += prod[i].scheduled;
    }
    pthread_join(tc, NULL);

    printf("# %lu messages in %u rounds, %lu hand-offs (push returned true), %lu consumer "
           "wake-ups\n",
           TOTAL, NROUNDS, scheduled, sh->wakeups);
    if (sh->timed_out) {
        unsigned long queued = dw_outbox_queued(&sh->ob), received = sh->received;
        unsigned long round = sh->stuck_round;

        dw_outbox_destroy(&sh->ob); /* frees the stranded messages */
        free(sh);
        fail_msg("lost wake-up in round %lu: no hand-off for %ds with %lu of %lu messages "
                 "received and %lu still queued",
                 round, WAIT_LIMIT_S, received, TOTAL, queued);
    }
    if (sh->errors)
        fail_msg("%lu ordering errors; first: %s", sh->errors, sh->first_error);
    assert_int_equal(sh->received, TOTAL);
    for (unsigned i = 0; i < NPRODUCERS; i++)
        assert_int_equal(sh->next_seq[i], PER_PRODUCER);

    /* Each push that returned true was signalled once; the consumer woke at most once per
     * hand-off (several may coalesce) and at least once per round. */
    assert_int_equal(scheduled, sh->handoffs);
    assert_true(sh->wakeups >= NROUNDS);
    assert_true(sh->wakeups <= scheduled);

    /* The flag is set exactly when a hand-off is still unanswered: one won after the
     * consumer's last unschedule (a push that raced with the collect which then took its
     * message). */
    assert_int_equal(atomic_load(&sh->ob._scheduled), sh->taken != sh->handoffs);
    if (sh->taken == sh->handoffs) {
        /* None is: win the flag the way a producer does, so that what follows always starts
         * from a set flag. */
        m = dw_msg_new_text(DW_MSG_PRICE_ALERT, 0, "{}", 2);
        assert_true(dw_outbox_push(&sh->ob, m));
        sh->handoffs++;
        dw_msg_unref(m); /* our reference: the queue holds the last one */
    }
    /* A collect alone (what WRITEABLE does) leaves the flag set, however much it moves... */
    assert_int_equal(dw_outbox_collect(&sh->ob, TOTAL), 0);
    assert_int_equal(atomic_load(&sh->ob._scheduled), 1);
    while ((m = dw_outbox_pop(&sh->ob)) != NULL)
        dw_msg_unref(m);
    assert_int_equal(dw_outbox_collect(&sh->ob, TOTAL), 0);
    assert_int_equal(atomic_load(&sh->ob._scheduled), 1);
    /* ...and answering the hand-off (unschedule, then collect) clears it. */
    dw_outbox_unschedule(&sh->ob);
    sh->taken = sh->handoffs;
    assert_int_equal(atomic_load(&sh->ob._scheduled), 0);
    assert_int_equal(dw_outbox_collect(&sh->ob, TOTAL), 0);
    assert_int_equal(atomic_load(&sh->ob._scheduled), 0);
    assert_null(dw_outbox_pop(&sh->ob));
    assert_true(dw_outbox_is_empty(&sh->ob));
    assert_int_equal(dw_outbox_queued(&sh->ob), 0);

    dw_outbox_destroy(&sh->ob);
    pthread_barrier_destroy(&sh->round_end);
    pthread_barrier_destroy(&sh->round_start);
    pthread_cond_destroy(&sh->cond);
    pthread_mutex_destroy(&sh->lock);
    free(sh);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_four_producers_one_consumer),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
