/*
 * readyq — the I/O thread's queue of connections that have something new in their outbox:
 * lock-free MPSC (liburcu wfcqueue), drained by splicing the whole queue at once.
 *
 * Synchronization:
 *   dw_readyq_push       any thread, concurrently (wait-free)
 *   dw_readyq_take_all   the consumer only (the I/O thread)
 *
 * A node is pushed only by the thread that won its owner's "scheduled" flag (see outbox.h),
 * so a node is never on the queue twice. push reports the empty → non-empty transition: only
 * then must the pusher wake the consumer.
 */
#ifndef DEALWIRE_READYQ_H
#define DEALWIRE_READYQ_H

#include <stdbool.h>

#include <urcu/wfcqueue.h>

struct dw_readyq {
    struct __cds_wfcq_head _head;
    struct cds_wfcq_tail _tail;
};

/* A detached batch, owned by the consumer. */
struct dw_readyq_batch {
    struct __cds_wfcq_head _head;
    struct cds_wfcq_tail _tail;
};

/* thread: any (storage not yet shared). */
void dw_readyq_init(struct dw_readyq *q);

/* thread: any. Enqueues node (which must not be on any queue). Returns true if the queue was
 * empty, in which case the caller must wake the consumer. */
bool dw_readyq_push(struct dw_readyq *q, struct cds_wfcq_node *node);

/* thread: consumer. Moves everything queued so far into batch (initialized here). */
void dw_readyq_take_all(struct dw_readyq *q, struct dw_readyq_batch *batch);

/* thread: consumer. An empty batch, for dw_readyq_take_more. */
void dw_readyq_batch_init(struct dw_readyq_batch *batch);

/* thread: consumer. Appends everything queued so far to batch, behind what it holds. */
void dw_readyq_take_more(struct dw_readyq *q, struct dw_readyq_batch *batch);

/* thread: consumer. Next node of batch, or NULL. The node may be pushed again as soon as its
 * owner's scheduled flag is cleared. */
struct cds_wfcq_node *dw_readyq_batch_next(struct dw_readyq_batch *batch);

#endif
