/*
 * conn — DESIGN: one WebSocket connection on the I/O thread: admission, the welcome, client
 * commands, the heartbeat, and the write path.
 *
 * Write path (docs/architecture.md, "The write path"): messages are framed once by their producer,
 * so the frames queued for a connection are copied back to back into the I/O thread's one write
 * buffer and sent with a single RAW lws_write: one syscall for many frames. A frame larger
 * than the buffer goes alone, straight from the message. The first write happens when the
 * ready queue is drained, not on WRITEABLE: asking for WRITEABLE first costs one more pass of
 * the event loop (with poll, a scan of every socket) before the first byte goes out, which
 * measured as a quarter of the daemon's CPU at 100 messages/s to 1,000 clients. WRITEABLE
 * still carries everything that must wait its turn: what did not fit in one write, a write
 * after lws kept part of the previous one (lws_partial_buffered), pings and closes. lws
 * drains a kept part before the next WRITEABLE.
 *
 * A drain writes DW_DRAIN_SLICE connections, then lets the loop take a pass before the rest
 * (self-woken), and the answers to publishes go out before it: a publisher that waits for
 * each answer sends its next request while the drain still writes the previous message, its
 * messages join the writes of the connections not yet written, and one write carries several
 * of them. Without the slices a serial publisher moved in lock-step with the drain, one
 * message per write (issue 14). A slice grows after a pass that accepted or lost sockets and
 * took longer than the slice itself (next_slice): in a storm of connects or closes a pass
 * holds hundreds of handshakes, and 63 slices of 16 to reach 1,000 clients held a message for
 * a hundred milliseconds; so the connections already in get at least half of the loop's time.
 *
 * Slow consumers: the bound (--queue-size messages, --queue-bytes bytes) counts what the
 * socket could not take. A turn writes as much as the socket takes (up to WRITE_BURST_MAX
 * writes). Only a drain that finds the socket still full from an earlier turn (lws holds part
 * of a write: lws_partial_buffered) trims what is queued to the bound, oldest non-critical
 * first; WRITEABLE, which means the socket took bytes, never trims. So a burst to a client
 * that keeps up goes out whole, and a client that takes nothing holds at most the bound plus
 * what arrived in one turn.
 * Three overflows at least a second apart without a successful write between them (the
 * seed's 3-strike rule: the client has taken nothing for two seconds while its outbox was
 * full) close the connection. A critical message is never dropped: when critical messages
 * alone pass the bound, the connection closes (1008 "slow consumer") after what it can still
 * take, and its client resumes from the inbox.
 */
#define DW_LOG_MODULE "conn"
#include "server_int.h"
#include "dealwire/auth.h"
#include "dealwire/inbox.h"
#include "dealwire/ipcount.h"
#include "dealwire/log.h"
#include "dealwire/mem.h"
#include "dealwire/msg.h"
#include "dealwire/proto.h"
#include "dealwire/thread.h"
#include "dealwire/time.h"

#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <json-c/json.h>

#define WS_PATH           "/ws/events"
#define STRIKES_MAX       3
#define STRIKE_SPACING_NS DW_NSEC_PER_SEC
/* Close code when the connection's token expires (docs/protocol.md): reconnect with a new
 * token. Like 1001, it comes after what was queued. */
#define CLOSE_TOKEN_EXPIRED 4001
/* Seconds a slow consumer has to take its close frame before lws hangs up. */
#define SLOW_CLOSE_GRACE_S 5

/* Connections one drain writes before the loop takes another pass (dw__conn_drain_ready):
 * about a millisecond of writes. */
#define DW_DRAIN_SLICE     16
#define DW_DRAIN_SLICE_MAX 65536
#define DW_DRAIN_LOADED_NS (DW_NSEC_PER_SEC / 1000)
#define DW_DRAIN_CHURN     16
/* The drain reads the clock for the delivery-latency histogram (metrics.c) once per this many
 * connections, not at each write: a clock read (18 ns here) per write was a few percent of a
 * fan-out's time (issue 15). A latency is then short by at most the time of that many writes. */
#define DW_DRAIN_CLOCK_EVERY 16

/* RAW writes of up to DW_WRITE_BATCH one connection gets in one turn while its socket takes
 * them: 1 MiB, so a burst to a client that keeps up goes out at once, and one connection cannot
 * hold the I/O thread for long. */
#define WRITE_BURST_MAX 16

/* ==========================================================================================
 * The object: references (conn_int.h has its lifetime)
 */

void dw__conn_ref(struct dw_conn *conn)
{
    atomic_fetch_add_explicit(&conn->refs, 1, memory_order_relaxed);
}

void dw__conn_unref(struct dw_conn *conn)
{
    unsigned old = atomic_fetch_sub_explicit(&conn->refs, 1, memory_order_acq_rel);

    if (old == 0)
        dw_panic("connection refcount underflow");
    if (old > 1)
        return;
    dw_outbox_destroy(&conn->outbox);
    free(conn->io.rx);
    free(conn->io.grants);
    free(conn->io.seq_ahead);
    free(conn->io.close_text);
    free(conn);
}

/* ==========================================================================================
 * Admission, the welcome and client commands
 */

/* dw_log_event for one connection: each line starts "connection <id> (user <user id>): ",
 * and its fields start with conn, user and address. */
static void conn_vlog(enum dw_log_level level, const struct dw_conn *conn, const char *event,
                      const struct dw_log_field *fields, size_t n, const char *fmt, va_list ap)
    __attribute__((format(printf, 6, 0)));

static void conn_vlog(enum dw_log_level level, const struct dw_conn *conn, const char *event,
                      const struct dw_log_field *fields, size_t n, const char *fmt, va_list ap)
{
    char text[256], peer[DW_IP_TEXT_MAX];
    struct dw_log_field all[12] = {DW_LOG_INT("conn", conn->id), DW_LOG_STR("user", conn->user->id),
                                   DW_LOG_STR("address", peer)};
    size_t k = 2;

    if (conn->io.wsi) { /* NULL once closed: the line of the open had the address */
        dw__sock_address(conn->io.wsi, peer);
        k = 3;
    }
    for (size_t i = 0; i < n && k < sizeof(all) / sizeof(all[0]); i++)
        all[k++] = fields[i];
    vsnprintf(text, sizeof(text), fmt, ap);
    dw__log_event(level, DW_LOG_MODULE, event, all, k, "connection %llu (user %s): %s",
                  (unsigned long long)conn->id, conn->user->id, text);
}

static void conn_log(enum dw_log_level level, const struct dw_conn *conn, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void conn_log(enum dw_log_level level, const struct dw_conn *conn, const char *fmt, ...)
{
    va_list ap;

    if ((int)level > atomic_load_explicit(&dw__log_level, memory_order_relaxed))
        return;
    va_start(ap, fmt);
    conn_vlog(level, conn, NULL, NULL, 0, fmt, ap);
    va_end(ap);
}

/* conn_log with an event and fields, as dw_log_event takes them. */
#define conn_event(level, conn, event, fields, ...)                                                \
    do {                                                                                           \
        if ((int)(level) <= atomic_load_explicit(&dw__log_level, memory_order_relaxed))            \
            conn_log_fields((level), (conn), (event), DW_LOG_FIELDS(fields), __VA_ARGS__);         \
    } while (0)

static void conn_log_fields(enum dw_log_level level, const struct dw_conn *conn, const char *event,
                            const struct dw_log_field *fields, size_t n, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

static void conn_log_fields(enum dw_log_level level, const struct dw_conn *conn, const char *event,
                            const struct dw_log_field *fields, size_t n, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    conn_vlog(level, conn, event, fields, n, fmt, ap);
    va_end(ap);
}

/* Reads the user_id query argument into buf (DW_USER_ID_MAX + 1 bytes). Returns 0, -ENOENT
 * when absent, -EINVAL when it is not a valid user id (a %00 inside it included), -EEXIST
 * when it is given twice, -EBADMSG when an argument is not name=value. lws splits the query
 * at ';' as well as '&' (docs/security.md): "user_id=a;b" is user_id=a and an argument "b",
 * which is refused here, so that no one reads that query as the user "a;b". */
static int read_user_id(struct lws *wsi, char *buf)
{
    char arg[DW_USER_ID_MAX + 64];
    const size_t name_len = strlen("user_id=");
    bool found = false;

    for (int i = 0;; i++) {
        int len = lws_hdr_fragment_length(wsi, WSI_TOKEN_HTTP_URI_ARGS, i);
        int n;

        if (len <= 0) {
            /* past the last argument, or an empty one ("?user_id=a&") */
            if (lws_hdr_copy_fragment(wsi, arg, (int)sizeof(arg), WSI_TOKEN_HTTP_URI_ARGS, i) < 0)
                break;
            continue;
        }
        if ((size_t)len >= sizeof(arg))
            continue; /* longer than any user_id= argument can be: another argument */
        n = lws_hdr_copy_fragment(wsi, arg, (int)sizeof(arg), WSI_TOKEN_HTTP_URI_ARGS, i);
        if (n < 0)
            break;
        /* lws 4.1 reads a trailing '&' as an argument "/": nothing was given there. */
        if (strcmp(arg, "/") == 0)
            continue;
        if (!memchr(arg, '=', (size_t)n))
            return -EBADMSG;
        if (strncmp(arg, "user_id=", name_len) != 0)
            continue;
        if (found)
            return -EEXIST;
        /* lws url-decodes: a shorter string than the copy means an embedded NUL. */
        if (strlen(arg) != (size_t)n || !dw_proto_user_id_is_valid(arg + name_len))
            return -EINVAL;
        memcpy(buf, arg + name_len, (size_t)n - name_len + 1);
        found = true;
    }
    return found ? 0 : -ENOENT;
}

/* Reads the optional last_seq query argument (the highest seq the client handled) into *out.
 * Returns 0, -ENOENT when absent, -EINVAL when it is not a whole number from 0 to 2^63 - 1
 * written in decimal digits, or when it is given twice. */
static int read_last_seq(struct lws *wsi, int64_t *out)
{
    static const char name[] = "last_seq=";
    bool found = false;

    for (int i = 0;; i++) {
        int len = lws_hdr_fragment_length(wsi, WSI_TOKEN_HTTP_URI_ARGS, i);
        char small[64], *arg = small;
        int n;

        if (len <= 0) {
            if (lws_hdr_copy_fragment(wsi, small, (int)sizeof(small), WSI_TOKEN_HTTP_URI_ARGS, i) <
                0)
                break;
            continue;
        }
        /* A valid last_seq argument fits the stack buffer; only a longer argument (a token, a
         * last_seq too long to be valid) costs an allocation. */
        if ((size_t)len >= sizeof(small))
            arg = dw_xmalloc((size_t)len + 1);
        n = lws_hdr_copy_fragment(wsi, arg, len + 1, WSI_TOKEN_HTTP_URI_ARGS, i);
        if (n > 0 && strncmp(arg, name, sizeof(name) - 1) == 0) {
            const char *v = arg + sizeof(name) - 1;
            size_t digits = strspn(v, "0123456789");
            char *end;
            long long value;

            errno = 0;
            value = digits ? strtoll(v, &end, 10) : -1;
            if (found || digits == 0 || v[digits] != '\0' || (size_t)n != strlen(arg) ||
                errno == ERANGE || value < 0) {
                if (arg != small)
                    free(arg);
                return -EINVAL;
            }
            *out = value;
            found = true;
        }
        if (arg != small)
            free(arg);
        if (n < 0)
            break;
    }
    return found ? 0 : -ENOENT;
}

/* Answers an upgrade request with status and a JSON error, written by hand: at this point
 * lws would label its own status line HTTP/1.0, which WebSocket clients reject. */
int dw__write_ping(struct lws *wsi, int64_t sent_at)
{
    /* A payload (the send time) because lws does not report empty pongs; seven bits a byte,
     * so that it is ASCII: lws 4.1 checks a pong's payload as UTF-8 when the client's last
     * message was text (ops-ws.c leaves check_utf8 set), and closed such a client 1007 "bad
     * utf8" at its first pong. */
    unsigned char ping[LWS_PRE + 8];

    for (int i = 0; i < 8; i++)
        ping[LWS_PRE + i] = (unsigned char)(((uint64_t)sent_at >> (49 - 7 * i)) & 0x7f);
    return lws_write(wsi, ping + LWS_PRE, 8, LWS_WRITE_PING) < 0 ? -1 : 0;
}

int dw__refuse_upgrade(struct lws *wsi, int status, const char *why)
{
    return dw__http_write_refusal(wsi, status, why) < 0 ? -1 : 1;
}

/* Is the upgrade's Origin header (if any) one of --allowed-origins? */
static bool origin_allowed(struct dw_server *srv, struct lws *wsi)
{
    char origin[256];
    int n;

    if (!dw_auth_origins_enforced(srv->auth) || lws_hdr_total_length(wsi, WSI_TOKEN_ORIGIN) <= 0)
        return true;
    n = lws_hdr_copy(wsi, origin, (int)sizeof(origin), WSI_TOKEN_ORIGIN);
    return n > 0 && dw_auth_origin_allowed(srv->auth, origin);
}

/* Finds the upgrade's token (auth.h says where it may be) and verifies it. Returns 0 with
 * *claims set, or -1 with *reason a static phrase. buf holds header copies; the token is
 * never logged. */
static int authenticate(struct dw_server *srv, struct lws *wsi, struct dw_jwt_claims *claims,
                        const char **reason)
{
    char buf[DW_JWT_MAX_LEN + 64];
    const char *token = NULL;
    size_t len = 0;

    if (lws_hdr_copy(wsi, buf, (int)sizeof(buf), WSI_TOKEN_HTTP_AUTHORIZATION) > 0) {
        if (!dw_auth_bearer(buf, &token, &len)) {
            *reason = "Authorization is not \"Bearer <token>\"";
            return -1;
        }
    } else if (lws_hdr_copy(wsi, buf, (int)sizeof(buf), WSI_TOKEN_PROTOCOL) > 0 &&
               dw_auth_protocol_token(buf, &token, &len)) {
        /* found in Sec-WebSocket-Protocol */
    } else {
        for (int i = 0; !token; i++) {
            int n = lws_hdr_copy_fragment(wsi, buf, (int)sizeof(buf), WSI_TOKEN_HTTP_URI_ARGS, i);

            if (n < 0)
                break;
            if (strncmp(buf, "token=", 6) == 0) {
                token = buf + 6;
                len = (size_t)n - 6;
            }
        }
    }
    if (!token) {
        *reason = "no token";
        return -1;
    }
    return dw_auth_verify(srv->auth, token, len, dw_now_realtime_ns() / DW_NSEC_PER_SEC, claims,
                          reason);
}

/* Does user_id hold --max-connections-per-user connections already? Past it a new one is
 * refused, not the oldest closed (docs/security.md says why). */
static bool user_is_full(struct dw_server *srv, const char *user_id)
{
    struct dw_user *u;
    unsigned n;

    dw_rcu_read_lock();
    u = dw__hub_find_user(srv->hub, user_id);
    n = u ? atomic_load_explicit(&u->nconns, memory_order_relaxed) : 0;
    dw_rcu_read_unlock();
    return n >= (unsigned)srv->cfg->max_connections_per_user;
}

/* Refuses the upgrade of a user that holds its maximum of connections (429). */
static int refuse_full_user(struct dw_server *srv, struct lws *wsi, const char *user_id)
{
    char why[128];

    srv->refusals.per_user++;
    dw_log_event(DW_LOG_DEBUG, "upgrade.refused",
                 (DW_LOG_STR("reason", "user connection limit"), DW_LOG_STR("user", user_id),
                  DW_LOG_STR("address", dw__sock_address(wsi, (char[DW_IP_TEXT_MAX]){""})),
                  DW_LOG_INT("status", DW_HTTP_TOO_MANY_REQUESTS)),
                 "upgrade for user %s refused: it holds %d connections", user_id,
                 srv->cfg->max_connections_per_user);
    snprintf(why, sizeof(why), "this user holds %d connections, the most allowed",
             srv->cfg->max_connections_per_user);
    return dw__refuse_upgrade(wsi, DW_HTTP_TOO_MANY_REQUESTS, why);
}

/* Holds (on) or lets go (off) the socket's partial segments. An upgrade accepted without an
 * inbox is corked until the welcome is written, so that the 101 and the welcome leave in one
 * segment: one packet for the kernel to carry and the client to read where there were two (in
 * the connect shape, 10,000 clients connecting at once, the kernel was 80 % of the time). */
static void cork(struct lws *wsi, int on)
{
    int fd = lws_get_socket_fd(wsi);

    if (fd >= 0)
        (void)setsockopt(fd, IPPROTO_TCP, TCP_CORK, &on, sizeof(on));
}

/* The upgrade of wsi is accepted: lws writes the 101 next and then calls ESTABLISHED. */
static int accept_upgrade(struct dw_server *srv, struct lws *wsi)
{
    if (!srv->inbox)
        cork(wsi, 1);
    return 0;
}

/* Refuses the upgrade of a user the operator API banned (403, saying until when), or of one
 * that holds its maximum of connections (user_is_full); else accepts it. */
static int admit_user(struct dw_server *srv, struct lws *wsi, const char *user_id)
{
    int64_t until = dw__operator_banned_until(srv, user_id);
    char why[96], ts[DW_TIME_ISO_LEN];

    if (until) {
        srv->refusals.banned++;
        dw_time_format_iso(ts, until);
        dw_log(DW_LOG_DEBUG, "upgrade for user %s refused: banned until %s", user_id, ts);
        snprintf(why, sizeof(why), "this user is banned until %s", ts);
        return dw__refuse_upgrade(wsi, HTTP_STATUS_FORBIDDEN, why);
    }
    if (user_is_full(srv, user_id))
        return refuse_full_user(srv, wsi, user_id);
    return accept_upgrade(srv, wsi);
}

int dw__conn_confirm_upgrade(struct dw_server *srv, struct lws *wsi)
{
    char path[128], uid[DW_USER_ID_MAX + 1], peer[DW_IP_TEXT_MAX], why_buf[128];
    int status = 0;
    const char *why = NULL, *reason;

    why = dw__http_line_error(wsi);
    if (why)
        return dw__refuse_upgrade(wsi, HTTP_STATUS_BAD_REQUEST, why);
    if (dw__sock_forwarded(srv, wsi) < 0)
        return dw__refuse_upgrade(wsi, DW_HTTP_TOO_MANY_REQUESTS,
                                  "this address holds the most connections allowed");
    if (dw__stream_is_path(wsi))
        return dw__stream_confirm_upgrade(srv, wsi);
    if (srv->draining) {
        status = HTTP_STATUS_SERVICE_UNAVAILABLE;
        why = "server is shutting down";
    } else if (lws_hdr_copy(wsi, path, sizeof(path), WSI_TOKEN_GET_URI) <= 0 ||
               strcmp(path, WS_PATH) != 0) {
        status = HTTP_STATUS_NOT_FOUND;
        why = "WebSocket endpoint is " WS_PATH " (publishers: " DW_STREAM_PATH ")";
    } else if (dw_hub_connection_count(srv->hub) >= (size_t)srv->cfg->max_connections) {
        srv->refusals.capacity++;
        status = HTTP_STATUS_SERVICE_UNAVAILABLE;
        why = "server is at capacity, try again later";
    } else if (!origin_allowed(srv, wsi)) {
        srv->refusals.origin++;
        status = HTTP_STATUS_FORBIDDEN;
        why = "origin not allowed";
    } else if (read_last_seq(wsi, &(int64_t){0}) == -EINVAL) {
        status = HTTP_STATUS_BAD_REQUEST;
        why = "last_seq must be given once, as a whole number from 0 to 9223372036854775807";
    } else if (dw_auth_jwt_required(srv->auth)) {
        if (authenticate(srv, wsi, &srv->pending, &reason) == 0) {
            int r = admit_user(srv, wsi, srv->pending.sub);

            if (r == 0)
                srv->pending_wsi = wsi;
            return r;
        }
        srv->refusals.auth++;
        dw__sock_address(wsi, peer);
        dw_log_event(DW_LOG_INFO, "upgrade.refused",
                     (DW_LOG_STR("reason", reason), DW_LOG_STR("address", peer),
                      DW_LOG_INT("status", HTTP_STATUS_UNAUTHORIZED)),
                     "upgrade from %s refused: %s", peer, reason);
        snprintf(why_buf, sizeof(why_buf), "a valid token is required (%s)", reason);
        status = HTTP_STATUS_UNAUTHORIZED;
        why = why_buf;
    } else {
        switch (read_user_id(wsi, uid)) {
        case 0:
            return admit_user(srv, wsi, uid);
        case -ENOENT:
            status = HTTP_STATUS_BAD_REQUEST;
            why = "user_id query parameter is required";
            break;
        case -EEXIST:
            status = HTTP_STATUS_BAD_REQUEST;
            why = "user_id is given more than once";
            break;
        case -EBADMSG:
            status = HTTP_STATUS_BAD_REQUEST;
            why = "query arguments are name=value, separated by &";
            break;
        default:
            status = HTTP_STATUS_BAD_REQUEST;
            why = "user_id must be 1-128 characters of A-Z a-z 0-9 _ . : @ -";
            break;
        }
    }
    dw_log_event(DW_LOG_DEBUG, "upgrade.refused",
                 (DW_LOG_STR("reason", why),
                  DW_LOG_STR("address", dw__sock_address(wsi, (char[DW_IP_TEXT_MAX]){""})),
                  DW_LOG_INT("status", status)),
                 "upgrade refused (%d): %s", status, why);
    return dw__refuse_upgrade(wsi, status, why);
}

void dw__conn_send(struct dw_conn *conn, struct dw_msg *msg)
{
    /* Winning the scheduled flag here means conn is on no ready queue: the I/O thread is the
     * consumer, so it gives the flag straight back instead of queueing conn to itself. */
    if (dw_outbox_push(&conn->outbox, msg))
        dw_outbox_unschedule(&conn->outbox);
    if (conn->io.wsi)
        lws_callback_on_writable(conn->io.wsi);
}

/* Sends msg to conn and drops the caller's reference. */
static void reply(struct dw_conn *conn, struct dw_msg *msg)
{
    dw__conn_send(conn, msg);
    dw_msg_unref(msg);
}

static bool has_pending(struct dw_conn *conn);
static int write_queued(struct dw_server *srv, struct dw_conn *conn, struct lws *wsi);
static bool may_write_now(const struct dw_conn *conn);

/* Sends msg (the welcome) to conn, just upgraded, and drops the caller's reference: written at
 * once, since the socket has just taken the 101. Through WRITEABLE each connection cost a trip
 * through the loop and two epoll_ctl (POLLOUT on, then off) in a storm of connects. What the
 * socket does not take waits for WRITEABLE as usual. Returns -1 when the write failed. */
static int reply_now(struct dw_server *srv, struct dw_conn *conn, struct dw_msg *msg)
{
    struct lws *wsi = conn->io.wsi;

    if (dw_outbox_push(&conn->outbox, msg))
        dw_outbox_unschedule(&conn->outbox);
    dw_msg_unref(msg);
    if (!may_write_now(conn)) {
        lws_callback_on_writable(wsi);
        return 0;
    }
    dw_outbox_splice(&conn->outbox);
    if (write_queued(srv, conn, wsi) < 0)
        return -1;
    if (has_pending(conn))
        lws_callback_on_writable(wsi);
    return 0;
}

/* Makes the connection of wsi for user_id and registers it with the hub. */
static struct dw_conn *open_conn(struct dw_server *srv, struct lws *wsi, struct dw_pss *pss,
                                 const char *user_id, int64_t now)
{
    struct dw_conn *conn = dw__hub_conn_new(srv->hub);

    conn->io.wsi = wsi;
    conn->io.state = DW_CONN_OPEN;
    conn->io.connected_at = now;
    conn->io.last_activity_rt = now;
    conn->io.last_heartbeat_rt = now;
    conn->io.last_activity = dw_now_mono_ns();
    conn->io.tokens = srv->cfg->rate_burst;
    conn->io.refilled_at = conn->io.last_activity;
    pss->conn = conn;
    dw__hub_add(srv->hub, conn, user_id);
    srv->io.opened++;
    return conn;
}

int dw__conn_established(struct dw_server *srv, struct lws *wsi, struct dw_pss *pss)
{
    struct dw_conn *conn;
    int64_t now = dw_now_realtime_ns();

    DW_ASSERT_THREAD(DW_THREAD_IO);
    /* A WebSocket now: the heartbeat sweep watches it, not a socket deadline. */
    dw__sock_disarm(srv, wsi);
    dw__sock_role(wsi, DW_SOCK_CLIENT);
    if (dw_auth_jwt_required(srv->auth)) {
        struct dw_jwt_claims again, *claims = &srv->pending;
        const char *reason;

        if (srv->pending_wsi != wsi) {
            /* Not the upgrade confirm_upgrade just verified (lws did something else in
             * between): verify again rather than trust the slot. */
            claims = &again;
            if (authenticate(srv, wsi, claims, &reason) != 0)
                return -1;
        }
        srv->pending_wsi = NULL;
        conn = open_conn(srv, wsi, pss, claims->sub, now);
        conn->io.token_end = claims->exp + dw_auth_leeway(srv->auth);
        if (claims->n_channels) {
            conn->io.ngrants = claims->n_channels;
            conn->io.grants = dw_xmalloc(claims->n_channels * sizeof(*conn->io.grants));
            memcpy(conn->io.grants, claims->channels,
                   claims->n_channels * sizeof(*conn->io.grants));
        }
    } else {
        char uid[DW_USER_ID_MAX + 1];

        if (read_user_id(wsi, uid) != 0)
            return -1; /* confirm_upgrade already refused it; cannot happen */
        conn = open_conn(srv, wsi, pss, uid, now);
    }

    if (srv->inbox) {
        /* The welcome waits for the inbox: it carries the user's last_seq, and what the client
         * missed follows it (replay.c). */
        int64_t after;

        if (read_last_seq(wsi, &after) != 0)
            after = DW_INBOX_UNACKED; /* a device's first connection: what nobody acknowledged */
        dw__replay_start(srv, conn, after, false);
    } else {
        struct json_object *obj = dw__conn_welcome(srv, conn);
        int rc = reply_now(srv, conn, dw_msg_new_json(DW_MSG_CONNECTION_ESTABLISHED, 0, obj));

        cork(wsi, 0); /* the 101 and the welcome go out together (accept_upgrade) */
        json_object_put(obj);
        if (rc < 0)
            return -1;
    }
    conn_event(DW_LOG_DEBUG, conn, "conn.open", (), "opened");
    return 0;
}

struct json_object *dw__conn_welcome(struct dw_server *srv, struct dw_conn *conn)
{
    char ts[DW_TIME_ISO_LEN], idbuf[24];
    struct json_object *obj = json_object_new_object();

    dw_time_format_iso(ts, dw_now_realtime_ns());
    snprintf(idbuf, sizeof(idbuf), "%llu", (unsigned long long)conn->id);
    json_object_object_add(obj, "type", json_object_new_string("connection_established"));
    json_object_object_add(obj, "user_id", json_object_new_string(conn->user->id));
    json_object_object_add(obj, "connection_id", json_object_new_string(idbuf));
    json_object_object_add(obj, "server_time", json_object_new_string(ts));
    json_object_object_add(obj, "heartbeat_interval",
                           json_object_new_int(srv->cfg->heartbeat_interval));
    if (conn->io.token_end) {
        char end[DW_TIME_ISO_LEN];

        /* When the server will close the connection (4001): reconnect with a new token
         * before then. */
        dw_time_format_iso(end, conn->io.token_end * DW_NSEC_PER_SEC);
        json_object_object_add(obj, "token_expires_at", json_object_new_string(end));
    }
    json_object_object_add(obj, "timestamp", json_object_new_string(ts));
    return obj;
}

static struct dw_msg *stats_reply(struct dw_server *srv, struct dw_conn *conn)
{
    struct json_object *obj = json_object_new_object();
    struct json_object *stats = dw__stats_user(srv, conn->user->id, false);
    struct dw_msg *m;

    json_object_object_add(obj, "type", json_object_new_string("stats"));
    json_object_object_add(obj, "user_id", json_object_new_string(conn->user->id));
    json_object_object_add(obj, "stats", stats ? stats : json_object_new_object());
    m = dw_msg_new_json(DW_MSG_STATS, 0, obj);
    json_object_put(obj);
    return m;
}

/* May conn join channel? "user:<id>" is only for user <id>; it and "private-*" channels also
 * for a token whose "channels" claim lists them; any other channel for everyone. */
static bool may_join(const struct dw_conn *conn, const char *channel)
{
    bool user_channel = strncmp(channel, "user:", 5) == 0;

    if (user_channel && strcmp(channel + 5, conn->user->id) == 0)
        return true;
    if (!user_channel && strncmp(channel, "private-", 8) != 0)
        return true;
    for (unsigned i = 0; i < conn->io.ngrants; i++) {
        if (strcmp(conn->io.grants[i], channel) == 0)
            return true;
    }
    return false;
}

/* Takes one message from conn's rate-limit bucket (--rate-limit per second, up to
 * --rate-burst saved up). Returns false when it is empty. */
static bool take_token(struct dw_server *srv, struct dw_conn_io *io, int64_t now)
{
    double burst = srv->cfg->rate_burst;

    io->tokens += (double)(now - io->refilled_at) * srv->cfg->rate_limit / DW_NSEC_PER_SEC;
    if (io->tokens > burst)
        io->tokens = burst;
    io->refilled_at = now;
    if (io->tokens < 1)
        return false;
    io->tokens -= 1;
    io->flood = 0;
    return true;
}

/* Whether every channel of a is in b (grants of a token, in any order). */
static bool grants_within(const char (*a)[DW_CHANNEL_MAX + 1], unsigned na,
                          const char (*b)[DW_CHANNEL_MAX + 1], unsigned nb)
{
    for (unsigned i = 0; i < na; i++) {
        unsigned j = 0;

        while (j < nb && strcmp(a[i], b[j]) != 0)
            j++;
        if (j == nb)
            return false;
    }
    return true;
}

/* {"type":"refresh","token":...}: the token is taken when it verifies as the upgrade's would,
 * names the connection's user and grants the channels the connection's token granted, no more
 * and no fewer (other grants: reconnect with it, so that subscriptions are checked again). The
 * connection is then closed at its expiry instead (4001). Anything else changes nothing. */
static struct dw_msg *refresh(struct dw_server *srv, struct dw_conn *conn, const struct dw_cmd *cmd)
{
    struct dw_conn_io *io = &conn->io;
    struct dw_jwt_claims *claims;
    const char *reason;
    char text[160], end[DW_TIME_ISO_LEN];
    struct dw_msg *m;

    if (!dw_auth_jwt_required(srv->auth))
        return dw_proto_error("no_token_auth", "this server runs without token authentication: "
                                               "there is no token to refresh");
    claims = dw_xmalloc(sizeof(*claims));
    if (dw_auth_verify(srv->auth, cmd->token, cmd->token_len,
                       dw_now_realtime_ns() / DW_NSEC_PER_SEC, claims, &reason) != 0) {
        snprintf(text, sizeof(text), "the token was refused (%s): nothing changed", reason);
        m = dw_proto_error("invalid_token", text);
    } else if (strcmp(claims->sub, conn->user->id) != 0) {
        m = dw_proto_error("wrong_user", "the token names another user: nothing changed");
    } else if (claims->n_channels != io->ngrants ||
               !grants_within(claims->channels, claims->n_channels, io->grants, io->ngrants) ||
               !grants_within(io->grants, io->ngrants, claims->channels, claims->n_channels)) {
        m = dw_proto_error("grants_changed", "the token grants other channels than this "
                                             "connection's: reconnect with it");
    } else {
        io->token_end = claims->exp + dw_auth_leeway(srv->auth);
        dw_time_format_iso(end, io->token_end * DW_NSEC_PER_SEC);
        conn_log(DW_LOG_DEBUG, conn, "token refreshed, closing at %s", end);
        m = dw_proto_refresh_notice(end);
    }
    free(claims);
    return m;
}

/* One complete text message from the client. */
static void handle_text(struct dw_server *srv, struct dw_conn *conn, const char *text, size_t len)
{
    struct dw_cmd cmd;
    struct dw_msg *m = NULL;
    int r;

    switch (dw_proto_parse(text, len, &cmd)) {
    case DW_CMD_PING:
        conn->io.last_heartbeat_rt = dw_now_realtime_ns();
        m = dw_proto_pong();
        break;
    case DW_CMD_SUBSCRIBE:
        if (!may_join(conn, cmd.channel)) {
            srv->refusals.private_channel++;
            m = dw_proto_error("forbidden", "this channel is private: user:<id> is only for that "
                                            "user, other private channels need a token that "
                                            "grants them");
            break;
        }
        r = dw__hub_subscribe(srv->hub, conn, cmd.channel, (unsigned)srv->cfg->max_subscriptions);
        if (r < 0)
            m = dw_proto_error("too_many_subscriptions",
                               "this connection is subscribed to the maximum of channels");
        else
            m = dw_proto_subscription_notice(cmd.channel, true);
        break;
    case DW_CMD_UNSUBSCRIBE:
        r = dw__hub_unsubscribe(srv->hub, conn, cmd.channel);
        if (r < 0)
            m = dw_proto_error("not_subscribed", "this connection is not in that channel");
        else
            m = dw_proto_subscription_notice(cmd.channel, false);
        break;
    case DW_CMD_GET_STATS:
        m = stats_reply(srv, conn);
        break;
    case DW_CMD_ACK:
        /* No answer: the inbox records it with the next group (without a database there is
         * nothing to acknowledge). */
        if (srv->inbox)
            dw_inbox_ack(srv->inbox, conn->user->id, cmd.seq);
        break;
    case DW_CMD_RESUME:
        if (!srv->inbox)
            m = dw_proto_error("no_inbox", "this server keeps no inbox (it runs without a "
                                           "database): there is nothing to resume");
        else if (conn->io.replay && !dw__replay_is_catch_up(conn))
            m = dw_proto_error("resume_in_progress",
                               "a replay is running on this connection: resume after it");
        else
            dw__replay_start(srv, conn, cmd.seq, true); /* a catch-up running gives way */
        break;
    case DW_CMD_REFRESH:
        m = refresh(srv, conn, &cmd);
        break;
    case DW_CMD_OTHER:
        m = dw_proto_ack(cmd.obj);
        break;
    case DW_CMD_INVALID:
        m = dw_proto_error(cmd.error_code, cmd.error_message);
        break;
    }
    dw_cmd_release(&cmd);
    if (m)
        reply(conn, m);
}

static bool begin_close(struct dw_conn *conn, enum lws_close_status code, const char *reason,
                        bool flush);

/* Moves conn's close state (conn_state.h). Once it has left OPEN, producers neither queue to
 * it nor count it as a recipient (hub.c reads conn->closed): a publish answer never counts a
 * connection that is closing. */
static bool conn_step(struct dw_conn *conn, enum dw_conn_event ev)
{
    if (!dw_conn_step(&conn->io.state, ev))
        return false;
    if (conn->io.state != DW_CONN_OPEN)
        atomic_store_explicit(&conn->closed, 1, memory_order_relaxed);
    return true;
}

/* Hangs up a connection from outside its callbacks (a failed write, a stale client): lws
 * kills it on its next pass. Until then nothing more is written to it, and above all no
 * close_with: a failed write leaves lws's socket marked unusable, and a synchronous kill of
 * such a wsi frees it at once, under the WRITEABLE that called it. */
static void hang_up(struct dw_conn *conn)
{
    bool allowed = conn_step(conn, DW_CONN_EV_LET_GO);

    assert(allowed); /* callers skip LET_GO and GONE */
    (void)allowed;
    dw__hang_up(conn->io.wsi);
}

/* From WRITEABLE: starts the closing handshake with code. lws sends the close frame on the
 * next WRITEABLE and waits for the client's. Not by returning -1, as lws documents: that path
 * closes twice in lws 4.1 builds without NDEBUG (Debian's) when the loop is libuv, a check
 * of lws's own ("uv repeat test"), and the second close kills the connection before the
 * first one's close frame is sent. A synchronous kill goes through the same polite close
 * once; it leaves the wsi alive (WRITEABLE comes only to an established connection, whose
 * close waits for its close frame). Only once: a second kill, from a WRITEABLE that lws
 * still delivers while it waits for the client's close, would free the wsi under lws
 * (LET_GO). Returns what WRITEABLE returns. */
static int close_with(struct dw_conn_io *io, enum lws_close_status code, const char *why)
{
    /* LET_GO: lws may call WRITEABLE again before it sends the frame. */
    bool allowed = dw_conn_step(&io->state, DW_CONN_EV_LET_GO);

    assert(allowed); /* from FLUSHING or DROPPING only */
    (void)allowed;
    lws_close_reason(io->wsi, code, (unsigned char *)why, strlen(why));
    lws_set_timeout(io->wsi, PENDING_TIMEOUT_CLOSE_SEND, LWS_TO_KILL_SYNC);
    return 0;
}

/* Charges one message (or an empty fragment) to conn's rate limit. False when the bucket is
 * empty: the caller drops what it was charging for; the first refusal of a flood warns the
 * client, and a burst's worth more closes the connection. */
static bool charge(struct dw_server *srv, struct dw_conn *conn, int64_t now)
{
    struct dw_conn_io *io = &conn->io;

    if (take_token(srv, io, now))
        return true;
    srv->refusals.rate_limited++;
    if (++io->flood > (unsigned)srv->cfg->rate_burst) {
        /* Still sending after a burst's worth of refusals: not a client in good faith. */
        srv->refusals.rate_closes++;
        conn_event(DW_LOG_INFO, conn, "conn.close", (DW_LOG_STR("reason", "rate limit")),
                   "message flood, closing");
        begin_close(conn, LWS_CLOSE_STATUS_POLICY_VIOLATION, "rate limit exceeded", true);
        return false;
    }
    if (io->flood == 1) /* one error per flood, not one per message */
        reply(conn, dw_proto_error("rate_limited",
                                   "too many messages: slow down, or the connection closes"));
    return false;
}

/* One complete message from the client, after the rate limit. */
static void handle_message(struct dw_server *srv, struct dw_conn *conn, const char *data,
                           size_t len)
{
    struct dw_conn_io *io = &conn->io;

    if (!charge(srv, conn, io->last_activity))
        return;
    if (io->rx_binary)
        reply(conn, dw_proto_error("binary_not_supported",
                                   "send JSON text frames; binary frames are not accepted"));
    else
        handle_text(srv, conn, data, len);
}

int dw__conn_receive(struct dw_server *srv, struct lws *wsi, struct dw_pss *pss, const void *in,
                     size_t len)
{
    struct dw_conn *conn = pss->conn;
    struct dw_conn_io *io;
    size_t max = (size_t)srv->cfg->max_message_size;

    if (!conn)
        return -1;
    io = &conn->io;
    io->last_activity = dw_now_mono_ns();
    io->last_activity_rt = dw_now_realtime_ns();
    if (!dw_conn_takes_input(io->state))
        return 0; /* closing: nothing more is taken from this client */

    if (lws_is_first_fragment(wsi)) {
        io->rx_len = 0;
        io->rx_binary = lws_frame_is_binary(wsi);
    }
    /* An empty fragment carries nothing and costs a callback: it is charged like a message,
     * or 20,000 of them would cost the I/O thread as much as 20,000 messages for free. */
    if (len == 0 && !lws_is_final_fragment(wsi) && !charge(srv, conn, io->last_activity))
        return 0;
    /* Counted after reassembly: lws bounds only each chunk. */
    if (io->rx_len + len > max) {
        free(io->rx);
        io->rx = NULL;
        io->rx_len = 0;
        conn_event(DW_LOG_DEBUG, conn, "conn.close",
                   (DW_LOG_STR("reason", "message too large"), DW_LOG_INT("max_bytes", max)),
                   "message over %zu bytes", max);
        begin_close(conn, LWS_CLOSE_STATUS_MESSAGE_TOO_LARGE, "message too large", true);
        return 0;
    }

    if (lws_is_final_fragment(wsi) && io->rx_len == 0) {
        handle_message(srv, conn, in, len); /* whole in one chunk: no copy */
        return 0;
    }

    if (!io->rx)
        io->rx = dw_xmalloc(max + 1);
    memcpy(io->rx + io->rx_len, in, len);
    io->rx_len += len;
    if (!lws_is_final_fragment(wsi))
        return 0;

    handle_message(srv, conn, io->rx, io->rx_len);
    free(io->rx);
    io->rx = NULL;
    io->rx_len = 0;
    return 0;
}

void dw__conn_pong(struct dw_server *srv, struct dw_pss *pss)
{
    struct dw_conn *conn = pss->conn;

    if (!conn)
        return;
    /* A pong that answers no ping of ours (RFC 6455 allows them, as heartbeats) is charged
     * like a message, so that a flood of them is a flood of messages. lws tells nothing of
     * the pings a client sends (docs/security.md says why those are safe). */
    if (!conn->io.pong_due && dw_conn_takes_input(conn->io.state))
        charge(srv, conn, dw_now_mono_ns());
    conn->io.pong_due = false;
    conn->io.last_activity = dw_now_mono_ns();
    conn->io.last_activity_rt = dw_now_realtime_ns();
    conn->io.last_heartbeat_rt = conn->io.last_activity_rt;
}

/* Marks conn to close with code on its next WRITEABLE: with flush, once what is queued now is
 * written (what arrives later is not waited for), else at once, dropping what is queued (a
 * slow consumer, whose queue is the problem). Never from RECEIVE by returning -1: lws would
 * send the close frame at once and the replies already queued after it, which RFC 6455
 * forbids. What the client sends after this is ignored. */
static bool begin_close(struct dw_conn *conn, enum lws_close_status code, const char *reason,
                        bool flush)
{
    if (!conn_step(conn, flush ? DW_CONN_EV_FLUSH_CLOSE : DW_CONN_EV_DROP_CLOSE))
        return false; /* closing already, or gone */
    if (conn->io.replay) {
        /* In the middle of a replay, what waits behind it would make a gap: the close frame
         * goes first, and the client resumes when it reconnects. */
        dw__replay_abandon(conn);
        conn->io.flush_left = 0;
    } else {
        conn->io.flush_left = dw_outbox_queued(&conn->outbox);
    }
    conn->io.close_code = (unsigned short)code;
    conn->io.close_reason = reason;
    lws_callback_on_writable(conn->io.wsi);
    return true;
}

/* ==========================================================================================
 * What the operator API does to a connection (operator.c)
 */

bool dw__conn_kick(struct dw_conn *conn, unsigned short code, const char *reason)
{
    DW_ASSERT_THREAD(DW_THREAD_IO);
    if (!begin_close(conn, (enum lws_close_status)code, "", true))
        return false;
    free(conn->io.close_text);
    conn->io.close_text = dw_xstrdup(reason);
    conn->io.close_reason = conn->io.close_text;
    /* A client that reads nothing holds its close as long as its queue: lws hangs up after
     * the grace period, as for a slow consumer. */
    lws_set_timeout(conn->io.wsi, PENDING_TIMEOUT_USER_OK, SLOW_CLOSE_GRACE_S);
    conn_log(DW_LOG_INFO, conn, "disconnected by the operator API (%u)", code);
    return true;
}

int dw__conn_server_subscribe(struct dw_server *srv, struct dw_conn *conn, const char *channel,
                              bool subscribe)
{
    int r;

    DW_ASSERT_THREAD(DW_THREAD_IO);
    r = subscribe
            ? dw__hub_subscribe(srv->hub, conn, channel, (unsigned)srv->cfg->max_subscriptions)
            : dw__hub_unsubscribe(srv->hub, conn, channel);
    if (r == 0)
        reply(conn, dw_proto_server_subscription_notice(channel, subscribe));
    return r;
}

/* Counts what a trim of conn's outbox dropped: the connection's and the service's, by type. */
static void count_dropped(struct dw_server *srv, struct dw_conn *conn,
                          const struct dw_outbox_trim *t)
{
    conn->io.messages_dropped += t->dropped;
    for (int i = 0; i < DW_MSG__COUNT; i++)
        srv->metrics.dropped_by_type[i] += t->by_type[i];
}

/* After a turn whose writes the socket refused in part: trims what is left to the bound, oldest
 * non-critical first, and applies the 3-strike rule; closes a connection whose critical
 * messages alone pass the bound. */
static void enforce_bound(struct dw_server *srv, struct dw_conn *conn)
{
    const struct dw_config *cfg = srv->cfg;
    struct dw_outbox_trim t =
        dw_outbox_trim(&conn->outbox, (unsigned long)cfg->queue_size, (size_t)cfg->queue_bytes);
    int64_t now;

    if (t.over && begin_close(conn, LWS_CLOSE_STATUS_POLICY_VIOLATION, "slow consumer", true)) {
        /* Critical messages are never dropped: the client takes what it can before the close
         * frame, or lws hangs up after the grace period; the rest is counted as failed at the
         * close, and is in the inbox when there is one. */
        srv->io.slow_closes++;
        conn_event(DW_LOG_INFO, conn, "conn.close",
                   (DW_LOG_STR("reason", "slow consumer"),
                    DW_LOG_INT("queued", dw_outbox_queued(&conn->outbox)),
                    DW_LOG_INT("queued_bytes", dw_outbox_pending_bytes(&conn->outbox))),
                   "slow consumer, %lu messages (%zu bytes) queued; closing",
                   dw_outbox_queued(&conn->outbox), dw_outbox_pending_bytes(&conn->outbox));
        lws_set_timeout(conn->io.wsi, PENDING_TIMEOUT_USER_OK, SLOW_CLOSE_GRACE_S);
    }
    if (!t.dropped)
        return;
    count_dropped(srv, conn, &t);
    /* A strike is an overflow at least STRIKE_SPACING after the previous one with no write in
     * between (a write resets the count): overflows come once per drain, and a busy daemon
     * drains far more often than a healthy client's socket needs to be written. */
    now = dw_now_mono_ns();
    if (conn->io.strikes > 0 && now - conn->io.last_strike < STRIKE_SPACING_NS)
        return;
    conn->io.last_strike = now;
    /* Close with 1008 on the next WRITEABLE, if the client reads again within the grace
     * period; otherwise lws hangs up when it ends. */
    if (++conn->io.strikes == STRIKES_MAX &&
        begin_close(conn, LWS_CLOSE_STATUS_POLICY_VIOLATION, "slow consumer", false)) {
        srv->io.slow_closes++;
        conn_event(DW_LOG_INFO, conn, "conn.close",
                   (DW_LOG_STR("reason", "slow consumer"),
                    DW_LOG_INT("dropped", conn->io.messages_dropped)),
                   "slow consumer, %llu dropped; closing",
                   (unsigned long long)conn->io.messages_dropped);
        lws_set_timeout(conn->io.wsi, PENDING_TIMEOUT_USER_OK, SLOW_CLOSE_GRACE_S);
    }
}

/* The next message to write, borrowed: the replay's while one runs (the outbox waits), else
 * the outbox's, past the messages the connection was already sent, by a replay (each counted
 * in *skipped). */
static struct dw_msg *next_msg(struct dw_conn *conn, unsigned long *skipped)
{
    struct dw_msg *m;

    if (conn->io.replay)
        return dw__replay_peek(conn);
    while ((m = dw_outbox_peek(&conn->outbox)) != NULL && m->seq != 0 &&
           dw__replay_was_sent(conn, m->seq)) {
        dw_outbox_drop(&conn->outbox);
        (*skipped)++;
    }
    return m;
}

/* The message next_msg returned was written (or given up): drops it from where it came. */
static void consume(struct dw_conn *conn)
{
    if (conn->io.replay)
        dw__replay_drop(conn);
    else
        dw_outbox_drop(&conn->outbox);
}

/* Is there something to write (the replay's messages while it runs, else the outbox's)? */
static bool has_pending(struct dw_conn *conn)
{
    if (conn->io.replay)
        return dw__replay_peek(conn) != NULL;
    return !dw_outbox_is_empty(&conn->outbox);
}

/* For /metrics: the frames of a write that failed were counted as sent; they failed. */
static void count_failed(struct dw_server *srv, const unsigned long types[DW_MSG__COUNT])
{
    for (int i = 0; i < DW_MSG__COUNT; i++) {
        srv->metrics.sent_by_type[i] -= types[i];
        srv->metrics.failed_by_type[i] += types[i];
    }
}

/* Sends as many whole queued frames as fit in one RAW write, at most limit taken from the
 * queue (written or skipped, *skipped counting the latter). Returns frames sent, or -1 when
 * the connection failed. */
static int write_frames(struct dw_server *srv, struct dw_conn *conn, struct lws *wsi,
                        unsigned long limit, unsigned long *skipped)
{
    unsigned char *buf = srv->wbuf + LWS_PRE;
    struct dw_msg *m;
    size_t n = 0;
    int count = 0;
    int64_t now;
    unsigned long types[DW_MSG__COUNT] = {0}; /* of the batch, should its write fail */

    *skipped = 0;
    if (limit == 0 || (m = next_msg(conn, skipped)) == NULL)
        return 0;
    /* /metrics: the drain's clock (one read per DW_DRAIN_CLOCK_EVERY connections), else one
     * read per write; none per message */
    now = srv->drain_clock ? srv->drain_clock : dw_now_mono_ns();
    if (dw_msg_frame_len(m) > DW_WRITE_BATCH) {
        /* Too big to gather: RAW writes neither modify nor keep the buffer, so the shared
         * frame goes out as it is. */
        int r =
            lws_write(wsi, (unsigned char *)dw_msg_frame(m), dw_msg_frame_len(m), LWS_WRITE_RAW);

        dw__metrics_written(srv, m, now, conn->io.replay != NULL);
        types[m->type]++;
        if (m->seq)
            dw__replay_note_sent(conn, m->seq);
        consume(conn);
        if (r >= 0)
            return 1;
        count_failed(srv, types);
        return -1;
    }
    while (m && n + dw_msg_frame_len(m) <= DW_WRITE_BATCH &&
           (unsigned long)count + *skipped < limit) {
        memcpy(buf + n, dw_msg_frame(m), dw_msg_frame_len(m));
        n += dw_msg_frame_len(m);
        dw__metrics_written(srv, m, now, conn->io.replay != NULL);
        types[m->type]++;
        if (m->seq)
            dw__replay_note_sent(conn, m->seq);
        consume(conn);
        count++;
        m = next_msg(conn, skipped);
    }
    if (count && lws_write(wsi, buf, n, LWS_WRITE_RAW) < 0) {
        count_failed(srv, types);
        return -1;
    }
    return count;
}

/* Writes the frames pending for conn while its socket takes them, at most WRITE_BURST_MAX RAW
 * writes (and when FLUSHING, no more than flush_left frames), counted in the connection's and
 * the service's stats; then moves its replay on. Returns 1 when the socket refused part of a
 * write (lws keeps the rest: what is still queued is what the socket could not take), 0
 * otherwise, -1 when the connection failed. */
static int write_queued(struct dw_server *srv, struct dw_conn *conn, struct lws *wsi)
{
    struct dw_conn_io *io = &conn->io;
    int ret = 0;

    for (int i = 0; i < WRITE_BURST_MAX; i++) {
        unsigned long skipped;
        int sent = write_frames(
            srv, conn, wsi, io->state == DW_CONN_FLUSHING ? io->flush_left : ULONG_MAX, &skipped);

        if (sent < 0) {
            io->messages_failed++;
            srv->io.failed++;
            return -1;
        }
        if (io->state == DW_CONN_FLUSHING) {
            unsigned long taken = (unsigned long)sent + skipped;

            io->flush_left -= taken < io->flush_left ? taken : io->flush_left;
        }
        if (sent == 0)
            break;
        io->messages_sent += (uint64_t)sent;
        io->strikes = 0;
        if (lws_partial_buffered(wsi)) {
            ret = 1;
            break;
        }
    }
    if (io->replay)
        dw__replay_advance(srv, conn);
    return ret;
}

/* Whether a drain may write to conn itself instead of asking for WRITEABLE: nothing else is
 * due on it first (a ping, a close) and lws holds no unsent part of an earlier write. */
static bool may_write_now(const struct dw_conn *conn)
{
    const struct dw_conn_io *io = &conn->io;

    return io->state == DW_CONN_OPEN && !io->want_ping && !lws_partial_buffered(io->wsi);
}

/* Connections for this slice of the drain, at now. Back from a pass the drain yielded to that
 * took over DW_DRAIN_LOADED_NS and accepted or lost DW_DRAIN_CHURN sockets or more (a storm of
 * connects or closes), the rest of the drain goes in one slice: writing to the connections
 * already in comes before the storm. (Scaled instead by that pass's time against the slice's,
 * which gave the drain as much of the loop as the storm, a message to 1,000 paced clients
 * took twice its writing time: storm p50 7.7-8.2 ms, against 5.9-6.3 in one slice.) Any other
 * pass keeps the slices small, however long: one that read a publisher's next request, or
 * wrote to connections whose sockets had been full (10,000 clients); that is what lets a
 * serial publisher's messages join the writes (measured: growing the slice on the time alone
 * halved the serial shape at 10,000 clients). A new drain starts at half the last size, so the
 * slices come back down after a storm. */
static unsigned next_slice(struct dw_server *srv, int64_t now)
{
    uint64_t slice = srv->drain_slice;

    if (srv->drain_yield_ns) {
        if (now - srv->drain_yield_ns > DW_DRAIN_LOADED_NS &&
            srv->churn - srv->drain_churn >= DW_DRAIN_CHURN)
            slice = DW_DRAIN_SLICE_MAX;
    } else {
        slice /= 2;
    }
    if (slice < DW_DRAIN_SLICE)
        slice = DW_DRAIN_SLICE;
    if (slice > DW_DRAIN_SLICE_MAX)
        slice = DW_DRAIN_SLICE_MAX;
    srv->drain_slice = (unsigned)slice;
    return srv->drain_slice;
}

void dw__conn_drain_ready(struct dw_server *srv)
{
    struct cds_wfcq_node *node;
    int64_t start = dw_now_mono_ns();
    unsigned n = 0, slice = next_slice(srv, start);

    DW_ASSERT_THREAD(DW_THREAD_IO);
    srv->drain_yield_ns = 0;
    srv->drain_clock = start;
    /* Behind what the previous call left: every connection has its turn in the order it
     * became ready. */
    dw__hub_take_more(srv->hub, &srv->drain);
    while ((node = dw_readyq_batch_next(&srv->drain)) != NULL) {
        struct dw_conn *conn = caa_container_of(node, struct dw_conn, ready_node);
        struct lws *wsi = conn->io.wsi;

        if (n && n % DW_DRAIN_CLOCK_EVERY == 0)
            srv->drain_clock = dw_now_mono_ns();

        /* Only an open connection: one that is closing stays scheduled, so nothing wakes us
         * for it again, and WRITEABLE flushes or drops what it holds; what is left counts as
         * undelivered when lws closes it. */
        if (wsi && conn->io.state == DW_CONN_OPEN) {
            /* Off the ready queue now: the next push may put it back. */
            dw_outbox_unschedule(&conn->outbox);
            dw_outbox_splice(&conn->outbox);
            if (conn->io.replay) {
                /* The outbox waits for the replay, within the bound all the same. */
                dw__replay_hold(srv, conn);
                enforce_bound(srv, conn);
            }
            if (lws_partial_buffered(wsi)) {
                /* The socket has not taken the last write since the previous turn: what is
                 * queued is what it could not take. WRITEABLE comes once lws has sent what it
                 * holds. */
                if (!conn->io.replay)
                    enforce_bound(srv, conn);
                lws_callback_on_writable(wsi);
            } else if (may_write_now(conn) && write_queued(srv, conn, wsi) < 0) {
                hang_up(conn); /* the write failed */
            } else if (has_pending(conn)) {
                /* what did not fit, or all of it when a ping goes first */
                lws_callback_on_writable(wsi);
            }
        }
        /* The ready queue's reference, taken by the producer that scheduled conn. */
        dw__conn_unref(conn);
        if (++n == slice) {
            /* The rest after the next pass of the loop, which reads what came meanwhile: a
             * publisher's next request, whose messages then join the writes of every
             * connection not yet written (conn.c, "Write path"). */
            srv->drain_yield_ns = dw_now_mono_ns();
            srv->drain_churn = srv->churn;
            lws_cancel_service(srv->ctx);
            break;
        }
    }
    srv->drain_clock = 0;
    if (n)
        srv->traffic_at = start;
}

void dw__conn_drain_release(struct dw_server *srv)
{
    struct cds_wfcq_node *node;

    dw__hub_take_more(srv->hub, &srv->drain);
    while ((node = dw_readyq_batch_next(&srv->drain)) != NULL)
        dw__conn_unref(caa_container_of(node, struct dw_conn, ready_node));
}

int dw__conn_writeable(struct dw_server *srv, struct lws *wsi, struct dw_pss *pss)
{
    struct dw_conn *conn = pss->conn;
    struct dw_conn_io *io;

    if (!conn)
        return 0;
    io = &conn->io;
    if (io->state == DW_CONN_LET_GO)
        return 0;
    if (io->want_ping) {
        io->want_ping = false;
        if (dw__write_ping(wsi, io->ping_sent_at) < 0)
            return -1;
        io->pong_due = true;
        lws_callback_on_writable(wsi);
        return 0;
    }

    if (io->state == DW_CONN_DROPPING) {
        /* Closing for cause: what is queued is dropped, the close frame goes now. */
        struct dw_outbox_trim t;

        dw_outbox_splice(&conn->outbox);
        t = dw_outbox_trim(&conn->outbox, 0, SIZE_MAX);
        count_dropped(srv, conn, &t);
        return close_with(io, io->close_code, io->close_reason);
    }

    /* The socket took what lws held: progress, so nothing is trimmed here (a burst to a
     * client that keeps up goes out whole); the next drain that finds it full again trims. */
    dw_outbox_splice(&conn->outbox);
    if (write_queued(srv, conn, wsi) < 0)
        return -1;
    if (io->state == DW_CONN_FLUSHING && io->flush_left == 0)
        return close_with(io, io->close_code, io->close_reason);
    if (has_pending(conn))
        lws_callback_on_writable(wsi);
    return 0;
}

void dw__conn_peer_close(struct dw_pss *pss)
{
    /* Refused (and nothing changes) when we are closing already: lws answers the client. */
    if (pss->conn)
        conn_step(pss->conn, DW_CONN_EV_PEER_CLOSE);
}

void dw__conn_closed(struct dw_server *srv, struct dw_pss *pss)
{
    struct dw_conn *conn = pss->conn;
    unsigned long lost;
    bool allowed;

    if (!conn)
        return;
    dw__metrics_conn_closed(srv, conn);
    pss->conn = NULL;
    conn->io.wsi = NULL;
    dw__replay_abandon(conn);
    allowed = dw_conn_step(&conn->io.state, DW_CONN_EV_CLOSED);
    assert(allowed); /* lws closes a connection once */
    (void)allowed;
    /* What is still queued will not be delivered on this connection. */
    lost = dw_outbox_tally(&conn->outbox, srv->metrics.failed_by_type);
    conn->io.messages_failed += lost;
    srv->io.failed += lost;
    conn_event(DW_LOG_DEBUG, conn, "conn.closed",
               (DW_LOG_STR("reason", conn->io.close_reason),
                DW_LOG_INT("sent", conn->io.messages_sent), DW_LOG_INT("undelivered", lost)),
               "closed, %llu sent, %lu undelivered", (unsigned long long)conn->io.messages_sent,
               lost);
    dw__hub_remove(srv->hub, conn);
    srv->io.closed++;
}

void dw__conn_sweep(struct dw_server *srv, int64_t now)
{
    int64_t ping_after = (int64_t)srv->cfg->heartbeat_interval * DW_NSEC_PER_SEC;
    int64_t stale_after = (int64_t)srv->cfg->stale_timeout * DW_NSEC_PER_SEC;
    int64_t now_s = dw_now_realtime_ns() / DW_NSEC_PER_SEC;
    struct dw_conn *conn;

    dw_rlist_for_each_entry(conn, dw__hub_all(srv->hub), struct dw_conn, all_link) {
        struct dw_conn_io *io = &conn->io;
        int64_t idle = now - io->last_activity;

        if (io->state == DW_CONN_LET_GO || io->state == DW_CONN_GONE)
            continue;
        if (io->token_end && now_s >= io->token_end &&
            begin_close(conn, CLOSE_TOKEN_EXPIRED, "token expired", true)) {
            srv->refusals.token_expired++;
            conn_event(DW_LOG_INFO, conn, "conn.close", (DW_LOG_STR("reason", "token expired")),
                       "token expired, closing");
            continue;
        }
        if (idle >= stale_after) {
            conn_event(DW_LOG_INFO, conn, "conn.close",
                       (DW_LOG_STR("reason", "heartbeat timeout"),
                        DW_LOG_INT("idle_s", idle / DW_NSEC_PER_SEC)),
                       "no response for %llds, hanging up", (long long)(idle / DW_NSEC_PER_SEC));
            io->close_reason = DW_CLOSE_REASON_STALE; /* for /metrics: no frame carries it */
            hang_up(conn);
        } else if (idle >= ping_after && io->ping_sent_at <= io->last_activity) {
            io->ping_sent_at = now;
            io->want_ping = true;
            lws_callback_on_writable(io->wsi);
        }
    }
}

void dw__conn_close_all(struct dw_server *srv)
{
    struct dw_conn *conn;

    dw_rlist_for_each_entry(conn, dw__hub_all(srv->hub), struct dw_conn, all_link) {
        begin_close(conn, LWS_CLOSE_STATUS_GOINGAWAY, "server shutting down", true);
    }
}
