/*
 * scenario — DESIGN: what the bench publishes to whom, and what it expects back.
 *
 * Streams: every message carries its producer p (the publisher connection, which the server
 * reads in order, one request or up to --in-flight at a time, so its messages are ordered) and
 * a seq that counts p's messages to one key: everyone (fanout, paced), one user (targeted) or
 * one channel (channels). A connection keeps one stream (next expected seq + a 64-bit window
 * of what arrived below it) per producer and key it receives, so order, gaps and duplicates
 * are checked per connection and producer. Completeness is counted: what was published to a
 * connection, minus what reached it once.
 *
 * Several nodes (--ports): the clients are spread over dealwire nodes that share messages over
 * Redis, and the publishers post to one of them (--publish-port). Every client is owed every
 * message published to it, whichever node it is on, so deliveries, streams, flow control and
 * completeness are counted as with one node; only a publish answer's "recipients" differs: it
 * counts the clients of the node that answered (the "local" ones), the other nodes deliver
 * after it. A request therefore carries two counts: the recipients its answer must say, and the
 * deliveries it owes over all the nodes.
 *
 * Flow control: a connection may have at most W messages published to it and not yet
 * received (what a publisher connection may have outstanding is bounded apart, by
 * --in-flight). For fanout, that is "sent - min(received) <= W", and the minimum is kept in
 * O(1) per delivery with a ring counting connections per received value over [min, min + W].
 * For targeted and channels, each recipient's own count is checked before it is picked.
 *
 * Receive path: one word-at-a-time search for "producer": and a few hand-rolled integer parses; no
 * JSON parser and no allocation per message.
 *
 * Replay (--scenario replay): an untimed set-up first stores --backlog critical price alerts
 * to each of the N users while none is connected, user i's all through publisher i % P, in
 * order, so the daemon must number them first..first + M - 1 in that order (checked on every
 * publish answer: each item's "seq"). Then the N connections open with ?last_seq=K, and each
 * must get exactly the seqs (K, L] in order, L being its welcome's last_seq, which must be the
 * last seq the answers gave its user; a message whose seq the set-up saw must be the item that
 * was given that seq ("pseq"). A connection is caught up when it has them all: the time from
 * its connect() to then is its time to catch up. One stream per connection (next expected
 * seq, the 64 below it) tells gaps, duplicates and order apart as in the other scenarios.
 *
 * nchan (--server nchan): a request body is the message itself, delivered as is, so the bench
 * appends the "timestamp" that dealwire would add: a delivered frame has the same fields and
 * the same size with both servers. Connections subscribe to the channel "all" (fanout, paced,
 * idle, connect) or to their own channel <prefix><i> (targeted); a message is published to
 * that channel. nchan answers 201/202 without a recipient count, so none is checked.
 *
 * --channel NAME (fanout, paced): the messages to everyone go to one channel instead, which
 * every client joins before publishing starts (dealwire: a subscribe command each, confirmed;
 * nchan: /sub/NAME), so that other clients of the same server (bench/compare's storm, another
 * bench process) receive none of them. Flow control and checks are those of "all".
 *
 * --marks: the first SIGUSR1 opens a span and the second closes it (main.c takes them in the
 * loop); a delivery whose message was published inside the span ("t" between the two) is also
 * recorded apart, so that one run tells the latency while something else happened (another
 * process's connection storm) from the rest.
 */
#include "bench.h"
#include "http.h"
#include "ws.h"

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* The server's ,"timestamp":"2026-11-26T01:02:03.123456Z" added to every message. */
#define TIMESTAMP_LEN 42
/* Recipient draws before a targeted or channel request goes out shorter than the batch. */
#define PICK_TRIES 8

const char *dwb_scenario_name(enum dwb_scenario s)
{
    static const char *const names[] = {"fanout", "targeted", "channels", "paced",
                                        "idle",   "connect",  "replay"};

    return (unsigned)s < sizeof(names) / sizeof(names[0]) ? names[s] : "?";
}

const char *dwb_server_name(enum dwb_server s)
{
    return s == DWB_SERVER_NCHAN ? "nchan" : "dealwire";
}

static bool nchan(const struct dwb_run *run)
{
    return run->opt.server == DWB_SERVER_NCHAN;
}

const char *dwb_scenario_all_channel(const struct dwb_run *run)
{
    return run->opt.channel ? run->opt.channel : "all";
}

void dwb_scenario_channel(const struct dwb_run *run, const struct dwb_conn *c, char *out,
                          size_t size)
{
    if (run->opt.scenario == DWB_TARGETED)
        snprintf(out, size, "%s%u", run->opt.prefix, c->index);
    else
        snprintf(out, size, "%s", dwb_scenario_all_channel(run));
}

static bool publishes(const struct dwb_run *run)
{
    return run->opt.scenario != DWB_IDLE && run->opt.scenario != DWB_CONNECT;
}

/* Messages to one user each, with a "to" member: targeted, and the replay's set-up. */
static bool per_user(const struct dwb_run *run)
{
    return run->opt.scenario == DWB_TARGETED || run->opt.scenario == DWB_REPLAY;
}

static bool replay(const struct dwb_run *run)
{
    return run->opt.scenario == DWB_REPLAY;
}

static bool to_all(const struct dwb_run *run)
{
    return run->opt.scenario == DWB_FANOUT || run->opt.scenario == DWB_PACED;
}

unsigned dwb_scenario_window(const struct dwb_run *run)
{
    switch (run->opt.scenario) {
    case DWB_FANOUT:
    case DWB_TARGETED:
    case DWB_CHANNELS:
        return run->opt.window;
    default:
        return 0;
    }
}

/* ---- set-up ---------------------------------------------------------------------------- */

static int init_channels(struct dwb_run *run)
{
    unsigned n = run->opt.conns, m = run->opt.channels, s = run->opt.subs;
    uint32_t *perm = malloc(m * sizeof(*perm));

    run->sub_block = malloc((size_t)n * s * sizeof(*run->sub_block));
    run->members = calloc(m, sizeof(*run->members));
    run->nmembers = calloc(m, sizeof(*run->nmembers));
    run->live_channels = malloc(m * sizeof(*run->live_channels));
    if (!perm || !run->sub_block || !run->members || !run->nmembers || !run->live_channels) {
        free(perm);
        return -ENOMEM;
    }
    for (unsigned k = 0; k < m; k++)
        perm[k] = k;
    /* s distinct channels per connection: the first s steps of a Fisher-Yates shuffle. */
    for (unsigned i = 0; i < n; i++) {
        struct dwb_conn *c = &run->conns[i];

        c->subs = run->sub_block + (size_t)i * s;
        for (unsigned j = 0; j < s; j++) {
            /* m - j > 0 as j < s <= m (main.c refuses --subs-per-conn > --channels), bounds
             * the analyzer does not chain. NOLINTNEXTLINE(clang-analyzer-core.DivideZero) */
            unsigned r = j + (unsigned)(dwb_rand(run) % (m - j));
            uint32_t t = perm[j];

            perm[j] = perm[r];
            perm[r] = t;
            c->subs[j] = perm[j];
            run->nmembers[perm[j]]++;
        }
    }
    free(perm);
    for (unsigned k = 0; k < m; k++) {
        if (run->nmembers[k] == 0)
            continue;
        run->members[k] = malloc(run->nmembers[k] * sizeof(**run->members));
        if (!run->members[k])
            return -ENOMEM;
        run->live_channels[run->nlive++] = k;
        run->nmembers[k] = 0;
    }
    for (unsigned i = 0; i < n; i++) {
        for (unsigned j = 0; j < s; j++) {
            uint32_t k = run->conns[i].subs[j];

            run->members[k][run->nmembers[k]++] = i;
        }
    }
    return 0;
}

int dwb_scenario_init(struct dwb_run *run)
{
    unsigned p = run->opt.publishers, per_conn;

    if (!publishes(run))
        return 0;
    run->pad = malloc(run->opt.msg_size + 1);
    if (!run->pad)
        return -ENOMEM;
    memset(run->pad, 'x', run->opt.msg_size);
    run->pad[run->opt.msg_size] = '\0';

    run->keys = 1;
    run->slots = 1;
    if (run->opt.scenario == DWB_TARGETED)
        run->keys = run->opt.conns;
    if (run->opt.scenario == DWB_CHANNELS) {
        run->keys = run->opt.channels;
        run->slots = run->opt.subs;
        if (init_channels(run) < 0)
            return -ENOMEM;
    }
    run->seqs = calloc((size_t)p * run->keys, sizeof(*run->seqs));
    /* replay: one stream per connection, the user's seqs, from --last-seq + 1 */
    per_conn = replay(run) ? 1 : run->slots * p;
    run->streams = calloc((size_t)run->opt.conns * per_conn, sizeof(*run->streams));
    if (!run->seqs || !run->streams)
        return -ENOMEM;
    for (unsigned i = 0; i < run->opt.conns; i++) {
        run->conns[i].streams = run->streams + (size_t)i * per_conn;
        run->conns[i].welcome_seq = -1;
        if (replay(run))
            run->conns[i].streams[0].next = run->opt.last_seq + 1;
    }

    if (run->opt.scenario == DWB_FANOUT) {
        uint32_t size = 2;

        while (size < run->opt.window + run->opt.batch + 2)
            size *= 2;
        run->ring = calloc(size, sizeof(*run->ring));
        if (!run->ring)
            return -ENOMEM;
        run->ring_mask = size - 1;
    }
    return 0;
}

void dwb_scenario_free(struct dwb_run *run)
{
    if (run->members) {
        for (unsigned k = 0; k < run->opt.channels; k++)
            free(run->members[k]);
    }
    free(run->members);
    free(run->nmembers);
    free(run->live_channels);
    free(run->sub_block);
    free(run->seqs);
    free(run->streams);
    free(run->ring);
    free(run->pad);
}

void dwb_scenario_subscribe(struct dwb_run *run)
{
    char cmd[128];

    for (unsigned i = 0; i < run->opt.conns; i++) {
        struct dwb_conn *c = &run->conns[i];

        if (c->state != DWB_WS_READY)
            continue;
        for (unsigned j = 0; j < run->opt.subs && c->ev.fd >= 0; j++) {
            /* --channel: the one channel (opt.subs is 1); else the connection's j-th */
            int n = run->opt.channel
                        ? snprintf(cmd, sizeof(cmd), "{\"type\":\"subscribe\",\"channel\":\"%s\"}",
                                   run->opt.channel)
                        : snprintf(cmd, sizeof(cmd),
                                   "{\"type\":\"subscribe\",\"channel\":\"ch%u\"}", c->subs[j]);

            if (dwb_ws_send_text(run, c, cmd, (size_t)n) < 0) {
                run->n.subs_failed++;
                dwb_note_error(run, "connection %u: cannot send subscribe", c->index);
            }
        }
    }
}

unsigned dwb_scenario_subscribed(const struct dwb_run *run)
{
    return run->subscribed;
}

/* ---- fanout flow control --------------------------------------------------------------- */

static void ring_advance(struct dwb_run *run)
{
    while (run->min_recv < run->sent_all && run->ring[run->min_recv & run->ring_mask] == 0)
        run->min_recv++;
}

/* The fanout ring starts when publishing does: every ready connection has received 0. */
static void ring_start(struct dwb_run *run)
{
    if (run->ring && run->sent_all == 0 && run->ring[0] == 0)
        run->ring[0] = run->ready;
}

/* ---- publishing ------------------------------------------------------------------------ */

/* Connection with room for one more message, or NULL after PICK_TRIES draws. */
static struct dwb_conn *pick_conn(struct dwb_run *run)
{
    for (int i = 0; i < PICK_TRIES; i++) {
        struct dwb_conn *c = &run->conns[dwb_rand(run) % run->opt.conns];

        if (c->state == DWB_WS_READY && c->expected - c->recv < run->opt.window)
            return c;
    }
    return NULL;
}

/* Live channel whose members all have room, or -1 after PICK_TRIES draws. */
static long pick_channel(struct dwb_run *run)
{
    for (int i = 0; i < PICK_TRIES && run->nlive > 0; i++) {
        uint32_t k = run->live_channels[dwb_rand(run) % run->nlive];
        bool room = true;

        for (uint32_t j = 0; j < run->nmembers[k] && room; j++) {
            const struct dwb_conn *c = &run->conns[run->members[k][j]];

            room = c->expected - c->recv < run->opt.window;
        }
        if (room)
            return k;
    }
    return -1;
}

/* ,"timestamp":"2026-11-26T01:02:03.123456Z" (TIMESTAMP_LEN bytes), as dealwire adds it. */
static void format_timestamp(char out[64])
{
    struct timespec ts;
    struct tm tm;
    char date[24];

    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out, 64, ",\"timestamp\":\"%.19s.%06ldZ\"", date, (long)(ts.tv_nsec / 1000) % 1000000);
}

/* Appends one publish object to out (nchan: one message); returns its length. */
static int format_item(struct dwb_run *run, char *out, size_t room, unsigned p, uint32_t key,
                       uint32_t seq, int64_t t)
{
    char target[192];
    const char *type = per_user(run) ? "price_alert" : "deal_alert";
    int head, msg, pad;

    if (per_user(run))
        snprintf(target, sizeof(target), "{\"user_id\":\"%s%u\"}", run->opt.prefix, key);
    else if (run->opt.scenario == DWB_CHANNELS)
        snprintf(target, sizeof(target), "{\"channel\":\"ch%u\"}", key);
    else if (run->opt.channel)
        snprintf(target, sizeof(target), "{\"channel\":\"%s\"}", run->opt.channel);
    else
        snprintf(target, sizeof(target), "\"all\"");
    /* nchan: the body is the message; the channel is in the URL. */
    head = nchan(run) ? 0 : snprintf(out, room, "{\"target\":%s,\"message\":", target);
    msg = snprintf(out + head, room - (size_t)head,
                   "{\"type\":\"%s\",\"deal_id\":\"bench-%u-%u\",\"title\":\"Bench deal %u\","
                   "\"price\":%u.%02u,\"producer\":%u,\"pseq\":%u,",
                   type, p, seq, seq, 100 + seq % 900, seq % 100, p, seq);
    if (per_user(run))
        msg += snprintf(out + head + msg, room - (size_t)(head + msg), "\"to\":%u,", key);
    else if (run->opt.scenario == DWB_CHANNELS)
        msg += snprintf(out + head + msg, room - (size_t)(head + msg), "\"ch\":%u,", key);
    msg += snprintf(out + head + msg, room - (size_t)(head + msg), "\"t\":%lld", (long long)t);
    /* Delivered: this + ,"pad":"<pad>" + the server's timestamp + }. */
    pad = (int)run->opt.msg_size - msg - 10 - TIMESTAMP_LEN;
    if (replay(run)) /* the daemon's "seq":N, in front, N about the user's count so far */
        pad -= snprintf(NULL, 0, "\"seq\":%u,", seq + 1);
    if (pad < 0)
        pad = 0;
    if (nchan(run)) {
        char stamp[64];

        format_timestamp(stamp);
        return msg + snprintf(out + msg, room - (size_t)msg, ",\"pad\":\"%.*s\"%s}", pad, run->pad,
                              stamp);
    }
    return head + msg +
           snprintf(out + head + msg, room - (size_t)(head + msg), ",\"pad\":\"%.*s\"}%s}", pad,
                    run->pad, replay(run) ? ",\"critical\":true" : "");
}

/* How many messages the next request may carry now (0: none). */
static unsigned room_now(struct dwb_run *run, int64_t now)
{
    uint64_t k = run->opt.batch, left;

    if (run->opt.messages) {
        left = run->opt.messages - run->n.sent_msgs;
        if (left < k)
            k = left;
    }
    if (run->opt.scenario == DWB_FANOUT) {
        uint64_t out = run->sent_all - run->min_recv;

        /* Whole batches only (W >= batch), unless the message count ends sooner. */
        if (out + k > run->opt.window)
            return 0;
    } else if (run->opt.scenario == DWB_PACED) {
        double elapsed = run->pub_start ? (double)(now - run->pub_start) / 1e9 : 0;
        uint64_t due = (uint64_t)(elapsed * run->opt.rate) + 1;

        if (due <= run->n.sent_msgs)
            return 0;
        if (due - run->n.sent_msgs < k)
            k = due - run->n.sent_msgs;
    }
    return (unsigned)k;
}

/* Builds and queues one request on pub. Returns the messages sent (0: nothing may go now). */
static unsigned publish_one(struct dwb_run *run, struct dwb_pub *pub, int64_t now)
{
    unsigned want = room_now(run, now), k = 0, p = pub->index;
    bool array = run->opt.batch > 1;
    char *body = dwb_pub_body(pub), *w = body;
    size_t cap = pub->body_cap;
    uint64_t recipients = 0, deliveries = 0;
    char path[160] = "/api/publish";
    struct dwb_req *req = dwb_pub_next(pub);
    int err;

    if (want == 0 || !req)
        return 0;
    if (array)
        *w++ = '[';
    for (; k < want; k++) {
        uint32_t key = 0;

        if (run->opt.scenario == DWB_TARGETED) {
            uint64_t u = run->opt.users > run->opt.conns ? dwb_rand(run) % run->opt.users : 0;
            struct dwb_conn *c;

            if (u >= run->opt.conns) {
                /* A user with no connection: a lookup that finds nobody, 0 recipients. */
                key = (uint32_t)u;
                run->n.offline++;
                req->targets[k] = key;
                if (k > 0)
                    *w++ = ',';
                w += format_item(run, w, cap - (size_t)(w - body) - 2, p, key, 0, now);
                continue;
            }
            c = pick_conn(run);
            if (!c)
                break;
            key = c->index;
            c->expected++;
            deliveries++;
            recipients += c->local;
        } else if (run->opt.scenario == DWB_CHANNELS) {
            long ch = pick_channel(run);

            if (ch < 0)
                break;
            key = (uint32_t)ch;
            for (uint32_t j = 0; j < run->nmembers[key]; j++) {
                struct dwb_conn *m = &run->conns[run->members[key][j]];

                if (m->state == DWB_WS_READY) {
                    m->expected++;
                    deliveries++;
                    recipients += m->local;
                }
            }
        } else {
            deliveries += run->ready;
            recipients += run->ready_local;
        }
        req->targets[k] = key;
        if (k > 0)
            *w++ = ',';
        w += format_item(run, w, cap - (size_t)(w - body) - 2, p, key,
                         run->seqs[(size_t)p * run->keys + key]++, now);
    }
    if (k == 0)
        return 0;
    if (array)
        *w++ = ']';
    if (to_all(run))
        run->sent_all += k;
    run->expected_total += deliveries;
    run->n.sent_msgs += k;
    run->n.sent_reqs++;
    req->nmsgs = k;
    req->want_recipients = recipients;
    req->want_deliveries = deliveries;
    if (!run->pub_start)
        run->pub_start = now;
    if (run->mark_open && !run->mark_close)
        run->marked_msgs += k; /* --marks: published inside the span */
    if (nchan(run)) {
        /* One message per request (no batch): its channel is the path. */
        if (run->opt.scenario == DWB_TARGETED)
            snprintf(path, sizeof(path), "/pub/%s%u", run->opt.prefix, req->targets[0]);
        else
            snprintf(path, sizeof(path), "/pub/%s", dwb_scenario_all_channel(run));
    }
    err = dwb_pub_send(run, pub, path, (size_t)(w - body));
    if (err < 0) {
        dwb_note_error(run, "publisher %u: send: %s", p, strerror(-err));
        run->n.http_errors++;
        run->aborted = true; /* its messages stay expected: the drain gives up on them */
    }
    return k;
}

/* ---- replay: the set-up --------------------------------------------------------------- */

/* The next set-up message of pub: its user (i % P == pub) and its index among the user's
 * messages. Returns false when pub has sent them all. */
static bool setup_next(const struct dwb_run *run, const struct dwb_pub *pub, uint32_t *user,
                       uint32_t *k)
{
    uint64_t u = pub->index + pub->cursor / run->opt.backlog * run->opt.publishers;

    if (u >= run->opt.conns)
        return false;
    *user = (uint32_t)u;
    *k = (uint32_t)(pub->cursor % run->opt.backlog);
    return true;
}

/* Queues pub's next batch of set-up messages: critical price alerts to users nobody is
 * connected as. Returns the messages sent (0: pub has sent all of its own, or has no room). */
static unsigned publish_setup(struct dwb_run *run, struct dwb_pub *pub, int64_t now)
{
    char *body = dwb_pub_body(pub), *w = body;
    bool array = run->opt.batch > 1;
    struct dwb_req *req = dwb_pub_next(pub);
    uint32_t user, k;
    unsigned n = 0;
    int err;

    if (!req)
        return 0;
    if (array)
        *w++ = '[';
    for (; n < run->opt.batch && setup_next(run, pub, &user, &k); n++) {
        req->targets[n] = user;
        req->pseqs[n] = k;
        if (n > 0)
            *w++ = ',';
        w += format_item(run, w, pub->body_cap - (size_t)(w - body) - 2, pub->index, user, k, now);
        pub->cursor++;
    }
    if (n == 0)
        return 0;
    if (array)
        *w++ = ']';
    run->n.sent_msgs += n;
    run->n.sent_reqs++;
    req->nmsgs = n;
    req->want_recipients = req->want_deliveries = 0;
    err = dwb_pub_send(run, pub, "/api/publish", (size_t)(w - body));
    if (err < 0) {
        dwb_note_error(run, "publisher %u: send: %s", pub->index, strerror(-err));
        run->n.http_errors++;
        run->aborted = true;
    }
    return n;
}

void dwb_scenario_setup_start(struct dwb_run *run, int64_t now)
{
    run->setup_start = now;
    for (unsigned i = 0; i < run->opt.publishers; i++) {
        int err = dwb_pub_open(run, &run->pubs[i]);

        if (err < 0) {
            dwb_note_error(run, "publisher %u: connect: %s", i, strerror(-err));
            run->aborted = true;
        }
    }
}

bool dwb_scenario_setup_step(struct dwb_run *run, int64_t now)
{
    bool done = true;

    for (unsigned i = 0; i < run->opt.publishers && !run->aborted; i++) {
        struct dwb_pub *pub = &run->pubs[i];
        uint32_t user, k;
        bool more = setup_next(run, pub, &user, &k);
        int err;

        if (dwb_pub_is_opening(pub) || pub->nreqs > 0)
            done = false;
        if (more && pub->state == DWB_PUB_CLOSED) {
            /* an idle keep-alive connection the daemon closed: opened again */
            done = false;
            err = dwb_pub_open(run, pub);
            if (err < 0) {
                dwb_note_error(run, "publisher %u: connect: %s", i, strerror(-err));
                run->aborted = true;
            }
        } else if (more && pub->state == DWB_PUB_READY) {
            done = false;
            while (!run->aborted && publish_setup(run, pub, now) > 0)
                continue;
            dwb_pub_flush(run, pub);
        }
    }
    return done && !run->aborted;
}

/* The answer to a set-up request: 200, no recipient (nobody is connected as these users),
 * and one "seq" per item, each user's following the last one it got. */
static void setup_answer(struct dwb_run *run, const struct dwb_pub *pub, const struct dwb_req *req,
                         long long recipients, const char *body, size_t len)
{
    const char *q = body, *end = body + len;

    for (uint32_t i = 0; i < req->nmsgs; i++) {
        const char *v = memmem(q, (size_t)(end - q), "\"seq\":", 6);
        struct dwb_conn *c = &run->conns[req->targets[i]];
        uint32_t k = req->pseqs[i];
        long long seq;
        char *e;

        if (!v) {
            dwb_note_error(run,
                           "the replay scenario needs a daemon started with --db: the answer "
                           "to a critical message to user %s%u has no \"seq\": %.*s",
                           run->opt.prefix, req->targets[i], (int)(len > 120 ? 120 : len), body);
            run->n.http_errors++;
            run->aborted = true;
            return;
        }
        seq = strtoll(v + 6, &e, 10);
        q = e;
        run->n.stored++;
        if (k == 0 && seq > 0) {
            c->seq_first = seq;
            c->seq_answers = 1;
        } else if (c->seq_first > 0 && c->seq_answers == k && seq == c->seq_first + k) {
            c->seq_answers++;
        } else {
            run->n.answer_seq_bad++;
            dwb_note_error(run,
                           "publish answer: message %u to user %s%u (one publisher, in order) got "
                           "seq %lld, expected %lld",
                           k, run->opt.prefix, req->targets[i], seq,
                           c->seq_first > 0 ? (long long)c->seq_first + k : 1);
        }
    }
    if (recipients != 0) {
        run->n.recipient_mismatch++;
        dwb_note_error(run,
                       "publisher %u: %lld recipients, expected 0 (is a client connected as one "
                       "of the users %s<i>?)",
                       pub->index, recipients, run->opt.prefix);
    }
}

bool dwb_scenario_publish_done(const struct dwb_run *run, int64_t now)
{
    if (run->aborted)
        return true;
    if (run->opt.messages && run->n.sent_msgs >= run->opt.messages)
        return true;
    return run->opt.duration > 0 && run->pub_start &&
           (double)(now - run->pub_start) >= run->opt.duration * 1e9;
}

void dwb_scenario_pump(struct dwb_run *run, int64_t now)
{
    if (run->phase != DWB_PHASE_PUBLISH)
        return;
    ring_start(run);
    for (unsigned i = 0; i < run->opt.publishers; i++) {
        struct dwb_pub *pub = &run->pubs[i];
        bool stalled = false;
        int err;

        if (dwb_scenario_publish_done(run, now))
            return;
        if (pub->state == DWB_PUB_CLOSED) {
            err = dwb_pub_open(run, pub);
            if (err < 0) {
                dwb_note_error(run, "publisher %u: connect: %s", i, strerror(-err));
                run->aborted = true;
            }
            continue;
        }
        if (pub->state != DWB_PUB_READY)
            continue;
        while (dwb_pub_next(pub) && !dwb_scenario_publish_done(run, now)) {
            if (publish_one(run, pub, now) == 0) {
                stalled = true; /* flow control or pacing: the others would wait too */
                break;
            }
        }
        dwb_pub_flush(run, pub); /* what was queued, with one send() */
        if (stalled)
            return;
    }
}

bool dwb_publish_ok(const struct dwb_run *run, unsigned status)
{
    return nchan(run) ? status == 201 || status == 202 : status == 200;
}

void dwb_on_answer(struct dwb_run *run, struct dwb_pub *pub, const struct dwb_req *req,
                   unsigned status, long long recipients, const char *body, size_t len)
{
    int shown = (int)(len > 200 ? 200 : len);

    run->n.answered_reqs++;
    if (status != 0 && !dwb_publish_ok(run, status)) {
        if (replay(run) && status == 503)
            dwb_note_error(run,
                           "the replay scenario needs a daemon started with --db, its database "
                           "up: POST /api/publish answered 503: %.*s",
                           shown, body);
        else
            dwb_note_error(run, "publisher %u: %s %u: %.*s", pub->index,
                           run->opt.publish_mode == DWB_PUBLISH_WS ? "answer status" : "HTTP",
                           status, shown, body);
    }
    if (replay(run)) {
        if (status == 200) {
            setup_answer(run, pub, req, recipients, body, len);
        } else {
            run->n.http_errors++; /* the set-up cannot go on: what to replay is unknown */
            run->aborted = true;
        }
        return;
    }
    if (!dwb_publish_ok(run, status)) {
        /* A refused request delivered nothing (a batch is all or nothing): expect none of
         * it. Then stop: its seqs never arrive, so later ones would all look out of order. */
        run->n.http_errors++;
        run->aborted = true;
        if (status == 0)
            return; /* no answer: its fate is unknown, so it stays expected */
        run->expected_total -= req->want_deliveries;
        if (to_all(run))
            run->refused_all += req->nmsgs;
        for (uint32_t i = 0; i < req->nmsgs && !to_all(run); i++) {
            uint32_t key = req->targets[i];

            if (run->opt.scenario == DWB_TARGETED && key < run->opt.conns)
                run->conns[key].expected--; /* not an offline user's */
            for (uint32_t j = 0; run->opt.scenario == DWB_CHANNELS && j < run->nmembers[key]; j++) {
                struct dwb_conn *m = &run->conns[run->members[key][j]];

                if (m->state == DWB_WS_READY)
                    m->expected--;
            }
        }
        return;
    }
    if (nchan(run))
        return; /* no recipient count in nchan's answer */
    if (recipients < 0 || (unsigned long long)recipients != req->want_recipients) {
        run->n.recipient_mismatch++;
        dwb_note_error(run, "publisher %u: %lld recipients, expected %llu%s", pub->index,
                       recipients, (unsigned long long)req->want_recipients,
                       run->opt.nports > 1 ? " (the clients of --publish-port's node)" : "");
    }
}

/* ---- receiving ------------------------------------------------------------------------- */

/* The first occurrence of key (klen >= 8) in [p, end), or NULL. memmem's per-call set-up
 * costs more than the scan on ~100-byte messages, and this runs once per delivery: compare
 * the key's first 8 bytes as one word at each offset instead. */
static const char *find_key(const char *p, const char *end, const char *key, size_t klen)
{
    uint64_t want, have;

    memcpy(&want, key, 8);
    for (; end - p >= (ptrdiff_t)klen; p++) {
        memcpy(&have, p, 8);
        if (have == want && memcmp(p + 8, key + 8, klen - 8) == 0)
            return p;
    }
    return NULL;
}

/* Parses the unsigned integer after key (e.g. "pseq":) in [*p, end); advances *p past it.
 * The bench's keys come in the order it wrote them, so the key is usually right at *p (after
 * a comma): that costs one comparison, the search is the fallback. */
static bool take_uint(const char **p, const char *end, const char *key, size_t klen, uint64_t *out)
{
    const char *q = *p;
    uint64_t v = 0;
    int digits = 0;

    if (q < end && *q == ',')
        q++;
    if ((size_t)(end - q) < klen || memcmp(q, key, klen) != 0)
        q = klen >= 8 ? find_key(*p, end, key, klen) : memmem(*p, (size_t)(end - *p), key, klen);
    if (!q)
        return false;
    q += klen;
    while (q < end && *q == ' ')
        q++;
    for (; q < end && *q >= '0' && *q <= '9' && digits < 20; q++, digits++)
        v = v * 10 + (uint64_t)(*q - '0');
    *p = q;
    *out = v;
    return digits > 0;
}

/* Records seq s on st. Returns whether it is the first time s arrived. */
static bool stream_take(struct dwb_run *run, struct dwb_stream *st, uint64_t s)
{
    uint64_t d;

    if (s == st->next) {
        st->seen = st->seen << 1 | 1;
        st->next++;
        return true;
    }
    if (s > st->next) {
        /* A jump: what is skipped is missing, or will come late. */
        d = s - st->next;
        st->seen = d >= 63 ? 1 : (st->seen << (d + 1)) | 1;
        st->next = s + 1;
        run->n.ooo++;
        return true;
    }
    d = st->next - 1 - s;
    if (d < 64 && (st->seen >> d & 1)) {
        run->n.dup++;
        return false;
    }
    if (d < 64)
        st->seen |= (uint64_t)1 << d;
    run->n.ooo++;
    return true;
}

static void on_control(struct dwb_run *run, struct dwb_conn *c, const char *p, size_t n)
{
    if (memmem(p, n, "\"action\":\"subscribe\"", 20)) {
        if (++c->subs_ok == run->opt.subs)
            run->subscribed++;
        return;
    }
    if (memmem(p, n, "\"type\":\"error\"", 14)) {
        run->n.error_msgs++;
        dwb_note_error(run, "connection %u: %.*s", c->index, (int)(n > 200 ? 200 : n), p);
    }
    /* Anything else (heartbeat pong, ack) is not the bench's business. */
}

/* Where "producer": is in [p, end), or NULL. The messages differ by a few digits before it, so
 * the search starts a little before where it was last time, and from the start if that fails
 * (the key comes once per message, so the first hit from any earlier point is the key). */
static const char *find_producer(struct dwb_run *run, const char *p, const char *end)
{
    size_t from = run->producer_at > 16 ? run->producer_at - 16 : 0;
    const char *q = NULL;

    if (from < (size_t)(end - p))
        q = find_key(p + from, end, "\"producer\":", 11);
    if (!q && from > 0)
        q = find_key(p, end, "\"producer\":", 11);
    if (q)
        run->producer_at = (size_t)(q - p);
    return q;
}

/* replay: c has every seq it was owed. */
static void caught_up(struct dwb_run *run, struct dwb_conn *c, int64_t now)
{
    run->n.caught_up++;
    dwb_hist_record(&run->catchup, (uint64_t)(now - c->started_ns));
}

/* replay: the welcome says up to which seq the user's history goes (last_seq), which must be
 * the last seq the set-up's answers gave, and that all of it after --last-seq follows. */
static void replay_welcome(struct dwb_run *run, struct dwb_conn *c, int64_t now, const char *p,
                           size_t n)
{
    const char *v = p ? memmem(p, n, "\"last_seq\":", 11) : NULL, *at = v;
    uint64_t k = run->opt.last_seq, last;
    int64_t want = c->seq_first > 0 ? c->seq_first + c->seq_answers - 1 : -1;

    if (!v || !take_uint(&v, p + n, "\"last_seq\":", 11, &last) || last > INT64_MAX) {
        run->n.welcome_bad++;
        dwb_note_error(run,
                       "connection %u: a welcome without last_seq (the replay scenario needs a "
                       "daemon started with --db, its database up): %.*s",
                       c->index, (int)(n > 200 ? 200 : n), p ? p : "");
        return; /* expects nothing, and is never caught up: the run is incomplete */
    }
    c->welcome_seq = (int64_t)last;
    if ((int64_t)last != want || c->seq_answers != run->opt.backlog) {
        run->n.welcome_bad++;
        dwb_note_error(run,
                       "connection %u: welcome last_seq %llu, but the set-up's answers numbered "
                       "user %s%u's messages up to %lld",
                       c->index, (unsigned long long)last, run->opt.prefix, c->index,
                       (long long)want);
    }
    if (!memmem(p, n, "\"recovered\":true", 16)) {
        run->n.not_recovered++;
        dwb_note_error(run, "connection %u: ?last_seq=%llu, and the welcome says %.*s", c->index,
                       (unsigned long long)k, (int)(p + n - at > 100 ? 100 : p + n - at), at);
    }
    c->expected = last > k ? last - k : 0;
    run->expected_total += c->expected;
    if (c->expected == 0)
        caught_up(run, c, now);
}

/* replay: one message of the user's history, q at its "producer". */
static void replay_text(struct dwb_run *run, struct dwb_conn *c, const char *p, size_t n,
                        const char *q, int64_t now)
{
    const char *end = p + n, *s = p + 1;
    uint64_t seq, prod, pseq, to, t;

    if (!take_uint(&s, end, "\"seq\":", 6, &seq) ||
        !take_uint(&q, end, "\"producer\":", 11, &prod) ||
        !take_uint(&q, end, "\"pseq\":", 7, &pseq) || !take_uint(&q, end, "\"to\":", 5, &to) ||
        !take_uint(&q, end, "\"t\":", 4, &t)) {
        run->n.malformed++;
        return;
    }
    if (to != c->index) {
        run->n.misrouted++;
        dwb_note_error(run, "connection %u: seq %llu is a message to user %s%llu", c->index,
                       (unsigned long long)seq, run->opt.prefix, (unsigned long long)to);
        return;
    }
    if (c->welcome_seq < 0 || seq <= run->opt.last_seq || seq > (uint64_t)c->welcome_seq) {
        run->n.unexpected_seq++;
        dwb_note_error(run,
                       "connection %u: seq %llu, outside (%llu, %lld] (--last-seq, the "
                       "welcome's last_seq)",
                       c->index, (unsigned long long)seq, (unsigned long long)run->opt.last_seq,
                       (long long)c->welcome_seq);
        return;
    }
    if (c->seq_first > 0 && seq >= (uint64_t)c->seq_first &&
        seq - (uint64_t)c->seq_first < c->seq_answers && pseq != seq - (uint64_t)c->seq_first) {
        run->n.wrong_message++;
        dwb_note_error(run, "connection %u: seq %llu carries the set-up's message %llu, not %llu",
                       c->index, (unsigned long long)seq, (unsigned long long)pseq,
                       (unsigned long long)(seq - (uint64_t)c->seq_first));
    }
    if (!stream_take(run, &c->streams[0], seq))
        return;
    c->recv++;
    run->recv_total++;
    if (c->recv == c->expected)
        caught_up(run, c, now);
}

void dwb_on_text(struct dwb_run *run, struct dwb_conn *c, const char *p, size_t n, int64_t now)
{
    const char *end = p + n, *q = find_producer(run, p, end);
    uint64_t prod, seq, key = 0, t;
    unsigned slot = 0;
    bool ok;

    if (!q) {
        on_control(run, c, p, n);
        return;
    }
    if (replay(run)) {
        run->n.recv_msgs++;
        run->last_delivery = now;
        replay_text(run, c, p, n, q, now);
        return;
    }
    run->n.recv_msgs++;
    run->last_delivery = now;
    ok = take_uint(&q, end, "\"producer\":", 11, &prod) && take_uint(&q, end, "\"pseq\":", 7, &seq);
    if (ok && run->opt.scenario == DWB_TARGETED)
        ok = take_uint(&q, end, "\"to\":", 5, &key);
    else if (ok && run->opt.scenario == DWB_CHANNELS)
        ok = take_uint(&q, end, "\"ch\":", 5, &key);
    ok = ok && take_uint(&q, end, "\"t\":", 4, &t);
    if (!ok || prod >= run->opt.publishers || !c->streams) {
        run->n.malformed++;
        return;
    }
    if (t <= (uint64_t)now) {
        dwb_hist_record(&run->lat, (uint64_t)now - t);
        /* --marks: published inside the span, [open, close) as marked_msgs counts them (a
         * message of the tick that closes it went out after the close) */
        if (run->mark_open && (int64_t)t >= run->mark_open &&
            (!run->mark_close || (int64_t)t < run->mark_close))
            dwb_hist_record(&run->marked, (uint64_t)now - t);
    }

    if (run->opt.scenario == DWB_TARGETED && key != c->index) {
        run->n.misrouted++;
        return;
    }
    if (run->opt.scenario == DWB_CHANNELS) {
        while (slot < run->opt.subs && c->subs[slot] != key)
            slot++;
        if (slot == run->opt.subs) {
            run->n.misrouted++;
            return;
        }
    }
    if (!stream_take(run, &c->streams[(size_t)slot * run->opt.publishers + prod], seq))
        return;
    if (run->ring) {
        uint64_t old = c->recv;

        if (old + 1 > run->sent_all || old < run->min_recv) {
            run->n.malformed++; /* more unique messages than were ever published */
            return;
        }
        run->ring[old & run->ring_mask]--;
        run->ring[(old + 1) & run->ring_mask]++;
        ring_advance(run);
    }
    c->recv++;
    run->recv_total++;
}

/* ---- connection events ----------------------------------------------------------------- */

void dwb_on_ready(struct dwb_run *run, struct dwb_conn *c, int64_t now, const char *p, size_t n)
{
    run->ready++;
    run->ready_local += c->local;
    run->inflight--;
    run->n.connected++;
    run->connect_end = now;
    dwb_hist_record(&run->hs, (uint64_t)(now - c->started_ns));
    if (replay(run))
        replay_welcome(run, c, now, p, n);
}

void dwb_on_conn_failed(struct dwb_run *run, struct dwb_conn *c, bool was_ready)
{
    uint64_t expected = to_all(run) ? run->sent_all - run->refused_all : c->expected;

    if (!was_ready) {
        run->n.connect_failed++;
        run->inflight--;
        return;
    }
    run->n.lost++;
    run->ready--;
    run->ready_local -= c->local;
    c->lost = true;
    if (to_all(run))
        c->expected = expected; /* what it was owed when it was lost */
    if (run->ready == 0 && run->phase == DWB_PHASE_PUBLISH) {
        dwb_note_error(run, "every connection was lost");
        run->aborted = true; /* nobody left to publish to */
    }
    /* What it will never receive is not waited for; it is counted missing at the end. */
    if (publishes(run) && expected > c->recv)
        run->expected_total -= expected - c->recv;
    if (run->ring && run->ring[0] + run->sent_all > 0) {
        run->ring[c->recv & run->ring_mask]--;
        ring_advance(run);
    }
}

void dwb_scenario_missing(const struct dwb_run *run, unsigned port, uint64_t *missing,
                          uint64_t *extra)
{
    *missing = *extra = 0;
    if (!publishes(run))
        return;
    for (unsigned i = 0; i < run->opt.conns; i++) {
        const struct dwb_conn *c = &run->conns[i];
        bool owed_all = to_all(run) && !c->lost;
        uint64_t expected = owed_all ? run->sent_all - run->refused_all : c->expected;

        if (port && c->port != port)
            continue;
        if (c->recv < expected)
            *missing += expected - c->recv;
        else
            *extra += c->recv - expected;
    }
}
