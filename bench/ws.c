/*
 * ws — DESIGN: the WebSocket client side of the bench, on the bench's one thread.
 *
 * Reads go through one static scratch buffer: a connection's unparsed bytes (part of a frame,
 * or of the 101 answer) are copied in front, then up to DWB_READ_CHUNK bytes are read behind
 * them, every whole frame is handled in place, and only the tail is copied back to the
 * connection. So a connection owns at most one partial frame, grown once and reused: nothing
 * is allocated per message. The bytes come through net.c, plain or TLS alike; with TLS a read
 * may leave bytes (or the end of the stream) inside OpenSSL, which epoll does not report, so
 * the connection reads again at once while dwb_net_has_pending says so.
 *
 * Source addresses: connection i binds to 127.0.0.(1 + i % sources) with
 * IP_BIND_ADDRESS_NO_PORT, so the kernel picks the port at connect time from that address's
 * own range of the 4-tuple, and large connection counts fit in the ephemeral port range. It
 * connects to its own daemon port, set up front (--ports: round-robin over the nodes).
 *
 * Replay (--scenario replay): the upgrade asks /ws/events?user_id=<prefix><i>&last_seq=K, and
 * the welcome's text goes to the scenario, which reads its last_seq and recovered.
 *
 * Ready: dealwire sends connection_established once the connection is registered; nchan sends
 * nothing, and answers the upgrade only once the subscriber is in the channel (its websocket
 * subscriber writes the 101 when the store enqueues it), so with --server nchan a connection is
 * ready on a valid 101.
 */
#include "ws.h"
#include "http.h"
#include "net.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include <openssl/evp.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

#define WS_GUID          "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#define MAX_HANDSHAKE    8192
#define MAX_CLIENT_FRAME 1024

static unsigned char scratch[DWB_MAX_FRAME + 16 + DWB_READ_CHUNK];

/* ---- helpers --------------------------------------------------------------------------- */

static void base64(const unsigned char *in, size_t n, char *out)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t i = 0;

    for (; i + 2 < n; i += 3) {
        unsigned v = (unsigned)in[i] << 16 | (unsigned)in[i + 1] << 8 | in[i + 2];

        *out++ = tab[v >> 18];
        *out++ = tab[(v >> 12) & 63];
        *out++ = tab[(v >> 6) & 63];
        *out++ = tab[v & 63];
    }
    if (i < n) {
        unsigned v = (unsigned)in[i] << 16 | (i + 1 < n ? (unsigned)in[i + 1] << 8 : 0);

        *out++ = tab[v >> 18];
        *out++ = tab[(v >> 12) & 63];
        if (i + 1 < n)
            *out++ = tab[(v >> 6) & 63];
        else
            *out++ = '=';
        *out++ = '=';
    }
    *out = '\0';
}

/* The Sec-WebSocket-Accept the server must answer to key (RFC 6455 4.2.2). */
static void expected_accept(const char *key, char out[29])
{
    char buf[64];
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;
    int n = snprintf(buf, sizeof(buf), "%s%s", key, WS_GUID);

    EVP_Digest(buf, (size_t)n, md, &mdlen, EVP_sha1(), NULL);
    base64(md, 20, out);
}

static void fail(struct dwb_run *run, struct dwb_conn *c, const char *why, int err)
{
    bool was_ready = c->state == DWB_WS_READY;

    if (c->state == DWB_WS_CLOSING) {
        /* Already counted (server close) or ending anyway (our close). */
        dwb_ws_drop(run, c, DWB_WS_CLOSED);
        return;
    }
    if (err)
        dwb_note_error(run, "connection %u: %s: %s", c->index, why, dwb_net_strerror(err));
    else
        dwb_note_error(run, "connection %u: %s", c->index, why);
    dwb_ws_drop(run, c, DWB_WS_FAILED);
    dwb_on_conn_failed(run, c, was_ready);
}

/* ---- writing --------------------------------------------------------------------------- */

static int queue_out(struct dwb_run *run, struct dwb_conn *c, const unsigned char *p, size_t n)
{
    if (c->out_len + n > c->out_cap) {
        uint32_t cap = c->out_cap ? c->out_cap : 256;
        unsigned char *q;

        while (cap < c->out_len + n)
            cap *= 2;
        q = realloc(c->out, cap);
        if (!q)
            return -ENOMEM;
        c->out = q;
        c->out_cap = cap;
    }
    memcpy(c->out + c->out_len, p, n);
    c->out_len += (uint32_t)n;
    return dwb_watch(run, &c->ev, false, true);
}

static int send_bytes(struct dwb_run *run, struct dwb_conn *c, const void *p, size_t n)
{
    ssize_t w = 0;

    if (c->ev.fd < 0)
        return -EBADF;
    if (c->out_len == 0) {
        w = dwb_net_send(run, &c->ev, p, n);
        if (w == -EAGAIN)
            w = 0;
        else if (w < 0)
            return (int)w;
        if ((size_t)w == n)
            return 0;
    }
    /* What TLS did not take is retried from the out buffer: the same bytes, moved. */
    return queue_out(run, c, (const unsigned char *)p + w, n - (size_t)w);
}

static int flush_out(struct dwb_run *run, struct dwb_conn *c)
{
    while (c->out_len > 0) {
        ssize_t w = dwb_net_send(run, &c->ev, c->out, c->out_len);

        if (w < 0)
            return w == -EAGAIN ? 0 : (int)w;
        memmove(c->out, c->out + w, c->out_len - (size_t)w);
        c->out_len -= (uint32_t)w;
    }
    return dwb_watch(run, &c->ev, false, false);
}

size_t dwb_ws_put_head(struct dwb_run *run, unsigned char *out, unsigned op, uint64_t len,
                       unsigned char mask[4])
{
    uint32_t key = (uint32_t)dwb_rand(run);
    size_t h = 2;

    out[0] = (unsigned char)(0x80 | op);
    if (len < 126) {
        out[1] = (unsigned char)(0x80 | len);
    } else if (len <= 0xffff) {
        out[1] = 0x80 | 126;
        out[2] = (unsigned char)(len >> 8);
        out[3] = (unsigned char)len;
        h = 4;
    } else {
        out[1] = 0x80 | 127;
        for (int i = 0; i < 8; i++)
            out[2 + i] = (unsigned char)(len >> (56 - 8 * i));
        h = 10;
    }
    memcpy(mask, &key, 4);
    memcpy(out + h, mask, 4);
    return h + 4;
}

void dwb_ws_mask(unsigned char *dst, const void *src, size_t n, const unsigned char mask[4],
                 size_t off)
{
    const unsigned char *s = src;

    for (size_t i = 0; i < n; i++)
        dst[i] = s[i] ^ mask[(off + i) & 3];
}

/* One masked client frame (RFC 6455 5.3): the mask is random per frame. */
static int send_frame(struct dwb_run *run, struct dwb_conn *c, unsigned op, const void *payload,
                      size_t len)
{
    unsigned char f[DWB_WS_CLIENT_HEAD + MAX_CLIENT_FRAME], mask[4];
    size_t h;

    if (len > MAX_CLIENT_FRAME)
        return -EMSGSIZE;
    h = dwb_ws_put_head(run, f, op, len, mask);
    dwb_ws_mask(f + h, payload, len, mask, 0);
    return send_bytes(run, c, f, h + len);
}

int dwb_ws_send_text(struct dwb_run *run, struct dwb_conn *c, const char *text, size_t len)
{
    return send_frame(run, c, DWB_WS_OP_TEXT, text, len);
}

/* ---- connecting ------------------------------------------------------------------------ */

void dwb_ws_new_key(struct dwb_run *run, char key[28])
{
    unsigned char raw[16];

    for (int i = 0; i < 16; i += 8) {
        uint64_t r = dwb_rand(run);

        memcpy(raw + i, &r, 8);
    }
    base64(raw, 16, key);
}

int dwb_ws_check_upgrade(const char *head, const char *key, char *why, size_t size)
{
    char accept[29];
    const char *v;
    size_t vlen = 0;

    if (strncmp(head, "HTTP/1.1 101", 12) != 0) {
        snprintf(why, size, "upgrade refused: %.*s", (int)strcspn(head, "\r\n"), head);
        return -1;
    }
    expected_accept(key, accept);
    v = dwb_http_find_header(head, "Sec-WebSocket-Accept", &vlen);
    if (!v || vlen != 28 || memcmp(v, accept, 28) != 0) {
        snprintf(why, size, "wrong or missing Sec-WebSocket-Accept");
        return -1;
    }
    return 0;
}

int dwb_ws_start(struct dwb_run *run, struct dwb_conn *c)
{
    struct sockaddr_in src = {.sin_family = AF_INET}, dst = {.sin_family = AF_INET};
    int one = 1, fd, err;

    c->started_ns = dwb_now_ns();
    c->state = DWB_WS_CONNECTING;
    fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        err = errno;
        fail(run, c, "socket", err);
        return -err;
    }
    c->ev.fd = fd;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
    src.sin_addr.s_addr = htonl(INADDR_LOOPBACK + c->index % run->opt.sources); /* 127.0.0.1+ */
    if (bind(fd, (struct sockaddr *)&src, sizeof(src)) < 0) {
        err = errno;
        fail(run, c, "bind", err);
        return -err;
    }
    dst.sin_addr = run->opt.host;
    dst.sin_port = htons(c->port);
    if (connect(fd, (struct sockaddr *)&dst, sizeof(dst)) < 0 && errno != EINPROGRESS) {
        err = errno;
        fail(run, c, "connect", err);
        return -err;
    }
    err = dwb_watch(run, &c->ev, true, true);
    if (err < 0) {
        fail(run, c, "epoll_ctl", -err);
        return err;
    }
    return 0;
}

static void send_upgrade(struct dwb_run *run, struct dwb_conn *c)
{
    char req[512], channel[128], resume[40] = "";
    int n, err;

    dwb_ws_new_key(run, c->key);
    if (run->opt.server == DWB_SERVER_NCHAN)
        dwb_scenario_channel(run, c, channel, sizeof(channel));
    else
        snprintf(channel, sizeof(channel), "%s%u", run->opt.prefix, c->index);
    if (run->opt.scenario == DWB_REPLAY)
        snprintf(resume, sizeof(resume), "&last_seq=%llu", (unsigned long long)run->opt.last_seq);
    n = snprintf(req, sizeof(req),
                 "GET %s%s%s HTTP/1.1\r\n"
                 "Host: %s:%u\r\n"
                 "Upgrade: websocket\r\n"
                 "Connection: Upgrade\r\n"
                 "Sec-WebSocket-Key: %s\r\n"
                 "Sec-WebSocket-Version: 13\r\n\r\n",
                 run->opt.server == DWB_SERVER_NCHAN ? "/sub/" : "/ws/events?user_id=", channel,
                 resume, run->opt.host_text, (unsigned)c->port, c->key);
    c->state = DWB_WS_HANDSHAKE;
    err = send_bytes(run, c, req, (size_t)n);
    if (err < 0)
        fail(run, c, "sending the upgrade request", -err);
}

/* Connect completion, then the TLS handshake (--tls), then the upgrade request. */
static void on_connecting(struct dwb_run *run, struct dwb_conn *c)
{
    int err = dwb_net_connecting(run, &c->ev);

    if (err == -EAGAIN)
        return;
    if (err < 0) {
        fail(run, c, c->ev.ssl ? "TLS handshake" : "connect", -err);
        return;
    }
    send_upgrade(run, c);
}

/* Checks the 101 answer at the start of buf. Returns its length, 0 when incomplete, -1 when
 * the connection failed. */
static long parse_upgrade(struct dwb_run *run, struct dwb_conn *c, unsigned char *buf, size_t n)
{
    char head[MAX_HANDSHAKE + 1], why[128];
    const char *end = memmem(buf, n, "\r\n\r\n", 4);
    size_t hlen;

    if (!end) {
        if (n > MAX_HANDSHAKE) {
            fail(run, c, "upgrade answer too long", 0);
            return -1;
        }
        return 0;
    }
    hlen = (size_t)(end - (const char *)buf) + 4;
    if (hlen > MAX_HANDSHAKE) {
        fail(run, c, "upgrade answer too long", 0);
        return -1;
    }
    memcpy(head, buf, hlen);
    head[hlen] = '\0';
    if (dwb_ws_check_upgrade(head, c->key, why, sizeof(why)) < 0) {
        fail(run, c, why, 0);
        return -1;
    }
    c->state = DWB_WS_OPEN;
    if (run->opt.server == DWB_SERVER_NCHAN) {
        c->state = DWB_WS_READY; /* no connection_established: subscribed once upgraded */
        dwb_on_ready(run, c, dwb_now_ns(), NULL, 0);
    }
    return (long)hlen;
}

/* ---- frames ---------------------------------------------------------------------------- */

static void on_close_frame(struct dwb_run *run, struct dwb_conn *c, const unsigned char *p,
                           size_t len)
{
    unsigned code = len >= 2 ? (unsigned)p[0] << 8 | p[1] : 1005;
    unsigned char echo[2] = {(unsigned char)(code >> 8), (unsigned char)code};

    if (c->we_closed)
        return; /* the server's answer to ours: its EOF follows */
    run->n.server_closes++;
    run->n.last_close_code = (uint16_t)code;
    dwb_note_error(run, "connection %u: closed by the server with code %u (%.*s)", c->index, code,
                   len > 2 ? (int)(len - 2) : 0, len > 2 ? (const char *)p + 2 : "");
    if (c->state == DWB_WS_READY || c->state == DWB_WS_OPEN)
        dwb_on_conn_failed(run, c, c->state == DWB_WS_READY);
    c->state = DWB_WS_CLOSING;
    c->we_closed = true;
    /* RFC 6455 5.5.1: answer with a close frame; 1005 means none was given, so send none. */
    send_frame(run, c, DWB_WS_OP_CLOSE, echo, code == 1005 ? 0 : 2);
}

static void on_text_frame(struct dwb_run *run, struct dwb_conn *c, const char *p, size_t len,
                          int64_t now)
{
    static const char established[] = "\"type\":\"connection_established\"";

    if (c->state == DWB_WS_READY || c->state == DWB_WS_CLOSING) {
        dwb_on_text(run, c, p, len, now);
        return;
    }
    if (c->state == DWB_WS_OPEN && memmem(p, len, established, sizeof(established) - 1)) {
        c->state = DWB_WS_READY;
        dwb_on_ready(run, c, now, p, len);
        return;
    }
    run->n.ws_errors++;
    dwb_note_error(run, "connection %u: unexpected first message %.60s", c->index, p);
}

/* Handles the whole frames at the start of buf. Returns the bytes used, or -1 when c failed. */
static long parse_frames(struct dwb_run *run, struct dwb_conn *c, const unsigned char *buf,
                         size_t n, int64_t now)
{
    size_t off = 0;

    while (c->ev.fd >= 0) {
        const unsigned char *f = buf + off;
        struct dwb_ws_frame fr;
        unsigned op;
        uint64_t len;
        size_t h;

        if (!dwb_ws_frame_head(f, n - off, &fr))
            break;
        if (fr.masked) {
            fail(run, c, "masked server frame", 0);
            return -1;
        }
        if (fr.len > DWB_MAX_FRAME) {
            fail(run, c, "server frame larger than 1 MiB", 0);
            return -1;
        }
        op = fr.op;
        len = fr.len;
        h = fr.hlen;
        if (n - off < h + len)
            break;
        off += h + (size_t)len;

        switch (op) {
        case DWB_WS_OP_TEXT:
            if (!fr.fin) {
                /* The daemon never fragments its messages. */
                run->n.ws_errors++;
                dwb_note_error(run, "connection %u: fragmented text frame", c->index);
                break;
            }
            run->n.recv_bytes += h + len;
            on_text_frame(run, c, (const char *)f + h, (size_t)len, now);
            break;
        case DWB_WS_OP_PING:
            run->n.pings++;
            if (send_frame(run, c, DWB_WS_OP_PONG, f + h, (size_t)len) < 0)
                run->n.ws_errors++;
            break;
        case DWB_WS_OP_PONG:
            break;
        case DWB_WS_OP_CLOSE:
            on_close_frame(run, c, f + h, (size_t)len);
            break;
        case DWB_WS_OP_CONT:
        case DWB_WS_OP_BINARY:
        default:
            run->n.ws_errors++;
            dwb_note_error(run, "connection %u: unexpected frame opcode %u", c->index, op);
            break;
        }
    }
    return c->ev.fd >= 0 ? (long)off : -1;
}

/* ---- reading --------------------------------------------------------------------------- */

static int keep_tail(struct dwb_conn *c, const unsigned char *p, size_t n)
{
    c->in_len = 0;
    if (n == 0)
        return 0;
    if (n > c->in_cap) {
        uint32_t cap = c->in_cap ? c->in_cap : 512;
        unsigned char *q;

        while (cap < n)
            cap *= 2;
        q = realloc(c->in, cap);
        if (!q)
            return -ENOMEM;
        c->in = q;
        c->in_cap = cap;
    }
    memcpy(c->in, p, n);
    c->in_len = (uint32_t)n;
    return 0;
}

static void on_eof(struct dwb_run *run, struct dwb_conn *c, int err)
{
    if (c->state == DWB_WS_CLOSING) {
        dwb_ws_drop(run, c, DWB_WS_CLOSED);
        return;
    }
    if (!err && c->in_len > 0) {
        char why[96];

        snprintf(why, sizeof(why), "connection closed by the server inside a frame (%u bytes)",
                 c->in_len);
        fail(run, c, why, 0);
        return;
    }
    fail(run, c, err ? "read" : "connection closed by the server without a close frame", err);
}

/* Reads once and handles what came. */
static void read_chunk(struct dwb_run *run, struct dwb_conn *c)
{
    size_t have = c->in_len, total;
    ssize_t r;
    long used = 0, k;
    int64_t now;

    if (have)
        memcpy(scratch, c->in, have);
    r = dwb_net_recv(run, &c->ev, scratch + have, DWB_READ_CHUNK);
    if (r <= 0) {
        if (r != -EAGAIN)
            on_eof(run, c, (int)-r);
        return;
    }
    now = dwb_now_ns();
    total = have + (size_t)r;
    if (c->state == DWB_WS_HANDSHAKE) {
        used = parse_upgrade(run, c, scratch, total);
        if (used < 0)
            return;
        if (used == 0) {
            if (keep_tail(c, scratch, total) < 0)
                fail(run, c, "out of memory", ENOMEM);
            return;
        }
    }
    k = parse_frames(run, c, scratch + used, total - (size_t)used, now);
    if (k < 0)
        return;
    used += k;
    if (keep_tail(c, scratch + used, total - (size_t)used) < 0)
        fail(run, c, "out of memory", ENOMEM);
}

static void on_readable(struct dwb_run *run, struct dwb_conn *c)
{
    do {
        read_chunk(run, c);
    } while (c->ev.fd >= 0 && dwb_net_has_pending(&c->ev));
}

void dwb_ws_on_event(struct dwb_run *run, struct dwb_conn *c, uint32_t events)
{
    int err;

    if (c->state == DWB_WS_CONNECTING) {
        on_connecting(run, c);
        return;
    }
    if (dwb_net_should_write(&c->ev, events)) {
        err = flush_out(run, c);
        if (err < 0) {
            on_eof(run, c, -err);
            return;
        }
    }
    if (c->ev.fd >= 0 && dwb_net_should_read(&c->ev, events))
        on_readable(run, c);
}

/* ---- closing --------------------------------------------------------------------------- */

void dwb_ws_close(struct dwb_run *run, struct dwb_conn *c)
{
    static const unsigned char normal[2] = {0x03, 0xe8}; /* 1000 */

    if (c->ev.fd < 0 || c->state == DWB_WS_CLOSING)
        return;
    if (c->state != DWB_WS_READY && c->state != DWB_WS_OPEN) {
        dwb_ws_drop(run, c, DWB_WS_CLOSED);
        return;
    }
    c->we_closed = true;
    c->state = DWB_WS_CLOSING;
    if (send_frame(run, c, DWB_WS_OP_CLOSE, normal, 2) < 0)
        dwb_ws_drop(run, c, DWB_WS_CLOSED);
}

void dwb_ws_drop(struct dwb_run *run, struct dwb_conn *c, enum dwb_ws_state state)
{
    (void)run;
    dwb_net_close(&c->ev);
    free(c->in);
    free(c->out);
    c->in = c->out = NULL;
    c->in_len = c->in_cap = c->out_len = c->out_cap = 0;
    c->state = (uint8_t)state;
}

void dwb_ws_expire(struct dwb_run *run, int64_t now)
{
    int64_t limit = (int64_t)(run->opt.connect_timeout * 1e9);

    while (run->expire_from < run->next_conn && run->conns[run->expire_from].state >= DWB_WS_READY)
        run->expire_from++;
    for (unsigned i = run->expire_from; i < run->next_conn; i++) {
        struct dwb_conn *c = &run->conns[i];

        if (c->state >= DWB_WS_CONNECTING && c->state < DWB_WS_READY && now - c->started_ns > limit)
            fail(run, c, "connect or handshake timed out", 0);
    }
}
