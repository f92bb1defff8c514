/*
 * hub_int.h — the hub's objects (users, channels, memberships) and the functions only the
 * I/O thread calls (it is the only writer of the maps). The connection itself is conn_int.h's.
 * Shared by hub.c, conn.c and server.c; not part of the public API.
 */
#ifndef DEALWIRE_HUB_INT_H
#define DEALWIRE_HUB_INT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <urcu/rculfhash.h>

#include "dealwire/hub.h"
#include "dealwire/rcu.h"
#include "dealwire/readyq.h"
#include "conn_int.h"
#include "rlist.h"

struct dw_user {
    struct cds_lfht_node node; /* in hub->users, keyed by id */
    struct dw_rlist conns;     /* dw_conn.user_link */
    _Atomic unsigned nconns;   /* written by io only; read by sends through the bus */
    struct rcu_head rcu;
    char id[];
};

struct dw_channel {
    struct cds_lfht_node node; /* in hub->channels, keyed by name */
    struct dw_rlist members;   /* dw_membership.chan_link */
    _Atomic unsigned nmembers; /* written by io only; read by sends through the bus */
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

/* thread: any; rcu: registered. dw_hub_send_user/_channel/_all for this node's connections
 * only: what the bus delivers from the other nodes (bus.c). Return the count. */
size_t dw__hub_deliver_user(struct dw_hub *hub, const char *user_id, struct dw_msg *msg);
size_t dw__hub_deliver_channel(struct dw_hub *hub, const char *channel, struct dw_msg *msg);
size_t dw__hub_deliver_all(struct dw_hub *hub, struct dw_msg *msg);

/* thread: io. Calls fn(user, arg) for each user, in no particular order, until it returns
 * false. */
void dw__hub_for_each_user(struct dw_hub *hub, bool (*fn)(struct dw_user *user, void *arg),
                           void *arg);

/* thread: io. Detaches the ready queue into batch. */
void dw__hub_take_ready(struct dw_hub *hub, struct dw_readyq_batch *batch);

/* thread: io. Moves the ready queue onto the tail of batch (the drain's, which may still hold
 * connections from its previous slice). */
void dw__hub_take_more(struct dw_hub *hub, struct dw_readyq_batch *batch);

#endif
