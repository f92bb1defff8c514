/*
 * http — DESIGN: the publisher connections, one per producer, in the shape --publish-mode
 * says: keep-alive HTTP/1.1 with one request in flight (http), HTTP/1.1 with up to
 * --in-flight requests sent back to back (pipeline), or a WebSocket carrying one publish body
 * per frame with up to --in-flight frames outstanding (ws: dealwire's /ws/publish, nchan's
 * websocket publisher on /pub/<channel>).
 *
 * Requests: the scenario writes a body into the publisher's body buffer and fills the next
 * slot of its ring of outstanding requests (dwb_pub_next); dwb_pub_send frames the body (HTTP
 * headers in front, or a masked WebSocket frame) into the out buffer and commits the slot;
 * dwb_pub_flush then writes what the socket takes, so a pump that queues several requests
 * sends them with one send(). What the socket does not take stays queued until EPOLLOUT.
 *
 * Answers come back in the order the requests went, in every shape (HTTP/1.1 pipelining
 * answers in order; dealwire's publish socket answers each frame in order, and so does nchan's),
 * so each answer is for the oldest outstanding request. HTTP answers are read by
 * Content-Length. dealwire's WebSocket answers carry the request's "request_id" ("r<n>", a
 * running count per connection), which must be the oldest one's; nchan's carry none (it
 * answers every publish frame with the channel's state, {"messages": ...} when the upgrade
 * asked for JSON), so they are matched by count.
 *
 * With --tls the connection is https or wss (net.c): it is CONNECTING until its TLS handshake
 * is done, and every connection opened again makes a new full handshake.
 *
 * An idle connection the server closes (lws's keep-alive timeout) is not an error: it is
 * opened again the next time it is needed. A connection lost with requests outstanding is:
 * nobody can tell whether those messages were delivered. One exception: dealwire refuses a
 * POST with another request pipelined behind it (400, "pipelined request: ..."), does nothing
 * of it, closes the connection and never reads the requests behind it; then they are all
 * refused, and the run ends at once saying "pipelining refused by the server".
 */
#include "http.h"
#include "net.h"
#include "ws.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_ANSWER    (1u << 20)
#define MAX_HEAD      16384
#define REQUEST_ID_SZ 48 /* {"request_id":"r<20 digits>","batch": and its NUL */

const char *dwb_publish_mode_name(enum dwb_publish_mode m)
{
    static const char *const names[] = {"http", "pipeline", "ws"};

    return (unsigned)m < sizeof(names) / sizeof(names[0]) ? names[m] : "?";
}

/* ---- life ------------------------------------------------------------------------------ */

int dwb_pub_init(struct dwb_pub *pub, uint32_t index, size_t body_cap, unsigned batch,
                 unsigned depth)
{
    memset(pub, 0, sizeof(*pub));
    pub->ev.kind = DWB_FD_PUB;
    pub->ev.fd = -1;
    pub->index = index;
    pub->depth = depth;
    pub->body_cap = body_cap;
    pub->body = malloc(body_cap + 1);
    pub->out_cap = body_cap + 1024;
    pub->out = malloc(pub->out_cap);
    pub->resp_cap = 4096;
    pub->resp = malloc(pub->resp_cap + 1);
    pub->reqs = calloc(depth, sizeof(*pub->reqs));
    if (!pub->body || !pub->out || !pub->resp || !pub->reqs)
        return -ENOMEM;
    /* One block each for every slot's targets and pseqs. */
    pub->reqs[0].targets = calloc((size_t)depth * batch, sizeof(uint32_t));
    pub->reqs[0].pseqs = calloc((size_t)depth * batch, sizeof(uint32_t));
    if (!pub->reqs[0].targets || !pub->reqs[0].pseqs)
        return -ENOMEM;
    for (unsigned i = 1; i < depth; i++) {
        pub->reqs[i].targets = pub->reqs[0].targets + (size_t)i * batch;
        pub->reqs[i].pseqs = pub->reqs[0].pseqs + (size_t)i * batch;
    }
    return 0;
}

void dwb_pub_destroy(struct dwb_pub *pub)
{
    dwb_pub_close(pub);
    if (pub->reqs) {
        free(pub->reqs[0].targets);
        free(pub->reqs[0].pseqs);
    }
    free(pub->reqs);
    free(pub->body);
    free(pub->out);
    free(pub->resp);
    pub->reqs = NULL;
    pub->body = pub->out = pub->resp = NULL;
}

void dwb_pub_close(struct dwb_pub *pub)
{
    dwb_net_close(&pub->ev);
    pub->state = DWB_PUB_CLOSED;
    pub->resp_len = 0;
    pub->out_off = pub->out_len = 0;
    pub->head = pub->nreqs = 0; /* the caller has answered them: see lost() */
    pub->next_id = 0;
}

int dwb_pub_open(struct dwb_run *run, struct dwb_pub *pub)
{
    struct sockaddr_in dst = {.sin_family = AF_INET};
    int one = 1, fd, err;

    fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    dst.sin_addr = run->opt.host;
    dst.sin_port = htons((uint16_t)run->opt.publish_port);
    if (connect(fd, (struct sockaddr *)&dst, sizeof(dst)) < 0 && errno != EINPROGRESS) {
        err = -errno;
        close(fd);
        return err;
    }
    pub->ev.fd = fd;
    pub->state = DWB_PUB_CONNECTING;
    pub->opened_ns = dwb_now_ns();
    pub->resp_len = 0;
    pub->out_off = pub->out_len = 0;
    err = dwb_watch(run, &pub->ev, true, true);
    if (err < 0) {
        dwb_pub_close(pub);
        return err;
    }
    return 0;
}

/* ---- writing --------------------------------------------------------------------------- */

/* Room for n more bytes at the end of the out buffer. Returns 0 or -ENOMEM. */
static int out_reserve(struct dwb_pub *pub, size_t n)
{
    size_t cap;
    char *p;

    if (pub->out_off == pub->out_len)
        pub->out_off = pub->out_len = 0;
    if (pub->out_cap - pub->out_len >= n)
        return 0;
    /* The bytes not taken yet may move (net.h): TLS retries them from where they are. */
    if (pub->out_off > 0) {
        memmove(pub->out, pub->out + pub->out_off, pub->out_len - pub->out_off);
        pub->out_len -= pub->out_off;
        pub->out_off = 0;
        if (pub->out_cap - pub->out_len >= n)
            return 0;
    }
    cap = pub->out_cap * 2;
    while (cap - pub->out_len < n)
        cap *= 2;
    p = realloc(pub->out, cap);
    if (!p)
        return -ENOMEM;
    pub->out = p;
    pub->out_cap = cap;
    return 0;
}

static void out_put(struct dwb_pub *pub, const void *p, size_t n)
{
    memcpy(pub->out + pub->out_len, p, n);
    pub->out_len += n;
}

/* Writes what the socket takes. Returns 0 (the rest, if any, waits for EPOLLOUT) or a negative
 * errno. */
static int write_some(struct dwb_run *run, struct dwb_pub *pub)
{
    /* A TLS retry after WANT_WRITE passes the same bytes again, maybe with more behind. */
    while (pub->out_off < pub->out_len) {
        ssize_t w =
            dwb_net_send(run, &pub->ev, pub->out + pub->out_off, pub->out_len - pub->out_off);

        if (w == -EAGAIN)
            return dwb_watch(run, &pub->ev, false, true);
        if (w < 0)
            return (int)w;
        pub->out_off += (size_t)w;
    }
    pub->out_off = pub->out_len = 0;
    return dwb_watch(run, &pub->ev, false, false);
}

/* One masked client frame with payload pieces a, b, c (any may be empty) into the out buffer. */
static int queue_frame(struct dwb_run *run, struct dwb_pub *pub, unsigned op, const char *a,
                       size_t alen, const char *b, size_t blen, const char *c, size_t clen)
{
    size_t len = alen + blen + clen, h;
    unsigned char mask[4], *dst;
    int err = out_reserve(pub, DWB_WS_CLIENT_HEAD + len);

    if (err < 0)
        return err;
    dst = (unsigned char *)pub->out + pub->out_len;
    h = dwb_ws_put_head(run, dst, op, len, mask);
    dwb_ws_mask(dst + h, a, alen, mask, 0);
    dwb_ws_mask(dst + h + alen, b, blen, mask, alen);
    dwb_ws_mask(dst + h + alen + blen, c, clen, mask, alen + blen);
    pub->out_len += h + len;
    return 0;
}

char *dwb_pub_body(struct dwb_pub *pub)
{
    return pub->body;
}

struct dwb_req *dwb_pub_next(struct dwb_pub *pub)
{
    if (pub->state != DWB_PUB_READY || pub->nreqs == pub->depth)
        return NULL;
    return &pub->reqs[(pub->head + pub->nreqs) % pub->depth];
}

/* "Authorization: Bearer <token>\r\n" when --api-token was given, else "". */
static void auth_header(const struct dwb_run *run, char *out, size_t size)
{
    if (run->opt.api_token)
        snprintf(out, size, "Authorization: Bearer %s\r\n", run->opt.api_token);
    else
        out[0] = '\0';
}

/* ws: the body as one frame. dealwire: with the request's "request_id" in front of an object's
 * members, or an array (a batch) wrapped as {"request_id": ..., "batch": [...]}. */
static int queue_ws(struct dwb_run *run, struct dwb_pub *pub, struct dwb_req *req, size_t body_len)
{
    const char *body = pub->body;
    char pre[REQUEST_ID_SZ];
    int n;

    if (run->opt.server == DWB_SERVER_NCHAN)
        return queue_frame(run, pub, DWB_WS_OP_TEXT, body, body_len, NULL, 0, NULL, 0);
    if (body_len < 2 || (body[0] != '{' && body[0] != '['))
        return -EINVAL;
    if (body[0] == '[') {
        n = snprintf(pre, sizeof(pre), "{\"request_id\":\"r%" PRIu64 "\",\"batch\":", req->id);
        return queue_frame(run, pub, DWB_WS_OP_TEXT, pre, (size_t)n, body, body_len, "}", 1);
    }
    n = snprintf(pre, sizeof(pre), "{\"request_id\":\"r%" PRIu64 "\",", req->id);
    return queue_frame(run, pub, DWB_WS_OP_TEXT, pre, (size_t)n, body + 1, body_len - 1, NULL, 0);
}

int dwb_pub_send(struct dwb_run *run, struct dwb_pub *pub, const char *path, size_t body_len)
{
    struct dwb_req *req = dwb_pub_next(pub);
    char head[512], auth[DWB_MAX_TOKEN + 32];
    int n, err;

    if (!req || body_len > pub->body_cap)
        return -EINVAL;
    req->id = ++pub->next_id;
    if (run->opt.publish_mode == DWB_PUBLISH_WS) {
        err = queue_ws(run, pub, req, body_len);
    } else {
        auth_header(run, auth, sizeof(auth));
        n = snprintf(head, sizeof(head),
                     "POST %s HTTP/1.1\r\n"
                     "Host: %s:%u\r\n"
                     "Content-Type: application/json\r\n"
                     "%s"
                     "Content-Length: %zu\r\n\r\n",
                     path, run->opt.host_text, run->opt.publish_port, auth, body_len);
        if (n <= 0 || (size_t)n >= sizeof(head))
            return -EINVAL;
        err = out_reserve(pub, (size_t)n + body_len);
        if (err == 0) {
            out_put(pub, head, (size_t)n);
            out_put(pub, pub->body, body_len);
        }
    }
    if (err < 0)
        return err;
    pub->nreqs++;
    return 0;
}

/* ---- losing a connection --------------------------------------------------------------- */

/* Takes the oldest outstanding request off the ring; it stays valid until the next send. */
static struct dwb_req *take_oldest(struct dwb_pub *pub)
{
    struct dwb_req *req = &pub->reqs[pub->head];

    pub->head = (pub->head + 1) % pub->depth;
    pub->nreqs--;
    return req;
}

/* Answers every outstanding request with status (0: no answer, fate unknown) and body. */
static void answer_all(struct dwb_run *run, struct dwb_pub *pub, unsigned status, const char *body,
                       size_t len)
{
    while (pub->nreqs > 0)
        dwb_on_answer(run, pub, take_oldest(pub), status, -1, body, len);
}

/* A publisher that cannot go on: its outstanding requests, if any, have an unknown fate. */
static void lost(struct dwb_run *run, struct dwb_pub *pub, const char *why, int err)
{
    bool busy = pub->nreqs > 0, opening = pub->state != DWB_PUB_READY;

    if (!busy && !opening) {
        dwb_pub_close(pub); /* an idle keep-alive connection closed by the server: reopened */
        return;
    }
    dwb_note_error(run, "publisher %u: %s%s%s", pub->index, why, err ? ": " : "",
                   err ? dwb_net_strerror(err) : "");
    answer_all(run, pub, 0, NULL, 0);
    dwb_pub_close(pub);
    if (!busy)
        run->aborted = true;
}

void dwb_pub_flush(struct dwb_run *run, struct dwb_pub *pub)
{
    int err;

    if (pub->ev.fd < 0 || pub->out_off == pub->out_len || pub->ev.want_out)
        return; /* nothing queued, or waiting for EPOLLOUT already */
    err = write_some(run, pub);
    if (err < 0)
        lost(run, pub, "write", -err);
}

/* ---- HTTP answers ---------------------------------------------------------------------- */

const char *dwb_http_find_header(const char *head, const char *name, size_t *vlen)
{
    size_t nlen = strlen(name);
    const char *line = strstr(head, "\r\n");

    while (line && line[2] != '\r' && line[2] != '\0') {
        const char *p = line + 2, *end = strstr(p, "\r\n");

        if (!end)
            return NULL;
        if (strncasecmp(p, name, nlen) == 0 && p[nlen] == ':') {
            p += nlen + 1;
            while (*p == ' ' || *p == '\t')
                p++;
            *vlen = (size_t)(end - p);
            while (*vlen > 0 && (p[*vlen - 1] == ' ' || p[*vlen - 1] == '\t'))
                (*vlen)--;
            return p;
        }
        line = end;
    }
    return NULL;
}

/* Where the value of the top-level member key of the JSON object in [p, p + n) starts, or NULL.
 * Strings are skipped whole, so a key inside a string or a nested object is not taken. */
static const char *json_top(const char *p, size_t n, const char *key)
{
    size_t klen = strlen(key);
    bool want_key = false;
    int depth = 0;

    for (size_t i = 0; i < n; i++) {
        char ch = p[i];

        if (ch == '"') {
            size_t s = ++i;

            while (i < n && p[i] != '"')
                i += p[i] == '\\' ? 2 : 1;
            if (i >= n)
                return NULL;
            if (want_key && i - s == klen && memcmp(p + s, key, klen) == 0) {
                size_t j = i + 1;

                while (j < n && (p[j] == ' ' || p[j] == '\t' || p[j] == '\r' || p[j] == '\n'))
                    j++;
                if (j < n && p[j] == ':') {
                    j++;
                    while (j < n && (p[j] == ' ' || p[j] == '\t' || p[j] == '\r' || p[j] == '\n'))
                        j++;
                    return j < n ? p + j : NULL;
                }
            }
            want_key = false;
        } else if (ch == '{' || ch == '[') {
            depth++;
            want_key = depth == 1 && ch == '{';
        } else if (ch == '}' || ch == ']') {
            depth--;
            want_key = false;
        } else if (ch == ',') {
            want_key = depth == 1;
        }
    }
    return NULL;
}

/* The top-level integer member key of the JSON object in [p, p + n), or -1. */
static long long json_top_int(const char *p, size_t n, const char *key)
{
    const char *v = json_top(p, n, key);

    if (!v || v >= p + n || (*v != '-' && (*v < '0' || *v > '9')))
        return -1;
    return strtoll(v, NULL, 10);
}

/* The status code of an answer that starts "HTTP/1.<minor> <code>", into *status. Returns 0, or
 * -1 when resp does not start so. */
static int parse_status(const char *resp, unsigned *status)
{
    static const char proto[] = "HTTP/1.";
    const char *minor = resp + sizeof(proto) - 1;
    char *end, *code_end;
    unsigned long code;

    if (strncmp(resp, proto, sizeof(proto) - 1) != 0)
        return -1;
    (void)strtoul(minor, &end, 10); /* skipped: any minor version */
    if (end == minor)
        return -1;
    code = strtoul(end, &code_end, 10);
    if (code_end == end)
        return -1;
    *status = (unsigned)code;
    return 0;
}

/* dealwire's refusal of a pipelined POST: nothing of it or behind it is done (see the top). */
static bool refused_pipelining(unsigned status, const char *body, size_t len)
{
    return status == 400 && memmem(body, len, "pipelined", 9);
}

/* Parses the complete answer at resp + off, if there is one, and hands it to the scenario.
 * Returns its length, 0 when more bytes are needed, -1 when it is malformed, -2 when the
 * connection is closed after it (a refused pipeline). */
static long parse_answer(struct dwb_run *run, struct dwb_pub *pub, size_t off)
{
    char *resp = pub->resp + off, *end, *v, *body;
    size_t vlen = 0, hlen, have = pub->resp_len - off;
    unsigned long long clen;
    unsigned status;
    int shown;

    end = strstr(resp, "\r\n\r\n"); /* pub->resp is NUL-terminated at resp_len */
    if (!end)
        return have > MAX_HEAD ? -1 : 0;
    hlen = (size_t)(end - resp) + 4;
    if (parse_status(resp, &status) < 0)
        return -1;
    *end = '\0';
    v = (char *)dwb_http_find_header(resp, "Content-Length", &vlen);
    clen = v ? strtoull(v, NULL, 10) : 0;
    *end = '\r';
    if (!v || clen > MAX_ANSWER)
        return -1;
    if (have < hlen + clen)
        return 0;
    body = resp + hlen;
    if (refused_pipelining(status, body, (size_t)clen)) {
        shown = (int)(clen > 160 ? 160 : clen);
        dwb_note_error(run,
                       "publisher %u: pipelining refused by the server (HTTP %u: %.*s); "
                       "--publish-mode pipeline needs a server that reads pipelined requests",
                       pub->index, status, shown, body);
        answer_all(run, pub, status, body, (size_t)clen);
        dwb_pub_close(pub);
        return -2;
    }
    dwb_on_answer(run, pub, take_oldest(pub), status,
                  json_top_int(body, (size_t)clen, "recipients"), body, (size_t)clen);
    return (long)(hlen + clen);
}

/* ---- WebSocket answers ----------------------------------------------------------------- */

/* The 101 at the start of pub->resp. Returns its length, 0 when incomplete, -1 when pub was
 * lost. */
static long parse_upgrade(struct dwb_run *run, struct dwb_pub *pub)
{
    char *end = strstr(pub->resp, "\r\n\r\n"), why[160];
    size_t hlen;

    if (!end) {
        if (pub->resp_len > MAX_HEAD) {
            lost(run, pub, "upgrade answer too long", 0);
            return -1;
        }
        return 0;
    }
    hlen = (size_t)(end - pub->resp) + 4;
    end[2] = '\0'; /* the head, through its last header line */
    if (dwb_ws_check_upgrade(pub->resp, pub->key, why, sizeof(why)) < 0) {
        lost(run, pub, why, 0);
        return -1;
    }
    end[2] = '\r';
    pub->state = DWB_PUB_READY;
    return (long)hlen;
}

/* One answer frame: for the oldest outstanding request. Returns 0, or -1 when pub was lost. */
static int on_ws_answer(struct dwb_run *run, struct dwb_pub *pub, const char *p, size_t n)
{
    char want[32], why[300];
    const char *id;
    long long status, subs;
    int wlen, shown = (int)(n > 160 ? 160 : n);
    struct dwb_req *req;

    if (pub->nreqs == 0) {
        snprintf(why, sizeof(why), "an answer with no request outstanding: %.*s", shown, p);
        lost(run, pub, why, 0);
        return -1;
    }
    req = &pub->reqs[pub->head];
    if (run->opt.server == DWB_SERVER_NCHAN) {
        /* {"messages": 3, "requested": -1, "subscribers": 1, "last_message_id": "..."}: 201
         * when the channel had subscribers, 202 when it had none, as over HTTP. */
        subs = json_top_int(p, n, "subscribers");
        if (subs < 0 || !json_top(p, n, "last_message_id")) {
            snprintf(why, sizeof(why), "not a publish answer from nchan: %.*s", shown, p);
            lost(run, pub, why, 0);
            return -1;
        }
        dwb_on_answer(run, pub, take_oldest(pub), subs > 0 ? 201 : 202, -1, p, n);
        return 0;
    }
    status = json_top_int(p, n, "status");
    id = json_top(p, n, "request_id");
    wlen = snprintf(want, sizeof(want), "\"r%" PRIu64 "\"", req->id);
    if (status < 0 || !id || (size_t)(p + n - id) < (size_t)wlen ||
        memcmp(id, want, (size_t)wlen) != 0) {
        snprintf(why, sizeof(why), "answer %s, expected request_id %s (in order): %.*s",
                 status < 0 ? "without a status" : "out of turn", want, shown, p);
        lost(run, pub, why, 0);
        return -1;
    }
    dwb_on_answer(run, pub, take_oldest(pub), (unsigned)status, json_top_int(p, n, "recipients"), p,
                  n);
    return 0;
}

/* Handles the whole frames at pub->resp + off. Returns the bytes used, or -1 when pub was
 * lost. */
static long parse_frames(struct dwb_run *run, struct dwb_pub *pub, size_t off)
{
    const unsigned char *buf = (const unsigned char *)pub->resp;
    char why[200];
    size_t used = 0;

    while (pub->ev.fd >= 0) {
        const unsigned char *f = buf + off + used;
        size_t have = pub->resp_len - off - used;
        struct dwb_ws_frame fr;
        const char *payload;
        int err = 0;

        if (!dwb_ws_frame_head(f, have, &fr))
            break;
        if (fr.masked || fr.len > DWB_MAX_FRAME) {
            lost(run, pub, fr.masked ? "masked server frame" : "server frame over 1 MiB", 0);
            return -1;
        }
        if (have < fr.hlen + fr.len)
            break;
        used += fr.hlen + (size_t)fr.len;
        payload = (const char *)f + fr.hlen;
        switch (fr.op) {
        case DWB_WS_OP_TEXT:
            if (!fr.fin) {
                lost(run, pub, "fragmented answer frame", 0);
                return -1;
            }
            if (on_ws_answer(run, pub, payload, (size_t)fr.len) < 0)
                return -1;
            break;
        case DWB_WS_OP_PING:
            run->n.pings++;
            err = queue_frame(run, pub, DWB_WS_OP_PONG, payload, (size_t)fr.len, NULL, 0, NULL, 0);
            if (err == 0)
                dwb_pub_flush(run, pub);
            break;
        case DWB_WS_OP_PONG:
            break;
        case DWB_WS_OP_CLOSE:
            snprintf(why, sizeof(why), "closed by the server with code %u (%.*s)",
                     fr.len >= 2 ? (unsigned)f[fr.hlen] << 8 | f[fr.hlen + 1] : 1005,
                     fr.len > 2 ? (int)(fr.len - 2) : 0, fr.len > 2 ? payload + 2 : "");
            lost(run, pub, why, 0);
            return -1;
        default:
            snprintf(why, sizeof(why), "unexpected frame opcode %u", fr.op);
            lost(run, pub, why, 0);
            return -1;
        }
        if (err < 0) {
            lost(run, pub, "out of memory", ENOMEM);
            return -1;
        }
    }
    return pub->ev.fd >= 0 ? (long)used : -1;
}

/* ---- reading --------------------------------------------------------------------------- */

/* Handles every whole answer in pub->resp, keeps the rest. */
static void parse_all(struct dwb_run *run, struct dwb_pub *pub)
{
    size_t off = 0;
    long used;

    pub->resp[pub->resp_len] = '\0';
    if (pub->state == DWB_PUB_UPGRADING) {
        used = parse_upgrade(run, pub);
        if (used <= 0)
            return;
        off = (size_t)used;
    }
    if (run->opt.publish_mode == DWB_PUBLISH_WS) {
        used = parse_frames(run, pub, off);
        if (used < 0)
            return;
        off += (size_t)used;
    } else {
        while (off < pub->resp_len) {
            if (pub->nreqs == 0) {
                lost(run, pub, "answer without a request", 0);
                return;
            }
            used = parse_answer(run, pub, off);
            if (used == 0)
                break;
            if (used == -1)
                lost(run, pub, "malformed answer", 0);
            if (used < 0)
                return;
            off += (size_t)used;
        }
    }
    if (off > 0) {
        memmove(pub->resp, pub->resp + off, pub->resp_len - off);
        pub->resp_len -= off;
    }
}

/* Reads once and handles the whole answers. */
static void read_some(struct dwb_run *run, struct dwb_pub *pub)
{
    ssize_t r;

    if (pub->resp_cap - pub->resp_len < 4096) {
        size_t cap = pub->resp_cap * 2;
        char *p = cap <= MAX_ANSWER + MAX_HEAD + 4096 ? realloc(pub->resp, cap + 1) : NULL;

        if (!p) {
            lost(run, pub, "answer too large", 0);
            return;
        }
        pub->resp = p;
        pub->resp_cap = cap;
    }
    r = dwb_net_recv(run, &pub->ev, pub->resp + pub->resp_len, pub->resp_cap - pub->resp_len);
    if (r < 0) {
        if (r != -EAGAIN)
            lost(run, pub, "read", (int)-r);
        return;
    }
    if (r == 0) {
        lost(run, pub, "connection closed by the server", 0);
        return;
    }
    pub->resp_len += (size_t)r;
    parse_all(run, pub);
}

static void on_readable(struct dwb_run *run, struct dwb_pub *pub)
{
    do {
        read_some(run, pub);
    } while (pub->ev.fd >= 0 && dwb_net_has_pending(&pub->ev));
}

/* ws: the upgrade request, to dealwire's /ws/publish or nchan's /pub/all (--channel:
 * /pub/<channel>; its answers in JSON). */
static int send_upgrade(struct dwb_run *run, struct dwb_pub *pub)
{
    char req[1024], auth[DWB_MAX_TOKEN + 32], path[80];
    bool nchan = run->opt.server == DWB_SERVER_NCHAN;
    int n;

    dwb_ws_new_key(run, pub->key);
    auth_header(run, auth, sizeof(auth));
    if (nchan)
        snprintf(path, sizeof(path), "/pub/%s", dwb_scenario_all_channel(run));
    else
        snprintf(path, sizeof(path), "/ws/publish");
    n = snprintf(req, sizeof(req),
                 "GET %s HTTP/1.1\r\n"
                 "Host: %s:%u\r\n"
                 "Upgrade: websocket\r\n"
                 "Connection: Upgrade\r\n"
                 "Sec-WebSocket-Key: %s\r\n"
                 "Sec-WebSocket-Version: 13\r\n"
                 "%s%s\r\n",
                 path, run->opt.host_text, run->opt.publish_port, pub->key,
                 nchan ? "Accept: application/json\r\n" : "", auth);
    if (n <= 0 || (size_t)n >= sizeof(req) || out_reserve(pub, (size_t)n) < 0)
        return -ENOMEM;
    out_put(pub, req, (size_t)n);
    pub->state = DWB_PUB_UPGRADING;
    return write_some(run, pub);
}

void dwb_pub_on_event(struct dwb_run *run, struct dwb_pub *pub, uint32_t events)
{
    int err;

    if (pub->state == DWB_PUB_CONNECTING) {
        err = dwb_net_connecting(run, &pub->ev);
        if (err == -EAGAIN)
            return;
        if (err < 0) {
            lost(run, pub, pub->ev.ssl ? "TLS handshake" : "connect", -err);
            return;
        }
        if (run->opt.publish_mode != DWB_PUBLISH_WS) {
            pub->state = DWB_PUB_READY;
            return;
        }
        err = send_upgrade(run, pub);
        if (err < 0)
            lost(run, pub, "sending the upgrade request", -err);
        return;
    }
    if (dwb_net_should_write(&pub->ev, events) && pub->out_off < pub->out_len) {
        err = write_some(run, pub);
        if (err < 0) {
            lost(run, pub, "write", -err);
            return;
        }
    }
    if (pub->ev.fd >= 0 && dwb_net_should_read(&pub->ev, events))
        on_readable(run, pub);
}
