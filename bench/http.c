/*
 * http — DESIGN: one keep-alive HTTP/1.1 connection per producer, one request in flight each.
 *
 * The scenario writes a request body straight into the publisher's buffer, behind
 * DWB_PUB_HEADROOM bytes; dwb_pub_send then prints the headers into the room just in front of
 * it, so a request goes out with one send() and is never copied. Answers are read into a
 * growing buffer (kept across requests) and parsed by Content-Length.
 *
 * With --tls the connection is https (net.c): it is CONNECTING until its TLS handshake is
 * done, and every connection opened again makes a new full handshake.
 *
 * An idle connection the daemon closes (lws's keep-alive timeout) is not an error: it is
 * opened again the next time it is needed. A connection lost with a request outstanding is:
 * nobody can tell whether those messages were delivered.
 */
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
#include <unistd.h>

#define MAX_ANSWER (1u << 20)

int dwb_pub_init(struct dwb_pub *pub, uint32_t index, size_t body_cap, unsigned batch)
{
    memset(pub, 0, sizeof(*pub));
    pub->ev.kind = DWB_FD_PUB;
    pub->ev.fd = -1;
    pub->index = index;
    pub->req_cap = body_cap;
    pub->req_buf = malloc(DWB_PUB_HEADROOM + body_cap + 1);
    pub->resp_cap = 4096;
    pub->resp = malloc(pub->resp_cap + 1);
    pub->targets = calloc(batch, sizeof(*pub->targets));
    pub->pseqs = calloc(batch, sizeof(*pub->pseqs));
    if (!pub->req_buf || !pub->resp || !pub->targets || !pub->pseqs)
        return -ENOMEM;
    return 0;
}

void dwb_pub_destroy(struct dwb_pub *pub)
{
    dwb_pub_close(pub);
    free(pub->req_buf);
    free(pub->resp);
    free(pub->targets);
    free(pub->pseqs);
    pub->req_buf = pub->resp = NULL;
    pub->targets = pub->pseqs = NULL;
}

void dwb_pub_close(struct dwb_pub *pub)
{
    dwb_net_close(&pub->ev);
    pub->state = DWB_PUB_CLOSED;
    pub->resp_len = 0;
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
    pub->resp_len = 0;
    err = dwb_watch(run, &pub->ev, true, true);
    if (err < 0) {
        dwb_pub_close(pub);
        return err;
    }
    return 0;
}

char *dwb_pub_body(struct dwb_pub *pub)
{
    return pub->req_buf + DWB_PUB_HEADROOM;
}

static int write_some(struct dwb_run *run, struct dwb_pub *pub)
{
    /* A TLS retry after WANT_WRITE passes the same bytes again: req_off has not moved. */
    while (pub->req_off < pub->req_len) {
        ssize_t w =
            dwb_net_send(run, &pub->ev, pub->req + pub->req_off, pub->req_len - pub->req_off);

        if (w == -EAGAIN)
            return dwb_watch(run, &pub->ev, false, true);
        if (w < 0)
            return (int)w;
        pub->req_off += (size_t)w;
    }
    return dwb_watch(run, &pub->ev, false, false);
}

int dwb_pub_send(struct dwb_run *run, struct dwb_pub *pub, const char *path, size_t body_len)
{
    char head[DWB_PUB_HEADROOM];
    int n = snprintf(head, sizeof(head),
                     "POST %s HTTP/1.1\r\n"
                     "Host: %s:%u\r\n"
                     "Content-Type: application/json\r\n"
                     "Content-Length: %zu\r\n\r\n",
                     path, run->opt.host_text, run->opt.publish_port, body_len);

    if (pub->state != DWB_PUB_IDLE || n <= 0 || (size_t)n >= sizeof(head))
        return -EINVAL;
    pub->req = pub->req_buf + DWB_PUB_HEADROOM - n;
    memcpy(pub->req, head, (size_t)n);
    pub->req_len = (size_t)n + body_len;
    pub->req_off = 0;
    pub->state = DWB_PUB_BUSY;
    return write_some(run, pub);
}

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

/* A publisher that cannot go on: its outstanding request, if any, has an unknown fate. */
static void lost(struct dwb_run *run, struct dwb_pub *pub, const char *why, int err)
{
    bool busy = pub->state == DWB_PUB_BUSY, connecting = pub->state == DWB_PUB_CONNECTING;

    dwb_pub_close(pub);
    if (!busy && !connecting)
        return; /* an idle keep-alive connection closed by the daemon: reopened when needed */
    dwb_note_error(run, "publisher %u: %s%s%s", pub->index, why, err ? ": " : "",
                   err ? dwb_net_strerror(err) : "");
    if (busy)
        dwb_on_answer(run, pub, 0, -1, NULL, 0);
    else
        run->aborted = true;
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

/* Parses a complete answer at the start of pub->resp. Returns its length, 0 when more bytes
 * are needed, -1 when it is malformed. */
static long parse_answer(struct dwb_run *run, struct dwb_pub *pub)
{
    char *end, *v, *body;
    size_t vlen = 0, hlen;
    unsigned long long clen;
    unsigned status;
    long long recipients = -1;

    pub->resp[pub->resp_len] = '\0';
    end = strstr(pub->resp, "\r\n\r\n");
    if (!end)
        return pub->resp_len > 16384 ? -1 : 0;
    hlen = (size_t)(end - pub->resp) + 4;
    if (parse_status(pub->resp, &status) < 0)
        return -1;
    *end = '\0';
    v = (char *)dwb_http_find_header(pub->resp, "Content-Length", &vlen);
    clen = v ? strtoull(v, NULL, 10) : 0;
    *end = '\r';
    if (!v || clen > MAX_ANSWER)
        return -1;
    if (pub->resp_len < hlen + clen)
        return 0;
    body = pub->resp + hlen;
    v = memmem(body, (size_t)clen, "\"recipients\":", 13);
    if (v)
        recipients = strtoll(v + 13, NULL, 10);
    pub->state = DWB_PUB_IDLE;
    dwb_on_answer(run, pub, status, recipients, body, (size_t)clen);
    return (long)(hlen + clen);
}

/* Reads once and handles the answer if it is whole. */
static void read_some(struct dwb_run *run, struct dwb_pub *pub)
{
    ssize_t r;
    long used;

    if (pub->resp_cap - pub->resp_len < 4096) {
        size_t cap = pub->resp_cap * 2;
        char *p = cap <= MAX_ANSWER + 16384 ? realloc(pub->resp, cap + 1) : NULL;

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
        lost(run, pub, "connection closed by the daemon", 0);
        return;
    }
    pub->resp_len += (size_t)r;
    if (pub->state != DWB_PUB_BUSY) {
        lost(run, pub, "answer without a request", 0);
        return;
    }
    used = parse_answer(run, pub);
    if (used < 0) {
        lost(run, pub, "malformed answer", 0);
        return;
    }
    if (used > 0) {
        memmove(pub->resp, pub->resp + used, pub->resp_len - (size_t)used);
        pub->resp_len -= (size_t)used;
    }
}

static void on_readable(struct dwb_run *run, struct dwb_pub *pub)
{
    do {
        read_some(run, pub);
    } while (pub->ev.fd >= 0 && dwb_net_has_pending(&pub->ev));
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
        pub->state = DWB_PUB_IDLE;
        return;
    }
    if (dwb_net_should_write(&pub->ev, events) && pub->state == DWB_PUB_BUSY) {
        err = write_some(run, pub);
        if (err < 0) {
            lost(run, pub, "write", -err);
            return;
        }
    }
    if (pub->ev.fd >= 0 && dwb_net_should_read(&pub->ev, events))
        on_readable(run, pub);
}
