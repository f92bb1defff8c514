/*
 * ws — the bench's RFC 6455 client: one non-blocking socket per connection, bound to one of
 * the loopback source addresses before connect, the upgrade handshake with its accept check,
 * server frames with 7/16/64-bit lengths, masked client frames, PING answered with PONG, and
 * the close handshake. Everything runs on the bench's one thread. The framing helpers at the
 * end are shared with the WebSocket publishers (http.c, --publish-mode ws).
 */
#ifndef DWB_WS_H
#define DWB_WS_H

#include "bench.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum dwb_ws_op {
    DWB_WS_OP_CONT = 0x0,
    DWB_WS_OP_TEXT = 0x1,
    DWB_WS_OP_BINARY = 0x2,
    DWB_WS_OP_CLOSE = 0x8,
    DWB_WS_OP_PING = 0x9,
    DWB_WS_OP_PONG = 0xa,
};

/* Longest header of a masked client frame: 2 + 8 (64-bit length) + 4 (mask). */
#define DWB_WS_CLIENT_HEAD 14

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

/* ---- framing, shared with the WebSocket publishers ------------------------------------- */

/* The header of a frame a server sent. */
struct dwb_ws_frame {
    unsigned op;  /* enum dwb_ws_op */
    bool fin;     /* the last fragment */
    bool masked;  /* a server must not mask: an error */
    size_t hlen;  /* header bytes, in front of the payload */
    uint64_t len; /* payload bytes */
};

/* Parses the frame header at the start of [p, p + n) into *f. Returns 1 when the header is
 * whole (the payload may not be: compare n with f->hlen + f->len), 0 when more bytes are
 * needed. Inline: it runs once per delivered message. */
static inline int dwb_ws_frame_head(const unsigned char *p, size_t n, struct dwb_ws_frame *f)
{
    if (n < 2)
        return 0;
    f->op = p[0] & 0x0f;
    f->fin = (p[0] & 0x80) != 0;
    f->masked = (p[1] & 0x80) != 0;
    f->len = p[1] & 0x7f;
    f->hlen = 2;
    if (f->len == 126) {
        if (n < 4)
            return 0;
        f->len = (uint64_t)p[2] << 8 | p[3];
        f->hlen = 4;
    } else if (f->len == 127) {
        if (n < 10)
            return 0;
        f->len = 0;
        for (int i = 0; i < 8; i++)
            f->len = f->len << 8 | p[2 + i];
        f->hlen = 10;
    }
    return 1;
}

/* A new random Sec-WebSocket-Key (base64 of 16 random bytes, NUL-terminated) into key. */
void dwb_ws_new_key(struct dwb_run *run, char key[28]);

/* Checks an upgrade answer's head (NUL-terminated, through its blank line) against key: status
 * 101 and the Sec-WebSocket-Accept that key calls for. Returns 0, or -1 with the reason in
 * why (size bytes), e.g. "upgrade refused: HTTP/1.1 404 Not Found". */
int dwb_ws_check_upgrade(const char *head, const char *key, char *why, size_t size);

/* Writes the header of a masked client frame carrying len payload bytes (fin set) into out
 * (DWB_WS_CLIENT_HEAD bytes of room), with a new random mask also stored in mask. Returns the
 * header's length. */
size_t dwb_ws_put_head(struct dwb_run *run, unsigned char *out, unsigned op, uint64_t len,
                       unsigned char mask[4]);

/* Copies n bytes from src to dst masked with mask, as payload bytes at offset off onwards
 * (so a payload may be masked in pieces). */
void dwb_ws_mask(unsigned char *dst, const void *src, size_t n, const unsigned char mask[4],
                 size_t off);

#endif
