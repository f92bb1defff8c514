/*
 * retention — how long the durable inbox keeps what it holds (docs/operations.md, "Inbox
 * retention and dead letters"), and the operator's view of what it holds.
 *
 * With --db, a thread of its own sweeps the database once at start (once the schema is up to
 * date) and then every quarter of --inbox-retention, at most DW_RETENTION_PERIOD_MAX_S and at
 * least DW_RETENTION_PERIOD_MIN_S apart. A sweep:
 *   - moves the messages of alert_inbox that were never acknowledged and are older than the
 *     retention to alert_inbox_dead, with the reason, in one statement per batch (the rows
 *     are deleted and inserted by the same statement: a message is in one table or the
 *     other, never both or neither);
 *   - deletes the acknowledged messages older than the retention;
 *   - deletes the publish ids (publish_ids) older than the retention;
 *   - counts the inbox's depth (messages not acknowledged) and the dead letters, for the stats.
 * Each statement handles at most DW_RETENTION_BATCH rows, and a sweep repeats it until it
 * handles fewer (or the daemon stops). Rows are taken with FOR UPDATE SKIP LOCKED, so several
 * daemons on one database sweep at once without waiting on each other or moving a message
 * twice. While the database is unavailable a sweep is skipped quietly (the store logs the
 * outage); other failures log one warning, at most one a minute.
 *
 * Synchronization: the counters are atomics written by the sweep's thread only and read by
 * any thread (the stats, on the I/O thread); start and stop belong to one thread.
 */
#ifndef DEALWIRE_RETENTION_H
#define DEALWIRE_RETENTION_H

#include <stddef.h>
#include <stdint.h>

struct dw_db;
struct dw_retention;
struct dw_store;

/* Rows one statement of a sweep moves or deletes, at most. */
#define DW_RETENTION_BATCH 10000

/* Bounds of the time between two sweeps (a quarter of the retention within them). */
#define DW_RETENTION_PERIOD_MIN_S 1
#define DW_RETENTION_PERIOD_MAX_S 60

/* The inbox page (dw_retention_inbox_page): messages listed by default and at most, and the
 * payload bytes after which a page stops early ("more": true), so that one answer stays
 * bounded however large the messages are. */
#define DW_INBOX_PAGE_DEFAULT 100
#define DW_INBOX_PAGE_MAX     1000
#define DW_INBOX_PAGE_BYTES   (4 * 1024 * 1024)

/* What the sweeps did and found, for the stats. */
struct dw_retention_counts {
    int64_t retention_seconds;      /* --inbox-retention */
    int64_t depth;                  /* messages not acknowledged, at the last sweep; -1: none yet */
    int64_t dead_letters;           /* rows of alert_inbox_dead, at the last sweep; -1: none yet */
    uint64_t moved_to_dead_letters; /* since the start */
    uint64_t acked_deleted;         /* acknowledged messages deleted, since the start */
    uint64_t ids_expired;           /* publish ids deleted, since the start */
    uint64_t sweeps;                /* sweeps completed, since the start */
    int64_t last_sweep_ns;          /* CLOCK_REALTIME when the last one completed; 0: never */
};

/* thread: main or io, once. Starts the sweeps of db's inbox for a retention of
 * retention_seconds (> 0) on a thread of their own, with a store of its own. Returns NULL
 * (with a log line) when the thread cannot start, or for invalid arguments. */
struct dw_retention *dw_retention_start(struct dw_db *db, int64_t retention_seconds);

/* thread: any. A snapshot of the counts; NULL rt gives depth and dead_letters -1 and the
 * rest 0. Each field is read on its own, so a sweep ending meanwhile may show half. */
void dw_retention_counts(const struct dw_retention *rt, struct dw_retention_counts *out);

/* thread: the one that started it. Stops the sweeps (a statement running finishes first; a
 * sweep stops after it), joins the thread and frees rt. NULL is a no-op. */
void dw_retention_stop(struct dw_retention *rt);

/* thread: worker (the store's owner); may block. The answer to GET
 * /api/websocket/users/<user_id>/inbox?after=N&limit=L: what a client of user_id resuming
 * after seq `after` would be sent, at most limit messages (1..DW_INBOX_PAGE_MAX) and about
 * DW_INBOX_PAGE_BYTES of them, with the user's last_seq, acked_seq and lowest seq held
 * (docs/protocol.md has the document). after < 0 means the user's acked_seq (what a client
 * connecting without last_seq is sent). user_id must be valid (proto.h). Returns the HTTP
 * status (200; 503 while the database is unavailable; 500) and sets *resp to a new string of
 * *resp_len bytes, the answer's JSON body, which the caller frees. */
int dw_retention_inbox_page(struct dw_store *st, const char *user_id, int64_t after, unsigned limit,
                            char **resp, size_t *resp_len);

#endif
