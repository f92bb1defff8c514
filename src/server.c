/*
 * server — DESIGN: the I/O thread. It owns the lws context (poll or libuv loop), runs the one
 * protocol callback that serves both the WebSocket endpoint and the HTTP API, and is the only
 * thread that calls lws. Workers reach it in two ways only: the hub's ready queue (messages
 * for connections) and the done queue (finished HTTP jobs), each followed by one
 * lws_cancel_service(), which lws turns into LWS_CALLBACK_EVENT_WAIT_CANCELLED here.
 *
 * Every accepted socket carries a struct dw_sock (lws opaque user data): its address, for
 * --max-connections-per-ip, and a deadline while it is not an established WebSocket and no
 * worker holds its request. lws's own timeouts leave gaps a hostile client can live in (a
 * CONNECT becomes a raw socket with none, a trickled body re-arms its timeout on every
 * byte), so the heartbeat sweep also closes every socket past its deadline.
 *
 * Shutdown: dw_server_stop() sets a flag and wakes the loop; the loop then refuses new
 * connections, asks every connection to flush and close with 1001, and keeps serving until
 * they are gone or the shutdown timeout passes.
 */
#define DW_LOG_MODULE "server"
#include "server_int.h"
#include "dealwire/bus.h"
#include "dealwire/inbox.h"
#include "dealwire/leader.h"
#include "dealwire/retention.h"
#include "dealwire/log.h"
#include "dealwire/mem.h"
#include "dealwire/peek.h"
#include "dealwire/proxy.h"
#include "dealwire/server.h"
#include "dealwire/thread.h"
#include "dealwire/tls.h"
#include "dealwire/worker.h"
#include "dealwire/time.h"

#include <errno.h>
#include <time.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <string.h>
#include <unistd.h>

static void check_shutdown(struct dw_server *srv);
static void log_security(struct dw_server *srv);

/* Sockets accepted in one pass of the loop; then the listening socket waits for the next pass
 * (new_pass). lws accepts for as long as the backlog holds connections, so a reconnect storm
 * (every client of a deploy at once) held the I/O thread until the backlog was empty while the
 * handshakes of the sockets already accepted waited (issue 14: 1.36x the connections/s). */
#define ACCEPT_BUDGET 64

#if defined(LWS_DW_UV_DEFER)
/* The loop's time for sockets' events in one pass. Past it, the events of sockets other than
 * the API's (publishers, operators, health checks: peek_role) wait (lws patch 03 stops their
 * watchers, the kernel keeps the events), and each pass takes back RESUME_PER_PASS of them,
 * oldest first. A burst of thousands of ready
 * sockets, such as every client of a deploy closing at once, is served over many passes, and
 * between them the loop reads the publishers and writes to the clients already connected: in
 * one pass it held the loop for 70-210 ms (issue 14, the storm scenario). Only while there is
 * traffic to keep moving (a drain wrote messages within TRAFFIC_WINDOW_NS): with none, a
 * deferred event would cost two epoll_ctl and a later pass for nothing, and a storm of
 * connections to an idle daemon is admitted at full speed. */
#define PASS_BUDGET_NS (DW_NSEC_PER_SEC / 500)
/* A PROXY header that came in part (split over TCP segments) is looked at again this much
 * later (proxy_event). */
#define PROXY_RETRY_US    (2 * LWS_US_PER_MS)
#define RESUME_PER_PASS   128
#define TRAFFIC_WINDOW_NS DW_NSEC_PER_SEC
#endif

/* After each pass of the loop: the listening socket takes connections again. */
static void new_pass(struct dw_server *srv)
{
    srv->accepts = 0;
    if (srv->listen_held) {
        lws_rx_flow_control(srv->listen_held, 1);
        srv->listen_held = NULL;
    }
}

/* Counts an accept of this pass on listener (the listening socket's wsi); at the budget, the
 * listener is not read until new_pass: lws's accept loop ends with this socket. */
static void charge_accept(struct dw_server *srv, struct lws *listener)
{
    if (++srv->accepts < ACCEPT_BUDGET || srv->listen_held)
        return;
    srv->listen_held = listener;
    lws_rx_flow_control(listener, 0);
}

/* ==========================================================================================
 * The client's address: the socket's peer, or, from a peer in --trusted-proxies, the client
 * that proxy names in a PROXY header before the socket's own bytes, or else in each request's
 * X-Forwarded-For (include/dealwire/proxy.h). A trusted proxy's own address is never counted
 * against --max-connections-per-ip (all its clients would share it); the clients it names are.
 */

/* Reads a PROXY header off fd when it is there whole (the connection's own bytes stay in the
 * socket for lws). Returns 1: read (s->ip and s->proxied set when it names a client); 0: none
 * (the first bytes are something else, the peer closed, an error lws will see); -EAGAIN: a
 * header begun, or nothing yet; -EPROTO: malformed. */
static int take_proxy(int fd, struct dw_sock *s)
{
    unsigned char buf[DW_PROXY_HEADER_MAX];
    struct dw_proxy_header h;
    ssize_t n = recv(fd, buf, sizeof(buf), MSG_PEEK | MSG_DONTWAIT);

    if (n < 0)
        return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? -EAGAIN : 0;
    switch (n == 0 ? DW_PROXY_NONE : dw_proxy_parse(buf, (size_t)n, &h)) {
    case DW_PROXY_NONE:
        return 0;
    case DW_PROXY_MORE:
        return -EAGAIN;
    case DW_PROXY_BAD:
        return -EPROTO;
    case DW_PROXY_OK:
        break;
    }
    /* the bytes peeked are in the socket: this takes exactly them */
    if (recv(fd, buf, h.len, MSG_DONTWAIT) != (ssize_t)h.len)
        return -EPROTO;
    if (h.has_address) {
        s->ip = h.address;
        s->proxied = true;
    }
    return 1;
}

/* Is ip at --max-connections-per-ip (s's own count, if ip is what it counts, aside)? */
static bool address_full(struct dw_server *srv, const struct dw_sock *s, const struct dw_ip *ip)
{
    unsigned n = dw_ipcount_get(srv->ips, ip);

    if (s->counted && memcmp(s->ip.addr, ip->addr, sizeof(ip->addr)) == 0)
        n--;
    return n >= (unsigned)srv->cfg->max_connections_per_ip;
}

/* Counts s against its address, unless that is a trusted proxy's own. */
static void count_address(struct dw_server *srv, struct dw_sock *s)
{
    if (s->via_proxy && memcmp(s->ip.addr, s->peer.addr, sizeof(s->ip.addr)) == 0 && !s->proxied)
        return;
    s->counted = true;
    dw_ipcount_add(srv->ips, &s->ip);
}

static void uncount_address(struct dw_server *srv, struct dw_sock *s)
{
    if (s->counted)
        dw_ipcount_remove(srv->ips, &s->ip);
    s->counted = false;
}

static void refuse_address(struct dw_server *srv, const struct dw_ip *ip, const char *what)
{
    char text[DW_IP_TEXT_MAX];

    srv->refusals.per_ip++;
    dw_ip_format(ip, text);
    dw_log_event(DW_LOG_DEBUG, "socket.refused",
                 (DW_LOG_STR("reason", "address socket limit"), DW_LOG_STR("address", text),
                  DW_LOG_INT("limit", srv->cfg->max_connections_per_ip)),
                 "%s from %s refused: it holds %d sockets already", what, text,
                 srv->cfg->max_connections_per_ip);
}

/* A socket just accepted (fd): closed at once (-1) while shutting down, at the socket cap, or
 * when its client's address already holds --max-connections-per-ip sockets. Nothing has been
 * read from it, so there is no one to answer: the client sees the connection reset. What it
 * learnt of the socket's addresses waits in srv->admitted for track_socket. */
static int admit_socket(struct dw_server *srv, struct lws *listener, int fd)
{
    struct dw_sock *a = &srv->admitted;
    char text[DW_IP_TEXT_MAX];

    charge_accept(srv, listener);
    srv->churn++;
    memset(a, 0, sizeof(*a));
    if (srv->draining)
        return -1;
    if (srv->sockets >= srv->socket_cap) {
        srv->refusals.capacity++;
        dw_log_event(DW_LOG_WARN, "socket.refused",
                     (DW_LOG_STR("reason", "socket limit"), DW_LOG_INT("sockets", srv->sockets)),
                     "socket refused: %zu sockets open, the most this process can hold",
                     srv->sockets);
        return -1;
    }
    if (dw_ip_from_peer(fd, &a->peer) < 0)
        return 0; /* not an IP socket: nothing to count it against */
    a->ip = a->peer;
    a->via_proxy =
        srv->cfg->ntrusted && dw_trusted_has(srv->cfg->trusted, srv->cfg->ntrusted, &a->peer);
    /* The header usually came with the connection; if not, the loop reads it before lws
     * reads anything (defer_event), which only the libuv loop of dealwire's lws can do. */
    if (a->via_proxy) {
        int r = take_proxy(fd, a);

        if (r == -EPROTO) {
            srv->refusals.proxy_header++;
            dw_ip_format(&a->peer, text);
            dw_log_event(
                DW_LOG_WARN, "socket.refused",
                (DW_LOG_STR("reason", "malformed PROXY header"), DW_LOG_STR("proxy", text)),
                "socket from proxy %s closed: malformed PROXY protocol header", text);
            return -1;
        }
#if defined(LWS_DW_UV_DEFER)
        a->proxy_pending = r == -EAGAIN && srv->uv_loop;
#endif
    }
    if ((!a->via_proxy || a->proxied) && address_full(srv, a, &a->ip)) {
        refuse_address(srv, &a->ip, "socket");
        return -1;
    }
    return 0;
}

/* ==========================================================================================
 * Sockets: their count per address and their deadlines
 */

static void deadline_unlink(struct dw_sock *s)
{
    if (!s->deadline)
        return;
    s->prev->next = s->next;
    s->next->prev = s->prev;
    s->prev = s->next = NULL;
    s->deadline = 0;
}

void dw__sock_arm(struct dw_server *srv, struct lws *wsi)
{
    struct dw_sock *s = lws_get_opaque_user_data(wsi), *head = &srv->deadlines;

    if (!s)
        return;
    deadline_unlink(s);
    s->deadline = dw_now_mono_ns() + (int64_t)srv->cfg->handshake_timeout * DW_NSEC_PER_SEC;
    /* The same timeout for everyone: the newest deadline is the latest, so the tail it is. */
    s->prev = head->prev;
    s->next = head;
    head->prev->next = s;
    head->prev = s;
}

void dw__sock_disarm(struct dw_server *srv, struct lws *wsi)
{
    struct dw_sock *s = lws_get_opaque_user_data(wsi);

    (void)srv;
    if (s)
        deadline_unlink(s);
}

void dw__sock_role(struct lws *wsi, enum dw_sock_role role)
{
    struct dw_sock *s = lws_get_opaque_user_data(wsi);

    if (s)
        s->role = role;
}

int dw__sock_forwarded(struct dw_server *srv, struct lws *wsi)
{
    struct dw_sock *s = lws_get_opaque_user_data(wsi);
    char value[1024];
    struct dw_ip ip;
    int len;

    if (!s || !s->via_proxy || s->proxied)
        return 0;
    len = lws_hdr_copy(wsi, value, sizeof(value), WSI_TOKEN_X_FORWARDED_FOR);
    /* none, or not an address: the proxy itself (longer than value: not one lws's limits
     * would let a real chain of proxies reach) */
    if (len <= 0 || dw_forwarded_last(value, (size_t)len, &ip) < 0)
        ip = s->peer;
    if (memcmp(ip.addr, s->ip.addr, sizeof(ip.addr)) == 0)
        return 0; /* the keep-alive connection's client again */
    if (memcmp(ip.addr, s->peer.addr, sizeof(ip.addr)) != 0 && address_full(srv, s, &ip)) {
        refuse_address(srv, &ip, "request");
        return -1;
    }
    uncount_address(srv, s);
    s->ip = ip;
    count_address(srv, s);
    return 0;
}

const char *dw__sock_address(struct lws *wsi, char *buf)
{
    struct dw_sock *s = wsi ? lws_get_opaque_user_data(wsi) : NULL;

    if (s && !s->via_proxy && !s->counted)
        s = NULL; /* not an IP socket (its address was never read) */
    if (s)
        dw_ip_format(&s->ip, buf);
    else
        snprintf(buf, DW_IP_TEXT_MAX, "?");
    return buf;
}

#if defined(LWS_DW_UV_DEFER)
/* The role of s, which has sent nothing the loop has read, from its first bytes (left in the
 * socket): a publisher's new keep-alive connection (its pool grew) is then served in the pass
 * as its others are. Deferred behind thousands of closing clients, such a connection's first
 * publish waited 160-330 ms (issue 14, the storm scenario). One recv per new socket whose
 * event is deferred; none for an established client. */
static enum dw_sock_role peek_role(const struct dw_sock *s)
{
    char head[DW_PEEK_HEAD];
    ssize_t n = recv(lws_get_socket_fd(s->wsi), head, sizeof(head), MSG_PEEK | MSG_DONTWAIT);

    if (n <= 0)
        return n == 0 ? DW_SOCK_CLIENT : DW_SOCK_UNKNOWN; /* 0: the peer has closed */
    switch (dw_peek_request(head, (size_t)n)) {
    case DW_PEEK_API:
        return DW_SOCK_API;
    case DW_PEEK_OTHER:
        return DW_SOCK_CLIENT;
    default:
        return DW_SOCK_UNKNOWN;
    }
}

/* A socket whose PROXY header came in part: polled again (its watcher was stopped). */
static void proxy_retry(lws_sorted_usec_list_t *sul)
{
    struct dw_sock *s = lws_container_of(sul, struct dw_sock, proxy_retry);

    lws_dw_uv_resume(s->wsi);
}

/* The first event of a socket from a trusted proxy whose PROXY header had not come whole at
 * accept: the header is read before lws reads anything. Returns what defer_event does: 0,
 * lws serves the event; 1, not now (the rest of a header is awaited: the socket is polled
 * again PROXY_RETRY_US later, until it comes or --handshake-timeout closes it; or the socket
 * is being closed: a malformed header, or its client's address is full). */
static int proxy_event(struct dw_server *srv, struct dw_sock *s)
{
    int r = take_proxy(lws_get_socket_fd(s->wsi), s);

    if (r == -EAGAIN) {
        /* Not at once: the bytes that came are still there, so the socket is ready again as
         * soon as it is polled, and the loop would spin until the rest comes. */
        lws_sul_schedule(srv->ctx, 0, &s->proxy_retry, proxy_retry, PROXY_RETRY_US);
        return 1;
    }
    s->proxy_pending = false;
    if (r == -EPROTO) {
        char text[DW_IP_TEXT_MAX];

        srv->refusals.proxy_header++;
        dw_ip_format(&s->peer, text);
        dw_log_event(DW_LOG_WARN, "socket.refused",
                     (DW_LOG_STR("reason", "malformed PROXY header"), DW_LOG_STR("proxy", text)),
                     "socket from proxy %s closed: malformed PROXY protocol header", text);
    } else if (s->proxied && address_full(srv, s, &s->ip)) {
        refuse_address(srv, &s->ip, "socket");
    } else {
        count_address(srv, s);
        return 0;
    }
    lws_set_timeout(s->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
    return 1;
}

#if defined(LWS_DW_TLS_HOLD)
/* lws_dw_tls_hold: asked by lws for a TLS socket just accepted (admit_socket saw it last),
 * before it peeks at it and calls SSL_accept. 1 while a PROXY header may still come: lws
 * would take its bytes for the handshake's, so the handshake waits for the socket's first
 * POLLIN, which proxy_event sees first. */
static int tls_hold(struct lws *wsi)
{
    struct dw_server *srv = lws_context_user(lws_get_context(wsi));

    return srv && srv->admitted.proxy_pending;
}
#endif

/* lws_dw_uv_defer: asked by lws's libuv loop before it serves an event of wsi (a socket, not
 * the listener or lws's wake pipe). 1: not in this pass (PASS_BUDGET_NS). */
static int defer_event(struct lws *wsi)
{
    struct dw_sock *s = lws_get_opaque_user_data(wsi);
    struct dw_server *srv;
    int64_t now;

    if (s && s->proxy_pending)
        return proxy_event(lws_context_user(lws_get_context(wsi)), s);
    if (!s || s->role == DW_SOCK_API)
        return 0;
    srv = lws_context_user(lws_get_context(wsi));
    now = dw_now_mono_ns();
    if (!srv->pass_began) {
        srv->pass_began = now;
        return 0;
    }
    if (now - srv->pass_began < PASS_BUDGET_NS || now - srv->traffic_at > TRAFFIC_WINDOW_NS)
        return 0;
    if (s->role == DW_SOCK_UNKNOWN && (s->role = peek_role(s)) == DW_SOCK_API)
        return 0;
    srv->deferrals++;
    if (lws_dll2_is_detached(&s->deferred))
        lws_dll2_add_tail(&s->deferred, &srv->deferred);
    return 1;
}

/* After a pass: the oldest deferred sockets are polled again, and the next pass's budget
 * starts with its first event. */
static void resume_deferred(struct dw_server *srv)
{
    for (int i = 0; i < RESUME_PER_PASS && srv->deferred.head; i++) {
        struct dw_sock *s = lws_container_of(srv->deferred.head, struct dw_sock, deferred);

        lws_dll2_remove(&s->deferred);
        lws_dw_uv_resume(s->wsi);
    }
    srv->pass_began = 0;
    /* Sockets still waiting: the next pass must come even if no socket is ready meanwhile
     * (the ones just resumed may have nothing left to read). */
    if (srv->deferred.head)
        lws_cancel_service(srv->ctx);
}
#endif

/* From the sweep: hangs up every socket past its deadline, whatever it was doing (a request
 * or body trickled, an idle keep-alive connection). Synchronously, as lws's own timeouts do
 * from their timer: the sweep runs in no callback of the socket's, and an asynchronous kill
 * could still be replaced by a timeout lws sets meanwhile (it re-arms one on every chunk of
 * a body). WSI_DESTROY frees s at once, so s is unlinked first and not touched after. */
static void expire_sockets(struct dw_server *srv, int64_t now)
{
    struct dw_sock *head = &srv->deadlines, *s;
    char text[DW_IP_TEXT_MAX];

    while ((s = head->next) != head && s->deadline <= now) {
        deadline_unlink(s);
        srv->refusals.deadline++;
        dw_ip_format(&s->ip, text);
        dw_log(DW_LOG_DEBUG, "socket from %s closed: no progress within %d s", text,
               srv->cfg->handshake_timeout);
        lws_set_timeout(s->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_SYNC);
    }
}

/* A socket admit_socket let in, now with its wsi: counted against its peer address until
 * the wsi is destroyed, and given its first deadline. Nothing runs between the two on this
 * thread, so the count admit_socket read is still the count here. */
static void track_socket(struct dw_server *srv, struct lws *wsi)
{
    lws_sockfd_type fd = lws_get_socket_fd(wsi);
    struct dw_sock *s = dw_xcalloc(1, sizeof(*s));

    *s = srv->admitted;
    s->wsi = wsi;
    if (fd != LWS_SOCK_INVALID && !s->proxy_pending)
        count_address(srv, s);
    srv->sockets++;
    lws_set_opaque_user_data(wsi, s);
    dw__sock_arm(srv, wsi);
}

static void untrack_socket(struct dw_server *srv, struct lws *wsi)
{
    struct dw_sock *s = lws_get_opaque_user_data(wsi);

    if (!s)
        return;
    lws_set_opaque_user_data(wsi, NULL);
    deadline_unlink(s);
    lws_dll2_remove(&s->deferred); /* nothing if it is on no list */
    lws_sul_cancel(&s->proxy_retry);
    uncount_address(srv, s);
    srv->sockets--;
    srv->churn++;
    free(s);
}

#if defined(LWS_WITH_EVLIB_PLUGINS)
/* Debian's lws 4.1 loads its libuv support at run time, as a plugin from its library
 * directory; dealwire's own build of lws (DW_LWS=source) has it linked in. */
#define UV_PLUGIN LWS_INSTALL_LIBDIR "/libwebsockets-evlib_uv.so"

static bool uv_plugin_present(void)
{
    return access(UV_PLUGIN, R_OK) == 0;
}
#else
#define UV_PLUGIN "(linked in)"

static bool uv_plugin_present(void)
{
    return true;
}
#endif

static void after_pass(uv_check_t *check)
{
#if defined(LWS_DW_UV_DEFER)
    resume_deferred(check->data);
#endif
    dw__http_submit_ready(check->data);
    dw__stream_submit_ready(check->data);
    new_pass(check->data);
}

/* SIGHUP: the certificate and key files again, into the serving context. */
static void reload_tls(struct dw_server *srv)
{
    char err[512], about[512];

    if (!srv->tls_ctx) {
        dw_log_event(DW_LOG_INFO, "tls.reload", (DW_LOG_STR("result", "off")),
                     "SIGHUP: TLS is off, nothing to reload");
        return;
    }
    if (dw_tls_reload(srv->tls_ctx, srv->cfg->tls_cert, srv->cfg->tls_key, err, sizeof(err)) < 0) {
        dw_log_event(DW_LOG_ERROR, "tls.reload",
                     (DW_LOG_STR("result", "failed"), DW_LOG_STR("error", err)),
                     "certificate not reloaded, the old one keeps serving: %s", err);
        return;
    }
    dw_tls_describe(srv->cfg->tls_cert, about, sizeof(about));
    dw_log_event(DW_LOG_INFO, "tls.reload",
                 (DW_LOG_STR("result", "ok"), DW_LOG_STR("certificate", about)),
                 "certificate reloaded: %s", about);
}

static int callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                    size_t len)
{
    struct dw_server *srv = lws_context_user(lws_get_context(wsi));
    struct dw_pss *pss = user;

    switch (reason) {
    /* ---- wake-ups from other threads -------------------------------------------------- */
    case LWS_CALLBACK_EVENT_WAIT_CANCELLED:
        if (!srv)
            return 0;
        /* Answers first: a publisher's next request can then arrive while the drain below
         * writes, in slices, what the previous ones sent (dw__conn_drain_ready). */
        dw__http_drain_done(srv);
        dw__stream_drain_done(srv);
        dw__replay_drain(srv);
        if (atomic_exchange(&srv->catch_up_due, 0))
            dw__replay_catch_up_all(srv);
        dw__operator_drain(srv);
        dw__conn_drain_ready(srv);
        if (atomic_exchange(&srv->reload_tls, 0))
            reload_tls(srv);
        check_shutdown(srv);
        return 0;

    /* ---- admission -------------------------------------------------------------------- */
    case LWS_CALLBACK_FILTER_NETWORK_CONNECTION:
        /* in is the accepted socket (user, in lws 4.1, its struct lws_filter_network_conn_args) */
        return srv ? admit_socket(srv, wsi, (int)(lws_intptr_t)in) : 0;
    case LWS_CALLBACK_SERVER_NEW_CLIENT_INSTANTIATED:
        /* Not WSI_CREATE: lws calls that before the wsi has its socket. */
        if (srv)
            track_socket(srv, wsi);
        return 0;
    case LWS_CALLBACK_WSI_DESTROY:
        if (srv)
            untrack_socket(srv, wsi);
        return 0;
    case LWS_CALLBACK_OPENSSL_LOAD_EXTRA_SERVER_VERIFY_CERTS:
        /* user is lws's SSL_CTX for the port (no session data here). */
        if (!srv)
            return 0;
        srv->tls_ctx = user;
        if (dw_tls_harden(srv->tls_ctx) < 0) {
            dw_log(DW_LOG_ERROR, "OpenSSL refused the TLS settings");
            return 1;
        }
        return 0;
    case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE:
        return dw__conn_confirm_upgrade(srv, wsi);
    case LWS_CALLBACK_RAW_ADOPT:
        return 0; /* its first bytes follow in RAW_RX */
    case LWS_CALLBACK_RAW_RX:
        return srv ? dw__http_raw(srv, wsi, in, len) : -1;

    default:
        break;
    }

    /* Everything below is about one connection; lws may not have allocated its session data
     * (a request refused before it was), and then there is nothing of ours to act on. */
    if (!pss)
        return lws_callback_http_dummy(wsi, reason, user, in, len);

    switch (reason) {
    /* ---- WebSocket -------------------------------------------------------------------- */
    case LWS_CALLBACK_ESTABLISHED:
        if (dw__stream_is_path(wsi))
            return dw__stream_established(srv, wsi, pss);
        return dw__conn_established(srv, wsi, pss);
    case LWS_CALLBACK_RECEIVE:
        if (pss->stream)
            return dw__stream_receive(srv, wsi, pss, in, len);
        return dw__conn_receive(srv, wsi, pss, in, len);
    case LWS_CALLBACK_RECEIVE_PONG:
        if (pss->stream)
            dw__stream_pong(pss);
        else
            dw__conn_pong(srv, pss);
        return 0;
    case LWS_CALLBACK_SERVER_WRITEABLE:
        if (pss->stream)
            return dw__stream_writeable(srv, wsi, pss);
        return dw__conn_writeable(srv, wsi, pss);
    case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
        if (!pss->stream)
            dw__conn_peer_close(pss);
        return 0;
    case LWS_CALLBACK_CLOSED:
        if (pss->stream)
            dw__stream_closed(srv, pss);
        else
            dw__conn_closed(srv, pss);
        if (srv->draining)
            check_shutdown(srv);
        return 0;

    /* ---- HTTP ------------------------------------------------------------------------- */
    case LWS_CALLBACK_HTTP:
        return dw__http_request(srv, wsi, pss, in);
    case LWS_CALLBACK_HTTP_BODY:
        return dw__http_body(srv, pss, in, len);
    case LWS_CALLBACK_HTTP_BODY_COMPLETION:
        return dw__http_body_done(srv, wsi, pss);
    case LWS_CALLBACK_HTTP_WRITEABLE:
        return dw__http_writeable(srv, wsi, pss);
    case LWS_CALLBACK_CLOSED_HTTP:
        dw__http_closed(srv, pss);
        return 0;

    default:
        break;
    }
    return lws_callback_http_dummy(wsi, reason, user, in, len);
}

/* This node's figures for the others (with a bus), every DW_ANNOUNCE_US. */
static void announce_cb(lws_sorted_usec_list_t *sul)
{
    struct dw_server *srv = lws_container_of(sul, struct dw_server, announce);
    struct dw_bus_figures f;

    dw__stats_figures(srv, &f);
    dw_bus_announce(srv->bus, &f);
    lws_sul_schedule(srv->ctx, 0, &srv->announce, announce_cb, DW_ANNOUNCE_US);
}

static void sweep_cb(lws_sorted_usec_list_t *sul)
{
    struct dw_server *srv = lws_container_of(sul, struct dw_server, sweep);

    int64_t now = dw_now_mono_ns();

    dw__conn_sweep(srv, now);
    dw__stream_sweep(srv, now);
    expire_sockets(srv, now);
    check_shutdown(srv);
    lws_sul_schedule(srv->ctx, 0, &srv->sweep, sweep_cb, srv->sweep_us);
}

/* lws logs through ours: its errors and warnings only, with its own prefix. */
static void lws_log_emit(int level, const char *line)
{
    size_t n = strlen(line);

    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        n--;
    dw__log_write(level == LLL_ERR ? DW_LOG_ERROR : DW_LOG_WARN, "lws", "%.*s", (int)n, line);
}

/* How many sockets may be open at once: the open-file limit less what the daemon needs for
 * everything else (its files, the workers' database connections, lws's pipes). */
static size_t socket_cap(void)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY)
        return SIZE_MAX;
    return rl.rlim_cur > 128 ? (size_t)rl.rlim_cur - 64 : (size_t)rl.rlim_cur / 2;
}

static const lws_retry_bo_t no_idle_policy = {
    .secs_since_valid_ping = 0,
    .secs_since_valid_hangup = 0,
};

static void wake(void *arg)
{
    struct dw_server *srv = arg;

    /* The one lws call any thread may make. */
    lws_cancel_service(srv->ctx);
}

struct dw_server *dw_server_new(const struct dw_config *cfg, const struct dw_auth *auth)
{
    struct dw_server *srv = dw_xcalloc(1, sizeof(*srv));
    struct lws_context_creation_info info;
    pthread_condattr_t cattr;

    DW_ASSERT_THREAD(DW_THREAD_IO);
    srv->cfg = cfg;
    srv->auth = auth;
    srv->ips = dw_ipcount_new();
    srv->socket_cap = socket_cap();
    srv->deadlines.prev = srv->deadlines.next = &srv->deadlines;
    srv->started_at = dw_now_realtime_ns();
    dw_leader_node_name(cfg->port, srv->node);
    dw_readyq_init(&srv->done);
    dw_readyq_init(&srv->replays);
    dw_readyq_init(&srv->streams_done);
    pthread_mutex_init(&srv->ops.lock, NULL);
    pthread_condattr_init(&cattr);
    pthread_condattr_setclock(&cattr, CLOCK_MONOTONIC);
    pthread_cond_init(&srv->ops.done, &cattr);
    pthread_condattr_destroy(&cattr);
    srv->ready_tail = &srv->ready_reqs;
    srv->wbuf = dw_xmalloc(LWS_PRE + DW_WRITE_BATCH);
    dw_readyq_batch_init(&srv->drain);
    srv->wake = (struct dw_wake){.fn = wake, .arg = srv};
    srv->hub = dw_hub_new(&srv->wake);

    srv->protocols[0] = (struct lws_protocols){
        .name = "dealwire",
        .callback = callback,
        .per_session_data_size = sizeof(struct dw_pss),
        .rx_buffer_size = DW_RX_BUFFER,
        .tx_packet_size = DW_WRITE_BATCH,
    };

    lws_set_log_level(LLL_ERR | LLL_WARN, lws_log_emit);
    memset(&info, 0, sizeof(info));
    info.port = cfg->port;
    info.iface = cfg->host;
    info.protocols = srv->protocols;
    info.user = srv;
    /* FALLBACK_TO_APPLY_LISTEN_ACCEPT_CONFIG: a request with a method lws does not know comes
     * to us as a raw socket (dw__http_raw answers it) instead of lws's HTML 403. */
    info.options = LWS_SERVER_OPTION_VALIDATE_UTF8 | LWS_SERVER_OPTION_DISABLE_IPV6 |
                   LWS_SERVER_OPTION_FALLBACK_TO_APPLY_LISTEN_ACCEPT_CONFIG;
    if (cfg->event_loop == DW_EVENT_LOOP_UV && !uv_plugin_present()) {
        dw_log(DW_LOG_WARN,
               "the libuv event loop needs %s (Debian: libwebsockets-evlib-uv), not found: "
               "using the poll loop",
               UV_PLUGIN);
    } else if (cfg->event_loop == DW_EVENT_LOOP_UV) {
        /* A loop of our own ("foreign" to lws), so that we can stop it and close it. */
        srv->uv_loop = dw_xmalloc(sizeof(*srv->uv_loop));
        uv_loop_init(srv->uv_loop);
        /* After each pass, as the poll loop does in dw_server_run; unref'd, so that it does
         * not keep the loop alive. */
        uv_check_init(srv->uv_loop, &srv->after_pass);
        srv->after_pass.data = srv;
        uv_check_start(&srv->after_pass, after_pass);
        uv_unref((uv_handle_t *)&srv->after_pass);
#if defined(LWS_DW_UV_DEFER)
        lws_dw_uv_defer = defer_event;
#endif
#if defined(LWS_DW_UV_DEFER) && defined(LWS_DW_TLS_HOLD)
        lws_dw_tls_hold = tls_hold;
#endif
        srv->foreign_loops[0] = srv->uv_loop;
        info.foreign_loops = srv->foreign_loops;
        info.options |= LWS_SERVER_OPTION_LIBUV | LWS_SERVER_OPTION_UV_NO_SIGSEGV_SIGFPE_SPIN;
    }
    /* No lws idle validity timers: our own heartbeat sweep pings and hangs up. lws's default
     * policy keeps one timer per connection in a sorted list that every new connection (and
     * every frame received, which re-arms it) walks to its end: O(connections) each time. */
    info.retry_and_idle_policy = &no_idle_policy;
    /* Slowloris: TLS and the request (or upgrade) must complete within this. */
    info.timeout_secs = (unsigned)cfg->handshake_timeout;
    /* ... and the time a connection may wait for its request headers (lws's default: 10 s). */
    info.timeout_secs_ah_idle = (unsigned)cfg->handshake_timeout;
    /* Room for a DW_JWT_MAX_LEN token in a header or the query, only while a request's
     * headers are parsed (lws lends the buffer for the handshake, then takes it back). */
    info.max_http_header_data = DW_JWT_MAX_LEN + 2048;
    info.fd_limit_per_thread = 0;
    if (cfg->tls_cert) {
        info.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
        info.ssl_cert_filepath = cfg->tls_cert;
        info.ssl_private_key_filepath = cfg->tls_key;
        info.ssl_cipher_list = DW_TLS12_CIPHERS;
        /* HTTP/1.1 only: the write path sends pre-framed WebSocket bytes, which h2 cannot
         * carry. */
        info.alpn = "http/1.1";
    }

    /* The context is created only after the worker pool, so that a failure to listen can
     * tear down a complete server. */
    srv->workers = dw_workers_start((unsigned)cfg->workers);
    if (!srv->workers)
        goto fail;
    srv->ctx = lws_create_context(&info);
    /* With a foreign libuv loop, lws 4.1 returns a context it is already destroying when the
     * listening vhost failed (core/context.c, fatal_exit_defer), so that the loop can finish
     * closing its handles: no "default" vhost means nothing listens. dw_server_free runs the
     * loop and destroys it. Taken for success, it left the daemon spinning at 100 % CPU on a
     * port already in use, deaf to SIGTERM. */
    if (!srv->ctx || !lws_get_vhost_by_name(srv->ctx, "default")) {
        dw_log_event(DW_LOG_ERROR, "listen.failed",
                     (DW_LOG_STR("host", cfg->host), DW_LOG_INT("port", cfg->port)),
                     "cannot listen on %s:%d (address in use or not available)", cfg->host,
                     cfg->port);
        if (srv->ctx && srv->uv_loop) {
            /* lws's handles close in this loop, with callbacks in its libuv plugin: run them
             * before the destroy that completes the one lws began (and unloads the plugin). */
            uv_run(srv->uv_loop, UV_RUN_DEFAULT);
            lws_context_destroy(srv->ctx);
            srv->ctx = NULL;
        }
        goto fail;
    }
    srv->sweep_us = (lws_usec_t)cfg->heartbeat_interval * 1000000 / 8;
    if (srv->sweep_us < DW_SWEEP_MIN_US)
        srv->sweep_us = DW_SWEEP_MIN_US;
    if (srv->sweep_us > DW_SWEEP_MAX_US)
        srv->sweep_us = DW_SWEEP_MAX_US;
    lws_sul_schedule(srv->ctx, 0, &srv->sweep, sweep_cb, srv->sweep_us);
    dw_log_event(DW_LOG_INFO, "listening",
                 (DW_LOG_STR("host", cfg->host), DW_LOG_INT("port", cfg->port),
                  DW_LOG_INT("tls", cfg->tls_cert != NULL), DW_LOG_STR("version", DW_VERSION),
                  DW_LOG_STR("event_loop", srv->uv_loop ? "uv" : "poll"),
                  DW_LOG_INT("workers", cfg->workers)),
                 "listening on %s:%d (%s, event loop %s, %d workers, queue %d)", cfg->host,
                 cfg->port, cfg->tls_cert ? "wss and https only" : "ws and http, no TLS",
                 srv->uv_loop ? "uv" : "poll", cfg->workers, cfg->queue_size);
    log_security(srv);
    return srv;

fail:
    dw_server_free(srv);
    return NULL;
}

/* What an operator must know at start-up: what protects this port, and what does not. */
static void log_security(struct dw_server *srv)
{
    const struct dw_config *cfg = srv->cfg;
    char about[512];

    if (cfg->tls_cert) {
        long days = dw_tls_describe(cfg->tls_cert, about, sizeof(about));

        dw_log(days < 14 ? DW_LOG_WARN : DW_LOG_INFO, "TLS certificate %s", about);
        if (!srv->tls_ctx)
            dw_log(DW_LOG_WARN, "TLS context not seen: the TLS settings were not applied");
    }
    if (dw_auth_jwt_required(srv->auth))
        dw_log(DW_LOG_INFO, "auth: every WebSocket needs a %s JWT (leeway %d s)",
               dw_auth_mode(srv->auth), cfg->jwt_leeway);
    else
        dw_log(DW_LOG_WARN, "auth is OFF: clients name themselves with ?user_id= (development "
                            "only; set --jwt-secret or --jwt-public-key)");
    if (!dw_auth_api_token_set(srv->auth))
        dw_log(DW_LOG_WARN, "the /api/ endpoints are open to anyone who reaches the port "
                            "(set --api-token)");
    dw_log(DW_LOG_INFO,
           "limits: %d connections, %d sockets per address, handshake %d s, %d messages/s "
           "(burst %d) per connection, origins %s",
           cfg->max_connections, cfg->max_connections_per_ip, cfg->handshake_timeout,
           cfg->rate_limit, cfg->rate_burst, cfg->allowed_origins ? cfg->allowed_origins : "any");
    if (!cfg->trusted_proxies)
        return;
    dw_log(DW_LOG_INFO,
           "trusted proxies: %s (their clients' addresses from PROXY headers and "
           "X-Forwarded-For)",
           cfg->trusted_proxies);
#if defined(LWS_DW_UV_DEFER)
    if (srv->uv_loop)
        return;
#endif
    dw_log(DW_LOG_WARN, "a PROXY header is read only when it came with the connection: the "
                        "libuv loop of dealwire's libwebsockets build (--event-loop uv, DW_LWS "
                        "source) reads one that comes later");
}

/* Starts the shutdown once it was asked for, and ends the loop once it is complete: every
 * connection closed, or the shutdown timeout passed. Called from the callbacks, so that it
 * works the same with the poll loop (lws_service returns after each wait) and the libuv loop
 * (it does not, until uv_stop). */
static void check_shutdown(struct dw_server *srv)
{
    size_t open;

    if (!srv->draining) {
        if (!atomic_load(&srv->stop_requested))
            return;
        srv->draining = true;
        srv->drain_deadline =
            dw_now_mono_ns() + (int64_t)srv->cfg->shutdown_timeout * DW_NSEC_PER_MSEC;
        dw_log_event(DW_LOG_INFO, "shutdown",
                     (DW_LOG_INT("connections", dw_hub_connection_count(srv->hub))),
                     "shutting down: closing %zu connections", dw_hub_connection_count(srv->hub));
        /* Sealed first, so that each 1001 follows everything a publish was told it reached. */
        dw__hub_seal(srv->hub);
        dw__conn_close_all(srv);
        dw__stream_close_all(srv);
    }
    if (srv->finished)
        return;
    open = dw_hub_connection_count(srv->hub) + dw__stream_count(srv);
    if (open > 0 && dw_now_mono_ns() < srv->drain_deadline)
        return;
    if (open > 0)
        dw_log_event(DW_LOG_WARN, "shutdown.timeout", (DW_LOG_INT("connections", open)),
                     "shutdown timeout: %zu connections still open", open);
    srv->finished = true;
    if (srv->uv_loop)
        uv_stop(srv->uv_loop);
}

int dw_server_run(struct dw_server *srv)
{
    DW_ASSERT_THREAD(DW_THREAD_IO);
    while (!srv->finished) {
        if (srv->uv_loop) {
            /* Our own libuv loop, which lws joined: runs until check_shutdown's uv_stop. */
            uv_run(srv->uv_loop, UV_RUN_DEFAULT);
            continue;
        }
        if (lws_service(srv->ctx, 0) < 0) {
            dw_log(DW_LOG_ERROR, "event loop failed");
            return -1;
        }
        dw__http_submit_ready(srv);
        dw__stream_submit_ready(srv);
        new_pass(srv);
    }
    return 0;
}

void dw_server_reload_tls(struct dw_server *srv)
{
    atomic_store(&srv->reload_tls, 1);
    lws_cancel_service(srv->ctx);
}

void dw_server_stop(struct dw_server *srv)
{
    atomic_store(&srv->stop_requested, 1);
    lws_cancel_service(srv->ctx);
}

void dw_server_free(struct dw_server *srv)
{
    if (!srv)
        return;
    /* Workers first: a job still running wakes the I/O thread with lws_cancel_service(),
     * which needs a live context. Jobs still queued run to the end; their answers are dropped
     * below with the done queue. */
    dw_workers_stop(srv->workers);
    /* Then the inbox, which the jobs submitted to: it writes and delivers what is queued
     * (the hub is sealed by now: delivered to no one, but stored for the clients' resume). */
    dw_inbox_stop(srv->inbox);
    dw_retention_stop(srv->retention);
    /* Nothing sends now: the bus publishes what is queued and stops delivering here. */
    dw_bus_stop(srv->bus);
    if (srv->uv_loop)
        uv_close((uv_handle_t *)&srv->after_pass, NULL);
    if (srv->ctx) {
        lws_sul_cancel(&srv->sweep);
        lws_sul_cancel(&srv->announce);
        /* Closes what is left; each CLOSED callback unlinks its connection from the hub. */
        lws_context_destroy(srv->ctx);
        if (srv->uv_loop) {
            /* With a foreign loop lws closes its handles asynchronously: let the loop finish
             * them, then destroy again to free what waited for those closes. */
            uv_run(srv->uv_loop, UV_RUN_DEFAULT);
            lws_context_destroy(srv->ctx);
        }
        srv->ctx = NULL;
    }
    if (srv->uv_loop) {
        uv_run(srv->uv_loop, UV_RUN_DEFAULT);
        if (uv_loop_close(srv->uv_loop))
            dw_log(DW_LOG_WARN, "libuv loop still had handles at exit");
        free(srv->uv_loop);
    }
    dw__http_submit_ready(srv); /* every connection is closed: frees what waited */
    dw__stream_submit_ready(srv);
    dw__conn_drain_release(srv);
    dw__http_free_done(srv);
    dw__stream_free_done(srv);
    dw__replay_free_all(srv); /* pages the stopped inbox answered after the loop ended */
    dw_hub_free(srv->hub);
    dw_ipcount_free(srv->ips);
    free(srv->wbuf);
    pthread_mutex_destroy(&srv->ops.lock);
    pthread_cond_destroy(&srv->ops.done);
    free(srv);
}

void dw_server_set_db_health(struct dw_server *srv, const struct dw_store_health *health)
{
    srv->db_health = health;
}

int dw_server_set_db(struct dw_server *srv, struct dw_db *db)
{
    srv->db = db;
    srv->inbox = dw_inbox_start(db, srv->hub);
    if (srv->inbox)
        srv->retention = dw_retention_start(db, srv->cfg->inbox_retention);
    return srv->inbox && srv->retention ? 0 : -EAGAIN;
}

void dw_server_set_bus(struct dw_server *srv, struct dw_bus *bus)
{
    srv->bus = bus;
    dw_hub_set_bus(srv->hub, bus);
    announce_cb(&srv->announce); /* at once: the others list this node from its start */
}

void dw_server_catch_up(void *srv_arg)
{
    struct dw_server *srv = srv_arg;

    atomic_store(&srv->catch_up_due, 1);
    dw_wake(&srv->wake);
}

struct dw_inbox *dw_server_inbox(struct dw_server *srv)
{
    return srv->inbox;
}

const char *dw_server_node(const struct dw_server *srv)
{
    return srv->node;
}

struct dw_hub *dw_server_hub(struct dw_server *srv)
{
    return srv->hub;
}

struct dw_workers *dw_server_workers(struct dw_server *srv)
{
    return srv->workers;
}
