/*
 * rlist.h — a circular doubly linked list with RCU readers and one writer (the I/O thread),
 * for a user's connections, a channel's members and the list of every connection.
 */
#ifndef DEALWIRE_RLIST_H
#define DEALWIRE_RLIST_H

#include <stdatomic.h>

#include <urcu/compiler.h> /* caa_container_of */

/*
 * The forward links are C11 atomics (release on publish, acquire on read), which both orders
 * the readers and lets TSan see the ordering; liburcu's rculist uses volatile accesses TSan
 * cannot see. Removed entries keep their next link for readers still on them; they are freed
 * only after a grace period.
 */
struct dw_rlist {
    _Atomic(struct dw_rlist *) next;
    struct dw_rlist *prev; /* writer only */
};

static inline void dw_rlist_init(struct dw_rlist *head)
{
    atomic_init(&head->next, head);
    head->prev = head;
}

/* thread: writer. Appends e at the tail of head. */
static inline void dw_rlist_add_tail(struct dw_rlist *head, struct dw_rlist *e)
{
    struct dw_rlist *last = head->prev;

    atomic_init(&e->next, head);
    e->prev = last;
    /* release: readers that see e also see it initialized. */
    atomic_store_explicit(&last->next, e, memory_order_release);
    head->prev = e;
}

/* thread: writer. Unlinks e; readers already on e can still step to its successor. */
static inline void dw_rlist_del(struct dw_rlist *e)
{
    struct dw_rlist *next = atomic_load_explicit(&e->next, memory_order_relaxed);

    atomic_store_explicit(&e->prev->next, next, memory_order_release);
    next->prev = e->prev;
}

static inline struct dw_rlist *dw_rlist_first(struct dw_rlist *head)
{
    return atomic_load_explicit(&head->next, memory_order_acquire);
}

static inline struct dw_rlist *dw_rlist_next(struct dw_rlist *e)
{
    return atomic_load_explicit(&e->next, memory_order_acquire);
}

/* Iterate over the entries of type `type` linked by `member`; rcu: reader (or the writer). */
#define dw_rlist_for_each_entry(pos, head, type, member)                                           \
    for (struct dw_rlist *pos##_l = dw_rlist_first(head);                                          \
         pos##_l != (head) && ((pos) = caa_container_of(pos##_l, type, member), 1);                \
         pos##_l = dw_rlist_next(pos##_l))

#endif
