/*
 * peek — what a new socket is, from the first bytes it sent, before anything reads them.
 *
 * When a pass of the I/O loop runs past its budget, the events of sockets other than the
 * API's wait for later passes (server.c, defer_event): in a reconnect storm, the handshakes
 * and closes of thousands of clients. A socket that has sent nothing the loop has read yet
 * could be either; server.c peeks at its first bytes (recv with MSG_PEEK, which leaves them
 * in the socket) and asks dw_peek_request: a request for the API (a publisher's new
 * keep-alive connection, an operator, a load balancer's health check) is served in the pass,
 * everything else may wait.
 *
 * Synchronization: none (a pure function).
 */
#ifndef DEALWIRE_PEEK_H
#define DEALWIRE_PEEK_H

#include <stddef.h>

/* Bytes of a request's head that decide it: "OPTIONS /healthz" and room to spare. */
#define DW_PEEK_HEAD 32

enum dw_peek {
    DW_PEEK_MORE,  /* too few bytes to tell yet */
    DW_PEEK_API,   /* an HTTP request for /api/..., /healthz or /readyz, any method */
    DW_PEEK_OTHER, /* anything else: a WebSocket upgrade, another path, a TLS handshake */
};

/* Classifies the first n bytes a socket sent (n > DW_PEEK_HEAD counts as DW_PEEK_HEAD). */
enum dw_peek dw_peek_request(const char *head, size_t n);

#endif
