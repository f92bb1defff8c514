/*
 * replay — DESIGN: a connection's replay of its user's durable inbox (docs/delivery.md), on the
 * I/O thread; the reading itself is the inbox's thread's (inbox.h, dw_inbox_read).
 *
 * The one idea: the connection is in the hub before the first page is read, so every critical
 * message is either in a page (committed before that page's snapshot) or reaches the outbox
 * live (committed after it, delivered after that). While the replay runs the outbox waits,
 * and the socket gets the replay's answer (the welcome, or "resumed"), then the pages in seq
 * order. A page that ends at the user's last_seq of its snapshot ends the replay; from then on
 * the outbox flows, and a live message whose seq the connection was sent is skipped
 * (dw__replay_was_sent: io.seq_through and io.seq_ahead, one record of what was sent, kept by
 * the replays and the write path): no gap, no message twice on one connection.
 *
 * A catch-up (dw__replay_catch_up_all: the bus says this node may have missed messages from
 * the others) is the same replay without an answer, from the last seq the connection was sent
 * without a gap, leaving out the seqs it was sent after that (io.seq_through, seq_ahead).
 *
 * Memory: one page at a time (at most --queue-bytes plus one message, DW_INBOX_PAGE_MAX
 * messages), asked for only once the previous one is written, so a client that reads slowly
 * slows its replay down instead of filling the daemon. The waiting outbox keeps its bound: its
 * durable messages are dropped when it passes it (the replay reads them again: it goes on
 * until its pages cover the highest seq dropped), then the usual trim applies.
 */
#define DW_LOG_MODULE "replay"
#include "server_int.h"
#include "dealwire/inbox.h"
#include "dealwire/log.h"
#include "dealwire/mem.h"
#include "dealwire/msg.h"
#include "dealwire/time.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

/* Why a replay runs, and so how it opens. */
enum kind {
    CONNECT,  /* a new connection: the welcome first */
    RESUME,   /* a resume command: "resumed" first */
    CATCH_UP, /* the bus lost messages: no answer, only what is new to the connection */
};

struct dw_replay {
    struct replay_page *asked; /* the page being read (the inbox or srv->replays holds it) */
    struct dw_msg **front;     /* what is written next: the answer, then a page's messages */
    size_t nfront, at;
    enum kind kind;
    bool answered;      /* the answer is in front (or written) */
    bool more;          /* the last page was not the end */
    int64_t after;      /* the next page's after */
    int64_t high;       /* the highest seq the pages covered (or the client had) */
    int64_t dropped_to; /* the highest seq dropped from the waiting outbox */
};

/* A page asked for by a connection, with what brings the answer back to it. */
struct replay_page {
    struct dw_inbox_page page;
    struct cds_wfcq_node node; /* on srv->replays once answered */
    struct dw_server *srv;
    struct dw_conn *conn; /* a reference, dropped when the page is handled */
};

/* Runs on the inbox's thread: the answer goes to the I/O thread. */
static void page_answered(struct dw_inbox_page *p)
{
    struct replay_page *rp = p->arg;

    cds_wfcq_node_init(&rp->node);
    if (dw_readyq_push(&rp->srv->replays, &rp->node))
        dw_wake(&rp->srv->wake);
}

static void page_free(struct replay_page *rp)
{
    dw_inbox_page_release(&rp->page);
    dw__conn_unref(rp->conn);
    free(rp);
}

static void front_clear(struct dw_replay *r)
{
    for (size_t i = r->at; i < r->nfront; i++)
        dw_msg_unref(r->front[i]);
    free(r->front);
    r->front = NULL;
    r->nfront = r->at = 0;
}

/* The answer that opens a replay: the welcome or "resumed", with the user's last_seq and
 * whether the history after the client's seq is all there; without them, and with why, when
 * the inbox could not be read. */
static struct dw_msg *answer_msg(struct dw_server *srv, struct dw_conn *conn,
                                 const struct dw_inbox_page *p, enum kind kind)
{
    bool resume = kind == RESUME;
    struct json_object *obj;
    struct dw_msg *m;

    if (resume) {
        obj = json_object_new_object(); /* the render adds its "timestamp" (msg.h) */
        json_object_object_add(obj, "type", json_object_new_string("resumed"));
    } else {
        obj = dw__conn_welcome(srv, conn);
    }
    if (p->rc == 0) {
        json_object_object_add(obj, "last_seq", json_object_new_int64(p->last_seq));
        json_object_object_add(obj, "recovered",
                               json_object_new_boolean(dw_inbox_page_recovered(p)));
    } else {
        json_object_object_add(obj, "recovered", json_object_new_boolean(false));
        json_object_object_add(obj, "replay_error",
                               json_object_new_string("the inbox cannot be read now (database "
                                                      "unavailable): resume later"));
    }
    m = dw_msg_new_json(resume ? DW_MSG_RESUMED : DW_MSG_CONNECTION_ESTABLISHED, 0, obj);
    json_object_put(obj);
    return m;
}

/* Asks the inbox for the page after r->after. Returns 0, or what dw_inbox_read returned. */
static int ask(struct dw_server *srv, struct dw_conn *conn, struct dw_replay *r)
{
    struct replay_page *rp = dw_xcalloc(1, sizeof(*rp));
    int err;

    snprintf(rp->page.user_id, sizeof(rp->page.user_id), "%s", conn->user->id);
    rp->page.after = r->after;
    rp->page.max_bytes = (size_t)srv->cfg->queue_bytes;
    rp->page.first = !r->answered && r->kind != CATCH_UP;
    rp->page.done = page_answered;
    rp->page.arg = rp;
    rp->srv = srv;
    rp->conn = conn;
    dw__conn_ref(conn);
    err = dw_inbox_read(srv->inbox, &rp->page);
    if (err < 0) {
        page_free(rp);
        return err;
    }
    r->asked = rp;
    return 0;
}

static void start(struct dw_server *srv, struct dw_conn *conn, int64_t after, enum kind kind);

/* The seqs noted above seq_through, at most: a seq further ahead is not noted, and a catch-up
 * may send it again (at least once, docs/delivery.md), never skip it. 512 bytes, held only
 * while the connection has a gap. */
#define AHEAD_MAX_WORDS 64

/* Is bit d of io's notes set? */
static bool ahead_test(const struct dw_conn_io *io, int64_t d)
{
    return d >= 0 && (uint64_t)d < (uint64_t)io->ahead_words * 64 &&
           (io->seq_ahead[d / 64] >> (d % 64) & 1);
}

/* Drops the first k bits of io's notes (seq_through moved k up); frees them once empty. */
static void ahead_shift(struct dw_conn_io *io, int64_t k)
{
    unsigned words = io->ahead_words, w = (unsigned)(k / 64), b = (unsigned)(k % 64);
    bool any = false;

    if (!words || k <= 0)
        return;
    for (unsigned i = 0; i < words; i++) {
        uint64_t lo = i + w < words ? io->seq_ahead[i + w] : 0;
        uint64_t hi = i + w + 1 < words ? io->seq_ahead[i + w + 1] : 0;

        io->seq_ahead[i] = b ? lo >> b | hi << (64 - b) : lo;
        any |= io->seq_ahead[i] != 0;
    }
    if (!any) {
        free(io->seq_ahead);
        io->seq_ahead = NULL;
        io->ahead_words = 0;
    }
}

/* Every seq up to `to` was sent to the connection: seq_through moves up to it, then past the
 * seqs noted right above it. */
static void raise_through(struct dw_conn_io *io, int64_t to)
{
    int64_t run = 0;

    if (to > io->seq_through) {
        ahead_shift(io, to - io->seq_through);
        io->seq_through = to;
    }
    while (ahead_test(io, run))
        run++;
    ahead_shift(io, run);
    io->seq_through += run;
}

void dw__replay_note_sent(struct dw_conn *conn, int64_t seq)
{
    struct dw_conn_io *io = &conn->io;
    int64_t d = seq - io->seq_through - 1;
    unsigned need;

    if (d < 0)
        return;
    if (d == 0 && !io->seq_ahead) {
        io->seq_through = seq; /* no gap: the common case, nothing to note */
        return;
    }
    if (d >= (int64_t)AHEAD_MAX_WORDS * 64)
        return;
    need = (unsigned)(d / 64) + 1;
    if (need > io->ahead_words) {
        io->seq_ahead = dw_xrealloc(io->seq_ahead, need * sizeof(*io->seq_ahead));
        memset(io->seq_ahead + io->ahead_words, 0,
               (need - io->ahead_words) * sizeof(*io->seq_ahead));
        io->ahead_words = need;
    }
    io->seq_ahead[d / 64] |= (uint64_t)1 << (d % 64);
    raise_through(io, io->seq_through);
}

bool dw__replay_was_sent(const struct dw_conn *conn, int64_t seq)
{
    const struct dw_conn_io *io = &conn->io;

    return seq <= io->seq_through || ahead_test(io, seq - io->seq_through - 1);
}

/* Where a catch-up of conn starts: after the seqs it was sent without a gap (a gap is what the
 * bus lost while messages of the same user came from two nodes); a connection that was sent
 * none gets what its user has not acknowledged, as a new connection does. */
static int64_t catch_up_from(const struct dw_conn *conn)
{
    return conn->io.seq_through > 0 ? conn->io.seq_through : DW_INBOX_UNACKED;
}

static void catch_up(struct dw_server *srv, struct dw_conn *conn)
{
    conn->io.catch_up_due = false;
    srv->io.caught_up++;
    start(srv, conn, catch_up_from(conn), CATCH_UP);
}

/* The replay is over: what it covered is skipped in the outbox, which flows again (or a
 * catch-up asked for meanwhile starts). */
static void finish(struct dw_server *srv, struct dw_conn *conn)
{
    struct dw_replay *r = conn->io.replay;

    raise_through(&conn->io, r->high); /* the client had, or was sent, every seq up to it */
    front_clear(r);
    free(r);
    conn->io.replay = NULL;
    if (conn->io.catch_up_due) {
        catch_up(srv, conn);
        return;
    }
    if (conn->io.wsi && !dw_outbox_is_empty(&conn->outbox))
        lws_callback_on_writable(conn->io.wsi);
}

/* A page came back for conn's replay r (rc 0), or could not be read: its messages go to the
 * front, after the replay's answer when this is the first page. */
static void take_page(struct dw_server *srv, struct dw_conn *conn, struct dw_replay *r,
                      struct dw_inbox_page *p)
{
    size_t k = 0;

    front_clear(r);
    r->front = dw_xmalloc((p->n + 1) * sizeof(struct dw_msg *));
    if (r->kind == CATCH_UP)
        srv->io.catch_ups_failed += !r->answered && p->rc < 0;
    if (!r->answered) {
        if (r->kind != CATCH_UP)
            r->front[k++] = answer_msg(srv, conn, p, r->kind);
        r->answered = true;
        /* The client has everything up to from, unless from is past the user's last_seq (a
         * client of another inbox, or of one that was reset): then it counts again from
         * last_seq, and what comes after it is new to the client. */
        if (p->rc == 0)
            r->high = p->from <= p->last_seq ? p->from : p->last_seq;
    }
    if (p->rc < 0) {
        /* Nothing more can be read now: the client gets a gap, or the answer says so. */
        r->more = false;
        r->dropped_to = 0;
    } else {
        int64_t last = p->n ? p->msgs[p->n - 1]->seq : 0; /* the page's, before any is taken */

        for (size_t i = 0; i < p->n; i++) {
            if (r->kind == CATCH_UP && dw__replay_was_sent(conn, p->msgs[i]->seq))
                continue; /* a catch-up sends only what the connection missed */
            r->front[k++] = p->msgs[i];
            p->msgs[i] = NULL; /* taken */
        }
        if (r->kind == CATCH_UP)
            srv->io.caught_up_msgs += k; /* a catch-up's front holds no answer */
        if (p->n) {
            r->after = last;
            if (r->after > r->high)
                r->high = r->after;
        } else if (p->rc == 0 && p->from > r->after) {
            r->after = p->from;
        }
        r->more = p->more;
    }
    r->nfront = k;
    r->at = 0;
    if (conn->io.wsi)
        lws_callback_on_writable(conn->io.wsi);
}

static void start(struct dw_server *srv, struct dw_conn *conn, int64_t after, enum kind kind)
{
    struct dw_replay *r = dw_xcalloc(1, sizeof(*r));

    r->kind = kind;
    r->after = after;
    r->high = after < 0 ? 0 : after;
    conn->io.replay = r;
    if (ask(srv, conn, r) < 0) {
        /* The inbox is stopping (shutdown): answer at once, with nothing replayed. */
        struct dw_inbox_page failed = {.rc = -ESHUTDOWN};

        take_page(srv, conn, r, &failed);
    }
}

void dw__replay_start(struct dw_server *srv, struct dw_conn *conn, int64_t after, bool resume)
{
    dw__replay_abandon(conn); /* a catch-up: what the client asks for covers it */
    start(srv, conn, after, resume ? RESUME : CONNECT);
}

void dw__replay_catch_up_all(struct dw_server *srv)
{
    struct dw_conn *conn;

    if (!srv->inbox)
        return; /* nothing was stored: nothing can be caught up */
    srv->io.catch_up_rounds++;
    dw_rlist_for_each_entry(conn, dw__hub_all(srv->hub), struct dw_conn, all_link) {
        if (conn->io.state != DW_CONN_OPEN || !conn->io.wsi)
            continue;
        if (conn->io.replay)
            conn->io.catch_up_due = true; /* once this one ends: its pages may predate the loss */
        else
            catch_up(srv, conn);
    }
}

bool dw__replay_is_catch_up(struct dw_conn *conn)
{
    return conn->io.replay && conn->io.replay->kind == CATCH_UP;
}

struct dw_msg *dw__replay_peek(struct dw_conn *conn)
{
    struct dw_replay *r = conn->io.replay;

    return r->at < r->nfront ? r->front[r->at] : NULL;
}

void dw__replay_drop(struct dw_conn *conn)
{
    struct dw_replay *r = conn->io.replay;

    dw_msg_unref(r->front[r->at++]);
}

void dw__replay_hold(struct dw_server *srv, struct dw_conn *conn)
{
    struct dw_replay *r = conn->io.replay;

    if (dw_outbox_queued(&conn->outbox) > (unsigned long)srv->cfg->queue_size ||
        dw_outbox_pending_bytes(&conn->outbox) > (size_t)srv->cfg->queue_bytes)
        dw_outbox_drop_durable(&conn->outbox, &r->dropped_to);
}

void dw__replay_advance(struct dw_server *srv, struct dw_conn *conn)
{
    struct dw_replay *r = conn->io.replay;

    if (!r || r->asked || r->at < r->nfront || !r->answered || conn->io.state != DW_CONN_OPEN)
        return;
    if (r->more || r->dropped_to > r->high) {
        /* More to read, or the waiting outbox gave up messages no page has covered yet. */
        if (ask(srv, conn, r) == 0)
            return;
    }
    finish(srv, conn);
}

void dw__replay_abandon(struct dw_conn *conn)
{
    struct dw_replay *r = conn->io.replay;

    if (!r)
        return;
    /* A page still being read is dropped when it comes back (r->asked no longer matches). */
    front_clear(r);
    free(r);
    conn->io.replay = NULL;
}

void dw__replay_drain(struct dw_server *srv)
{
    struct dw_readyq_batch batch;
    struct cds_wfcq_node *node;

    dw_readyq_take_all(&srv->replays, &batch);
    while ((node = dw_readyq_batch_next(&batch)) != NULL) {
        struct replay_page *rp = caa_container_of(node, struct replay_page, node);
        struct dw_conn *conn = rp->conn;
        struct dw_replay *r = conn->io.replay;

        /* Only for the replay that asked for it, on a connection still open (after the
         * client's close frame, the replay goes no further). */
        if (r && r->asked == rp) {
            r->asked = NULL;
            if (conn->io.state == DW_CONN_OPEN)
                take_page(srv, conn, r, &rp->page);
        }
        page_free(rp);
    }
}

void dw__replay_free_all(struct dw_server *srv)
{
    struct dw_readyq_batch batch;
    struct cds_wfcq_node *node;

    dw_readyq_take_all(&srv->replays, &batch);
    while ((node = dw_readyq_batch_next(&batch)) != NULL)
        page_free(caa_container_of(node, struct replay_page, node));
}
