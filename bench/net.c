/*
 * net — DESIGN: the byte stream under both kinds of connection, plain TCP or TLS (--tls), on
 * non-blocking sockets in the bench's one epoll loop (level-triggered).
 *
 * One SSL_CTX for the run, one SSL per connection, made once TCP has connected. Every TLS
 * handshake is a full one unless --tls-resume: the client keeps no session cache, so the
 * connect scenario's rate is that of new TLS clients. With --tls-resume it keeps the last
 * session a server ticket gave and offers it on every new connection (TLS 1.3 lets a client
 * offer a ticket more than once; nginx accepts it). The certificate is verified against --tls-ca
 * and must match
 * --tls-server-name (localhost), which is also the SNI; --tls-insecure skips the check, and
 * the report says so.
 *
 * Reads stay as cheap as the plain path's one recv() per readiness event: read-ahead with a
 * DWB_READ_CHUNK read buffer lets one read(2) take whatever the socket holds, and SSL_read then
 * hands out its records from memory. epoll cannot see what is already inside OpenSSL, so
 * dwb_net_recv goes on while SSL_has_pending() says some is left and the caller's buffer has
 * room; what is still in the socket is epoll's to report, so no read(2) is spent on EAGAIN.
 * What a call leaves inside OpenSSL (more than fitted; or the end, close_notify or an error,
 * met after the bytes it returned) is kept in tls_state for dwb_net_has_pending: a server may
 * send its last frame and close_notify together and then wait, and nothing more would wake
 * the connection.
 * SSL_MODE_RELEASE_BUFFERS gives OpenSSL's buffers back while a connection is idle, so 10,000
 * quiet clients do not hold 80 KiB each.
 *
 * Writes: SSL_MODE_ENABLE_PARTIAL_WRITE lets SSL_write take part of a buffer, like send(2), and
 * SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER lets the retry after WANT_WRITE come from the
 * connection's out buffer, which holds the same bytes (and maybe more behind them).
 *
 * A call may wait for the other direction: SSL_read for a write (it owes the server a record,
 * a TLS 1.3 KeyUpdate answer) or SSL_write for a read (a handshake message; renegotiation is
 * refused, so in practice never). tls_state records it, dwb_watch turns it into epoll interest,
 * and dwb_net_should_read/should_write tell the owner which call to retry on an event.
 *
 * The end of the stream: a server that closes without close_notify reads as EOF, like plain
 * TCP (SSL_OP_IGNORE_UNEXPECTED_EOF): the WebSocket close handshake and Content-Length already
 * tell a clean end from a cut one. The bench sends no close_notify either.
 */
#include "net.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

/* tls_state bits. */
#define READ_WANTS_OUT 0x1  /* the last SSL_read needs the socket writable */
#define WRITE_WANTS_IN 0x2  /* the last SSL_write needs a record from the server first */
#define MORE_INSIDE    0x4  /* the last dwb_net_recv filled its buffer with more in OpenSSL */
#define ENDED_INSIDE   0x8  /* close_notify met after returning bytes: next, report the end */
#define FAILED_INSIDE  0x10 /* a TLS error met after returning bytes: next, report it */

/* The last TLS error, for dwb_net_strerror (one thread: one buffer). */
static char tls_error[200];
/* --tls-resume: the session offered to new connections, the last one a server gave. */
static SSL_SESSION *resume_session;

int dwb_watch(struct dwb_run *run, struct dwb_fd *ev, bool add, bool out)
{
    struct epoll_event e = {.events = EPOLLIN, .data.ptr = ev};
    bool on = (out && !(ev->tls_state & WRITE_WANTS_IN)) || (ev->tls_state & READ_WANTS_OUT);

    ev->want_out = out;
    if (!add && on == ev->out_on)
        return 0;
    if (on)
        e.events |= EPOLLOUT;
    if (epoll_ctl(run->epfd, add ? EPOLL_CTL_ADD : EPOLL_CTL_MOD, ev->fd, &e) < 0)
        return -errno;
    ev->out_on = on;
    return 0;
}

static int set_wait(struct dwb_run *run, struct dwb_fd *ev, uint8_t bit, bool waits)
{
    uint8_t w = waits ? ev->tls_state | bit : ev->tls_state & (uint8_t)~bit;

    if (w == ev->tls_state)
        return 0;
    ev->tls_state = w;
    return dwb_watch(run, ev, false, ev->want_out);
}

/* ---- the context ----------------------------------------------------------------------- */

/* Prints OpenSSL's queued errors after what, and empties the queue. */
static void print_ssl_errors(const char *what)
{
    unsigned long e;
    char buf[256];

    fprintf(stderr, DWB_NAME ": %s\n", what);
    while ((e = ERR_get_error()) != 0) {
        ERR_error_string_n(e, buf, sizeof(buf));
        fprintf(stderr, "  %s\n", buf);
    }
}

/* OpenSSL's new-session callback (--tls-resume): keeps sess, the newest, for the next
 * connections. Returning 1 takes ownership of sess. */
static int keep_session(SSL *ssl, SSL_SESSION *sess)
{
    (void)ssl;
    SSL_SESSION_free(resume_session);
    resume_session = sess;
    return 1;
}

static bool is_ip_literal(const char *name)
{
    unsigned char ip[16];

    return inet_pton(AF_INET, name, ip) == 1 || inet_pton(AF_INET6, name, ip) == 1;
}

int dwb_net_init(struct dwb_run *run)
{
    const struct dwb_opts *o = &run->opt;
    X509_VERIFY_PARAM *param;
    SSL_CTX *ctx;
    char what[PATH_MAX + 64];

    if (!o->tls)
        return 0;
    ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) {
        print_ssl_errors("cannot make a TLS context");
        return -EINVAL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF | SSL_OP_NO_RENEGOTIATION);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                              SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_read_ahead(ctx, 1);
    SSL_CTX_set_default_read_buffer_len(ctx, DWB_READ_CHUNK);
    if (o->tls_resume) {
        /* No internal store: keep_session holds the one session there is. */
        SSL_CTX_set_session_cache_mode(ctx,
                                       SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
        SSL_CTX_sess_set_new_cb(ctx, keep_session);
    } else {
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    }
    if (o->tls_insecure) {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    } else {
        if (SSL_CTX_load_verify_file(ctx, o->tls_ca) != 1) {
            snprintf(what, sizeof(what), "--tls-ca %s: no certificate could be loaded", o->tls_ca);
            print_ssl_errors(what);
            SSL_CTX_free(ctx);
            return -EINVAL;
        }
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
        /* Set once here; every SSL made from ctx inherits it. */
        param = SSL_CTX_get0_param(ctx);
        X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        if (is_ip_literal(o->tls_server_name)
                ? !X509_VERIFY_PARAM_set1_ip_asc(param, o->tls_server_name)
                : !X509_VERIFY_PARAM_set1_host(param, o->tls_server_name, 0)) {
            print_ssl_errors("--tls-server-name: not a host name or an IP address");
            SSL_CTX_free(ctx);
            return -EINVAL;
        }
    }
    run->tls_ctx = ctx;
    return 0;
}

void dwb_net_free(struct dwb_run *run)
{
    SSL_SESSION_free(resume_session);
    resume_session = NULL;
    SSL_CTX_free(run->tls_ctx);
    run->tls_ctx = NULL;
}

/* ---- errors ---------------------------------------------------------------------------- */

/* Turns a failed SSL call (ret, and SSL_get_error's e) into a negative errno, the text of a
 * TLS error in tls_error, and an empty error queue. */
static int tls_failed(SSL *ssl, int ret, int e)
{
    int sys = errno;
    unsigned long err = ERR_get_error();
    long verify = SSL_get_verify_result(ssl);
    const char *reason = err ? ERR_reason_error_string(err) : NULL;
    char code[128];

    ERR_clear_error();
    if (e == SSL_ERROR_SYSCALL && err == 0) {
        if (sys)
            return -sys;
        snprintf(tls_error, sizeof(tls_error), "connection closed inside a TLS record (%d)", ret);
        return -EPROTO;
    }
    if (!reason && err) {
        ERR_error_string_n(err, code, sizeof(code));
        reason = code;
    } else if (!reason) {
        snprintf(code, sizeof(code), "TLS error %d, no detail from OpenSSL", e);
        reason = code;
    }
    if (verify != X509_V_OK)
        snprintf(tls_error, sizeof(tls_error), "%s (%s)", reason,
                 X509_verify_cert_error_string(verify));
    else if (ERR_GET_LIB(err) == ERR_LIB_SSL && ERR_GET_REASON(err) == SSL_R_WRONG_VERSION_NUMBER)
        snprintf(tls_error, sizeof(tls_error), "%s (does the server speak TLS on this port?)",
                 reason);
    else
        snprintf(tls_error, sizeof(tls_error), "%s", reason);
    return -EPROTO;
}

const char *dwb_net_strerror(int err)
{
    if (err < 0)
        err = -err;
    return err == EPROTO && tls_error[0] ? tls_error : strerror(err);
}

/* ---- connecting ------------------------------------------------------------------------ */

/* Keeps what the first handshake negotiated, for the report. */
static void describe(struct dwb_run *run, SSL *ssl)
{
    X509 *cert = SSL_get0_peer_certificate(ssl);
    EVP_PKEY *key = cert ? X509_get0_pubkey(cert) : NULL;
    const char *group = SSL_group_to_name(ssl, SSL_get_negotiated_group(ssl));
    char subject[96] = "no certificate", curve[32] = "";
    size_t len = 0;

    snprintf(run->tls_version, sizeof(run->tls_version), "%s", SSL_get_version(ssl));
    snprintf(run->tls_cipher, sizeof(run->tls_cipher), "%s", SSL_get_cipher_name(ssl));
    snprintf(run->tls_group, sizeof(run->tls_group), "%s", group ? group : "unknown");
    if (cert)
        X509_NAME_oneline(X509_get_subject_name(cert), subject, sizeof(subject));
    if (key && EVP_PKEY_get_group_name(key, curve + 2, sizeof(curve) - 2, &len) == 1 && len) {
        curve[0] = ',';
        curve[1] = ' ';
    }
    snprintf(run->tls_cert, sizeof(run->tls_cert), "%s, %s key %d bits%s", subject,
             key ? EVP_PKEY_get0_type_name(key) : "no", key ? EVP_PKEY_get_bits(key) : 0, curve);
}

/* Makes ev's SSL once TCP has connected. Returns 0 or a negative errno. */
static int start_tls(struct dwb_run *run, struct dwb_fd *ev)
{
    const char *name = run->opt.tls_server_name;

    ev->ssl = SSL_new(run->tls_ctx);
    if (!ev->ssl)
        return -ENOMEM;
    /* RFC 6066 3: SNI carries host names only, never an address. */
    if (SSL_set_fd(ev->ssl, ev->fd) != 1 ||
        (!is_ip_literal(name) && SSL_set_tlsext_host_name(ev->ssl, name) != 1) ||
        (resume_session && SSL_set_session(ev->ssl, resume_session) != 1))
        return tls_failed(ev->ssl, 0, SSL_ERROR_SSL);
    ERR_clear_error();
    return 0;
}

int dwb_net_connecting(struct dwb_run *run, struct dwb_fd *ev)
{
    socklen_t len = sizeof(int);
    int err = 0, r, e;

    if (!ev->ssl) {
        if (getsockopt(ev->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
            err = errno;
        if (err)
            return -err;
        if (!run->opt.tls)
            return dwb_watch(run, ev, false, false);
        err = start_tls(run, ev);
        if (err < 0)
            return err;
    }
    r = SSL_connect(ev->ssl);
    if (r == 1) {
        if (!run->tls_version[0])
            describe(run, ev->ssl);
        if (SSL_session_reused(ev->ssl))
            run->n.tls_resumed++;
        else
            run->n.tls_full++;
        return dwb_watch(run, ev, false, false);
    }
    e = SSL_get_error(ev->ssl, r);
    if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
        return tls_failed(ev->ssl, r, e);
    err = dwb_watch(run, ev, false, e == SSL_ERROR_WANT_WRITE);
    return err < 0 ? err : -EAGAIN;
}

/* ---- reading and writing --------------------------------------------------------------- */

static ssize_t sock_result(ssize_t r)
{
    if (r >= 0)
        return r;
    return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? -EAGAIN : -errno;
}

ssize_t dwb_net_recv(struct dwb_run *run, struct dwb_fd *ev, void *buf, size_t n)
{
    size_t got = 0;
    int r, e, err;

    if (!ev->ssl)
        return sock_result(recv(ev->fd, buf, n, MSG_DONTWAIT));
    if (ev->tls_state & (ENDED_INSIDE | FAILED_INSIDE))
        return ev->tls_state & ENDED_INSIDE ? 0 : -EPROTO;
    ev->tls_state &= (uint8_t)~MORE_INSIDE;
    if (n > INT_MAX)
        n = INT_MAX;
    do {
        r = SSL_read(ev->ssl, (char *)buf + got, (int)(n - got));
        if (r <= 0)
            break;
        got += (size_t)r;
    } while (got < n && SSL_has_pending(ev->ssl));
    e = r > 0 ? SSL_ERROR_NONE : SSL_get_error(ev->ssl, r);
    switch (e) {
    case SSL_ERROR_NONE:
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE:
        if (got == n && SSL_has_pending(ev->ssl))
            ev->tls_state |= MORE_INSIDE;
        err = set_wait(run, ev, READ_WANTS_OUT, e == SSL_ERROR_WANT_WRITE);
        if (err < 0)
            return err;
        return got ? (ssize_t)got : -EAGAIN;
    case SSL_ERROR_ZERO_RETURN:
        /* The end, with or without close_notify; after bytes, it is the next call's. */
        if (got)
            ev->tls_state |= ENDED_INSIDE;
        return (ssize_t)got;
    default:
        /* Hand over what arrived first, then the error. A socket error (not -EPROTO) stays
         * in the socket, where epoll reports it. */
        err = tls_failed(ev->ssl, r, e);
        if (got && err == -EPROTO)
            ev->tls_state |= FAILED_INSIDE;
        return got ? (ssize_t)got : err;
    }
}

bool dwb_net_has_pending(const struct dwb_fd *ev)
{
    return ev->tls_state & (MORE_INSIDE | ENDED_INSIDE | FAILED_INSIDE);
}

ssize_t dwb_net_send(struct dwb_run *run, struct dwb_fd *ev, const void *buf, size_t n)
{
    int r, e, err;

    if (!ev->ssl)
        return sock_result(send(ev->fd, buf, n, MSG_NOSIGNAL | MSG_DONTWAIT));
    if (n == 0)
        return 0;
    r = SSL_write(ev->ssl, buf, n > INT_MAX ? INT_MAX : (int)n);
    e = r > 0 ? SSL_ERROR_NONE : SSL_get_error(ev->ssl, r);
    switch (e) {
    case SSL_ERROR_NONE:
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE:
        err = set_wait(run, ev, WRITE_WANTS_IN, e == SSL_ERROR_WANT_READ);
        if (err < 0)
            return err;
        return r > 0 ? r : -EAGAIN;
    default:
        return tls_failed(ev->ssl, r, e);
    }
}

bool dwb_net_should_write(const struct dwb_fd *ev, uint32_t events)
{
    return (events & EPOLLOUT) || ((ev->tls_state & WRITE_WANTS_IN) && (events & EPOLLIN));
}

bool dwb_net_should_read(const struct dwb_fd *ev, uint32_t events)
{
    return (events & ~(uint32_t)EPOLLOUT) || ((ev->tls_state & READ_WANTS_OUT) && events);
}

void dwb_net_close(struct dwb_fd *ev)
{
    SSL_free(ev->ssl);
    ev->ssl = NULL;
    if (ev->fd >= 0)
        close(ev->fd); /* also leaves the epoll set: the fd is not shared */
    ev->fd = -1;
    ev->want_out = ev->out_on = false;
    ev->tls_state = 0;
}
