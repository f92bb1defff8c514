/*
 * outbox — DESIGN: one MPSC queue per connection. Producers (workers, and the I/O thread for
 * its own replies) enqueue wait-free onto the shared wfcqueue; the I/O thread alone splices it
 * into a private pending queue, trims that to the bound, and pops from it. The only shared
 * words are the wfcqueue tail, the queued counter and the scheduled flag.
 *
 * Memory per queued message: one 24-byte node (the message itself is shared). A fan-out
 * takes its nodes from blocks, so a recipient costs no allocation: a block is freed when the
 * last of its nodes is released, so a slow consumer keeps one block alive per message it
 * holds, not the whole fan-out.
 */
#define DW_LOG_MODULE "outbox"
#include "dealwire/outbox.h"
#include "dealwire/mem.h"
#include "dealwire/msg.h"
#include "dealwire/thread.h"

#include <stdint.h>
#include <stdlib.h>

void dw_outbox_init(struct dw_outbox *ob)
{
    __cds_wfcq_init(&ob->_head, &ob->_tail);
    __cds_wfcq_init(&ob->_phead, &ob->_ptail);
    atomic_init(&ob->_queued, 0);
    atomic_init(&ob->_scheduled, 0);
}

static void block_release(struct dw_outbox_block *b, unsigned n)
{
    /* acq_rel: whoever frees the block sees every other release as done. */
    if (atomic_fetch_sub_explicit(&b->_pending, n, memory_order_acq_rel) == n) {
        dw_msg_unref(b->_msg);
        free(b);
    }
}

/* Releases a node taken off the queue, with its hold on its message: its own memory and
 * reference, or its share of its block. */
static void discard(struct dw_outbox_node *n)
{
    struct dw_msg *m = n->msg;

    if (n->_block) {
        block_release(n->_block, 1);
        return;
    }
    free(n);
    dw_msg_unref(m);
}

struct dw_outbox_block *dw_outbox_block_new(unsigned cap, struct dw_msg *msg)
{
    struct dw_outbox_block *b = dw_xmalloc(sizeof(*b) + cap * sizeof(b->_nodes[0]));

    /* One per node, plus the producer's own until it finishes: without it the consumers could
     * release every node of a full block and free it while the producer still looks at it. */
    atomic_init(&b->_pending, cap + 1);
    b->_used = 0;
    b->_cap = cap;
    b->_msg = msg;
    dw_msg_ref(msg);
    return b;
}

struct dw_outbox_node *dw_outbox_block_node(struct dw_outbox_block *b)
{
    struct dw_outbox_node *n;

    if (b->_used == b->_cap)
        return NULL;
    n = &b->_nodes[b->_used++];
    n->msg = b->_msg;
    n->_block = b;
    return n;
}

void dw_outbox_block_finish(struct dw_outbox_block *b)
{
    block_release(b, b->_cap - b->_used + 1);
}

static struct dw_outbox_node *take_pending(struct dw_outbox *ob)
{
    struct cds_wfcq_node *qn = __cds_wfcq_dequeue_blocking(&ob->_phead, &ob->_ptail);

    if (!qn)
        return NULL;
    DW_TSAN_ACQUIRE(qn);
    return caa_container_of(qn, struct dw_outbox_node, _q);
}

void dw_outbox_destroy(struct dw_outbox *ob)
{
    struct dw_outbox_node *n;

    __cds_wfcq_splice_blocking(&ob->_phead, &ob->_ptail, &ob->_head, &ob->_tail);
    while ((n = take_pending(ob)) != NULL)
        discard(n);
    atomic_store_explicit(&ob->_queued, 0, memory_order_relaxed);
}

bool dw_outbox_push_node(struct dw_outbox *ob, struct dw_outbox_node *n)
{
    cds_wfcq_node_init(&n->_q);
    /* Counted before it is visible, so the consumer never decrements below zero. */
    atomic_fetch_add_explicit(&ob->_queued, 1, memory_order_relaxed);
    DW_TSAN_RELEASE(&n->_q);
    cds_wfcq_enqueue(&ob->_head, &ob->_tail, &n->_q);
    /* seq_cst after the enqueue: either the consumer's next collect sees this node, or its
     * unschedule came first and this exchange reads 0, so the caller schedules the owner
     * again. */
    return atomic_exchange_explicit(&ob->_scheduled, 1, memory_order_seq_cst) == 0;
}

bool dw_outbox_push(struct dw_outbox *ob, struct dw_msg *msg)
{
    struct dw_outbox_node *n = dw_xmalloc(sizeof(*n));

    n->msg = msg;
    n->_block = NULL;
    dw_msg_ref(msg);
    return dw_outbox_push_node(ob, n);
}

void dw_outbox_unschedule(struct dw_outbox *ob)
{
    /* Clear, then (in dw_outbox_collect) splice: the other half of the pairing described in
     * dw_outbox_push. */
    atomic_store_explicit(&ob->_scheduled, 0, memory_order_seq_cst);
    atomic_thread_fence(memory_order_seq_cst);
}

size_t dw_outbox_pending_bytes(struct dw_outbox *ob)
{
    struct cds_wfcq_node *qn;
    size_t bytes = 0;

    __cds_wfcq_for_each_blocking(&ob->_phead, &ob->_ptail, qn)
    {
        DW_TSAN_ACQUIRE(qn);
        bytes += dw_msg_frame_len(caa_container_of(qn, struct dw_outbox_node, _q)->msg);
    }
    return bytes;
}

void dw_outbox_splice(struct dw_outbox *ob)
{
    __cds_wfcq_splice_blocking(&ob->_phead, &ob->_ptail, &ob->_head, &ob->_tail);
}

/* Rebuilds the pending queue without the messages drop(msg, arg) picks, oldest first, and
 * returns how many it dropped. */
static unsigned long filter_pending(struct dw_outbox *ob,
                                    bool (*drop)(const struct dw_msg *m, void *arg), void *arg,
                                    unsigned long *by_type)
{
    struct __cds_wfcq_head keep_head;
    struct cds_wfcq_tail keep_tail;
    struct dw_outbox_node *n;
    unsigned long dropped = 0;

    __cds_wfcq_init(&keep_head, &keep_tail);
    while ((n = take_pending(ob)) != NULL) {
        if (drop(n->msg, arg)) {
            if (by_type)
                by_type[n->msg->type]++;
            discard(n);
            dropped++;
            continue;
        }
        cds_wfcq_node_init(&n->_q);
        cds_wfcq_enqueue(&keep_head, &keep_tail, &n->_q);
    }
    __cds_wfcq_splice_blocking(&ob->_phead, &ob->_ptail, &keep_head, &keep_tail);
    atomic_fetch_sub_explicit(&ob->_queued, dropped, memory_order_relaxed);
    return dropped;
}

struct over {
    unsigned long queued, max_msgs;
    size_t bytes, max_bytes;
};

/* The oldest non-critical messages while over a bound. */
static bool drop_while_over(const struct dw_msg *m, void *arg)
{
    struct over *o = arg;

    if (!(o->queued > o->max_msgs || o->bytes > o->max_bytes) || dw_msg_is_critical(m))
        return false;
    o->queued--;
    o->bytes -= dw_msg_frame_len(m);
    return true;
}

struct dw_outbox_trim dw_outbox_trim(struct dw_outbox *ob, unsigned long max_msgs, size_t max_bytes)
{
    struct dw_outbox_trim r = {0};
    struct over o = {
        .queued = atomic_load_explicit(&ob->_queued, memory_order_relaxed),
        .max_msgs = max_msgs,
        .bytes = dw_outbox_pending_bytes(ob),
        .max_bytes = max_bytes,
    };

    if (o.queued <= max_msgs && o.bytes <= max_bytes)
        return r;
    /* Over a bound: drop the oldest non-critical messages. The counts include what was pushed
     * since the splice; those messages are not looked at, and only make the bound tighter
     * until the next trim. */
    r.dropped = filter_pending(ob, drop_while_over, &o, r.by_type);
    r.over = o.queued > max_msgs || o.bytes > max_bytes;
    return r;
}

/* Messages from the durable inbox; *arg is raised to the highest seq dropped. */
static bool drop_durable(const struct dw_msg *m, void *arg)
{
    int64_t *high = arg;

    if (m->seq == 0)
        return false;
    if (m->seq > *high)
        *high = m->seq;
    return true;
}

unsigned long dw_outbox_drop_durable(struct dw_outbox *ob, int64_t *high)
{
    return filter_pending(ob, drop_durable, high, NULL);
}

unsigned long dw_outbox_collect(struct dw_outbox *ob, unsigned long cap)
{
    dw_outbox_splice(ob);
    return dw_outbox_trim(ob, cap, SIZE_MAX).dropped;
}

unsigned long dw_outbox_tally(struct dw_outbox *ob, unsigned long by_type[DW_MSG__COUNT])
{
    struct cds_wfcq_node *qn;
    unsigned long n = 0;

    dw_outbox_splice(ob);
    __cds_wfcq_for_each_blocking(&ob->_phead, &ob->_ptail, qn)
    {
        DW_TSAN_ACQUIRE(qn);
        by_type[caa_container_of(qn, struct dw_outbox_node, _q)->msg->type]++;
        n++;
    }
    return n;
}

struct dw_msg *dw_outbox_peek(struct dw_outbox *ob)
{
    struct cds_wfcq_node *qn = __cds_wfcq_first_blocking(&ob->_phead, &ob->_ptail);

    if (!qn)
        return NULL;
    DW_TSAN_ACQUIRE(qn);
    return caa_container_of(qn, struct dw_outbox_node, _q)->msg;
}

struct dw_msg *dw_outbox_pop(struct dw_outbox *ob)
{
    struct dw_outbox_node *n = take_pending(ob);
    struct dw_msg *msg;

    if (!n)
        return NULL;
    msg = n->msg;
    if (n->_block) {
        /* The caller gets a reference of its own; the block keeps its one. */
        dw_msg_ref(msg);
        block_release(n->_block, 1);
    } else {
        free(n);
    }
    atomic_fetch_sub_explicit(&ob->_queued, 1, memory_order_relaxed);
    return msg;
}

void dw_outbox_drop(struct dw_outbox *ob)
{
    struct dw_outbox_node *n = take_pending(ob);

    discard(n);
    atomic_fetch_sub_explicit(&ob->_queued, 1, memory_order_relaxed);
}

bool dw_outbox_is_empty(struct dw_outbox *ob)
{
    return cds_wfcq_empty(&ob->_phead, &ob->_ptail) && cds_wfcq_empty(&ob->_head, &ob->_tail);
}
