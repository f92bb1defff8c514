/*
 * ws — the bench's RFC 6455 client: one non-blocking socket per connection, bound to one of
 * the loopback source addresses before connect, the upgrade handshake with its accept check,
 * server frames with 7/16/64-bit lengths, masked client frames, PING answered with PONG, and
 * the close handshake. Everything runs on the bench's one thread.
 */
#ifndef DWB_WS_H
#define DWB_WS_H

#include "bench.h"

/* Starts connection c: socket, bind to its source address, non-blocking connect. Returns 0,
 * or a negative errno after which c is FAILED (and reported through dwb_on_conn_failed). */
int dwb_ws_start(struct dwb_run *run, struct dwb_conn *c);

/* Handles the epoll events of c: connect completion, reads, pending writes. */
void dwb_ws_on_event(struct dwb_run *run, struct dwb_conn *c, uint32_t events);

/* Sends text as one masked text frame (at most 1 KiB). Returns 0 or a negative errno. */
int dwb_ws_send_text(struct dwb_run *run, struct dwb_conn *c, const char *text, size_t len);

/* Starts the close handshake (code 1000) on an open connection; a connection that is not
 * open yet is closed at once. */
void dwb_ws_close(struct dwb_run *run, struct dwb_conn *c);

/* Closes c's socket now and frees its buffers; c ends in state. */
void dwb_ws_drop(struct dwb_run *run, struct dwb_conn *c, enum dwb_ws_state state);

/* Fails the connections whose connect or handshake took longer than --connect-timeout. */
void dwb_ws_expire(struct dwb_run *run, int64_t now);

#endif
