/*
 * conn_int.h — one WebSocket connection: its object, shared with the producers that push to
 * its outbox, the state the I/O thread keeps for it, its reference count and the one state
 * of its close (conn_state.h). conn.c runs it; hub.c links it into the maps. Not public.
 *
 * Lifetime (two-phase close, as with libuv's uv_close):
 *   dw__hub_conn_new     refs = 1 (the hub's reference)
 *   dw__hub_add          published in the maps; producers may now find it
 *   dw__hub_remove       marked closed and unlinked; call_rcu drops the hub's reference after
 *                        a grace period, so a producer that found it may still push to it
 *   ready queue          holds its own reference while the connection is queued there
 *   last dw__conn_unref  drops whatever is still queued and frees it (any thread)
 */
#ifndef DEALWIRE_CONN_INT_H
#define DEALWIRE_CONN_INT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <urcu/rculfhash.h>

#include "dealwire/outbox.h"
#include "dealwire/proto.h" /* DW_CHANNEL_MAX */
#include "dealwire/rcu.h"
#include "conn_state.h"
#include "rlist.h"

struct lws;
struct dw_membership;
struct dw_replay;
struct dw_user;

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
    bool want_ping;            /* send a protocol ping on the next WRITEABLE (not a close state: due
                                * while open) */
    bool pong_due;             /* our ping is unanswered: its pong is not charged (rate limit) */
    enum dw_conn_state state;  /* the close lifecycle, conn_state.h */
    unsigned short close_code; /* FLUSHING, DROPPING: the code the close frame carries */
    const char *close_reason;  /* a static string, or close_text */
    char *close_text;          /* an operator's close reason (dw__conn_kick), owned; or NULL */
    unsigned long flush_left;  /* FLUSHING: frames still to write before the close frame */
    /* The durable inbox (replay.c): while a replay runs, what it reads is written and the
     * outbox waits; afterwards, outbox messages the connection was sent are skipped. */
    struct dw_replay *replay;
    /* What the connection was sent of its user's seqs (replay.c: what the outbox skips, where
     * a catch-up starts): every seq up to seq_through (written, covered by a replay, or the
     * client's own last_seq), and seq_through + 1 + i for each bit i set in seq_ahead
     * (ahead_words words, allocated only while the connection has a gap). */
    int64_t seq_through;
    uint64_t *seq_ahead;
    unsigned ahead_words;
    bool catch_up_due; /* catch up once the running replay ends */
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
    _Atomic int closed; /* set by the I/O thread once it leaves OPEN: no more pushes count */
    uint64_t id;
    struct dw_user *user;
    struct cds_lfht_node id_node; /* in hub->conns */
    struct dw_rlist user_link;
    struct dw_rlist all_link;
    struct rcu_head rcu;
    /* I/O thread only. */
    struct dw_conn_io io;
};

/* thread: any. Takes a reference on a connection the caller already holds one on (or found
 * under the read lock). */
void dw__conn_ref(struct dw_conn *conn);

/* thread: any. Drops a reference; the last frees conn and what is still queued on it. */
void dw__conn_unref(struct dw_conn *conn);

#endif
