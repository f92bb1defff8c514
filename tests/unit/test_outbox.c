/*
 * test_outbox — the per-connection MPSC outbox and the I/O thread's ready queue, single
 * threaded, through their headers: FIFO order, the "scheduled" flag reported by push, cleared
 * only by unschedule and never by collect, the bound enforced by collect (oldest non-critical
 * first, critical never),
 * the queued counter, peek/pop/is_empty, that destroy drops every reference, and the ready
 * queue's empty → non-empty report and in-order batches.
 *
 * The concurrent half of the contract is in test_stress_outbox.c.
 */
#include "dealwire/msg.h"
#include "dealwire/outbox.h"
#include "dealwire/readyq.h"
#include "dealwire/thread.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "test_util.h"

/* ------------------------------------------------------------------------------------------
 * Helpers
 * ------------------------------------------------------------------------------------------ */

#define NMSG 8

static unsigned refs_of(struct dw_msg *m)
{
    return atomic_load_explicit(&m->_refs, memory_order_relaxed);
}

/* Makes msgs[i] with payload "i"; critical when bit i of critical_mask is set. */
static void make_msgs(struct dw_msg **msgs, unsigned n, unsigned critical_mask)
{
    for (unsigned i = 0; i < n; i++) {
        char text[16];
        int len = snprintf(text, sizeof(text), "%u", i);

        msgs[i] =
            dw_msg_new_text(DW_MSG_NOTIFICATION, (critical_mask >> i) & 1 ? DW_MSG_F_CRITICAL : 0,
                            text, (size_t)len);
    }
}

static void unref_msgs(struct dw_msg **msgs, unsigned n)
{
    for (unsigned i = 0; i < n; i++) {
        assert_int_equal(refs_of(msgs[i]), 1); /* nothing else still holds it */
        dw_msg_unref(msgs[i]);
    }
}

/* Pops one message, checks it is want, and drops the queue's reference. */
static void pop_expect(struct dw_outbox *ob, struct dw_msg *want)
{
    struct dw_msg *m;

    assert_ptr_equal(dw_outbox_peek(ob), want);
    m = dw_outbox_pop(ob);
    assert_ptr_equal(m, want);
    dw_msg_unref(m);
}

static int group_setup(void **state)
{
    (void)state;
    dw_thread_set_role(DW_THREAD_IO); /* the consumer side asserts it in debug builds */
    return 0;
}

/* ------------------------------------------------------------------------------------------
 * Outbox
 * ------------------------------------------------------------------------------------------ */

static void test_empty(void **state)
{
    struct dw_outbox ob;

    (void)state;
    dw_outbox_init(&ob);
    assert_true(dw_outbox_is_empty(&ob));
    assert_int_equal(dw_outbox_queued(&ob), 0);
    assert_null(dw_outbox_peek(&ob));
    assert_null(dw_outbox_pop(&ob));
    assert_int_equal(dw_outbox_collect(&ob, 0), 0);
    assert_null(dw_outbox_pop(&ob));
    dw_outbox_destroy(&ob);
}

static void test_fifo(void **state)
{
    struct dw_msg *msgs[NMSG];
    struct dw_outbox ob;

    (void)state;
    make_msgs(msgs, NMSG, 0);
    dw_outbox_init(&ob);
    for (unsigned i = 0; i < NMSG; i++) {
        dw_outbox_push(&ob, msgs[i]);
        assert_int_equal(refs_of(msgs[i]), 2); /* push takes its own reference */
        assert_int_equal(dw_outbox_queued(&ob), i + 1);
    }
    assert_false(dw_outbox_is_empty(&ob)); /* pushed, not yet collected, is not empty */
    /* Nothing is pending before a collect. */
    assert_null(dw_outbox_peek(&ob));
    assert_null(dw_outbox_pop(&ob));

    assert_int_equal(dw_outbox_collect(&ob, 100), 0);
    for (unsigned i = 0; i < NMSG; i++) {
        pop_expect(&ob, msgs[i]);
        assert_int_equal(dw_outbox_queued(&ob), NMSG - i - 1);
    }
    assert_true(dw_outbox_is_empty(&ob));
    assert_null(dw_outbox_pop(&ob));

    /* Interleaved: pushes after a collect come after what is already pending. */
    dw_outbox_push(&ob, msgs[0]);
    dw_outbox_push(&ob, msgs[1]);
    dw_outbox_collect(&ob, 100);
    dw_outbox_push(&ob, msgs[2]);
    pop_expect(&ob, msgs[0]);
    dw_outbox_collect(&ob, 100);
    dw_outbox_push(&ob, msgs[3]);
    pop_expect(&ob, msgs[1]);
    pop_expect(&ob, msgs[2]);
    assert_null(dw_outbox_pop(&ob)); /* msgs[3] not collected yet */
    assert_int_equal(dw_outbox_queued(&ob), 1);
    dw_outbox_collect(&ob, 100);
    pop_expect(&ob, msgs[3]);
    assert_true(dw_outbox_is_empty(&ob));
    assert_int_equal(dw_outbox_queued(&ob), 0);

    dw_outbox_destroy(&ob);
    unref_msgs(msgs, NMSG);
}

/* The flag itself, read without touching it (push would set it). */
static int scheduled(struct dw_outbox *ob)
{
    return atomic_load(&ob->_scheduled);
}

/* Pops and drops everything pending; returns how many. */
static unsigned pop_all(struct dw_outbox *ob)
{
    struct dw_msg *m;
    unsigned n = 0;

    while ((m = dw_outbox_pop(ob)) != NULL) {
        dw_msg_unref(m);
        n++;
    }
    return n;
}

static void test_scheduled_flag(void **state)
{
    struct dw_msg *msgs[4];
    struct dw_outbox ob;

    (void)state;
    make_msgs(msgs, 4, 0);
    dw_outbox_init(&ob);
    assert_int_equal(scheduled(&ob), 0);

    /* First push after init schedules; later ones do not, until an unschedule. */
    assert_true(dw_outbox_push(&ob, msgs[0]));
    assert_false(dw_outbox_push(&ob, msgs[1]));
    assert_false(dw_outbox_push(&ob, msgs[2]));
    assert_int_equal(scheduled(&ob), 1);

    /* Collecting and popping everything does not clear it: the owner may still be on the
     * ready queue (the WRITEABLE path collects without taking it off). */
    dw_outbox_collect(&ob, 100);
    assert_int_equal(pop_all(&ob), 3);
    assert_true(dw_outbox_is_empty(&ob));
    assert_int_equal(scheduled(&ob), 1);
    assert_false(dw_outbox_push(&ob, msgs[3]));

    /* The drain: unschedule, then collect. The next push schedules again. */
    dw_outbox_unschedule(&ob);
    assert_int_equal(scheduled(&ob), 0);
    dw_outbox_collect(&ob, 100);
    assert_int_equal(pop_all(&ob), 1);
    assert_int_equal(scheduled(&ob), 0);
    assert_true(dw_outbox_push(&ob, msgs[0]));
    assert_false(dw_outbox_push(&ob, msgs[1]));

    /* Unschedule clears it with nothing to collect too, and twice is the same as once. */
    dw_outbox_unschedule(&ob);
    dw_outbox_unschedule(&ob);
    assert_int_equal(scheduled(&ob), 0);
    assert_int_equal(dw_outbox_queued(&ob), 2); /* and it touches no message */
    assert_true(dw_outbox_push(&ob, msgs[2]));

    /* A collect that drops leaves it alone as well. */
    assert_int_equal(dw_outbox_collect(&ob, 0), 3);
    assert_int_equal(dw_outbox_queued(&ob), 0);
    assert_int_equal(scheduled(&ob), 1);
    assert_false(dw_outbox_push(&ob, msgs[3]));

    dw_outbox_destroy(&ob);
    unref_msgs(msgs, 4);
}

/* The split between the two calls, step by step as the I/O thread uses them. Fails if collect
 * clears the flag (a connection still on the ready queue would be pushed onto it again, see
 * test_hub.c test_writeable_collect_while_queued) or if unschedule does not (the owner would
 * never be scheduled again: a lost wake-up). */
static void test_only_unschedule_clears_flag(void **state)
{
    struct dw_msg *msgs[4];
    struct dw_outbox ob;

    (void)state;
    make_msgs(msgs, 4, 0);
    dw_outbox_init(&ob);

    /* A producer schedules the owner: it is on the ready queue now. */
    assert_true(dw_outbox_push(&ob, msgs[0]));

    /* WRITEABLE runs before the drain: collect alone, whether it moves messages, finds
     * nothing, or drops. The owner is still on the ready queue, so no push may report that it
     * must be put there. */
    assert_int_equal(dw_outbox_collect(&ob, 100), 0);
    assert_int_equal(scheduled(&ob), 1);
    assert_int_equal(pop_all(&ob), 1);
    assert_int_equal(dw_outbox_collect(&ob, 100), 0);
    assert_int_equal(scheduled(&ob), 1);
    assert_false(dw_outbox_push(&ob, msgs[1]));
    assert_int_equal(dw_outbox_collect(&ob, 0), 1);
    assert_int_equal(scheduled(&ob), 1);
    assert_false(dw_outbox_push(&ob, msgs[2]));
    assert_int_equal(scheduled(&ob), 1);

    /* The drain takes the owner off the ready queue: unschedule alone clears the flag, before
     * any collect, so a push in between schedules the owner again (no lost wake-up) even
     * though the collect that follows takes its message. */
    dw_outbox_unschedule(&ob);
    assert_int_equal(scheduled(&ob), 0);
    assert_true(dw_outbox_push(&ob, msgs[3]));
    assert_int_equal(dw_outbox_collect(&ob, 100), 0);
    assert_int_equal(pop_all(&ob), 2); /* msgs[2] and msgs[3] */
    assert_int_equal(scheduled(&ob), 1);

    /* That push's drain: unschedule, collect nothing; quiet until the next push. */
    dw_outbox_unschedule(&ob);
    assert_int_equal(dw_outbox_collect(&ob, 100), 0);
    assert_int_equal(pop_all(&ob), 0);
    assert_int_equal(scheduled(&ob), 0);
    assert_true(dw_outbox_push(&ob, msgs[0]));
    assert_int_equal(scheduled(&ob), 1);

    dw_outbox_destroy(&ob);
    unref_msgs(msgs, 4);
}

static void test_collect_drops_oldest(void **state)
{
    struct dw_msg *msgs[NMSG];
    struct dw_outbox ob;

    (void)state;
    make_msgs(msgs, NMSG, 0);
    dw_outbox_init(&ob);
    for (unsigned i = 0; i < 5; i++)
        dw_outbox_push(&ob, msgs[i]);

    /* At the bound: nothing dropped. */
    assert_int_equal(dw_outbox_collect(&ob, 5), 0);
    assert_int_equal(dw_outbox_queued(&ob), 5);

    /* Over it by two: the two oldest go, and their references are dropped. */
    assert_int_equal(dw_outbox_collect(&ob, 3), 2);
    assert_int_equal(dw_outbox_queued(&ob), 3);
    assert_int_equal(refs_of(msgs[0]), 1);
    assert_int_equal(refs_of(msgs[1]), 1);
    assert_int_equal(refs_of(msgs[2]), 2);

    /* New pushes count against the bound together with what is pending. */
    dw_outbox_push(&ob, msgs[5]);
    dw_outbox_push(&ob, msgs[6]);
    assert_int_equal(dw_outbox_queued(&ob), 5);
    assert_int_equal(dw_outbox_collect(&ob, 4), 1); /* msgs[2], the oldest pending */
    assert_int_equal(refs_of(msgs[2]), 1);
    assert_int_equal(dw_outbox_queued(&ob), 4);
    pop_expect(&ob, msgs[3]);
    pop_expect(&ob, msgs[4]);
    pop_expect(&ob, msgs[5]);
    pop_expect(&ob, msgs[6]);
    assert_true(dw_outbox_is_empty(&ob));
    assert_int_equal(dw_outbox_queued(&ob), 0);

    /* cap 0 drops everything that is not critical. */
    dw_outbox_push(&ob, msgs[7]);
    assert_int_equal(dw_outbox_collect(&ob, 0), 1);
    assert_null(dw_outbox_pop(&ob));
    assert_true(dw_outbox_is_empty(&ob));

    dw_outbox_destroy(&ob);
    unref_msgs(msgs, NMSG);
}

/* dw_outbox_trim: the byte bound, the two bounds together, bytes given back by pop and drop,
 * and "over" when critical messages alone pass a bound. */
static void test_trim_bytes_and_over(void **state)
{
    struct dw_msg *msgs[NMSG];
    struct dw_outbox ob;
    struct dw_outbox_trim r;
    size_t len;

    (void)state;
    /* N0 N1 C2 N3 N4 N5 N6 N7, every frame the same size ("i" is one digit). */
    make_msgs(msgs, NMSG, 0x04);
    len = dw_msg_frame_len(msgs[0]);
    dw_outbox_init(&ob);
    for (unsigned i = 0; i < NMSG; i++)
        dw_outbox_push(&ob, msgs[i]);
    dw_outbox_splice(&ob);
    assert_int_equal(dw_outbox_pending_bytes(&ob), NMSG * len);

    /* Within both bounds: nothing. */
    r = dw_outbox_trim(&ob, NMSG, NMSG * len);
    assert_int_equal(r.dropped, 0);
    assert_false(r.over);

    /* The byte bound alone: room for 6 frames, so the two oldest non-critical go. */
    r = dw_outbox_trim(&ob, 1000, 6 * len + len / 2);
    assert_int_equal(r.dropped, 2);
    assert_false(r.over);
    assert_int_equal(dw_outbox_queued(&ob), 6);
    assert_int_equal(dw_outbox_pending_bytes(&ob), 6 * len);
    assert_int_equal(refs_of(msgs[0]), 1);
    assert_int_equal(refs_of(msgs[1]), 1);

    assert_int_equal(r.by_type[DW_MSG_NOTIFICATION], 2); /* what was dropped, by type */
    assert_int_equal(r.by_type[DW_MSG_DEAL_ALERT], 0);

    /* Both bounds: the tighter one decides (5 messages; 4 frames of bytes). C2 stays. */
    r = dw_outbox_trim(&ob, 5, 4 * len);
    assert_int_equal(r.dropped, 2); /* N3 N4 */
    assert_false(r.over);
    assert_int_equal(dw_outbox_pending_bytes(&ob), 4 * len);

    /* What is left, counted by type without taking it (a connection's close). */
    unsigned long by_type[DW_MSG__COUNT] = {[DW_MSG_NOTIFICATION] = 10};
    assert_int_equal(dw_outbox_tally(&ob, by_type), 4);
    assert_int_equal(by_type[DW_MSG_NOTIFICATION], 14); /* added to what it held */
    assert_int_equal(dw_outbox_queued(&ob), 4);

    /* pop and drop give their bytes back. */
    pop_expect(&ob, msgs[2]);
    assert_int_equal(dw_outbox_pending_bytes(&ob), 3 * len);
    dw_outbox_drop(&ob); /* N5 */
    assert_int_equal(dw_outbox_pending_bytes(&ob), 2 * len);
    pop_expect(&ob, msgs[6]);
    pop_expect(&ob, msgs[7]);
    assert_int_equal(dw_outbox_pending_bytes(&ob), 0);
    assert_int_equal(dw_outbox_queued(&ob), 0);

    /* Critical messages alone past a bound: nothing can be dropped, and "over" says so. */
    dw_outbox_push(&ob, msgs[2]);
    dw_outbox_push(&ob, msgs[2]);
    dw_outbox_push(&ob, msgs[0]);
    dw_outbox_splice(&ob);
    r = dw_outbox_trim(&ob, 1, SIZE_MAX);
    assert_int_equal(r.dropped, 1); /* N0 */
    assert_true(r.over);
    assert_int_equal(dw_outbox_queued(&ob), 2);
    r = dw_outbox_trim(&ob, 100, len);
    assert_int_equal(r.dropped, 0);
    assert_true(r.over);

    dw_outbox_destroy(&ob);
    assert_int_equal(dw_outbox_pending_bytes(&ob), 0);
    unref_msgs(msgs, NMSG);
}

/* dw_outbox_drop_durable: only messages with a seq go, the others keep their order, and the
 * highest seq dropped is reported. */
static void test_drop_durable(void **state)
{
    struct dw_msg *msgs[NMSG];
    struct dw_outbox ob;
    int64_t high = 2;

    (void)state;
    make_msgs(msgs, NMSG, 0x16); /* 1, 2 and 4 critical */
    msgs[1]->seq = 7;
    msgs[4]->seq = 9;
    dw_outbox_init(&ob);
    for (unsigned i = 0; i < 6; i++)
        dw_outbox_push(&ob, msgs[i]);
    dw_outbox_splice(&ob);
    assert_int_equal(dw_outbox_drop_durable(&ob, &high), 2);
    assert_int_equal(high, 9);
    assert_int_equal(dw_outbox_queued(&ob), 4);
    pop_expect(&ob, msgs[0]);
    pop_expect(&ob, msgs[2]); /* critical without a seq: kept */
    pop_expect(&ob, msgs[3]);
    pop_expect(&ob, msgs[5]);
    assert_int_equal(dw_outbox_drop_durable(&ob, &high), 0);
    assert_int_equal(high, 9);
    dw_outbox_destroy(&ob);
    unref_msgs(msgs, NMSG);
}

static void test_collect_keeps_critical(void **state)
{
    struct dw_msg *msgs[NMSG];
    struct dw_outbox ob;

    (void)state;
    /* C0 N1 C2 N3 N4 C5 N6 N7 */
    make_msgs(msgs, NMSG, 0x01 | 0x04 | 0x20);
    dw_outbox_init(&ob);
    for (unsigned i = 0; i < NMSG; i++)
        dw_outbox_push(&ob, msgs[i]);

    /* Three over the bound: the three oldest non-critical (N1 N3 N4) go, C0 and C2 stay. */
    assert_int_equal(dw_outbox_collect(&ob, 5), 3);
    assert_int_equal(dw_outbox_queued(&ob), 5);
    pop_expect(&ob, msgs[0]);
    pop_expect(&ob, msgs[2]);
    pop_expect(&ob, msgs[5]);
    pop_expect(&ob, msgs[6]);
    pop_expect(&ob, msgs[7]);
    assert_null(dw_outbox_pop(&ob));

    /* Far over the bound: every non-critical goes, no critical one, and the count says so. */
    for (unsigned i = 0; i < NMSG; i++)
        dw_outbox_push(&ob, msgs[i]);
    assert_int_equal(dw_outbox_collect(&ob, 1), 5);
    assert_int_equal(dw_outbox_queued(&ob), 3); /* still over: critical ones are never dropped */
    pop_expect(&ob, msgs[0]);
    pop_expect(&ob, msgs[2]);
    pop_expect(&ob, msgs[5]);
    assert_int_equal(dw_outbox_queued(&ob), 0);

    /* Only critical messages over the bound: nothing to drop. */
    dw_outbox_push(&ob, msgs[0]);
    dw_outbox_push(&ob, msgs[2]);
    dw_outbox_push(&ob, msgs[5]);
    assert_int_equal(dw_outbox_collect(&ob, 0), 0);
    assert_int_equal(dw_outbox_queued(&ob), 3);
    pop_expect(&ob, msgs[0]);
    pop_expect(&ob, msgs[2]);
    pop_expect(&ob, msgs[5]);

    dw_outbox_destroy(&ob);
    unref_msgs(msgs, NMSG);
}

static void test_destroy_drops_references(void **state)
{
    struct dw_msg *msgs[NMSG];
    struct dw_outbox ob;

    (void)state;
    make_msgs(msgs, NMSG, 0x80);
    dw_outbox_init(&ob);
    /* Some pending (collected), some only pushed, one message queued twice. */
    for (unsigned i = 0; i < 4; i++)
        dw_outbox_push(&ob, msgs[i]);
    dw_outbox_collect(&ob, 100);
    for (unsigned i = 4; i < NMSG; i++)
        dw_outbox_push(&ob, msgs[i]);
    dw_outbox_push(&ob, msgs[7]);
    assert_int_equal(refs_of(msgs[7]), 3);
    assert_int_equal(dw_outbox_queued(&ob), NMSG + 1);

    dw_outbox_destroy(&ob);
    assert_int_equal(dw_outbox_queued(&ob), 0);
    for (unsigned i = 0; i < NMSG; i++)
        assert_int_equal(refs_of(msgs[i]), 1);
    unref_msgs(msgs, NMSG);
}

static void test_destroy_is_last_holder(void **state)
{
    struct dw_outbox ob;
    struct dw_msg *m = dw_msg_new_text(DW_MSG_DEAL_ALERT, 0, "{}", 2);

    (void)state;
    dw_outbox_init(&ob);
    dw_outbox_push(&ob, m);
    dw_outbox_push(&ob, m);
    dw_msg_unref(m); /* the producer's own ref: the outbox now owns the message */
    assert_int_equal(refs_of(m), 2);
    dw_outbox_destroy(&ob); /* frees it; asan reports a leak otherwise */
}

/* ------------------------------------------------------------------------------------------
 * Ready queue
 * ------------------------------------------------------------------------------------------ */

/* A fan-out block: nodes share one allocation and the block's one message reference; the
 * block (and its reference) goes when its last used node is released, popped or dropped
 * (ASan reports a leak or a use after free otherwise). */
static void test_block_nodes(void **state)
{
    struct dw_outbox a, b, c;
    struct dw_outbox_block *blk;
    struct dw_outbox_node *n;
    struct dw_msg *msg, *got;

    (void)state;
    make_msgs(&msg, 1, 0);
    dw_outbox_init(&a);
    dw_outbox_init(&b);
    dw_outbox_init(&c);
    blk = dw_outbox_block_new(4, msg);
    assert_int_equal(refs_of(msg), 2); /* ours + the block's */

    n = dw_outbox_block_node(blk);
    assert_non_null(n);
    assert_ptr_equal(n->msg, msg);
    assert_true(dw_outbox_push_node(&a, n));
    assert_true(dw_outbox_push_node(&b, dw_outbox_block_node(blk)));
    assert_true(dw_outbox_push_node(&c, dw_outbox_block_node(blk)));
    assert_int_equal(dw_outbox_queued(&a), 1);
    dw_outbox_block_finish(blk);       /* one of four unused */
    assert_int_equal(refs_of(msg), 2); /* the nodes share the block's reference */

    /* pop hands out a reference of the caller's own. */
    dw_outbox_collect(&a, 100);
    got = dw_outbox_pop(&a);
    assert_ptr_equal(got, msg);
    assert_int_equal(refs_of(msg), 3);
    dw_msg_unref(got);
    /* drop, after a peek: the write path's way. */
    dw_outbox_collect(&b, 100);
    assert_ptr_equal(dw_outbox_peek(&b), msg);
    dw_outbox_drop(&b);
    assert_int_equal(dw_outbox_queued(&b), 0);
    assert_int_equal(refs_of(msg), 2);
    dw_outbox_collect(&c, 100);
    dw_outbox_drop(&c); /* the last node: the block and its reference go here */
    assert_int_equal(refs_of(msg), 1);

    dw_outbox_destroy(&a);
    dw_outbox_destroy(&b);
    dw_outbox_destroy(&c);
    unref_msgs(&msg, 1);
}

/* A full block returns no node; a block with no node used is freed by finish; drop frees a
 * node of its own with its reference. */
static void test_block_full_and_unused(void **state)
{
    struct dw_outbox_block *blk;
    struct dw_msg *msg;
    struct dw_outbox ob;

    (void)state;
    make_msgs(&msg, 1, 0);
    dw_outbox_init(&ob);
    blk = dw_outbox_block_new(1, msg);
    assert_true(dw_outbox_push_node(&ob, dw_outbox_block_node(blk)));
    assert_null(dw_outbox_block_node(blk));
    dw_outbox_block_finish(blk);
    dw_outbox_destroy(&ob); /* releases the node, frees the block, drops its reference */
    assert_int_equal(refs_of(msg), 1);

    blk = dw_outbox_block_new(8, msg);
    dw_outbox_block_finish(blk); /* freed now */
    assert_int_equal(refs_of(msg), 1);

    dw_outbox_push(&ob, msg);
    assert_int_equal(refs_of(msg), 2);
    dw_outbox_collect(&ob, 100);
    dw_outbox_drop(&ob);
    assert_int_equal(refs_of(msg), 1);
    dw_outbox_destroy(&ob);
    unref_msgs(&msg, 1);
}

static void test_readyq_push_reports_empty(void **state)
{
    struct cds_wfcq_node nodes[3];
    struct dw_readyq_batch batch;
    struct dw_readyq q;

    (void)state;
    dw_readyq_init(&q);
    assert_true(dw_readyq_push(&q, &nodes[0]));  /* empty -> non-empty: wake */
    assert_false(dw_readyq_push(&q, &nodes[1])); /* already non-empty: no wake */
    assert_false(dw_readyq_push(&q, &nodes[2]));

    /* take_all leaves the queue empty: the next push reports it again, and goes to the queue,
     * not to the batch already taken. */
    dw_readyq_take_all(&q, &batch);
    assert_ptr_equal(dw_readyq_batch_next(&batch), &nodes[0]);
    assert_true(dw_readyq_push(&q, &nodes[0]));
    assert_ptr_equal(dw_readyq_batch_next(&batch), &nodes[1]);
    assert_ptr_equal(dw_readyq_batch_next(&batch), &nodes[2]);
    assert_null(dw_readyq_batch_next(&batch));

    dw_readyq_take_all(&q, &batch);
    assert_ptr_equal(dw_readyq_batch_next(&batch), &nodes[0]);
    assert_null(dw_readyq_batch_next(&batch));
}

static void test_readyq_batches_in_order(void **state)
{
    struct cds_wfcq_node nodes[5];
    struct dw_readyq_batch batch;
    struct dw_readyq q;

    (void)state;
    dw_readyq_init(&q);

    /* An empty queue gives an empty batch. */
    dw_readyq_take_all(&q, &batch);
    assert_null(dw_readyq_batch_next(&batch));

    for (unsigned i = 0; i < 5; i++)
        assert_int_equal(dw_readyq_push(&q, &nodes[i]), i == 0);
    dw_readyq_take_all(&q, &batch);
    for (unsigned i = 0; i < 3; i++)
        assert_ptr_equal(dw_readyq_batch_next(&batch), &nodes[i]);

    /* Nodes taken from the batch may be pushed again while the rest of the batch is walked;
     * they go to the queue, not to the batch. */
    assert_true(dw_readyq_push(&q, &nodes[0]));
    assert_false(dw_readyq_push(&q, &nodes[1]));
    assert_ptr_equal(dw_readyq_batch_next(&batch), &nodes[3]);
    assert_ptr_equal(dw_readyq_batch_next(&batch), &nodes[4]);
    assert_null(dw_readyq_batch_next(&batch));
    assert_null(dw_readyq_batch_next(&batch));

    dw_readyq_take_all(&q, &batch);
    assert_ptr_equal(dw_readyq_batch_next(&batch), &nodes[0]);
    assert_ptr_equal(dw_readyq_batch_next(&batch), &nodes[1]);
    assert_null(dw_readyq_batch_next(&batch));

    dw_readyq_take_all(&q, &batch);
    assert_null(dw_readyq_batch_next(&batch));
    assert_true(dw_readyq_push(&q, &nodes[4]));
    dw_readyq_take_all(&q, &batch);
    assert_ptr_equal(dw_readyq_batch_next(&batch), &nodes[4]);
    assert_null(dw_readyq_batch_next(&batch));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty),
        cmocka_unit_test(test_fifo),
        cmocka_unit_test(test_scheduled_flag),
        cmocka_unit_test(test_only_unschedule_clears_flag),
        cmocka_unit_test(test_collect_drops_oldest),
        cmocka_unit_test(test_collect_keeps_critical),
        cmocka_unit_test(test_trim_bytes_and_over),
        cmocka_unit_test(test_drop_durable),
        cmocka_unit_test(test_destroy_drops_references),
        cmocka_unit_test(test_destroy_is_last_holder),
        cmocka_unit_test(test_block_nodes),
        cmocka_unit_test(test_block_full_and_unused),
        cmocka_unit_test(test_readyq_push_reports_empty),
        cmocka_unit_test(test_readyq_batches_in_order),
    };

    return cmocka_run_group_tests(tests, group_setup, NULL);
}
