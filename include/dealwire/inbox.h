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
    bool skip;          /* not written: its publish item's id was known (dw_inbox_track) */
};

/* A publish item's "id" (docs/protocol.md): remembered in publish_ids for --inbox-retention,
 * so that an item published again with the same id is neither stored nor sent again. */
struct dw_inbox_track {
    const char *id;               /* borrowed until the job's done runs */
    struct dw_inbox_entry *entry; /* the item's durable entry, or NULL for a live push */
    /* answered (rc 0) */
    bool duplicate;     /* the id was known: nothing of this item is written or sent */
    int64_t seq;        /* duplicate: the first one's seq (0: it had none) */
    int64_t recipients; /* duplicate: the first one's recipients (-1: not recorded yet) */
    bool redeliver;     /* duplicate: the first one was stored, its delivery never recorded
                         * (its answer was lost with the database): entry->msg is the stored
                         * message, to send now */
};

/* Longest publish item id. */
#define DW_INBOX_ID_MAX 128

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

/* thread: any; rcu: registered. dw_inbox_submit for a publish whose items carry ids: the n
 * entries (n may be 0) and the ntracks tracks (1 to DW_INBOX_WRITE_MAX, ids distinct and
 * valid, see dw_inbox_id_is_valid) are handled in one transaction of their own: the ids are
 * claimed, the entries of items whose id was known are skipped and their tracks answered, the
 * others are written. done(arg, rc) as for dw_inbox_submit. */
int dw_inbox_submit_tracked(struct dw_inbox *ib, struct dw_inbox_entry *entries, size_t n,
                            struct dw_inbox_track *tracks, size_t ntracks, dw_inbox_done_fn *done,
                            void *arg);

/* thread: any. Records how many connections the first publish of id reached, for the answer
 * to its duplicates (grouped like acks; nothing to wait for). */
void dw_inbox_note_recipients(struct dw_inbox *ib, const char *id, int64_t recipients);

/* thread: any. Is id a valid publish item id (1 to DW_INBOX_ID_MAX characters of
 * A-Z a-z 0-9 _ . : @ -, as user ids)? */
bool dw_inbox_id_is_valid(const char *id);

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

/* ------------------------------------------------------------------------------------------
 * Reading it back: replay pages
 * ------------------------------------------------------------------------------------------ */

/* Most messages one page holds. */
#define DW_INBOX_PAGE_MAX 1000
/* A page's after that means "the user's highest acknowledged seq" (offline delivery). */
#define DW_INBOX_UNACKED (-1)

struct dw_inbox_page;

/* A reader's callback: runs on the inbox's thread once p is answered (p->rc). */
typedef void dw_inbox_page_fn(struct dw_inbox_page *p);

/* One page of a user's messages, asked for with dw_inbox_read. The asker fills the first
 * part; the inbox fills the rest. */
struct dw_inbox_page {
    /* asked */
    char user_id[DW_USER_ID_MAX + 1];
    int64_t after;    /* messages with seq > after; DW_INBOX_UNACKED: > the user's acked_seq */
    size_t max_bytes; /* no message is added past this many bytes (the first always is) */
    bool first;       /* a replay's first page: counted as a replay */
    dw_inbox_page_fn *done;
    void *arg;
    /* answered */
    int rc;               /* 0, or a negative errno (-EAGAIN: the database is unreachable) */
    int64_t from;         /* the after used (the acked_seq for DW_INBOX_UNACKED) */
    int64_t last_seq;     /* the user's highest seq, in the page's snapshot (0: none yet) */
    int64_t acked_seq;    /* the user's highest acknowledged seq */
    int64_t first_seq;    /* the lowest seq the inbox still holds for the user (0: none) */
    struct dw_msg **msgs; /* n critical messages, seq increasing, exactly as sent (owned) */
    size_t n;
    bool more; /* there is more above msgs[n - 1]: ask again after it */
    struct dw_inbox_page *_next;
};

/* thread: any. Queues p (borrowed until p->done runs) for the inbox's thread, which reads the
 * pages of every reader waiting with one statement per DW_INBOX_READ_GROUP of them (a
 * reconnect storm costs few round trips) after the writes queued before them. Returns 0, or
 * -ESHUTDOWN once the inbox is stopping, or -EINVAL (invalid user id) (done is then not
 * called). */
int dw_inbox_read(struct dw_inbox *ib, struct dw_inbox_page *p);

/* Pages one read statement answers, at most. */
#define DW_INBOX_READ_GROUP 32

/* thread: any. Was everything after p->from still there, in a first page? False when the
 * client's seq is past the user's last_seq (another inbox, or a reset one), or when messages
 * after it are gone (retention). */
bool dw_inbox_page_recovered(const struct dw_inbox_page *p);

/* thread: any. Frees the messages p holds (what was not taken from it). */
void dw_inbox_page_release(struct dw_inbox_page *p);

/* Counters since the start, for the stats. */
struct dw_inbox_counts {
    uint64_t written;        /* entries written */
    uint64_t failed;         /* entries whose write failed */
    uint64_t writes;         /* statements that wrote them */
    uint64_t acks;           /* acks recorded (after grouping: one per user and statement) */
    uint64_t acks_failed;    /* acks that could not be recorded */
    uint64_t replays;        /* replays started (a connection's first page, or a resume) */
    uint64_t replayed;       /* messages read back for replays */
    uint64_t replays_failed; /* pages that could not be read */
    uint64_t not_recovered;  /* replays whose history was partly gone ("recovered": false) */
    uint64_t duplicates;     /* publish items not sent again: their "id" was known */
};

/* thread: any. A snapshot of the counters (NULL ib: all zero). */
void dw_inbox_counts(const struct dw_inbox *ib, struct dw_inbox_counts *out);

/* thread: the one that started it, once no submitter is left. Writes and delivers what is
 * queued, stops the thread and frees ib (NULL is a no-op). */
void dw_inbox_stop(struct dw_inbox *ib);

#endif
