/*
 * wake — how a producer thread wakes the I/O thread: once per batch of work, whatever the
 * work queued (messages on the hub's ready queue, answers on the server's done queue).
 *
 * The I/O thread owns one struct dw_wake (the server's: lws_cancel_service()); the hub and
 * the HTTP layer borrow it. A thread that calls dw_wake() between dw_wake_batch_begin() and
 * dw_wake_batch_end() defers the wake-up to the end of its batch, so a publish request (its
 * sends and its answer) or a monitor round costs one wake-up, not one per message.
 *
 * Synchronization: the batch is thread-local; dw_wake() may be called from any thread.
 */
#ifndef DEALWIRE_WAKE_H
#define DEALWIRE_WAKE_H

/* Wakes the I/O thread; called from any thread. */
typedef void dw_wake_fn(void *arg);

struct dw_wake {
    dw_wake_fn *fn;
    void *arg;
};

/* thread: any. Wakes w's thread now, or at the end of this thread's batch when it is in one.
 * w is borrowed and must live until then. */
void dw_wake(const struct dw_wake *w);

/* thread: any. Between begin and end, this thread's dw_wake() calls are one wake-up, made
 * at the outermost end. Nests. */
void dw_wake_batch_begin(void);
void dw_wake_batch_end(void);

#endif
