/*
 * http — DESIGN: the HTTP API on the WebSocket port, on the I/O thread.
 *
 * GET endpoints are answered at once from the I/O thread's own state (it owns the per-
 * connection statistics). POST /api/publish and POST /api/ai/trip/plan collect their body,
 * then, after the pass of the event loop that completed it, hand it to a worker as a
 * refcounted request (the requests of one pass go together); the worker publishes (or plans
 * the trip, planner.h), writes the answer into the request and puts it on the done queue
 * (MPSC) with one wake-up. The I/O thread then writes the answer as it drains that queue, if
 * the client is still there. The I/O thread never parses a publish's body, fans out or waits
 * on the database.
 * The operator's POSTs on a user (/api/websocket/users/<id>/disconnect, subscribe,
 * unsubscribe: operator.c) are the exception: they act on connections, which the I/O thread
 * owns, so their small body (DW_OPERATOR_BODY_MAX) is parsed and acted on here, as soon as it
 * is read, and answered at once like a GET.
 *
 * Pipelining (HTTP/1.1 requests sent before the previous answer): a request behind a POST
 * waits, unread or unparsed, until the POST's answer is written (rx flow control, ours and,
 * in dealwire's build of lws, lws's own: cmake/lws/01-h1-pipelining.patch), then lws parses
 * it from what it had read. So requests are answered one after another, in order, and a
 * client that sends faster than it reads is held by its socket, never buffered here without
 * bound. With Debian's lws (DW_LWS=system) a POST with a request already read behind it is
 * refused instead (refuse_pipelined).
 * GET /api/websocket/users/<id>/inbox is the one GET that reads the database: its URL is
 * checked here, then it goes to a worker at once (it has no body to wait for) and comes back
 * through the done queue like a POST; requests behind it wait in the socket the same way.
 *
 * Framing is checked before anything else (check_framing): a body is read by one plain
 * Content-Length only; Transfer-Encoding, a signed or repeated length get an error and a
 * closed connection, since a proxy in front might frame the same bytes differently (request
 * smuggling). Bodies being read or worked on share one budget, --max-body-memory (503 past
 * it), and each step of a request has a deadline (server.c, dw__sock_arm).
 *
 * A response goes out as two writes, headers then body, so it is correct for HTTP/1.1 and
 * HTTP/2 alike; both go in one WRITEABLE callback unless the headers were only partly sent.
 *
 * The dashboard (web.h: GET / and the files it loads) takes the same path: a copy of the
 * embedded file is the answer body, with its own Content-Type and headers that keep the page
 * to its own scripts and styles (PAGE_CSP). It needs no operator token, like /healthz: it is
 * public static text, and what it does with a connection is what any WebSocket client may do.
 * HEAD is answered for these paths only, with the headers of GET; an answer to HEAD never has
 * a body (a 404 or 405 included), so that a keep-alive connection stays in step.
 */
#define DW_LOG_MODULE "http"
#include "server_int.h"
#include "dealwire/answer.h"
#include "dealwire/bus.h"
#include "dealwire/db.h"
#include "dealwire/publish.h"
#include "dealwire/log.h"
#include "dealwire/mem.h"
#include "dealwire/metrics.h"
#include "dealwire/planner.h"
#include "dealwire/proto.h"
#include "dealwire/retention.h"
#include "dealwire/store.h"
#include "dealwire/thread.h"
#include "dealwire/web.h"
#include "dealwire/worker.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#define API_PREFIX   "/api/websocket/"
#define USERS_PREFIX "/api/websocket/users/"
#define PLAN_PATH    "/api/ai/trip/plan"
#define INBOX_SUFFIX "/inbox"
#define METRICS_PATH "/metrics"

/* The dashboard's policy: its own files only, WebSockets to any host (CSP's 'self' does not
 * cover ws: and wss: in every browser), no plugins, no framing, no <base>, no form posts. */
#define PAGE_CSP                                                                                   \
    "default-src 'self'; connect-src 'self' ws: wss:; object-src 'none'; base-uri 'none'; "        \
    "form-action 'none'; frame-ancestors 'none'"

enum req_state {
    REQ_READING, /* collecting the body */
    REQ_READY,   /* body complete: goes to a worker after this pass (dw__http_submit_ready) */
    REQ_WORKING, /* on a worker */
    REQ_FENCED,  /* an operator's answer set, sent once Redis has the action (answer_operator) */
    REQ_HEADERS, /* answer ready: headers next */
    REQ_BODY,    /* headers sent: body next */
};

struct dw_http_req {
    _Atomic unsigned refs; /* the I/O thread's (while the connection lives) + a worker's */
    struct cds_wfcq_node done_node;
    struct dw_server *srv;
    struct lws *wsi; /* io only; NULL once the connection closed */
    enum req_state state;
    char *body;
    size_t body_len, body_max;
    bool too_large;
    bool close_after;
    dw_job_fn *job; /* what a worker does: publish_job or plan_job with the body, inbox_job */
    unsigned status;
    unsigned char *resp; /* LWS_PRE bytes of headroom, then resp_len bytes */
    size_t resp_len;
    const struct dw_web_file *page; /* a dashboard file: its type and headers, not JSON's */
    const char *content_type;       /* another answer's type than JSON's (/metrics), or NULL */
    bool head_only;                 /* an answer to HEAD: the headers, no body */
    const char *allow;              /* a 405's Allow header (RFC 9110 15.5.6), or NULL */
    struct dw_http_req *next_ready; /* io only: in srv->ready_reqs */
    /* GET .../users/<id>/inbox: what inbox_job reads, set before it is submitted; and the
     * user of an operator POST (.../users/<id>/disconnect: operator.c). */
    char user_id[DW_USER_ID_MAX + 1];
    enum dw_operator_action action; /* an operator POST, answered on the I/O thread */
    int64_t after;                  /* < 0: the user's acked_seq */
    unsigned limit;
};

static struct dw_http_req *req_new(struct dw_server *srv, struct lws *wsi)
{
    struct dw_http_req *req = dw_xcalloc(1, sizeof(*req));

    atomic_init(&req->refs, 1);
    req->srv = srv;
    req->wsi = wsi;
    return req;
}

void dw__body_release(struct dw_server *srv, char *body, size_t n)
{
    free(body);
    atomic_fetch_sub_explicit(&srv->body_bytes, n, memory_order_relaxed);
}

/* thread: any. Frees req's body, if it still has one (dw__body_release). */
static void free_body(struct dw_http_req *req)
{
    if (!req->body)
        return;
    dw__body_release(req->srv, req->body, req->body_max);
    req->body = NULL;
}

static void req_unref(struct dw_http_req *req)
{
    if (atomic_fetch_sub_explicit(&req->refs, 1, memory_order_acq_rel) != 1)
        return;
    free_body(req);
    free(req->resp);
    free(req);
}

bool dw__body_reserve(struct dw_server *srv, size_t n)
{
    size_t held = atomic_fetch_add_explicit(&srv->body_bytes, n, memory_order_relaxed);

    if (held + n <= (size_t)srv->cfg->max_body_memory)
        return true;
    atomic_fetch_sub_explicit(&srv->body_bytes, n, memory_order_relaxed);
    return false;
}

/* Copies data (len bytes, borrowed for the duration of the call) as the answer body. */
static void copy_answer(struct dw_http_req *req, unsigned status, const void *data, size_t len)
{
    free(req->resp);
    req->resp = dw_xmalloc(LWS_PRE + len);
    memcpy(req->resp + LWS_PRE, data, len);
    req->resp_len = len;
    req->status = status;
}

/* Takes ownership of text (len bytes) as the answer body. */
static void set_answer(struct dw_http_req *req, unsigned status, char *text, size_t len)
{
    copy_answer(req, status, text, len);
    free(text);
}

/* The request of the current HTTP transaction, made for an answer given at once. */
static struct dw_http_req *req_of(struct dw_pss *pss, struct lws *wsi)
{
    if (!pss->req)
        pss->req = req_new(NULL, wsi);
    return pss->req;
}

static bool method_is(struct lws *wsi, enum lws_token_indexes token)
{
    return lws_hdr_total_length(wsi, token) > 0;
}

/* Sends the answer set in req on the next WRITEABLE callbacks: all of it, or for HEAD the
 * headers only. */
static int send_answer(struct dw_http_req *req, struct lws *wsi)
{
    req->head_only = method_is(wsi, WSI_TOKEN_HEAD_URI);
    req->state = REQ_HEADERS;
    lws_callback_on_writable(wsi);
    return 0;
}

/* Answers now (I/O thread): the answer goes out on the next WRITEABLE callbacks. */
static int respond(struct dw_pss *pss, struct lws *wsi, unsigned status, char *text, size_t len)
{
    struct dw_http_req *req = req_of(pss, wsi);

    set_answer(req, status, text, len);
    return send_answer(req, wsi);
}

/* Answers GET or HEAD of a dashboard file. */
static int respond_page(struct dw_pss *pss, struct lws *wsi, const struct dw_web_file *page)
{
    struct dw_http_req *req = req_of(pss, wsi);

    copy_answer(req, HTTP_STATUS_OK, page->data, page->len);
    req->page = page;
    return send_answer(req, wsi);
}

static int respond_json(struct dw_pss *pss, struct lws *wsi, unsigned status,
                        struct json_object *obj)
{
    size_t len;
    char *text = dw_answer_json(obj, &len);

    return respond(pss, wsi, status, text, len);
}

static int respond_error(struct dw_pss *pss, struct lws *wsi, unsigned status, const char *message)
{
    size_t len;
    char *text = dw_answer_error(message, NULL, &len);

    return respond(pss, wsi, status, text, len);
}

/* 405 with the Allow header naming the methods the path takes. */
static int respond_not_allowed(struct dw_pss *pss, struct lws *wsi, const char *allow,
                               const char *message)
{
    req_of(pss, wsi)->allow = allow;
    return respond_error(pss, wsi, HTTP_STATUS_METHOD_NOT_ALLOWED, message);
}

/* ?limit=N: 1 to 9 decimal digits, at most max; dflt when it is absent or anything else
 * ("-1", " 1", "abc", 0). Every argument is looked at, so a long one before it cannot hide it
 * (lws_get_urlarg_by_name stops at the first argument its buffer cannot hold). */
static unsigned url_limit(struct lws *wsi, unsigned dflt, unsigned max)
{
    static const char name[] = "limit=";
    const size_t name_len = sizeof(name) - 1;
    char arg[32];
    unsigned long n = 0;
    size_t digits;

    for (int i = 0;; i++) {
        int len = lws_hdr_fragment_length(wsi, WSI_TOKEN_HTTP_URI_ARGS, i);

        if (len <= 0) {
            /* past the last argument, or an empty one ("?a=1&&limit=2") */
            if (lws_hdr_copy_fragment(wsi, arg, (int)sizeof(arg), WSI_TOKEN_HTTP_URI_ARGS, i) < 0)
                return dflt;
            continue;
        }
        if ((size_t)len >= sizeof(arg))
            continue; /* longer than any limit= argument can be */
        if (lws_hdr_copy_fragment(wsi, arg, (int)sizeof(arg), WSI_TOKEN_HTTP_URI_ARGS, i) < 0)
            return dflt;
        if (strncmp(arg, name, name_len) == 0)
            break;
    }
    digits = strspn(arg + name_len, "0123456789");
    if (digits == 0 || digits > 9 || arg[name_len + digits] != '\0')
        return dflt;
    n = strtoul(arg + name_len, NULL, 10);
    if (n == 0)
        return dflt;
    return n > max ? max : (unsigned)n;
}

/* The value of the URL argument name ("after" for "?after=5") into out (size bytes, with its
 * NUL): 1 when it is there, 0 when not, -1 when its value does not fit in out. The first of
 * repeated ones counts. Every argument is looked at, like url_limit does. */
static int url_arg(struct lws *wsi, const char *name, char *out, size_t size)
{
    size_t name_len = strlen(name);

    for (int i = 0;; i++) {
        int len = lws_hdr_fragment_length(wsi, WSI_TOKEN_HTTP_URI_ARGS, i);
        char *arg;
        int r = 0;

        if (len <= 0) {
            /* past the last argument, or an empty one */
            if (lws_hdr_copy_fragment(wsi, out, (int)size, WSI_TOKEN_HTTP_URI_ARGS, i) < 0)
                return 0;
            continue;
        }
        arg = dw_xmalloc((size_t)len + 1);
        if (lws_hdr_copy_fragment(wsi, arg, len + 1, WSI_TOKEN_HTTP_URI_ARGS, i) < 0) {
            free(arg);
            return 0;
        }
        if (strncmp(arg, name, name_len) == 0 && arg[name_len] == '=') {
            const char *value = arg + name_len + 1;
            size_t n = strlen(value);

            r = n < size ? 1 : -1;
            if (r == 1)
                memcpy(out, value, n + 1);
        }
        free(arg);
        if (r != 0)
            return r;
    }
}

/* Parses s, max_digits decimal digits at most and nothing else, into *out within [min, max].
 * Returns 0, or -EINVAL. */
static int parse_uint_arg(const char *s, size_t max_digits, long long min, long long max,
                          long long *out)
{
    size_t digits = strspn(s, "0123456789");
    long long v;

    if (digits == 0 || digits > max_digits || s[digits] != '\0')
        return -EINVAL;
    v = strtoll(s, NULL, 10);
    if (v < min || v > max)
        return -EINVAL;
    *out = v;
    return 0;
}

/* The dashboard file served at path, or NULL. */
static const struct dw_web_file *find_page(const char *path)
{
    for (size_t i = 0; i < dw_web_file_count; i++) {
        if (strcmp(path, dw_web_files[i].path) == 0)
            return &dw_web_files[i];
    }
    return NULL;
}

/* GET /readyz: 200 when the daemon can do all its work (serving, and the database reachable
 * with its schema up to date when one is configured), else 503 saying what is missing. */
static int get_readyz(struct dw_server *srv, struct lws *wsi, struct dw_pss *pss, const char *path)
{
    struct json_object *obj = json_object_new_object();
    unsigned status = HTTP_STATUS_OK;
    const char *db = "disabled";
    struct dw_store_status st;

    (void)path;
    if (srv->db_health) {
        dw_store_health_read(srv->db_health, &st);
        db = st.state == DW_STORE_UP     ? (st.schema_ready ? "up" : "migrating")
             : st.state == DW_STORE_DOWN ? "down"
                                         : "connecting";
        if (!dw_store_health_is_ready(srv->db_health))
            status = HTTP_STATUS_SERVICE_UNAVAILABLE;
        json_object_object_add(obj, "schema_version", json_object_new_int(st.schema_version));
    }
    if (srv->draining)
        status = HTTP_STATUS_SERVICE_UNAVAILABLE;
    json_object_object_add(obj, "status",
                           json_object_new_string(srv->draining              ? "shutting_down"
                                                  : status == HTTP_STATUS_OK ? "ready"
                                                                             : "not_ready"));
    json_object_object_add(obj, "database", json_object_new_string(db));
    return respond_json(pss, wsi, status, obj);
}

/* The GET endpoints: each answers at once, on the I/O thread (route table below). */
typedef int get_fn(struct dw_server *srv, struct lws *wsi, struct dw_pss *pss, const char *path);

static int get_healthz(struct dw_server *srv, struct lws *wsi, struct dw_pss *pss, const char *path)
{
    struct json_object *obj = json_object_new_object();

    (void)path;
    json_object_object_add(obj, "status", json_object_new_string("ok"));
    json_object_object_add(obj, "connections",
                           json_object_new_int64((int64_t)dw_hub_connection_count(srv->hub)));
    return respond_json(pss, wsi, HTTP_STATUS_OK, obj);
}

/* GET /metrics: the Prometheus text (metrics.c); the operator token, like /api/. */
static int get_metrics(struct dw_server *srv, struct lws *wsi, struct dw_pss *pss, const char *path)
{
    size_t len;
    char *text = dw__metrics_render(srv, &len);

    (void)path;
    req_of(pss, wsi)->content_type = DW_METRICS_CONTENT_TYPE;
    return respond(pss, wsi, HTTP_STATUS_OK, text, len);
}

static int get_stats(struct dw_server *srv, struct lws *wsi, struct dw_pss *pss, const char *path)
{
    (void)path;
    return respond_json(pss, wsi, HTTP_STATUS_OK, dw__stats_service(srv));
}

static int get_connections(struct dw_server *srv, struct lws *wsi, struct dw_pss *pss,
                           const char *path)
{
    (void)path;
    return respond_json(pss, wsi, HTTP_STATUS_OK,
                        dw__stats_connections(srv, url_limit(wsi, 100, 1000)));
}

static int get_inbox(struct dw_server *srv, struct lws *wsi, struct dw_pss *pss, const char *id,
                     size_t id_len);

static int get_user(struct dw_server *srv, struct lws *wsi, struct dw_pss *pss, const char *path)
{
    const char *id = path + strlen(USERS_PREFIX);
    size_t id_len = strlen(id), suffix = strlen(INBOX_SUFFIX);
    struct json_object *obj;

    /* A user id has no '/' (proto.h): <id>/inbox is never a user's id. */
    if (id_len >= suffix && strcmp(id + id_len - suffix, INBOX_SUFFIX) == 0)
        return get_inbox(srv, wsi, pss, id, id_len - suffix);
    if (strchr(id, '/') && dw__operator_action(strrchr(id, '/') + 1) != DW_OPERATOR_NONE)
        return respond_not_allowed(pss, wsi, "POST", "use POST");
    obj = dw__stats_user(srv, id, true);
    if (!obj)
        return respond_error(pss, wsi, HTTP_STATUS_NOT_FOUND, "unknown user");
    return respond_json(pss, wsi, HTTP_STATUS_OK, obj);
}

/* thread: worker. Stores the answer (taking ownership of text) and hands the request back to
 * the I/O thread, waking it when the done queue was empty. */
/* thread: any. Gives req, answered, back to the I/O thread. */
static void push_done(void *arg)
{
    struct dw_http_req *req = arg;
    struct dw_server *srv = req->srv;

    if (dw_readyq_push(&srv->done, &req->done_node))
        dw_wake(&srv->wake);
}

static void hand_back(struct dw_http_req *req, int status, char *text, size_t len)
{
    set_answer(req, (unsigned)status, text, len);
    push_done(req);
}

/* thread: a worker or the inbox's. The answer of a publish. With the nodes' bus, it leaves
 * once the messages it sent are in Redis (bus.h, dw_bus_fence): a publisher that waits for it
 * before its next publish, to this node or another, has its messages in its order on every
 * node. */
static void publish_done(void *arg, int status, char *text, size_t len)
{
    struct dw_http_req *req = arg;

    if (req->srv->bus && status == 200) {
        set_answer(req, (unsigned)status, text, len);
        dw_bus_fence(req->srv->bus, push_done, req);
    } else {
        hand_back(req, status, text, len);
    }
}

/* thread: worker. POST /api/publish. The fan-out and the answer share one wake of the I/O
 * thread (a batch around both): it then writes the messages and the answer in one pass
 * instead of being woken twice. With durable messages the inbox's thread answers, after
 * writing them (publish.h). */
static void publish_job(void *arg)
{
    struct dw_http_req *req = arg;
    struct dw_server *srv = req->srv;
    const struct dw_publish_env env = {
        .hub = srv->hub, .inbox = srv->inbox, .done = publish_done, .arg = req};
    /* The body is the job's from here: once the request is PENDING the inbox's thread may hand
     * req back, and the I/O thread free it, before dw_publish_request returns. */
    char *body = req->body;
    size_t body_len = req->body_len, body_max = req->body_max;
    size_t len;
    char *text;
    int status;

    req->body = NULL;
    dw_wake_batch_begin();
    status = dw_publish_request(&env, body, body_len, &text, &len);
    dw__body_release(srv, body, body_max);
    if (status != DW_PUBLISH_PENDING)
        publish_done(req, status, text, len); /* req is not touched after this */
    dw_wake_batch_end();
}

/* thread: worker. POST /api/ai/trip/plan: may wait on the database (this worker only). */
static void plan_job(void *arg)
{
    struct dw_http_req *req = arg;
    size_t len;
    char *text;
    int status = dw_planner_plan(req->srv->hub, req->srv->db, req->srv->inbox, req->body,
                                 req->body_len, &text, &len);

    free_body(req);
    hand_back(req, status, text, len);
}

/* thread: worker. GET /api/websocket/users/<id>/inbox: one statement on this worker's
 * store. */
static void inbox_job(void *arg)
{
    struct dw_http_req *req = arg;
    size_t len;
    char *text;
    int status = dw_retention_inbox_page(dw_db_store(req->srv->db), req->user_id, req->after,
                                         req->limit, &text, &len);

    hand_back(req, status, text, len);
}

static void submit(struct dw_server *srv, struct dw_http_req *req);

_Static_assert(DW_INBOX_PAGE_MAX == 1000, "get_inbox's message names the most");

/* 400 naming the URL argument (or path part) that is wrong. */
static int respond_bad_arg(struct dw_pss *pss, struct lws *wsi, const char *message,
                           const char *field)
{
    size_t len;
    char *text = dw_answer_error(message, field, &len);

    return respond(pss, wsi, HTTP_STATUS_BAD_REQUEST, text, len);
}

/* GET /api/websocket/users/<id>/inbox?after=N&limit=L (id: id_len bytes of the path): checks
 * the arguments here and hands the query to a worker (inbox_job), which answers through the
 * done queue. */
static int get_inbox(struct dw_server *srv, struct lws *wsi, struct dw_pss *pss, const char *id,
                     size_t id_len)
{
    char user_id[DW_USER_ID_MAX + 1], arg[32];
    long long after = -1, limit = DW_INBOX_PAGE_DEFAULT;
    struct dw_http_req *req;
    int r;

    if (id_len >= sizeof(user_id))
        return respond_bad_arg(pss, wsi, "invalid user id", "user_id");
    memcpy(user_id, id, id_len);
    user_id[id_len] = '\0';
    if (!dw_proto_user_id_is_valid(user_id))
        return respond_bad_arg(pss, wsi, "invalid user id", "user_id");
    r = url_arg(wsi, "after", arg, sizeof(arg));
    if (r < 0 || (r == 1 && parse_uint_arg(arg, 18, 0, INT64_MAX, &after) < 0))
        return respond_bad_arg(pss, wsi, "after must be a seq: a whole number, 0 or more", "after");
    r = url_arg(wsi, "limit", arg, sizeof(arg));
    if (r < 0 || (r == 1 && parse_uint_arg(arg, 4, 1, DW_INBOX_PAGE_MAX, &limit) < 0))
        return respond_bad_arg(pss, wsi, "limit must be a whole number from 1 to 1000", "limit");
    if (!srv->db)
        return respond_error(pss, wsi, HTTP_STATUS_SERVICE_UNAVAILABLE, "no database");

    req = req_new(srv, wsi);
    pss->req = req;
    memcpy(req->user_id, user_id, id_len + 1);
    req->after = after;
    req->limit = (unsigned)limit;
    req->job = inbox_job;
    /* A request pipelined behind this one waits in the socket until its answer is written. */
    lws_rx_flow_control(wsi, 0);
    submit(srv, req);
    return 0;
}

/* Does the operator POST of req (its body read, or none) on the I/O thread, and answers: at
 * once, or, when the action was sent to the other nodes, once it is in Redis (as a publish's
 * answer: dw_bus_fence), so that an operator who waits for each answer has its actions done
 * in its order on every node, whichever node each one went to. */
static int answer_operator(struct dw_server *srv, struct lws *wsi, struct dw_pss *pss,
                           struct dw_http_req *req)
{
    size_t len;
    char *text;
    bool forwarded;
    unsigned status = dw__operator_run(srv, req->action, req->user_id, req->body, req->body_len,
                                       &text, &len, &forwarded);

    free_body(req);
    if (!forwarded)
        return respond(pss, wsi, status, text, len);
    set_answer(req, status, text, len);
    req->state = REQ_FENCED;
    dw__sock_disarm(srv, wsi);   /* the bus has it: no deadline until Redis answers */
    lws_rx_flow_control(wsi, 0); /* a request pipelined behind it waits for the answer */
    atomic_fetch_add_explicit(&req->refs, 1, memory_order_relaxed); /* the done queue's */
    dw_bus_fence(srv->bus, push_done, req);
    return 0;
}

/* POST /api/websocket/users/<id>/<action> (operator.c), whose body of n bytes (0: none)
 * follows: checks the path and the length, then answers at once (no body) or once the body is
 * read (dw__http_body_done). Any other POST under the users' path is not allowed. */
static int post_user(struct dw_server *srv, struct lws *wsi, struct dw_pss *pss, const char *path,
                     unsigned long long n)
{
    const char *id = path + strlen(USERS_PREFIX), *slash = strrchr(id, '/');
    enum dw_operator_action action = slash ? dw__operator_action(slash + 1) : DW_OPERATOR_NONE;
    size_t id_len = slash ? (size_t)(slash - id) : 0;
    struct dw_http_req *req;

    if (action == DW_OPERATOR_NONE)
        return respond_not_allowed(pss, wsi, "GET", "method not allowed");
    req = req_new(srv, wsi);
    pss->req = req;
    if (id_len >= sizeof(req->user_id))
        return respond_bad_arg(pss, wsi, "invalid user id", "user_id");
    memcpy(req->user_id, id, id_len);
    req->user_id[id_len] = '\0';
    if (!dw_proto_user_id_is_valid(req->user_id))
        return respond_bad_arg(pss, wsi, "invalid user id", "user_id");
    req->action = action;
    if (n == 0)
        return answer_operator(srv, wsi, pss, req);
    if (n > DW_OPERATOR_BODY_MAX) {
        req->close_after = true; /* the body is not read */
        return respond_error(pss, wsi, HTTP_STATUS_REQ_ENTITY_TOO_LARGE,
                             "body too large: an operator request takes at most 1024 bytes");
    }
    if (!dw__body_reserve(srv, (size_t)n)) {
        srv->refusals.body_memory++;
        req->close_after = true;
        return respond_error(pss, wsi, HTTP_STATUS_SERVICE_UNAVAILABLE,
                             "too many request bodies in flight: try again shortly");
    }
    req->body_max = (size_t)n;
    req->body = dw_xmalloc((size_t)n + 1);
    req->state = REQ_READING;
    return 0;
}

/* Every endpoint of the API, once: what GET does (on the I/O thread) or what a worker does
 * with a POST's body. The dashboard's files are web.h's table. */
static const struct route {
    const char *path;
    bool prefix; /* the path is a prefix; the rest names something (a user) */
    get_fn *get;
    dw_job_fn *post;
} routes[] = {
    {"/healthz", false, get_healthz, NULL},
    {"/readyz", false, get_readyz, NULL},
    {METRICS_PATH, false, get_metrics, NULL},
    {API_PREFIX "stats", false, get_stats, NULL},
    {API_PREFIX "connections", false, get_connections, NULL},
    {USERS_PREFIX, true, get_user, NULL},
    {"/api/publish", false, NULL, publish_job},
    {PLAN_PATH, false, NULL, plan_job},
};

static const struct route *find_route(const char *path)
{
    for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
        const struct route *r = &routes[i];

        if (r->prefix ? strncmp(path, r->path, strlen(r->path)) == 0 : strcmp(path, r->path) == 0)
            return r;
    }
    return NULL;
}

bool dw__http_api_allowed(struct dw_server *srv, struct lws *wsi)
{
    char value[512];

    if (!dw_auth_api_token_set(srv->auth))
        return true;
    if (lws_hdr_copy(wsi, value, (int)sizeof(value), WSI_TOKEN_HTTP_AUTHORIZATION) <= 0)
        return false;
    return dw_auth_api_allowed(srv->auth, value);
}

int dw__http_write_refusal(struct lws *wsi, int status, const char *why)
{
    unsigned char buf[LWS_PRE + 512];
    char *p = (char *)buf + LWS_PRE;
    const char *reason = status == HTTP_STATUS_NOT_FOUND            ? "Not Found"
                         : status == HTTP_STATUS_BAD_REQUEST        ? "Bad Request"
                         : status == HTTP_STATUS_UNAUTHORIZED       ? "Unauthorized"
                         : status == HTTP_STATUS_FORBIDDEN          ? "Forbidden"
                         : status == HTTP_STATUS_METHOD_NOT_ALLOWED ? "Method Not Allowed"
                         : status == HTTP_STATUS_NOT_IMPLEMENTED    ? "Not Implemented"
                         : status == DW_HTTP_TOO_MANY_REQUESTS      ? "Too Many Requests"
                                                                    : "Service Unavailable";
    size_t len;
    char *body = dw_answer_error(why, NULL, &len);
    int n = snprintf(p, sizeof(buf) - LWS_PRE,
                     "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n%s"
                     "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
                     status, reason,
                     status == HTTP_STATUS_UNAUTHORIZED         ? "WWW-Authenticate: Bearer\r\n"
                     : status == HTTP_STATUS_METHOD_NOT_ALLOWED ? "Allow: GET, HEAD, POST\r\n"
                                                                : "",
                     len, body);

    free(body);
    if (n < 0 || (size_t)n >= sizeof(buf) - LWS_PRE)
        return -1;
    return lws_write(wsi, (unsigned char *)p, (size_t)n, LWS_WRITE_RAW) < 0 ? -1 : 0;
}

int dw__http_raw(struct dw_server *srv, struct lws *wsi, const void *in, size_t len)
{
    static const char connect[] = "CONNECT ";

    DW_ASSERT_THREAD(DW_THREAD_IO);
    if (srv->cfg->tls_cert && !lws_is_ssl(wsi))
        return -1; /* plaintext on the TLS port: nothing of ours is said in clear */
    if (len >= sizeof(connect) - 1 && memcmp(in, connect, sizeof(connect) - 1) == 0)
        dw__http_write_refusal(wsi, HTTP_STATUS_METHOD_NOT_ALLOWED,
                               "CONNECT is not supported: this server is not a proxy");
    else
        dw__http_write_refusal(wsi, HTTP_STATUS_NOT_IMPLEMENTED,
                               "unknown method: the API takes GET, HEAD and POST");
    return -1;
}

/* Reads the Content-Length header into *n: 0 when it is there and is one decimal number,
 * -ENOENT when absent, -EINVAL for anything else (a sign, spaces, two values joined by lws
 * from repeated headers, more digits than a size has). */
static int content_length(struct lws *wsi, unsigned long long *n)
{
    char clen[24];
    int len = lws_hdr_copy(wsi, clen, sizeof(clen), WSI_TOKEN_HTTP_CONTENT_LENGTH);

    if (lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_CONTENT_LENGTH) <= 0)
        return -ENOENT;
    if (len <= 0 || len > 18)
        return -EINVAL;
    *n = 0;
    for (int i = 0; i < len; i++) {
        if (clen[i] < '0' || clen[i] > '9')
            return -EINVAL;
        *n = *n * 10 + (unsigned)(clen[i] - '0');
    }
    return 0;
}

const char *dw__http_line_error(struct lws *wsi)
{
    char version[16];

    if (lws_hdr_copy(wsi, version, sizeof(version), WSI_TOKEN_HTTP) == 8 &&
        (strcmp(version, "HTTP/1.1") == 0 || strcmp(version, "HTTP/1.0") == 0))
        return NULL;
    return "malformed request line: it must be METHOD, a space, the target, a space and "
           "HTTP/1.1 (encode a space in the target as %20)";
}

/* Refuses a request whose line is malformed (dw__http_line_error) or whose framing is not one
 * plain Content-Length (or none), and closes its connection, since where its body ends is not
 * known (RFC 9112, 6.1 and 6.3): bodies are read by Content-Length only, and a request with
 * Transfer-Encoding, which a proxy in front would frame by that instead, is how requests are
 * smuggled. Returns what the callback returns, or 1 when the framing is fine (*n: the body's
 * length, 0 when none). */
static int check_framing(struct lws *wsi, struct dw_pss *pss, unsigned long long *n)
{
    int r = content_length(wsi, n);
    const char *why = dw__http_line_error(wsi);
    unsigned status = HTTP_STATUS_BAD_REQUEST;

    if (!why && lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_TRANSFER_ENCODING) > 0) {
        if (r == -ENOENT) {
            status = HTTP_STATUS_LENGTH_REQUIRED;
            why = "Transfer-Encoding is not accepted: send the body with a Content-Length";
        } else {
            why = "Transfer-Encoding and Content-Length together: the request is refused";
        }
    } else if (!why && r == -EINVAL) {
        why = "Content-Length must be one decimal number";
    } else if (r == -ENOENT) {
        *n = 0;
    }
    if (!why)
        return 1;
    pss->req = req_new(NULL, wsi);
    pss->req->close_after = true;
    return respond_error(pss, wsi, status, why);
}

int dw__http_request(struct dw_server *srv, struct lws *wsi, struct dw_pss *pss, const char *path)
{
    const struct dw_web_file *page;
    const struct route *route;
    unsigned long long n;
    int r;

    DW_ASSERT_THREAD(DW_THREAD_IO);
    if (pss->req) {
        /* A keep-alive connection's previous request, fully answered. */
        req_unref(pss->req);
        pss->req = NULL;
    }
    /* The request, its body and its answer within --handshake-timeout from here. */
    dw__sock_arm(srv, wsi);
    dw__sock_role(wsi, DW_SOCK_API);
    r = check_framing(wsi, pss, &n);
    if (r != 1)
        return r;
    if (dw__sock_forwarded(srv, wsi) < 0) {
        pss->req = req_new(srv, wsi);
        pss->req->close_after = true;
        return respond_error(pss, wsi, DW_HTTP_TOO_MANY_REQUESTS,
                             "this address holds the most connections allowed");
    }
    if ((strncmp(path, "/api/", 5) == 0 || strcmp(path, METRICS_PATH) == 0) &&
        !dw__http_api_allowed(srv, wsi)) {
        srv->refusals.api_auth++;
        pss->req = req_new(srv, wsi);
        pss->req->close_after = method_is(wsi, WSI_TOKEN_POST_URI); /* its body is not read */
        return respond_error(pss, wsi, HTTP_STATUS_UNAUTHORIZED,
                             "the operator token is required: Authorization: Bearer <token>");
    }
    page = find_page(path);
    if (page && (method_is(wsi, WSI_TOKEN_GET_URI) || method_is(wsi, WSI_TOKEN_HEAD_URI)))
        return respond_page(pss, wsi, page);
    route = find_route(path);
    if (method_is(wsi, WSI_TOKEN_GET_URI)) {
        if (route && route->get)
            return route->get(srv, wsi, pss, path);
        if (route)
            return respond_not_allowed(pss, wsi, "POST", "use POST");
        return respond_error(pss, wsi, HTTP_STATUS_NOT_FOUND, "no such endpoint");
    }
    /* The users' path takes the operator's POSTs, answered here (operator.c), not by a job. */
    if (method_is(wsi, WSI_TOKEN_POST_URI) && route && route->get == get_user)
        return post_user(srv, wsi, pss, path, n);
    if (!method_is(wsi, WSI_TOKEN_POST_URI) || !route || !route->post) {
        if (page)
            return respond_not_allowed(pss, wsi, "GET, HEAD", "method not allowed");
        if (route)
            return respond_not_allowed(pss, wsi, route->post ? "POST" : "GET",
                                       "method not allowed");
        return respond_error(pss, wsi, HTTP_STATUS_NOT_FOUND, "no such endpoint");
    }

    /* POST /api/publish or /api/ai/trip/plan: the body follows in LWS_CALLBACK_HTTP_BODY. */
    pss->req = req_new(srv, wsi);
    if (lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_CONTENT_LENGTH) <= 0) {
        pss->req->close_after = true;
        return respond_error(pss, wsi, HTTP_STATUS_LENGTH_REQUIRED, "Content-Length required");
    }
    if (n == 0) {
        pss->req->close_after = true;
        return respond_error(pss, wsi, HTTP_STATUS_BAD_REQUEST, "empty body");
    }
    if (n > (unsigned long long)srv->cfg->max_publish_size) {
        /* The body is not read: answer, then close the connection. */
        pss->req->close_after = true;
        return respond_error(pss, wsi, HTTP_STATUS_REQ_ENTITY_TOO_LARGE, "body too large");
    }
    if (!dw__body_reserve(srv, (size_t)n)) {
        srv->refusals.body_memory++;
        pss->req->close_after = true;
        return respond_error(pss, wsi, HTTP_STATUS_SERVICE_UNAVAILABLE,
                             "too many request bodies in flight: try again shortly");
    }
    pss->req->job = route->post;
    pss->req->body_max = (size_t)n;
    pss->req->body = dw_xmalloc((size_t)n + 1);
    pss->req->state = REQ_READING;
    return 0;
}

int dw__http_body(struct dw_server *srv, struct dw_pss *pss, const void *in, size_t len)
{
    struct dw_http_req *req = pss->req;

    (void)srv;
    if (!req || req->state != REQ_READING)
        return 0;
    if (req->body_len + len > req->body_max) {
        req->too_large = true;
        return 0;
    }
    memcpy(req->body + req->body_len, in, len);
    req->body_len += len;
    return 0;
}

#if !defined(LWS_DW_H1_PIPELINING)
/* Debian's lws 4.1.6 only: a POST with another request pipelined behind it, already read.
 * That lws then calls BODY_COMPLETION again and again without consuming anything, until the
 * transaction is completed inside that callback; ours completes when a worker has answered.
 * So such a POST is refused before anything of it is done: 400, and the connection closes
 * (the requests behind it are not read). Returns what the callback returns. */
static int refuse_pipelined(struct dw_server *srv, struct lws *wsi, struct dw_pss *pss)
{
    dw_log(DW_LOG_DEBUG, "refused a POST with a request pipelined behind it");
    pss->req->close_after = true;
    respond_error(pss, wsi, HTTP_STATUS_BAD_REQUEST,
                  "pipelined request: send the next request after this one's answer");
    dw__http_writeable(srv, wsi, pss);
    return -1;
}
#endif

int dw__http_body_done(struct dw_server *srv, struct lws *wsi, struct dw_pss *pss)
{
    struct dw_http_req *req = pss->req;

    if (!req)
        return 0;
#if !defined(LWS_DW_H1_PIPELINING)
    if (req->state == REQ_READY)
        return refuse_pipelined(srv, wsi, pss);
#endif
    if (req->state == REQ_WORKING)
        return -1; /* the same, once the worker has it: its answer can no longer be sent */
    if (req->state != REQ_READING)
        return 0;
    if (req->too_large) {
        req->close_after = true;
        return respond_error(pss, wsi, HTTP_STATUS_REQ_ENTITY_TOO_LARGE, "body too large");
    }
    if (req->action != DW_OPERATOR_NONE)
        return answer_operator(srv, wsi, pss, req); /* on this thread, which owns connections */
    /* Submitted after this pass of the loop, with the others it completed (and, with Debian's
     * lws, not from inside lws's read: refuse_pipelined). The ready list holds a reference. */
    req->state = REQ_READY;
    atomic_fetch_add_explicit(&req->refs, 1, memory_order_relaxed);
    *srv->ready_tail = req;
    srv->ready_tail = &req->next_ready;
    /* A request pipelined later waits in the socket until this one's answer is written. */
    lws_rx_flow_control(wsi, 0);
    return 0;
}

/* Hands req (REQ_READY, its connection open) to a worker. */
static void submit(struct dw_server *srv, struct dw_http_req *req)
{
    struct lws *wsi = req->wsi;

    req->state = REQ_WORKING;
    dw__sock_disarm(srv, wsi); /* a worker has it: no deadline until it answers */
    atomic_fetch_add_explicit(&req->refs, 1, memory_order_relaxed); /* the worker's */
    if (dw_workers_submit(srv->workers, req->job, req) < 0) {
        atomic_fetch_sub_explicit(&req->refs, 1, memory_order_relaxed);
        respond_error(lws_wsi_user(wsi), wsi, HTTP_STATUS_SERVICE_UNAVAILABLE, "shutting down");
    }
}

void dw__http_submit_ready(struct dw_server *srv)
{
    struct dw_http_req *req = srv->ready_reqs, *next;

    srv->ready_reqs = NULL;
    srv->ready_tail = &srv->ready_reqs;
    for (; req; req = next) {
        next = req->next_ready;
        req->next_ready = NULL;
        if (req->state == REQ_READY && req->wsi)
            submit(srv, req);
        req_unref(req); /* the ready list's */
    }
}

/* Writes req's answer from the drain, without a trip through the event loop (conn.c, "Write
 * path": with poll, each trip scans every socket), when nothing waits on the connection and
 * the answer keeps it open; else asks for WRITEABLE. A failure hangs up. */
static void answer_now(struct dw_server *srv, struct dw_http_req *req)
{
    struct lws *wsi = req->wsi;

    req->state = REQ_HEADERS;
    dw__sock_arm(srv, wsi); /* the client takes its answer within the timeout */
    if (req->close_after || lws_partial_buffered(wsi)) {
        lws_callback_on_writable(wsi);
        return;
    }
    if (dw__http_writeable(srv, wsi, lws_wsi_user(wsi)) < 0)
        dw__hang_up(wsi);
}

/* Hands finished jobs back: answers them (answer) or only frees them (the shutdown). */
static void take_done(struct dw_server *srv, bool answer)
{
    struct dw_readyq_batch batch;
    struct cds_wfcq_node *node;

    dw_readyq_take_all(&srv->done, &batch);
    while ((node = dw_readyq_batch_next(&batch)) != NULL) {
        struct dw_http_req *req = caa_container_of(node, struct dw_http_req, done_node);

        if (answer && req->wsi)
            answer_now(srv, req);
        req_unref(req); /* the worker's */
    }
}

void dw__http_drain_done(struct dw_server *srv)
{
    take_done(srv, true);
}

void dw__http_free_done(struct dw_server *srv)
{
    take_done(srv, false);
}

/* Appends the header name (with its colon, lws's form) and value. Returns nonzero when the
 * buffer is full. */
static int add_header(struct lws *wsi, const char *name, const char *value, unsigned char **p,
                      unsigned char *end)
{
    return lws_add_http_header_by_name(wsi, (const unsigned char *)name,
                                       (const unsigned char *)value, (int)strlen(value), p, end);
}

/* The headers of req's answer: JSON's, or a dashboard file's. Nonzero when they do not fit. */
static int add_headers(struct lws *wsi, const struct dw_http_req *req, unsigned char **p,
                       unsigned char *end)
{
    const char *type = req->page           ? req->page->content_type
                       : req->content_type ? req->content_type
                                           : "application/json";

    if (lws_add_http_common_headers(wsi, req->status, type, (lws_filepos_t)req->resp_len, p, end))
        return -1;
    if (req->page) {
        /* no-cache: the page is revalidated on each load, so an upgraded daemon's page and
         * script are never mixed with an old copy. */
        return add_header(wsi, "cache-control:", "no-cache", p, end) ||
               add_header(wsi, "x-content-type-options:", "nosniff", p, end) ||
               add_header(wsi, "content-security-policy:", PAGE_CSP, p, end) ||
               add_header(wsi, "referrer-policy:", "no-referrer", p, end);
    }
    return add_header(wsi, "cache-control:", "no-store", p, end) ||
           (req->status == HTTP_STATUS_UNAUTHORIZED &&
            add_header(wsi, "www-authenticate:", "Bearer", p, end)) ||
           (req->allow && add_header(wsi, "allow:", req->allow, p, end));
}

int dw__http_writeable(struct dw_server *srv, struct lws *wsi, struct dw_pss *pss)
{
    struct dw_http_req *req = pss->req;
    unsigned char hdr[LWS_PRE + 1024], *start = hdr + LWS_PRE, *p = start;
    unsigned char *end = hdr + sizeof(hdr);

    if (!req)
        return 0;
    switch (req->state) {
    case REQ_HEADERS:
        if (add_headers(wsi, req, &p, end) || lws_finalize_write_http_header(wsi, start, &p, end))
            return -1;
        req->state = REQ_BODY;
        if (lws_partial_buffered(wsi)) {
            lws_callback_on_writable(wsi);
            return 0;
        }
        /* The socket took the headers whole: the body can follow in the same callback, which
         * saves a trip through the event loop per request. */
        __attribute__((fallthrough));
    case REQ_BODY:
        if (!req->head_only && lws_write(wsi, req->resp + LWS_PRE, req->resp_len,
                                         LWS_WRITE_HTTP_FINAL) != (int)req->resp_len)
            return -1;
        pss->req = NULL;
        lws_rx_flow_control(wsi, 1); /* the next request, if any (dw__http_body_done) */
        if (req->close_after) {
            req_unref(req);
            return -1;
        }
        req_unref(req);
        if (lws_http_transaction_completed(wsi))
            return -1;
        dw__sock_arm(srv, wsi); /* kept alive: the next request within the timeout */
        return 0;
    default:
        return 0;
    }
}

void dw__http_closed(struct dw_server *srv, struct dw_pss *pss)
{
    struct dw_http_req *req = pss->req;

    (void)srv;
    if (!req)
        return;
    pss->req = NULL;
    req->wsi = NULL; /* a worker may still hold it; its answer will find no connection */
    req_unref(req);
}
