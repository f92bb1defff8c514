/*
 * hub_int.h — the hub's objects and the functions only the I/O thread calls (it is the only
 * writer of the maps). Shared by hub.c, conn.c and server.c; not part of the public API.
 *
 * Lifetime of a connection (two-phase close, as with libuv's uv_close):
 *   dw__hub_conn_new     refs = 1 (the hub's reference)
 *   dw__hub_add          published in the maps; producers may now find it
 *   dw__hub_remove       marked closed and unlinked; call_rcu drops the hub's reference after
 *                        a grace period, so a producer that found it may still push to it
 *   ready queue          holds its own reference while the connection is queued there
 *   last unref           drops whatever is still queued and frees it (any thread)
 */
#ifndef DEALWIRE_HUB_INT_H
#define DEALWIRE_HUB_INT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <urcu/rculfhash.h>

#include "dealwire/hub.h"
#include "dealwire/outbox.h"
#include "dealwire/proto.h" /* DW_CHANNEL_MAX */
#include "dealwire/rcu.h"
#include "dealwire/readyq.h"

struct lws;

/* ------------------------------------------------------------------------------------------
 * rlist: a circular doubly linked list with RCU readers and one writer (the I/O thread).
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

/* ------------------------------------------------------------------------------------------ */

struct dw_user {
    struct cds_lfht_node node; /* in hub->users, keyed by id */
    struct dw_rlist conns;     /* dw_conn.user_link */
    unsigned nconns;           /* io only */
    struct rcu_head rcu;
    char id[];
};

struct dw_channel {
    struct cds_lfht_node node; /* in hub->channels, keyed by name */
    struct dw_rlist members;   /* dw_membership.chan_link */
    unsigned nmembers;         /* io only */
    uint64_t seen;             /* io only: the stats walk that last listed it (stats.c) */
    struct rcu_head rcu;
    char name[];
};

struct dw_membership {
    struct dw_rlist chan_link;  /* in channel->members (RCU readers) */
    struct dw_membership *next; /* in conn->subs, io only */
    struct dw_conn *conn;
    struct dw_channel *chan;
    struct rcu_head rcu;
};

/* Per-connection protocol state kept by the I/O thread. */
struct dw_conn_io {
    struct lws *wsi;           /* NULL once lws closed it */
    int64_t connected_at;      /* realtime ns */
    int64_t last_activity;     /* monotonic ns: last frame or pong from the client */
    int64_t last_activity_rt;  /* realtime ns, for the stats */
    int64_t last_heartbeat_rt; /* realtime ns of the last ping or pong from the client */
    int64_t ping_sent_at;      /* monotonic ns of our last protocol ping, 0 when none */
    uint64_t messages_sent;
    uint64_t messages_failed;
    uint64_t messages_dropped;
    unsigned strikes;    /* overflows without write progress in between (see conn.c) */
    int64_t last_strike; /* monotonic ns of the last one */
    unsigned nsubs;
    struct dw_membership *subs;
    char *rx; /* a fragmented message being reassembled */
    size_t rx_len;
    bool rx_binary;
    bool want_ping;   /* send a protocol ping on the next WRITEABLE */
    bool pong_due;    /* our ping is unanswered: its pong is not charged (rate limit) */
    bool peer_closed; /* the client sent a close frame: lws answers it, we write no more */
    /* Closing: with close_code once flush_left more frames are written (close_flush), or at
     * once dropping what is queued. */
    bool closing;
    bool close_flush;
    /* close_with or hang_up ran: lws finishes the connection (a close frame, or a kill on its
     * next pass); nothing more from us, no second close above all (conn.c). */
    bool let_go;
    unsigned short close_code;
    const char *close_reason; /* a static string */
    unsigned long flush_left;
    /* Security (conn.c): the token's end, the private channels it grants, the rate limit. */
    int64_t token_end; /* realtime s when the connection is closed (exp + leeway), 0: none */
    unsigned ngrants;
    char (*grants)[DW_CHANNEL_MAX + 1]; /* the token's "channels" claim */
    double tokens;                      /* rate limit bucket: messages the client may send */
    int64_t refilled_at;                /* monotonic ns of the last refill */
    unsigned flood;                     /* messages refused since the last one accepted */
};

struct dw_conn {
    /* Shared with producers. */
    struct dw_outbox outbox;
    struct cds_wfcq_node ready_node;
    _Atomic unsigned refs;
    _Atomic int closed;
    uint64_t id;
    struct dw_user *user;
    struct cds_lfht_node id_node; /* in hub->conns */
    struct dw_rlist user_link;
    struct dw_rlist all_link;
    struct rcu_head rcu;
    /* I/O thread only. */
    struct dw_conn_io io;
};

/* thread: io. A new connection, not yet in the maps. Returns it with one reference, the
 * hub's. */
struct dw_conn *dw__hub_conn_new(struct dw_hub *hub);

/* thread: io. Publishes conn in the maps as a connection of user_id (validated by the
 * caller; borrowed for the duration of the call). */
void dw__hub_add(struct dw_hub *hub, struct dw_conn *conn, const char *user_id);

/* thread: io, outside a read-side section. Seals the hub for the shutdown: once it returns,
 * every send that counted a recipient has queued its message, and every later send reaches no
 * one, so what the connections' outboxes hold is final. */
void dw__hub_seal(struct dw_hub *hub);

/* thread: io. Marks conn closed, unlinks it from every map and channel, and drops the hub's
 * reference after a grace period. conn must not be used by the caller afterwards except
 * through a reference of its own. */
void dw__hub_remove(struct dw_hub *hub, struct dw_conn *conn);

/* thread: any. Takes a reference on a connection the caller already holds one on (or found
 * under the read lock). */
void dw__conn_ref(struct dw_conn *conn);

/* thread: any. Drops a reference; the last frees conn and what is still queued on it. */
void dw__conn_unref(struct dw_conn *conn);

/* thread: io. Adds conn to channel. Returns 0 when added, 1 when it was already a member,
 * -E2BIG past max_subs channels. */
int dw__hub_subscribe(struct dw_hub *hub, struct dw_conn *conn, const char *channel,
                      unsigned max_subs);

/* thread: io. Removes conn from channel. Returns 0, or -ENOENT when it was not a member. */
int dw__hub_unsubscribe(struct dw_hub *hub, struct dw_conn *conn, const char *channel);

/* thread: io; rcu: reader. The user named id, or NULL. Borrowed until the read lock ends. */
struct dw_user *dw__hub_find_user(struct dw_hub *hub, const char *id);

/* thread: any; rcu: reader. The connection with id, or NULL; borrowed until the read lock
 * ends, and possibly already closed. */
struct dw_conn *dw__hub_find_conn(struct dw_hub *hub, uint64_t id);

/* thread: io. The list of every connection (dw_conn.all_link), for stats and sweeps. */
struct dw_rlist *dw__hub_all(struct dw_hub *hub);

/* thread: io. Calls fn(user, arg) for each user, in no particular order, until it returns
 * false. */
void dw__hub_for_each_user(struct dw_hub *hub, bool (*fn)(struct dw_user *user, void *arg),
                           void *arg);

/* thread: io. Detaches the ready queue into batch. */
void dw__hub_take_ready(struct dw_hub *hub, struct dw_readyq_batch *batch);

#endif
