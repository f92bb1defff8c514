/*
 * server_int.h — the I/O thread's state, shared by server.c (context, loop, shutdown),
 * conn.c (WebSocket connections), http.c (the HTTP API) and stats.c (the stats documents).
 * Everything here is thread: io unless a comment says otherwise.
 */
#ifndef DEALWIRE_SERVER_INT_H
#define DEALWIRE_SERVER_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

#include <libwebsockets.h>

#include "dealwire/auth.h"
#include "dealwire/bus.h"
#include "dealwire/config.h"
#include "dealwire/ipcount.h"
#include "dealwire/msg.h"
#include "dealwire/readyq.h"
#include "dealwire/wake.h"
#include "hub_int.h"

#include <openssl/ssl.h>

struct json_object;
struct dw_workers;
struct dw_http_req;
struct dw_db;

/* Bytes gathered into one RAW write; also the protocol's tx_packet_size (docs/architecture.md,
 * "The write path": left at 0, lws would cut each send at rx_buffer_size). */
#define DW_WRITE_BATCH ((size_t)64 * 1024)

/* lws's receive buffer per connection (lws allocates it at the upgrade, plus LWS_PRE + 4):
 * clients send short commands (docs/architecture.md, "The write path"), which arrive in chunks of
 * this size and are reassembled up to --max-message-size; control frames (at most 125 bytes) fit
 * whole. 256 instead of 512 saves 256 bytes of every connection: 2.41 -> 2.06 KiB at 10,000 idle.
 */
#define DW_RX_BUFFER 256

/* How often the heartbeat sweep runs: an eighth of the heartbeat interval, within these
 * bounds (it walks every connection, so not more often than needed). */
#define DW_SWEEP_MIN_US ((lws_usec_t)100 * 1000)
/* How often a node with a bus announces its figures to the others (bus.h). */
#define DW_ANNOUNCE_US  ((lws_usec_t)2 * 1000 * 1000)
#define DW_SWEEP_MAX_US ((lws_usec_t)1000 * 1000)

/* What a socket turned out to be: until the loop knows, its events may be deferred as a new
 * client's are, unless its first bytes show a request for the API (server.c, defer_event). */
enum dw_sock_role {
    DW_SOCK_UNKNOWN, /* nothing of it read yet */
    DW_SOCK_API,     /* an HTTP request (a publisher, an operator, a health check) or a
                      * /ws/publish socket: its events are never deferred */
    DW_SOCK_CLIENT,  /* a WebSocket client, or a request for something other than the API */
};

/* Every socket the server accepted, from SERVER_NEW_CLIENT_INSTANTIATED to WSI_DESTROY (lws
 * opaque user data of its wsi; server.c). While it has a deadline it is on srv->deadlines,
 * which is in deadline order because every deadline is "now + --handshake-timeout". */
struct dw_sock {
    struct lws *wsi;
    struct dw_ip ip;             /* the client's (server.c, "The client's address") */
    struct dw_ip peer;           /* the socket's own peer: ip, or the proxy that named ip */
    bool counted;                /* against ip, in dw_server.ips */
    bool via_proxy;              /* peer is in --trusted-proxies */
    bool proxy_pending;          /* from a trusted proxy; a PROXY header may still come */
    bool proxied;                /* ip came from a PROXY header: X-Forwarded-For is not read */
    enum dw_sock_role role;      /* what it turned out to be (server.c, defer_event) */
    int64_t deadline;            /* monotonic ns; 0: none */
    struct dw_sock *prev, *next; /* srv->deadlines, while it has a deadline */
    lws_dll2_t deferred;         /* on srv->deferred while its events wait (server.c) */
    lws_sorted_usec_list_t proxy_retry; /* polls it again for the rest of a PROXY header */
};

/* What the I/O thread did with connections and frames (stats "message_stats" and
 * "connections_opened"/"_closed"); the producers' counts are the hub's. */
struct dw_io_counters {
    uint64_t failed;      /* sends that failed (socket errors, closes with queued data) */
    uint64_t slow_closes; /* connections closed as slow consumers */
    uint64_t opened;      /* WebSocket connections established */
    uint64_t closed;      /* and closed */
    /* Catching up from the inbox after the bus lost messages (replay.c). */
    uint64_t catch_up_rounds;  /* times every connection was caught up */
    uint64_t caught_up;        /* connections caught up */
    uint64_t caught_up_msgs;   /* messages they got that way */
    uint64_t catch_ups_failed; /* catch-ups whose inbox could not be read */
};

/* Counts of what the limits and checks refused (stats "refused"). */
struct dw_refusals {
    uint64_t auth;            /* upgrades without a valid token */
    uint64_t origin;          /* upgrades from an Origin not allowed */
    uint64_t per_ip;          /* sockets closed at accept (or, behind a trusted proxy, requests
                               * refused): the client's address had its maximum */
    uint64_t proxy_header;    /* sockets from a trusted proxy closed: malformed PROXY header */
    uint64_t capacity;        /* upgrades refused at --max-connections, sockets at the cap */
    uint64_t per_user;        /* upgrades refused: the user had --max-connections-per-user */
    uint64_t api_auth;        /* operator API requests without the operator token */
    uint64_t rate_limited;    /* client messages dropped by the rate limit */
    uint64_t rate_closes;     /* connections closed for flooding */
    uint64_t private_channel; /* subscriptions refused: another user's channel */
    uint64_t token_expired;   /* connections closed at their token's expiry */
    uint64_t deadline;        /* sockets closed at their deadline (dw__sock_arm) */
    uint64_t body_memory;     /* requests refused: the bodies held reached --max-body-memory */
    uint64_t banned;          /* upgrades refused: the operator API banned the user */
};

/* Users the operator API banned (operator.c): at most DW_BANS_MAX, each until a monotonic
 * time. I/O thread only. Embedded in dw_server, so it needs neither allocation nor freeing. */
#define DW_BANS_MAX 1000
struct dw_ban {
    int64_t until;    /* monotonic ns */
    int64_t until_rt; /* the same as realtime ns, for the documents */
    uint32_t hash;    /* of user_id, compared before the string */
    char user_id[DW_USER_ID_MAX + 1];
};
struct dw_bans {
    unsigned n;
    struct dw_ban list[DW_BANS_MAX];
};

/* Why a WebSocket connection closed (dealwire_connections_closed_total's "reason"), found at
 * its close from its close state and reason (metrics.c, close_cause). */
enum dw_close_cause {
    DW_CLOSE_CLIENT,        /* the client sent a close frame */
    DW_CLOSE_LOST,          /* no close handshake: the peer went away, or a write failed */
    DW_CLOSE_HEARTBEAT,     /* no answer within --stale-timeout */
    DW_CLOSE_SLOW,          /* slow consumer (1008) */
    DW_CLOSE_TOKEN_EXPIRED, /* its token expired (4001) */
    DW_CLOSE_RATE_LIMIT,    /* flooding (1008) */
    DW_CLOSE_TOO_LARGE,     /* a message over --max-message-size (1009) */
    DW_CLOSE_SHUTDOWN,      /* the server shut down (1001) */
    DW_CLOSE_OTHER,         /* a close this list does not name yet */
    DW_CLOSE__CAUSES
};

/* conn.c: the close reason of a connection hung up by the heartbeat (no close frame carries
 * it; close_cause reads it). */
#define DW_CLOSE_REASON_STALE "heartbeat timeout"

/* Delivery latency buckets (metrics.c): bucket b counts latencies up to 2^(SHIFT + b) ns, from
 * 16 us to 8.6 s, found with a shift and a count of leading zeros, not a search. */
#define DW_LATENCY_SHIFT   14
#define DW_LATENCY_BUCKETS 20
/* Connection duration buckets (metrics.c, duration_bounds). */
#define DW_DURATION_BUCKETS 10

/* What the I/O thread measures for /metrics (metrics.c): plain counters, since only this
 * thread writes them and the scrape runs on it. Each array has one entry past its bounds, the
 * +Inf bucket. */
struct dw_io_metrics {
    uint64_t sent_by_type[DW_MSG__COUNT];    /* frames written, by enum dw_msg_type */
    uint64_t dropped_by_type[DW_MSG__COUNT]; /* dropped by full outboxes */
    uint64_t failed_by_type[DW_MSG__COUNT];  /* in a failed write, or queued at the close */
    uint64_t closes[DW_CLOSE__CAUSES];
    uint64_t latency[DW_LATENCY_BUCKETS + 1]; /* message built to written, published types */
    uint64_t latency_sum_ns;
    uint64_t duration[DW_DURATION_BUCKETS + 1]; /* connection lifetimes */
    uint64_t duration_sum_ns;
};

/* Operator actions heard from the other nodes (bus.h, dw_bus_op), waiting for the I/O thread
 * (operator.c): a ring of at most DW_OPS_MAX under a mutex. The bus's subscriber pushes, then
 * waits (at most DW_OPS_WAIT_NS) until the I/O thread, which pops, has done it; past the bound
 * an action is refused and the bus counts it as dropped. */
#define DW_OPS_MAX     256
#define DW_OPS_WAIT_NS ((int64_t)1000000000)
struct dw_ops {
    pthread_mutex_t lock;
    pthread_cond_t done;  /* on CLOCK_MONOTONIC: broadcast as each action is done */
    unsigned head, n;     /* under lock */
    uint64_t queued, did; /* under lock: actions queued, and done, since the start */
    struct dw_bus_op list[DW_OPS_MAX];
};

struct dw_server {
    const struct dw_config *cfg;
    struct lws_context *ctx;
    struct dw_hub *hub;
    struct dw_workers *workers;
    struct lws_protocols protocols[2];
    lws_sorted_usec_list_t sweep;
    lws_usec_t sweep_us;
    _Atomic int stop_requested; /* any thread */
    bool draining;              /* shutting down: refuse new connections, close the others */
    bool finished;              /* shutdown complete: leave the loop */
    int64_t drain_deadline;     /* monotonic ns */
    int64_t started_at;         /* realtime ns */
    struct dw_readyq done;      /* finished HTTP jobs (dw_http_req.done_node); any → io */
    struct dw_readyq replays;   /* replay pages the inbox answered (replay.c); inbox → io */
    struct dw_wake wake;        /* how any thread wakes this one (wake.h): the hub's and the
                                 * done queue's */
    uv_loop_t *uv_loop;         /* --event-loop uv: our loop, which lws joins */
    void *foreign_loops[1];
    const struct dw_store_health *db_health; /* NULL without --db */
    struct dw_db *db;                        /* NULL without --db; workers use it (planner) */
    struct dw_inbox *inbox;                  /* the durable inbox, with --db; else NULL */
    struct dw_retention *retention;          /* its retention sweeps, with --db; else NULL */
    struct dw_bus *bus;                      /* --redis: the nodes' bus; else NULL */
    char node[128];                          /* this node's name, "host:port" (leader.h) */
    _Atomic int catch_up_due;                /* any thread (the bus): catch every connection
                                              * up from the inbox (replay.c) */
    lws_sorted_usec_list_t announce;         /* with a bus: this node's figures, every
                                              * DW_ANNOUNCE_US */
    unsigned char *wbuf;                     /* LWS_PRE + DW_WRITE_BATCH, the one write buffer */
    struct dw_readyq_batch drain;            /* io: connections taken from the ready queue and
                                              * not yet written (dw__conn_drain_ready) */
    unsigned drain_slice;                    /* io: connections per slice (conn.c next_slice) */
    int64_t drain_yield_ns;                  /* io: when the drain last yielded mid-way, or 0 */
    int64_t drain_clock;  /* io: during a drain, a monotonic time at most DW_DRAIN_CLOCK_EVERY
                           * connections old (the delivery-latency histogram's); else 0 */
    uint64_t drain_churn; /* io: srv->churn at that moment */
    uint64_t churn;       /* io: sockets accepted and sockets gone, ever */
    /* Requests whose body is complete, for the workers after this pass of the loop (http.c,
     * dw__http_body_done), and the libuv loop's hook for that. */
    struct dw_http_req *ready_reqs;
    struct dw_http_req **ready_tail;
    uv_check_t after_pass;

    /* Security (auth.h, tls.h, ipcount.h). */
    const struct dw_auth *auth;  /* borrowed from main */
    SSL_CTX *tls_ctx;            /* lws's context for the port, NULL without TLS */
    _Atomic int reload_tls;      /* any thread (SIGHUP): reload the certificate */
    struct dw_ipcount *ips;      /* sockets per client address */
    size_t sockets;              /* sockets accepted and not yet destroyed */
    struct dw_sock deadlines;    /* list head: sockets with a deadline, soonest first */
    struct dw_sock admitted;     /* what admit_socket learnt of the socket track_socket tracks */
    _Atomic size_t body_bytes;   /* any thread: request bodies held (http.c) */
    size_t socket_cap;           /* past it, new sockets are closed at accept */
    unsigned accepts;            /* sockets accepted in this pass of the loop (server.c) */
    int64_t pass_began;          /* monotonic ns of this pass's first socket event, or 0 */
    int64_t traffic_at;          /* monotonic ns of the last drain that wrote messages */
    lws_dll2_owner_t deferred;   /* sockets whose events wait, oldest first */
    uint64_t deferrals;          /* socket events put off to a later pass, ever */
    struct lws *listen_held;     /* the listening socket, not read until the next pass */
    struct dw_refusals refusals; /* what the limits refused, for the stats */
    struct dw_bans bans;         /* io: users the operator API banned (operator.c) */
    struct dw_ops ops;           /* the other nodes' operator actions (any → io) */
    /* /ws/publish (stream.c): the open sockets, those with frames for the workers after this
     * pass of the loop, the runs answered (any → io), and the counts for the stats. */
    struct dw_stream *stream_list;
    struct dw_stream *ready_streams;
    struct dw_readyq streams_done;
    struct {
        uint64_t opened, frames, answered, refused;
    } streams;
    struct dw_io_counters io;     /* what this thread did, for the stats */
    struct dw_io_metrics metrics; /* and for /metrics */
    uint64_t stats_walk;          /* numbers the stats walks over channels (stats.c) */
    /* The claims verified by the last upgrade, for its ESTABLISHED (lws calls it right after
     * CONFIRM_UPGRADE for the same wsi, so one slot is enough; a mismatch re-verifies). */
    struct lws *pending_wsi;
    struct dw_jwt_claims pending;
};

/* lws's per-session data: a WebSocket connection or an HTTP request, never both. */
struct dw_pss {
    struct dw_conn *conn;
    struct dw_http_req *req;
    struct dw_stream *stream; /* a /ws/publish socket (stream.c) */
};

/* Hangs up wsi from outside its own callbacks, where returning -1 is not possible: lws
 * closes it on its next pass, without a closing handshake (a failed write, a stale client). */
static inline void dw__hang_up(struct lws *wsi)
{
    lws_set_timeout(wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
}

/* ---- server.c: socket deadlines ------------------------------------------------------- */

/* From now on wsi must make progress within --handshake-timeout (complete its request, take
 * its answer, send its next request), or it is closed: every socket has such a deadline
 * (from its accept) except an established WebSocket (the heartbeat watches it) and a request
 * a worker holds. Arming again moves the deadline. */
void dw__sock_arm(struct dw_server *srv, struct lws *wsi);

/* wsi has no deadline any more: it became a WebSocket, or a worker holds its request. */
void dw__sock_disarm(struct dw_server *srv, struct lws *wsi);

/* What wsi turned out to be: DW_SOCK_API (an API request, a /ws/publish socket), whose
 * events are never put off to a later pass of the loop when a pass runs long, or
 * DW_SOCK_CLIENT (an established WebSocket client), whose are (server.c, defer_event). */
void dw__sock_role(struct lws *wsi, enum dw_sock_role role);

/* thread: io. At a request's headers (an HTTP request, an upgrade): from a trusted proxy
 * whose PROXY header named no client, the client is X-Forwarded-For's last address (none:
 * the proxy itself, which no per-address limit counts). Returns 0, or -1 when that address
 * holds --max-connections-per-ip sockets already (counted as a refusal; the caller answers
 * 429 and closes). */
int dw__sock_forwarded(struct dw_server *srv, struct lws *wsi);

/* thread: io. The client's address of wsi as text into buf (DW_IP_TEXT_MAX bytes), returned:
 * behind a trusted proxy, the one it named; "?" when there is none (not an IP socket, or wsi
 * NULL: a connection whose socket is gone). The one place logs, the stats and the operator API
 * read a client's address from. */
const char *dw__sock_address(struct lws *wsi, char *buf);

/* ---- conn.c --------------------------------------------------------------------------- */

/* Refuses an upgrade that is not /ws/events with a valid user_id (HTTP 400/404/503).
 * Returns what LWS_CALLBACK_HTTP_CONFIRM_UPGRADE should return. */
int dw__conn_confirm_upgrade(struct dw_server *srv, struct lws *wsi);

/* The WebSocket callbacks of one connection. Return what the lws callback returns. */
int dw__conn_established(struct dw_server *srv, struct lws *wsi, struct dw_pss *pss);
int dw__conn_receive(struct dw_server *srv, struct lws *wsi, struct dw_pss *pss, const void *in,
                     size_t len);
int dw__conn_writeable(struct dw_server *srv, struct lws *wsi, struct dw_pss *pss);
void dw__conn_pong(struct dw_server *srv, struct dw_pss *pss);
void dw__conn_peer_close(struct dw_pss *pss);
void dw__conn_closed(struct dw_server *srv, struct dw_pss *pss);

/* Drains the ready queue: collects each connection's outbox and writes it at once, or asks
 * for WRITEABLE when something must go first (conn.c, "Write path"). One slice of
 * connections per call (conn.c next_slice: 16, more when the loop is loaded): what is left
 * waits in srv->drain for the next pass of the loop, which it asks for. */
void dw__conn_drain_ready(struct dw_server *srv);

/* Lets go of the connections a drain left (at the end, once the loop has stopped). */
void dw__conn_drain_release(struct dw_server *srv);

/* The heartbeat sweep over every connection (pings, stale hang-ups). */
void dw__conn_sweep(struct dw_server *srv, int64_t now);

/* Starts the graceful close of every connection: flush, then close 1001. */
void dw__conn_close_all(struct dw_server *srv);

/* Queues msg (borrowed) for conn from the I/O thread itself and asks for WRITEABLE. */
void dw__conn_send(struct dw_conn *conn, struct dw_msg *msg);

/* The welcome (connection_established) of conn, without what the inbox adds. New object. */
struct json_object *dw__conn_welcome(struct dw_server *srv, struct dw_conn *conn);

/* ---- replay.c: a connection's replay of its user's durable inbox ---------------------- */

/* Starts conn's replay of the messages after `after` (DW_INBOX_UNACKED: after the user's
 * acknowledged ones). Its answer goes first: the welcome (at the connection's start) or
 * "resumed" (resume). Until it ends, the outbox waits. conn has no replay running, or a
 * catch-up, which gives way. */
void dw__replay_start(struct dw_server *srv, struct dw_conn *conn, int64_t after, bool resume);

/* Catches every open connection up from the inbox: each one's replay from the highest seq
 * written to it (a connection in a replay is caught up once that ends). Nothing is sent first,
 * only what is new to the connection, in seq order; the outbox waits meanwhile, as in any
 * replay. */
void dw__replay_catch_up_all(struct dw_server *srv);

/* A message with seq (> 0) is written to conn: noted, so that a catch-up neither skips a seq
 * the connection missed nor sends one again. */
void dw__replay_note_sent(struct dw_conn *conn, int64_t seq);

/* Was a message with seq (> 0) sent to conn already (written, covered by a replay, or held
 * by the client by its own last_seq)? The outbox skips such a message. */
bool dw__replay_was_sent(const struct dw_conn *conn, int64_t seq);

/* Is conn's running replay a catch-up (which a resume may replace)? */
bool dw__replay_is_catch_up(struct dw_conn *conn);

/* The next message the replay has for the socket, borrowed, or NULL (it waits for a page). */
struct dw_msg *dw__replay_peek(struct dw_conn *conn);

/* The message dw__replay_peek returned was written: gives it up. */
void dw__replay_drop(struct dw_conn *conn);

/* While a replay runs, the outbox waits: keeps it within the bound by dropping its durable
 * messages, which a later page reads again, then trimming as usual (enforce_bound). */
void dw__replay_hold(struct dw_server *srv, struct dw_conn *conn);

/* After a write turn: asks for the next page once the replay's messages are written, or ends
 * the replay (the outbox flows again: WRITEABLE asked for). */
void dw__replay_advance(struct dw_server *srv, struct dw_conn *conn);

/* Ends conn's replay where it is (the connection closes). */
void dw__replay_abandon(struct dw_conn *conn);

/* Hands the pages the inbox answered to their connections (the I/O thread's wake-up). */
void dw__replay_drain(struct dw_server *srv);

/* Frees the answered pages nobody will drain (at shutdown, after the inbox stopped). */
void dw__replay_free_all(struct dw_server *srv);

/* ---- http.c --------------------------------------------------------------------------- */

/* HTTP's 429, which lws 4.1 does not name. */
#define DW_HTTP_TOO_MANY_REQUESTS 429

/* Writes a whole HTTP/1.1 answer with status and the JSON error {"error": why}, and
 * "Connection: close", by hand with one RAW write: for an upgrade refused (where lws would
 * label its own status line HTTP/1.0) and for what lws hands over as a raw socket. The caller
 * then closes the connection. Returns 0, or -1 when the write failed. */
int dw__http_write_refusal(struct lws *wsi, int status, const char *why);

/* LWS_CALLBACK_RAW_RX: lws makes a raw socket of what it does not serve as HTTP: a CONNECT
 * request, a method it does not know, plaintext on the TLS port. The first gets 405, the
 * second 501, each with a JSON error; the last is closed unanswered. Returns -1 (close). */
int dw__http_raw(struct dw_server *srv, struct lws *wsi, const void *in, size_t len);

/* NULL when wsi's request line ends in its version (HTTP/1.0 or HTTP/1.1), else why not. lws
 * takes the target up to the first space and files the rest of the line as the version, so a
 * raw space in the target ("?user_id=bad user") would otherwise pass as a shorter target. */
const char *dw__http_line_error(struct lws *wsi);

/* The HTTP callbacks. Return what the lws callback returns. */
int dw__http_request(struct dw_server *srv, struct lws *wsi, struct dw_pss *pss, const char *path);
int dw__http_body(struct dw_server *srv, struct dw_pss *pss, const void *in, size_t len);
int dw__http_body_done(struct dw_server *srv, struct lws *wsi, struct dw_pss *pss);
int dw__http_writeable(struct dw_server *srv, struct lws *wsi, struct dw_pss *pss);
void dw__http_closed(struct dw_server *srv, struct dw_pss *pss);

/* Hands the requests whose body completed in this pass of the event loop to the workers.
 * Called after each pass; a request whose connection closed meanwhile is dropped. */
void dw__http_submit_ready(struct dw_server *srv);

/* Hands finished worker jobs back to their HTTP connections. */
void dw__http_drain_done(struct dw_server *srv);

/* Frees finished jobs whose connection is gone (at shutdown, after the workers stopped). */
void dw__http_free_done(struct dw_server *srv);

/* Takes n bytes of --max-body-memory for a request body about to be held: false when the
 * bodies held already take too much of it. */
bool dw__body_reserve(struct dw_server *srv, size_t n);

/* thread: any. Frees a body of srv's that reserved n bytes, and gives them back. */
void dw__body_release(struct dw_server *srv, char *body, size_t n);

/* Does the request carry the operator token (when --api-token is set)? */
bool dw__http_api_allowed(struct dw_server *srv, struct lws *wsi);

/* ---- stream.c: /ws/publish ------------------------------------------------------------ */

#define DW_STREAM_PATH "/ws/publish"

/* Is wsi's request (an upgrade) for DW_STREAM_PATH? */
bool dw__stream_is_path(struct lws *wsi);

/* The upgrade to DW_STREAM_PATH: 0 to accept, else what CONFIRM_UPGRADE returns (refused:
 * the operator token, shutting down). */
int dw__stream_confirm_upgrade(struct dw_server *srv, struct lws *wsi);

int dw__stream_established(struct dw_server *srv, struct lws *wsi, struct dw_pss *pss);
int dw__stream_receive(struct dw_server *srv, struct lws *wsi, struct dw_pss *pss, const void *in,
                       size_t len);
int dw__stream_writeable(struct dw_server *srv, struct lws *wsi, struct dw_pss *pss);
void dw__stream_pong(struct dw_pss *pss);
void dw__stream_closed(struct dw_server *srv, struct dw_pss *pss);

/* Hands the frames read in this pass of the loop to the workers, a run per socket. */
void dw__stream_submit_ready(struct dw_server *srv);

/* Takes the runs the workers answered: their answers go out. */
void dw__stream_drain_done(struct dw_server *srv);

/* Drops the runs answered after the loop ended (shutdown). */
void dw__stream_free_done(struct dw_server *srv);

/* Shutting down: every socket closes (1001) once the frames it sent are answered. */
void dw__stream_close_all(struct dw_server *srv);

/* The publish sockets open now (a walk: for the stats and the shutdown). */
size_t dw__stream_count(struct dw_server *srv);

/* The heartbeat: pings idle sockets, hangs up those that stopped answering. */
void dw__stream_sweep(struct dw_server *srv, int64_t now);

/* conn.c: writes a WebSocket ping carrying sent_at (from WRITEABLE). Returns -1 when the
 * socket failed. */
int dw__write_ping(struct lws *wsi, int64_t sent_at);

/* conn.c: writes the refusal of an upgrade (an HTTP answer); returns what CONFIRM_UPGRADE
 * returns. */
int dw__refuse_upgrade(struct lws *wsi, int status, const char *why);

/* conn.c: the operator API's actions on one connection (operator.c). */

/* Starts conn's close with code and reason (copied; at most 123 bytes), after what is queued
 * now, within a few seconds whatever the client does. False when it was closing already. */
bool dw__conn_kick(struct dw_conn *conn, unsigned short code, const char *reason);

/* Subscribes (subscribe) or unsubscribes conn to channel, unchecked but for
 * --max-subscriptions, and tells the client the server did it when something changed. Returns
 * what dw__hub_subscribe or dw__hub_unsubscribe returned. */
int dw__conn_server_subscribe(struct dw_server *srv, struct dw_conn *conn, const char *channel,
                              bool subscribe);

/* ---- operator.c: POST /api/websocket/users/<id>/<action>, and bans --------------------- */

enum dw_operator_action {
    DW_OPERATOR_NONE = 0,
    DW_OPERATOR_DISCONNECT,
    DW_OPERATOR_SUBSCRIBE,
    DW_OPERATOR_UNSUBSCRIBE,
};

/* Largest body an operator POST takes (413 past it). */
#define DW_OPERATOR_BODY_MAX 1024

/* The action named by the last part of a user's path ("disconnect"), or DW_OPERATOR_NONE. */
enum dw_operator_action dw__operator_action(const char *name);

/* thread: io. Does action for user_id with body (len bytes, NULL or len 0: none), borrowed for
 * the duration of the call, and, with the nodes' bus, sends it to the other nodes. Returns the
 * HTTP status; *text (a new string of *len bytes) is the JSON answer; *forwarded: whether the
 * action was queued for the other nodes (the caller answers once Redis took it: dw_bus_fence). */
unsigned dw__operator_run(struct dw_server *srv, enum dw_operator_action action,
                          const char *user_id, const char *body, size_t len, char **text,
                          size_t *text_len, bool *forwarded);

/* thread: io. Applies the actions the other nodes sent (dw_server_operator_heard, server.h:
 * queued in srv->ops), in their order,
 * as a request here would, without forwarding them again. */
void dw__operator_drain(struct dw_server *srv);

/* thread: io. Until when (realtime ns) user_id is banned, or 0 when it is not. An expired ban
 * is dropped here. */
int64_t dw__operator_banned_until(struct dw_server *srv, const char *user_id);

/* ---- stats.c -------------------------------------------------------------------------- */

/* The /api/websocket/stats document. Returns a new object. */
struct json_object *dw__stats_service(struct dw_server *srv);

/* This node's figures, as the bus announces them to the others. */
struct dw_bus_figures;
void dw__stats_figures(struct dw_server *srv, struct dw_bus_figures *out);

/* The /api/websocket/connections document, at most limit connections listed. New object. */
struct json_object *dw__stats_connections(struct dw_server *srv, unsigned limit);

/* The per-user document, or NULL when user_id has no connection (and, for the operator, no
 * ban). for_operator (the HTTP API) adds each connection's address and the ban; a client's
 * get_stats gets neither. New object. */
struct json_object *dw__stats_user(struct dw_server *srv, const char *user_id, bool for_operator);

/* ---- metrics.c ------------------------------------------------------------------------ */

/* The GET /metrics page (Prometheus text, metrics.h). Returns a new string of *len bytes. */
char *dw__metrics_render(struct dw_server *srv, size_t *len);

/* conn is closing (LWS_CALLBACK_CLOSED, before its state moves to GONE): counts its close by
 * cause and its lifetime. */
struct dw_conn;
void dw__metrics_conn_closed(struct dw_server *srv, struct dw_conn *conn);

/* The total of a count by message type (srv->metrics' sent_by_type, dropped_by_type): the
 * stats' total_sent and total_dropped. */
static inline uint64_t dw__metrics_total(const uint64_t by_type[DW_MSG__COUNT])
{
    uint64_t n = 0;

    for (int i = 0; i < DW_MSG__COUNT; i++)
        n += by_type[i];
    return n;
}

/* m was written to a socket at now (monotonic ns; replay: m was read back from the inbox):
 * counted by type and, when it is a published message (accepted_at set) not replayed, its
 * latency from when it was built. The write path's only cost for /metrics: a few adds, a shift and
 * a clz per message. */
static inline void dw__metrics_written(struct dw_server *srv, const struct dw_msg *m, int64_t now,
                                       bool replay)
{
    struct dw_io_metrics *mx = &srv->metrics;
    uint64_t lat, x;
    unsigned b;

    mx->sent_by_type[m->type]++;
    if (replay || !m->accepted_at)
        return;
    lat = now > m->accepted_at ? (uint64_t)(now - m->accepted_at) : 1;
    x = (lat - 1) >> DW_LATENCY_SHIFT;
    b = x ? 64u - (unsigned)__builtin_clzll(x) : 0;
    mx->latency[b < DW_LATENCY_BUCKETS ? b : DW_LATENCY_BUCKETS]++;
    mx->latency_sum_ns += lat;
}

#endif
