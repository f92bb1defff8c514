/*
 * stream — DESIGN: /ws/publish, the publish socket: a WebSocket on which a publisher sends
 * publish bodies as text frames and gets one answer frame per frame, in order, each what
 * POST /api/publish would have answered plus its "status" and the frame's "request_id".
 *
 * The one idea: a socket's frames are published strictly in order, one run at a time. The
 * I/O thread reads frames (reassembled, within --max-publish-size and the shared
 * --max-body-memory) onto the socket's queue; after the pass of the loop that read them, the
 * whole queue becomes one run on a worker (so frames read together cost one job and one
 * wake-up), and the next run starts only once the I/O thread has the answers of this one. In
 * a run the worker publishes frame after frame; a frame whose messages go to the durable
 * inbox (publish.h, DW_PUBLISH_PENDING) holds the rest until the inbox has answered it, and
 * a worker then takes the run on: no frame's messages overtake an earlier frame's. With the
 * nodes' bus the run's answers wait for a fence, as the HTTP answer does (http.c).
 *
 * Flow control: at most DW_STREAM_WINDOW frames read and not yet answered; past that the
 * socket is not read (lws_rx_flow_control) until the answers have been written and half the
 * window is free. A frame that cannot have its body budget now is answered 503 in its turn.
 * The answers are framed on the worker (struct dw_msg) and written like the outbox's frames:
 * those waiting go out in one RAW write.
 *
 * Lifetime: the socket's struct is shared by the I/O thread and the run's worker or inbox
 * thread (a reference each). The I/O thread owns queued, answered, the window and the wsi;
 * the run's frames belong to whichever thread holds the run, and come back through
 * srv->streams_done. A closed socket's run still finishes (its messages were accepted); its
 * answers are dropped.
 */
#define DW_LOG_MODULE "stream"
#include "server_int.h"
#include "dealwire/answer.h"
#include "dealwire/bus.h"
#include "dealwire/log.h"
#include "dealwire/mem.h"
#include "dealwire/msg.h"
#include "dealwire/publish.h"
#include "dealwire/thread.h"
#include "dealwire/time.h"
#include "dealwire/worker.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Frames read and not yet answered, per socket, before it is no longer read. */
#define DW_STREAM_WINDOW 64

struct frame {
    struct frame *next;
    char *body;      /* the publish body, until the worker has published it */
    size_t len;      /* of body */
    size_t reserved; /* bytes of --max-body-memory body holds */
    /* The answer, framed; set when the frame is read if it is refused at once (too large,
     * binary, no body budget), else by the worker. */
    struct dw_msg *answer;
    char request_id[DW_PUBLISH_REQUEST_ID_MAX];
};

struct dw_stream {
    _Atomic unsigned refs; /* the I/O thread's while the socket lives, a run's */
    struct dw_server *srv;
    struct cds_wfcq_node done_node;
    /* io only */
    struct lws *wsi;               /* NULL once the socket closed */
    struct dw_stream *prev, *next; /* srv->streams */
    struct frame *queued, **queued_tail;
    struct frame *answered, **answered_tail;
    unsigned in_flight;           /* frames read and not yet written back */
    bool busy;                    /* a run is on a worker or the inbox */
    bool listed;                  /* on srv->ready_streams */
    bool throttled;               /* not read: the window is full */
    bool closing;                 /* shutting down: close once every answer is written */
    bool closed_sent;             /* the close is under way (close_with's rule: once) */
    bool want_ping;               /* the heartbeat's ping goes on the next WRITEABLE */
    int64_t last_activity;        /* monotonic ns of the last frame or pong from the publisher */
    int64_t ping_sent_at;         /* monotonic ns */
    char *rx;                     /* a frame being reassembled */
    size_t rx_len;                /* bytes of it so far (counted when over, not kept) */
    size_t rx_cap;                /* bytes allocated at rx */
    bool rx_binary;               /* the frame being read is binary */
    struct dw_stream *next_ready; /* srv->ready_streams */
    /* the run's thread */
    struct frame *run; /* the frames of the run on a worker or the inbox */
    struct frame *cur; /* the next of them to publish */
};

static void stream_unref(struct dw_stream *st);

static void frame_free(struct dw_server *srv, struct frame *f)
{
    if (f->body)
        dw__body_release(srv, f->body, f->reserved);
    if (f->answer)
        dw_msg_unref(f->answer);
    free(f);
}

static void frames_free(struct dw_server *srv, struct frame *f)
{
    while (f) {
        struct frame *next = f->next;

        frame_free(srv, f);
        f = next;
    }
}

static void stream_unref(struct dw_stream *st)
{
    if (atomic_fetch_sub_explicit(&st->refs, 1, memory_order_acq_rel) != 1)
        return;
    frames_free(st->srv, st->run);
    free(st);
}

/* ==========================================================================================
 * The run: a worker (and the inbox's thread, for durable frames)
 */

/* thread: any. The answer text (owned, len bytes, a JSON object) with the frame's status and
 * request_id in front of its members, framed. */
static struct dw_msg *frame_answer(const struct frame *f, int status, char *text, size_t len)
{
    char head[DW_PUBLISH_REQUEST_ID_MAX + 48];
    int n = f->request_id[0]
                ? snprintf(head, sizeof(head), "{\"status\":%d,\"request_id\":%s%s", status,
                           f->request_id, len > 2 ? "," : "")
                : snprintf(head, sizeof(head), "{\"status\":%d%s", status, len > 2 ? "," : "");
    size_t total = (size_t)n + len - 1;
    char *out = dw_xmalloc(total + 1);
    struct dw_msg *m;

    assert(n > 0 && (size_t)n < sizeof(head) && len >= 2 && text[0] == '{');
    memcpy(out, head, (size_t)n);
    memcpy(out + n, text + 1, len - 1); /* the members and the closing brace */
    out[total] = '\0';
    m = dw_msg_new_text(DW_MSG_ACK, 0, out, total);
    free(out);
    free(text);
    return m;
}

/* thread: any. Hands the run back to the I/O thread. */
static void push_done(void *arg)
{
    struct dw_stream *st = arg;
    struct dw_server *srv = st->srv;

    if (dw_readyq_push(&srv->streams_done, &st->done_node))
        dw_wake(&srv->wake);
}

/* thread: a worker or the inbox's. Every frame of the run is answered: with the nodes' bus,
 * the answers leave once the run's messages are in Redis (bus.h, dw_bus_fence). */
static void run_done(struct dw_stream *st)
{
    if (st->srv->bus)
        dw_bus_fence(st->srv->bus, push_done, st);
    else
        push_done(st);
}

static void run_job(void *arg);

/* Answers the run's frames from cur on with an error, unpublished. */
static void answer_rest(struct dw_stream *st, int status, const char *message)
{
    for (struct frame *f = st->cur; f; f = f->next) {
        size_t n;
        char *text;

        if (f->answer)
            continue;
        text = dw_answer_error(message, NULL, &n);
        f->answer = frame_answer(f, status, text, n);
    }
    st->cur = NULL;
}

/* thread: the inbox's. The answer of a frame that was DW_PUBLISH_PENDING: the run goes on, on
 * a worker (the inbox's thread does not publish). */
static void frame_done(void *arg, int status, char *text, size_t len)
{
    struct dw_stream *st = arg;
    struct frame *f = st->cur;

    f->answer = frame_answer(f, status, text, len);
    st->cur = f->next;
    if (!st->cur) {
        run_done(st);
        return;
    }
    if (dw_workers_submit(st->srv->workers, run_job, st) < 0) {
        /* The workers stopped: the daemon is shutting down. What is left is not published. */
        answer_rest(st, 503, "the server is shutting down");
        run_done(st);
    }
}

/* thread: worker. Publishes the run's frames from cur on, in order, until one waits for the
 * inbox (frame_done takes the run on from there) or all are answered. */
static void run_job(void *arg)
{
    struct dw_stream *st = arg;
    struct dw_server *srv = st->srv;

    dw_wake_batch_begin();
    while (st->cur) {
        struct frame *f = st->cur;
        const struct dw_publish_env env = {.hub = srv->hub,
                                           .inbox = srv->inbox,
                                           .done = frame_done,
                                           .arg = st,
                                           .request_id = f->request_id};
        size_t len, reserved;
        char *text, *body;
        int status;

        if (f->answer) {
            st->cur = f->next; /* answered when it was read */
            continue;
        }
        /* The body is the job's from here: once the frame is PENDING, the inbox's thread may
         * answer it, and the I/O thread free it, before dw_publish_request returns. */
        body = f->body;
        reserved = f->reserved;
        f->body = NULL;
        status = dw_publish_request(&env, body, f->len, &text, &len);
        dw__body_release(srv, body, reserved);
        if (status == DW_PUBLISH_PENDING) {
            /* f and the rest belong to the inbox's callback now. */
            dw_wake_batch_end();
            return;
        }
        f->answer = frame_answer(f, status, text, len);
        st->cur = f->next;
    }
    run_done(st);
    dw_wake_batch_end();
}

/* ==========================================================================================
 * The socket: the I/O thread
 */

/* Starts a run with everything queued, if none is running. */
static void start_run(struct dw_server *srv, struct dw_stream *st)
{
    if (st->busy || !st->queued)
        return;
    st->run = st->cur = st->queued;
    st->queued = NULL;
    st->queued_tail = &st->queued;
    st->busy = true;
    atomic_fetch_add_explicit(&st->refs, 1, memory_order_relaxed); /* the run's */
    if (dw_workers_submit(srv->workers, run_job, st) == 0)
        return;
    /* The workers stopped (shutting down): answer every frame of the run here. */
    atomic_fetch_sub_explicit(&st->refs, 1, memory_order_relaxed);
    answer_rest(st, 503, "the server is shutting down");
    push_done(st);
}

void dw__stream_submit_ready(struct dw_server *srv)
{
    struct dw_stream *st = srv->ready_streams, *next;

    srv->ready_streams = NULL;
    for (; st; st = next) {
        next = st->next_ready;
        st->next_ready = NULL;
        st->listed = false;
        if (st->wsi)
            start_run(srv, st);
        stream_unref(st); /* the list's */
    }
}

/* Puts a frame read from the socket on its queue: a run takes it after this pass. */
static void enqueue(struct dw_server *srv, struct dw_stream *st, struct frame *f)
{
    *st->queued_tail = f;
    st->queued_tail = &f->next;
    srv->streams.frames++;
    if (++st->in_flight >= DW_STREAM_WINDOW && !st->throttled) {
        st->throttled = true;
        lws_rx_flow_control(st->wsi, 0);
    }
    if (!st->busy && !st->listed) {
        st->listed = true;
        atomic_fetch_add_explicit(&st->refs, 1, memory_order_relaxed); /* the list's */
        st->next_ready = srv->ready_streams;
        srv->ready_streams = st;
    }
}

/* A frame answered without being published (status, message). */
static void refuse_frame(struct dw_server *srv, struct dw_stream *st, int status,
                         const char *message)
{
    struct frame *f = dw_xcalloc(1, sizeof(*f));
    size_t n;
    char *text = dw_answer_error(message, NULL, &n);

    f->answer = frame_answer(f, status, text, n);
    srv->streams.refused++;
    enqueue(srv, st, f);
}

/* One whole frame read: queued with its body (len bytes, copied or taken: owned is st->rx). */
static void take_frame(struct dw_server *srv, struct dw_stream *st, const char *data, size_t len)
{
    struct frame *f;

    if (st->rx_binary) {
        refuse_frame(srv, st, 400, "send each publish as a JSON text frame");
        return;
    }
    if (len > (size_t)srv->cfg->max_publish_size) {
        refuse_frame(srv, st, 413, "body too large");
        return;
    }
    if (len == 0) {
        refuse_frame(srv, st, 400, "empty body");
        return;
    }
    if (!dw__body_reserve(srv, len)) {
        srv->refusals.body_memory++;
        refuse_frame(srv, st, 503, "too many request bodies in flight: try again shortly");
        return;
    }
    f = dw_xcalloc(1, sizeof(*f));
    f->reserved = len;
    f->len = len;
    f->body = dw_xmalloc(len + 1);
    memcpy(f->body, data, len);
    f->body[len] = '\0';
    enqueue(srv, st, f);
}

bool dw__stream_is_path(struct lws *wsi)
{
    char path[32];

    return lws_hdr_copy(wsi, path, sizeof(path), WSI_TOKEN_GET_URI) > 0 &&
           strcmp(path, DW_STREAM_PATH) == 0;
}

int dw__stream_confirm_upgrade(struct dw_server *srv, struct lws *wsi)
{
    if (srv->draining)
        return dw__refuse_upgrade(wsi, HTTP_STATUS_SERVICE_UNAVAILABLE, "server is shutting down");
    if (!dw__http_api_allowed(srv, wsi)) {
        srv->refusals.api_auth++;
        return dw__refuse_upgrade(wsi, HTTP_STATUS_UNAUTHORIZED,
                                  "the operator token is required: Authorization: Bearer <token>");
    }
    return 0;
}

int dw__stream_established(struct dw_server *srv, struct lws *wsi, struct dw_pss *pss)
{
    struct dw_stream *st = dw_xcalloc(1, sizeof(*st));

    DW_ASSERT_THREAD(DW_THREAD_IO);
    dw__sock_disarm(srv, wsi); /* the heartbeat watches it from now on (dw__stream_sweep) */
    dw__sock_role(wsi, DW_SOCK_API);
    atomic_init(&st->refs, 1);
    st->srv = srv;
    st->wsi = wsi;
    st->queued_tail = &st->queued;
    st->answered_tail = &st->answered;
    st->last_activity = dw_now_mono_ns();
    st->next = srv->stream_list;
    if (st->next)
        st->next->prev = st;
    srv->stream_list = st;
    pss->stream = st;
    srv->streams.opened++;
    dw_log(DW_LOG_DEBUG, "publish socket opened");
    return 0;
}

int dw__stream_receive(struct dw_server *srv, struct lws *wsi, struct dw_pss *pss, const void *in,
                       size_t len)
{
    struct dw_stream *st = pss->stream;
    size_t max = (size_t)srv->cfg->max_publish_size;

    if (!st)
        return -1;
    st->last_activity = dw_now_mono_ns();
    if (st->closing)
        return 0; /* shutting down: nothing read from now on is published */
    if (lws_is_first_fragment(wsi)) {
        st->rx_len = 0;
        st->rx_binary = lws_frame_is_binary(wsi);
    }
    if (lws_is_final_fragment(wsi) && st->rx_len == 0) {
        take_frame(srv, st, in, len); /* whole in one chunk: copied once */
        return 0;
    }
    if (st->rx_len + len > max || st->rx_binary) {
        /* Counted, not kept: the frame is refused when it ends. */
        free(st->rx);
        st->rx = NULL;
        st->rx_cap = 0;
        st->rx_len = st->rx_len + len > max ? max + 1 : st->rx_len + len;
    } else {
        if (st->rx_len + len > st->rx_cap) {
            /* Grown as the frame comes, not to --max-publish-size at once: most are small. */
            size_t cap = st->rx_cap ? st->rx_cap : 1024;

            while (cap < st->rx_len + len)
                cap *= 2;
            st->rx_cap = cap < max ? cap : max;
            st->rx = dw_xrealloc(st->rx, st->rx_cap);
        }
        memcpy(st->rx + st->rx_len, in, len);
        st->rx_len += len;
    }
    if (!lws_is_final_fragment(wsi))
        return 0;
    take_frame(srv, st, st->rx ? st->rx : "", st->rx_len);
    st->rx_len = 0;
    if (st->rx_cap > 65536) {
        /* Kept for the next fragmented frame, unless a large one made it large. */
        free(st->rx);
        st->rx = NULL;
        st->rx_cap = 0;
    }
    return 0;
}

void dw__stream_pong(struct dw_pss *pss)
{
    if (pss->stream)
        pss->stream->last_activity = dw_now_mono_ns();
}

/* Writes the answers waiting, as many as the socket takes (one RAW write per buffer's
 * worth). Returns -1 when the socket failed. */
static int write_answers(struct dw_server *srv, struct dw_stream *st)
{
    unsigned char *buf = srv->wbuf + LWS_PRE;

    while (st->answered && !lws_partial_buffered(st->wsi)) {
        size_t n = 0;
        unsigned count = 0;
        struct frame *f;

        while ((f = st->answered) != NULL) {
            size_t flen = dw_msg_frame_len(f->answer);

            if (n > 0 && n + flen > DW_WRITE_BATCH)
                break;
            if (flen > DW_WRITE_BATCH) {
                /* An answer larger than the buffer (a batch's results) goes alone. */
                if (lws_write(st->wsi, (unsigned char *)dw_msg_frame(f->answer), flen,
                              LWS_WRITE_RAW) < 0)
                    return -1;
            } else {
                memcpy(buf + n, dw_msg_frame(f->answer), flen);
                n += flen;
            }
            st->answered = f->next;
            frame_free(srv, f);
            count++;
        }
        if (!st->answered)
            st->answered_tail = &st->answered;
        if (n && lws_write(st->wsi, buf, n, LWS_WRITE_RAW) < 0)
            return -1;
        st->in_flight -= count;
        srv->streams.answered += count;
    }
    if (st->throttled && st->in_flight <= DW_STREAM_WINDOW / 2) {
        st->throttled = false;
        lws_rx_flow_control(st->wsi, 1);
    }
    return 0;
}

/* The drain's turn for st: its answers now, or on WRITEABLE when something must go first. */
static void flush(struct dw_server *srv, struct dw_stream *st)
{
    if (st->want_ping || st->closing || lws_partial_buffered(st->wsi)) {
        lws_callback_on_writable(st->wsi);
        return;
    }
    if (write_answers(srv, st) < 0)
        dw__hang_up(st->wsi);
    else if (st->answered)
        lws_callback_on_writable(st->wsi);
}

void dw__stream_drain_done(struct dw_server *srv)
{
    struct dw_readyq_batch batch;
    struct cds_wfcq_node *node;

    dw_readyq_take_all(&srv->streams_done, &batch);
    while ((node = dw_readyq_batch_next(&batch)) != NULL) {
        struct dw_stream *st = caa_container_of(node, struct dw_stream, done_node);
        struct frame *run = st->run;

        st->run = NULL;
        st->busy = false;
        if (st->wsi) {
            struct frame *last = run;

            while (last->next)
                last = last->next;
            *st->answered_tail = run;
            st->answered_tail = &last->next;
            flush(srv, st);
            start_run(srv, st); /* what was read meanwhile */
        } else {
            frames_free(srv, run);
        }
        stream_unref(st); /* the run's */
    }
}

void dw__stream_free_done(struct dw_server *srv)
{
    struct dw_readyq_batch batch;
    struct cds_wfcq_node *node;

    dw_readyq_take_all(&srv->streams_done, &batch);
    while ((node = dw_readyq_batch_next(&batch)) != NULL)
        stream_unref(caa_container_of(node, struct dw_stream, done_node));
}

int dw__stream_writeable(struct dw_server *srv, struct lws *wsi, struct dw_pss *pss)
{
    struct dw_stream *st = pss->stream;

    if (!st || st->closed_sent)
        return 0;
    if (st->want_ping) {
        st->want_ping = false;
        if (dw__write_ping(wsi, st->ping_sent_at) < 0)
            return -1;
        lws_callback_on_writable(wsi);
        return 0;
    }
    if (write_answers(srv, st) < 0)
        return -1;
    if (st->answered) {
        lws_callback_on_writable(wsi);
        return 0;
    }
    if (st->closing && st->in_flight == 0) {
        /* Every frame read is answered: the close (conn.c's close_with says why this way). */
        static const char why[] = "server shutting down";

        st->closed_sent = true;
        lws_close_reason(wsi, LWS_CLOSE_STATUS_GOINGAWAY, (unsigned char *)why, sizeof(why) - 1);
        lws_set_timeout(wsi, PENDING_TIMEOUT_CLOSE_SEND, LWS_TO_KILL_SYNC);
    }
    return 0;
}

void dw__stream_closed(struct dw_server *srv, struct dw_pss *pss)
{
    struct dw_stream *st = pss->stream;

    if (!st)
        return;
    pss->stream = NULL;
    st->wsi = NULL;
    if (st->prev)
        st->prev->next = st->next;
    else
        srv->stream_list = st->next;
    if (st->next)
        st->next->prev = st->prev;
    frames_free(srv, st->queued);
    frames_free(srv, st->answered);
    st->queued = st->answered = NULL;
    free(st->rx);
    st->rx = NULL;
    dw_log(DW_LOG_DEBUG, "publish socket closed");
    stream_unref(st); /* the I/O thread's; a run or the ready list may still hold one */
}

void dw__stream_close_all(struct dw_server *srv)
{
    for (struct dw_stream *st = srv->stream_list; st; st = st->next) {
        st->closing = true;
        lws_callback_on_writable(st->wsi);
    }
}

void dw__stream_sweep(struct dw_server *srv, int64_t now)
{
    int64_t ping_after = (int64_t)srv->cfg->heartbeat_interval * DW_NSEC_PER_SEC;
    int64_t stale_after = (int64_t)srv->cfg->stale_timeout * DW_NSEC_PER_SEC;

    for (struct dw_stream *st = srv->stream_list; st; st = st->next) {
        int64_t idle = now - st->last_activity;

        if (st->in_flight > 0 || st->closed_sent)
            continue; /* waiting for us, not for the publisher */
        if (idle >= stale_after) {
            dw_log(DW_LOG_INFO, "publish socket: no response for %llds, hanging up",
                   (long long)(idle / DW_NSEC_PER_SEC));
            dw__hang_up(st->wsi);
        } else if (idle >= ping_after && st->ping_sent_at <= st->last_activity) {
            st->ping_sent_at = now;
            st->want_ping = true;
            lws_callback_on_writable(st->wsi);
        }
    }
}

size_t dw__stream_count(struct dw_server *srv)
{
    size_t n = 0;

    for (const struct dw_stream *st = srv->stream_list; st; st = st->next)
        n++;
    return n;
}
