/*
 * wake — DESIGN: the batch is a depth and the wake-up it owes, both thread-local, so nothing
 * is shared but the wake function itself (lws_cancel_service(), which lws makes safe from any
 * thread). A batch owes at most one wake-up per I/O thread; there is one I/O thread, so a
 * second, different waker in one batch (which the daemon never has) is woken at once rather
 * than lost.
 */
#include "dealwire/wake.h"

#include <assert.h>
#include <stddef.h>

static _Thread_local unsigned depth;
static _Thread_local const struct dw_wake *owed;

void dw_wake(const struct dw_wake *w)
{
    if (depth == 0) {
        w->fn(w->arg);
        return;
    }
    if (owed && owed != w)
        owed->fn(owed->arg);
    owed = w;
}

void dw_wake_batch_begin(void)
{
    depth++;
}

void dw_wake_batch_end(void)
{
    const struct dw_wake *w = owed;

    assert(depth > 0);
    if (--depth > 0 || !w)
        return;
    owed = NULL;
    w->fn(w->arg);
}
