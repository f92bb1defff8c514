/*
 * hub — who is connected, and the delivery of messages to them.
 *
 * Three RCU-protected maps (liburcu cds_lfht and RCU lists): connection id → connection,
 * user id → that user's connections, channel → its members; plus the list of every
 * connection for broadcasts. Only the I/O thread changes the maps (see hub_int.h); any
 * registered thread delivers through them with the functions below, which never block, take
 * no lock and never touch lws: they push onto connection outboxes and the ready queue, and
 * wake the I/O thread once per batch.
 *
 * The flow of one delivery (docs/architecture.md, "The path of a published message"):
 *   m = dw_msg_new_json(...)            refcount 1, the producer's
 *   dw_hub_send_user(hub, "alice", m)   one ref per recipient, one wake
 *   dw_msg_unref(m)                     the producer's own ref
 */
#ifndef DEALWIRE_HUB_H
#define DEALWIRE_HUB_H

#include <stdbool.h>
#include <stdint.h>
#include <stddef.h>

struct dw_bus;
struct dw_hub;
struct dw_msg;
struct dw_wake;

/* What the producers published, as reported by /api/websocket/stats (what the I/O thread
 * did with it, the server counts: server_int.h). */
struct dw_hub_published {
    uint64_t broadcasts;  /* messages sent to everyone */
    uint64_t by_type[16]; /* messages published, by enum dw_msg_type */
};

/* thread: main. Makes an empty hub. wake is how a send wakes the I/O thread when it made the
 * ready queue non-empty (inside the sender's wake batch, once per batch: wake.h); borrowed
 * for the hub's lifetime. Returns a new hub owned by the caller. */
struct dw_hub *dw_hub_new(const struct dw_wake *wake);

/* thread: main, after every other thread that used the hub has stopped and every connection
 * was removed. Frees the hub. */
void dw_hub_free(struct dw_hub *hub);

/* thread: any; rcu: registered (takes the read lock itself). Queues msg for every connection
 * of user_id. Returns the number of connections it was queued for. */
size_t dw_hub_send_user(struct dw_hub *hub, const char *user_id, struct dw_msg *msg);

/* thread: any; rcu: registered. Queues msg for every member of channel. Returns the count. */
size_t dw_hub_send_channel(struct dw_hub *hub, const char *channel, struct dw_msg *msg);

/* thread: any; rcu: registered. Queues msg for every connection. Returns the count. */
size_t dw_hub_send_all(struct dw_hub *hub, struct dw_msg *msg);

/* thread: main, before any send. With bus (--redis), every send goes to every node's
 * connections through Redis, this node's included, while the bus is up; while it is down,
 * here at once (bus.h). The counts the sends return are then this node's connections that
 * match when the message is published. */
void dw_hub_set_bus(struct dw_hub *hub, struct dw_bus *bus);

/* thread: any. Counts one published message of type (for the stats). */
void dw_hub_count_published(struct dw_hub *hub, int type, int broadcast);

/* thread: any. Copies the publish counters into out. */
void dw_hub_get_published(struct dw_hub *hub, struct dw_hub_published *out);

/* thread: any. True once the server began to shut down: every send reaches no one. */
bool dw_hub_sealed(struct dw_hub *hub);

/* thread: any. Connections and distinct users currently registered, and channels. */
size_t dw_hub_connection_count(struct dw_hub *hub);
size_t dw_hub_user_count(struct dw_hub *hub);
size_t dw_hub_channel_count(struct dw_hub *hub);

#endif
