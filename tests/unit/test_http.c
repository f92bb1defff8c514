/*
 * test_http — the HTTP side of the I/O thread (src/http.c, and the upgrade checks of conn.c
 * that answer in HTTP) against the real server, in process: dw_config_load on an argv,
 * dw_auth_new, dw_server_new and dw_server_run on a thread of their own (the I/O thread, as
 * main.c makes it), spoken to with plain blocking sockets and raw HTTP/1.1 bytes written
 * here. Each case asserts the exact status and the part of the answer that says why.
 *
 * Three servers, one per cmocka group: the defaults (routes, framing, methods, the stats
 * documents, publishing, ?user_id, the inbox page's checks without a database), an operator
 * server (--api-token, a small --max-publish-size and --max-body-memory) and a deadline server
 * (--handshake-timeout 1).
 * Not covered: the cap of ?limit at 1000 (it takes more than 1000 connections).
 * Every read has a deadline (poll), every loop a bound, so a broken server fails a test
 * instead of hanging it; no sleep stands in for an event: readiness is a connect that
 * succeeds, a state of the server is read back from its stats document.
 */
#include "dealwire/auth.h"
#include "dealwire/config.h"
#include "dealwire/log.h"
#include "dealwire/rcu.h"
#include "dealwire/server.h"
#include "dealwire/thread.h"

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>
#include <json-c/json.h>

#include "test_util.h"

#define API_TOKEN "operator-token-0123456789abcdef"

/* How long any one wait may take: a read, a close, the server's start. Generous for TSan. */
#define WAIT_MS  5000
#define CONN_BUF (256 * 1024)

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ------------------------------------------------------------------------------------------
 * The server under test, on its own I/O thread
 * ------------------------------------------------------------------------------------------ */

struct server {
    struct dw_config cfg;
    struct dw_auth *auth;
    struct dw_server *srv; /* under lock once published */
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int state;      /* under lock: 0 starting, 1 serving, -1 dw_server_new failed */
    bool stop_done; /* under lock: dw_server_stop has returned */
    int run_rc;
    int port;
};

/* The I/O thread: everything that must run on it (dw_server_new, _run, _free) runs here.
 * dw_server_run may return while dw_server_stop is still inside lws_cancel_service on the
 * test's thread (the sweep saw the flag first), so the server is freed only once that call has
 * returned: main.c gets the same by joining its signal thread before dw_server_free. */
static void *io_main(void *arg)
{
    struct server *s = arg;
    struct dw_server *srv;

    dw_thread_set_role(DW_THREAD_IO);
    dw_rcu_register();
    srv = dw_server_new(&s->cfg, s->auth);
    pthread_mutex_lock(&s->lock);
    s->srv = srv;
    s->state = srv ? 1 : -1;
    pthread_cond_signal(&s->cond);
    pthread_mutex_unlock(&s->lock);
    if (srv) {
        s->run_rc = dw_server_run(srv);
        pthread_mutex_lock(&s->lock);
        while (!s->stop_done)
            pthread_cond_wait(&s->cond, &s->lock);
        pthread_mutex_unlock(&s->lock);
        dw_server_free(srv);
    }
    dw_rcu_unregister();
    return NULL;
}

/* A port nobody listens on now: bound to 127.0.0.1:0, read back, closed. */
static int free_port(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), port;

    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    port = ntohs(a.sin_port);
    close(fd);
    return port;
}

/* Connects to 127.0.0.1:port; -1 when refused. */
static int try_connect(int port)
{
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;

    assert_true(fd >= 0);
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
        close(fd);
        return -1;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return fd;
}

/* Starts a server with the base flags plus extra (NULL-terminated) on a free port: on the
 * I/O thread, waits until it is created, then until it accepts a connection. Retries with
 * another port when the one picked was taken meanwhile. */
static struct server *server_start(const char *const *extra)
{
    struct server *s = calloc(1, sizeof(*s));

    assert_non_null(s);
    for (int attempt = 0; attempt < 5; attempt++) {
        /* One worker, quiet logs, a short drain: the rest is the defaults or extra. */
        char port[16],
            *argv[48] = {"dealwire",  "--host", "127.0.0.1",   "--port", port,
                         "--workers", "1",      "--log-level", "error",  "--shutdown-timeout",
                         "1000"};
        char *envp[] = {NULL};
        int argc = 11, fd = -1, state;
        struct timespec until;

        s->port = free_port();
        snprintf(port, sizeof(port), "%d", s->port);
        for (size_t i = 0; extra && extra[i]; i++) {
            assert_true(argc < 47);
            argv[argc++] = (char *)extra[i];
        }
        assert_int_equal(dw_config_load(&s->cfg, argc, argv, envp, stdout, stderr), 0);
        dw_log_set_level((enum dw_log_level)s->cfg.log_level);
        s->auth = dw_auth_new(&s->cfg, stderr);
        assert_non_null(s->auth);
        s->state = 0;
        pthread_mutex_init(&s->lock, NULL);
        pthread_cond_init(&s->cond, NULL);
        assert_int_equal(pthread_create(&s->thread, NULL, io_main, s), 0);

        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += (time_t)(WAIT_MS / 1000) * 4;
        pthread_mutex_lock(&s->lock);
        while (s->state == 0) {
            if (pthread_cond_timedwait(&s->cond, &s->lock, &until) == ETIMEDOUT)
                break;
        }
        state = s->state;
        pthread_mutex_unlock(&s->lock);
        if (state == 0)
            fail_msg("the server did not start within %d s", WAIT_MS / 1000 * 4);
        if (state == 1) {
            /* Ready when it takes a connection; the listener exists already, so this is
             * normally the first try. */
            for (int i = 0; i < 500 && fd < 0; i++) {
                fd = try_connect(s->port);
                if (fd < 0)
                    poll(NULL, 0, 10);
            }
            if (fd < 0)
                fail_msg("the server does not accept connections on %d", s->port);
            close(fd);
            return s;
        }
        /* dw_server_new failed (the port was taken meanwhile): again on another port. */
        pthread_join(s->thread, NULL);
        pthread_cond_destroy(&s->cond);
        pthread_mutex_destroy(&s->lock);
        dw_auth_free(s->auth);
        dw_config_destroy(&s->cfg);
    }
    fail_msg("no port to listen on");
    return NULL;
}

static void server_stop(struct server *s)
{
    struct dw_server *srv;

    if (!s)
        return;
    pthread_mutex_lock(&s->lock);
    srv = s->srv;
    pthread_mutex_unlock(&s->lock);
    dw_server_stop(srv);
    pthread_mutex_lock(&s->lock);
    s->stop_done = true;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->lock);
    pthread_join(s->thread, NULL);
    assert_int_equal(s->run_rc, 0);
    pthread_cond_destroy(&s->cond);
    pthread_mutex_destroy(&s->lock);
    dw_auth_free(s->auth);
    dw_config_destroy(&s->cfg);
    free(s);
}

/* ------------------------------------------------------------------------------------------
 * A client connection: raw bytes out, answers parsed from what comes back
 * ------------------------------------------------------------------------------------------ */

struct conn {
    int fd;
    size_t len; /* bytes in buf not consumed yet */
    char buf[CONN_BUF];
};

enum fill { FILL_OK, FILL_EOF, FILL_TIMEOUT };

static struct conn *conn_open(const struct server *s)
{
    struct conn *c = malloc(sizeof(*c));

    assert_non_null(c);
    c->fd = try_connect(s->port);
    if (c->fd < 0)
        fail_msg("connect to %d: %s", s->port, strerror(errno));
    c->len = 0;
    return c;
}

static void conn_close(struct conn *c)
{
    if (!c)
        return;
    close(c->fd);
    free(c);
}

/* Sends all of data; false when the server has closed the connection already. */
static bool conn_send(struct conn *c, const void *data, size_t len)
{
    const char *p = data;

    while (len > 0) {
        ssize_t n = send(c->fd, p, len, MSG_NOSIGNAL);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EPIPE || errno == ECONNRESET))
            return false;
        if (n <= 0)
            fail_msg("send: %s", strerror(errno));
        p += n;
        len -= (size_t)n;
    }
    return true;
}

static void conn_send_str(struct conn *c, const char *s)
{
    assert_true(conn_send(c, s, strlen(s)));
}

/* Reads what the socket has into buf, waiting until deadline (monotonic ms). */
static enum fill conn_fill(struct conn *c, int64_t deadline)
{
    struct pollfd p = {.fd = c->fd, .events = POLLIN};
    ssize_t n;
    int64_t left = deadline - now_ms();
    int r;

    if (c->len == sizeof(c->buf))
        fail_msg("answer larger than %zu bytes", sizeof(c->buf));
    if (left <= 0)
        return FILL_TIMEOUT;
    r = poll(&p, 1, (int)left);
    if (r < 0 && errno == EINTR)
        return FILL_OK;
    assert_true(r >= 0);
    if (r == 0)
        return FILL_TIMEOUT;
    n = recv(c->fd, c->buf + c->len, sizeof(c->buf) - c->len, 0);
    if (n < 0 && errno == EINTR)
        return FILL_OK;
    if (n == 0 || (n < 0 && errno == ECONNRESET))
        return FILL_EOF;
    if (n < 0)
        fail_msg("recv: %s", strerror(errno));
    c->len += (size_t)n;
    return FILL_OK;
}

static void conn_consume(struct conn *c, size_t n)
{
    memmove(c->buf, c->buf + n, c->len - n);
    c->len -= n;
}

/* The server closes c (EOF or reset) within WAIT_MS, and sends nothing more first. */
static void expect_closed(struct conn *c)
{
    int64_t deadline = now_ms() + WAIT_MS;
    enum fill f;

    while ((f = conn_fill(c, deadline)) == FILL_OK) {
        if (c->len > 0)
            fail_msg("more bytes after the answer: %.*s", (int)c->len, c->buf);
    }
    if (f == FILL_TIMEOUT)
        fail_msg("the connection stayed open");
}

struct reply {
    int status;
    char *head; /* status line and headers, NUL-terminated */
    char *body; /* body bytes, NUL-terminated */
    size_t body_len;
};

static void reply_free(struct reply *r)
{
    free(r->head);
    free(r->body);
    memset(r, 0, sizeof(*r));
}

/* The value of header name in r (any case), copied into out; NULL when absent. */
static const char *header(const struct reply *r, const char *name, char *out, size_t cap)
{
    size_t nlen = strlen(name);

    for (const char *line = strstr(r->head, "\r\n"); line && line[2]; line = strstr(line, "\r\n")) {
        const char *p = line + 2, *end = strstr(p, "\r\n");

        line = p;
        if (!end || strncasecmp(p, name, nlen) != 0 || p[nlen] != ':')
            continue;
        p += nlen + 1;
        while (*p == ' ')
            p++;
        snprintf(out, cap, "%.*s", (int)(end - p), p);
        return out;
    }
    return NULL;
}

/* Reads one answer from c: its head, and a body of Content-Length bytes (none for an answer
 * to HEAD, or without Content-Length, as a 101 has). Fails the test at the deadline. */
static void read_reply(struct conn *c, struct reply *r, bool head_request)
{
    int64_t deadline = now_ms() + WAIT_MS;
    char value[32];
    const char *end;
    size_t head_len, want = 0;

    memset(r, 0, sizeof(*r));
    while (!(end = memmem(c->buf, c->len, "\r\n\r\n", 4))) {
        enum fill f = conn_fill(c, deadline);

        if (f != FILL_OK)
            fail_msg("%s before an answer's head; got \"%.*s\"",
                     f == FILL_EOF ? "closed" : "timed out", (int)c->len, c->buf);
    }
    head_len = (size_t)(end - c->buf) + 4;
    r->head = strndup(c->buf, head_len - 2);
    assert_non_null(r->head);
    r->status = http_status_code(r->head);
    if (r->status < 0)
        fail_msg("not an HTTP/1.1 status line: %s", r->head);
    conn_consume(c, head_len);
    if (!head_request && header(r, "content-length", value, sizeof(value)))
        want = strtoul(value, NULL, 10);
    while (c->len < want) {
        enum fill f = conn_fill(c, deadline);

        if (f != FILL_OK)
            fail_msg("%s in the body: %zu of %zu bytes", f == FILL_EOF ? "closed" : "timed out",
                     c->len, want);
    }
    r->body = strndup(c->buf, want);
    assert_non_null(r->body);
    r->body_len = want;
    conn_consume(c, want);
}

/* The one answer to raw on a new connection, then the connection closed by us. */
static void exchange(const struct server *s, const char *raw, struct reply *r)
{
    struct conn *c = conn_open(s);

    conn_send_str(c, raw);
    read_reply(c, r, strncmp(raw, "HEAD ", 5) == 0);
    conn_close(c);
}

/* r's body as a JSON object, with the JSON content type. The caller puts it. */
static struct json_object *reply_json(const struct reply *r)
{
    struct json_object *obj;
    char type[64];

    if (!header(r, "content-type", type, sizeof(type)) || strcmp(type, "application/json") != 0)
        fail_msg("not a JSON answer: %s", r->head);
    obj = json_tokener_parse(r->body);
    if (!json_object_is_type(obj, json_type_object))
        fail_msg("body is not a JSON object: %s", r->body);
    return obj;
}

/* The member at path ("a.b.c") of obj, which must be there. Borrowed from obj. */
static struct json_object *member(struct json_object *obj, const char *path)
{
    char key[64];
    const char *p = path;

    while (*p) {
        size_t n = strcspn(p, ".");
        struct json_object *v;

        assert_true(n < sizeof(key));
        memcpy(key, p, n);
        key[n] = '\0';
        if (!json_object_object_get_ex(obj, key, &v))
            fail_msg("no \"%s\" in %s", path, json_object_to_json_string(obj));
        obj = v;
        p += n + (p[n] == '.');
    }
    return obj;
}

static int64_t member_int(struct json_object *obj, const char *path)
{
    struct json_object *v = member(obj, path);

    if (!json_object_is_type(v, json_type_int))
        fail_msg("\"%s\" is not an integer", path);
    return json_object_get_int64(v);
}

static const char *member_str(struct json_object *obj, const char *path)
{
    struct json_object *v = member(obj, path);

    if (!json_object_is_type(v, json_type_string))
        fail_msg("\"%s\" is not a string", path);
    return json_object_get_string(v);
}

/* r is status with a JSON {"error": ...} containing why. */
static void expect_error(const struct reply *r, int status, const char *why)
{
    struct json_object *obj;

    if (r->status != status)
        fail_msg("status %d, want %d: %s%s", r->status, status, r->head, r->body);
    obj = reply_json(r);
    if (!strstr(member_str(obj, "error"), why))
        fail_msg("error \"%s\", want it to say \"%s\"", member_str(obj, "error"), why);
    json_object_put(obj);
}

/* The request line and headers of a GET, with Authorization when auth is not NULL. */
static void get_request(char *out, size_t cap, const char *path, const char *auth)
{
    int n = snprintf(out, cap, "GET %s HTTP/1.1\r\nHost: test\r\n%s%s%s\r\n", path,
                     auth ? "Authorization: " : "", auth ? auth : "", auth ? "\r\n" : "");

    assert_true(n > 0 && (size_t)n < cap);
}

/* GET path (with auth when not NULL) expecting status with a JSON object. Caller puts it. */
static struct json_object *get_json(const struct server *s, const char *path, const char *auth,
                                    int status)
{
    struct json_object *obj;
    struct reply r;
    char req[1024];

    get_request(req, sizeof(req), path, auth);
    exchange(s, req, &r);
    if (r.status != status)
        fail_msg("GET %s: status %d, want %d: %s", path, r.status, status, r.body);
    obj = reply_json(&r);
    reply_free(&r);
    return obj;
}

/* A POST request of body to path, with auth when not NULL, into a new string. */
static char *post_request(const char *path, const char *body, const char *auth)
{
    size_t cap = strlen(body) + 512;
    char *out = malloc(cap);
    int n;

    assert_non_null(out);
    n = snprintf(out, cap,
                 "POST %s HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                 "%s%s%sContent-Length: %zu\r\n\r\n%s",
                 path, auth ? "Authorization: " : "", auth ? auth : "", auth ? "\r\n" : "",
                 strlen(body), body);
    assert_true(n > 0 && (size_t)n < cap);
    return out;
}

/* POST body to path on c (kept open), reading the answer into r. */
static void post_on(struct conn *c, const char *path, const char *body, const char *auth,
                    struct reply *r)
{
    char *req = post_request(path, body, auth);

    conn_send_str(c, req);
    free(req);
    read_reply(c, r, false);
}

static void post(const struct server *s, const char *path, const char *body, const char *auth,
                 struct reply *r)
{
    struct conn *c = conn_open(s);

    post_on(c, path, body, auth, r);
    conn_close(c);
}

/* The server's stats document's "security" member, read with auth. Caller puts the root,
 * returned in *root. */
static struct json_object *security(const struct server *s, const char *auth,
                                    struct json_object **root)
{
    *root = get_json(s, "/api/websocket/stats", auth, 200);
    return member(*root, "security");
}

/* Reads security.<path> until it equals want, with a bound: for a state the I/O thread
 * reaches after the client's last byte (a close noticed, a body read). */
static void await_security(const struct server *s, const char *auth, const char *path, int64_t want)
{
    int64_t deadline = now_ms() + WAIT_MS, got = -1;

    while (now_ms() < deadline) {
        struct json_object *root;

        got = member_int(security(s, auth, &root), path);
        json_object_put(root);
        if (got == want)
            return;
        poll(NULL, 0, 5);
    }
    fail_msg("security.%s is %lld, want %lld", path, (long long)got, (long long)want);
}

/* ------------------------------------------------------------------------------------------
 * A WebSocket client, enough for the upgrade and for reading server frames
 * ------------------------------------------------------------------------------------------ */

static void upgrade_request(char *out, size_t cap, const char *path_and_query)
{
    int n = snprintf(out, cap,
                     "GET %s HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     "Sec-WebSocket-Version: 13\r\n\r\n",
                     path_and_query);

    assert_true(n > 0 && (size_t)n < cap);
}

/* The next text frame's payload from c, as JSON (control frames skipped). Caller puts it. */
static struct json_object *ws_recv_json(struct conn *c)
{
    int64_t deadline = now_ms() + WAIT_MS;

    for (int frames = 0; frames < 16; frames++) {
        const unsigned char *b = (const unsigned char *)c->buf;
        size_t hdr = 2, len;
        unsigned op;
        char *text;
        struct json_object *obj;

        while (c->len < 4) { /* every frame the server sends here has at least 4 bytes */
            if (conn_fill(c, deadline) != FILL_OK)
                fail_msg("no frame from the server");
        }
        assert_int_equal(b[1] & 0x80, 0); /* server frames are not masked */
        len = b[1] & 0x7f;
        if (len == 126) {
            len = (size_t)b[2] << 8 | b[3];
            hdr = 4;
        } else if (len == 127) {
            fail_msg("frame too large for this test");
        }
        while (c->len < hdr + len) {
            if (conn_fill(c, deadline) != FILL_OK)
                fail_msg("frame cut short");
        }
        op = b[0] & 0x0f;
        if (op != 1) {
            assert_true(op >= 8); /* a control frame: ping, pong or close */
            assert_int_not_equal(op, 8);
            conn_consume(c, hdr + len);
            continue;
        }
        text = strndup(c->buf + hdr, len);
        assert_non_null(text);
        obj = json_tokener_parse(text);
        if (!json_object_is_type(obj, json_type_object))
            fail_msg("not a JSON object: %s", text);
        free(text);
        conn_consume(c, hdr + len);
        return obj;
    }
    fail_msg("no text frame among 16");
    return NULL;
}

/* A WebSocket connection for user (more, when not NULL, follows in the query), after its
 * welcome. */
static struct conn *ws_open_q(const struct server *s, const char *user, const char *more)
{
    struct conn *c = conn_open(s);
    struct json_object *welcome;
    struct reply r;
    char req[512], path[256];

    snprintf(path, sizeof(path), "/ws/events?user_id=%s%s", user, more ? more : "");
    upgrade_request(req, sizeof(req), path);
    conn_send_str(c, req);
    read_reply(c, &r, false);
    if (r.status != 101)
        fail_msg("upgrade for %s: %s%s", user, r.head, r.body);
    reply_free(&r);
    welcome = ws_recv_json(c);
    assert_string_equal(member_str(welcome, "type"), "connection_established");
    assert_string_equal(member_str(welcome, "user_id"), user);
    json_object_put(welcome);
    return c;
}

static struct conn *ws_open(const struct server *s, const char *user)
{
    return ws_open_q(s, user, NULL);
}

/* Closes WebSocket clients and waits until the server counts none. */
static void ws_close_all(const struct server *s, struct conn **conns, size_t n)
{
    int64_t deadline = now_ms() + WAIT_MS;

    for (size_t i = 0; i < n; i++)
        conn_close(conns[i]);
    while (now_ms() < deadline) {
        struct json_object *h = get_json(s, "/healthz", NULL, 200);
        int64_t open = member_int(h, "connections");

        json_object_put(h);
        if (open == 0)
            return;
        poll(NULL, 0, 5);
    }
    fail_msg("WebSocket connections still open after their clients closed");
}

/* ==========================================================================================
 * Group 1: a server with the defaults
 * ========================================================================================== */

static int defaults_setup(void **state)
{
    *state = server_start(NULL);
    return 0;
}

static int server_teardown(void **state)
{
    server_stop(*state);
    return 0;
}

static void test_healthz(void **state)
{
    struct server *s = *state;
    struct json_object *obj;
    struct reply r;
    char v[64];

    exchange(s, "GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n", &r);
    assert_int_equal(r.status, 200);
    assert_non_null(header(&r, "cache-control", v, sizeof(v)));
    assert_string_equal(v, "no-store");
    obj = reply_json(&r);
    assert_string_equal(member_str(obj, "status"), "ok");
    assert_int_equal(member_int(obj, "connections"), 0);
    json_object_put(obj);
    reply_free(&r);
}

static void test_readyz(void **state)
{
    struct json_object *obj = get_json(*state, "/readyz", NULL, 200);

    assert_string_equal(member_str(obj, "status"), "ready");
    assert_string_equal(member_str(obj, "database"), "disabled");
    json_object_put(obj);
}

static void test_unknown_paths_are_404_json(void **state)
{
    static const char *const reqs[] = {
        "GET /nope HTTP/1.1\r\nHost: test\r\n\r\n",
        "GET /api/websocket/nope HTTP/1.1\r\nHost: test\r\n\r\n",
        "GET /healthz/ HTTP/1.1\r\nHost: test\r\n\r\n",
        "GET /api/publishx HTTP/1.1\r\nHost: test\r\n\r\n",
        "POST /nope HTTP/1.1\r\nHost: test\r\nContent-Length: 2\r\n\r\n{}",
        "PUT /nope HTTP/1.1\r\nHost: test\r\n\r\n",
    };
    struct reply r;

    for (size_t i = 0; i < sizeof(reqs) / sizeof(reqs[0]); i++) {
        exchange(*state, reqs[i], &r);
        expect_error(&r, 404, "no such endpoint");
        reply_free(&r);
    }
}

/* A known path with a method it does not take: 405 with Allow naming the ones it takes (RFC
 * 9110 15.5.6), and the connection stays in step (the body of a refused POST is not read as the
 * next request). */
static void test_wrong_method_is_405(void **state)
{
    static const struct {
        const char *request, *message, *allow;
    } cases[] = {
        {"GET /api/publish", "use POST", "POST"},
        {"DELETE /api/publish", "method not allowed", "POST"},
        {"PUT /api/websocket/stats", "method not allowed", "GET"},
        {"DELETE /", "method not allowed", "GET, HEAD"},
    };
    struct server *s = *state;
    struct conn *c;
    struct reply r;
    char v[64], req[128];

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        snprintf(req, sizeof(req), "%s HTTP/1.1\r\nHost: test\r\n\r\n", cases[i].request);
        exchange(s, req, &r);
        expect_error(&r, 405, cases[i].message);
        if (!header(&r, "allow", v, sizeof(v)) || strcmp(v, cases[i].allow) != 0)
            fail_msg("%s: Allow %s, want %s", cases[i].request,
                     header(&r, "allow", v, sizeof(v)) ? v : "(none)", cases[i].allow);
        reply_free(&r);
    }

    c = conn_open(s);
    conn_send_str(c, "POST /healthz HTTP/1.1\r\nHost: test\r\nContent-Length: 36\r\n\r\n"
                     "GET /api/websocket/nope HTTP/1.1\r\n\r\n"
                     "GET /readyz HTTP/1.1\r\nHost: test\r\n\r\n");
    read_reply(c, &r, false);
    expect_error(&r, 405, "method not allowed");
    reply_free(&r);
    read_reply(c, &r, false); /* the request after the body, not the one inside it */
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "\"ready\""));
    reply_free(&r);
    conn_close(c);

    /* HEAD of an API path: 405 and no body, so the next answer on the connection is whole. */
    c = conn_open(s);
    conn_send_str(c, "HEAD /healthz HTTP/1.1\r\nHost: test\r\n\r\n"
                     "GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n");
    read_reply(c, &r, true);
    assert_int_equal(r.status, 405);
    assert_non_null(header(&r, "allow", v, sizeof(v)));
    assert_string_equal(v, "GET");
    reply_free(&r);
    read_reply(c, &r, false);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "\"status\":\"ok\""));
    reply_free(&r);
    conn_close(c);
}

/* The dashboard: GET and HEAD of its files, with the page's own headers, no token needed. */
static void test_dashboard_page(void **state)
{
    struct server *s = *state;
    struct conn *c = conn_open(s);
    struct reply r;
    size_t len;
    char v[256];

    conn_send_str(c, "HEAD / HTTP/1.1\r\nHost: test\r\n\r\nGET / HTTP/1.1\r\nHost: test\r\n\r\n");
    read_reply(c, &r, true);
    assert_int_equal(r.status, 200);
    assert_non_null(header(&r, "content-length", v, sizeof(v)));
    len = strtoul(v, NULL, 10);
    assert_true(len > 0);
    reply_free(&r);
    read_reply(c, &r, false); /* HEAD had no body: this is GET's answer, whole */
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body_len, len);
    assert_non_null(header(&r, "content-type", v, sizeof(v)));
    assert_string_equal(v, "text/html; charset=utf-8");
    assert_non_null(header(&r, "content-security-policy", v, sizeof(v)));
    assert_non_null(strstr(v, "default-src 'self'"));
    assert_non_null(header(&r, "x-content-type-options", v, sizeof(v)));
    assert_string_equal(v, "nosniff");
    assert_non_null(strcasestr(r.body, "<html"));
    reply_free(&r);
    conn_close(c);
}

/* CONNECT: 405 with a JSON error, then the connection closed (lws hands it over raw). */
static void test_connect_is_405_json(void **state)
{
    struct conn *c = conn_open(*state);
    struct reply r;
    char v[64];

    conn_send_str(c, "CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\n\r\n");
    read_reply(c, &r, false);
    expect_error(&r, 405, "CONNECT is not supported");
    assert_non_null(header(&r, "connection", v, sizeof(v)));
    assert_string_equal(v, "close");
    assert_non_null(header(&r, "allow", v, sizeof(v)));
    assert_string_equal(v, "GET, HEAD, POST");
    reply_free(&r);
    expect_closed(c);
    conn_close(c);
}

/* A method lws does not know: 501 with a JSON error, one answer only, then a close. */
static void test_unknown_method_is_501_json(void **state)
{
    static const char *const lines[] = {"BREW /api/publish HTTP/1.1", "TRACE / HTTP/1.1",
                                        "FOO /healthz HTTP/1.1"};

    for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++) {
        struct conn *c = conn_open(*state);
        struct reply r;
        char req[256];

        snprintf(req, sizeof(req), "%s\r\nHost: test\r\n\r\nGET /healthz HTTP/1.1\r\n\r\n",
                 lines[i]);
        conn_send_str(c, req);
        read_reply(c, &r, false);
        expect_error(&r, 501, "unknown method");
        reply_free(&r);
        expect_closed(c); /* the GET behind it is not answered */
        conn_close(c);
    }
}

/* A framing refusal: status with the error, and the connection closed with nothing more, even
 * with a request behind it. */
static void expect_framing_refused(const struct server *s, const char *raw, int status,
                                   const char *why)
{
    struct conn *c = conn_open(s);
    struct reply r;

    conn_send_str(c, raw);
    read_reply(c, &r, false);
    expect_error(&r, status, why);
    reply_free(&r);
    expect_closed(c);
    conn_close(c);
}

static void test_transfer_encoding_with_content_length_is_400(void **state)
{
    expect_framing_refused(*state,
                           "POST /api/publish HTTP/1.1\r\nHost: test\r\n"
                           "Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n1\r\nG",
                           400, "Transfer-Encoding and Content-Length together");
    expect_framing_refused(*state,
                           "GET /healthz HTTP/1.1\r\nHost: test\r\nContent-Length: 5\r\n"
                           "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                           400, "Transfer-Encoding and Content-Length together");
}

static void test_transfer_encoding_alone_is_411(void **state)
{
    expect_framing_refused(*state,
                           "POST /api/publish HTTP/1.1\r\nHost: test\r\n"
                           "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
                           "GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n",
                           411, "Transfer-Encoding is not accepted");
    /* On any method and path, not only where a body is expected. */
    expect_framing_refused(*state,
                           "GET /healthz HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n"
                           "\r\n0\r\n\r\nGET /healthz HTTP/1.1\r\nHost: test\r\n\r\n",
                           411, "Transfer-Encoding is not accepted");
}

static void test_content_length_must_be_decimal(void **state)
{
    static const char *const values[] = {
        "+4", "-4", "4, 4", "0x4", "4a", "4.0", "1234567890123456789", /* 19 digits */
    };
    char req[512];

    for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
        snprintf(req, sizeof(req),
                 "POST /api/publish HTTP/1.1\r\nHost: test\r\nContent-Length: %s\r\n\r\n{}{}"
                 "GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n",
                 values[i]);
        expect_framing_refused(*state, req, 400, "Content-Length must be one decimal number");
    }
    /* Two headers: lws joins them, which is no longer one number. */
    expect_framing_refused(*state,
                           "POST /api/publish HTTP/1.1\r\nHost: test\r\nContent-Length: 4\r\n"
                           "Content-Length: 4\r\n\r\n{}{}",
                           400, "Content-Length must be one decimal number");
    /* On a GET too. */
    expect_framing_refused(*state,
                           "GET /healthz HTTP/1.1\r\nHost: test\r\nContent-Length: +0\r\n\r\n", 400,
                           "Content-Length must be one decimal number");
}

/* The POST checks before any of the body is read. */
static void test_post_needs_a_sized_body(void **state)
{
    struct server *s = *state;
    struct reply r;
    struct conn *c;

    c = conn_open(s);
    conn_send_str(c, "POST /api/publish HTTP/1.1\r\nHost: test\r\n\r\n");
    read_reply(c, &r, false);
    expect_error(&r, 411, "Content-Length required");
    reply_free(&r);
    expect_closed(c);
    conn_close(c);

    c = conn_open(s);
    conn_send_str(c, "POST /api/publish HTTP/1.1\r\nHost: test\r\nContent-Length: 0\r\n\r\n");
    read_reply(c, &r, false);
    expect_error(&r, 400, "empty body");
    reply_free(&r);
    expect_closed(c);
    conn_close(c);

    /* Over --max-publish-size (1 MiB by default): refused from the headers, not read. The
     * largest length the framing takes (18 digits) gets the same answer. */
    c = conn_open(s);
    conn_send_str(c, "POST /api/publish HTTP/1.1\r\nHost: test\r\nContent-Length: 1048577\r\n\r\n");
    read_reply(c, &r, false);
    expect_error(&r, 413, "body too large");
    reply_free(&r);
    expect_closed(c);
    conn_close(c);

    c = conn_open(s);
    conn_send_str(c, "POST /api/publish HTTP/1.1\r\nHost: test\r\n"
                     "Content-Length: 999999999999999999\r\n\r\n");
    read_reply(c, &r, false);
    expect_error(&r, 413, "body too large");
    reply_free(&r);
    expect_closed(c);
    conn_close(c);
}

/* A leading zero is still one decimal number. */
static void test_content_length_leading_zero(void **state)
{
    struct reply r;
    struct json_object *obj;

    exchange(*state,
             "POST /api/publish HTTP/1.1\r\nHost: test\r\nContent-Length: 0050\r\n\r\n"
             "{\"target\":\"all\",\"message\":{\"type\":\"notification\"}}",
             &r);
    assert_int_equal(r.status, 200);
    obj = reply_json(&r);
    assert_int_equal(member_int(obj, "recipients"), 0);
    json_object_put(obj);
    reply_free(&r);
}

static void test_publish_answers(void **state)
{
    static const char body[] = "{\"target\":\"all\",\"message\":{\"type\":\"notification\"}}";
    struct server *s = *state;
    struct conn *c = conn_open(s);
    struct json_object *a, *b;
    struct reply r;

    /* Two on one keep-alive connection: each answered, each with its own id. */
    post_on(c, "/api/publish", body, NULL, &r);
    assert_int_equal(r.status, 200);
    a = reply_json(&r);
    reply_free(&r);
    post_on(c, "/api/publish", body, NULL, &r);
    assert_int_equal(r.status, 200);
    b = reply_json(&r);
    reply_free(&r);
    conn_close(c);
    assert_int_equal(member_int(a, "recipients"), 0);
    assert_true(strlen(member_str(a, "id")) > 0);
    assert_string_not_equal(member_str(a, "id"), member_str(b, "id"));
    json_object_put(a);
    json_object_put(b);

    /* A batch: one result per item. */
    post(s, "/api/publish",
         "[{\"target\":\"all\",\"message\":{\"type\":\"deal_alert\"}},"
         "{\"target\":{\"user_id\":\"nobody\"},\"message\":{\"type\":\"price_alert\"}}]",
         NULL, &r);
    assert_int_equal(r.status, 200);
    a = reply_json(&r);
    assert_int_equal(member_int(a, "recipients"), 0);
    assert_int_equal(json_object_array_length(member(a, "results")), 2);
    json_object_put(a);
    reply_free(&r);
}

static void test_publish_errors(void **state)
{
    struct server *s = *state;
    struct json_object *obj;
    struct reply r;

    post(s, "/api/publish", "{\"target\":\"all\",", NULL, &r);
    expect_error(&r, 400, "body is not valid JSON");
    reply_free(&r);
    post(s, "/api/publish", "42", NULL, &r);
    expect_error(&r, 400, "body must be a JSON object or an array of them");
    reply_free(&r);
    post(s, "/api/publish", "{\"target\":\"all\",\"message\":{\"type\":\"bogus\"}}", NULL, &r);
    expect_error(&r, 400, "\"message.type\" must be");
    obj = reply_json(&r);
    assert_string_equal(member_str(obj, "field"), "message.type");
    json_object_put(obj);
    reply_free(&r);
    post(s, "/api/publish", "[{\"target\":\"all\",\"message\":{\"type\":\"notification\"}},{}]",
         NULL, &r);
    expect_error(&r, 400, "\"target\" is required");
    obj = reply_json(&r);
    assert_string_equal(member_str(obj, "field"), "[1].target");
    json_object_put(obj);
    reply_free(&r);

    /* An error answer keeps the connection: the next request on it is served. */
    {
        struct conn *c = conn_open(s);

        post_on(c, "/api/publish", "nope", NULL, &r);
        expect_error(&r, 400, "body is not valid JSON");
        reply_free(&r);
        conn_send_str(c, "GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n");
        read_reply(c, &r, false);
        assert_int_equal(r.status, 200);
        reply_free(&r);
        conn_close(c);
    }
}

/* A GET written right behind a POST's body: the POST's answer comes first (done, or refused
 * as pipelined with the connection closed), and the I/O thread never spins on it (lws 4.1's
 * loop on a POST answered later). Which of the two depends on how the bytes were read. */
static void test_request_pipelined_behind_a_post(void **state)
{
    struct server *s = *state;
    struct conn *c = conn_open(s);
    struct json_object *obj;
    struct reply r;
    char *req = post_request("/api/publish",
                             "{\"target\":\"all\",\"message\":{\"type\":\"notification\"}}", NULL);

    assert_true(conn_send(c, req, strlen(req)));
    conn_send_str(c, "GET /readyz HTTP/1.1\r\nHost: test\r\n\r\n");
    free(req);
    read_reply(c, &r, false);
    obj = reply_json(&r);
    if (r.status == 200) {
        assert_int_equal(member_int(obj, "recipients"), 0);
        reply_free(&r);
        read_reply(c, &r, false);
        assert_int_equal(r.status, 200);
        assert_non_null(strstr(r.body, "\"ready\""));
    } else {
        expect_error(&r, 400, "pipelined request");
        expect_closed(c);
    }
    json_object_put(obj);
    reply_free(&r);
    conn_close(c);
    json_object_put(get_json(s, "/healthz", NULL, 200)); /* others are served */
}

/* POST /api/publish reaches a connected user, and the answer counts it. */
static void test_publish_reaches_a_websocket(void **state)
{
    struct server *s = *state;
    struct conn *alice = ws_open(s, "alice");
    struct json_object *obj;
    struct reply r;

    post(s, "/api/publish",
         "{\"target\":{\"user_id\":\"alice\"},"
         "\"message\":{\"type\":\"deal_alert\",\"deal_id\":\"d-42\"}}",
         NULL, &r);
    assert_int_equal(r.status, 200);
    obj = reply_json(&r);
    assert_int_equal(member_int(obj, "recipients"), 1);
    json_object_put(obj);
    reply_free(&r);
    obj = ws_recv_json(alice);
    assert_string_equal(member_str(obj, "type"), "deal_alert");
    assert_string_equal(member_str(obj, "deal_id"), "d-42");
    json_object_put(obj);
    ws_close_all(s, &alice, 1);
}

/* The upgrade's ?user_id= is read strictly: one, valid, and nothing ambiguous around it. */
static void test_user_id_is_strict(void **state)
{
    static const struct {
        const char *target;
        int status;
        const char *why;
    } cases[] = {
        {"/ws/events", 400, "user_id query parameter is required"},
        {"/ws/events?v=1", 400, "user_id query parameter is required"},
        {"/ws/events?user_id=", 400, "user_id must be 1-128 characters"},
        {"/ws/events?user_id=a%20b", 400, "user_id must be 1-128 characters"},
        {"/ws/events?user_id=a/b", 400, "user_id must be 1-128 characters"},
        {"/ws/events?user_id=a&user_id=b", 400, "user_id is given more than once"},
        {"/ws/events?user_id=a&user_id=a", 400, "user_id is given more than once"},
        {"/ws/events?user_id=a;b", 400, "query arguments are name=value"},
        {"/ws/events?b&user_id=a", 400, "query arguments are name=value"},
        {"/ws/events?user_id=a;b=c;user_id=d", 400, "user_id is given more than once"},
        {"/ws/other?user_id=a", 404, "WebSocket endpoint is"},
    };
    char req[1024], target[256];
    struct reply r;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        upgrade_request(req, sizeof(req), cases[i].target);
        exchange(*state, req, &r);
        if (r.status != cases[i].status)
            fail_msg("%s: status %d, want %d", cases[i].target, r.status, cases[i].status);
        expect_error(&r, cases[i].status, cases[i].why);
        reply_free(&r);
    }
    /* A %00 never names a user: lws 4.1 drops such a request unanswered, and read_user_id would
     * refuse it (400); either way no upgrade, and the connection closes. */
    {
        struct conn *c = conn_open(*state);
        int64_t deadline = now_ms() + WAIT_MS;
        enum fill f;

        upgrade_request(req, sizeof(req), "/ws/events?user_id=a%00b");
        conn_send_str(c, req);
        while ((f = conn_fill(c, deadline)) == FILL_OK)
            ;
        assert_int_equal(f, FILL_EOF);
        if (c->len > 0 && strncmp(c->buf, "HTTP/1.1 400 ", 13) != 0)
            fail_msg("user_id=a%%00b: %.*s", (int)c->len, c->buf);
        conn_close(c);
    }
    /* 129 characters is one too many; 128 is fine. */
    snprintf(target, sizeof(target), "/ws/events?user_id=%0129d", 0);
    upgrade_request(req, sizeof(req), target);
    exchange(*state, req, &r);
    expect_error(&r, 400, "user_id must be 1-128 characters");
    reply_free(&r);
    {
        struct conn *c[3];
        char user[160];

        snprintf(user, sizeof(user), "%0128d", 7);
        c[0] = ws_open(*state, user);
        /* Other arguments beside it, and a trailing '&', are fine. */
        c[1] = ws_open_q(*state, "bob", "&v=1");
        c[2] = ws_open_q(*state, "carol:x@y.z_-", "&");
        ws_close_all(*state, c, 3);
    }
}

/* The stats documents, with two users connected (one twice). */
static void test_stats_documents(void **state)
{
    struct server *s = *state;
    struct conn *c[3];
    struct json_object *doc, *v;

    c[0] = ws_open(s, "alice");
    c[1] = ws_open(s, "alice");
    c[2] = ws_open(s, "bob");

    doc = get_json(s, "/api/websocket/stats", NULL, 200);
    assert_int_equal(member_int(doc, "active_connections"), 3);
    assert_int_equal(member_int(doc, "total_users"), 2);
    assert_true(json_object_object_get_ex(member(doc, "uptime_by_user"), "alice", NULL));
    assert_true(json_object_object_get_ex(member(doc, "uptime_by_user"), "bob", NULL));
    assert_true(member_int(doc, "message_stats.total_sent") >= 3); /* the welcomes */
    assert_string_equal(member_str(doc, "security.auth"), "off");
    assert_false(json_object_get_boolean(member(doc, "security.api_token")));
    assert_int_equal(member_int(doc, "security.limits.max_publish_size"), 1048576);
    json_object_put(doc);

    doc = get_json(s, "/api/websocket/users/alice", NULL, 200);
    assert_string_equal(member_str(doc, "user_id"), "alice");
    assert_int_equal(member_int(doc, "connections"), 2);
    assert_int_equal(json_object_array_length(member(doc, "connection_ids")), 2);
    json_object_put(doc);
    doc = get_json(s, "/api/websocket/users/nobody", NULL, 404);
    assert_string_equal(member_str(doc, "error"), "unknown user");
    json_object_put(doc);
    doc = get_json(s, "/api/websocket/users/", NULL, 404);
    json_object_put(doc);

    doc = get_json(s, "/api/websocket/connections", NULL, 200);
    assert_int_equal(member_int(doc, "active_connections"), 3);
    assert_int_equal(json_object_array_length(member(doc, "connections")), 3);
    assert_false(json_object_get_boolean(member(doc, "truncated")));
    v = json_object_array_get_idx(member(doc, "connections"), 0);
    assert_true(strlen(member_str(v, "connection_id")) > 0);
    json_object_put(doc);
    json_object_put(get_json(s, "/api/websocket/connections", NULL, 200));
    ws_close_all(s, c, 3);
}

/* GET /api/websocket/users/<id>/inbox, what the I/O thread decides alone (this server has no
 * --db): the user id and each argument checked first, a 400 naming the one that is wrong, then
 * 503 "no database"; the user stats endpoint beside it is unchanged. */
static void test_inbox_without_database(void **state)
{
    static const struct {
        const char *path, *field, *why;
    } bad[] = {
        {"/api/websocket/users/alice/inbox?after=-1", "after", "after must be"},
        {"/api/websocket/users/alice/inbox?after=x", "after", "after must be"},
        {"/api/websocket/users/alice/inbox?after=", "after", "after must be"},
        {"/api/websocket/users/alice/inbox?after=1234567890123456789", "after", "after must be"},
        {"/api/websocket/users/alice/inbox?x=1&after=1.5", "after", "after must be"},
        {"/api/websocket/users/alice/inbox?limit=0", "limit", "limit must be"},
        {"/api/websocket/users/alice/inbox?limit=1001", "limit", "limit must be"},
        {"/api/websocket/users/alice/inbox?after=3&limit=abc", "limit", "limit must be"},
        {"/api/websocket/users/a!b/inbox", "user_id", "invalid user id"},
    };
    static const char *const fine[] = {
        "/api/websocket/users/alice/inbox",
        "/api/websocket/users/alice/inbox?after=0&limit=1000",
        "/api/websocket/users/alice/inbox?limit=1&after=123456789012345678&other=x",
    };
    struct server *s = *state;
    struct json_object *obj;
    struct reply r;
    char req[1024];

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        get_request(req, sizeof(req), bad[i].path, NULL);
        exchange(s, req, &r);
        expect_error(&r, 400, bad[i].why);
        obj = reply_json(&r);
        if (strcmp(member_str(obj, "field"), bad[i].field) != 0)
            fail_msg("%s: field \"%s\", want \"%s\"", bad[i].path, member_str(obj, "field"),
                     bad[i].field);
        json_object_put(obj);
        reply_free(&r);
    }
    for (size_t i = 0; i < sizeof(fine) / sizeof(fine[0]); i++) {
        obj = get_json(s, fine[i], NULL, 503);
        assert_string_equal(member_str(obj, "error"), "no database");
        json_object_put(obj);
    }
    obj = get_json(s, "/api/websocket/users/inbox", NULL, 404);
    assert_string_equal(member_str(obj, "error"), "unknown user");
    json_object_put(obj);
    exchange(s,
             "POST /api/websocket/users/alice/inbox HTTP/1.1\r\nHost: test\r\n"
             "Content-Length: 2\r\n\r\n{}",
             &r);
    expect_error(&r, 405, "method not allowed");
    reply_free(&r);
}

/* ?limit on the connections document: a positive number, capped; anything else the default. */
static void test_connections_limit(void **state)
{
    static const struct {
        const char *query;
        int listed;
        bool truncated;
    } cases[] = {
        {"?limit=1", 1, true},
        {"?limit=2", 2, true},
        {"?limit=3", 3, false},
        {"?limit=999999", 3, false},
        {"?limit=0", 3, false},
        {"?limit=abc", 3, false},
        {"?limit=2x", 3, false},
        {"?limit=", 3, false},
        {"?x=1&limit=2", 2, true},
        {"?limit=-1", 3, false},
        {"?limit=%201", 3, false},
        /* an argument longer than lws_get_urlarg_by_name's buffer before it */
        {"?pad=xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx&limit=1", 1, true},
        {"?limit=0000000001", 3, false}, /* more than 9 digits */
    };
    struct server *s = *state;
    struct conn *c[3];
    char path[128];

    c[0] = ws_open(s, "u0");
    c[1] = ws_open(s, "u1");
    c[2] = ws_open(s, "u2");
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct json_object *doc;

        snprintf(path, sizeof(path), "/api/websocket/connections%s", cases[i].query);
        doc = get_json(s, path, NULL, 200);
        if ((int)json_object_array_length(member(doc, "connections")) != cases[i].listed)
            fail_msg("%s: %zu listed, want %d", cases[i].query,
                     json_object_array_length(member(doc, "connections")), cases[i].listed);
        assert_int_equal(json_object_get_boolean(member(doc, "truncated")), cases[i].truncated);
        assert_int_equal(member_int(doc, "active_connections"), 3);
        json_object_put(doc);
    }
    ws_close_all(s, c, 3);
}

/* ==========================================================================================
 * Group 2: --api-token, --max-publish-size 2048, --max-body-memory 3000
 * ========================================================================================== */

#define BEARER "Bearer " API_TOKEN

static int operator_setup(void **state)
{
    static const char *const args[] = {
        "--api-token", API_TOKEN, "--max-publish-size", "2048", "--max-body-memory", "3000", NULL};

    *state = server_start(args);
    return 0;
}

/* A publish body of exactly len bytes: valid JSON padded with spaces. */
static char *padded_body(size_t len)
{
    static const char json[] = "{\"target\":\"all\",\"message\":{\"type\":\"notification\"}}";
    char *b = malloc(len + 1);

    assert_non_null(b);
    assert_true(len >= sizeof(json) - 1);
    memcpy(b, json, sizeof(json) - 1);
    memset(b + sizeof(json) - 1, ' ', len - (sizeof(json) - 1));
    b[len] = '\0';
    return b;
}

static void test_api_token_required(void **state)
{
    static const char *const wrong[] = {
        NULL,
        "Bearer operator-token-0123456789abcde",   /* shorter */
        "Bearer operator-token-0123456789abcdeff", /* longer */
        "Bearer operator-token-0123456789abcdeX",  /* same length */
        ("Basic " API_TOKEN),
        API_TOKEN,
    };
    static const char *const paths[] = {"/api/websocket/stats", "/api/websocket/connections",
                                        "/api/websocket/users/alice",
                                        "/api/websocket/users/alice/inbox", "/api/nope"};
    struct server *s = *state;
    struct json_object *root, *obj;
    int64_t before;
    int refused = 0;
    struct reply r;
    char req[1024], v[64];

    before = member_int(security(s, BEARER, &root), "refused.api_auth");
    assert_true(json_object_get_boolean(member(root, "security.api_token")));
    json_object_put(root);
    for (size_t i = 0; i < sizeof(wrong) / sizeof(wrong[0]); i++) {
        for (size_t j = 0; j < sizeof(paths) / sizeof(paths[0]); j++) {
            get_request(req, sizeof(req), paths[j], wrong[i]);
            exchange(s, req, &r);
            expect_error(&r, 401, "the operator token is required");
            assert_non_null(header(&r, "www-authenticate", v, sizeof(v)));
            assert_string_equal(v, "Bearer");
            reply_free(&r);
            refused++;
        }
    }
    assert_int_equal(member_int(security(s, BEARER, &root), "refused.api_auth"), before + refused);
    json_object_put(root);

    /* The right token, in any case of the scheme. */
    obj = get_json(s, "/api/websocket/stats", "bearer " API_TOKEN, 200);
    assert_int_equal(member_int(obj, "active_connections"), 0);
    json_object_put(obj);
    /* Outside /api/ no token is asked for. */
    json_object_put(get_json(s, "/healthz", NULL, 200));
    json_object_put(get_json(s, "/readyz", NULL, 200));
    /* The inbox with the token: past the token, this server has no database. */
    json_object_put(get_json(s, "/api/websocket/users/alice/inbox", BEARER, 503));
    /* An unknown path under /api/ with the token: 404, not 401. */
    json_object_put(get_json(s, "/api/nope", BEARER, 404));
}

static void test_api_token_on_publish(void **state)
{
    static const char body[] = "{\"target\":\"all\",\"message\":{\"type\":\"notification\"}}";
    struct server *s = *state;
    struct json_object *obj;
    struct conn *c;
    struct reply r;
    char *req;

    /* Without the token: 401 before the body is read, so the connection closes. */
    c = conn_open(s);
    req = post_request("/api/publish", body, NULL);
    assert_true(conn_send(c, req, strlen(req)));
    free(req);
    read_reply(c, &r, false);
    expect_error(&r, 401, "the operator token is required");
    reply_free(&r);
    expect_closed(c);
    conn_close(c);

    c = conn_open(s);
    post_on(c, "/api/publish", body, "Bearer not-the-operator-token!!", &r);
    expect_error(&r, 401, "the operator token is required");
    reply_free(&r);
    expect_closed(c);
    conn_close(c);

    post(s, "/api/publish", body, BEARER, &r);
    assert_int_equal(r.status, 200);
    obj = reply_json(&r);
    assert_int_equal(member_int(obj, "recipients"), 0);
    json_object_put(obj);
    reply_free(&r);
}

/* --max-publish-size 2048: 2048 bytes are taken, 2049 refused from the headers. */
static void test_max_publish_size(void **state)
{
    struct server *s = *state;
    char *body = padded_body(2048);
    struct conn *c;
    struct reply r;

    post(s, "/api/publish", body, BEARER, &r);
    assert_int_equal(r.status, 200);
    reply_free(&r);
    free(body);

    /* The headers only: the body never comes. */
    c = conn_open(s);
    conn_send_str(c, "POST /api/publish HTTP/1.1\r\nHost: test\r\nAuthorization: " BEARER
                     "\r\nContent-Length: 2049\r\n\r\n");
    read_reply(c, &r, false);
    expect_error(&r, 413, "body too large");
    reply_free(&r);
    expect_closed(c);
    conn_close(c);
}

/* Bodies held at once share --max-body-memory: past it 503 before anything is read, and the
 * bytes come back when a body is done with. */
static void test_body_memory_budget(void **state)
{
    struct server *s = *state;
    struct json_object *root, *obj;
    struct conn *held, *c;
    char *body = padded_body(2000), *req;
    struct reply r;
    int64_t refused;

    refused = member_int(security(s, BEARER, &root), "refused.body_memory");
    json_object_put(root);

    /* One request's headers, its 2000-byte body not yet sent: the server holds 2000 bytes. */
    held = conn_open(s);
    req = post_request("/api/publish", body, BEARER);
    assert_true(conn_send(held, req, strlen(req) - 2000));
    await_security(s, BEARER, "body_bytes", 2000);

    /* 1500 more would pass 3000: refused at once, with the connection closed. */
    c = conn_open(s);
    free(body);
    body = padded_body(1500);
    post_on(c, "/api/publish", body, BEARER, &r);
    expect_error(&r, 503, "too many request bodies in flight");
    reply_free(&r);
    expect_closed(c);
    conn_close(c);
    await_security(s, BEARER, "refused.body_memory", refused + 1);

    /* 1000 still fit beside the 2000. */
    free(body);
    body = padded_body(1000);
    post(s, "/api/publish", body, BEARER, &r);
    assert_int_equal(r.status, 200);
    reply_free(&r);

    /* The held body arrives and is published; its bytes are given back. */
    assert_true(conn_send(held, req + strlen(req) - 2000, 2000));
    read_reply(held, &r, false);
    assert_int_equal(r.status, 200);
    obj = reply_json(&r);
    assert_int_equal(member_int(obj, "recipients"), 0);
    json_object_put(obj);
    reply_free(&r);
    conn_close(held);
    free(req);
    await_security(s, BEARER, "body_bytes", 0);

    /* A request whose client left mid-body gives its bytes back too. */
    held = conn_open(s);
    req = post_request("/api/publish", body, BEARER);
    assert_true(conn_send(held, req, strlen(req) - 10));
    await_security(s, BEARER, "body_bytes", 1000);
    conn_close(held);
    await_security(s, BEARER, "body_bytes", 0);
    free(req);
    free(body);

    /* And now 1500 fit. */
    body = padded_body(1500);
    post(s, "/api/publish", body, BEARER, &r);
    assert_int_equal(r.status, 200);
    reply_free(&r);
    free(body);
}

/* ==========================================================================================
 * Group 3: --handshake-timeout 1
 * ========================================================================================== */

static int deadline_setup(void **state)
{
    /* A heartbeat of 1 s makes the sweep that enforces the deadlines run every 125 ms. */
    static const char *const args[] = {"--handshake-timeout", "1", "--heartbeat-interval", "1",
                                       NULL};

    *state = server_start(args);
    return 0;
}

/* Three sockets that stop making progress, watched at once: request headers that never end,
 * an idle keep-alive connection after its answer, and a body trickled a byte every 100 ms
 * (lws's own timeout restarts on each byte; the socket's deadline does not). Each is closed,
 * unanswered, about --handshake-timeout after its last step. */
static void test_deadlines(void **state)
{
    static const char trickle[] = "\"target\":\"all\",\"message\":{\"type\":\"notification\"}}   ";
    struct server *s = *state;
    struct json_object *root;
    struct conn *c[3];
    struct reply r;
    int64_t start, next_byte, closed_at[3] = {0, 0, 0}, closes;
    size_t open = 3, sent = 0;

    closes = member_int(security(s, NULL, &root), "refused.deadline_closes");
    json_object_put(root);
    c[0] = conn_open(s);
    conn_send_str(c[0], "GET /healthz HTTP/1.1\r\nHost: te");
    c[1] = conn_open(s);
    conn_send_str(c[1], "GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n");
    read_reply(c[1], &r, false);
    assert_int_equal(r.status, 200);
    reply_free(&r);
    c[2] = conn_open(s);
    conn_send_str(c[2], "POST /api/publish HTTP/1.1\r\nHost: test\r\nContent-Length: 60\r\n\r\n{");

    start = next_byte = now_ms();
    while (open > 0 && now_ms() - start < WAIT_MS) {
        struct pollfd p[3];

        for (size_t i = 0; i < 3; i++)
            p[i] = (struct pollfd){.fd = closed_at[i] ? -1 : c[i]->fd, .events = POLLIN};
        assert_true(poll(p, 3, 20) >= 0 || errno == EINTR);
        for (size_t i = 0; i < 3; i++) {
            char buf[256];
            ssize_t n;

            if (closed_at[i] || !p[i].revents)
                continue;
            n = recv(c[i]->fd, buf, sizeof(buf), 0);
            if (n > 0)
                fail_msg("socket %zu got an answer: %.*s", i, (int)n, buf);
            if (n == 0 || errno == ECONNRESET) {
                closed_at[i] = now_ms();
                open--;
            }
        }
        if (!closed_at[2] && now_ms() >= next_byte && sent < sizeof(trickle) - 1) {
            conn_send(c[2], &trickle[sent++], 1); /* false once closed: seen by the next recv */
            next_byte += 100;
        }
    }
    for (size_t i = 0; i < 3; i++) {
        if (!closed_at[i])
            fail_msg("socket %zu still open after %d ms", i, WAIT_MS);
        if (closed_at[i] - start < 500)
            fail_msg("socket %zu closed after %lld ms: too early for a 1 s deadline", i,
                     (long long)(closed_at[i] - start));
        conn_close(c[i]);
    }
    assert_true(sent >= 5); /* bytes kept coming on the trickled one until its close */
    /* That one at least was closed by the socket's deadline, not by a timeout of lws. */
    security(s, NULL, &root);
    assert_true(member_int(root, "security.refused.deadline_closes") >= closes + 1);
    json_object_put(root);
}

/* ------------------------------------------------------------------------------------------ */

int main(void)
{
    const struct CMUnitTest defaults[] = {
        cmocka_unit_test(test_healthz),
        cmocka_unit_test(test_readyz),
        cmocka_unit_test(test_unknown_paths_are_404_json),
        cmocka_unit_test(test_wrong_method_is_405),
        cmocka_unit_test(test_dashboard_page),
        cmocka_unit_test(test_connect_is_405_json),
        cmocka_unit_test(test_unknown_method_is_501_json),
        cmocka_unit_test(test_transfer_encoding_with_content_length_is_400),
        cmocka_unit_test(test_transfer_encoding_alone_is_411),
        cmocka_unit_test(test_content_length_must_be_decimal),
        cmocka_unit_test(test_post_needs_a_sized_body),
        cmocka_unit_test(test_content_length_leading_zero),
        cmocka_unit_test(test_publish_answers),
        cmocka_unit_test(test_publish_errors),
        cmocka_unit_test(test_request_pipelined_behind_a_post),
        cmocka_unit_test(test_publish_reaches_a_websocket),
        cmocka_unit_test(test_user_id_is_strict),
        cmocka_unit_test(test_stats_documents),
        cmocka_unit_test(test_connections_limit),
        cmocka_unit_test(test_inbox_without_database),
    };
    const struct CMUnitTest operator[] = {
        cmocka_unit_test(test_api_token_required),
        cmocka_unit_test(test_api_token_on_publish),
        cmocka_unit_test(test_max_publish_size),
        cmocka_unit_test(test_body_memory_budget),
    };
    const struct CMUnitTest deadlines[] = {
        cmocka_unit_test(test_deadlines),
    };
    int failed = 0;

    signal(SIGPIPE, SIG_IGN);
    failed += cmocka_run_group_tests_name("defaults", defaults, defaults_setup, server_teardown);
    failed += cmocka_run_group_tests_name("operator", operator, operator_setup, server_teardown);
    failed += cmocka_run_group_tests_name("deadlines", deadlines, deadline_setup, server_teardown);
    return failed;
}
