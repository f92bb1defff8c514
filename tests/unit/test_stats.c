/*
 * test_stats — the statistics documents (src/stats.c): GET /api/websocket/stats,
 * /api/websocket/connections[?limit=N], /api/websocket/users/<id> and the get_stats
 * WebSocket message, against the real server started in-process with the flags each test
 * needs (ws_client.h), its clients on blocking sockets, its deliveries through POST
 * /api/publish.
 *
 * Checked: every field of each document and its value (connection, user and room counts,
 * the per-type publish counters and the frames written, uptimes, the limits in force and the
 * refusal counters after refused upgrades), the per-connection and per-user subscription
 * lists with subscription_count, and each cap of stats.c with its "..._truncated": 1,000
 * users in uptime_by_user, 100 channel names per connection and 10,000 per connections
 * document, 1,000 in a user's union, 100 connections by default and 1,000 at most.
 */
#include "dealwire/log.h"

#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <json-c/json.h>

#include "test_util.h"
#include "ws_client.h"

/* The caps in src/stats.c. */
#define UPTIME_USERS_MAX     1000
#define USER_SUBS_LISTED_MAX 1000
#define CONN_SUBS_LISTED_MAX 100
#define DOC_SUBS_LISTED_MAX  10000

/* Flags for the tests that subscribe a lot: no rate limit in the way. */
#define NO_RATE_LIMIT "--rate-limit", "1000000", "--rate-burst", "1000000"

/* ------------------------------------------------------------------------------------------
 * Helpers
 * ------------------------------------------------------------------------------------------ */

static struct json_object *get(struct tserver *ts, const char *path)
{
    return http_get_json(ts->port, path, 200);
}

/* Subscribes c to the channels <prefix><i> for i in [from, to), all in one write, and reads
 * every answer. */
static void subscribe_range(struct ws *c, const char *prefix, int from, int to)
{
    struct tbuf b = {0};
    char name[80], cmd[160];

    for (int i = from; i < to; i++) {
        snprintf(name, sizeof(name), "%s%d", prefix, i);
        snprintf(cmd, sizeof(cmd), "{\"type\":\"subscribe\",\"channel\":\"%s\"}", name);
        ws_frame_build(&b, true, WS_OP_TEXT, cmd, strlen(cmd));
    }
    tc_send_all(c->fd, b.p, b.len);
    tbuf_free(&b);
    for (int i = from; i < to; i++) {
        struct json_object *reply = ws_recv_json(c);

        snprintf(name, sizeof(name), "%s%d", prefix, i);
        assert_string_equal(tj_str(reply, "action"), "subscribe");
        assert_string_equal(tj_str(reply, "channel"), name);
        json_object_put(reply);
    }
}

static void subscribe(struct ws *c, const char *channel)
{
    char cmd[160];
    struct json_object *reply;

    snprintf(cmd, sizeof(cmd), "{\"type\":\"subscribe\",\"channel\":\"%s\"}", channel);
    reply = ws_request(c, cmd);
    assert_string_equal(tj_str(reply, "action"), "subscribe");
    assert_string_equal(tj_str(reply, "channel"), channel);
    json_object_put(reply);
}

static void unsubscribe(struct ws *c, const char *channel)
{
    char cmd[160];
    struct json_object *reply;

    snprintf(cmd, sizeof(cmd), "{\"type\":\"unsubscribe\",\"channel\":\"%s\"}", channel);
    reply = ws_request(c, cmd);
    assert_string_equal(tj_str(reply, "action"), "unsubscribe");
    assert_string_equal(tj_str(reply, "channel"), channel);
    json_object_put(reply);
}

/* arr holds exactly the strings listed (NULL-terminated), in any order. */
static void assert_string_set(struct json_object *arr, ...)
{
    va_list ap;
    const char *s;
    size_t n = 0;

    va_start(ap, arr);
    while ((s = va_arg(ap, const char *)) != NULL) {
        if (!tj_array_has(arr, s))
            fail_msg("no \"%s\" in %s", s, json_object_to_json_string(arr));
        n++;
    }
    va_end(ap);
    if (json_object_array_length(arr) != n)
        fail_msg("%zu strings expected in %s", n, json_object_to_json_string(arr));
}

/* The strings of arr are distinct, and each is <prefix><i> for some i in [0, n). */
static void assert_distinct_names(struct json_object *arr, const char *prefix, int n)
{
    size_t len = json_object_array_length(arr);
    unsigned char *seen = calloc((size_t)n, 1);

    assert_non_null(seen);
    for (size_t i = 0; i < len; i++) {
        const char *s = json_object_get_string(json_object_array_get_idx(arr, i));
        char name[80];
        int k;

        for (k = 0; k < n; k++) {
            snprintf(name, sizeof(name), "%s%d", prefix, k);
            if (strcmp(name, s) == 0)
                break;
        }
        if (k == n || seen[k])
            fail_msg("\"%s\" unknown or listed twice", s);
        seen[k] = 1;
    }
    free(seen);
}

/* Opens n WebSockets, of the users <prefix><i>: every upgrade is sent before any answer is
 * read, so the server handles them back to back. */
static void open_many(struct tserver *ts, struct ws *cs, int n, const char *prefix)
{
    char user[64];

    for (int i = 0; i < n; i++) {
        snprintf(user, sizeof(user), "%s%d", prefix, i);
        ws_open_send(&cs[i], ts->port, user);
    }
    for (int i = 0; i < n; i++) {
        snprintf(user, sizeof(user), "%s%d", prefix, i);
        ws_open_finish(&cs[i], user, NULL);
    }
}

static void drop_many(struct ws *cs, int n)
{
    for (int i = 0; i < n; i++)
        ws_drop(&cs[i]);
}

/* Without --db the inbox is off: every counter 0, the figures a sweep measures null, the
 * retention the one configured (the default unless a test sets --inbox-retention). */
static void assert_inbox_without_db(struct json_object *inbox)
{
    static const char *const zero[] = {
        "written",
        "failed",
        "writes",
        "acks",
        "acks_failed",
        "replays",
        "replayed",
        "replays_failed",
        "not_recovered",
        "duplicates",
        "moved_to_dead_letters",
        "acked_deleted",
        "ids_expired",
        "sweeps",
    };

    assert_false(tj_bool(inbox, "enabled"));
    for (size_t i = 0; i < sizeof(zero) / sizeof(zero[0]); i++) {
        struct json_object *v = tj_get(inbox, zero[i]);

        if (!json_object_is_type(v, json_type_int) || json_object_get_int64(v) != 0)
            fail_msg("inbox.%s is not 0: %s", zero[i], json_object_to_json_string(inbox));
    }
    assert_true(json_object_is_type(tj_get(inbox, "retention_seconds"), json_type_int));
    assert_true(json_object_get_int64(tj_get(inbox, "retention_seconds")) >= 1);
    assert_null(tj_get(inbox, "depth"));
    assert_null(tj_get(inbox, "dead_letters"));
    assert_null(tj_get(inbox, "last_sweep"));
}

/* The cluster document of a node without a bus: itself alone, its totals its own figures. */
static void assert_cluster_alone(struct json_object *doc)
{
    struct json_object *cl = tj_get(doc, "cluster"), *nodes, *self;

    tj_assert_keys(cl, "node", "nodes", "nodes_counted", "active_connections", "total_users",
                   "messages_sent", NULL);
    nodes = tj_array(cl, "nodes");
    assert_int_equal(json_object_array_length(nodes), 1);
    self = json_object_array_get_idx(nodes, 0);
    tj_assert_keys(self, "node", "self", "active_connections", "total_users", "messages_sent",
                   "started_at", "last_heard", "seconds_since_heard", "stale", NULL);
    assert_true(tj_bool(self, "self"));
    assert_false(tj_bool(self, "stale"));
    assert_string_equal(tj_str(self, "node"), tj_str(cl, "node"));
    assert_non_null(strchr(tj_str(cl, "node"), ':')); /* host:port */
    assert_int_equal(tj_int(cl, "nodes_counted"), 1);
    assert_int_equal(tj_int(cl, "active_connections"), tj_int(doc, "active_connections"));
    assert_int_equal(tj_int(cl, "total_users"), tj_int(doc, "total_users"));
    assert_int_equal(tj_int(self, "active_connections"), tj_int(doc, "active_connections"));
}

static void assert_service_keys(struct json_object *doc)
{
    tj_assert_keys(doc, "active_connections", "total_users", "total_rooms", "message_stats",
                   "uptime_by_user", "uptime_by_user_truncated", "connections_opened",
                   "connections_closed", "queue_size", "uptime_seconds", "security", "inbox", "bus",
                   "cluster", "publish_sockets", NULL);
    tj_assert_keys(tj_get(doc, "publish_sockets"), "open", "opened", "frames", "answered",
                   "refused", NULL);
    tj_assert_keys(tj_get(doc, "bus"), "enabled", "connected", "published", "received", "dropped",
                   "reconnects", "drops_announced", "catch_up", "operator_actions", NULL);
    tj_assert_keys(tj_get(tj_get(doc, "bus"), "catch_up"), "asked", "rounds", "connections",
                   "messages", "failed", NULL);
    tj_assert_keys(tj_get(tj_get(doc, "bus"), "operator_actions"), "sent", "received", "dropped",
                   NULL);
    assert_cluster_alone(doc);
    tj_assert_keys(tj_get(doc, "inbox"), "enabled", "written", "failed", "writes", "acks",
                   "acks_failed", "replays", "replayed", "replays_failed", "not_recovered",
                   "duplicates", "retention_seconds", "depth", "dead_letters",
                   "moved_to_dead_letters", "acked_deleted", "ids_expired", "sweeps", "last_sweep",
                   NULL);
    assert_inbox_without_db(tj_get(doc, "inbox"));
    tj_assert_keys(tj_get(doc, "message_stats"), "total_sent", "total_failed", "total_dropped",
                   "slow_consumer_closes", "total_broadcast", "deal_alerts", "price_alerts",
                   "trip_updates", "notifications", NULL);
}

/* The user document of a client's get_stats. */
static void assert_user_keys(struct json_object *user)
{
    tj_assert_keys(user, "user_id", "connections", "connection_ids", "connected_at",
                   "last_activity", "last_heartbeat", "messages_sent", "messages_failed",
                   "messages_dropped", "queue_size", "queue_bytes", "subscriptions",
                   "subscription_count", "subscriptions_truncated", NULL);
    assert_iso_time(tj_str(user, "connected_at"));
    assert_iso_time(tj_str(user, "last_activity"));
    assert_iso_time(tj_str(user, "last_heartbeat"));
}

/* The operator's (HTTP) user document: the same, each connection's address, and the ban. */
static void assert_http_user_keys(struct json_object *user)
{
    struct json_object *list = tj_array(user, "connection_list");

    tj_assert_keys(user, "user_id", "connections", "connection_ids", "connection_list",
                   "connected_at", "last_activity", "last_heartbeat", "messages_sent",
                   "messages_failed", "messages_dropped", "queue_size", "queue_bytes",
                   "subscriptions", "subscription_count", "subscriptions_truncated", "banned_until",
                   NULL);
    assert_int_equal(json_object_array_length(list), tj_int(user, "connections"));
    for (size_t i = 0; i < json_object_array_length(list); i++) {
        struct json_object *e = json_object_array_get_idx(list, i);

        tj_assert_keys(e, "connection_id", "address", "connected_at", NULL);
        assert_string_equal(tj_str(e, "address"), "127.0.0.1");
        assert_iso_time(tj_str(e, "connected_at"));
    }
    assert_iso_time(tj_str(user, "connected_at"));
    assert_iso_time(tj_str(user, "last_activity"));
    assert_iso_time(tj_str(user, "last_heartbeat"));
}

static void assert_conn_keys(struct json_object *entry)
{
    tj_assert_keys(entry, "connection_id", "user_id", "address", "connected_at", "last_activity",
                   "last_heartbeat", "messages_sent", "messages_failed", "messages_dropped",
                   "queue_size", "queue_bytes", "subscriptions", "subscription_count",
                   "subscriptions_truncated", NULL);
    assert_iso_time(tj_str(entry, "connected_at"));
    assert_iso_time(tj_str(entry, "last_activity"));
    assert_iso_time(tj_str(entry, "last_heartbeat"));
}

/* ------------------------------------------------------------------------------------------
 * GET /api/websocket/stats
 * ------------------------------------------------------------------------------------------ */

static void test_service_document_empty(void **state)
{
    struct tserver *ts = *state;
    struct json_object *doc, *ms, *sec, *limits, *ref;
    int64_t before = tc_now_ms();
    double uptime;
    static const char *const refusals[] = {
        "auth",
        "origin",
        "per_ip",
        "per_user",
        "proxy_header",
        "capacity",
        "api_auth",
        "rate_limited_messages",
        "rate_limit_closes",
        "private_channel",
        "token_expired_closes",
        "deadline_closes",
        "body_memory",
        "banned",
    };

    tserver_start(ts, "--queue-size", "77", "--rate-limit", "9", "--rate-burst", "11",
                  "--max-subscriptions", "5", "--max-message-size", "1000",
                  "--max-connections-per-user", "3", "--max-connections", "50",
                  "--max-connections-per-ip", "60", "--handshake-timeout", "7",
                  "--max-publish-size", "2048", "--max-body-memory", "4096", "--jwt-leeway", "12",
                  "--inbox-retention", "12345", NULL);
    doc = get(ts, "/api/websocket/stats");
    assert_service_keys(doc);
    assert_int_equal(tj_int(tj_get(doc, "inbox"), "retention_seconds"), 12345);
    assert_int_equal(tj_int(doc, "active_connections"), 0);
    assert_int_equal(tj_int(doc, "total_users"), 0);
    assert_int_equal(tj_int(doc, "total_rooms"), 0);
    ms = tj_get(doc, "message_stats");
    json_object_object_foreach(ms, key, val)
    {
        if (!json_object_is_type(val, json_type_int) || json_object_get_int64(val) != 0)
            fail_msg("message_stats.%s is not 0", key);
    }
    assert_int_equal(json_object_object_length(tj_get(doc, "uptime_by_user")), 0);
    assert_false(tj_bool(doc, "uptime_by_user_truncated"));
    assert_int_equal(tj_int(doc, "connections_opened"), 0);
    assert_int_equal(tj_int(doc, "connections_closed"), 0);
    assert_int_equal(tj_int(doc, "queue_size"), 77);
    uptime = tj_double(doc, "uptime_seconds");
    assert_true(uptime >= 0);
    assert_true(uptime <= (double)(tc_now_ms() - before) / 1000 + 1);

    sec = tj_get(doc, "security");
    tj_assert_keys(sec, "tls", "auth", "api_token", "origins_enforced", "limits", "refused",
                   "sockets", "socket_events_deferred", "body_bytes", "client_addresses", NULL);
    assert_false(tj_bool(sec, "tls"));
    assert_string_equal(tj_str(sec, "auth"), "off");
    assert_false(tj_bool(sec, "api_token"));
    assert_false(tj_bool(sec, "origins_enforced"));
    limits = tj_get(sec, "limits");
    tj_assert_keys(limits, "max_connections", "max_connections_per_ip", "trusted_proxies",
                   "max_connections_per_user", "handshake_timeout", "rate_limit", "rate_burst",
                   "max_subscriptions", "max_message_size", "max_publish_size", "max_body_memory",
                   "queue_size", "queue_bytes", "jwt_leeway", NULL);
    assert_int_equal(tj_int(limits, "max_connections"), 50);
    assert_int_equal(tj_int(limits, "max_connections_per_ip"), 60);
    assert_null(tj_get(limits, "trusted_proxies"));
    assert_int_equal(tj_int(limits, "max_connections_per_user"), 3);
    assert_int_equal(tj_int(limits, "handshake_timeout"), 7);
    assert_int_equal(tj_int(limits, "rate_limit"), 9);
    assert_int_equal(tj_int(limits, "rate_burst"), 11);
    assert_int_equal(tj_int(limits, "max_subscriptions"), 5);
    assert_int_equal(tj_int(limits, "max_message_size"), 1000);
    assert_int_equal(tj_int(limits, "max_publish_size"), 2048);
    assert_int_equal(tj_int(limits, "max_body_memory"), 4096);
    assert_int_equal(tj_int(limits, "queue_size"), 77);
    assert_int_equal(tj_int(limits, "queue_bytes"), 1048576);
    assert_int_equal(tj_int(limits, "jwt_leeway"), 12);
    ref = tj_get(sec, "refused");
    assert_int_equal(json_object_object_length(ref), sizeof(refusals) / sizeof(refusals[0]));
    for (size_t i = 0; i < sizeof(refusals) / sizeof(refusals[0]); i++)
        assert_int_equal(tj_int(ref, refusals[i]), 0);
    assert_int_equal(tj_int(sec, "sockets"), 1);                /* this request's */
    assert_int_equal(tj_int(sec, "socket_events_deferred"), 0); /* publishers never wait */
    assert_int_equal(tj_int(sec, "body_bytes"), 0);
    assert_int_equal(tj_int(sec, "client_addresses"), 1);
    json_object_put(doc);

    /* The uptime goes on. */
    doc = get(ts, "/api/websocket/stats");
    assert_true(tj_double(doc, "uptime_seconds") >= uptime);
    json_object_put(doc);
    tserver_stop(ts);
}

/* Connections, users and rooms as they open and close; a user's uptime is its oldest open
 * connection's. */
static void test_service_counts_and_uptimes(void **state)
{
    struct tserver *ts = *state;
    struct ws a1, b1, a2;
    struct json_object *doc, *up;
    int64_t before = tc_now_ms();
    double alice, bob, limit;

    tserver_start(ts, NULL);
    ws_open(&a1, ts->port, "alice", NULL);
    subscribe(&a1, "hot_deals");
    subscribe(&a1, "alice_only");
    ws_open(&b1, ts->port, "bob", NULL);
    subscribe(&b1, "hot_deals");
    ws_open(&a2, ts->port, "alice", NULL);

    doc = get(ts, "/api/websocket/stats");
    assert_service_keys(doc);
    assert_int_equal(tj_int(doc, "active_connections"), 3);
    assert_int_equal(tj_int(doc, "total_users"), 2);
    assert_int_equal(tj_int(doc, "total_rooms"), 2);
    assert_int_equal(tj_int(doc, "connections_opened"), 3);
    assert_int_equal(tj_int(doc, "connections_closed"), 0);
    up = tj_get(doc, "uptime_by_user");
    assert_int_equal(json_object_object_length(up), 2);
    assert_false(tj_bool(doc, "uptime_by_user_truncated"));
    alice = tj_double(up, "alice");
    bob = tj_double(up, "bob");
    limit = (double)(tc_now_ms() - before) / 1000 + 1;
    assert_true(bob >= 0 && alice >= bob && alice <= limit);
    assert_true(tj_double(doc, "uptime_seconds") >= alice);
    json_object_put(doc);

    /* alice's oldest goes: her uptime is a2's now, younger than bob's. */
    ws_close(&a1);
    tserver_wait_connections(ts, 2);
    doc = get(ts, "/api/websocket/stats");
    assert_int_equal(tj_int(doc, "active_connections"), 2);
    assert_int_equal(tj_int(doc, "total_users"), 2);
    assert_int_equal(tj_int(doc, "total_rooms"), 1); /* alice_only had a1 alone */
    assert_int_equal(tj_int(doc, "connections_opened"), 3);
    assert_int_equal(tj_int(doc, "connections_closed"), 1);
    up = tj_get(doc, "uptime_by_user");
    assert_true(tj_double(up, "alice") <= tj_double(up, "bob"));
    json_object_put(doc);

    ws_close(&b1);
    tserver_wait_connections(ts, 1);
    doc = get(ts, "/api/websocket/stats");
    assert_int_equal(tj_int(doc, "total_users"), 1);
    assert_int_equal(tj_int(doc, "total_rooms"), 0);
    assert_int_equal(tj_int(doc, "connections_closed"), 2);
    up = tj_get(doc, "uptime_by_user");
    assert_int_equal(json_object_object_length(up), 1);
    assert_true(tj_double(up, "alice") >= 0);
    json_object_put(doc);
    ws_close(&a2);
    tserver_stop(ts);
}

/* Reads n published messages on c, of the types listed in order. */
static void expect_deliveries(struct ws *c, int n, const char *const *types)
{
    for (int i = 0; i < n; i++) {
        struct json_object *m = ws_recv_json(c);

        assert_string_equal(tj_str(m, "type"), types[i]);
        json_object_put(m);
    }
    ws_expect_quiet(c);
}

static void test_message_counters(void **state)
{
    struct tserver *ts = *state;
    static const char *const to_alice[] = {"deal_alert", "price_alert", "trip_update", "deal_alert",
                                           "notification"};
    static const char *const to_bob[] = {"deal_alert", "notification", "deal_alert",
                                         "notification"};
    struct ws a, b;
    struct json_object *doc, *ms, *list;

    tserver_start(ts, NULL);
    ws_open(&a, ts->port, "alice", NULL);
    ws_open(&b, ts->port, "bob", NULL);
    subscribe(&b, "news");
    assert_int_equal(
        http_publish(ts->port, "{\"target\":\"all\",\"message\":{\"type\":\"deal_alert\"}}"), 2);
    assert_int_equal(http_publish(ts->port, "{\"target\":{\"user_id\":\"alice\"},"
                                            "\"message\":{\"type\":\"price_alert\"}}"),
                     1);
    assert_int_equal(http_publish(ts->port, "{\"target\":{\"channel\":\"news\"},"
                                            "\"message\":{\"type\":\"notification\"}}"),
                     1);
    assert_int_equal(http_publish(ts->port, "{\"target\":{\"user_id\":\"alice\"},"
                                            "\"message\":{\"type\":\"trip_update\"}}"),
                     1);
    assert_int_equal(http_publish(ts->port,
                                  "[{\"target\":\"all\",\"message\":{\"type\":\"deal_alert\"}},"
                                  "{\"target\":{\"channel\":\"news\"},"
                                  "\"message\":{\"type\":\"notification\"}},"
                                  "{\"target\":{\"user_id\":\"alice\"},"
                                  "\"message\":{\"type\":\"notification\"}}]"),
                     4);
    assert_int_equal(http_publish(ts->port, "{\"target\":{\"user_id\":\"nobody\"},"
                                            "\"message\":{\"type\":\"price_alert\"}}"),
                     0);
    expect_deliveries(&a, 5, to_alice);
    expect_deliveries(&b, 4, to_bob);

    doc = get(ts, "/api/websocket/stats");
    ms = tj_get(doc, "message_stats");
    /* Written: alice's welcome and 5 messages; bob's welcome, subscribe answer and 4. */
    assert_int_equal(tj_int(ms, "total_sent"), 6 + 6);
    assert_int_equal(tj_int(ms, "total_failed"), 0);
    assert_int_equal(tj_int(ms, "total_dropped"), 0);
    assert_int_equal(tj_int(ms, "total_broadcast"), 2);
    /* Published: one per item, whoever received it. */
    assert_int_equal(tj_int(ms, "deal_alerts"), 2);
    assert_int_equal(tj_int(ms, "price_alerts"), 2);
    assert_int_equal(tj_int(ms, "trip_updates"), 1);
    assert_int_equal(tj_int(ms, "notifications"), 3);
    json_object_put(doc);

    doc = get(ts, "/api/websocket/connections");
    list = tj_array(doc, "connections");
    assert_int_equal(tj_int(json_object_array_get_idx(list, 0), "messages_sent"), 6);
    assert_int_equal(tj_int(json_object_array_get_idx(list, 1), "messages_sent"), 6);
    json_object_put(doc);
    ws_close(&a);
    ws_close(&b);
    tserver_stop(ts);
}

/* Upgrades refused by --max-connections-per-user, --allowed-origins and --max-connections are
 * counted, each in its own counter; other refusals (a bad user id, a wrong path) are not. */
static void test_security_counters_after_refused_upgrades(void **state)
{
    struct tserver *ts = *state;
    struct ws a, again, b, evil, carol, bad;
    struct http_resp r;
    struct json_object *doc, *sec, *ref;

    tserver_start(ts, "--max-connections-per-user", "1", "--allowed-origins", "https://ok.example",
                  "--max-connections", "2", NULL);
    ws_open(&a, ts->port, "alice", NULL); /* no Origin: not a browser, let in */
    assert_int_equal(ws_upgrade(&again, ts->port, "/ws/events?user_id=alice", "", &r), 429);
    http_resp_free(&r);
    assert_int_equal(ws_upgrade(&evil, ts->port, "/ws/events?user_id=bob",
                                "Origin: https://evil.example\r\n", &r),
                     403);
    assert_string_equal(r.body, "{\"error\":\"origin not allowed\"}");
    http_resp_free(&r);
    assert_int_equal(ws_upgrade(&bad, ts->port, "/ws/events?user_id=a%20b", "", &r), 400);
    http_resp_free(&r);
    assert_int_equal(
        ws_upgrade(&b, ts->port, "/ws/events?user_id=bob", "Origin: https://ok.example\r\n", &r),
        101);
    doc = ws_recv_json(&b);
    assert_string_equal(tj_str(doc, "type"), "connection_established");
    json_object_put(doc);
    /* Two connections held, the most allowed: 503, before any other check. */
    assert_int_equal(ws_upgrade(&carol, ts->port, "/ws/events?user_id=carol", "", &r), 503);
    assert_string_equal(r.body, "{\"error\":\"server is at capacity, try again later\"}");
    http_resp_free(&r);
    assert_int_equal(ws_upgrade(&bad, ts->port, "/nope?user_id=dave", "", &r), 404);
    http_resp_free(&r);

    doc = get(ts, "/api/websocket/stats");
    sec = tj_get(doc, "security");
    assert_true(tj_bool(sec, "origins_enforced"));
    ref = tj_get(sec, "refused");
    assert_int_equal(tj_int(ref, "per_user"), 1);
    assert_int_equal(tj_int(ref, "origin"), 1);
    assert_int_equal(tj_int(ref, "capacity"), 1);
    assert_int_equal(tj_int(ref, "auth"), 0);
    assert_int_equal(tj_int(ref, "per_ip"), 0);
    assert_int_equal(tj_int(ref, "api_auth"), 0);
    assert_int_equal(tj_int(ref, "deadline_closes"), 0);
    assert_int_equal(tj_int(doc, "active_connections"), 2);
    assert_int_equal(tj_int(doc, "connections_opened"), 2);
    json_object_put(doc);
    ws_close(&a);
    ws_close(&b);
    tserver_stop(ts);
}

/* More than UPTIME_USERS_MAX users: uptime_by_user lists that many and says it is cut; the
 * connections document lists 100 by default and 1,000 at most. */
static void test_caps_on_users_and_connections(void **state)
{
    struct tserver *ts = *state;
    enum { N = UPTIME_USERS_MAX + 1 };
    struct ws *cs = calloc(N, sizeof(*cs));
    struct json_object *doc;

    assert_non_null(cs);
    tserver_start(ts, "--max-connections-per-ip", "3000", NULL);
    open_many(ts, cs, N, "user");

    doc = get(ts, "/api/websocket/stats");
    assert_int_equal(tj_int(doc, "active_connections"), N);
    assert_int_equal(tj_int(doc, "total_users"), N);
    assert_int_equal(json_object_object_length(tj_get(doc, "uptime_by_user")), UPTIME_USERS_MAX);
    assert_true(tj_bool(doc, "uptime_by_user_truncated"));
    json_object_put(doc);

    doc = get(ts, "/api/websocket/connections");
    assert_int_equal(json_object_array_length(tj_array(doc, "connections")), 100);
    assert_true(tj_bool(doc, "truncated"));
    assert_int_equal(tj_int(doc, "active_connections"), N);
    assert_int_equal(tj_int(doc, "total_users"), N);
    json_object_put(doc);
    doc = get(ts, "/api/websocket/connections?limit=1000");
    assert_int_equal(json_object_array_length(tj_array(doc, "connections")), 1000);
    assert_true(tj_bool(doc, "truncated"));
    json_object_put(doc);
    doc = get(ts, "/api/websocket/connections?limit=5000");
    assert_int_equal(json_object_array_length(tj_array(doc, "connections")), 1000);
    assert_true(tj_bool(doc, "truncated"));
    json_object_put(doc);

    /* One user fewer: all listed. */
    ws_close(&cs[N - 1]);
    tserver_wait_connections(ts, N - 1);
    doc = get(ts, "/api/websocket/stats");
    assert_int_equal(json_object_object_length(tj_get(doc, "uptime_by_user")), UPTIME_USERS_MAX);
    assert_false(tj_bool(doc, "uptime_by_user_truncated"));
    json_object_put(doc);
    doc = get(ts, "/api/websocket/connections?limit=1000");
    assert_int_equal(json_object_array_length(tj_array(doc, "connections")), 1000);
    assert_false(tj_bool(doc, "truncated"));
    json_object_put(doc);

    drop_many(cs, N - 1);
    tserver_wait_connections(ts, 0);
    free(cs);
    tserver_stop(ts);
}

/* ------------------------------------------------------------------------------------------
 * GET /api/websocket/connections
 * ------------------------------------------------------------------------------------------ */

static void test_connections_document(void **state)
{
    struct tserver *ts = *state;
    struct ws a1, a2, b;
    char id[3][24];
    struct json_object *doc, *list, *e;

    tserver_start(ts, NULL);
    doc = get(ts, "/api/websocket/connections");
    tj_assert_keys(doc, "active_connections", "total_users", "connections", "truncated", "cluster",
                   NULL);
    assert_cluster_alone(doc);
    assert_int_equal(tj_int(doc, "active_connections"), 0);
    assert_int_equal(tj_int(doc, "total_users"), 0);
    assert_int_equal(json_object_array_length(tj_array(doc, "connections")), 0);
    assert_false(tj_bool(doc, "truncated"));
    json_object_put(doc);

    ws_open(&a1, ts->port, "alice", id[0]);
    subscribe(&a1, "hot_deals");
    subscribe(&a1, "x");
    ws_open(&b, ts->port, "bob", id[1]);
    ws_open(&a2, ts->port, "alice", id[2]);
    subscribe(&a2, "hot_deals");

    doc = get(ts, "/api/websocket/connections");
    tj_assert_keys(doc, "active_connections", "total_users", "connections", "truncated", "cluster",
                   NULL);
    assert_cluster_alone(doc);
    assert_int_equal(tj_int(doc, "active_connections"), 3);
    assert_int_equal(tj_int(doc, "total_users"), 2);
    assert_false(tj_bool(doc, "truncated"));
    list = tj_array(doc, "connections");
    assert_int_equal(json_object_array_length(list), 3);
    for (int i = 0; i < 3; i++) {
        e = json_object_array_get_idx(list, (size_t)i);
        assert_conn_keys(e);
        assert_string_equal(tj_str(e, "connection_id"), id[i]); /* in the order they opened */
        assert_int_equal(tj_int(e, "messages_failed"), 0);
        assert_int_equal(tj_int(e, "messages_dropped"), 0);
        assert_int_equal(tj_int(e, "queue_size"), 0);
        assert_false(tj_bool(e, "subscriptions_truncated"));
        /* Nothing but the upgrade came from the client yet, or something after it. */
        assert_true(strcmp(tj_str(e, "last_activity"), tj_str(e, "connected_at")) >= 0);
        assert_string_equal(tj_str(e, "last_heartbeat"), tj_str(e, "connected_at"));
    }
    e = json_object_array_get_idx(list, 0);
    assert_string_equal(tj_str(e, "user_id"), "alice");
    assert_string_equal(tj_str(e, "address"), "127.0.0.1");
    assert_int_equal(tj_int(e, "messages_sent"), 3); /* welcome, 2 answers */
    assert_string_set(tj_array(e, "subscriptions"), "hot_deals", "x", NULL);
    assert_int_equal(tj_int(e, "subscription_count"), 2);
    assert_true(strcmp(tj_str(e, "last_activity"), tj_str(e, "connected_at")) > 0);
    e = json_object_array_get_idx(list, 1);
    assert_string_equal(tj_str(e, "user_id"), "bob");
    assert_int_equal(tj_int(e, "messages_sent"), 1);
    assert_string_set(tj_array(e, "subscriptions"), NULL);
    assert_int_equal(tj_int(e, "subscription_count"), 0);
    e = json_object_array_get_idx(list, 2);
    assert_string_equal(tj_str(e, "user_id"), "alice");
    assert_int_equal(tj_int(e, "messages_sent"), 2);
    assert_string_set(tj_array(e, "subscriptions"), "hot_deals", NULL);
    assert_int_equal(tj_int(e, "subscription_count"), 1);
    json_object_put(doc);

    ws_close(&a1);
    ws_close(&a2);
    ws_close(&b);
    tserver_stop(ts);
}

/* ?limit=N: at most N, truncated when some were left out; what is not a positive number is
 * the default (100), more than 1,000 is 1,000 (the large numbers: the test above). */
static void test_connections_limit(void **state)
{
    struct tserver *ts = *state;
    static const struct {
        const char *query;
        size_t listed;
        bool truncated;
    } cases[] = {
        {"?limit=1", 1, true},
        {"?limit=2", 2, true},
        {"?limit=3", 3, false},
        {"?limit=4", 3, false},
        {"?limit=1000", 3, false},
        {"?limit=0", 3, false},
        {"?limit=", 3, false},
        {"?limit=abc", 3, false},
        {"?limit=2x", 3, false},
        {"?limit=-1", 3, false},
        {"?limit=99999999999999999999999", 3, false},
        {"?other=1&limit=2", 2, true},
        {"", 3, false},
    };
    struct ws cs[3];
    char id[3][24], path[128];
    struct json_object *doc, *list;

    tserver_start(ts, NULL);
    ws_open(&cs[0], ts->port, "u0", id[0]);
    ws_open(&cs[1], ts->port, "u1", id[1]);
    ws_open(&cs[2], ts->port, "u1", id[2]);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        snprintf(path, sizeof(path), "/api/websocket/connections%s", cases[i].query);
        doc = get(ts, path);
        list = tj_array(doc, "connections");
        if (json_object_array_length(list) != cases[i].listed ||
            tj_bool(doc, "truncated") != cases[i].truncated)
            fail_msg("%s: %zu listed, truncated %d", path, json_object_array_length(list),
                     tj_bool(doc, "truncated"));
        for (size_t k = 0; k < cases[i].listed; k++)
            assert_string_equal(tj_str(json_object_array_get_idx(list, k), "connection_id"),
                                id[k]); /* the first ones */
        assert_int_equal(tj_int(doc, "active_connections"), 3);
        assert_int_equal(tj_int(doc, "total_users"), 2);
        json_object_put(doc);
    }
    for (int i = 0; i < 3; i++)
        ws_close(&cs[i]);
    tserver_stop(ts);
}

/* One connection lists at most CONN_SUBS_LISTED_MAX of its channels; its user's document
 * lists them all. */
static void test_connection_lists_100_channels(void **state)
{
    struct tserver *ts = *state;
    enum { N = CONN_SUBS_LISTED_MAX + 1 };
    struct ws c;
    struct json_object *doc, *e;

    tserver_start(ts, "--max-subscriptions", "200", NO_RATE_LIMIT, NULL);
    ws_open(&c, ts->port, "alice", NULL);
    subscribe_range(&c, "ch", 0, N);
    doc = get(ts, "/api/websocket/connections");
    e = json_object_array_get_idx(tj_array(doc, "connections"), 0);
    assert_int_equal(json_object_array_length(tj_array(e, "subscriptions")), CONN_SUBS_LISTED_MAX);
    assert_distinct_names(tj_array(e, "subscriptions"), "ch", N);
    assert_int_equal(tj_int(e, "subscription_count"), N);
    assert_true(tj_bool(e, "subscriptions_truncated"));
    json_object_put(doc);

    doc = get(ts, "/api/websocket/users/alice");
    assert_int_equal(json_object_array_length(tj_array(doc, "subscriptions")), N);
    assert_distinct_names(tj_array(doc, "subscriptions"), "ch", N);
    assert_int_equal(tj_int(doc, "subscription_count"), N);
    assert_false(tj_bool(doc, "subscriptions_truncated"));
    json_object_put(doc);

    doc = get(ts, "/api/websocket/stats");
    assert_int_equal(tj_int(doc, "total_rooms"), N);
    json_object_put(doc);

    /* Exactly the cap: all listed. */
    unsubscribe(&c, "ch0");
    doc = get(ts, "/api/websocket/connections");
    e = json_object_array_get_idx(tj_array(doc, "connections"), 0);
    assert_int_equal(json_object_array_length(tj_array(e, "subscriptions")), CONN_SUBS_LISTED_MAX);
    assert_int_equal(tj_int(e, "subscription_count"), CONN_SUBS_LISTED_MAX);
    assert_false(tj_bool(e, "subscriptions_truncated"));
    json_object_put(doc);
    ws_close(&c);
    tserver_stop(ts);
}

/* The connections document lists at most DOC_SUBS_LISTED_MAX channel names in all: past
 * it, the connections that follow list none, and say they were cut. */
static void test_connections_document_lists_10000_channels(void **state)
{
    struct tserver *ts = *state;
    enum { CONNS = DOC_SUBS_LISTED_MAX / CONN_SUBS_LISTED_MAX + 1 };
    struct ws *cs = calloc(CONNS, sizeof(*cs));
    struct json_object *doc, *list;
    size_t total = 0;

    assert_non_null(cs);
    tserver_start(ts, "--max-subscriptions", "100", NO_RATE_LIMIT, NULL);
    open_many(ts, cs, CONNS, "user");
    for (int i = 0; i < CONNS; i++)
        subscribe_range(&cs[i], "ch", 0, CONN_SUBS_LISTED_MAX);

    doc = get(ts, "/api/websocket/connections?limit=1000");
    list = tj_array(doc, "connections");
    assert_int_equal(json_object_array_length(list), CONNS);
    assert_false(tj_bool(doc, "truncated"));
    for (int i = 0; i < CONNS; i++) {
        struct json_object *e = json_object_array_get_idx(list, (size_t)i);
        size_t listed = json_object_array_length(tj_array(e, "subscriptions"));

        assert_int_equal(tj_int(e, "subscription_count"), CONN_SUBS_LISTED_MAX);
        assert_int_equal(listed, i < CONNS - 1 ? CONN_SUBS_LISTED_MAX : 0);
        assert_int_equal(tj_bool(e, "subscriptions_truncated"), i == CONNS - 1);
        total += listed;
    }
    assert_int_equal(total, DOC_SUBS_LISTED_MAX);
    json_object_put(doc);

    /* A document that lists fewer connections has the budget for all of them. */
    doc = get(ts, "/api/websocket/connections?limit=2");
    list = tj_array(doc, "connections");
    for (int i = 0; i < 2; i++) {
        struct json_object *e = json_object_array_get_idx(list, (size_t)i);

        assert_int_equal(json_object_array_length(tj_array(e, "subscriptions")),
                         CONN_SUBS_LISTED_MAX);
        assert_false(tj_bool(e, "subscriptions_truncated"));
    }
    assert_true(tj_bool(doc, "truncated"));
    json_object_put(doc);
    drop_many(cs, CONNS);
    tserver_wait_connections(ts, 0);
    free(cs);
    tserver_stop(ts);
}

/* ------------------------------------------------------------------------------------------
 * GET /api/websocket/users/<id> and get_stats
 * ------------------------------------------------------------------------------------------ */

static void test_user_document(void **state)
{
    struct tserver *ts = *state;
    struct ws a1, a2, b;
    char id1[24], id2[24];
    struct json_object *conns, *user, *ids, *e1, *e2;
    const char *activity;

    tserver_start(ts, NULL);
    ws_open(&a1, ts->port, "alice", id1);
    subscribe(&a1, "hot_deals");
    subscribe(&a1, "x");
    ws_open(&b, ts->port, "bob", NULL);
    subscribe(&b, "bob_only");
    ws_open(&a2, ts->port, "alice", id2);
    subscribe(&a2, "hot_deals");
    subscribe(&a2, "y");
    assert_int_equal(http_publish(ts->port, "{\"target\":{\"user_id\":\"alice\"},"
                                            "\"message\":{\"type\":\"notification\"}}"),
                     2);
    json_object_put(ws_recv_json(&a1));
    json_object_put(ws_recv_json(&a2));

    conns = get(ts, "/api/websocket/connections");
    e1 = json_object_array_get_idx(tj_array(conns, "connections"), 0);
    e2 = json_object_array_get_idx(tj_array(conns, "connections"), 2);
    user = get(ts, "/api/websocket/users/alice");
    assert_http_user_keys(user);
    assert_string_equal(tj_str(user, "user_id"), "alice");
    assert_int_equal(tj_int(user, "connections"), 2);
    ids = tj_array(user, "connection_ids");
    assert_int_equal(json_object_array_length(ids), 2);
    assert_string_equal(json_object_get_string(json_object_array_get_idx(ids, 0)), id1);
    assert_string_equal(json_object_get_string(json_object_array_get_idx(ids, 1)), id2);
    /* The oldest connection, the latest activity and heartbeat, the sums. */
    assert_string_equal(tj_str(user, "connected_at"), tj_str(e1, "connected_at"));
    activity = strcmp(tj_str(e1, "last_activity"), tj_str(e2, "last_activity")) > 0
                   ? tj_str(e1, "last_activity")
                   : tj_str(e2, "last_activity");
    assert_string_equal(tj_str(user, "last_activity"), activity);
    assert_string_equal(tj_str(user, "last_heartbeat"), tj_str(e2, "connected_at"));
    assert_int_equal(tj_int(user, "messages_sent"), 4 + 4); /* welcome, 2 answers, 1 message */
    assert_int_equal(tj_int(user, "messages_failed"), 0);
    assert_int_equal(tj_int(user, "messages_dropped"), 0);
    assert_int_equal(tj_int(user, "queue_size"), 0);
    /* The union of the connections' channels, each once. */
    assert_string_set(tj_array(user, "subscriptions"), "hot_deals", "x", "y", NULL);
    assert_int_equal(tj_int(user, "subscription_count"), 3);
    assert_false(tj_bool(user, "subscriptions_truncated"));
    json_object_put(user);
    json_object_put(conns);

    /* The same walk again lists the same union (the channels' marks are per walk). */
    user = get(ts, "/api/websocket/users/alice");
    assert_string_set(tj_array(user, "subscriptions"), "hot_deals", "x", "y", NULL);
    json_object_put(user);
    user = get(ts, "/api/websocket/users/bob");
    assert_http_user_keys(user);
    assert_int_equal(tj_int(user, "connections"), 1);
    assert_string_set(tj_array(user, "subscriptions"), "bob_only", NULL);
    assert_int_equal(tj_int(user, "messages_sent"), 2);
    json_object_put(user);

    ws_close(&a1);
    tserver_wait_connections(ts, 2);
    user = get(ts, "/api/websocket/users/alice");
    assert_int_equal(tj_int(user, "connections"), 1);
    assert_string_set(tj_array(user, "connection_ids"), id2, NULL);
    assert_string_set(tj_array(user, "subscriptions"), "hot_deals", "y", NULL);
    json_object_put(user);
    ws_close(&a2);
    ws_close(&b);
    tserver_stop(ts);
}

static void expect_unknown_user(struct tserver *ts, const char *path)
{
    struct json_object *doc = http_get_json(ts->port, path, 404);

    tj_assert_keys(doc, "error", NULL);
    assert_string_equal(tj_str(doc, "error"), "unknown user");
    json_object_put(doc);
}

static void test_unknown_user_is_404(void **state)
{
    struct tserver *ts = *state;
    struct ws c;

    tserver_start(ts, NULL);
    expect_unknown_user(ts, "/api/websocket/users/alice");
    ws_open(&c, ts->port, "alice", NULL);
    expect_unknown_user(ts, "/api/websocket/users/nobody");
    expect_unknown_user(ts, "/api/websocket/users/alic");
    expect_unknown_user(ts, "/api/websocket/users/alice2");
    expect_unknown_user(ts, "/api/websocket/users/ALICE");
    expect_unknown_user(ts, "/api/websocket/users/");
    json_object_put(get(ts, "/api/websocket/users/alice"));
    ws_close(&c);
    tserver_wait_connections(ts, 0);
    expect_unknown_user(ts, "/api/websocket/users/alice");
    tserver_stop(ts);
}

/* get_stats answers with the user's document, as GET /api/websocket/users/<id> has it. */
static void test_get_stats_message(void **state)
{
    struct tserver *ts = *state;
    struct ws a1, a2;
    char id1[24], id2[24];
    struct json_object *reply, *stats, *user;

    tserver_start(ts, NULL);
    ws_open(&a1, ts->port, "alice", id1);
    subscribe(&a1, "hot_deals");
    subscribe(&a1, "x");
    ws_open(&a2, ts->port, "alice", id2);
    subscribe(&a2, "hot_deals");

    reply = ws_request(&a1, "{\"type\":\"get_stats\"}");
    tj_assert_keys(reply, "type", "user_id", "stats", "timestamp", NULL);
    assert_string_equal(tj_str(reply, "type"), "stats");
    assert_string_equal(tj_str(reply, "user_id"), "alice");
    assert_iso_time(tj_str(reply, "timestamp"));
    stats = tj_get(reply, "stats");
    assert_user_keys(stats);
    assert_string_equal(tj_str(stats, "user_id"), "alice");
    assert_int_equal(tj_int(stats, "connections"), 2);
    assert_string_set(tj_array(stats, "connection_ids"), id1, id2, NULL);
    assert_int_equal(tj_int(stats, "messages_sent"), 3 + 2); /* before this answer */
    assert_int_equal(tj_int(stats, "messages_failed"), 0);
    assert_int_equal(tj_int(stats, "messages_dropped"), 0);
    assert_int_equal(tj_int(stats, "queue_size"), 0);
    assert_string_set(tj_array(stats, "subscriptions"), "hot_deals", "x", NULL);
    assert_int_equal(tj_int(stats, "subscription_count"), 2);
    assert_false(tj_bool(stats, "subscriptions_truncated"));

    /* The HTTP document: the same, and the answer written since. */
    user = get(ts, "/api/websocket/users/alice");
    assert_string_equal(tj_str(user, "connected_at"), tj_str(stats, "connected_at"));
    assert_string_equal(tj_str(user, "last_activity"), tj_str(stats, "last_activity"));
    assert_int_equal(tj_int(user, "messages_sent"), 3 + 2 + 1);
    assert_true(json_object_equal(tj_get(user, "subscriptions"), tj_get(stats, "subscriptions")));
    assert_true(json_object_equal(tj_get(user, "connection_ids"), tj_get(stats, "connection_ids")));
    json_object_put(user);
    json_object_put(reply);

    /* A connection asks for its user's statistics, whichever connection it is. */
    reply = ws_request(&a2, "{\"type\":\"get_stats\"}");
    assert_int_equal(tj_int(tj_get(reply, "stats"), "connections"), 2);
    json_object_put(reply);
    ws_close(&a1);
    ws_close(&a2);
    tserver_stop(ts);
}

/* A user's channels are listed once each, at most USER_SUBS_LISTED_MAX of them;
 * subscription_count is the size of the whole union. */
static void test_user_lists_1000_channels(void **state)
{
    struct tserver *ts = *state;
    struct ws a1, a2;
    struct json_object *doc, *reply, *stats;

    tserver_start(ts, "--max-subscriptions", "1000", NO_RATE_LIMIT, NULL);
    ws_open(&a1, ts->port, "alice", NULL);
    ws_open(&a2, ts->port, "alice", NULL);
    subscribe_range(&a1, "ch", 0, 600);
    subscribe_range(&a2, "ch", 400, USER_SUBS_LISTED_MAX + 1); /* 200 of them a1's too */

    doc = get(ts, "/api/websocket/users/alice");
    assert_int_equal(json_object_array_length(tj_array(doc, "subscriptions")),
                     USER_SUBS_LISTED_MAX);
    assert_distinct_names(tj_array(doc, "subscriptions"), "ch", USER_SUBS_LISTED_MAX + 1);
    assert_int_equal(tj_int(doc, "subscription_count"), USER_SUBS_LISTED_MAX + 1);
    assert_true(tj_bool(doc, "subscriptions_truncated"));
    json_object_put(doc);

    reply = ws_request(&a1, "{\"type\":\"get_stats\"}");
    stats = tj_get(reply, "stats");
    assert_int_equal(json_object_array_length(tj_array(stats, "subscriptions")),
                     USER_SUBS_LISTED_MAX);
    assert_distinct_names(tj_array(stats, "subscriptions"), "ch", USER_SUBS_LISTED_MAX + 1);
    assert_int_equal(tj_int(stats, "subscription_count"), USER_SUBS_LISTED_MAX + 1);
    assert_true(tj_bool(stats, "subscriptions_truncated"));
    json_object_put(reply);

    /* Exactly the cap: all listed. */
    unsubscribe(&a2, "ch1000");
    doc = get(ts, "/api/websocket/users/alice");
    assert_int_equal(json_object_array_length(tj_array(doc, "subscriptions")),
                     USER_SUBS_LISTED_MAX);
    assert_int_equal(tj_int(doc, "subscription_count"), USER_SUBS_LISTED_MAX);
    assert_false(tj_bool(doc, "subscriptions_truncated"));
    json_object_put(doc);
    ws_close(&a1);
    ws_close(&a2);
    tserver_stop(ts);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_service_document_empty, tserver_setup,
                                        tserver_teardown),
        cmocka_unit_test_setup_teardown(test_service_counts_and_uptimes, tserver_setup,
                                        tserver_teardown),
        cmocka_unit_test_setup_teardown(test_message_counters, tserver_setup, tserver_teardown),
        cmocka_unit_test_setup_teardown(test_security_counters_after_refused_upgrades,
                                        tserver_setup, tserver_teardown),
        cmocka_unit_test_setup_teardown(test_caps_on_users_and_connections, tserver_setup,
                                        tserver_teardown),
        cmocka_unit_test_setup_teardown(test_connections_document, tserver_setup, tserver_teardown),
        cmocka_unit_test_setup_teardown(test_connections_limit, tserver_setup, tserver_teardown),
        cmocka_unit_test_setup_teardown(test_connection_lists_100_channels, tserver_setup,
                                        tserver_teardown),
        cmocka_unit_test_setup_teardown(test_connections_document_lists_10000_channels,
                                        tserver_setup, tserver_teardown),
        cmocka_unit_test_setup_teardown(test_user_document, tserver_setup, tserver_teardown),
        cmocka_unit_test_setup_teardown(test_unknown_user_is_404, tserver_setup, tserver_teardown),
        cmocka_unit_test_setup_teardown(test_get_stats_message, tserver_setup, tserver_teardown),
        cmocka_unit_test_setup_teardown(test_user_lists_1000_channels, tserver_setup,
                                        tserver_teardown),
    };

    return cmocka_run_group_tests(tests, tserver_group_setup, NULL);
}
