/*
 * operator — DESIGN: what the operator API does to a user's connections, on the I/O thread:
 * POST /api/websocket/users/<id>/disconnect (with an optional ban), .../subscribe and
 * .../unsubscribe. The I/O thread owns every connection, so an action is done where the
 * request's body completes (http.c), with no hand-over: a body is a few members
 * (DW_OPERATOR_BODY_MAX bytes at most), parsed and checked here, all of it before anything is
 * done, and the answer says how many connections the action touched. A user without
 * connections is no error (200, 0 touched): a ban for a user who is not connected is useful.
 *
 * The bans live in a table in dw_server (server_int.h, struct dw_bans): at most DW_BANS_MAX
 * users, each until a monotonic time, so that a clock step neither lifts nor stretches one.
 * Looked up at each upgrade of a user (conn.c, admit_user) by a scan that compares a hash
 * before a string, and only when some ban exists; an expired ban is dropped when it is met,
 * and all of them before a new one is added. Past the bound a new ban is refused (503), never
 * made room for by lifting another: a ban the operator set ends when the operator said.
 *
 * With several nodes (--redis), an action done here is also sent over the bus (bus.h,
 * dw_bus_send_op) to every other node, and an action another node sent is done here as a request
 * would do it (the ban too, until the same realtime end), but not sent on again. The bus's
 * subscriber thread must not touch connections: it hands each action to the I/O thread through
 * a small ring under a mutex (struct dw_ops, DW_OPS_MAX; full: dropped and counted by the bus),
 * drained on the I/O thread's wake-up, in the order Redis gave, and waits (at most
 * DW_OPS_WAIT_NS) until it is done before it delivers what comes after it on the channel: a
 * message published after a subscribe's answer reaches the user there too. The answer counts this
 * node's connections only (the others do not answer) and says whether the action was forwarded;
 * http.c sends it once Redis took the action, so an operator who waits for each answer has its
 * actions done in its order on every node (docs/cluster.md).
 */
#define DW_LOG_MODULE "operator"
#include "server_int.h"
#include "dealwire/answer.h"
#include "dealwire/bus.h"
#include "dealwire/log.h"
#include "dealwire/proto.h"
#include "dealwire/server.h"
#include "dealwire/thread.h"
#include "dealwire/time.h"

#include <errno.h>
#include <time.h>
#include <stdio.h>
#include <string.h>

#include <json-c/json.h>
#include <json-c/json_object_iterator.h>

/* Without a body, disconnect closes with this code and reason (docs/protocol.md). */
#define DEFAULT_CODE   4003
#define DEFAULT_REASON "disconnected by the operator"
/* A close frame's payload is at most 125 bytes, two of them the code (RFC 6455, 5.5). */
#define REASON_MAX 123
/* The longest ban: 30 days, in seconds. */
#define BAN_SECONDS_MAX 2592000LL
/* A body is one object of strings and numbers; deep enough that a nested value is parsed,
 * and then refused by name (a member that is not a string or a number). */
#define PARSE_DEPTH 8

/* ==========================================================================================
 * Bans
 */

/* FNV-1a: a cheap first comparison for the scan. */
static uint32_t hash_id(const char *s)
{
    uint32_t h = 2166136261u;

    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

static struct dw_ban *find_ban(struct dw_bans *b, const char *user_id)
{
    uint32_t h = hash_id(user_id);

    for (unsigned i = 0; i < b->n; i++) {
        if (b->list[i].hash == h && strcmp(b->list[i].user_id, user_id) == 0)
            return &b->list[i];
    }
    return NULL;
}

/* Drops ban from the table; the last entry takes its place. */
static void drop_ban(struct dw_bans *b, struct dw_ban *ban)
{
    *ban = b->list[--b->n];
}

int64_t dw__operator_banned_until(struct dw_server *srv, const char *user_id)
{
    struct dw_ban *ban;

    DW_ASSERT_THREAD(DW_THREAD_IO);
    if (srv->bans.n == 0)
        return 0; /* the common case costs nothing */
    ban = find_ban(&srv->bans, user_id);
    if (!ban)
        return 0;
    if (ban->until <= dw_now_mono_ns()) {
        drop_ban(&srv->bans, ban);
        return 0;
    }
    return ban->until_rt;
}

/* Bans user_id until until_rt (realtime ns; replacing a ban it had), or lifts its ban (0, or an
 * end already past: a ban from another node that ended on its way). The table keeps the end as
 * a monotonic time from here on. Returns 0, or -ENOSPC when the table holds DW_BANS_MAX bans
 * that have not expired. */
static int set_ban(struct dw_server *srv, const char *user_id, int64_t until_rt)
{
    struct dw_bans *b = &srv->bans;
    struct dw_ban *ban = find_ban(b, user_id);
    int64_t now = dw_now_mono_ns(), left = until_rt - dw_now_realtime_ns();

    if (until_rt == 0 || left <= 0) {
        if (ban)
            drop_ban(b, ban);
        return 0;
    }
    if (!ban) {
        for (unsigned i = 0; i < b->n;) {
            if (b->list[i].until <= now)
                drop_ban(b, &b->list[i]);
            else
                i++;
        }
        if (b->n == DW_BANS_MAX)
            return -ENOSPC;
        ban = &b->list[b->n++];
        ban->hash = hash_id(user_id);
        snprintf(ban->user_id, sizeof(ban->user_id), "%s", user_id);
    }
    ban->until = now + left;
    ban->until_rt = until_rt;
    return 0;
}

/* ==========================================================================================
 * The request: its body, checked whole before anything is done
 */

struct args {
    int code;
    const char *reason; /* borrowed from the parsed body, or DEFAULT_REASON */
    long long ban_seconds;
    bool has_ban;
    const char *channel;                /* borrowed from the parsed body */
    char json_field[DW_JSON_FIELD_MAX]; /* where the body is not JSON, when known */
};

/* The actions' names, in the path and on the bus (dw_bus_op). */
static const char *const action_names[] = {
    [DW_OPERATOR_DISCONNECT] = "disconnect",
    [DW_OPERATOR_SUBSCRIBE] = "subscribe",
    [DW_OPERATOR_UNSUBSCRIBE] = "unsubscribe",
};

enum dw_operator_action dw__operator_action(const char *name)
{
    for (unsigned i = DW_OPERATOR_DISCONNECT; i <= DW_OPERATOR_UNSUBSCRIBE; i++) {
        if (strcmp(name, action_names[i]) == 0)
            return (enum dw_operator_action)i;
    }
    return DW_OPERATOR_NONE;
}

/* The member name of disconnect's body into a: NULL, or why it is refused. */
static const char *disconnect_member(const char *name, struct json_object *v, struct args *a)
{
    if (strcmp(name, "code") == 0) {
        int64_t code = json_object_get_int64(v);

        if (!json_object_is_type(v, json_type_int) ||
            (code != 1000 && (code < 4000 || code > 4999)))
            return "\"code\" must be 1000 or an application close code, 4000 to 4999";
        a->code = (int)code;
    } else if (strcmp(name, "reason") == 0) {
        if (!json_object_is_type(v, json_type_string) ||
            strlen(json_object_get_string(v)) != (size_t)json_object_get_string_len(v))
            return "\"reason\" must be a string (without U+0000)";
        if (json_object_get_string_len(v) > REASON_MAX)
            return "\"reason\" must be at most 123 bytes of UTF-8";
        a->reason = json_object_get_string(v);
    } else if (strcmp(name, "ban_seconds") == 0) {
        int64_t s = json_object_get_int64(v);

        if (!json_object_is_type(v, json_type_int) || s < 0 || s > BAN_SECONDS_MAX)
            return "\"ban_seconds\" must be a whole number from 0 (lift the ban) to 2592000 "
                   "(30 days)";
        a->ban_seconds = s;
        a->has_ban = true;
    } else {
        return "unknown member: disconnect takes \"code\", \"reason\" and \"ban_seconds\"";
    }
    return NULL;
}

/* Parses and checks body (len bytes; none when len is 0) for action into a; *root owns what a
 * borrows. Returns NULL, or why the body is refused (*field: what it names, or NULL). */
static const char *parse_body(enum dw_operator_action action, const char *body, size_t len,
                              struct json_object **root, struct args *a, const char **field)
{
    struct json_object_iterator it, end;
    struct dw_json_error jerr;

    *root = NULL;
    *field = NULL;
    if (len == 0)
        return action == DW_OPERATOR_DISCONNECT ? NULL : "a body is required: {\"channel\": ...}";
    if (dw_proto_parse_json_ex(body, len, PARSE_DEPTH, root, &jerr) < 0) {
        memcpy(a->json_field, jerr.field, sizeof(a->json_field));
        *field = a->json_field[0] ? a->json_field : NULL;
        return jerr.kind == DW_JSON_ERR_CONTROL_CHAR
                   ? "body is not valid JSON: unescaped control character in a string"
                   : "body is not valid JSON";
    }
    if (!json_object_is_type(*root, json_type_object))
        return "body must be a JSON object";
    it = json_object_iter_begin(*root);
    end = json_object_iter_end(*root);
    for (; !json_object_iter_equal(&it, &end); json_object_iter_next(&it)) {
        const char *name = json_object_iter_peek_name(&it);
        struct json_object *v = json_object_iter_peek_value(&it);
        const char *why = NULL;

        *field = name;
        if (action == DW_OPERATOR_DISCONNECT) {
            why = disconnect_member(name, v, a);
        } else if (strcmp(name, "channel") != 0) {
            why = "unknown member: this action takes \"channel\" only";
        } else {
            a->channel = dw_proto_json_string(v);
            if (!a->channel || !dw_proto_channel_is_valid(a->channel))
                why = "channel must be 1-64 characters of A-Z a-z 0-9 _ . : -";
        }
        if (why)
            return why;
    }
    *field = "channel";
    if (action != DW_OPERATOR_DISCONNECT && !a->channel)
        return "\"channel\" is required";
    *field = NULL;
    return NULL;
}

/* ==========================================================================================
 * The actions, on this node's connections
 */

/* Starts the close of every open connection of user_id with code and reason. Returns how
 * many. */
static unsigned kick_user(struct dw_server *srv, const char *user_id, int code, const char *reason)
{
    struct dw_user *u;
    struct dw_conn *conn;
    unsigned n = 0;

    dw_rcu_read_lock();
    u = dw__hub_find_user(srv->hub, user_id);
    if (u) {
        dw_rlist_for_each_entry(conn, &u->conns, struct dw_conn, user_link) {
            if (conn->io.state == DW_CONN_OPEN && dw__conn_kick(conn, (unsigned short)code, reason))
                n++;
        }
    }
    dw_rcu_read_unlock();
    return n;
}

/* What a subscribe or an unsubscribe did to a user's connections. */
struct sub_counts {
    unsigned changed, same, refused; /* same: subscribed already, or not subscribed */
};

/* Subscribes (or unsubscribes) every open connection of user_id to channel, into *c. */
static void subscribe_user(struct dw_server *srv, const char *user_id, const char *channel,
                           bool subscribe, struct sub_counts *c)
{
    struct dw_user *u;
    struct dw_conn *conn;

    *c = (struct sub_counts){0};
    dw_rcu_read_lock();
    u = dw__hub_find_user(srv->hub, user_id);
    if (u) {
        dw_rlist_for_each_entry(conn, &u->conns, struct dw_conn, user_link) {
            int r;

            if (conn->io.state != DW_CONN_OPEN)
                continue;
            r = dw__conn_server_subscribe(srv, conn, channel, subscribe);
            if (r == 0)
                c->changed++;
            else if (r == -E2BIG)
                c->refused++;
            else
                c->same++; /* subscribed already (1), or not subscribed (-ENOENT) */
        }
    }
    dw_rcu_read_unlock();
}

/* ==========================================================================================
 * A request here: the action, its answer, and the other nodes
 */

/* The answer's common members: the user, what was touched, and the node that did it. */
static struct json_object *answer(struct dw_server *srv, const char *user_id, unsigned touched)
{
    struct json_object *obj = json_object_new_object();

    json_object_object_add(obj, "user_id", json_object_new_string(user_id));
    json_object_object_add(obj, "connections", json_object_new_int((int)touched));
    json_object_object_add(obj, "node", json_object_new_string(srv->node));
    return obj;
}

/* The ban first (when asked), so the user cannot come back between the close and the ban;
 * then the close of every open connection of the user. Returns the answer, or NULL with
 * *status and *text set (the ban table is full: nothing was done). */
static struct json_object *disconnect(struct dw_server *srv, const char *user_id,
                                      const struct args *a, int64_t ban_until, unsigned *status,
                                      char **text, size_t *len)
{
    struct json_object *obj;
    unsigned n;
    int64_t until;
    char ts[DW_TIME_ISO_LEN];

    if (a->has_ban && set_ban(srv, user_id, ban_until) < 0) {
        *text = dw_answer_error("the ban table is full (1000 bans): lift one (ban_seconds 0), "
                                "or wait for one to expire",
                                NULL, len);
        *status = HTTP_STATUS_SERVICE_UNAVAILABLE;
        return NULL;
    }
    n = kick_user(srv, user_id, a->code, a->reason);
    obj = answer(srv, user_id, n);
    json_object_object_add(obj, "code", json_object_new_int(a->code));
    json_object_object_add(obj, "reason", json_object_new_string(a->reason));
    until = dw__operator_banned_until(srv, user_id);
    if (until)
        dw_time_format_iso(ts, until);
    json_object_object_add(obj, "banned_until", until ? json_object_new_string(ts) : NULL);
    dw_log(DW_LOG_INFO, "user %s: %u connections closed (%d)%s%s", user_id, n, a->code,
           until ? ", banned until " : "", until ? ts : "");
    return obj;
}

/* Subscribes (or unsubscribes) every open connection of the user; the answer counts what
 * changed, what was so already, and (subscribe) what --max-subscriptions refused. */
static struct json_object *change_subscription(struct dw_server *srv, const char *user_id,
                                               const char *channel, bool subscribe)
{
    struct json_object *obj;
    struct sub_counts c;

    subscribe_user(srv, user_id, channel, subscribe, &c);
    obj = answer(srv, user_id, c.changed);
    json_object_object_add(obj, "channel", json_object_new_string(channel));
    json_object_object_add(obj, subscribe ? "already_subscribed" : "not_subscribed",
                           json_object_new_int((int)c.same));
    if (subscribe)
        json_object_object_add(obj, "refused", json_object_new_int((int)c.refused));
    return obj;
}

/* Sends the action done here to the other nodes, when there is a bus, and says so in obj:
 * "forwarded", and "nodes", how many other nodes announced themselves within
 * DW_BUS_PEER_STALE_NS (those that hear it, unless one stopped since). Returns forwarded. */
static bool forward(struct dw_server *srv, enum dw_operator_action action, const char *user_id,
                    const struct args *a, int64_t ban_until, struct json_object *obj)
{
    struct dw_bus_peer peers[DW_BUS_PEERS_MAX];
    struct dw_bus_op op = {.code = a->code, .has_ban = a->has_ban, .ban_until = ban_until};
    int64_t now = dw_now_realtime_ns();
    size_t n = 0, heard;
    bool sent = false;

    if (srv->bus) {
        snprintf(op.action, sizeof(op.action), "%s", action_names[action]);
        snprintf(op.user_id, sizeof(op.user_id), "%s", user_id);
        snprintf(op.reason, sizeof(op.reason), "%s", a->reason);
        snprintf(op.channel, sizeof(op.channel), "%s", a->channel ? a->channel : "");
        sent = dw_bus_send_op(srv->bus, &op);
    }
    if (sent) {
        heard = dw_bus_peers(srv->bus, peers, DW_BUS_PEERS_MAX);
        for (size_t i = 0; i < heard; i++)
            n += now - peers[i].heard_at <= DW_BUS_PEER_STALE_NS;
    } else if (srv->bus) {
        dw_log(DW_LOG_WARN, "user %s: Redis is away, the action was done on this node only",
               user_id);
    }
    json_object_object_add(obj, "forwarded", json_object_new_boolean(sent));
    json_object_object_add(obj, "nodes", json_object_new_int((int)n));
    return sent;
}

unsigned dw__operator_run(struct dw_server *srv, enum dw_operator_action action,
                          const char *user_id, const char *body, size_t len, char **text,
                          size_t *text_len, bool *forwarded)
{
    struct args a = {.code = DEFAULT_CODE, .reason = DEFAULT_REASON};
    struct json_object *root, *obj = NULL;
    const char *why, *field;
    unsigned status = HTTP_STATUS_OK;
    int64_t ban_until = 0;

    DW_ASSERT_THREAD(DW_THREAD_IO);
    *forwarded = false;
    why = parse_body(action, body, len, &root, &a, &field);
    if (why) {
        *text = dw_answer_error(why, field, text_len);
        status = HTTP_STATUS_BAD_REQUEST;
    } else if (action == DW_OPERATOR_DISCONNECT) {
        /* The ban's end as a realtime instant: the same on every node it goes to. */
        if (a.has_ban && a.ban_seconds)
            ban_until = dw_now_realtime_ns() + a.ban_seconds * DW_NSEC_PER_SEC;
        obj = disconnect(srv, user_id, &a, ban_until, &status, text, text_len);
    } else {
        obj = change_subscription(srv, user_id, a.channel, action == DW_OPERATOR_SUBSCRIBE);
    }
    if (obj) {
        *forwarded = forward(srv, action, user_id, &a, ban_until, obj);
        *text = dw_answer_json(obj, text_len);
    }
    json_object_put(root); /* a borrows from it until here */
    return status;
}

/* ==========================================================================================
 * The other nodes' actions, done here
 */

bool dw_server_operator_heard(void *srv_arg, const struct dw_bus_op *op)
{
    struct dw_server *srv = srv_arg;
    struct dw_ops *q = &srv->ops;
    int64_t deadline = dw_now_mono_ns() + DW_OPS_WAIT_NS;
    struct timespec ts = {.tv_sec = (time_t)(deadline / DW_NSEC_PER_SEC),
                          .tv_nsec = (long)(deadline % DW_NSEC_PER_SEC)};
    uint64_t mine;
    bool late;

    pthread_mutex_lock(&q->lock);
    if (q->n == DW_OPS_MAX) {
        pthread_mutex_unlock(&q->lock);
        dw_log(DW_LOG_WARN, "user %s: an operator action from another node dropped (%d waiting)",
               op->user_id, DW_OPS_MAX);
        return false;
    }
    q->list[(q->head + q->n++) % DW_OPS_MAX] = *op;
    mine = ++q->queued;
    pthread_mutex_unlock(&q->lock);
    /* Woken now, not at the end of the subscriber's wake batch (wake.h): it waits below. */
    srv->wake.fn(srv->wake.arg);
    /* The messages behind the action on the channel wait until it is done: a publish after a
     * subscribe's answer reaches the user's connections here too, and one after an
     * unsubscribe's does not. Bounded, so that a stopping (or stalled) I/O thread does not
     * hold the bus. */
    pthread_mutex_lock(&q->lock);
    while (q->did < mine) {
        if (pthread_cond_timedwait(&q->done, &q->lock, &ts) == ETIMEDOUT)
            break;
    }
    late = q->did < mine;
    pthread_mutex_unlock(&q->lock);
    if (late)
        dw_log(DW_LOG_WARN,
               "user %s: an operator action from another node not done within 1 s: the "
               "messages behind it go on meanwhile",
               op->user_id);
    return true;
}

/* Does op here as a request would, without the answer and without forwarding it. What
 * another node should not have sent (a version that checks less) is logged and ignored. */
static void apply(struct dw_server *srv, const struct dw_bus_op *op)
{
    enum dw_operator_action action = dw__operator_action(op->action);
    struct sub_counts c;
    unsigned n;

    if (!dw_proto_user_id_is_valid(op->user_id) || action == DW_OPERATOR_NONE ||
        (action == DW_OPERATOR_DISCONNECT && op->code != 1000 &&
         (op->code < 4000 || op->code > 4999)) ||
        (action != DW_OPERATOR_DISCONNECT && !dw_proto_channel_is_valid(op->channel))) {
        dw_log(DW_LOG_WARN, "an operator action from another node that is not valid: ignored");
        return;
    }
    if (action == DW_OPERATOR_DISCONNECT) {
        if (op->has_ban && set_ban(srv, op->user_id, op->ban_until) < 0)
            dw_log(DW_LOG_WARN, "user %s: another node's ban not taken: the table is full",
                   op->user_id);
        n = kick_user(srv, op->user_id, op->code, op->reason);
        dw_log(DW_LOG_INFO, "user %s: %u connections closed (%d) for another node%s", op->user_id,
               n, op->code, op->has_ban && op->ban_until ? ", banned" : "");
    } else {
        subscribe_user(srv, op->user_id, op->channel, action == DW_OPERATOR_SUBSCRIBE, &c);
        dw_log(DW_LOG_DEBUG, "user %s: %s %s on %u connections, for another node", op->user_id,
               op->action, op->channel, c.changed);
    }
}

void dw__operator_drain(struct dw_server *srv)
{
    struct dw_ops *q = &srv->ops;
    struct dw_bus_op op;

    DW_ASSERT_THREAD(DW_THREAD_IO);
    /* At most one ring's worth per wake-up: what comes meanwhile woke this thread again. */
    for (unsigned i = 0; i < DW_OPS_MAX; i++) {
        pthread_mutex_lock(&q->lock);
        if (q->n == 0) {
            pthread_mutex_unlock(&q->lock);
            return;
        }
        op = q->list[q->head];
        q->head = (q->head + 1) % DW_OPS_MAX;
        q->n--;
        pthread_mutex_unlock(&q->lock);
        apply(srv, &op);
        pthread_mutex_lock(&q->lock);
        q->did++;
        pthread_cond_broadcast(&q->done); /* the subscriber goes on with what is behind it */
        pthread_mutex_unlock(&q->lock);
    }
}
