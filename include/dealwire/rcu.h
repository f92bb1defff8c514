/*
 * rcu — dealwire's use of liburcu's memb flavour (memory barriers, no signals), in one place.
 *
 * Every thread that reads the hub's RCU maps calls dw_rcu_register() at start and
 * dw_rcu_unregister() before it exits. In TSan builds, read-side unlocks and grace-period
 * callbacks are also told to TSan (which cannot see liburcu's asm barriers): each unlock
 * releases a shared sync address and each deferred free acquires it, which is what a grace
 * period guarantees.
 */
#ifndef DEALWIRE_RCU_H
#define DEALWIRE_RCU_H

#include <urcu/urcu-memb.h>

#include "dealwire/thread.h"

/* Address TSan uses to model grace periods (see the top of this file). */
extern char dw__rcu_tsan_sync;

/* thread: any. Registers the calling thread as an RCU reader. */
static inline void dw_rcu_register(void)
{
    urcu_memb_register_thread();
}

/* thread: any (registered). Unregisters the calling thread; it holds no read lock. */
static inline void dw_rcu_unregister(void)
{
    urcu_memb_unregister_thread();
}

/* thread: any (registered). Enters a read-side critical section (nests). */
static inline void dw_rcu_read_lock(void)
{
    urcu_memb_read_lock();
}

/* thread: any (registered). Leaves a read-side critical section. */
static inline void dw_rcu_read_unlock(void)
{
    DW_TSAN_RELEASE(&dw__rcu_tsan_sync);
    urcu_memb_read_unlock();
}

/* thread: any (registered). Runs fn(head) on liburcu's call_rcu thread after a grace period.
 * fn must begin with DW_RCU_CALLBACK_ENTER(). */
static inline void dw_call_rcu(struct rcu_head *head, void (*fn)(struct rcu_head *))
{
    urcu_memb_call_rcu(head, fn);
}

/* First statement of every dw_call_rcu callback: what the grace period orders, told to TSan. */
#define DW_RCU_CALLBACK_ENTER() DW_TSAN_ACQUIRE(&dw__rcu_tsan_sync)

/* thread: any (registered, outside a read-side section). Waits until every read-side
 * section that had begun when it was called has ended. */
static inline void dw_rcu_synchronize(void)
{
    urcu_memb_synchronize_rcu();
    DW_TSAN_ACQUIRE(&dw__rcu_tsan_sync);
}

/* thread: any (registered, outside a read-side section). Waits until every callback queued
 * with dw_call_rcu() so far has run. */
static inline void dw_rcu_barrier(void)
{
    urcu_memb_barrier();
}

#endif
