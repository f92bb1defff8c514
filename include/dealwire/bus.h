/*
 * bus — the messages several nodes share over Redis (--redis; docs/operations.md, "Several
 * nodes").
 *
 * Every message a node's producers send through the hub (publish API, monitors, planner,
 * inbox) is published on one Redis channel; every node subscribes to it and delivers what
 * comes on it to its own connections, the node that published it included. So a message
 * reaches each matching connection once, on whichever node it is.
 *
 * Order: every node delivers in the one order Redis gave the channel, its own messages too
 * (that is what the round trip buys: a node delivering its own at once could put them before
 * another node's that Redis had already passed on). The publish API answers once Redis took
 * the messages (dw_bus_fence), so a publisher that waits for each answer, whichever node it
 * goes to, has its messages in its order on every connection. While Redis is away, a node
 * delivers its own messages at once, to its own connections only.
 *
 * Two threads, each with its own Redis connection (hiredis, blocking): the publisher takes
 * what the producers queued (a mutex and a condition variable; at most DW_BUS_QUEUE_BYTES) and
 * pipelines it; the subscriber reads the channel and delivers through the hub as a producer.
 * While Redis is away both retry with backoff; what is queued meanwhile is dropped and counted.
 *
 * Catching up (docs/cluster.md, "Redis goes away"): critical messages to users are in the
 * durable inbox, so what a node missed can be read again. The bus calls the owner's catch-up
 * hook when its subscription comes back after a loss (what the other nodes published meanwhile
 * did not arrive), and when another node says it dropped messages: a node whose publisher lost
 * messages (Redis away, or its queue full) says so on the channel once it publishes again.
 *
 * The cluster's figures: every node announces its own (dw_bus_announce, every few seconds) on
 * the same channel; each node keeps what the others last said and when (dw_bus_peers). A node
 * that stops says so, and the others forget it at once.
 *
 * The operator's actions on a user (disconnect with a ban, subscribe, unsubscribe: operator.c)
 * go on the same channel too (dw_bus_send_op), in Redis' order like the messages; each other
 * node hands them to its owner's hook, which applies them. They are not answered.
 */
#ifndef DEALWIRE_BUS_H
#define DEALWIRE_BUS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dealwire/proto.h"

struct dw_bus;
struct dw_hub;
struct dw_msg;

/* The Redis channel the nodes share. */
#define DW_BUS_CHANNEL "dealwire:bus"
/* Bytes of messages the publisher may hold while it catches up; past it they are dropped. */
#define DW_BUS_QUEUE_BYTES ((size_t)64 * 1024 * 1024)

/* Where a message goes, on every node. */
enum dw_bus_target {
    DW_BUS_USER = 'u',
    DW_BUS_CHANNEL_TARGET = 'c',
    DW_BUS_ALL = 'a',
};

/* thread: any. Checks a --redis URL: redis://[:password@]host[:port][/db]. Returns 0, or
 * -EINVAL with why (size bytes) filled. */
int dw_bus_check_url(const char *url, char *why, size_t size);

/* An operator's action on a user, as it goes to the other nodes (operator.c). */
struct dw_bus_op {
    char action[16]; /* "disconnect", "subscribe" or "unsubscribe" */
    char user_id[DW_USER_ID_MAX + 1];
    int code;          /* disconnect: the close code */
    char reason[124];  /* disconnect: the close reason (at most 123 bytes of UTF-8) */
    bool has_ban;      /* disconnect: ban_until says what to do with the user's ban */
    int64_t ban_until; /* realtime ns the ban ends at; 0: lift it */
    char channel[DW_CHANNEL_MAX + 1]; /* subscribe, unsubscribe */
};

/* What the bus calls its owner for, from the subscriber's thread (rcu: registered). */
struct dw_bus_hooks {
    /* This node may have missed messages from the others: catch up the connections. It must
     * return at once (set a flag, wake a thread). */
    void (*catch_up)(void *arg);
    /* Another node's operator action (op borrowed for the duration of the call), in the order
     * Redis gave it. It copies op for the thread that does it, and may wait (briefly, bounded)
     * until that is done: what comes after it on the channel is delivered after it returns.
     * False when it had no room (counted as dropped). */
    bool (*op)(void *arg, const struct dw_bus_op *op);
    void *arg;
};

/* thread: main, before the hub's first send. Connects both threads' connections to url (within
 * 2 s each) and starts them for node ("host:port", copied), delivering into hub (borrowed until
 * dw_bus_stop) and calling hooks (copied; its fields may be NULL). Returns NULL with why filled
 * when Redis cannot be reached or refuses. */
struct dw_bus *dw_bus_start(const char *url, struct dw_hub *hub, const char *node,
                            const struct dw_bus_hooks *hooks, char *why, size_t size);

/* thread: any. Queues msg (a reference is taken) for every node, to target (name: the user or
 * channel; NULL for everyone). Never blocks on Redis. Returns true when the message goes round
 * through Redis, to this node's connections too (both connections up: the bus delivers it
 * here when it comes back on the subscription, or, when it could not be published at all,
 * at once; when a publish failed on its way, it catches the connections up from the inbox).
 * Returns false when the caller delivers it here itself: Redis is away (the message is queued
 * for the other nodes as it can be, or dropped and counted). */
bool dw_bus_publish(struct dw_bus *bus, enum dw_bus_target target, const char *name,
                    struct dw_msg *msg);

/* thread: any. Calls fn(arg) once every message queued before this call is in Redis (Redis
 * answered its PUBLISH, so every node's subscription gets it before anything published after
 * fn ran), or was dropped (Redis away): on the publisher's thread, inside a wake batch
 * (wake.h); at once, on the caller's thread, when the bus is stopping. The publish API answers
 * through it, so a publisher that waits for an answer before its next publish, to whichever
 * node, has its messages in its order on every node's subscription. */
void dw_bus_fence(struct dw_bus *bus, void (*fn)(void *arg), void *arg);

/* thread: any. Queues op (copied) for the other nodes, behind what is queued now. Never blocks
 * on Redis. Returns true when it was queued with both connections up, false (nothing queued)
 * when Redis is away or the bus stopping: the caller says so, rather than the action reaching
 * the others at some later time. A queued action that is then not published (the connection
 * failed) is counted as dropped. */
bool dw_bus_send_op(struct dw_bus *bus, const struct dw_bus_op *op);

/* A node's figures, as it announces them. */
struct dw_bus_figures {
    uint64_t connections;   /* WebSocket connections open */
    uint64_t users;         /* users with a connection open */
    uint64_t messages_sent; /* frames written to its sockets since its start */
    int64_t started_at;     /* realtime ns */
};

/* thread: any. Announces this node's figures to the others (queued like a message; dropped
 * when Redis is away). */
void dw_bus_announce(struct dw_bus *bus, const struct dw_bus_figures *f);

/* How long a node's figures count in the cluster's totals after it last announced them, and
 * how long a node that stopped announcing is listed at all. */
#define DW_BUS_PEER_STALE_NS  ((int64_t)10 * 1000000000)
#define DW_BUS_PEER_FORGET_NS ((int64_t)60 * 1000000000)
/* Other nodes a node keeps figures of, at most (more are not listed). */
#define DW_BUS_PEERS_MAX 64

struct dw_bus_peer {
    /* What marks its messages: its name ("host:port"), '/', and an instance drawn at its
     * start; empty for a free slot. */
    char id[160];
    struct dw_bus_figures figures;
    int64_t heard_at; /* realtime ns of its last announcement */
};

/* thread: any. The other nodes heard from in the last DW_BUS_PEER_FORGET_NS, at most max,
 * into out. Returns how many. */
size_t dw_bus_peers(struct dw_bus *bus, struct dw_bus_peer *out, size_t max);

/* Counters since the start, for the stats. */
struct dw_bus_counts {
    uint64_t published;       /* messages this node published */
    uint64_t received;        /* messages from other nodes delivered here */
    uint64_t dropped;         /* messages not published: Redis away, or the queue full */
    uint64_t reconnects;      /* connections to Redis made again after a loss */
    uint64_t catch_ups_asked; /* times the bus asked this node to catch up */
    uint64_t drops_announced; /* times this node told the others it dropped messages */
    uint64_t ops_sent;        /* operator actions this node published */
    uint64_t ops_received;    /* operator actions from other nodes handed to the hook */
    uint64_t ops_dropped;     /* queued but not published, or heard but the hook had no room */
    int connected;            /* both connections up now */
};

/* thread: any. A snapshot (NULL bus: all zero). */
void dw_bus_counts(const struct dw_bus *bus, struct dw_bus_counts *out);

/* thread: main, after the producers stopped. Publishes what is queued (when Redis is there),
 * stops both threads and frees bus. NULL is a no-op. */
void dw_bus_stop(struct dw_bus *bus);

#endif
