/*
 * inbox — the durable inbox of critical messages to users (docs/delivery.md).
 *
 * With --db, every critical message to a user gets the user's next seq (per user, increasing,
 * gap-free), is written to alert_inbox with it, and only then is sent, carrying "seq" as its
 * first member. What is stored is the exact text that is sent.
 *
 * Two ways in:
 *   dw_inbox_write   a worker that has a transaction of its own (the price-watch round writes
 *                    its alerts in the transaction that records them), on its own store;
 *   dw_inbox_submit  everyone else (the publish API, the planner): the inbox's own thread
 *                    groups what was submitted since its last write into one statement (one
 *                    round trip for many messages and many submitters), then calls each
 *                    submitter back in submission order.
 * Either way the caller then sends each entry's message (dw_inbox_deliver) after the write
 * committed, and never when it failed: nothing is half-done.
 *
 * Entries: dw_inbox_entry_init renders the message (with a "timestamp" when it has none)
 * without its seq; a successful write sets seq and msg; dw_inbox_entry_release frees both.
 */
#ifndef DEALWIRE_INBOX_H
#define DEALWIRE_INBOX_H

#include <stddef.h>
#include <stdint.h>

#include "dealwire/msg.h"
#include "dealwire/proto.h" /* DW_USER_ID_MAX */

struct json_object;
struct dw_db;
struct dw_hub;
struct dw_inbox;
struct dw_store;

/* Most entries one statement writes (and one submission holds). */
#define DW_INBOX_WRITE_MAX 10000

struct dw_inbox_entry {
    char user_id[DW_USER_ID_MAX + 1];
    enum dw_msg_type type;
    char *text;         /* the message without its seq (owned) */
    size_t len;         /* of text */
    int64_t seq;        /* set by a successful write */
    struct dw_msg *msg; /* set by a successful write: critical, seq first (owned) */
};

/* thread: any. Fills e for a critical message of type to user_id (valid, see proto.h): removes
 * a "seq" member from obj (the inbox's seq replaces it), adds a "timestamp" member when it has
 * none, then renders obj (borrowed). */
void dw_inbox_entry_init(struct dw_inbox_entry *e, const char *user_id, enum dw_msg_type type,
                         struct json_object *obj);

/* thread: any. Frees what e holds (its text and message); e can be initialized again. */
void dw_inbox_entry_release(struct dw_inbox_entry *e);

/* thread: worker (the store's owner); may block. Writes the n entries, in the caller's
 * transaction if it has one (one statement per DW_INBOX_WRITE_MAX entries: without a
 * transaction, only each statement is atomic): each gets its user's next seq, in the order
 * given, and its message. Returns 0, or a negative errno (-EIO, -EAGAIN while the database is
 * unreachable, see store.h); then the caller rolls back, sends nothing and releases the
 * entries (some may hold a message already). */
int dw_inbox_write(struct dw_store *st, struct dw_inbox_entry *entries, size_t n);

/* thread: any; rcu: registered. Sends e's message (after a successful write) to every
 * connection of its user. Returns the number of connections reached. */
size_t dw_inbox_deliver(struct dw_hub *hub, const struct dw_inbox_entry *e);

/* ------------------------------------------------------------------------------------------
 * The inbox's thread
 * ------------------------------------------------------------------------------------------ */

/* A submitter's callback: runs on the inbox's thread once its entries are written (rc 0: each
 * has its seq and message; the callback delivers them) or could not be (rc < 0: none has). */
typedef void dw_inbox_done_fn(void *arg, int rc);

/* thread: main or io, before any submit. Starts the inbox's thread on db (a store of its own)
 * for hub. Returns NULL (with a log line) when the thread cannot start. */
struct dw_inbox *dw_inbox_start(struct dw_db *db, struct dw_hub *hub);

/* thread: any; rcu: registered. Queues n entries (borrowed until done runs) for the next
 * grouped write; done(arg, rc) runs once, on the inbox's thread. Returns 0, or -ESHUTDOWN
 * once the inbox is stopping (done is then not called). */
int dw_inbox_submit(struct dw_inbox *ib, struct dw_inbox_entry *entries, size_t n,
                    dw_inbox_done_fn *done, void *arg);

/* thread: any; rcu: registered. Writes one critical message of type to user_id (obj
 * borrowed) through the inbox's thread, then delivers it; nothing to wait for. A failed write
 * is logged and counted. Returns 0, or -ESHUTDOWN / -EINVAL (invalid user id). */
int dw_inbox_send(struct dw_inbox *ib, const char *user_id, enum dw_msg_type type,
                  struct json_object *obj);

/* thread: any. Records that user_id's client handled its messages through seq: the inbox's
 * thread marks them acknowledged (alert_inbox.acked_at) with the next group, one statement for
 * every ack waiting (a user's highest seq wins). Nothing to wait for; an ack that cannot be
 * written is counted and dropped (clients ack again with their next message). Returns 0, or
 * -ESHUTDOWN / -EINVAL (invalid user id or seq < 1). */
int dw_inbox_ack(struct dw_inbox *ib, const char *user_id, int64_t seq);

/* Counters since the start, for the stats. */
struct dw_inbox_counts {
    uint64_t written;     /* entries written */
    uint64_t failed;      /* entries whose write failed */
    uint64_t writes;      /* statements that wrote them */
    uint64_t acks;        /* acks recorded (after grouping: one per user and statement) */
    uint64_t acks_failed; /* acks that could not be recorded */
};

/* thread: any. A snapshot of the counters (NULL ib: all zero). */
void dw_inbox_counts(const struct dw_inbox *ib, struct dw_inbox_counts *out);

/* thread: the one that started it, once no submitter is left. Writes and delivers what is
 * queued, stops the thread and frees ib (NULL is a no-op). */
void dw_inbox_stop(struct dw_inbox *ib);

#endif
