/*
 * test_stress_hub — the real hub under concurrent fan-out and churn.
 *
 * 200 "stable" connections over 50 users and 4 channels stay open for the whole run. Three
 * producer threads (registered with RCU) publish with send_user / send_channel / send_all
 * (one of them in batches), each message carrying {"p":producer,"s":seq}. The test thread is
 * the I/O thread and does what src/conn.c does: it sleeps until the hub's wake callback
 * signals, takes the ready queue, unschedules, collects and pops each open connection's
 * outbox, and drops the ready queue's reference (dw__conn_drain_ready + the write path). Between
 * drains it adds and removes "churn" connections (new and existing users, channel joins and leaves,
 * a channel and users that come and go), concurrently with the producers walking the maps.
 *
 * What must hold:
 *   - each stable connection receives exactly the messages addressed to it, exactly once, in
 *     per-producer order (the targets are a pure function of (producer, seq));
 *   - no lost wake-up: the I/O thread drains only when woken. The run is cut into rounds: the
 *     producers publish a burst and stop, and the I/O thread must receive every stable
 *     delivery of the round through wakes alone before it lets them go on. A lost wake-up
 *     shows as a bounded-wait timeout, never a hang;
 *   - nothing is lost or invented: the sum of what the send calls returned equals what the I/O
 *     thread popped plus what was left queued on removed connections;
 *   - no leaks (asan) and no races (tsan).
 */
#include "../../src/hub_int.h"
#include "dealwire/msg.h"
#include "dealwire/thread.h"
#include "dealwire/wake.h"

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

/* The outbox bound of the I/O thread here: large enough that nothing is ever dropped. */
#define LARGE_BOUND  (1UL << 30)
#define NSTABLE      200
#define NUSERS       50
#define NCHANNELS    4
#define NPRODUCERS   3
#define PER_PRODUCER 3000
#define NCHURN       24 /* churn connections alive at once, at most */
#define NCHURN_USERS 8  /* fresh users "c0".."c7", created and deleted as churn comes and goes */
#define BATCH        8  /* producer 2 publishes in batches of this many */
/* Messages per producer per round: a multiple of BATCH, so that no batch (and the wake it
 * defers) stays open across the end of a round. */
#define PER_ROUND      120
#define NROUNDS        (PER_PRODUCER / PER_ROUND)
#define WAIT_LIMIT_S   60 /* only reached when a wake-up was lost */
#define CHURN_PER_WAKE 8  /* churn operations after each drain */

/* ------------------------------------------------------------------------------------------
 * Who each message goes to: a pure function of (producer, seq), so the I/O thread can check
 * what every stable connection must receive.
 * ------------------------------------------------------------------------------------------ */

enum target_kind { T_USER, T_CHANNEL, T_ALL, T_CHURN };

struct target {
    enum target_kind kind;
    unsigned arg; /* user or channel index */
};

static struct target target_of(unsigned p, unsigned s)
{
    switch ((s + p) % 4) {
    case 0:
        return (struct target){T_USER, (s * 7 + p * 13) % NUSERS};
    case 1:
        return (struct target){T_CHANNEL, (s / 4 + p) % NCHANNELS};
    case 2:
        return (struct target){T_ALL, 0};
    default:
        return (struct target){T_CHURN, s}; /* the churn-only channel, or a churn user */
    }
}

static unsigned stable_user(unsigned i)
{
    return i % NUSERS;
}

/* Channels of stable connection i: one or two of the four. */
static unsigned stable_subs(unsigned i)
{
    return (1u << (i % NCHANNELS)) | (1u << ((i / 7) % NCHANNELS));
}

static bool stable_gets(unsigned i, unsigned p, unsigned s)
{
    struct target t = target_of(p, s);

    switch (t.kind) {
    case T_USER:
        return stable_user(i) == t.arg;
    case T_CHANNEL:
        return (stable_subs(i) >> t.arg) & 1;
    case T_ALL:
        return true;
    case T_CHURN:
        return false;
    }
    return false;
}

/* ------------------------------------------------------------------------------------------
 * Shared state
 * ------------------------------------------------------------------------------------------ */

struct wake {
    pthread_mutex_t lock;
    pthread_cond_t cond;     /* the I/O thread waits on it */
    pthread_cond_t released; /* producers wait on it at the end of a round */
    unsigned long wakes;     /* under lock: calls of the hub's wake callback */
    unsigned long taken;     /* under lock: wakes the I/O thread has answered */
    unsigned arrived;        /* under lock: producers at the end of the current round */
    unsigned round;          /* under lock: the round producers may publish in */
};

static void on_wake(void *arg)
{
    struct wake *w = arg;

    pthread_mutex_lock(&w->lock);
    w->wakes++;
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->lock);
}

struct producer {
    struct dw_hub *hub;
    struct wake *wake;
    unsigned id;
    unsigned long delivered; /* sum of what the send calls returned */
};

static void *producer_main(void *arg)
{
    struct producer *p = arg;
    char name[16], text[48];

    dw_thread_set_role(DW_THREAD_WORKER);
    dw_rcu_register();
    for (unsigned s = 0; s < PER_PRODUCER; s++) {
        struct target t = target_of(p->id, s);
        int len = snprintf(text, sizeof(text), "{\"p\":%u,\"s\":%u}", p->id, s);
        struct dw_msg *m = dw_msg_new_text(DW_MSG_DEAL_ALERT, 0, text, (size_t)len);

        if (p->id == 2 && s % BATCH == 0)
            dw_wake_batch_begin();
        switch (t.kind) {
        case T_USER:
            snprintf(name, sizeof(name), "u%02u", t.arg);
            p->delivered += dw_hub_send_user(p->hub, name, m);
            break;
        case T_CHANNEL:
            snprintf(name, sizeof(name), "ch%u", t.arg);
            p->delivered += dw_hub_send_channel(p->hub, name, m);
            break;
        case T_ALL:
            p->delivered += dw_hub_send_all(p->hub, m);
            break;
        case T_CHURN:
            if (t.arg % 2) {
                p->delivered += dw_hub_send_channel(p->hub, "tmp", m);
            } else {
                snprintf(name, sizeof(name), "c%u", t.arg / 2 % NCHURN_USERS);
                p->delivered += dw_hub_send_user(p->hub, name, m);
            }
            break;
        }
        if (p->id == 2 && (s % BATCH == BATCH - 1 || s == PER_PRODUCER - 1))
            dw_wake_batch_end();
        dw_msg_unref(m); /* the producer's own reference, after fan-out */
        /* Pacing, not synchronization: lets the I/O thread run between publishes, so drains,
         * churn and fan-out interleave many times. */
        sched_yield();

        if (s % PER_ROUND == PER_ROUND - 1) {
            unsigned r = s / PER_ROUND;

            /* End of round r: stop until the I/O thread has received all of it. Arriving does
             * not make it drain (see io_wait), so it cannot hide a lost wake-up. */
            pthread_mutex_lock(&p->wake->lock);
            p->wake->arrived++;
            pthread_cond_signal(&p->wake->cond);
            while (p->wake->round <= r)
                pthread_cond_wait(&p->wake->released, &p->wake->lock);
            pthread_mutex_unlock(&p->wake->lock);
        }
    }
    dw_rcu_unregister();
    return NULL;
}

/* The I/O thread's state. */
struct io {
    struct dw_hub *hub;
    struct dw_conn *stable[NSTABLE];
    unsigned cursor[NSTABLE][NPRODUCERS]; /* next seq to look for from producer p */
    unsigned long stable_expected, stable_received;
    unsigned long stable_expected_by_round[NROUNDS]; /* through the end of each round */
    unsigned long popped;                            /* from every connection */
    unsigned long errors;
    char first_error[200];

    struct dw_conn *live[NCHURN];
    unsigned nlive;
    struct dw_conn **dead; /* removed churn connections, each with our extra reference */
    size_t ndead, dead_cap;
    uint64_t rng;
    unsigned churn_user_seq;
    unsigned long adds, removes, unsubs;
};

static void record_error(struct io *io, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void record_error(struct io *io, const char *fmt, ...)
{
    va_list ap;

    if (io->errors++ == 0) {
        va_start(ap, fmt);
        vsnprintf(io->first_error, sizeof(io->first_error), fmt, ap);
        va_end(ap);
    }
}

static uint64_t next_rand(struct io *io)
{
    /* xorshift64 */
    io->rng ^= io->rng << 13;
    io->rng ^= io->rng >> 7;
    io->rng ^= io->rng << 17;
    return io->rng;
}

/* Checks message m popped from stable connection i. */
static void check_stable(struct io *io, unsigned i, struct dw_msg *m)
{
    const char *text = dw_msg_payload(m);
    unsigned long pv, sv;
    unsigned p, s, want;

    if (!scan_ulong(&text, "{\"p\":", &pv) || !scan_ulong(&text, ",\"s\":", &sv) ||
        strcmp(text, "}") != 0 || pv >= NPRODUCERS || sv >= PER_PRODUCER) {
        record_error(io, "conn %u: bad payload %s", i, dw_msg_payload(m));
        return;
    }
    p = (unsigned)pv;
    s = (unsigned)sv;
    for (want = io->cursor[i][p]; want < PER_PRODUCER && !stable_gets(i, p, want); want++)
        ;
    if (s != want) {
        record_error(io, "conn %u producer %u: got seq %u, expected %u (%s)", i, p, s, want,
                     s < want ? "duplicate or out of order" : "missed one");
        if (s < want)
            return;
    }
    io->cursor[i][p] = s + 1;
    io->stable_received++;
}

/* dw__conn_drain_ready and the write path of src/conn.c, without lws. */
static void drain(struct io *io)
{
    struct dw_readyq_batch batch;
    struct cds_wfcq_node *node;

    dw__hub_take_ready(io->hub, &batch);
    while ((node = dw_readyq_batch_next(&batch)) != NULL) {
        struct dw_conn *c = caa_container_of(node, struct dw_conn, ready_node);
        struct dw_msg *m;

        if (!atomic_load_explicit(&c->closed, memory_order_relaxed)) {
            /* Off the ready queue: clear the flag before collecting, so a push the collect
             * misses schedules c again. */
            dw_outbox_unschedule(&c->outbox);
            if (dw_outbox_collect(&c->outbox, LARGE_BOUND) != 0)
                record_error(io, "conn %llu: messages dropped under a large bound",
                             (unsigned long long)c->id);
            while ((m = dw_outbox_pop(&c->outbox)) != NULL) {
                io->popped++;
                if (c->id >= 1 && c->id <= NSTABLE)
                    check_stable(io, (unsigned)(c->id - 1), m);
                dw_msg_unref(m);
            }
        }
        /* The ready queue's reference, taken by the producer that scheduled c. */
        dw__conn_unref(c);
    }
}

/* One add, remove or unsubscribe of a churn connection. */
static void churn_step(struct io *io)
{
    uint64_t r = next_rand(io);

    if (io->nlive == 0 || (io->nlive < NCHURN && (r & 1))) {
        struct dw_conn *c = dw__hub_conn_new(io->hub);
        char user[16], ch[16];

        if ((r >> 8) % 3 == 0)
            snprintf(user, sizeof(user), "c%u", io->churn_user_seq++ % NCHURN_USERS);
        else
            snprintf(user, sizeof(user), "u%02u", (unsigned)((r >> 12) % NUSERS));
        dw__hub_add(io->hub, c, user);
        snprintf(ch, sizeof(ch), "ch%u", (unsigned)((r >> 20) % NCHANNELS));
        if (dw__hub_subscribe(io->hub, c, ch, 8) != 0 ||
            ((r >> 24) % 2 && dw__hub_subscribe(io->hub, c, "tmp", 8) != 0))
            record_error(io, "churn subscribe failed");
        io->live[io->nlive++] = c;
        io->adds++;
    } else {
        unsigned idx = (unsigned)((r >> 32) % io->nlive);
        struct dw_conn *c = io->live[idx];

        if ((r >> 4) % 4 == 0) {
            int rc = dw__hub_unsubscribe(io->hub, c, "tmp");

            if (rc != 0 && rc != -ENOENT)
                record_error(io, "unsubscribe returned %d", rc);
            io->unsubs++;
            return;
        }
        if (io->ndead == io->dead_cap) {
            io->dead_cap = io->dead_cap ? 2 * io->dead_cap : 64;
            io->dead = realloc(io->dead, io->dead_cap * sizeof(struct dw_conn *));
            if (!io->dead)
                abort();
        }
        /* Keep it past the grace period, to count what is left queued on it at the end. */
        dw__conn_ref(c);
        dw__hub_remove(io->hub, c);
        io->dead[io->ndead++] = c;
        io->live[idx] = io->live[--io->nlive];
        io->removes++;
    }
}

enum wait_result { WOKEN, ROUND_END, TIMED_OUT };

/* Sleeps until the hub wakes us, or (unless need_wake) every producer has reached the end of
 * the round. */
static enum wait_result io_wait(struct wake *w, bool need_wake)
{
    struct timespec deadline;
    enum wait_result res = WOKEN;

    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += WAIT_LIMIT_S;
    pthread_mutex_lock(&w->lock);
    while (w->taken == w->wakes && (need_wake || w->arrived < NPRODUCERS)) {
        if (pthread_cond_timedwait(&w->cond, &w->lock, &deadline) == ETIMEDOUT &&
            w->taken == w->wakes && (need_wake || w->arrived < NPRODUCERS)) {
            res = TIMED_OUT;
            break;
        }
    }
    if (res != TIMED_OUT) {
        if (w->taken != w->wakes)
            w->taken = w->wakes; /* answered by the drain that follows */
        else
            res = ROUND_END;
    }
    pthread_mutex_unlock(&w->lock);
    return res;
}

/* Lets the producers into round (after a failure, NROUNDS: through all of them). */
static void release_round(struct wake *w, unsigned round)
{
    pthread_mutex_lock(&w->lock);
    w->arrived = 0;
    w->round = round;
    pthread_cond_broadcast(&w->released);
    pthread_mutex_unlock(&w->lock);
}

static bool all_arrived(struct wake *w)
{
    bool all;

    pthread_mutex_lock(&w->lock);
    all = w->arrived == NPRODUCERS;
    pthread_mutex_unlock(&w->lock);
    return all;
}

static void test_fanout_with_churn(void **state)
{
    struct io *io = calloc(1, sizeof(*io));
    struct wake w = {.wakes = 0};
    struct dw_wake waker;
    unsigned round = 0;
    bool need_wake = false;
    struct producer prod[NPRODUCERS];
    pthread_t tp[NPRODUCERS];
    unsigned long delivered = 0, left_on_dead = 0;
    bool timed_out = false;

    (void)state;
    assert_non_null(io);
    dw_thread_set_role(DW_THREAD_IO);
    dw_rcu_register();
    pthread_mutex_init(&w.lock, NULL);
    pthread_cond_init(&w.cond, NULL);
    pthread_cond_init(&w.released, NULL);
    waker = (struct dw_wake){on_wake, &w};
    io->hub = dw_hub_new(&waker);
    io->rng = 0x9e3779b97f4a7c15ULL;

    /* The stable connections: ids 1..NSTABLE, in order, before any producer starts. */
    for (unsigned i = 0; i < NSTABLE; i++) {
        char user[16], ch[16];
        struct dw_conn *c = dw__hub_conn_new(io->hub);

        assert_int_equal(c->id, i + 1);
        snprintf(user, sizeof(user), "u%02u", stable_user(i));
        dw__hub_add(io->hub, c, user);
        for (unsigned k = 0; k < NCHANNELS; k++) {
            if ((stable_subs(i) >> k) & 1) {
                snprintf(ch, sizeof(ch), "ch%u", k);
                assert_int_equal(dw__hub_subscribe(io->hub, c, ch, 8), 0);
            }
        }
        io->stable[i] = c;
        for (unsigned p = 0; p < NPRODUCERS; p++) {
            for (unsigned s = 0; s < PER_PRODUCER; s++) {
                if (stable_gets(i, p, s)) {
                    io->stable_expected++;
                    for (unsigned r = s / PER_ROUND; r < NROUNDS; r++)
                        io->stable_expected_by_round[r]++;
                }
            }
        }
    }
    assert_int_equal(dw_hub_connection_count(io->hub), NSTABLE);
    assert_int_equal(dw_hub_user_count(io->hub), NUSERS);
    assert_int_equal(dw_hub_channel_count(io->hub), NCHANNELS);

    assert_int_equal(PER_PRODUCER % PER_ROUND, 0);
    assert_int_equal(PER_ROUND % BATCH, 0);
    for (unsigned p = 0; p < NPRODUCERS; p++) {
        prod[p] = (struct producer){.hub = io->hub, .wake = &w, .id = p};
        assert_int_equal(pthread_create(&tp[p], NULL, producer_main, &prod[p]), 0);
    }

    /* The I/O loop: drain and churn on every wake. When every producer has finished the round,
     * let them on once each stable connection has the whole round; until then, only a wake
     * can make progress. */
    while (round < NROUNDS) {
        enum wait_result r = io_wait(&w, need_wake);

        if (r == TIMED_OUT) {
            timed_out = true;
            release_round(&w, NROUNDS); /* let the producers finish, unchecked */
            break;
        }
        if (r == WOKEN) {
            drain(io);
            for (unsigned k = 0; k < CHURN_PER_WAKE; k++)
                churn_step(io);
        }
        need_wake = false;
        if (all_arrived(&w)) {
            if (io->stable_received >= io->stable_expected_by_round[round])
                release_round(&w, ++round);
            else
                need_wake = true;
        }
    }
    for (unsigned p = 0; p < NPRODUCERS; p++) {
        pthread_join(tp[p], NULL);
        delivered += prod[p].delivered;
    }

    if (timed_out)
        fail_msg("lost wake-up in round %u: no wake for %ds with %lu of %lu stable deliveries "
                 "received",
                 round, WAIT_LIMIT_S, io->stable_received, io->stable_expected);
    if (io->errors)
        fail_msg("%lu delivery errors; first: %s", io->errors, io->first_error);
    assert_int_equal(io->stable_received, io->stable_expected);
    for (unsigned i = 0; i < NSTABLE; i++) {
        for (unsigned p = 0; p < NPRODUCERS; p++) {
            for (unsigned s = io->cursor[i][p]; s < PER_PRODUCER; s++) {
                if (stable_gets(i, p, s))
                    fail_msg("conn %u never received producer %u seq %u", i, p, s);
            }
        }
    }

    /* Producers are done: whatever is still scheduled is on the ready queue (a churn
     * connection's last messages, say). After one more drain, no open connection has anything
     * queued. */
    drain(io);
    for (unsigned i = 0; i < NSTABLE; i++)
        assert_int_equal(dw_outbox_queued(&io->stable[i]->outbox), 0);
    for (unsigned i = 0; i < io->nlive; i++)
        assert_int_equal(dw_outbox_queued(&io->live[i]->outbox), 0);
    assert_int_equal(io->errors, 0);

    /* Every delivery the send calls counted was popped, or is still queued on a connection
     * that was removed (closed connections are not written to). */
    for (size_t i = 0; i < io->ndead; i++)
        left_on_dead += dw_outbox_queued(&io->dead[i]->outbox);
    printf("# %u rounds, %lu deliveries: %lu popped, %lu left on %zu removed connections; churn: "
           "%lu adds, "
           "%lu removes, %lu unsubscribes; %lu wakes\n",
           NROUNDS, delivered, io->popped, left_on_dead, io->ndead, io->adds, io->removes,
           io->unsubs, w.wakes);
    assert_int_equal(delivered, io->popped + left_on_dead);
    assert_true(io->removes > 0);
    assert_true(io->adds > 0);

    /* Shutdown, as the server does it: remove every connection, drain the ready queue, let the
     * grace period pass, then free. */
    for (unsigned i = 0; i < NSTABLE; i++)
        dw__hub_remove(io->hub, io->stable[i]);
    for (unsigned i = 0; i < io->nlive; i++)
        dw__hub_remove(io->hub, io->live[i]);
    drain(io);
    dw_rcu_barrier();
    assert_int_equal(dw_hub_connection_count(io->hub), 0);
    assert_int_equal(dw_hub_user_count(io->hub), 0);
    assert_int_equal(dw_hub_channel_count(io->hub), 0);
    for (size_t i = 0; i < io->ndead; i++) {
        /* The hub's reference went with the grace period; ours is the last. */
        assert_int_equal(atomic_load(&io->dead[i]->refs), 1);
        dw__conn_unref(io->dead[i]);
    }
    dw_hub_free(io->hub);
    dw_rcu_unregister();
    pthread_cond_destroy(&w.released);
    pthread_cond_destroy(&w.cond);
    pthread_mutex_destroy(&w.lock);
    free(io->dead);
    free(io);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fanout_with_churn),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
