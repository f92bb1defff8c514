/*
 * net — the byte stream under both kinds of connection (ws.c's clients, http.c's publishers):
 * plain TCP, or TLS over it with --tls (OpenSSL, one SSL_CTX for the run, one SSL per
 * connection). Non-blocking, on the bench's one thread, driven by its epoll loop.
 */
#ifndef DWB_NET_H
#define DWB_NET_H

#include "bench.h"

#include <sys/types.h>

/* Registers (add) or changes ev's epoll interest: EPOLLIN always; EPOLLOUT when out is set
 * (the owner waits for writability: connecting, or bytes queued) and the last SSL_write did
 * not wait for a read, or when the last SSL_read waits for a write. Remembers out in
 * ev->want_out and skips epoll_ctl when nothing changes. Returns 0 or a negative errno. */
int dwb_watch(struct dwb_run *run, struct dwb_fd *ev, bool add, bool out);

/* Makes the run's TLS context from --tls-ca, --tls-insecure and --tls-server-name; nothing
 * without --tls. Returns 0, or -EINVAL after printing why (an unreadable CA file). */
int dwb_net_init(struct dwb_run *run);

/* Frees the run's TLS context (after every connection was closed). */
void dwb_net_free(struct dwb_run *run);

/* Moves ev's stream on after a non-blocking connect(): checks the connect's result, then with
 * --tls runs the TLS handshake as far as the socket allows (the first call creates ev's SSL).
 * Call it on every event until it returns 0: the stream is ready and only EPOLLIN is watched.
 * Returns -EAGAIN while it is not ready yet, or a negative errno when it failed (-EPROTO: a
 * TLS error, dwb_net_strerror says which; ev->ssl tells whether TCP had connected). */
int dwb_net_connecting(struct dwb_run *run, struct dwb_fd *ev);

/* Reads up to n bytes into buf: recv(), or SSL_read() until buf is full or OpenSSL holds no
 * more. Returns the bytes read, 0 at the end of the stream, -EAGAIN when there is nothing to
 * read now, or a negative errno (-EPROTO: TLS). */
ssize_t dwb_net_recv(struct dwb_run *run, struct dwb_fd *ev, void *buf, size_t n);

/* Whether the last dwb_net_recv left something inside OpenSSL that epoll will not report:
 * more bytes (it filled the buffer), or the end of the stream or a TLS error met after the
 * bytes it returned. The caller then calls dwb_net_recv again once it has parsed what it got.
 * Always false without TLS. */
bool dwb_net_has_pending(const struct dwb_fd *ev);

/* Writes up to n bytes of buf: send(), or SSL_write() with partial writes. Returns the bytes
 * taken (the rest is the caller's to queue and retry from the first byte not taken: it may
 * move, its content may not), -EAGAIN when none, or a negative errno (-EPROTO: TLS). */
ssize_t dwb_net_send(struct dwb_run *run, struct dwb_fd *ev, const void *buf, size_t n);

/* Whether the epoll events of ev call for a write attempt: EPOLLOUT, or readable while the
 * last SSL_write waited for a read. */
bool dwb_net_should_write(const struct dwb_fd *ev, uint32_t events);

/* Whether the epoll events of ev call for a read attempt: anything but EPOLLOUT alone, or
 * writable while the last SSL_read waited for a write. */
bool dwb_net_should_read(const struct dwb_fd *ev, uint32_t events);

/* Frees ev's SSL (no close_notify) and closes its socket, which also leaves the epoll set. */
void dwb_net_close(struct dwb_fd *ev);

/* Text for a negative errno from this module: for -EPROTO the last TLS error (for instance
 * "certificate verify failed (self-signed certificate)"), else strerror. Returns a borrowed
 * string valid until the next call into this module. */
const char *dwb_net_strerror(int err);

#endif
