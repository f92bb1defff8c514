/*
 * outbox — a connection's queue of messages to send: lock-free MPSC (liburcu wfcqueue).
 *
 * Synchronization:
 *   dw_outbox_push          any thread, concurrently with everything below (wait-free)
 *   dw_outbox_collect,
 *   dw_outbox_splice/trim,
 *   dw_outbox_peek/pop      the consumer only (the I/O thread), never concurrently
 *   dw_outbox_pending_bytes the consumer only
 *   dw_outbox_queued        any thread (an atomic snapshot)
 *   dw_outbox_init/destroy  one thread, when nobody else can reach the outbox
 *
 * Producers push onto the shared queue. The consumer splices it into its private pending
 * queue (dw_outbox_splice), pops messages to write them, and enforces the bound, in messages
 * and in bytes, on what it could not write (dw_outbox_trim) by dropping the oldest
 * non-critical messages. A "scheduled" flag, set by the push that finds
 * it clear, tells the producer whether it must put the connection on the ready queue. Only
 * the consumer's ready-queue drain clears it (dw_outbox_unschedule), after taking the
 * connection off that queue and *before* collecting, so a push that the collect misses
 * always re-schedules (no lost wake-up) and a connection is never on the queue twice.
 */
#ifndef DEALWIRE_OUTBOX_H
#define DEALWIRE_OUTBOX_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <urcu/wfcqueue.h>

#include "dealwire/msg.h"

struct dw_msg;

/* A block of queue nodes for one fan-out (see dw_outbox_block_new): recipients take nodes
 * from it instead of allocating one each, and it is freed when its last node is released. */
struct dw_outbox_block;

/* One queued message. dw_outbox_push allocates one, holding its own reference on the
 * message, and frees it when it is popped; a fan-out takes them from a block
 * (dw_outbox_block_node), whose nodes share the block's one reference. */
struct dw_outbox_node {
    struct cds_wfcq_node _q;
    struct dw_msg *msg;
    struct dw_outbox_block *_block; /* NULL for a node of its own */
};

struct dw_outbox_block {
    _Atomic unsigned _pending; /* nodes not released + unused ones + 1 until finished */
    unsigned _used, _cap;      /* the producer's only */
    struct dw_msg *_msg;       /* every node's message; the block holds one reference */
    struct dw_outbox_node _nodes[];
};

struct dw_outbox {
    /* shared: producers enqueue, the consumer splices */
    struct __cds_wfcq_head _head;
    struct cds_wfcq_tail _tail;
    _Atomic unsigned long _queued; /* messages in both queues */
    _Atomic int _scheduled;        /* 1 while the owner is on (or going onto) a ready queue */
    /* consumer only */
    struct __cds_wfcq_head _phead;
    struct cds_wfcq_tail _ptail;
};

/* thread: any (storage not yet shared). Initializes an empty outbox in caller storage. */
void dw_outbox_init(struct dw_outbox *ob);

/* thread: any (no other user left). Drops every queued message. */
void dw_outbox_destroy(struct dw_outbox *ob);

/* thread: any. Queues msg and takes a new reference on it. Returns true if this push set the
 * scheduled flag, in which case the caller must put the owner on the ready queue. */
bool dw_outbox_push(struct dw_outbox *ob, struct dw_msg *msg);

/* thread: any (the producer). A block of cap nodes for msg, all unused; it takes one
 * reference on msg, dropped when the block is freed. Owned by the producer until
 * dw_outbox_block_finish(). One reference per block instead of one per node: the consumer
 * then releases a node with one atomic operation (the block's count), not two. */
struct dw_outbox_block *dw_outbox_block_new(unsigned cap, struct dw_msg *msg);

/* thread: the producer. The next unused node of b (for b's message), or NULL when b is full. */
struct dw_outbox_node *dw_outbox_block_node(struct dw_outbox_block *b);

/* thread: the producer, once it takes no more nodes from b. b (and its message reference) is
 * freed once every used node has been released by its consumer, or now when none was used. */
void dw_outbox_block_finish(struct dw_outbox_block *b);

/* thread: any. Queues node (from dw_outbox_block_node) on ob. Returns what dw_outbox_push
 * returns. */
bool dw_outbox_push_node(struct dw_outbox *ob, struct dw_outbox_node *node);

/* thread: consumer, once the owner is off the ready queue. Clears the scheduled flag: the
 * next push schedules the owner again. Call dw_outbox_collect() after it. */
void dw_outbox_unschedule(struct dw_outbox *ob);

/* thread: consumer. Moves everything pushed so far to the pending queue. Leaves the scheduled
 * flag alone. */
void dw_outbox_splice(struct dw_outbox *ob);

/* What dw_outbox_trim did. */
struct dw_outbox_trim {
    unsigned long dropped; /* non-critical messages dropped */
    bool over;             /* still over a bound: the critical messages alone pass it */
    unsigned long by_type[DW_MSG__COUNT]; /* dropped, by enum dw_msg_type (for /metrics) */
};

/* thread: consumer. Drops the oldest non-critical pending messages while more than max_msgs
 * messages are queued (pending and pushed: call it after dw_outbox_splice) or more than
 * max_bytes bytes are pending. Critical messages are never dropped. Bytes are counted by a
 * walk of the pending queue, not per push: trimming is the rare path (a full socket), and
 * the hot path keeps one counter per push. */
struct dw_outbox_trim dw_outbox_trim(struct dw_outbox *ob, unsigned long max_msgs,
                                     size_t max_bytes);

/* thread: consumer. Drops every pending message that has a seq (from the durable inbox, which
 * can send it again: a connection's replay does) and returns how many; *high is raised to the
 * highest seq dropped. */
unsigned long dw_outbox_drop_durable(struct dw_outbox *ob, int64_t *high);

/* thread: consumer. dw_outbox_splice, then dw_outbox_trim to cap messages (no byte bound).
 * Returns the number dropped. */
unsigned long dw_outbox_collect(struct dw_outbox *ob, unsigned long cap);

/* thread: consumer. dw_outbox_splice, then counts the pending messages into by_type (adds to
 * it, by enum dw_msg_type) and returns how many there are: what a closed connection will not
 * deliver. A walk: for the close, not the write path. */
unsigned long dw_outbox_tally(struct dw_outbox *ob, unsigned long by_type[DW_MSG__COUNT]);

/* thread: consumer. The oldest pending message, borrowed (valid until popped or dropped), or
 * NULL. */
struct dw_msg *dw_outbox_peek(struct dw_outbox *ob);

/* thread: consumer. Removes the oldest pending message (there must be one) and gives up the
 * queue's hold on it: what the write path calls once it is done with what it peeked. Cheaper
 * than dw_outbox_pop + dw_msg_unref for a fan-out's node. */
void dw_outbox_drop(struct dw_outbox *ob);

/* thread: consumer. Removes the oldest pending message and returns it; the caller owns the
 * reference the queue held. NULL when nothing is pending. */
struct dw_msg *dw_outbox_pop(struct dw_outbox *ob);

/* thread: any. Messages queued (pushed and not yet popped or dropped). */
static inline unsigned long dw_outbox_queued(struct dw_outbox *ob)
{
    return atomic_load_explicit(&ob->_queued, memory_order_relaxed);
}

/* thread: consumer. Bytes of the pending frames (a walk of the pending queue: call it after
 * dw_outbox_splice to count everything pushed so far). */
size_t dw_outbox_pending_bytes(struct dw_outbox *ob);

/* thread: consumer. Is anything pending or pushed? */
bool dw_outbox_is_empty(struct dw_outbox *ob);

#endif
