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
 * Three more targets are the nodes' own, with type, flags and seq 0 and name "-": 's', a
 * node's figures (the text: {"connections":N,"users":N,"messages_sent":N,"started_at":NS});
 * 'r', "I dropped messages: catch up" (text {}); 'x', "I am stopping" (text {}). And 'o', an
 * operator's action on the user named (dw_bus_send_op), with the text
 * {"action":"disconnect","code":N,"reason":"...","ban_until":NS} (ban_until only when the
 * action sets or lifts a ban: 0 lifts it) or {"action":"subscribe","channel":"..."}. A node of
 * an older version ignores targets it does not know.
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
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>
#include <time.h>

#include <hiredis/hiredis.h>
#include <json-c/json.h>

#define CONNECT_TIMEOUT_S 2
/* A publish Redis has not answered within this is a lost connection (the answers to the
 * publish API wait for Redis: dw_bus_fence). */
#define PUBLISH_TIMEOUT_S 2
#define BACKOFF_MIN_NS    (DW_NSEC_PER_SEC / 4)
#define BACKOFF_MAX_NS    (30 * DW_NSEC_PER_SEC)

/* The nodes' own targets (the header comment). */
#define TARGET_FIGURES 's'
#define TARGET_DROPPED 'r'
#define TARGET_LEAVING 'x'
#define TARGET_OP      'o'
/* Not sent: a dw_bus_fence, called once what was queued before it is published. */
#define TARGET_FENCE 'f'

struct entry {
    struct entry *next;
    struct dw_msg *msg; /* a reference; NULL for a fence */
    char target;        /* enum dw_bus_target, one of the nodes' own, or TARGET_FENCE */
    bool routed;        /* this node delivers it when it comes back (dw_bus_publish) */
    bool sent;          /* Redis answered its PUBLISH (publish_batch) */
    char name[DW_USER_ID_MAX + 1];
    void (*fence)(void *arg);
    void *fence_arg;
};

static bool is_message(char target)
{
    return target == DW_BUS_USER || target == DW_BUS_CHANNEL_TARGET || target == DW_BUS_ALL;
}

struct dw_bus {
    char host[256];
    int port;
    char password[256];
    char node[128];
    char self[160]; /* "<node>/<16 hex digits drawn at start>": what marks its messages */
    struct dw_hub *hub;
    struct dw_bus_hooks hooks;
    pthread_t pub_thread, sub_thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;        /* on CLOCK_MONOTONIC */
    struct entry *head, **tail; /* under lock */
    size_t queued_bytes;        /* under lock */
    bool stopping;              /* under lock */
    redisContext *pub, *sub;    /* each its thread's; sub's fd shut down under lock */
    _Atomic uint64_t published, received, dropped, reconnects, catch_ups_asked, drops_announced;
    _Atomic uint64_t ops_sent, ops_received, ops_dropped;
    _Atomic int pub_up, sub_up;
    _Atomic int owe_notice;      /* messages were dropped since the others were last told */
    _Atomic int namesake_warned; /* another node has this one's name (logged once) */
    /* The other nodes' figures, written by the subscriber. */
    pthread_mutex_t peers_lock;
    struct dw_bus_peer peers[DW_BUS_PEERS_MAX]; /* under peers_lock; node[0] == 0: free */
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

/* A connection to the bus's Redis, authenticated and named "dealwire-<role>@<node>" (what
 * CLIENT LIST shows an operator); NULL with why filled. */
static redisContext *open_redis(const struct dw_bus *bus, const char *role, char *why, size_t size)
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
    r = redisCommand(c, "CLIENT SETNAME dealwire-%s@%s", role, bus->node);
    if (!r || c->err) {
        snprintf(why, size, "%s", c->errstr);
        freeReplyObject(r);
        redisFree(c);
        return NULL;
    }
    freeReplyObject(r); /* a refusal (a proxy without CLIENT) costs only the name */
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

/* Delivers m to this node's connections that target and name (a user or a channel, checked)
 * match (rcu: registered). */
static void deliver_here(struct dw_bus *bus, char target, const char *name, struct dw_msg *m)
{
    if (target == DW_BUS_USER && dw_proto_user_id_is_valid(name))
        dw__hub_deliver_user(bus->hub, name, m);
    else if (target == DW_BUS_CHANNEL_TARGET && dw_proto_channel_is_valid(name))
        dw__hub_deliver_channel(bus->hub, name, m);
    else if (target == DW_BUS_ALL)
        dw__hub_deliver_all(bus->hub, m);
}

static void ask_catch_up(struct dw_bus *bus);

/* ------------------------------------------------------------------------------------------
 * Publishing
 * ------------------------------------------------------------------------------------------ */

static size_t entry_bytes(const struct entry *e)
{
    return (e->msg ? e->msg->len : 0) + sizeof(*e);
}

/* Appends e to the queue for the publisher. Returns false, having taken nothing, when the bus
 * is stopping or the queue is full. */
static bool push_entry(struct dw_bus *bus, struct entry *e)
{
    pthread_mutex_lock(&bus->lock);
    if (bus->stopping || bus->queued_bytes + entry_bytes(e) > DW_BUS_QUEUE_BYTES) {
        pthread_mutex_unlock(&bus->lock);
        return false;
    }
    bus->queued_bytes += entry_bytes(e);
    *bus->tail = e;
    bus->tail = &e->next;
    pthread_cond_broadcast(&bus->cond);
    pthread_mutex_unlock(&bus->lock);
    return true;
}

/* A message lost for the other nodes: counted, and they are told once Redis takes messages
 * again. */
static void count_dropped(struct dw_bus *bus, uint64_t n)
{
    atomic_fetch_add_explicit(&bus->dropped, n, memory_order_relaxed);
    atomic_store_explicit(&bus->owe_notice, 1, memory_order_relaxed);
}

/* Queues msg (a reference is taken) for the publisher, or drops it (counted when it is a
 * message, not one of the nodes' own notices). Returns whether it was queued. */
static bool enqueue(struct dw_bus *bus, char target, const char *name, struct dw_msg *msg,
                    bool routed)
{
    struct entry *e = dw_xcalloc(1, sizeof(*e));

    e->msg = msg;
    e->target = target;
    e->routed = routed;
    snprintf(e->name, sizeof(e->name), "%s", name ? name : "");
    dw_msg_ref(msg);
    if (!push_entry(bus, e)) {
        if (is_message(target))
            count_dropped(bus, 1);
        dw_msg_unref(msg);
        free(e);
        return false;
    }
    return true;
}

void dw_bus_fence(struct dw_bus *bus, void (*fn)(void *arg), void *arg)
{
    struct entry *e = dw_xcalloc(1, sizeof(*e));

    e->target = TARGET_FENCE;
    e->fence = fn;
    e->fence_arg = arg;
    if (!push_entry(bus, e)) {
        free(e);
        fn(arg); /* stopping (or full: what is queued will be published, or dropped) */
    }
}

/* Calls the fences of a batch that was published (or dropped), in order, with one wake-up. */
static void run_fences(struct entry *batch)
{
    dw_wake_batch_begin();
    for (struct entry *e = batch; e; e = e->next) {
        if (e->target == TARGET_FENCE)
            e->fence(e->fence_arg);
    }
    dw_wake_batch_end();
}

bool dw_bus_publish(struct dw_bus *bus, enum dw_bus_target target, const char *name,
                    struct dw_msg *msg)
{
    /* Round through Redis only while both connections are up: the message comes back. */
    bool routed = atomic_load_explicit(&bus->pub_up, memory_order_relaxed) &&
                  atomic_load_explicit(&bus->sub_up, memory_order_relaxed);

    return enqueue(bus, (char)target, name, msg, routed) && routed;
}

/* Queues one of the nodes' own notices, with text. */
static void enqueue_notice(struct dw_bus *bus, char target, const char *text)
{
    struct dw_msg *m = dw_msg_new_text(DW_MSG_CONNECTION_ESTABLISHED, 0, text, strlen(text));

    enqueue(bus, target, NULL, m, false);
    dw_msg_unref(m);
}

void dw_bus_announce(struct dw_bus *bus, const struct dw_bus_figures *f)
{
    char text[256];

    snprintf(text, sizeof(text),
             "{\"connections\":%" PRIu64 ",\"users\":%" PRIu64 ",\"messages_sent\":%" PRIu64
             ",\"started_at\":%" PRId64 "}",
             f->connections, f->users, f->messages_sent, f->started_at);
    enqueue_notice(bus, TARGET_FIGURES, text);
}

bool dw_bus_send_op(struct dw_bus *bus, const struct dw_bus_op *op)
{
    struct json_object *obj;
    struct dw_msg *m;
    const char *text;
    bool queued;

    if (!atomic_load_explicit(&bus->pub_up, memory_order_relaxed) ||
        !atomic_load_explicit(&bus->sub_up, memory_order_relaxed))
        return false;
    obj = json_object_new_object();
    json_object_object_add(obj, "action", json_object_new_string(op->action));
    if (op->channel[0]) {
        json_object_object_add(obj, "channel", json_object_new_string(op->channel));
    } else {
        json_object_object_add(obj, "code", json_object_new_int(op->code));
        json_object_object_add(obj, "reason", json_object_new_string(op->reason));
        if (op->has_ban)
            json_object_object_add(obj, "ban_until", json_object_new_int64(op->ban_until));
    }
    text = json_object_to_json_string_ext(obj, JSON_C_TO_STRING_PLAIN);
    m = dw_msg_new_text(DW_MSG_CONNECTION_ESTABLISHED, 0, text, strlen(text));
    json_object_put(obj);
    queued = enqueue(bus, TARGET_OP, op->user_id, m, false);
    dw_msg_unref(m);
    return queued;
}

static void free_entries(struct entry *e)
{
    while (e) {
        struct entry *next = e->next;

        if (e->msg)
            dw_msg_unref(e->msg);
        free(e);
        e = next;
    }
}

/* The header line and the text of e, in *buf (grown as needed). Returns the length. */
static size_t encode(const struct dw_bus *bus, const struct entry *e, char **buf, size_t *cap)
{
    char head[512];
    int n = snprintf(head, sizeof(head), "DW1 %s %c %u %u %" PRId64 " %s\n", bus->self,
                     e->routed ? e->target - 'a' + 'A' : e->target, (unsigned)e->msg->type,
                     (unsigned)e->msg->flags, e->msg->seq, e->name[0] ? e->name : "-");
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
    struct entry *end; /* the first entry not appended */
    uint64_t ok = 0;
    int r = 0;

    for (end = batch; end; end = end->next) {
        size_t len;

        if (end->target == TARGET_FENCE)
            continue;
        len = encode(bus, end, buf, cap);
        if (redisAppendCommand(bus->pub, "PUBLISH %s %b", DW_BUS_CHANNEL, *buf, len) != REDIS_OK)
            break;
    }
    for (struct entry *e = batch; e != end; e = e->next) {
        redisReply *reply = NULL;

        if (e->target == TARGET_FENCE)
            continue;
        if (redisGetReply(bus->pub, (void **)&reply) != REDIS_OK) {
            r = -EIO;
            break;
        }
        e->sent = reply->type == REDIS_REPLY_INTEGER;
        ok += e->sent && is_message(e->target);
        if (e->sent && e->target == TARGET_OP)
            atomic_fetch_add_explicit(&bus->ops_sent, 1, memory_order_relaxed);
        freeReplyObject(reply);
    }
    atomic_fetch_add_explicit(&bus->published, ok, memory_order_relaxed);
    if (r < 0 || bus->pub->err)
        r = -EIO;
    return r;
}

/* Publishes one of the nodes' own notices at once (the publisher's thread, connected).
 * Returns what publish_batch returned. */
static int publish_notice(struct dw_bus *bus, char target, char **buf, size_t *cap)
{
    struct entry e = {.target = target};
    int r;

    e.msg = dw_msg_new_text(DW_MSG_CONNECTION_ESTABLISHED, 0, "{}", 2);
    r = publish_batch(bus, &e, buf, cap);
    dw_msg_unref(e.msg);
    return r;
}

/* Once Redis takes messages again after this node dropped some, the other nodes are told to
 * catch up (their clients may have missed them). */
static int tell_dropped(struct dw_bus *bus, char **buf, size_t *cap)
{
    if (!atomic_exchange_explicit(&bus->owe_notice, 0, memory_order_relaxed))
        return 0;
    if (publish_notice(bus, TARGET_DROPPED, buf, cap) < 0) {
        atomic_store_explicit(&bus->owe_notice, 1, memory_order_relaxed);
        return -EIO;
    }
    atomic_fetch_add_explicit(&bus->drops_announced, 1, memory_order_relaxed);
    dw_log(DW_LOG_INFO, "told the other nodes that messages were dropped: they catch up");
    return 0;
}

static const struct timeval pub_timeout = {.tv_sec = PUBLISH_TIMEOUT_S};

/* A batch did not get through. Its messages that were to come back to this node (routed) are
 * delivered here now when it was not even tried (Redis was away); when it was, some may have
 * reached Redis, and come back, before the connection failed: this node's connections are
 * caught up from the inbox instead (nothing critical lost, nothing twice). */
static void lost_here(struct dw_bus *bus, struct entry *batch, bool tried)
{
    bool routed = false;

    dw_wake_batch_begin();
    for (struct entry *e = batch; e; e = e->next) {
        routed |= e->routed;
        if (e->routed && !tried)
            deliver_here(bus, e->target, e->name, e->msg);
    }
    dw_wake_batch_end();
    if (routed && tried)
        ask_catch_up(bus);
}

/* A batch did not get through: its operator actions that Redis did not take are lost (the
 * answers said they were forwarded). */
static void ops_lost(struct dw_bus *bus, const struct entry *batch)
{
    uint64_t n = 0;

    for (const struct entry *e = batch; e; e = e->next)
        n += e->target == TARGET_OP && !e->sent;
    if (n) {
        atomic_fetch_add_explicit(&bus->ops_dropped, n, memory_order_relaxed);
        dw_log(DW_LOG_WARN, "%" PRIu64 " operator actions not sent to the other nodes (Redis lost)",
               n);
    }
}

/* The one line each of the bus's threads logs when its connection to Redis goes (direction:
 * "publishing" or "receiving"), saying what stops until it is back. */
static void redis_down(const struct dw_bus *bus, const char *direction, const char *lead,
                       const char *why, const char *until_back)
{
    dw_log_event(DW_LOG_WARN, "redis.down",
                 (DW_LOG_STR("direction", direction), DW_LOG_STR("host", bus->host),
                  DW_LOG_INT("port", bus->port), DW_LOG_STR("error", why)),
                 "%s %s:%d (%s): %s until it is back (retrying with backoff)", lead, bus->host,
                 bus->port, why, until_back);
}

static void *pub_main(void *arg)
{
    struct dw_bus *bus = arg;
    char *buf = NULL, why[256];
    size_t cap = 0;
    int64_t backoff = 0, next_try = 0;
    bool logged = false;

    dw_thread_set_role(DW_THREAD_WORKER);
    dw_rcu_register(); /* it delivers here what it could not publish (lost_here) */
    pthread_mutex_lock(&bus->lock);
    for (;;) {
        struct entry *batch;
        uint64_t messages = 0;
        bool tried;

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
            messages += is_message(e->target);
        if (!bus->pub && dw_now_mono_ns() >= next_try) {
            bus->pub = open_redis(bus, "pub", why, sizeof(why));
            if (bus->pub) {
                redisSetTimeout(bus->pub, pub_timeout);
                if (logged) {
                    dw_log_event(DW_LOG_INFO, "redis.up", (DW_LOG_STR("direction", "publishing")),
                                 "Redis reachable again (publishing)");
                    atomic_fetch_add_explicit(&bus->reconnects, 1, memory_order_relaxed);
                }
                logged = false;
                backoff = 0;
            } else {
                backoff = next_backoff(backoff);
                next_try = dw_now_mono_ns() + backoff;
            }
        }
        tried = bus->pub != NULL;
        if (bus->pub &&
            (publish_batch(bus, batch, &buf, &cap) < 0 || tell_dropped(bus, &buf, &cap) < 0)) {
            snprintf(why, sizeof(why), "%s", bus->pub->errstr);
            redisFree(bus->pub);
            bus->pub = NULL;
            backoff = next_backoff(backoff);
            next_try = dw_now_mono_ns() + backoff;
        }
        atomic_store_explicit(&bus->pub_up, bus->pub != NULL, memory_order_relaxed);
        if (!bus->pub) {
            /* Nothing of this batch is known to have gone out. */
            if (messages)
                count_dropped(bus, messages);
            lost_here(bus, batch, tried);
            ops_lost(bus, batch);
            if (!logged)
                redis_down(bus, "publishing", "Redis unreachable at", why,
                           "live messages are not shared with the other nodes");
            logged = true;
        }
        run_fences(batch);
        free_entries(batch);
        pthread_mutex_lock(&bus->lock);
    }
    pthread_mutex_unlock(&bus->lock);
    /* The others forget this node now rather than when its figures go stale. */
    if (bus->pub)
        (void)publish_notice(bus, TARGET_LEAVING, &buf, &cap);
    free(buf);
    dw_rcu_unregister();
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

static void ask_catch_up(struct dw_bus *bus)
{
    atomic_fetch_add_explicit(&bus->catch_ups_asked, 1, memory_order_relaxed);
    if (bus->hooks.catch_up)
        bus->hooks.catch_up(bus->hooks.arg);
}

/* The slot of the node whose messages are marked id ("<node>/<instance>") in the peers
 * (peers_lock held): its own, or a free one when add (NULL when none is left). */
static struct dw_bus_peer *peer_slot(struct dw_bus *bus, const char *id, bool add)
{
    struct dw_bus_peer *free_slot = NULL;

    for (size_t i = 0; i < DW_BUS_PEERS_MAX; i++) {
        struct dw_bus_peer *p = &bus->peers[i];

        if (p->id[0] && strcmp(p->id, id) == 0)
            return p;
        if (!free_slot && (!p->id[0] || dw_now_realtime_ns() - p->heard_at > DW_BUS_PEER_FORGET_NS))
            free_slot = p;
    }
    return add ? free_slot : NULL;
}

static uint64_t json_u64(struct json_object *obj, const char *key)
{
    struct json_object *v;

    return json_object_object_get_ex(obj, key, &v) && json_object_is_type(v, json_type_int)
               ? (uint64_t)json_object_get_int64(v)
               : 0;
}

/* Another node's figures (text: the 's' notice), or its leaving ('x'); id marks its
 * messages. */
static void heard_from(struct dw_bus *bus, const char *id, char target, const char *text,
                       size_t len)
{
    struct json_object *obj = NULL;
    struct dw_bus_peer *p;

    if (target == TARGET_FIGURES) {
        struct json_tokener *tok = json_tokener_new();

        obj = json_tokener_parse_ex(tok, text, (int)len);
        json_tokener_free(tok);
        if (!json_object_is_type(obj, json_type_object)) {
            json_object_put(obj);
            return;
        }
    }
    pthread_mutex_lock(&bus->peers_lock);
    p = peer_slot(bus, id, obj != NULL);
    if (p && obj) {
        snprintf(p->id, sizeof(p->id), "%s", id);
        p->figures.connections = json_u64(obj, "connections");
        p->figures.users = json_u64(obj, "users");
        p->figures.messages_sent = json_u64(obj, "messages_sent");
        p->figures.started_at = (int64_t)json_u64(obj, "started_at");
        p->heard_at = dw_now_realtime_ns();
    } else if (p) {
        p->id[0] = '\0'; /* it left */
    }
    pthread_mutex_unlock(&bus->peers_lock);
    json_object_put(obj);
}

/* Copies obj's string member key into buf (size bytes, NUL included). False when it is not a
 * string, holds a NUL, or does not fit. */
static bool copy_string(struct json_object *obj, const char *key, char *buf, size_t size)
{
    struct json_object *v;
    size_t n;

    if (!json_object_object_get_ex(obj, key, &v) || !json_object_is_type(v, json_type_string))
        return false;
    n = (size_t)json_object_get_string_len(v);
    if (n >= size || strlen(json_object_get_string(v)) != n)
        return false;
    memcpy(buf, json_object_get_string(v), n + 1);
    return true;
}

/* Another node's operator action on user_id (text: the 'o' notice), for the hook. What does
 * not parse is ignored; what the action's values mean is checked where it is applied. */
static void heard_op(struct dw_bus *bus, const char *user_id, const char *text, size_t len)
{
    struct json_tokener *tok = json_tokener_new();
    struct json_object *obj = json_tokener_parse_ex(tok, text, (int)len), *v;
    struct dw_bus_op op = {.code = 0};
    bool ok;

    json_tokener_free(tok);
    ok = json_object_is_type(obj, json_type_object) &&
         copy_string(obj, "action", op.action, sizeof(op.action)) &&
         snprintf(op.user_id, sizeof(op.user_id), "%s", user_id) < (int)sizeof(op.user_id);
    if (ok && json_object_object_get_ex(obj, "channel", &v)) {
        ok = copy_string(obj, "channel", op.channel, sizeof(op.channel));
    } else if (ok) {
        ok = json_object_object_get_ex(obj, "code", &v) && json_object_is_type(v, json_type_int) &&
             copy_string(obj, "reason", op.reason, sizeof(op.reason));
        op.code = ok ? json_object_get_int(v) : 0;
        op.has_ban = json_object_object_get_ex(obj, "ban_until", &v);
        if (op.has_ban && json_object_is_type(v, json_type_int))
            op.ban_until = json_object_get_int64(v);
        else if (op.has_ban)
            ok = false;
    }
    json_object_put(obj);
    if (!ok) {
        dw_log(DW_LOG_WARN, "an operator action for %s that does not parse: ignored", user_id);
        return;
    }
    if (bus->hooks.op && bus->hooks.op(bus->hooks.arg, &op))
        atomic_fetch_add_explicit(&bus->ops_received, 1, memory_order_relaxed);
    else
        atomic_fetch_add_explicit(&bus->ops_dropped, 1, memory_order_relaxed);
}

size_t dw_bus_peers(struct dw_bus *bus, struct dw_bus_peer *out, size_t max)
{
    size_t n = 0;
    int64_t now = dw_now_realtime_ns();

    if (!bus)
        return 0;
    pthread_mutex_lock(&bus->peers_lock);
    for (size_t i = 0; i < DW_BUS_PEERS_MAX && n < max; i++) {
        const struct dw_bus_peer *p = &bus->peers[i];

        if (p->id[0] && now - p->heard_at <= DW_BUS_PEER_FORGET_NS)
            out[n++] = *p;
    }
    pthread_mutex_unlock(&bus->peers_lock);
    return n;
}

/* Delivers one message from the channel (text len bytes) unless this node published it. */
static void deliver(struct dw_bus *bus, const char *text, size_t len)
{
    const char *nl = memchr(text, '\n', len);
    char head[512], *f[HEAD_FIELDS];
    long long type, flags, seq;
    const char *name;
    struct dw_msg *m;
    char target;
    bool routed;

    if (!nl || (size_t)(nl - text) >= sizeof(head))
        return;
    memcpy(head, text, (size_t)(nl - text));
    head[nl - text] = '\0';
    if (!split_head(head, f) || strcmp(f[0], "DW1") != 0 || strlen(f[2]) != 1 ||
        !parse_num(f[3], 0, DW_MSG__COUNT - 1, &type) || !parse_num(f[4], 0, 255, &flags) ||
        !parse_num(f[5], 0, INT64_MAX, &seq))
        return;
    name = f[6];
    target = f[2][0];
    routed = target >= 'A' && target <= 'Z'; /* its sender delivers it when it comes back */
    if (routed)
        target = (char)(target - 'A' + 'a');
    if (strcmp(f[1], bus->self) == 0) {
        if (!routed)
            return; /* this node's, delivered here when it was sent (Redis was away) */
    } else if (strncmp(f[1], bus->self, strlen(bus->node) + 1) == 0 &&
               !atomic_exchange_explicit(&bus->namesake_warned, 1, memory_order_relaxed))
        dw_log(DW_LOG_ERROR,
               "another node calls itself %s too (the same host name and --port): the cluster's "
               "figures and dealwire_nodes mix the two up; give each node its own",
               bus->node);
    switch (target) {
    case TARGET_DROPPED:
        dw_log(DW_LOG_INFO, "node %s dropped messages: catching up", f[1]);
        ask_catch_up(bus);
        return;
    case TARGET_FIGURES:
    case TARGET_LEAVING:
        heard_from(bus, f[1], f[2][0], nl + 1, len - (size_t)(nl + 1 - text));
        return;
    case TARGET_OP:
        heard_op(bus, name, nl + 1, len - (size_t)(nl + 1 - text));
        return;
    default:
        break;
    }
    m = dw_msg_new_text((enum dw_msg_type)type, (unsigned)flags, nl + 1,
                        len - (size_t)(nl + 1 - text));
    m->seq = seq;
    m->accepted_at = dw_now_mono_ns(); /* /metrics: delivery latency from its arrival here */
    deliver_here(bus, target, name, m);
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
            redisContext *c = open_redis(bus, "sub", why, sizeof(why));

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
                /* What the others published meanwhile never came: read it again. */
                dw_log_event(DW_LOG_INFO, "redis.up", (DW_LOG_STR("direction", "receiving")),
                             "Redis reachable again (receiving): catching up");
                atomic_fetch_add_explicit(&bus->reconnects, 1, memory_order_relaxed);
                ask_catch_up(bus);
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
                redis_down(bus, "receiving", "lost Redis at", why,
                           "messages from the other nodes do not arrive");
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

struct dw_bus *dw_bus_start(const char *url, struct dw_hub *hub, const char *node,
                            const struct dw_bus_hooks *hooks, char *why, size_t size)
{
    struct dw_bus *bus;
    pthread_condattr_t attr;
    struct url u;
    char err[256];
    uint64_t instance;

    if (parse_url(url, &u, why, size) < 0)
        return NULL;
    bus = dw_xcalloc(1, sizeof(*bus));
    snprintf(bus->host, sizeof(bus->host), "%s", u.host);
    bus->port = u.port;
    snprintf(bus->password, sizeof(bus->password), "%s", u.password);
    snprintf(bus->node, sizeof(bus->node), "%s", node);
    if (getrandom(&instance, sizeof(instance), 0) != (ssize_t)sizeof(instance))
        instance = (uint64_t)dw_now_realtime_ns() ^ (uint64_t)getpid(); /* still unique enough */
    snprintf(bus->self, sizeof(bus->self), "%s/%016" PRIx64, node, instance);
    bus->hub = hub;
    if (hooks)
        bus->hooks = *hooks;
    bus->tail = &bus->head;
    pthread_mutex_init(&bus->lock, NULL);
    pthread_mutex_init(&bus->peers_lock, NULL);
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&bus->cond, &attr);
    pthread_condattr_destroy(&attr);
    /* Both connections now, so that a wrong URL or a Redis that is not there stops the start. */
    bus->pub = open_redis(bus, "pub", err, sizeof(err));
    if (bus->pub)
        redisSetTimeout(bus->pub, pub_timeout);
    bus->sub = bus->pub ? open_redis(bus, "sub", err, sizeof(err)) : NULL;
    if (bus->sub && !subscribe(bus->sub))
        snprintf(err, sizeof(err), "SUBSCRIBE: %s",
                 bus->sub->errstr[0] ? bus->sub->errstr : "refused");
    if (!bus->pub || !bus->sub || bus->sub->err) {
        snprintf(why, size, "cannot reach Redis at %s:%d: %s", bus->host, bus->port, err);
        redisFree(bus->pub);
        redisFree(bus->sub);
        pthread_mutex_destroy(&bus->lock);
        pthread_mutex_destroy(&bus->peers_lock);
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
    out->catch_ups_asked = atomic_load_explicit(&bus->catch_ups_asked, memory_order_relaxed);
    out->drops_announced = atomic_load_explicit(&bus->drops_announced, memory_order_relaxed);
    out->ops_sent = atomic_load_explicit(&bus->ops_sent, memory_order_relaxed);
    out->ops_received = atomic_load_explicit(&bus->ops_received, memory_order_relaxed);
    out->ops_dropped = atomic_load_explicit(&bus->ops_dropped, memory_order_relaxed);
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
    pthread_mutex_destroy(&bus->peers_lock);
    pthread_cond_destroy(&bus->cond);
    free(bus);
}
