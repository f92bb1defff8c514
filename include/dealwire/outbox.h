/*
 * outbox — a connection's queue of messages to send: lock-free MPSC (liburcu wfcqueue).
 *
 * Synchronization:
 *   dw_outbox_push          any thread, concurrently with everything below (wait-free)
 *   dw_outbox_collect,
 *   dw_outbox_peek/pop      the consumer only (the I/O thread), never concurrently
 *   dw_outbox_queued        any thread (an atomic snapshot)
 *   dw_outbox_init/destroy  one thread, when nobody else can reach the outbox
 *
 * Producers push onto the shared queue. The consumer splices it into its private pending
 * queue (dw_outbox_collect), where it enforces the bound by dropping the oldest non-critical
 * messages, then pops messages to write them. A "scheduled" flag, set by the push that finds
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

#include <urcu/wfcqueue.h>

struct dw_msg;

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

/* thread: consumer, once the owner is off the ready queue. Clears the scheduled flag: the
 * next push schedules the owner again. Call dw_outbox_collect() after it. */
void dw_outbox_unschedule(struct dw_outbox *ob);

/* thread: consumer. Moves everything pushed so far to the pending queue, then drops the
 * oldest non-critical pending messages while more than cap are queued. Returns the number
 * dropped. Leaves the scheduled flag alone. */
unsigned long dw_outbox_collect(struct dw_outbox *ob, unsigned long cap);

/* thread: consumer. The oldest pending message, borrowed (valid until popped), or NULL. */
struct dw_msg *dw_outbox_peek(struct dw_outbox *ob);

/* thread: consumer. Removes the oldest pending message and returns it; the caller owns the
 * reference the queue held. NULL when nothing is pending. */
struct dw_msg *dw_outbox_pop(struct dw_outbox *ob);

/* thread: any. Messages queued (pushed and not yet popped or dropped). */
static inline unsigned long dw_outbox_queued(struct dw_outbox *ob)
{
    return atomic_load_explicit(&ob->_queued, memory_order_relaxed);
}

/* thread: consumer. Is anything pending or pushed? */
bool dw_outbox_is_empty(struct dw_outbox *ob);

#endif
