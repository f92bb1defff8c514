/*
 * bus — DESIGN: one Redis pub/sub channel between the nodes; bus.h says what it promises.
 *
 * A message on the channel is one header line and the message's JSON text:
 *   "DW1 <node> <target u|c|a> <type> <flags> <seq> <name>\n<text>"
 * node, name (a user id or a channel: no spaces, proto.h) and the numbers hold no space, so the
 * line splits on spaces; the text is sent as it is (the frame is built again on the receiving
 * node, the same bytes). A node skips what it published itself: it delivered that locally
 * already, before publishing it, so local delivery never waits for Redis.
 *
 * Threads: the publisher owns its connection and the queue's consumer side; the subscriber owns
 * the other connection. The queue is a mutex and a condition variable (producers queue one
 * entry per message sent, and the hot fan-out path stays lock-free: the hub queues once per
 * send, not per recipient). Both threads sleep between reconnection attempts on the same
 * condition variable, so a stop wakes them; the subscriber, blocked reading its socket, is
 * woken by shutting that socket down.
 */
#define DW_LOG_MODULE "bus"
#include "dealwire/bus.h"
#include "dealwire/hub.h"
#include "dealwire/log.h"
#include "dealwire/mem.h"
#include "dealwire/msg.h"
#include "dealwire/proto.h"
#include "dealwire/rcu.h"
#include "dealwire/thread.h"
#include "dealwire/time.h"
#include "dealwire/wake.h"
#include "hub_int.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <hiredis/hiredis.h>

#define CONNECT_TIMEOUT_S 2
#define BACKOFF_MIN_NS    (DW_NSEC_PER_SEC / 4)
#define BACKOFF_MAX_NS    (30 * DW_NSEC_PER_SEC)

struct entry {
    struct entry *next;
    struct dw_msg *msg; /* a reference */
    char target;
    char name[DW_USER_ID_MAX + 1];
};

struct dw_bus {
    char host[256];
    int port;
    char password[256];
    char node[128];
    struct dw_hub *hub;
    pthread_t pub_thread, sub_thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;        /* on CLOCK_MONOTONIC */
    struct entry *head, **tail; /* under lock */
    size_t queued_bytes;        /* under lock */
    bool stopping;              /* under lock */
    redisContext *pub, *sub;    /* each its thread's; sub's fd shut down under lock */
    _Atomic uint64_t published, received, dropped, reconnects;
    _Atomic int pub_up, sub_up;
};

/* ------------------------------------------------------------------------------------------
 * The URL and connecting
 * ------------------------------------------------------------------------------------------ */

struct url {
    char host[256];
    int port;
    char password[256];
};

static int parse_url(const char *url, struct url *u, char *why, size_t size)
{
    const char *p, *at, *slash, *colon;
    size_t n;

    memset(u, 0, sizeof(*u));
    u->port = 6379;
    if (!url || strncmp(url, "redis://", 8) != 0) {
        snprintf(why, size, "a Redis URL starts with redis:// (redis://[:password@]host[:port])");
        return -EINVAL;
    }
    p = url + 8;
    slash = strchr(p, '/');
    at = strchr(p, '@');
    if (at && (!slash || at < slash)) {
        const char *pw = memchr(p, ':', (size_t)(at - p));

        if (!pw || (size_t)(at - pw - 1) >= sizeof(u->password)) {
            snprintf(why, size, "the URL's user part must be :password");
            return -EINVAL;
        }
        memcpy(u->password, pw + 1, (size_t)(at - pw - 1));
        p = at + 1;
    }
    n = slash ? (size_t)(slash - p) : strlen(p);
    colon = memchr(p, ':', n);
    if (colon) {
        char *end;
        long port = strtol(colon + 1, &end, 10);

        if (end != p + n || port < 1 || port > 65535) {
            snprintf(why, size, "the port must be 1-65535");
            return -EINVAL;
        }
        u->port = (int)port;
        n = (size_t)(colon - p);
    }
    if (n == 0 || n >= sizeof(u->host)) {
        snprintf(why, size, "the URL has no host");
        return -EINVAL;
    }
    memcpy(u->host, p, n);
    return 0;
}

int dw_bus_check_url(const char *url, char *why, size_t size)
{
    struct url u;

    return parse_url(url, &u, why, size);
}

/* A connection to the bus's Redis, authenticated; NULL with why filled. */
static redisContext *open_redis(const struct dw_bus *bus, char *why, size_t size)
{
    struct timeval tv = {.tv_sec = CONNECT_TIMEOUT_S};
    redisContext *c = redisConnectWithTimeout(bus->host, bus->port, tv);
    redisReply *r;

    if (!c || c->err) {
        snprintf(why, size, "%s", c ? c->errstr : "out of memory");
        redisFree(c);
        return NULL;
    }
    if (bus->password[0]) {
        r = redisCommand(c, "AUTH %s", bus->password);
        if (!r || r->type == REDIS_REPLY_ERROR) {
            snprintf(why, size, "AUTH: %s", r ? r->str : c->errstr);
            freeReplyObject(r);
            redisFree(c);
            return NULL;
        }
        freeReplyObject(r);
    }
    return c;
}

/* Waits until the monotonic deadline or the stop (lock held). Returns true when stopping. */
static bool sleep_until(struct dw_bus *bus, int64_t deadline)
{
    struct timespec ts = {.tv_sec = (time_t)(deadline / DW_NSEC_PER_SEC),
                          .tv_nsec = (long)(deadline % DW_NSEC_PER_SEC)};

    while (!bus->stopping) {
        if (pthread_cond_timedwait(&bus->cond, &bus->lock, &ts) == ETIMEDOUT)
            break;
    }
    return bus->stopping;
}

static int64_t next_backoff(int64_t b)
{
    b = b ? b * 2 : BACKOFF_MIN_NS;
    return b > BACKOFF_MAX_NS ? BACKOFF_MAX_NS : b;
}

/* ------------------------------------------------------------------------------------------
 * Publishing
 * ------------------------------------------------------------------------------------------ */

static size_t entry_bytes(const struct entry *e)
{
    return e->msg->len + sizeof(*e);
}

void dw_bus_publish(struct dw_bus *bus, enum dw_bus_target target, const char *name,
                    struct dw_msg *msg)
{
    struct entry *e = dw_xmalloc(sizeof(*e));

    e->next = NULL;
    e->msg = msg;
    e->target = (char)target;
    snprintf(e->name, sizeof(e->name), "%s", name ? name : "");
    dw_msg_ref(msg);
    pthread_mutex_lock(&bus->lock);
    if (bus->stopping || bus->queued_bytes + entry_bytes(e) > DW_BUS_QUEUE_BYTES) {
        pthread_mutex_unlock(&bus->lock);
        atomic_fetch_add_explicit(&bus->dropped, 1, memory_order_relaxed);
        dw_msg_unref(msg);
        free(e);
        return;
    }
    bus->queued_bytes += entry_bytes(e);
    *bus->tail = e;
    bus->tail = &e->next;
    pthread_cond_broadcast(&bus->cond);
    pthread_mutex_unlock(&bus->lock);
}

static void free_entries(struct entry *e)
{
    while (e) {
        struct entry *next = e->next;

        dw_msg_unref(e->msg);
        free(e);
        e = next;
    }
}

/* The header line and the text of e, in *buf (grown as needed). Returns the length. */
static size_t encode(const struct dw_bus *bus, const struct entry *e, char **buf, size_t *cap)
{
    char head[512];
    int n = snprintf(head, sizeof(head), "DW1 %s %c %u %u %" PRId64 " %s\n", bus->node, e->target,
                     (unsigned)e->msg->type, (unsigned)e->msg->flags, e->msg->seq,
                     e->name[0] ? e->name : "-");
    size_t len = (size_t)n + e->msg->len;

    if (!*buf || len > *cap) {
        *cap = len * 2;
        *buf = dw_xrealloc(*buf, *cap);
    }
    memcpy(*buf, head, (size_t)n);
    memcpy(*buf + n, dw_msg_payload(e->msg), e->msg->len);
    return len;
}

/* Publishes batch, pipelined. Returns 0, or -EIO when the connection failed (the rest of the
 * batch is counted as dropped). */
static int publish_batch(struct dw_bus *bus, struct entry *batch, char **buf, size_t *cap)
{
    size_t n = 0, ok = 0;
    int r = 0;

    for (struct entry *e = batch; e; e = e->next) {
        size_t len = encode(bus, e, buf, cap);

        if (redisAppendCommand(bus->pub, "PUBLISH %s %b", DW_BUS_CHANNEL, *buf, len) != REDIS_OK)
            break;
        n++;
    }
    for (size_t i = 0; i < n; i++) {
        redisReply *reply = NULL;

        if (redisGetReply(bus->pub, (void **)&reply) != REDIS_OK) {
            r = -EIO;
            break;
        }
        ok += reply->type == REDIS_REPLY_INTEGER;
        freeReplyObject(reply);
    }
    atomic_fetch_add_explicit(&bus->published, ok, memory_order_relaxed);
    if (r < 0 || bus->pub->err)
        r = -EIO;
    return r;
}

static void *pub_main(void *arg)
{
    struct dw_bus *bus = arg;
    char *buf = NULL, why[256];
    size_t cap = 0;
    int64_t backoff = 0, next_try = 0;
    bool logged = false;

    dw_thread_set_role(DW_THREAD_WORKER);
    pthread_mutex_lock(&bus->lock);
    for (;;) {
        struct entry *batch;
        size_t count = 0;

        while (!bus->head && !bus->stopping)
            pthread_cond_wait(&bus->cond, &bus->lock);
        batch = bus->head;
        bus->head = NULL;
        bus->tail = &bus->head;
        bus->queued_bytes = 0;
        if (!batch && bus->stopping)
            break;
        pthread_mutex_unlock(&bus->lock);

        for (struct entry *e = batch; e; e = e->next)
            count++;
        if (!bus->pub && dw_now_mono_ns() >= next_try) {
            bus->pub = open_redis(bus, why, sizeof(why));
            if (bus->pub) {
                if (logged)
                    dw_log(DW_LOG_INFO, "Redis reachable again (publishing)");
                if (logged)
                    atomic_fetch_add_explicit(&bus->reconnects, 1, memory_order_relaxed);
                logged = false;
                backoff = 0;
            } else {
                backoff = next_backoff(backoff);
                next_try = dw_now_mono_ns() + backoff;
            }
        }
        if (bus->pub && publish_batch(bus, batch, &buf, &cap) < 0) {
            snprintf(why, sizeof(why), "%s", bus->pub->errstr);
            redisFree(bus->pub);
            bus->pub = NULL;
            backoff = next_backoff(backoff);
            next_try = dw_now_mono_ns() + backoff;
        }
        atomic_store_explicit(&bus->pub_up, bus->pub != NULL, memory_order_relaxed);
        if (!bus->pub) {
            /* Nothing of this batch is known to have gone out. */
            atomic_fetch_add_explicit(&bus->dropped, count, memory_order_relaxed);
            if (!logged)
                dw_log(DW_LOG_WARN,
                       "Redis unreachable at %s:%d (%s): live messages are not shared with the "
                       "other nodes until it is back (retrying with backoff)",
                       bus->host, bus->port, why);
            logged = true;
        }
        free_entries(batch);
        pthread_mutex_lock(&bus->lock);
    }
    pthread_mutex_unlock(&bus->lock);
    free(buf);
    return NULL;
}

/* ------------------------------------------------------------------------------------------
 * Receiving
 * ------------------------------------------------------------------------------------------ */

/* The header line's fields: "DW1", node, target, type, flags, seq, name. */
#define HEAD_FIELDS 7

/* Splits line (NUL-terminated, changed) at spaces into exactly HEAD_FIELDS fields. */
static bool split_head(char *line, char *field[HEAD_FIELDS])
{
    int n = 0;

    for (char *save = NULL, *tok = strtok_r(line, " ", &save); tok;
         tok = strtok_r(NULL, " ", &save)) {
        if (n == HEAD_FIELDS)
            return false;
        field[n++] = tok;
    }
    return n == HEAD_FIELDS;
}

/* A whole decimal number in [min, max]. */
static bool parse_num(const char *s, long long min, long long max, long long *out)
{
    char *end;

    errno = 0;
    *out = strtoll(s, &end, 10);
    return errno == 0 && end != s && *end == '\0' && *out >= min && *out <= max;
}

/* Delivers one message from the channel (text len bytes) unless this node published it. */
static void deliver(struct dw_bus *bus, const char *text, size_t len)
{
    const char *nl = memchr(text, '\n', len);
    char head[512], *f[HEAD_FIELDS];
    long long type, flags, seq;
    const char *name;
    struct dw_msg *m;

    if (!nl || (size_t)(nl - text) >= sizeof(head))
        return;
    memcpy(head, text, (size_t)(nl - text));
    head[nl - text] = '\0';
    if (!split_head(head, f) || strcmp(f[0], "DW1") != 0 || strlen(f[2]) != 1 ||
        !parse_num(f[3], 0, DW_MSG__COUNT - 1, &type) || !parse_num(f[4], 0, 255, &flags) ||
        !parse_num(f[5], 0, INT64_MAX, &seq) || strcmp(f[1], bus->node) == 0)
        return;
    name = f[6];
    m = dw_msg_new_text((enum dw_msg_type)type, (unsigned)flags, nl + 1,
                        len - (size_t)(nl + 1 - text));
    m->seq = seq;
    if (f[2][0] == DW_BUS_USER && dw_proto_user_id_is_valid(name))
        dw__hub_deliver_user(bus->hub, name, m);
    else if (f[2][0] == DW_BUS_CHANNEL_TARGET && dw_proto_channel_is_valid(name))
        dw__hub_deliver_channel(bus->hub, name, m);
    else if (f[2][0] == DW_BUS_ALL)
        dw__hub_deliver_all(bus->hub, m);
    dw_msg_unref(m);
    atomic_fetch_add_explicit(&bus->received, 1, memory_order_relaxed);
}

/* Subscribes c; false when the connection failed. */
static bool subscribe(redisContext *c)
{
    redisReply *r = redisCommand(c, "SUBSCRIBE %s", DW_BUS_CHANNEL);
    bool ok = r && r->type == REDIS_REPLY_ARRAY;

    freeReplyObject(r);
    return ok;
}

static void *sub_main(void *arg)
{
    struct dw_bus *bus = arg;
    int64_t backoff = 0;
    bool logged = false;
    char why[256];

    dw_thread_set_role(DW_THREAD_WORKER);
    dw_rcu_register();
    for (;;) {
        redisReply *reply = NULL;

        if (!bus->sub) {
            redisContext *c = open_redis(bus, why, sizeof(why));

            if (c && !subscribe(c)) {
                snprintf(why, sizeof(why), "SUBSCRIBE: %s", c->errstr);
                redisFree(c);
                c = NULL;
            }
            pthread_mutex_lock(&bus->lock);
            if (bus->stopping) {
                pthread_mutex_unlock(&bus->lock);
                redisFree(c);
                break;
            }
            bus->sub = c;
            if (!c) {
                backoff = next_backoff(backoff);
                if (sleep_until(bus, dw_now_mono_ns() + backoff)) {
                    pthread_mutex_unlock(&bus->lock);
                    break;
                }
                pthread_mutex_unlock(&bus->lock);
                continue;
            }
            pthread_mutex_unlock(&bus->lock);
            if (logged) {
                dw_log(DW_LOG_INFO, "Redis reachable again (receiving)");
                atomic_fetch_add_explicit(&bus->reconnects, 1, memory_order_relaxed);
            }
            logged = false;
            backoff = 0;
            atomic_store_explicit(&bus->sub_up, 1, memory_order_relaxed);
        }
        if (redisGetReply(bus->sub, (void **)&reply) != REDIS_OK) {
            bool stop;

            snprintf(why, sizeof(why), "%s", bus->sub->errstr);
            pthread_mutex_lock(&bus->lock);
            redisFree(bus->sub);
            bus->sub = NULL;
            stop = bus->stopping;
            pthread_mutex_unlock(&bus->lock);
            atomic_store_explicit(&bus->sub_up, 0, memory_order_relaxed);
            if (stop)
                break;
            if (!logged)
                dw_log(DW_LOG_WARN,
                       "lost Redis at %s:%d (%s): messages from the other nodes do not arrive "
                       "until it is back (retrying with backoff)",
                       bus->host, bus->port, why);
            logged = true;
            continue;
        }
        if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 3 &&
            reply->element[0]->type == REDIS_REPLY_STRING &&
            strcmp(reply->element[0]->str, "message") == 0 &&
            reply->element[2]->type == REDIS_REPLY_STRING) {
            dw_wake_batch_begin();
            deliver(bus, reply->element[2]->str, reply->element[2]->len);
            dw_wake_batch_end();
        }
        freeReplyObject(reply);
    }
    dw_rcu_unregister();
    return NULL;
}

/* ------------------------------------------------------------------------------------------
 * Start, counts, stop
 * ------------------------------------------------------------------------------------------ */

struct dw_bus *dw_bus_start(const char *url, struct dw_hub *hub, const char *node, char *why,
                            size_t size)
{
    struct dw_bus *bus;
    pthread_condattr_t attr;
    struct url u;
    char err[256];

    if (parse_url(url, &u, why, size) < 0)
        return NULL;
    bus = dw_xcalloc(1, sizeof(*bus));
    snprintf(bus->host, sizeof(bus->host), "%s", u.host);
    bus->port = u.port;
    snprintf(bus->password, sizeof(bus->password), "%s", u.password);
    snprintf(bus->node, sizeof(bus->node), "%s", node);
    bus->hub = hub;
    bus->tail = &bus->head;
    pthread_mutex_init(&bus->lock, NULL);
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&bus->cond, &attr);
    pthread_condattr_destroy(&attr);
    /* Both connections now, so that a wrong URL or a Redis that is not there stops the start. */
    bus->pub = open_redis(bus, err, sizeof(err));
    bus->sub = bus->pub ? open_redis(bus, err, sizeof(err)) : NULL;
    if (bus->sub && !subscribe(bus->sub))
        snprintf(err, sizeof(err), "SUBSCRIBE: %s",
                 bus->sub->errstr[0] ? bus->sub->errstr : "refused");
    if (!bus->pub || !bus->sub || bus->sub->err) {
        snprintf(why, size, "cannot reach Redis at %s:%d: %s", bus->host, bus->port, err);
        redisFree(bus->pub);
        redisFree(bus->sub);
        pthread_mutex_destroy(&bus->lock);
        pthread_cond_destroy(&bus->cond);
        free(bus);
        return NULL;
    }
    atomic_store(&bus->pub_up, 1);
    atomic_store(&bus->sub_up, 1);
    if (pthread_create(&bus->pub_thread, NULL, pub_main, bus) != 0)
        dw_panic("cannot start the bus publisher thread");
    if (pthread_create(&bus->sub_thread, NULL, sub_main, bus) != 0)
        dw_panic("cannot start the bus subscriber thread");
    dw_log(DW_LOG_INFO, "sharing messages with the other nodes over Redis at %s:%d (channel %s)",
           bus->host, bus->port, DW_BUS_CHANNEL);
    return bus;
}

void dw_bus_counts(const struct dw_bus *bus, struct dw_bus_counts *out)
{
    memset(out, 0, sizeof(*out));
    if (!bus)
        return;
    out->published = atomic_load_explicit(&bus->published, memory_order_relaxed);
    out->received = atomic_load_explicit(&bus->received, memory_order_relaxed);
    out->dropped = atomic_load_explicit(&bus->dropped, memory_order_relaxed);
    out->reconnects = atomic_load_explicit(&bus->reconnects, memory_order_relaxed);
    out->connected = atomic_load_explicit(&bus->pub_up, memory_order_relaxed) &&
                     atomic_load_explicit(&bus->sub_up, memory_order_relaxed);
}

void dw_bus_stop(struct dw_bus *bus)
{
    if (!bus)
        return;
    pthread_mutex_lock(&bus->lock);
    bus->stopping = true;
    pthread_cond_broadcast(&bus->cond);
    if (bus->sub)
        shutdown(bus->sub->fd, SHUT_RDWR); /* wakes the subscriber's read */
    pthread_mutex_unlock(&bus->lock);
    pthread_join(bus->pub_thread, NULL);
    pthread_join(bus->sub_thread, NULL);
    redisFree(bus->pub);
    redisFree(bus->sub);
    free_entries(bus->head);
    pthread_mutex_destroy(&bus->lock);
    pthread_cond_destroy(&bus->cond);
    free(bus);
}
