/*
 * test_hub — the hub's maps and fan-out, single threaded. The test thread plays both sides:
 * the I/O thread (role io: adds, subscribes, removes, drains the ready queue the way
 * dw__conn_drain_ready does) and the producer (send_user / send_channel / send_all).
 *
 * Checked: who each send reaches and the count it returns, that removed or closed connections
 * are skipped, one wake per call (or per batch) rather than per recipient, the subscribe and
 * unsubscribe results, the connection/user/channel counts, the lookups, the counters, and that
 * removal + a grace period releases the connection and what was queued on it. Every test
 * removes its connections and frees its hub, so LeakSanitizer (asan preset) checks the rest.
 */
#include "../../src/hub_int.h"
#include "dealwire/msg.h"
#include "dealwire/thread.h"
#include "dealwire/wake.h"

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "test_util.h"

/* ------------------------------------------------------------------------------------------
 * Fixture: a hub whose wake callback counts, and a table of the connections made.
 * ------------------------------------------------------------------------------------------ */

#define MAX_CONNS 16
#define QUEUE_CAP 1000

struct fixture {
    struct dw_hub *hub;
    struct dw_wake wake; /* count_wake, the fixture */
    unsigned wakes;
    unsigned nconns;
    struct dw_conn *conns[MAX_CONNS]; /* NULL once removed */
    unsigned received[MAX_CONNS];     /* messages popped per connection */
    struct dw_msg *last[MAX_CONNS];   /* the last one popped (borrowed pointer, for identity) */
};

static void count_wake(void *arg)
{
    struct fixture *fx = arg;

    fx->wakes++;
}

static int setup(void **state)
{
    struct fixture *fx = calloc(1, sizeof(*fx));

    if (!fx)
        return -1;
    fx->wake = (struct dw_wake){count_wake, fx};
    fx->hub = dw_hub_new(&fx->wake);
    if (!fx->hub)
        return -1;
    *state = fx;
    return 0;
}

/* Makes a connection of user_id; returns its index in the fixture. */
static unsigned add_conn(struct fixture *fx, const char *user_id)
{
    struct dw_conn *c;

    assert_true(fx->nconns < MAX_CONNS);
    c = dw__hub_conn_new(fx->hub);
    assert_non_null(c);
    assert_int_equal(atomic_load(&c->refs), 1);
    dw__hub_add(fx->hub, c, user_id);
    fx->conns[fx->nconns] = c;
    return fx->nconns++;
}

static void remove_conn(struct fixture *fx, unsigned i)
{
    assert_non_null(fx->conns[i]);
    dw__hub_remove(fx->hub, fx->conns[i]);
    fx->conns[i] = NULL;
}

static int find_index(struct fixture *fx, struct dw_conn *c)
{
    for (unsigned i = 0; i < fx->nconns; i++) {
        if (fx->conns[i] == c)
            return (int)i;
    }
    return -1;
}

/* What the I/O thread does on a wake (src/conn.c, dw__conn_drain_ready + the write path):
 * take the ready batch; for each open connection, now off the ready queue, unschedule its
 * outbox, collect it and pop everything; drop the ready queue's reference. Returns the number
 * of connections in the batch. */
static unsigned drain(struct fixture *fx)
{
    struct dw_readyq_batch batch;
    struct cds_wfcq_node *node;
    unsigned n = 0;

    dw__hub_take_ready(fx->hub, &batch);
    while ((node = dw_readyq_batch_next(&batch)) != NULL) {
        struct dw_conn *c = caa_container_of(node, struct dw_conn, ready_node);
        struct dw_msg *m;

        n++;
        if (!atomic_load_explicit(&c->closed, memory_order_relaxed)) {
            int i = find_index(fx, c);

            assert_true(i >= 0);
            dw_outbox_unschedule(&c->outbox);
            assert_int_equal(dw_outbox_collect(&c->outbox, QUEUE_CAP), 0);
            while ((m = dw_outbox_pop(&c->outbox)) != NULL) {
                fx->received[i]++;
                fx->last[i] = m;
                dw_msg_unref(m);
            }
        }
        dw__conn_unref(c);
    }
    return n;
}

static void clear_received(struct fixture *fx)
{
    memset(fx->received, 0, sizeof(fx->received));
    memset(fx->last, 0, sizeof(fx->last));
}

static int teardown(void **state)
{
    struct fixture *fx = *state;

    for (unsigned i = 0; i < fx->nconns; i++) {
        if (fx->conns[i])
            remove_conn(fx, i);
    }
    drain(fx);
    dw_rcu_barrier();
    assert_int_equal(dw_hub_connection_count(fx->hub), 0);
    assert_int_equal(dw_hub_user_count(fx->hub), 0);
    assert_int_equal(dw_hub_channel_count(fx->hub), 0);
    dw_hub_free(fx->hub);
    free(fx);
    return 0;
}

static int group_setup(void **state)
{
    (void)state;
    dw_thread_set_role(DW_THREAD_IO);
    dw_rcu_register();
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    dw_rcu_barrier();
    dw_rcu_unregister();
    return 0;
}

static struct dw_msg *new_msg(const char *text)
{
    return dw_msg_new_text(DW_MSG_NOTIFICATION, 0, text, strlen(text));
}

static unsigned refs_of(struct dw_msg *m)
{
    return atomic_load_explicit(&m->_refs, memory_order_relaxed);
}

/* ------------------------------------------------------------------------------------------
 * Maps and counts
 * ------------------------------------------------------------------------------------------ */

static void test_counts(void **state)
{
    struct fixture *fx = *state;
    unsigned a1, a2, b1;

    assert_int_equal(dw_hub_connection_count(fx->hub), 0);
    assert_int_equal(dw_hub_user_count(fx->hub), 0);
    assert_int_equal(dw_hub_channel_count(fx->hub), 0);

    a1 = add_conn(fx, "alice");
    a2 = add_conn(fx, "alice");
    b1 = add_conn(fx, "bob");
    assert_int_equal(dw_hub_connection_count(fx->hub), 3);
    assert_int_equal(dw_hub_user_count(fx->hub), 2);
    assert_true(fx->conns[a1]->id != fx->conns[a2]->id);
    assert_true(fx->conns[a2]->id != fx->conns[b1]->id);
    assert_ptr_equal(fx->conns[a1]->user, fx->conns[a2]->user);
    assert_string_equal(fx->conns[b1]->user->id, "bob");
    assert_int_equal(fx->conns[a1]->user->nconns, 2);

    assert_int_equal(dw__hub_subscribe(fx->hub, fx->conns[a1], "deals", 8), 0);
    assert_int_equal(dw_hub_channel_count(fx->hub), 1);
    assert_int_equal(dw__hub_subscribe(fx->hub, fx->conns[b1], "deals", 8), 0);
    assert_int_equal(dw_hub_channel_count(fx->hub), 1);
    assert_int_equal(dw__hub_subscribe(fx->hub, fx->conns[b1], "trips", 8), 0);
    assert_int_equal(dw_hub_channel_count(fx->hub), 2);

    /* A channel goes when its last member leaves, by unsubscribe or by removal. */
    assert_int_equal(dw__hub_unsubscribe(fx->hub, fx->conns[b1], "trips"), 0);
    assert_int_equal(dw_hub_channel_count(fx->hub), 1);
    remove_conn(fx, a1);
    assert_int_equal(dw_hub_connection_count(fx->hub), 2);
    assert_int_equal(dw_hub_user_count(fx->hub), 2);    /* alice still has a2 */
    assert_int_equal(dw_hub_channel_count(fx->hub), 1); /* bob is still in deals */
    remove_conn(fx, b1);
    assert_int_equal(dw_hub_connection_count(fx->hub), 1);
    assert_int_equal(dw_hub_user_count(fx->hub), 1);
    assert_int_equal(dw_hub_channel_count(fx->hub), 0);

    /* A user who comes back gets a fresh entry. */
    add_conn(fx, "bob");
    assert_int_equal(dw_hub_user_count(fx->hub), 2);
    remove_conn(fx, a2);
    assert_int_equal(dw_hub_user_count(fx->hub), 1);
    assert_int_equal(dw_hub_connection_count(fx->hub), 1);
}

static void test_lookups(void **state)
{
    struct fixture *fx = *state;
    unsigned a = add_conn(fx, "alice"), b = add_conn(fx, "bob");
    uint64_t aid = fx->conns[a]->id, bid = fx->conns[b]->id;
    struct dw_user *u;

    dw_rcu_read_lock();
    assert_ptr_equal(dw__hub_find_conn(fx->hub, aid), fx->conns[a]);
    assert_ptr_equal(dw__hub_find_conn(fx->hub, bid), fx->conns[b]);
    assert_null(dw__hub_find_conn(fx->hub, bid + 1000));
    u = dw__hub_find_user(fx->hub, "alice");
    assert_non_null(u);
    assert_string_equal(u->id, "alice");
    assert_ptr_equal(u, fx->conns[a]->user);
    assert_null(dw__hub_find_user(fx->hub, "carol"));
    assert_null(dw__hub_find_user(fx->hub, "alic"));
    dw_rcu_read_unlock();

    remove_conn(fx, a);
    dw_rcu_read_lock();
    assert_null(dw__hub_find_conn(fx->hub, aid));
    assert_null(dw__hub_find_user(fx->hub, "alice"));
    assert_non_null(dw__hub_find_conn(fx->hub, bid));
    dw_rcu_read_unlock();

    /* The all-connections list holds exactly the open ones. */
    {
        struct dw_conn *c;
        unsigned n = 0;

        dw_rlist_for_each_entry(c, dw__hub_all(fx->hub), struct dw_conn, all_link) {
            assert_ptr_equal(c, fx->conns[b]);
            n++;
        }
        assert_int_equal(n, 1);
    }
}

static void test_subscribe_results(void **state)
{
    struct fixture *fx = *state;
    unsigned a = add_conn(fx, "alice"), b = add_conn(fx, "bob");
    struct dw_conn *c = fx->conns[a];

    assert_int_equal(dw__hub_subscribe(fx->hub, c, "one", 2), 0);
    assert_int_equal(dw__hub_subscribe(fx->hub, c, "one", 2), 1); /* already a member */
    assert_int_equal(c->io.nsubs, 1);
    assert_int_equal(dw__hub_subscribe(fx->hub, c, "two", 2), 0);
    assert_int_equal(dw__hub_subscribe(fx->hub, c, "three", 2), -E2BIG);
    /* Already a member beats the limit: resubscribing at the maximum is still 1. */
    assert_int_equal(dw__hub_subscribe(fx->hub, c, "two", 2), 1);
    assert_int_equal(c->io.nsubs, 2);
    assert_int_equal(dw_hub_channel_count(fx->hub), 2); /* "three" was not created */

    assert_int_equal(dw__hub_unsubscribe(fx->hub, c, "three"), -ENOENT);
    assert_int_equal(dw__hub_unsubscribe(fx->hub, fx->conns[b], "one"), -ENOENT);
    assert_int_equal(dw__hub_unsubscribe(fx->hub, c, "one"), 0);
    assert_int_equal(dw__hub_unsubscribe(fx->hub, c, "one"), -ENOENT); /* twice */
    assert_int_equal(c->io.nsubs, 1);
    assert_int_equal(dw_hub_channel_count(fx->hub), 1);

    /* Room again after leaving one. */
    assert_int_equal(dw__hub_subscribe(fx->hub, c, "three", 2), 0);
    assert_int_equal(dw__hub_subscribe(fx->hub, c, "one", 2), -E2BIG);
    assert_int_equal(dw_hub_channel_count(fx->hub), 2);

    /* max_subs 0: nothing can be joined. */
    assert_int_equal(dw__hub_subscribe(fx->hub, fx->conns[b], "two", 0), -E2BIG);
}

/* ------------------------------------------------------------------------------------------
 * Fan-out
 * ------------------------------------------------------------------------------------------ */

static void test_send_user(void **state)
{
    struct fixture *fx = *state;
    unsigned a1 = add_conn(fx, "alice"), b1 = add_conn(fx, "bob"), a2 = add_conn(fx, "alice");
    struct dw_msg *m = new_msg("{\"n\":1}");

    assert_int_equal(dw_hub_send_user(fx->hub, "alice", m), 2);
    assert_int_equal(refs_of(m), 2); /* ours, plus the fan-out block's (its nodes share it) */
    assert_int_equal(fx->wakes, 1);
    assert_int_equal(drain(fx), 2);
    assert_int_equal(fx->received[a1], 1);
    assert_int_equal(fx->received[a2], 1);
    assert_int_equal(fx->received[b1], 0);
    assert_ptr_equal(fx->last[a1], m);
    assert_ptr_equal(fx->last[a2], m);
    assert_int_equal(refs_of(m), 1);

    assert_int_equal(dw_hub_send_user(fx->hub, "bob", m), 1);
    assert_int_equal(dw_hub_send_user(fx->hub, "carol", m), 0);
    assert_int_equal(dw_hub_send_user(fx->hub, "alic", m), 0);
    assert_int_equal(dw_hub_send_user(fx->hub, "", m), 0);
    assert_int_equal(drain(fx), 1);
    assert_int_equal(fx->received[a1], 1);
    assert_int_equal(fx->received[a2], 1);
    assert_int_equal(fx->received[b1], 1);
    assert_int_equal(refs_of(m), 1);
    dw_msg_unref(m);
}

static void test_send_channel(void **state)
{
    struct fixture *fx = *state;
    unsigned a1 = add_conn(fx, "alice"), a2 = add_conn(fx, "alice"), b1 = add_conn(fx, "bob");
    unsigned c1 = add_conn(fx, "carol");
    struct dw_msg *m = new_msg("{\"n\":2}");

    /* Subscriptions are per connection, not per user. */
    assert_int_equal(dw__hub_subscribe(fx->hub, fx->conns[a1], "deals", 8), 0);
    assert_int_equal(dw__hub_subscribe(fx->hub, fx->conns[b1], "deals", 8), 0);
    assert_int_equal(dw__hub_subscribe(fx->hub, fx->conns[c1], "trips", 8), 0);
    assert_int_equal(dw__hub_subscribe(fx->hub, fx->conns[b1], "trips", 8), 0);

    assert_int_equal(dw_hub_send_channel(fx->hub, "deals", m), 2);
    assert_int_equal(dw_hub_send_channel(fx->hub, "nope", m), 0);
    assert_int_equal(dw_hub_send_channel(fx->hub, "deal", m), 0);
    drain(fx);
    assert_int_equal(fx->received[a1], 1);
    assert_int_equal(fx->received[a2], 0);
    assert_int_equal(fx->received[b1], 1);
    assert_int_equal(fx->received[c1], 0);

    clear_received(fx);
    assert_int_equal(dw_hub_send_channel(fx->hub, "trips", m), 2);
    drain(fx);
    assert_int_equal(fx->received[a1], 0);
    assert_int_equal(fx->received[a2], 0);
    assert_int_equal(fx->received[b1], 1);
    assert_int_equal(fx->received[c1], 1);

    /* After unsubscribing, the channel no longer reaches it. */
    clear_received(fx);
    assert_int_equal(dw__hub_unsubscribe(fx->hub, fx->conns[b1], "deals"), 0);
    assert_int_equal(dw_hub_send_channel(fx->hub, "deals", m), 1);
    drain(fx);
    assert_int_equal(fx->received[a1], 1);
    assert_int_equal(fx->received[b1], 0);

    /* A channel whose last member left is gone. */
    assert_int_equal(dw__hub_unsubscribe(fx->hub, fx->conns[a1], "deals"), 0);
    assert_int_equal(dw_hub_send_channel(fx->hub, "deals", m), 0);
    assert_int_equal(drain(fx), 0);
    assert_int_equal(refs_of(m), 1);
    dw_msg_unref(m);
}

static void test_send_all(void **state)
{
    struct fixture *fx = *state;
    struct dw_msg *m = new_msg("{\"n\":3}");
    unsigned n = 5;

    assert_int_equal(dw_hub_send_all(fx->hub, m), 0); /* nobody yet */
    assert_int_equal(fx->wakes, 0);
    for (unsigned i = 0; i < n; i++)
        add_conn(fx, i % 2 ? "odd" : "even");
    assert_int_equal(dw_hub_send_all(fx->hub, m), n);
    assert_int_equal(refs_of(m), 2); /* one block for all n recipients */
    assert_int_equal(drain(fx), n);
    for (unsigned i = 0; i < n; i++) {
        assert_int_equal(fx->received[i], 1);
        assert_ptr_equal(fx->last[i], m);
    }
    assert_int_equal(refs_of(m), 1);
    dw_msg_unref(m);
}

static void test_removed_and_closed_skipped(void **state)
{
    struct fixture *fx = *state;
    unsigned a1 = add_conn(fx, "alice"), a2 = add_conn(fx, "alice"), b1 = add_conn(fx, "bob");
    struct dw_msg *m = new_msg("{\"n\":4}");

    assert_int_equal(dw__hub_subscribe(fx->hub, fx->conns[a1], "deals", 8), 0);
    assert_int_equal(dw__hub_subscribe(fx->hub, fx->conns[a2], "deals", 8), 0);

    remove_conn(fx, a1);
    assert_int_equal(dw_hub_send_user(fx->hub, "alice", m), 1);
    assert_int_equal(dw_hub_send_channel(fx->hub, "deals", m), 1);
    assert_int_equal(dw_hub_send_all(fx->hub, m), 2);
    drain(fx);
    assert_int_equal(fx->received[a2], 3);
    assert_int_equal(fx->received[b1], 1);

    /* A connection a producer can still reach but that is marked closed (the window between
     * the mark and the unlink, or a list a reader was already on) is skipped and not counted. */
    clear_received(fx);
    atomic_store(&fx->conns[b1]->closed, 1);
    assert_int_equal(dw_hub_send_all(fx->hub, m), 1);
    assert_int_equal(dw_hub_send_user(fx->hub, "bob", m), 0);
    assert_int_equal(dw_outbox_queued(&fx->conns[b1]->outbox), 0);
    drain(fx);
    assert_int_equal(fx->received[a2], 1);
    assert_int_equal(fx->received[b1], 0);
    remove_conn(fx, b1); /* removal marks closed anyway */
    assert_int_equal(refs_of(m), 1);
    dw_msg_unref(m);
}

/* After dw__hub_seal (the shutdown), no send reaches or counts anyone, and the maps stay as
 * they were for the I/O thread's flush. */
static void test_sealed_sends_reach_no_one(void **state)
{
    struct fixture *fx = *state;
    unsigned a = add_conn(fx, "alice");
    struct dw_msg *m = new_msg("{\"n\":9}");

    assert_int_equal(dw__hub_subscribe(fx->hub, fx->conns[a], "deals", 8), 0);
    assert_false(dw_hub_sealed(fx->hub));
    assert_int_equal(dw_hub_send_all(fx->hub, m), 1);
    dw__hub_seal(fx->hub);
    assert_true(dw_hub_sealed(fx->hub));
    assert_int_equal(dw_hub_send_all(fx->hub, m), 0);
    assert_int_equal(dw_hub_send_user(fx->hub, "alice", m), 0);
    assert_int_equal(dw_hub_send_channel(fx->hub, "deals", m), 0);
    assert_int_equal(dw_outbox_queued(&fx->conns[a]->outbox), 1);
    assert_int_equal(dw_hub_connection_count(fx->hub), 1);
    assert_int_equal(drain(fx), 1);
    assert_int_equal(refs_of(m), 1);
    dw_msg_unref(m);
}

static void test_wake_once_per_call(void **state)
{
    struct fixture *fx = *state;
    struct dw_msg *m = new_msg("{\"n\":5}");
    unsigned a[3];

    for (unsigned i = 0; i < 3; i++)
        a[i] = add_conn(fx, "alice");
    add_conn(fx, "bob");

    /* Three recipients, one wake. */
    assert_int_equal(dw_hub_send_user(fx->hub, "alice", m), 3);
    assert_int_equal(fx->wakes, 1);

    /* Until the I/O thread drains, the connections are already scheduled: no new wake, and
     * each connection is on the ready queue once however many messages wait for it. */
    assert_int_equal(dw_hub_send_user(fx->hub, "alice", m), 3);
    assert_int_equal(dw_hub_send_all(fx->hub, m), 4); /* bob is new on a non-empty queue */
    assert_int_equal(fx->wakes, 1);
    assert_int_equal(drain(fx), 4);
    for (unsigned i = 0; i < 3; i++)
        assert_int_equal(fx->received[a[i]], 3);

    /* Drained: the next call that schedules anything wakes once more. */
    assert_int_equal(dw_hub_send_all(fx->hub, m), 4);
    assert_int_equal(fx->wakes, 2);
    assert_int_equal(drain(fx), 4);

    /* A call that reaches nobody does not wake. */
    assert_int_equal(dw_hub_send_user(fx->hub, "nobody", m), 0);
    assert_int_equal(dw_hub_send_channel(fx->hub, "nowhere", m), 0);
    assert_int_equal(fx->wakes, 2);
    assert_int_equal(drain(fx), 0);
    assert_int_equal(refs_of(m), 1);
    dw_msg_unref(m);
}

static void test_batch_wakes_once(void **state)
{
    struct fixture *fx = *state;
    struct dw_msg *m = new_msg("{\"n\":6}");
    unsigned a = add_conn(fx, "alice"), b = add_conn(fx, "bob");

    assert_int_equal(dw__hub_subscribe(fx->hub, fx->conns[b], "deals", 8), 0);

    dw_wake_batch_begin();
    assert_int_equal(dw_hub_send_user(fx->hub, "alice", m), 1);
    assert_int_equal(dw_hub_send_channel(fx->hub, "deals", m), 1);
    assert_int_equal(dw_hub_send_all(fx->hub, m), 2);
    assert_int_equal(fx->wakes, 0);
    dw_wake_batch_end();
    assert_int_equal(fx->wakes, 1);
    drain(fx);
    assert_int_equal(fx->received[a], 2);
    assert_int_equal(fx->received[b], 2);

    /* Nested: only the outermost end wakes. */
    dw_wake_batch_begin();
    dw_wake_batch_begin();
    assert_int_equal(dw_hub_send_all(fx->hub, m), 2);
    dw_wake_batch_end();
    assert_int_equal(fx->wakes, 1);
    assert_int_equal(dw_hub_send_user(fx->hub, "bob", m), 1);
    assert_int_equal(fx->wakes, 1);
    dw_wake_batch_end();
    assert_int_equal(fx->wakes, 2);
    drain(fx);

    /* A batch that scheduled nothing does not wake. */
    dw_wake_batch_begin();
    assert_int_equal(dw_hub_send_user(fx->hub, "nobody", m), 0);
    dw_wake_batch_end();
    assert_int_equal(fx->wakes, 2);

    /* After the batch, calls wake on their own again. */
    assert_int_equal(dw_hub_send_user(fx->hub, "alice", m), 1);
    assert_int_equal(fx->wakes, 3);
    drain(fx);
    assert_int_equal(refs_of(m), 1);
    dw_msg_unref(m);
}

static void test_fifo_per_connection(void **state)
{
    struct fixture *fx = *state;
    struct dw_msg *m[4];
    unsigned a = add_conn(fx, "alice");
    struct dw_conn *c = fx->conns[a];

    (void)a;
    for (unsigned i = 0; i < 4; i++)
        m[i] = new_msg("{}");
    assert_int_equal(dw__hub_subscribe(fx->hub, c, "deals", 8), 0);
    dw_hub_send_user(fx->hub, "alice", m[0]);
    dw_hub_send_channel(fx->hub, "deals", m[1]);
    dw_hub_send_all(fx->hub, m[2]);
    dw_hub_send_user(fx->hub, "alice", m[3]);

    /* By hand, to see the order: one ready entry, four messages in send order. */
    {
        struct dw_readyq_batch batch;
        struct cds_wfcq_node *node;

        dw__hub_take_ready(fx->hub, &batch);
        node = dw_readyq_batch_next(&batch);
        assert_ptr_equal(node, &c->ready_node);
        assert_null(dw_readyq_batch_next(&batch));
        assert_int_equal(atomic_load(&c->refs), 2); /* the hub's and the ready queue's */
        assert_int_equal(dw_outbox_queued(&c->outbox), 4);
        dw_outbox_unschedule(&c->outbox);
        dw_outbox_collect(&c->outbox, QUEUE_CAP);
        for (unsigned i = 0; i < 4; i++) {
            struct dw_msg *got = dw_outbox_pop(&c->outbox);

            assert_ptr_equal(got, m[i]);
            dw_msg_unref(got);
        }
        assert_null(dw_outbox_pop(&c->outbox));
        dw__conn_unref(c);
        assert_int_equal(atomic_load(&c->refs), 1);
    }
    for (unsigned i = 0; i < 4; i++) {
        assert_int_equal(refs_of(m[i]), 1);
        dw_msg_unref(m[i]);
    }
}

/* ------------------------------------------------------------------------------------------
 * Removal and lifetime
 * ------------------------------------------------------------------------------------------ */

static void test_removal_releases_after_grace_period(void **state)
{
    struct fixture *fx = *state;
    struct dw_msg *m = new_msg("{\"n\":7}");
    unsigned a = add_conn(fx, "alice");
    struct dw_conn *c = fx->conns[a];

    assert_int_equal(dw__hub_subscribe(fx->hub, c, "deals", 8), 0);
    assert_int_equal(dw_hub_send_user(fx->hub, "alice", m), 1);
    assert_int_equal(dw_hub_send_channel(fx->hub, "deals", m), 1);
    assert_int_equal(refs_of(m), 3);
    assert_int_equal(atomic_load(&c->refs), 2); /* hub + ready queue */

    /* Closed with messages still queued and while on the ready queue. */
    remove_conn(fx, a);
    assert_int_equal(atomic_load(&c->closed), 1);
    assert_int_equal(dw_hub_send_user(fx->hub, "alice", m), 0);
    assert_int_equal(dw_hub_send_channel(fx->hub, "deals", m), 0);

    /* The I/O thread drops the ready queue's reference without touching the outbox... */
    assert_int_equal(drain(fx), 1);
    assert_int_equal(fx->received[a], 0);
    /* ...and after the grace period the hub's reference goes too, which frees the connection
     * and drops the references its outbox held. */
    dw_rcu_barrier();
    assert_int_equal(refs_of(m), 1);
    dw_msg_unref(m);
}

static void test_extra_ref_outlives_removal(void **state)
{
    struct fixture *fx = *state;
    struct dw_msg *m = new_msg("{\"n\":8}");
    unsigned a = add_conn(fx, "alice");
    struct dw_conn *c = fx->conns[a];

    dw__conn_ref(c); /* someone else (e.g. a stats walk) keeps it */
    assert_int_equal(dw_hub_send_all(fx->hub, m), 1);
    drain(fx); /* delivers m and drops the ready queue's reference */
    assert_int_equal(dw_hub_send_all(fx->hub, m), 1);
    remove_conn(fx, a);
    drain(fx);
    dw_rcu_barrier();
    /* Only our reference is left; the queued message is still held by the outbox. */
    assert_int_equal(atomic_load(&c->refs), 1);
    assert_int_equal(dw_outbox_queued(&c->outbox), 1);
    assert_int_equal(refs_of(m), 2);
    dw__conn_unref(c); /* the last: frees c and drops m's queued reference */
    assert_int_equal(refs_of(m), 1);
    dw_msg_unref(m);
}

/* The I/O thread collects in two places: when it drains the ready queue, and on every
 * WRITEABLE callback (src/conn.c, dw__conn_writeable -> collect()). A WRITEABLE can run while
 * the connection is still on the ready queue: a producer scheduled it after the last drain, and
 * lws services the socket before the cancel-service event. If that collect cleared the
 * scheduled flag (as it once did), the next producer would win the flag again and push
 * ready_node a second time while it is queued, which breaks readyq.h's "a node is never on the
 * queue twice" (the node ends up linked to itself). Now only the drain clears it
 * (dw_outbox_unschedule, once the connection is off the queue). This replays that sequence
 * with hub and outbox calls only, and checks the connection is on the ready queue once. The
 * walk is bounded, and the state is repaired before asserting, so a failure is reported
 * cleanly. */
static void test_writeable_collect_while_queued(void **state)
{
    struct fixture *fx = *state;
    struct dw_msg *m = new_msg("{\"n\":9}");
    unsigned a = add_conn(fx, "alice");
    struct dw_conn *c = fx->conns[a];
    struct dw_readyq_batch batch;
    struct dw_msg *got;
    unsigned seen = 0, ready_refs;

    /* A producer schedules c: it goes on the ready queue. */
    assert_int_equal(dw_hub_send_user(fx->hub, "alice", m), 1);
    /* WRITEABLE for c comes first: collect and write what is pending. */
    dw_outbox_collect(&c->outbox, QUEUE_CAP);
    while ((got = dw_outbox_pop(&c->outbox)) != NULL)
        dw_msg_unref(got);
    /* Another producer publishes to c before the I/O thread drains the ready queue. */
    assert_int_equal(dw_hub_send_user(fx->hub, "alice", m), 1);

    /* The drain: how many times does the batch hand out c? */
    dw__hub_take_ready(fx->hub, &batch);
    while (seen < 4 && dw_readyq_batch_next(&batch) == &c->ready_node)
        seen++;
    ready_refs = atomic_load(&c->refs) - 1;

    /* Repair: drop every ready-queue reference and what is queued (the batch is abandoned),
     * and clear the flag as the drain would. */
    for (unsigned i = 0; i < ready_refs; i++)
        dw__conn_unref(c);
    dw_outbox_unschedule(&c->outbox);
    dw_outbox_collect(&c->outbox, QUEUE_CAP);
    while ((got = dw_outbox_pop(&c->outbox)) != NULL)
        dw_msg_unref(got);
    dw_msg_unref(m);

    if (seen != 1 || ready_refs != 1)
        fail_msg("connection handed out %u times by one ready batch (walk bounded at 4) with %u "
                 "ready-queue references: ready_node was queued twice",
                 seen, ready_refs);
}

static void test_published_counters(void **state)
{
    struct fixture *fx = *state;
    struct dw_hub_published ctr;

    dw_hub_count_published(fx->hub, DW_MSG_DEAL_ALERT, 0);
    dw_hub_count_published(fx->hub, DW_MSG_DEAL_ALERT, 1);
    dw_hub_count_published(fx->hub, DW_MSG_TRIP_UPDATE, 0);
    dw_hub_count_published(fx->hub, -1, 1);            /* out of range: only the broadcast */
    dw_hub_count_published(fx->hub, DW_MSG__COUNT, 0); /* out of range: ignored */
    dw_hub_get_published(fx->hub, &ctr);
    assert_int_equal(ctr.by_type[DW_MSG_DEAL_ALERT], 2);
    assert_int_equal(ctr.by_type[DW_MSG_TRIP_UPDATE], 1);
    assert_int_equal(ctr.by_type[DW_MSG_PRICE_ALERT], 0);
    assert_int_equal(ctr.broadcasts, 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_counts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lookups, setup, teardown),
        cmocka_unit_test_setup_teardown(test_subscribe_results, setup, teardown),
        cmocka_unit_test_setup_teardown(test_send_user, setup, teardown),
        cmocka_unit_test_setup_teardown(test_send_channel, setup, teardown),
        cmocka_unit_test_setup_teardown(test_send_all, setup, teardown),
        cmocka_unit_test_setup_teardown(test_removed_and_closed_skipped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sealed_sends_reach_no_one, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wake_once_per_call, setup, teardown),
        cmocka_unit_test_setup_teardown(test_batch_wakes_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fifo_per_connection, setup, teardown),
        cmocka_unit_test_setup_teardown(test_removal_releases_after_grace_period, setup, teardown),
        cmocka_unit_test_setup_teardown(test_extra_ref_outlives_removal, setup, teardown),
        cmocka_unit_test_setup_teardown(test_writeable_collect_while_queued, setup, teardown),
        cmocka_unit_test_setup_teardown(test_published_counters, setup, teardown),
    };

    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
