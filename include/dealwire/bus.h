/*
 * bus — the messages several nodes share over Redis (--redis; docs/operations.md, "Several
 * nodes").
 *
 * Every message a node's producers send through the hub (publish API, monitors, planner,
 * inbox) is delivered to its own connections at once and published on one Redis channel; every
 * node subscribes to it and delivers what the others published to its own connections. So a
 * message reaches each matching connection once, on whichever node it is, and the messages of
 * one producer arrive in its order (one publishing connection per node, and Redis keeps the
 * order of one connection's publishes).
 *
 * Two threads, each with its own Redis connection (hiredis, blocking): the publisher takes
 * what the producers queued (a mutex and a condition variable; at most DW_BUS_QUEUE_BYTES) and
 * pipelines it; the subscriber reads the channel and delivers through the hub as a producer.
 * While Redis is away both retry with backoff; what is queued meanwhile is dropped and counted
 * (critical messages to users are in the durable inbox: clients resume).
 */
#ifndef DEALWIRE_BUS_H
#define DEALWIRE_BUS_H

#include <stddef.h>
#include <stdint.h>

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

/* thread: main, before the hub's first send. Connects both threads' connections to url (within
 * 2 s each) and starts them for node ("host:port", copied), delivering into hub (borrowed until
 * dw_bus_stop). Returns NULL with why filled when Redis cannot be reached or refuses. */
struct dw_bus *dw_bus_start(const char *url, struct dw_hub *hub, const char *node, char *why,
                            size_t size);

/* thread: any. Queues msg (a reference is taken) for the other nodes, to target (name: the user
 * or channel; NULL for everyone). Never blocks on Redis. */
void dw_bus_publish(struct dw_bus *bus, enum dw_bus_target target, const char *name,
                    struct dw_msg *msg);

/* Counters since the start, for the stats. */
struct dw_bus_counts {
    uint64_t published; /* messages this node published */
    uint64_t received;  /* messages from other nodes delivered here */
    uint64_t dropped;   /* messages not published: Redis away, or the queue full */
    uint64_t reconnects;
    int connected; /* both connections up now */
};

/* thread: any. A snapshot (NULL bus: all zero). */
void dw_bus_counts(const struct dw_bus *bus, struct dw_bus_counts *out);

/* thread: main, after the producers stopped. Publishes what is queued (when Redis is there),
 * stops both threads and frees bus. NULL is a no-op. */
void dw_bus_stop(struct dw_bus *bus);

#endif
