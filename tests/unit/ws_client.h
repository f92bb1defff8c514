/*
 * ws_client.h — for the unit tests that drive the real server in-process (test_conn,
 * test_stats): the server under test on an I/O thread of its own (struct tserver), and a small
 * blocking WebSocket and HTTP client over POSIX sockets on 127.0.0.1 (struct ws).
 *
 * Every read waits with poll() against a deadline and every retry loop is bounded, so a test
 * fails with a message instead of hanging. The client sends masked frames with a fixed mask
 * and the fixed Sec-WebSocket-Key of RFC 6455's example, and checks the 101's accept value.
 * Include after <cmocka.h>; every function is static inline, so a test uses what it needs.
 */
#ifndef DEALWIRE_TEST_WS_CLIENT_H
#define DEALWIRE_TEST_WS_CLIENT_H

#include "dealwire/auth.h"
#include "dealwire/config.h"
#include "dealwire/log.h"
#include "dealwire/rcu.h"
#include "dealwire/server.h"
#include "dealwire/thread.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "test_util.h"

/* How long a test waits for something that must happen, and for something that must not. */
#define TC_WAIT_MS  10000
#define TC_QUIET_MS 200

/* RFC 6455, 1.3: this key and its accept value. */
#define TC_WS_KEY    "dGhlIHNhbXBsZSBub25jZQ=="
#define TC_WS_ACCEPT "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

#define WS_OP_CONT   0x0
#define WS_OP_TEXT   0x1
#define WS_OP_BINARY 0x2
#define WS_OP_CLOSE  0x8
#define WS_OP_PING   0x9
#define WS_OP_PONG   0xa

/* ==========================================================================================
 * Time and bytes
 */

static inline int64_t tc_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The retry pause of the bounded loops that wait for the server (never a synchronization). */
static inline void tc_pause_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* A growable byte buffer. */
struct tbuf {
    unsigned char *p;
    size_t len, cap;
};

static inline void tbuf_reserve(struct tbuf *b, size_t more)
{
    if (b->len + more <= b->cap)
        return;
    b->cap = (b->len + more) * 2 + 256;
    b->p = realloc(b->p, b->cap);
    assert_non_null(b->p);
}

static inline void tbuf_add(struct tbuf *b, const void *data, size_t len)
{
    tbuf_reserve(b, len);
    if (len)
        memcpy(b->p + b->len, data, len);
    b->len += len;
}

/* Drops the first n bytes. */
static inline void tbuf_consume(struct tbuf *b, size_t n)
{
    memmove(b->p, b->p + n, b->len - n);
    b->len -= n;
}

static inline void tbuf_free(struct tbuf *b)
{
    free(b->p);
    memset(b, 0, sizeof(*b));
}

/* ==========================================================================================
 * Sockets
 */

/* A port that was free a moment ago: bound on 127.0.0.1:0, read back, closed. */
static inline int tc_free_port(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &alen), 0);
    close(fd);
    return ntohs(a.sin_port);
}

/* Connects to 127.0.0.1:port, retrying (bounded) while nothing listens yet. */
static inline int tc_connect(int port)
{
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int one = 1, err = 0;

    for (int attempt = 0; attempt < 500; attempt++) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

        assert_true(fd >= 0);
        if (connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0) {
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
            return fd;
        }
        err = errno;
        close(fd);
        if (err != ECONNREFUSED && err != EINTR && err != EAGAIN)
            break;
        tc_pause_ms(10);
    }
    fail_msg("cannot connect to 127.0.0.1:%d: %s", port, strerror(err));
    return -1;
}

static inline void tc_send_all(int fd, const void *data, size_t len)
{
    const unsigned char *p = data;

    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            fail_msg("send: %s", strerror(errno));
        p += n;
        len -= (size_t)n;
    }
}

/* Reads what fd has into b, waiting until deadline (tc_now_ms). Returns the bytes read, 0 at
 * EOF, -ECONNRESET, or -ETIMEDOUT. */
static inline int tc_fill(int fd, struct tbuf *b, int64_t deadline)
{
    for (;;) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        int64_t left = deadline - tc_now_ms();
        int r;
        ssize_t n;

        if (left < 0)
            left = 0;
        r = poll(&pfd, 1, (int)left);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            fail_msg("poll: %s", strerror(errno));
        if (r == 0)
            return -ETIMEDOUT;
        tbuf_reserve(b, 65536);
        n = recv(fd, b->p + b->len, 65536, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        b->len += (size_t)n;
        return (int)n;
    }
}

/* ==========================================================================================
 * The server under test, on a thread of its own (it becomes the I/O thread)
 */

struct tserver {
    struct dw_config cfg;
    struct dw_auth *auth;
    struct dw_server *srv;
    int port;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int started;  /* under lock: 1 serving, -1 dw_server_new failed */
    bool stopped; /* under lock: dw_server_stop returned, the I/O thread may free the server */
    int run_rc;   /* dw_server_run's result, read after the join */
    bool joined;  /* tserver_join is done: nothing left to free */
};

/* The I/O thread: as main.c runs it, but the server is freed only once the test thread's
 * dw_server_stop() has returned (main.c joins its signal thread first for the same reason:
 * dw_server_stop() wakes the loop after setting the flag the loop may already have seen). */
static inline void *tserver_main(void *arg)
{
    struct tserver *ts = arg;
    struct dw_server *srv;

    dw_thread_set_role(DW_THREAD_IO);
    dw_rcu_register();
    srv = dw_server_new(&ts->cfg, ts->auth);
    pthread_mutex_lock(&ts->lock);
    ts->srv = srv;
    ts->started = srv ? 1 : -1;
    pthread_cond_broadcast(&ts->cond);
    pthread_mutex_unlock(&ts->lock);
    if (srv) {
        int rc = dw_server_run(srv);

        pthread_mutex_lock(&ts->lock);
        while (!ts->stopped)
            pthread_cond_wait(&ts->cond, &ts->lock);
        pthread_mutex_unlock(&ts->lock);
        ts->run_rc = rc;
        dw_server_free(srv);
    }
    dw_rcu_unregister();
    return NULL;
}

/* Starts a server on 127.0.0.1 and a free port, with one worker, errors-only logging, a
 * 1 s shutdown timeout, and then the flags given (a NULL-terminated list of strings, which
 * win over those). Tries a few ports, in case another process takes the free one first. */
static inline void tserver_start(struct tserver *ts, ...)
{
    char *argv[64], port[16];
    char *envp[] = {NULL};
    int argc;

    for (int attempt = 0; attempt < 5; attempt++) {
        va_list ap;
        const char *flag;

        memset(ts, 0, sizeof(*ts));
        ts->port = tc_free_port();
        snprintf(port, sizeof(port), "%d", ts->port);
        argc = 0;
        argv[argc++] = (char *)"dealwire";
        argv[argc++] = (char *)"--host";
        argv[argc++] = (char *)"127.0.0.1";
        argv[argc++] = (char *)"--port";
        argv[argc++] = port;
        argv[argc++] = (char *)"--workers";
        argv[argc++] = (char *)"1";
        argv[argc++] = (char *)"--log-level";
        argv[argc++] = (char *)"error";
        argv[argc++] = (char *)"--shutdown-timeout";
        argv[argc++] = (char *)"1000";
        va_start(ap, ts);
        while ((flag = va_arg(ap, const char *)) != NULL) {
            assert_true(argc < 63);
            argv[argc++] = (char *)flag;
        }
        va_end(ap);
        argv[argc] = NULL;
        assert_int_equal(dw_config_load(&ts->cfg, argc, argv, envp, stdout, stderr), 0);
        dw_log_set_level((enum dw_log_level)ts->cfg.log_level);
        ts->auth = dw_auth_new(&ts->cfg, stderr);
        assert_non_null(ts->auth);
        pthread_mutex_init(&ts->lock, NULL);
        pthread_cond_init(&ts->cond, NULL);
        assert_int_equal(pthread_create(&ts->thread, NULL, tserver_main, ts), 0);
        pthread_mutex_lock(&ts->lock);
        while (ts->started == 0)
            pthread_cond_wait(&ts->cond, &ts->lock);
        pthread_mutex_unlock(&ts->lock);
        if (ts->started > 0)
            return;
        pthread_join(ts->thread, NULL);
        pthread_cond_destroy(&ts->cond);
        pthread_mutex_destroy(&ts->lock);
        dw_auth_free(ts->auth);
        dw_config_destroy(&ts->cfg);
    }
    fail_msg("the server did not start");
}

/* Asks the server to stop (dw_server_stop, the graceful shutdown: close 1001 to every client
 * still connected), without waiting. */
static inline void tserver_stop_begin(struct tserver *ts)
{
    if (ts->stopped) /* read by this thread only once set: it is this thread's write */
        return;
    dw_server_stop(ts->srv);
    pthread_mutex_lock(&ts->lock);
    ts->stopped = true;
    pthread_cond_broadcast(&ts->cond);
    pthread_mutex_unlock(&ts->lock);
}

/* Waits for the I/O thread's end and frees what tserver_start made. */
static inline void tserver_join(struct tserver *ts)
{
    pthread_join(ts->thread, NULL);
    ts->joined = true;
    assert_int_equal(ts->run_rc, 0);
    pthread_cond_destroy(&ts->cond);
    pthread_mutex_destroy(&ts->lock);
    dw_auth_free(ts->auth);
    dw_config_destroy(&ts->cfg);
}

static inline void tserver_stop(struct tserver *ts)
{
    tserver_stop_begin(ts);
    tserver_join(ts);
}

/* cmocka group setup: the test thread is the main thread, and a write to a socket the server
 * closed returns EPIPE instead of killing the test. */
static inline int tserver_group_setup(void **state)
{
    (void)state;
    dw_thread_set_role(DW_THREAD_MAIN);
    signal(SIGPIPE, SIG_IGN);
    return 0;
}

/* cmocka fixtures: a struct tserver in *state, which each test starts with its own flags,
 * and which teardown stops if the test did not (a failed test). */
static inline int tserver_setup(void **state)
{
    *state = calloc(1, sizeof(struct tserver));
    return *state ? 0 : -1;
}

static inline int tserver_teardown(void **state)
{
    struct tserver *ts = *state;

    if (ts->started > 0 && !ts->joined)
        tserver_stop(ts);
    free(ts);
    return 0;
}

/* ==========================================================================================
 * JSON assertions
 */

/* The member key of obj, which must be there. */
static inline struct json_object *tj_get(struct json_object *obj, const char *key)
{
    struct json_object *v = NULL;

    if (!json_object_is_type(obj, json_type_object) || !json_object_object_get_ex(obj, key, &v))
        fail_msg("no \"%s\" in %s", key, json_object_to_json_string(obj));
    return v;
}

static inline const char *tj_str(struct json_object *obj, const char *key)
{
    struct json_object *v = tj_get(obj, key);

    if (!json_object_is_type(v, json_type_string))
        fail_msg("\"%s\" is not a string in %s", key, json_object_to_json_string(obj));
    return json_object_get_string(v);
}

static inline int64_t tj_int(struct json_object *obj, const char *key)
{
    struct json_object *v = tj_get(obj, key);

    if (!json_object_is_type(v, json_type_int))
        fail_msg("\"%s\" is not an integer in %s", key, json_object_to_json_string(obj));
    return json_object_get_int64(v);
}

static inline double tj_double(struct json_object *obj, const char *key)
{
    struct json_object *v = tj_get(obj, key);

    if (!json_object_is_type(v, json_type_double) && !json_object_is_type(v, json_type_int))
        fail_msg("\"%s\" is not a number in %s", key, json_object_to_json_string(obj));
    return json_object_get_double(v);
}

static inline bool tj_bool(struct json_object *obj, const char *key)
{
    struct json_object *v = tj_get(obj, key);

    if (!json_object_is_type(v, json_type_boolean))
        fail_msg("\"%s\" is not a boolean in %s", key, json_object_to_json_string(obj));
    return json_object_get_boolean(v);
}

static inline struct json_object *tj_array(struct json_object *obj, const char *key)
{
    struct json_object *v = tj_get(obj, key);

    if (!json_object_is_type(v, json_type_array))
        fail_msg("\"%s\" is not an array in %s", key, json_object_to_json_string(obj));
    return v;
}

/* obj has exactly the keys listed (a NULL-terminated list), in any order. */
static inline void tj_assert_keys(struct json_object *obj, ...)
{
    va_list ap;
    const char *key;
    int n = 0;

    assert_true(json_object_is_type(obj, json_type_object));
    va_start(ap, obj);
    while ((key = va_arg(ap, const char *)) != NULL) {
        if (!json_object_object_get_ex(obj, key, NULL))
            fail_msg("no \"%s\" in %s", key, json_object_to_json_string(obj));
        n++;
    }
    va_end(ap);
    if (json_object_object_length(obj) != n)
        fail_msg("%d keys expected in %s", n, json_object_to_json_string(obj));
}

/* Does the array arr hold the string s? */
static inline bool tj_array_has(struct json_object *arr, const char *s)
{
    for (size_t i = 0; i < json_object_array_length(arr); i++) {
        struct json_object *v = json_object_array_get_idx(arr, i);

        if (json_object_is_type(v, json_type_string) && strcmp(json_object_get_string(v), s) == 0)
            return true;
    }
    return false;
}

/* ==========================================================================================
 * HTTP
 */

struct http_resp {
    int status;
    char *head; /* status line and headers, NUL-terminated */
    char *body; /* NUL-terminated */
    size_t body_len;
};

static inline void http_resp_free(struct http_resp *r)
{
    free(r->head);
    free(r->body);
    memset(r, 0, sizeof(*r));
}

/* Copies the value of header name (case-insensitive) into out; false when absent. */
static inline bool http_header(const struct http_resp *r, const char *name, char *out,
                               size_t out_len)
{
    size_t nlen = strlen(name);

    for (const char *line = strstr(r->head, "\r\n"); line; line = strstr(line + 2, "\r\n")) {
        const char *v = line + 2, *end;

        if (strncasecmp(v, name, nlen) != 0 || v[nlen] != ':')
            continue;
        v += nlen + 1;
        while (*v == ' ')
            v++;
        end = strstr(v, "\r\n");
        if (!end)
            end = v + strlen(v);
        snprintf(out, out_len, "%.*s", (int)(end - v), v);
        return true;
    }
    return false;
}

/* Reads one HTTP response from fd, the bytes already read in b first; what follows it stays
 * in b. The body is read by Content-Length (every answer of the server has one). */
static inline void http_read_response(int fd, struct tbuf *b, struct http_resp *r)
{
    int64_t deadline = tc_now_ms() + TC_WAIT_MS;
    unsigned char *end = NULL;
    size_t head_len;
    char clen[32];

    memset(r, 0, sizeof(*r));
    for (;;) {
        int n;

        for (size_t i = 0; i + 4 <= b->len && !end; i++) {
            if (memcmp(b->p + i, "\r\n\r\n", 4) == 0)
                end = b->p + i;
        }
        if (end)
            break;
        n = tc_fill(fd, b, deadline);
        if (n <= 0)
            fail_msg("no complete HTTP response (%d) after %zu bytes", n, b->len);
    }
    head_len = (size_t)(end - b->p);
    r->head = malloc(head_len + 1);
    assert_non_null(r->head);
    memcpy(r->head, b->p, head_len);
    r->head[head_len] = '\0';
    tbuf_consume(b, head_len + 4);
    r->status = http_status_code(r->head);
    if (r->status < 0)
        fail_msg("not an HTTP/1.1 status line: %s", r->head);
    r->body_len = 0;
    if (http_header(r, "content-length", clen, sizeof(clen)))
        r->body_len = strtoul(clen, NULL, 10);
    while (b->len < r->body_len) {
        int n = tc_fill(fd, b, deadline);

        if (n <= 0)
            fail_msg("HTTP body cut at %zu of %zu bytes", b->len, r->body_len);
    }
    r->body = malloc(r->body_len + 1);
    assert_non_null(r->body);
    memcpy(r->body, b->p, r->body_len);
    r->body[r->body_len] = '\0';
    tbuf_consume(b, r->body_len);
}

/* One request on a connection of its own; returns the status. body may be NULL. */
static inline int http_request(int port, const char *method, const char *path, const char *body,
                               struct http_resp *r)
{
    struct tbuf out = {0}, in = {0};
    char head[1024];
    int fd = tc_connect(port);
    int n;

    if (body)
        n = snprintf(head, sizeof(head),
                     "%s %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/json\r\n"
                     "Content-Length: %zu\r\n\r\n",
                     method, path, port, strlen(body));
    else
        n = snprintf(head, sizeof(head), "%s %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n", method,
                     path, port);
    assert_true(n > 0 && (size_t)n < sizeof(head));
    tbuf_add(&out, head, (size_t)n);
    if (body)
        tbuf_add(&out, body, strlen(body));
    tc_send_all(fd, out.p, out.len);
    http_read_response(fd, &in, r);
    close(fd);
    tbuf_free(&out);
    tbuf_free(&in);
    return r->status;
}

/* GET path, which must answer status with a JSON object; returns it (the caller puts it). */
static inline struct json_object *http_get_json(int port, const char *path, int status)
{
    struct http_resp r;
    struct json_object *obj;
    char type[64];

    http_request(port, "GET", path, NULL, &r);
    if (r.status != status)
        fail_msg("GET %s: %d %s, want %d", path, r.status, r.body, status);
    assert_true(http_header(&r, "content-type", type, sizeof(type)));
    assert_string_equal(type, "application/json");
    obj = json_tokener_parse(r.body);
    if (!json_object_is_type(obj, json_type_object))
        fail_msg("GET %s: not a JSON object: %s", path, r.body);
    http_resp_free(&r);
    return obj;
}

/* POST /api/publish body, which must answer 200; returns its "recipients". */
static inline int64_t http_publish(int port, const char *body)
{
    struct http_resp r;
    struct json_object *obj;
    int64_t n;

    http_request(port, "POST", "/api/publish", body, &r);
    if (r.status != 200)
        fail_msg("publish %s: %d %s", body, r.status, r.body);
    obj = json_tokener_parse(r.body);
    n = tj_int(obj, "recipients");
    json_object_put(obj);
    http_resp_free(&r);
    return n;
}

/* Waits (bounded) until GET /healthz counts n WebSocket connections: a client's close is
 * seen by the server a little after the client has seen its end of it. */
static inline void tserver_wait_connections(struct tserver *ts, int64_t n)
{
    int64_t deadline = tc_now_ms() + TC_WAIT_MS, got;

    for (;;) {
        struct json_object *h = http_get_json(ts->port, "/healthz", 200);

        got = tj_int(h, "connections");
        json_object_put(h);
        if (got == n)
            return;
        if (tc_now_ms() > deadline)
            fail_msg("%lld connections, want %lld", (long long)got, (long long)n);
        tc_pause_ms(5);
    }
}

/* ==========================================================================================
 * WebSocket
 */

struct ws {
    int fd;
    struct tbuf in; /* read and not yet taken */
};

struct ws_frame {
    bool fin;
    int opcode;
    unsigned char *data; /* malloc'd, NUL-terminated */
    size_t len;
};

static inline void ws_frame_free(struct ws_frame *f)
{
    free(f->data);
    memset(f, 0, sizeof(*f));
}

/* Connects c and sends the upgrade GET target (path and query) with extra_headers ("" or
 * lines ending in \r\n); ws_upgrade_read reads the answer. Split so that a test can send
 * many upgrades before it reads any answer. */
static inline void ws_upgrade_send(struct ws *c, int port, const char *target,
                                   const char *extra_headers)
{
    char req[2048];
    int n;

    memset(c, 0, sizeof(*c));
    c->fd = tc_connect(port);
    n = snprintf(req, sizeof(req),
                 "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
                 "Connection: Upgrade\r\nSec-WebSocket-Key: " TC_WS_KEY "\r\n"
                 "Sec-WebSocket-Version: 13\r\n%s\r\n",
                 target, port, extra_headers);
    assert_true(n > 0 && (size_t)n < sizeof(req));
    tc_send_all(c->fd, req, (size_t)n);
}

/* Reads the answer to the upgrade into r. On 101, checks the accept value and leaves c open
 * (r freed); otherwise closes c and leaves the refusal in r for the caller (to free).
 * Returns the status. */
static inline int ws_upgrade_read(struct ws *c, struct http_resp *r)
{
    char accept[64];

    http_read_response(c->fd, &c->in, r);
    if (r->status != 101) {
        close(c->fd);
        c->fd = -1;
        tbuf_free(&c->in);
        return r->status;
    }
    assert_true(http_header(r, "sec-websocket-accept", accept, sizeof(accept)));
    assert_string_equal(accept, TC_WS_ACCEPT);
    http_resp_free(r);
    return 101;
}

static inline int ws_upgrade(struct ws *c, int port, const char *target, const char *extra_headers,
                             struct http_resp *r)
{
    ws_upgrade_send(c, port, target, extra_headers);
    return ws_upgrade_read(c, r);
}

/* Reads the next frame into f (free it with ws_frame_free). Returns 0, -ETIMEDOUT after
 * timeout_ms, -EPIPE at EOF, or -ECONNRESET. */
static inline int ws_recv_frame(struct ws *c, int timeout_ms, struct ws_frame *f)
{
    int64_t deadline = tc_now_ms() + timeout_ms;
    size_t hdr = 2, len = 0;

    memset(f, 0, sizeof(*f));
    for (;;) {
        int n;

        if (c->in.len >= 2) {
            unsigned char b1 = c->in.p[1];

            if (b1 & 0x80)
                fail_msg("a server frame is masked (RFC 6455, 5.1)");
            len = b1 & 0x7f;
            hdr = 2 + (len == 126 ? 2 : len == 127 ? 8 : 0);
            if (c->in.len >= hdr) {
                if (len == 126)
                    len = (size_t)c->in.p[2] << 8 | c->in.p[3];
                else if (len == 127) {
                    len = 0;
                    for (int i = 0; i < 8; i++)
                        len = len << 8 | c->in.p[2 + i];
                }
                if (c->in.len >= hdr + len)
                    break;
            }
        }
        n = tc_fill(c->fd, &c->in, deadline);
        if (n == 0)
            return -EPIPE;
        if (n < 0)
            return n;
    }
    f->fin = (c->in.p[0] & 0x80) != 0;
    f->opcode = c->in.p[0] & 0x0f;
    f->len = len;
    f->data = malloc(len + 1);
    assert_non_null(f->data);
    memcpy(f->data, c->in.p + hdr, len);
    f->data[len] = '\0';
    tbuf_consume(&c->in, hdr + len);
    return 0;
}

/* Appends one masked client frame to b. */
static inline void ws_frame_build(struct tbuf *b, bool fin, int opcode, const void *payload,
                                  size_t len)
{
    static const unsigned char mask[4] = {0x37, 0xfa, 0x21, 0x3d};
    unsigned char hdr[14];
    size_t h = 0;

    hdr[h++] = (unsigned char)((fin ? 0x80 : 0) | opcode);
    if (len < 126) {
        hdr[h++] = (unsigned char)(0x80 | len);
    } else if (len <= 0xffff) {
        hdr[h++] = 0x80 | 126;
        hdr[h++] = (unsigned char)(len >> 8);
        hdr[h++] = (unsigned char)len;
    } else {
        hdr[h++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--)
            hdr[h++] = (unsigned char)((uint64_t)len >> (8 * i));
    }
    memcpy(hdr + h, mask, 4);
    h += 4;
    tbuf_add(b, hdr, h);
    tbuf_reserve(b, len);
    for (size_t i = 0; i < len; i++)
        b->p[b->len + i] = ((const unsigned char *)payload)[i] ^ mask[i % 4];
    b->len += len;
}

static inline void ws_send_frame(struct ws *c, bool fin, int opcode, const void *payload,
                                 size_t len)
{
    struct tbuf b = {0};

    ws_frame_build(&b, fin, opcode, payload, len);
    tc_send_all(c->fd, b.p, b.len);
    tbuf_free(&b);
}

static inline void ws_send_text(struct ws *c, const char *text)
{
    ws_send_frame(c, true, WS_OP_TEXT, text, strlen(text));
}

static inline void ws_send_close(struct ws *c, int code, const char *reason)
{
    unsigned char p[125];
    size_t n = strlen(reason);

    assert_true(n + 2 <= sizeof(p));
    p[0] = (unsigned char)(code >> 8);
    p[1] = (unsigned char)code;
    /* p is a close frame's payload (the code, then the reason's bytes), not a string.
     * NOLINTNEXTLINE(bugprone-not-null-terminated-result) */
    memcpy(p + 2, reason, n);
    ws_send_frame(c, true, WS_OP_CLOSE, p, n + 2);
}

/* The code of a close frame, -1 when it has none. */
static inline int ws_close_code(const struct ws_frame *f)
{
    return f->len >= 2 ? f->data[0] << 8 | f->data[1] : -1;
}

/* The next frame, which must be a whole text frame holding a JSON object; returns it. */
static inline struct json_object *ws_recv_json(struct ws *c)
{
    struct ws_frame f;
    struct json_object *obj;
    int r = ws_recv_frame(c, TC_WAIT_MS, &f);

    if (r != 0)
        fail_msg("no frame: %s", strerror(-r));
    if (f.opcode != WS_OP_TEXT || !f.fin)
        fail_msg("frame opcode %d fin %d (%.*s), want a whole text frame", f.opcode, f.fin,
                 (int)(f.len > 2 ? f.len - 2 : 0), f.len > 2 ? (char *)f.data + 2 : "");
    obj = json_tokener_parse((const char *)f.data);
    if (!json_object_is_type(obj, json_type_object))
        fail_msg("not a JSON object: %s", f.data);
    ws_frame_free(&f);
    return obj;
}

/* Sends text and returns the reply (a JSON object the caller puts). */
static inline struct json_object *ws_request(struct ws *c, const char *text)
{
    ws_send_text(c, text);
    return ws_recv_json(c);
}

/* Nothing arrives for a short while. */
static inline void ws_expect_quiet(struct ws *c)
{
    struct ws_frame f;
    int r = ws_recv_frame(c, TC_QUIET_MS, &f);

    if (r == 0)
        fail_msg("unexpected frame, opcode %d: %s", f.opcode, f.data);
    assert_int_equal(r, -ETIMEDOUT);
}

/* The server ends the TCP connection (EOF or reset) with nothing more before it. */
static inline void ws_expect_eof(struct ws *c)
{
    struct ws_frame f;
    int r = ws_recv_frame(c, TC_WAIT_MS, &f);

    if (r == 0)
        fail_msg("a frame after the close, opcode %d: %s", f.opcode, f.data);
    if (r != -EPIPE && r != -ECONNRESET)
        fail_msg("the connection did not end: %s", strerror(-r));
}

/* The next frame is a close with code and reason (any reason when NULL); answers it as RFC 6455
 * asks, and sees the TCP connection end. */
static inline void ws_expect_close(struct ws *c, int code, const char *reason)
{
    struct ws_frame f;
    int r = ws_recv_frame(c, TC_WAIT_MS, &f);

    if (r != 0)
        fail_msg("no close frame: %s", strerror(-r));
    if (f.opcode != WS_OP_CLOSE)
        fail_msg("opcode %d (%s), want a close", f.opcode, f.data);
    assert_int_equal(ws_close_code(&f), code);
    if (reason)
        assert_string_equal((const char *)f.data + 2, reason);
    ws_frame_free(&f);
    ws_send_close(c, code, "");
    ws_expect_eof(c);
}

/* Sends the upgrade of a WebSocket of user_id; ws_open_finish completes it. */
static inline void ws_open_send(struct ws *c, int port, const char *user_id)
{
    char target[256];

    snprintf(target, sizeof(target), "/ws/events?user_id=%s", user_id);
    ws_upgrade_send(c, port, target, "");
}

/* Reads the 101 and the connection_established of user_id's WebSocket c, and copies its
 * connection_id into conn_id (24 bytes) unless NULL. */
static inline void ws_open_finish(struct ws *c, const char *user_id, char *conn_id)
{
    struct http_resp r;
    struct json_object *hello;
    int status = ws_upgrade_read(c, &r);

    if (status != 101)
        fail_msg("upgrade of %s: %d %s", user_id, status, r.body);
    hello = ws_recv_json(c);
    assert_string_equal(tj_str(hello, "type"), "connection_established");
    assert_string_equal(tj_str(hello, "user_id"), user_id);
    if (conn_id)
        snprintf(conn_id, 24, "%s", tj_str(hello, "connection_id"));
    json_object_put(hello);
}

/* Opens a WebSocket of user_id (ws_open_finish says what is checked). */
static inline void ws_open(struct ws *c, int port, const char *user_id, char *conn_id)
{
    ws_open_send(c, port, user_id);
    ws_open_finish(c, user_id, conn_id);
}

/* Closes the socket at once, without a closing handshake, and frees c's buffer. */
static inline void ws_drop(struct ws *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    tbuf_free(&c->in);
}

/* The client's close: close 1000, then the server's close frame (frames still queued before
 * it are skipped) and the end of the TCP connection. */
static inline void ws_close(struct ws *c)
{
    int64_t deadline = tc_now_ms() + TC_WAIT_MS;

    ws_send_close(c, 1000, "bye");
    for (;;) {
        struct ws_frame f;
        int r = ws_recv_frame(c, (int)(deadline - tc_now_ms()), &f);
        int op = f.opcode, code = r == 0 ? ws_close_code(&f) : 0;

        if (r != 0)
            fail_msg("no close frame in answer: %s", strerror(-r));
        ws_frame_free(&f);
        if (op == WS_OP_CLOSE) {
            assert_int_equal(code, 1000);
            break;
        }
    }
    ws_expect_eof(c);
    ws_drop(c);
}

#endif
