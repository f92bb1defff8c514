/*
 * dealwire-bench — the state every bench module shares: options, the run, the two kinds of
 * connection (WebSocket clients and HTTP publishers), and the calls between modules.
 *
 * One thread runs everything from one epoll loop (main.c), so nothing here is synchronized and
 * no function may block. The server is dealwire, or nginx + nchan for comparison (--server
 * nchan, bench/compare): the two differ only in URLs, in how a connection becomes ready and
 * in the publish answer; flow control, checks and timing are the same code. The clients may be
 * spread over several dealwire nodes (--ports) that share messages over Redis: every client
 * must get every message once, in order, whichever node it is on, while a publish answer counts
 * only the recipients on the node it went to (--publish-port). Module map:
 *   ws.c        RFC 6455 client: connect, handshake, frames, ping/pong, close
 *   http.c      the publisher connections, in one of three shapes (--publish-mode): HTTP/1.1
 *               keep-alive with one request in flight, HTTP/1.1 pipelined, or a WebSocket
 *               (dealwire's /ws/publish, nchan's websocket publisher)
 *   net.c       the byte stream under both: plain TCP or TLS (--tls), and its epoll interest
 *   scenario.c  what is published to whom, flow control, receive checks, completeness; the
 *               replay scenario's set-up (stored messages) and its checks of seqs
 *   report.c    progress line, result table, the JSON result line, /proc readings
 *   main.c      options, limits, the event loop and the run's phases
 *   hist.c      latency histogram
 */
#ifndef DWB_BENCH_H
#define DWB_BENCH_H

#include "hist.h"

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define DWB_NAME "dealwire-bench"
/* Largest server frame accepted: the daemon's messages are a few KiB at most. */
#define DWB_MAX_FRAME (1u << 20)
/* Bytes read from one socket per readiness event: keeps the loop fair between sockets. */
#define DWB_READ_CHUNK ((size_t)64 * 1024)
/* Files the bench needs besides its sockets: stdio, epoll, /proc readings, slack. */
#define DWB_FD_RESERVE 16
/* Processes whose RSS --server-pid may sum (nginx's workers). */
#define DWB_MAX_PIDS 8
/* Daemon ports --ports may name (nodes sharing messages over Redis). */
#define DWB_MAX_PORTS 16

enum dwb_scenario {
    DWB_FANOUT,
    DWB_TARGETED,
    DWB_CHANNELS,
    DWB_PACED,
    DWB_IDLE,
    DWB_CONNECT,
    DWB_REPLAY, /* store M critical messages per user (untimed), then N reconnects replay them */
};

/* How a publisher connection carries its requests (--publish-mode). */
enum dwb_publish_mode {
    DWB_PUBLISH_HTTP,     /* keep-alive HTTP/1.1, one request in flight */
    DWB_PUBLISH_PIPELINE, /* HTTP/1.1 pipelined: up to --in-flight requests sent back to back */
    DWB_PUBLISH_WS,       /* WebSocket: up to --in-flight publish frames outstanding */
};

/* The server under test. */
enum dwb_server {
    DWB_SERVER_DEALWIRE, /* /ws/events?user_id=, connection_established, POST /api/publish */
    DWB_SERVER_NCHAN,    /* nginx + nchan (bench/nchan.conf): /sub/<ch>, POST /pub/<ch> */
};

/* The command line, after defaults were resolved (main.c). */
struct dwb_opts {
    struct in_addr host;
    char host_text[INET_ADDRSTRLEN];
    /* The clients' ports (--ports, or the one --port): connection i connects to
     * ports[i % nports]. Several are nodes of one cluster (dealwire --redis), each delivering
     * every message to its own clients. */
    unsigned ports[DWB_MAX_PORTS];
    unsigned nports;
    unsigned publish_port; /* the publishers' (--publish-port; ports[0] by default) */
    enum dwb_server server;
    enum dwb_scenario scenario;
    unsigned conns;      /* WebSocket clients */
    unsigned sources;    /* source addresses 127.0.0.1 .. 127.0.0.<sources> */
    unsigned publishers; /* publisher connections: P ordered producers */
    unsigned batch;      /* messages per publish request */
    unsigned msg_size;   /* approximate size of one delivered message, bytes */
    unsigned window;     /* W: messages outstanding per client */
    double duration;     /* seconds of publishing (0: bounded by messages only) */
    uint64_t messages;   /* messages to publish (0: bounded by duration only) */
    double rate;         /* paced: messages per second */
    unsigned channels;   /* channels scenario: number of channels */
    unsigned subs;       /* channels scenario: subscriptions per connection */
    uint64_t users;      /* targeted: user ids drawn from users; the first conns are connected */
    uint32_t backlog;    /* replay: critical messages stored per user before the connections */
    uint64_t last_seq;   /* replay: the last_seq every connection resumes from */
    double timeout;      /* hard bound on the whole run, seconds */
    unsigned parallel;   /* connection attempts in flight */
    double connect_timeout;
    double settle;        /* idle: seconds between the last connect and the RSS reading */
    double drain_timeout; /* seconds without a delivery before the drain gives up */
    pid_t server_pids[DWB_MAX_PIDS]; /* idle: whose RSS is summed; else whose CPU is read */
    unsigned npids;
    const char *prefix; /* user id prefix */
    uint64_t seed;
    bool quiet;                  /* no progress lines */
    bool tls;                    /* every connection over TLS (wss, https) */
    bool tls_insecure;           /* --tls-insecure: the certificate is not verified */
    const char *tls_ca;          /* --tls-ca: PEM file of the certificates to trust */
    const char *tls_server_name; /* SNI, and the name the certificate must match */
    bool tls_resume;             /* --tls-resume: resume the last session when there is one */

    /* How each publisher sends (--publish-mode), how many requests each connection may have
     * outstanding (--in-flight; http: 1), and the token they carry (--api-token, or NULL). */
    enum dwb_publish_mode publish_mode;
    unsigned in_flight;
    const char *api_token;

    /* fanout, paced: the channel the clients subscribe to and the messages go to (--channel;
     * NULL: "target":"all", nchan's channel "all"). */
    const char *channel;
    /* --marks: SIGUSR1 opens a span and a second one closes it; the latencies of the messages
     * published inside it are kept apart (bench/compare's storm scenario). */
    bool marks;
};

struct ssl_st;     /* OpenSSL's SSL */
struct ssl_ctx_st; /* OpenSSL's SSL_CTX */

/* The first member of both connection kinds: epoll's data.ptr points here. Besides the
 * socket it holds the stream's state, which only net.c changes. */
enum dwb_fd_kind { DWB_FD_WS, DWB_FD_PUB };
struct dwb_fd {
    enum dwb_fd_kind kind;
    int fd;
    bool want_out;      /* the owner waits for writability: connecting, or bytes queued */
    bool out_on;        /* EPOLLOUT is registered */
    uint8_t tls_state;  /* net.c: what the last SSL call waits for, or left inside OpenSSL */
    struct ssl_st *ssl; /* --tls: this connection's TLS state, once TCP has connected */
};

enum dwb_ws_state {
    DWB_WS_NEW,        /* not started */
    DWB_WS_CONNECTING, /* connect() in progress, then the TLS handshake (--tls) */
    DWB_WS_HANDSHAKE,  /* upgrade request sent, waiting for 101 */
    DWB_WS_OPEN,       /* upgraded, waiting for connection_established */
    DWB_WS_READY,      /* connection_established received */
    DWB_WS_CLOSING,    /* close frame sent or received, waiting for the server's EOF */
    DWB_WS_CLOSED,     /* socket closed after a clean end */
    DWB_WS_FAILED,     /* never became ready, or lost while ready */
};

/* Per (connection, producer[, channel]) stream: the next expected seq and a bitmap of the 64
 * seqs below it (bit i: next - 1 - i arrived), to tell duplicates from late arrivals. */
struct dwb_stream {
    uint64_t next;
    uint64_t seen;
};

struct dwb_conn {
    struct dwb_fd ev;
    uint32_t index;
    uint8_t state;
    bool we_closed;   /* the close handshake was ours */
    bool lost;        /* went away while ready: expected is what it was owed then */
    bool local;       /* on --publish-port: the publish answer's "recipients" count it */
    uint16_t subs_ok; /* subscribe confirmations received */
    uint16_t port;    /* the daemon port it connects to (--ports, round-robin) */
    int64_t started_ns;
    char key[28];      /* Sec-WebSocket-Key, base64 */
    unsigned char *in; /* unparsed bytes: part of a frame or of the 101 answer */
    uint32_t in_len, in_cap;
    unsigned char *out; /* bytes the socket did not take yet */
    uint32_t out_len, out_cap;
    uint64_t recv;     /* unique data messages received */
    uint64_t expected; /* data messages published to it (targeted, channels; fanout: if lost;
                        * replay: welcome's last_seq - --last-seq) */
    /* replay: the seqs the set-up's publish answers gave this user (first, and how many came
     * one after the other from it), and the welcome's last_seq (-1 before the welcome). */
    int64_t seq_first;
    uint32_t seq_answers;
    int64_t welcome_seq;
    uint32_t *subs; /* channels scenario: this connection's channels */
    struct dwb_stream *streams;
};

/* A publisher connection's life: CLOSED -> CONNECTING (TCP, then TLS) -> [UPGRADING (ws: the
 * upgrade request sent, waiting for 101)] -> READY -> CLOSED. Requests go out only when READY. */
enum dwb_pub_state { DWB_PUB_CLOSED, DWB_PUB_CONNECTING, DWB_PUB_UPGRADING, DWB_PUB_READY };

/* One publish request written (or queued to be) and not answered yet. */
struct dwb_req {
    uint64_t id;              /* ws to dealwire: its "request_id", "r<id>" */
    uint32_t nmsgs;           /* messages in it */
    uint64_t want_recipients; /* recipients its answer should count: --publish-port's clients */
    uint64_t want_deliveries; /* deliveries it should make, on every port */
    uint32_t *targets;        /* its targets (connection or channel), batch entries */
    uint32_t *pseqs;          /* replay: each entry's index among its user's messages */
};

struct dwb_pub {
    struct dwb_fd ev;
    uint32_t index; /* the producer id carried in every message */
    uint8_t state;  /* enum dwb_pub_state */
    int64_t opened_ns;
    char *body;      /* the next request's body, written by the scenario */
    size_t body_cap; /* its capacity */
    char *out;       /* bytes queued for the socket: [out_off, out_len) not taken yet */
    size_t out_off, out_len, out_cap;
    char *resp; /* answer bytes read so far */
    size_t resp_len, resp_cap;
    /* Requests outstanding, oldest first: a ring of depth (--in-flight) slots. Answers come
     * back in order, so the oldest is the one the next answer is for. */
    struct dwb_req *reqs;
    unsigned depth, head, nreqs;
    uint64_t next_id; /* ws: the next request_id */
    char key[28];     /* ws: Sec-WebSocket-Key, base64 */
    uint64_t cursor;  /* replay set-up: messages of its users sent so far */
};

/* Longest --api-token. */
#define DWB_MAX_TOKEN 256

/* When CPU times are read (report.c, dwb_cpu_mark): replay, from the set-up's start to the
 * first connection to the last replayed message; the publishing scenarios, from the start of
 * publishing to the last delivery. */
enum dwb_cpu_mark { DWB_CPU_SETUP, DWB_CPU_CONNECT, DWB_CPU_PUBLISH, DWB_CPU_END, DWB_CPU_MARKS };

enum dwb_phase {
    DWB_PHASE_SETUP, /* replay: storing the messages to replay, before any connection */
    DWB_PHASE_CONNECT,
    DWB_PHASE_SUBSCRIBE,
    DWB_PHASE_SETTLE,
    DWB_PHASE_PUBLISH,
    DWB_PHASE_DRAIN,
    DWB_PHASE_CLOSE,
    DWB_PHASE_DONE,
};

/* Everything counted during a run. */
struct dwb_counts {
    uint64_t connected, connect_failed, lost, server_closes;
    uint64_t sent_msgs, sent_reqs, answered_reqs, http_errors, recipient_mismatch;
    uint64_t recv_msgs, recv_bytes, dup, ooo, malformed, misrouted, ws_errors, error_msgs;
    uint64_t offline; /* targeted with --users: messages to users with no connection */
    uint64_t pings, subs_failed;
    /* replay: messages stored by the set-up (answered with a seq), set-up answers whose seqs
     * do not follow each other per user, seqs outside (--last-seq, welcome's last_seq],
     * messages that are not the one their seq was given to, welcomes without the expected
     * last_seq, welcomes with "recovered" not true, connections that got all their seqs. */
    uint64_t stored, answer_seq_bad, unexpected_seq, wrong_message, welcome_bad, not_recovered;
    uint64_t caught_up;
    uint64_t tls_full, tls_resumed; /* TLS handshakes completed, full and resumed */
    uint16_t last_close_code;
};

struct dwb_run {
    struct dwb_opts opt;
    int epfd;
    enum dwb_phase phase;
    int64_t t0; /* start of the run */
    int64_t phase_started;
    int64_t connect_start, connect_end;
    int64_t subscribe_start, subscribe_end; /* channels, --channel: subscribes sent, confirmed */
    int64_t pub_start, pub_end;             /* first request written, publishing stopped */
    int64_t setup_start, setup_end;         /* replay: the untimed set-up */
    int64_t last_delivery;
    int64_t last_progress_ns;
    int64_t last_expire; /* last connect-timeout sweep */
    size_t producer_at;  /* where "producer": was in the last message (a search hint) */
    char first_error[256];
    bool timed_out, interrupted, aborted;

    struct dwb_conn *conns;
    unsigned next_conn;   /* next connection to start */
    unsigned inflight;    /* connections started and not yet ready or failed */
    unsigned expire_from; /* connections below this one are past their connect phase */
    unsigned ready;       /* connections ready now */
    unsigned ready_local; /* of those, on --publish-port */
    struct dwb_pub *pubs;
    unsigned subscribed; /* connections with every subscription confirmed */

    struct dwb_counts n;
    struct dwb_counts last;  /* at the previous progress line */
    struct dwb_hist lat;     /* publish to receive, ns */
    struct dwb_hist hs;      /* connect() to connection_established, ns */
    struct dwb_hist catchup; /* replay: connect() to the connection's last replayed message */
    /* --marks: publish to receive, ns, of the messages published inside the marked span:
     * from the first SIGUSR1 (mark_open) to the second (mark_close; 0 while open). */
    struct dwb_hist marked;
    int64_t mark_open, mark_close;
    unsigned marks_taken; /* SIGUSR1s seen (a third and later ones change nothing) */
    uint64_t marked_msgs; /* messages published inside the span */

    /* Publishing state (scenario.c). */
    unsigned keys;        /* seq spaces per producer: 1 (all), conns (targeted), channels */
    unsigned slots;       /* streams per connection per producer */
    uint32_t *seqs;       /* next seq, [producer * keys + key] */
    uint64_t sent_all;    /* messages published to all (fanout, paced) */
    uint64_t refused_all; /* of those, refused by the daemon (not 200) */
    uint64_t min_recv;    /* fanout: smallest recv over the connections */
    uint32_t *ring;       /* fanout: connections per recv value, ring over [min_recv, +mask] */
    uint32_t ring_mask;
    struct dwb_stream *streams; /* every connection's streams, one block */
    uint32_t *sub_block;        /* every connection's channels, one block */
    uint32_t **members;         /* channels: the connections of each channel */
    uint32_t *nmembers;
    uint32_t *live_channels; /* channels with at least one member */
    unsigned nlive;
    uint64_t expected_total, recv_total; /* deliveries expected / unique ones received */
    char *pad;
    uint64_t rng;

    struct ssl_ctx_st *tls_ctx; /* --tls: the run's one context (net.c) */
    /* What the first TLS handshake negotiated, for the report (empty until then). */
    char tls_version[16], tls_cipher[64], tls_group[32], tls_cert[160];

    /* CPU ms of each --server-pid and (last) of the bench itself at each mark, and when. */
    double cpu_ms[DWB_CPU_MARKS][DWB_MAX_PIDS + 1];
    int64_t cpu_at[DWB_CPU_MARKS];
    bool cpu_marked[DWB_CPU_MARKS];

    long rss_before_kb, rss_after_kb;
    unsigned rss_conns; /* connections ready when rss_after_kb was read */
    char sockstat[512]; /* /proc/net/sockstat when the RSS was read */
};

/* xorshift64*: cheap, deterministic with --seed. */
static inline uint64_t dwb_rand(struct dwb_run *run)
{
    uint64_t x = run->rng;

    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    run->rng = x;
    return x * 0x2545F4914F6CDD1DULL;
}

/* ---- main.c ---------------------------------------------------------------------------- */

/* Monotonic clock, ns. */
int64_t dwb_now_ns(void);
/* Records the first error of the run (printf-style), for the final report. */
void dwb_note_error(struct dwb_run *run, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* ---- scenario.c: called by ws.c and http.c ------------------------------------------- */

/* A connection received connection_established (its text in [p, p + n); nchan: none, NULL). */
void dwb_on_ready(struct dwb_run *run, struct dwb_conn *c, int64_t now, const char *p, size_t n);
/* A text message arrived on a ready connection (payload borrowed for the call). */
void dwb_on_text(struct dwb_run *run, struct dwb_conn *c, const char *p, size_t n, int64_t now);
/* A connection failed before it was ready, or was lost after. */
void dwb_on_conn_failed(struct dwb_run *run, struct dwb_conn *c, bool was_ready);
/* Whether status answers a publish that the server accepted: 200 from dealwire, 201 (the
 * channel had subscribers) or 202 (it had none) from nchan. */
bool dwb_publish_ok(const struct dwb_run *run, unsigned status);
/* The answer to pub's request req arrived: its status (HTTP, or the one a WebSocket answer
 * carries), its "recipients" (-1 when absent) and its body (borrowed for the call; NULL and 0
 * when no answer came: status 0, its fate unknown). req is pub's oldest outstanding request,
 * already taken off its ring: it is the caller's again after the call. */
void dwb_on_answer(struct dwb_run *run, struct dwb_pub *pub, const struct dwb_req *req,
                   unsigned status, long long recipients, const char *body, size_t len);

/* ---- scenario.c: called by main.c ------------------------------------------------------ */

/* Allocates the scenario state (seqs, streams, ring, channel members). Returns 0 or -ENOMEM. */
int dwb_scenario_init(struct dwb_run *run);
void dwb_scenario_free(struct dwb_run *run);
/* Sends every connection its subscribe commands (channels scenario, --channel). */
void dwb_scenario_subscribe(struct dwb_run *run);
/* The channel a message to everyone goes to: --channel, or nchan's "all". */
const char *dwb_scenario_all_channel(const struct dwb_run *run);
/* Number of connections whose subscriptions are all confirmed. */
unsigned dwb_scenario_subscribed(const struct dwb_run *run);
/* replay: opens the publishers for the set-up. */
void dwb_scenario_setup_start(struct dwb_run *run, int64_t now);
/* replay: gives every ready publisher its next batches of set-up messages. Returns whether
 * the set-up is over: every message sent and answered. */
bool dwb_scenario_setup_step(struct dwb_run *run, int64_t now);
/* Gives every ready publisher requests, up to its --in-flight, when flow control and pacing
 * allow. */
void dwb_scenario_pump(struct dwb_run *run, int64_t now);
/* Whether publishing should stop now (duration or message count reached). */
bool dwb_scenario_publish_done(const struct dwb_run *run, int64_t now);
/* Missing deliveries over the connections to port (0: every connection), and unexpected
 * extra ones. */
void dwb_scenario_missing(const struct dwb_run *run, unsigned port, uint64_t *missing,
                          uint64_t *extra);
/* W as used: the window, or 0 when the scenario has none. */
unsigned dwb_scenario_window(const struct dwb_run *run);
const char *dwb_scenario_name(enum dwb_scenario s);
const char *dwb_server_name(enum dwb_server s);
const char *dwb_publish_mode_name(enum dwb_publish_mode m);
/* nchan: the channel connection c subscribes to (/sub/<channel>), into out: --channel, "all"
 * or (targeted) the user's own. */
void dwb_scenario_channel(const struct dwb_run *run, const struct dwb_conn *c, char *out,
                          size_t size);

/* ---- report.c -------------------------------------------------------------------------- */

/* Prints a progress line on stderr (about once per second). */
void dwb_report_progress(struct dwb_run *run, int64_t now);
/* Prints the result table (stdout) and the JSON result line. Returns whether it is complete. */
bool dwb_report_final(struct dwb_run *run);
/* VmRSS of pid in KiB, or -1. */
long dwb_read_rss_kb(pid_t pid);
/* Sum of the VmRSS of --server-pid's processes in KiB, or -1 when one cannot be read. */
long dwb_read_server_rss_kb(const struct dwb_opts *o);
/* CPU time (user + system) of pid in ms, from /proc/<pid>/stat, or -1. */
double dwb_read_cpu_ms(pid_t pid);
/* Records the CPU times of --server-pid's processes and of the bench at mark. */
void dwb_cpu_mark(struct dwb_run *run, enum dwb_cpu_mark mark);
/* Copies /proc/net/sockstat's first lines (sockets, TCP) into out, NUL-terminated. */
void dwb_read_sockstat(char *out, size_t size);

#endif
