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
 * Everything acts on this node only: with several nodes (--redis), the user's connections on
 * the others are untouched and their bans not shared (docs/cluster.md).
 */
#define DW_LOG_MODULE "operator"
#include "server_int.h"
#include "dealwire/answer.h"
#include "dealwire/log.h"
#include "dealwire/proto.h"
#include "dealwire/thread.h"
#include "dealwire/time.h"

#include <errno.h>
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

/* Bans user_id for seconds from now (replacing a ban it had), or lifts its ban (0). Returns 0,
 * or -ENOSPC when the table holds DW_BANS_MAX bans that have not expired. */
static int set_ban(struct dw_server *srv, const char *user_id, long long seconds)
{
    struct dw_bans *b = &srv->bans;
    struct dw_ban *ban = find_ban(b, user_id);
    int64_t now = dw_now_mono_ns();

    if (seconds == 0) {
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
    ban->until = now + seconds * DW_NSEC_PER_SEC;
    ban->until_rt = dw_now_realtime_ns() + seconds * DW_NSEC_PER_SEC;
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

enum dw_operator_action dw__operator_action(const char *name)
{
    if (strcmp(name, "disconnect") == 0)
        return DW_OPERATOR_DISCONNECT;
    if (strcmp(name, "subscribe") == 0)
        return DW_OPERATOR_SUBSCRIBE;
    if (strcmp(name, "unsubscribe") == 0)
        return DW_OPERATOR_UNSUBSCRIBE;
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
 * The actions
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
 * then the close of every open connection of the user. Returns the status; *text: as
 * dw__operator_run. */
static unsigned disconnect(struct dw_server *srv, const char *user_id, const struct args *a,
                           char **text, size_t *len)
{
    struct json_object *obj;
    struct dw_user *u;
    struct dw_conn *conn;
    unsigned n = 0;
    int64_t until;
    char ts[DW_TIME_ISO_LEN];

    if (a->has_ban && set_ban(srv, user_id, a->ban_seconds) < 0) {
        *text = dw_answer_error("the ban table is full (1000 bans): lift one (ban_seconds 0), "
                                "or wait for one to expire",
                                NULL, len);
        return HTTP_STATUS_SERVICE_UNAVAILABLE;
    }
    dw_rcu_read_lock();
    u = dw__hub_find_user(srv->hub, user_id);
    if (u) {
        dw_rlist_for_each_entry(conn, &u->conns, struct dw_conn, user_link) {
            if (conn->io.state == DW_CONN_OPEN &&
                dw__conn_kick(conn, (unsigned short)a->code, a->reason))
                n++;
        }
    }
    dw_rcu_read_unlock();
    obj = answer(srv, user_id, n);
    json_object_object_add(obj, "code", json_object_new_int(a->code));
    json_object_object_add(obj, "reason", json_object_new_string(a->reason));
    until = dw__operator_banned_until(srv, user_id);
    if (until)
        dw_time_format_iso(ts, until);
    json_object_object_add(obj, "banned_until", until ? json_object_new_string(ts) : NULL);
    dw_log(DW_LOG_INFO, "user %s: %u connections closed (%d)%s%s", user_id, n, a->code,
           until ? ", banned until " : "", until ? ts : "");
    *text = dw_answer_json(obj, len);
    return HTTP_STATUS_OK;
}

/* Subscribes (or unsubscribes) every open connection of the user; counts what changed, what
 * was so already, and (subscribe) what --max-subscriptions refused. Returns the status;
 * *text: as dw__operator_run. */
static unsigned change_subscription(struct dw_server *srv, const char *user_id, const char *channel,
                                    bool subscribe, char **text, size_t *len)
{
    struct json_object *obj;
    struct dw_user *u;
    struct dw_conn *conn;
    unsigned n = 0, same = 0, refused = 0;

    dw_rcu_read_lock();
    u = dw__hub_find_user(srv->hub, user_id);
    if (u) {
        dw_rlist_for_each_entry(conn, &u->conns, struct dw_conn, user_link) {
            int r;

            if (conn->io.state != DW_CONN_OPEN)
                continue;
            r = dw__conn_server_subscribe(srv, conn, channel, subscribe);
            if (r == 0)
                n++;
            else if (r == -E2BIG)
                refused++;
            else
                same++; /* subscribed already (1), or not subscribed (-ENOENT) */
        }
    }
    dw_rcu_read_unlock();
    obj = answer(srv, user_id, n);
    json_object_object_add(obj, "channel", json_object_new_string(channel));
    json_object_object_add(obj, subscribe ? "already_subscribed" : "not_subscribed",
                           json_object_new_int((int)same));
    if (subscribe)
        json_object_object_add(obj, "refused", json_object_new_int((int)refused));
    *text = dw_answer_json(obj, len);
    return HTTP_STATUS_OK;
}

unsigned dw__operator_run(struct dw_server *srv, enum dw_operator_action action,
                          const char *user_id, const char *body, size_t len, char **text,
                          size_t *text_len)
{
    struct args a = {.code = DEFAULT_CODE, .reason = DEFAULT_REASON};
    struct json_object *root;
    const char *why, *field;
    unsigned status;

    DW_ASSERT_THREAD(DW_THREAD_IO);
    why = parse_body(action, body, len, &root, &a, &field);
    if (why) {
        *text = dw_answer_error(why, field, text_len);
        status = HTTP_STATUS_BAD_REQUEST;
    } else if (action == DW_OPERATOR_DISCONNECT) {
        status = disconnect(srv, user_id, &a, text, text_len);
    } else {
        status = change_subscription(srv, user_id, a.channel, action == DW_OPERATOR_SUBSCRIBE, text,
                                     text_len);
    }
    json_object_put(root); /* a borrows from it until here */
    return status;
}
