/*
 * test_conn — one WebSocket connection on the I/O thread (src/conn.c), end to end inside one
 * process: each test starts the real server on a thread of its own with the flags it needs
 * (ws_client.h) and talks to it over blocking sockets on 127.0.0.1, as a client would.
 *
 * Checked against docs/protocol.md: the upgrade (101, and the refusals 400/404/429 with their
 * JSON), connection_established, ping -> pong (whole and fragmented), subscribe/unsubscribe
 * and their errors, the answers to frames that are not valid JSON or not a command, the ack
 * echo as sent, binary frames, the rate limit (one warning, then close 1008; unasked pongs and
 * empty fragments charged too), a message over --max-message-size (close 1009, also when
 * fragments add up to it), invalid UTF-8 (1007), a client's close answered (and nothing
 * answered after it), the shutdown's 1001 after what was queued, and the heartbeat (a
 * protocol PING after --heartbeat-interval, a hang-up after --stale-timeout).
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

/* ------------------------------------------------------------------------------------------
 * Helpers
 * ------------------------------------------------------------------------------------------ */

/* reply is {"type":"error","code":code,"message":message,"timestamp":...}; puts it. */
static void expect_error(struct json_object *reply, const char *code, const char *message)
{
    tj_assert_keys(reply, "type", "code", "message", "timestamp", NULL);
    assert_string_equal(tj_str(reply, "type"), "error");
    assert_string_equal(tj_str(reply, "code"), code);
    assert_string_equal(tj_str(reply, "message"), message);
    assert_iso_time(tj_str(reply, "timestamp"));
    json_object_put(reply);
}

static void expect_pong(struct json_object *reply)
{
    tj_assert_keys(reply, "type", "timestamp", NULL);
    assert_string_equal(tj_str(reply, "type"), "pong");
    assert_iso_time(tj_str(reply, "timestamp"));
    json_object_put(reply);
}

/* reply is the notification answering subscribe (subscribed) or unsubscribe to channel. */
static void expect_notice(struct json_object *reply, const char *channel, bool subscribed)
{
    char text[128];

    snprintf(text, sizeof(text),
             subscribed ? "Subscribed to %s updates" : "Unsubscribed from %s updates", channel);
    tj_assert_keys(reply, "type", "message", "level", "action", "channel", "timestamp", NULL);
    assert_string_equal(tj_str(reply, "type"), "notification");
    assert_string_equal(tj_str(reply, "message"), text);
    assert_string_equal(tj_str(reply, "level"), subscribed ? "success" : "info");
    assert_string_equal(tj_str(reply, "action"), subscribed ? "subscribe" : "unsubscribe");
    assert_string_equal(tj_str(reply, "channel"), channel);
    assert_iso_time(tj_str(reply, "timestamp"));
    json_object_put(reply);
}

static void subscribe(struct ws *c, const char *channel)
{
    char cmd[256];

    snprintf(cmd, sizeof(cmd), "{\"type\":\"subscribe\",\"channel\":\"%s\"}", channel);
    expect_notice(ws_request(c, cmd), channel, true);
}

/* The "refused" object of the service's security document (put it). */
static struct json_object *refused(struct tserver *ts, struct json_object **doc)
{
    *doc = http_get_json(ts->port, "/api/websocket/stats", 200);
    return tj_get(tj_get(*doc, "security"), "refused");
}

/* An upgrade refused with status and {"error": error}, and the connection closed after. */
static void expect_refused_upgrade(struct tserver *ts, const char *target, const char *headers,
                                   int status, const char *error)
{
    struct ws c;
    struct http_resp r;
    struct json_object *body;
    char value[64];

    assert_int_equal(ws_upgrade(&c, ts->port, target, headers, &r), status);
    assert_true(http_header(&r, "content-type", value, sizeof(value)));
    assert_string_equal(value, "application/json");
    assert_true(http_header(&r, "connection", value, sizeof(value)));
    assert_string_equal(value, "close");
    body = json_tokener_parse(r.body);
    tj_assert_keys(body, "error", NULL);
    assert_string_equal(tj_str(body, "error"), error);
    json_object_put(body);
    http_resp_free(&r);
}

/* ------------------------------------------------------------------------------------------
 * The upgrade and the welcome
 * ------------------------------------------------------------------------------------------ */

static void test_connection_established(void **state)
{
    struct tserver *ts = *state;
    struct ws a, b;
    struct http_resp r;
    struct json_object *hello, *doc, *list;
    char id_a[24], id_b[24];
    const char *id;

    tserver_start(ts, "--heartbeat-interval", "7", "--stale-timeout", "20", NULL);
    assert_int_equal(ws_upgrade(&a, ts->port, "/ws/events?user_id=alice", "", &r), 101);
    hello = ws_recv_json(&a);
    tj_assert_keys(hello, "type", "user_id", "connection_id", "server_time", "heartbeat_interval",
                   "timestamp", NULL);
    assert_string_equal(tj_str(hello, "type"), "connection_established");
    assert_string_equal(tj_str(hello, "user_id"), "alice");
    id = tj_str(hello, "connection_id");
    assert_true(id[0] != '\0' && strspn(id, "0123456789") == strlen(id));
    snprintf(id_a, sizeof(id_a), "%s", id);
    assert_iso_time(tj_str(hello, "server_time"));
    assert_string_equal(tj_str(hello, "server_time"), tj_str(hello, "timestamp"));
    assert_int_equal(tj_int(hello, "heartbeat_interval"), 7);
    json_object_put(hello);
    ws_expect_quiet(&a); /* the welcome is all, until the client speaks */

    /* Every character a user id may have; another connection, another id. */
    ws_open(&b, ts->port, "Bob.k:1@x-y_z", id_b);
    assert_string_not_equal(id_a, id_b);

    /* The ids are those of the connections document, in the order they opened. */
    doc = http_get_json(ts->port, "/api/websocket/connections", 200);
    list = tj_array(doc, "connections");
    assert_int_equal(json_object_array_length(list), 2);
    assert_string_equal(tj_str(json_object_array_get_idx(list, 0), "connection_id"), id_a);
    assert_string_equal(tj_str(json_object_array_get_idx(list, 0), "user_id"), "alice");
    assert_string_equal(tj_str(json_object_array_get_idx(list, 1), "connection_id"), id_b);
    assert_string_equal(tj_str(json_object_array_get_idx(list, 1), "user_id"), "Bob.k:1@x-y_z");
    json_object_put(doc);

    ws_close(&a);
    ws_close(&b);
    tserver_stop(ts);
}

static void test_upgrade_refused(void **state)
{
    struct tserver *ts = *state;
    static const char bad_id[] = "user_id must be 1-128 characters of A-Z a-z 0-9 _ . : @ -";
    char target[300];

    tserver_start(ts, NULL);
    expect_refused_upgrade(ts, "/ws/events", "", 400, "user_id query parameter is required");
    expect_refused_upgrade(ts, "/ws/events?other=1", "", 400,
                           "user_id query parameter is required");
    expect_refused_upgrade(ts, "/ws/events?user_id=", "", 400, bad_id);
    expect_refused_upgrade(ts, "/ws/events?user_id=a%20b", "", 400, bad_id);
    memset(target, 0, sizeof(target));
    strcpy(target, "/ws/events?user_id=");
    memset(target + strlen(target), 'u', 129); /* one over the longest */
    expect_refused_upgrade(ts, target, "", 400, bad_id);
    expect_refused_upgrade(ts, "/ws/events?user_id=a&user_id=b", "", 400,
                           "user_id is given more than once");
    expect_refused_upgrade(ts, "/ws/events?user_id=a;b", "", 400,
                           "query arguments are name=value, separated by &");
    expect_refused_upgrade(ts, "/ws?user_id=alice", "", 404,
                           "WebSocket endpoint is /ws/events (publishers: /ws/publish)");
    expect_refused_upgrade(ts, "/ws/events/x?user_id=alice", "", 404,
                           "WebSocket endpoint is /ws/events (publishers: /ws/publish)");
    tserver_wait_connections(ts, 0);
    tserver_stop(ts);
}

/* --max-connections-per-user: the next upgrade of that user is 429, others are let in, and
 * the user is let in again once one of its connections closed. */
static void test_max_connections_per_user_is_429(void **state)
{
    struct tserver *ts = *state;
    struct ws a1, a2, a3, b;
    struct json_object *doc;

    tserver_start(ts, "--max-connections-per-user", "2", NULL);
    ws_open(&a1, ts->port, "alice", NULL);
    ws_open(&a2, ts->port, "alice", NULL);
    expect_refused_upgrade(ts, "/ws/events?user_id=alice", "", 429,
                           "this user holds 2 connections, the most allowed");
    ws_open(&b, ts->port, "bob", NULL);
    assert_int_equal(tj_int(refused(ts, &doc), "per_user"), 1);
    json_object_put(doc);

    ws_close(&a1);
    tserver_wait_connections(ts, 2);
    ws_open(&a3, ts->port, "alice", NULL);
    expect_pong(ws_request(&a3, "{\"type\":\"ping\"}"));
    ws_close(&a2);
    ws_close(&a3);
    ws_close(&b);
    tserver_stop(ts);
}

/* ------------------------------------------------------------------------------------------
 * Commands
 * ------------------------------------------------------------------------------------------ */

static void test_ping_pong(void **state)
{
    struct tserver *ts = *state;
    struct ws c;

    tserver_start(ts, NULL);
    ws_open(&c, ts->port, "alice", NULL);
    expect_pong(ws_request(&c, "{\"type\":\"ping\"}"));
    expect_pong(ws_request(&c, " {\"type\" : \"ping\", \"extra\": [1, {\"a\": null}]} "));
    /* Fragments are reassembled first, an empty one included. */
    ws_send_frame(&c, false, WS_OP_TEXT, "{\"type\":", 8);
    ws_send_frame(&c, false, WS_OP_CONT, "", 0);
    ws_send_frame(&c, true, WS_OP_CONT, "\"ping\"}", 7);
    expect_pong(ws_recv_json(&c));
    ws_expect_quiet(&c);
    ws_close(&c);
    tserver_stop(ts);
}

static void test_subscribe_and_unsubscribe(void **state)
{
    struct tserver *ts = *state;
    static const char deal[] =
        "{\"target\":{\"channel\":\"hot_deals\"},\"message\":{\"type\":\"deal_alert\","
        "\"deal_id\":\"d1\",\"price\":299}}";
    struct ws c, other;
    struct json_object *got;

    tserver_start(ts, NULL);
    ws_open(&c, ts->port, "alice", NULL);
    ws_open(&other, ts->port, "alice", NULL);
    subscribe(&c, "hot_deals");
    subscribe(&c, "hot_deals"); /* idempotent: the same reply, one membership */

    /* A channel publish reaches the subscribed connection, once, not the user's other one. */
    assert_int_equal(http_publish(ts->port, deal), 1);
    got = ws_recv_json(&c);
    tj_assert_keys(got, "type", "deal_id", "price", "timestamp", NULL);
    assert_string_equal(tj_str(got, "type"), "deal_alert");
    assert_string_equal(tj_str(got, "deal_id"), "d1");
    assert_int_equal(tj_int(got, "price"), 299);
    assert_iso_time(tj_str(got, "timestamp"));
    json_object_put(got);
    ws_expect_quiet(&c);
    ws_expect_quiet(&other);

    expect_notice(ws_request(&c, "{\"type\":\"unsubscribe\",\"channel\":\"hot_deals\"}"),
                  "hot_deals", false);
    assert_int_equal(http_publish(ts->port, deal), 0);
    expect_error(ws_request(&c, "{\"type\":\"unsubscribe\",\"channel\":\"hot_deals\"}"),
                 "not_subscribed", "this connection is not in that channel");
    ws_expect_quiet(&c);
    ws_close(&c);
    ws_close(&other);
    tserver_stop(ts);
}

static void test_subscribe_errors(void **state)
{
    struct tserver *ts = *state;
    static const char *const bad_names[] = {
        "",
        "has space",
        "a@b",
        "caf\\u00e9",
        "a/b",
        "ch\\u0000x",
        /* 65 characters */
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    };
    static const char pattern[] = "channel names are 1-64 characters of A-Z a-z 0-9 _ . : -";
    static const char must_be_string[] = "\"channel\" must be a string";
    static const char forbidden[] = "this channel is private: user:<id> is only for that user, "
                                    "other private channels need a token that grants them";
    static const char longest[] =
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"; /* 64 */
    struct json_object *doc;
    struct ws c;
    char cmd[256];

    tserver_start(ts, NULL);
    ws_open(&c, ts->port, "alice", NULL);
    for (size_t i = 0; i < sizeof(bad_names) / sizeof(bad_names[0]); i++) {
        snprintf(cmd, sizeof(cmd), "{\"type\":\"subscribe\",\"channel\":\"%s\"}", bad_names[i]);
        expect_error(ws_request(&c, cmd), "invalid_channel", pattern);
        snprintf(cmd, sizeof(cmd), "{\"type\":\"unsubscribe\",\"channel\":\"%s\"}", bad_names[i]);
        expect_error(ws_request(&c, cmd), "invalid_channel", pattern);
    }
    expect_error(ws_request(&c, "{\"type\":\"subscribe\"}"), "invalid_channel", must_be_string);
    expect_error(ws_request(&c, "{\"type\":\"subscribe\",\"channel\":7}"), "invalid_channel",
                 must_be_string);
    expect_error(ws_request(&c, "{\"type\":\"unsubscribe\",\"channel\":null}"), "invalid_channel",
                 must_be_string);

    /* Private channels: user:<own id> is fine, another user's and private-* are not. */
    subscribe(&c, "user:alice");
    expect_error(ws_request(&c, "{\"type\":\"subscribe\",\"channel\":\"user:bob\"}"), "forbidden",
                 forbidden);
    expect_error(ws_request(&c, "{\"type\":\"subscribe\",\"channel\":\"private-x\"}"), "forbidden",
                 forbidden);
    subscribe(&c, longest);
    subscribe(&c, "A-Z_a.z:0-9");

    /* Nothing refused was joined: the connection holds the three accepted channels. */
    doc = ws_request(&c, "{\"type\":\"get_stats\"}");
    assert_int_equal(tj_int(tj_get(doc, "stats"), "subscription_count"), 3);
    json_object_put(doc);
    assert_int_equal(tj_int(refused(ts, &doc), "private_channel"), 2);
    assert_int_equal(tj_int(tj_get(doc, "security"), "sockets"), 2); /* c and this GET */
    json_object_put(doc);
    ws_close(&c);
    tserver_stop(ts);
}

static void test_too_many_subscriptions(void **state)
{
    struct tserver *ts = *state;
    static const char too_many[] = "this connection is subscribed to the maximum of channels";
    struct ws c, other;

    tserver_start(ts, "--max-subscriptions", "2", NULL);
    ws_open(&c, ts->port, "alice", NULL);
    subscribe(&c, "c1");
    subscribe(&c, "c2");
    expect_error(ws_request(&c, "{\"type\":\"subscribe\",\"channel\":\"c3\"}"),
                 "too_many_subscriptions", too_many);
    subscribe(&c, "c2"); /* one it has: still fine at the limit */
    expect_notice(ws_request(&c, "{\"type\":\"unsubscribe\",\"channel\":\"c1\"}"), "c1", false);
    subscribe(&c, "c3");
    expect_error(ws_request(&c, "{\"type\":\"subscribe\",\"channel\":\"c1\"}"),
                 "too_many_subscriptions", too_many);
    /* The limit is per connection. */
    ws_open(&other, ts->port, "alice", NULL);
    subscribe(&other, "c1");
    subscribe(&other, "c4");
    ws_close(&c);
    ws_close(&other);
    tserver_stop(ts);
}

/* {"type":"x","a":[[...leaf...]]} with arrays arrays. */
static void nested(char *buf, size_t size, int arrays, const char *leaf)
{
    size_t n = (size_t)snprintf(buf, size, "{\"type\":\"x\",\"a\":");

    for (int i = 0; i < arrays; i++)
        buf[n++] = '[';
    n += (size_t)snprintf(buf + n, size - n, "%s", leaf);
    for (int i = 0; i < arrays; i++)
        buf[n++] = ']';
    buf[n++] = '}';
    buf[n] = '\0';
    assert_true(n < size);
}

static void test_invalid_frames_get_an_error(void **state)
{
    struct tserver *ts = *state;
    static const struct {
        const char *frame, *code, *message;
    } cases[] = {
        {"not json", "invalid_json", "message is not valid JSON"},
        {"{", "invalid_json", "message is not valid JSON"},
        {"", "invalid_json", "message is not valid JSON"},
        {"{\"type\":\"ping\"} trailing", "invalid_json", "message is not valid JSON"},
        {"{\"type\":\"ping\"}{}", "invalid_json", "message is not valid JSON"},
        {"{'type':'ping'}", "invalid_json", "message is not valid JSON"},
        {"{\"type\":\"x\",\"n\":NaN}", "invalid_json", "message is not valid JSON"},
        {"{\"type\":\"x\",\"n\":012}", "invalid_json", "message is not valid JSON"},
        {"{\"type\":\"x\",\"n\":1.}", "invalid_json", "message is not valid JSON"},
        {"{\"type\":\"x\",\"a\":\"tab\there\"}", "invalid_json",
         "message is not valid JSON: unescaped control character in a string (field \"a\")"},
        {"{\"type\":\"x\",\"k\x01\":1}", "invalid_json",
         "message is not valid JSON: unescaped control character in a string (field "
         "\"k\\u0001\")"},
        {"{\"type\":\"x\",\"a\":{\"b\":[1,18446744073709551616]}}", "invalid_number",
         "integer outside the 64-bit range: send it as a string (field \"a.b[1]\")"},
        {"{\"type\":\"x\",\"n\":-9223372036854775809}", "invalid_number",
         "integer outside the 64-bit range: send it as a string (field \"n\")"},
        {"{\"type\":\"x\",\"n\":-0}", "invalid_number",
         "-0 would arrive as 0: send 0, or -0.0 for a negative zero (field \"n\")"},
        {"[{\"type\":\"ping\"}]", "invalid_message", "message must be a JSON object"},
        {"\"ping\"", "invalid_message", "message must be a JSON object"},
        {"null", "invalid_message", "message must be a JSON object"},
        {"{\"channel\":\"x\"}", "invalid_message", "message needs a string \"type\""},
        {"{\"type\":7}", "invalid_message", "message needs a string \"type\""},
        {"{\"type\":null}", "invalid_message", "message needs a string \"type\""},
    };
    struct json_object *reply;
    struct ws c;
    char deep[128];

    tserver_start(ts, NULL);
    ws_open(&c, ts->port, "alice", NULL);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        ws_send_text(&c, cases[i].frame);
        expect_error(ws_recv_json(&c), cases[i].code, cases[i].message);
    }
    /* At most 16 levels, a value at the bottom counting as one: the object, 14 arrays and a
     * number, or the object and 15 arrays, the last one empty. */
    nested(deep, sizeof(deep), 14, "1");
    reply = ws_request(&c, deep);
    assert_string_equal(tj_str(reply, "type"), "ack");
    json_object_put(reply);
    nested(deep, sizeof(deep), 15, "");
    reply = ws_request(&c, deep);
    assert_string_equal(tj_str(reply, "type"), "ack");
    json_object_put(reply);
    nested(deep, sizeof(deep), 15, "1");
    expect_error(ws_request(&c, deep), "invalid_json", "message is not valid JSON");
    nested(deep, sizeof(deep), 16, "");
    expect_error(ws_request(&c, deep), "invalid_json", "message is not valid JSON");
    /* The connection stayed open through all of it. */
    expect_pong(ws_request(&c, "{\"type\":\"ping\"}"));
    ws_close(&c);
    tserver_stop(ts);
}

/* Any other object with a string "type" is acknowledged with the object as sent: its fields
 * in the client's order and its numbers as written. */
static void test_other_type_is_acked_as_sent(void **state)
{
    struct tserver *ts = *state;
    static const char sent[] = "{\"type\":\"custom_event\",\"z\":1,\"a\":[1,\"two\",{\"x\":null}],"
                               "\"n\":1.10,\"e\":1e400,\"big\":18446744073709551615,"
                               "\"neg\":-9223372036854775808,\"s\":\"\xc3\xa9\\t\\\"q\\\"\"}";
    struct ws c;
    struct ws_frame f;
    struct json_object *reply;
    char prefix[512];

    tserver_start(ts, NULL);
    ws_open(&c, ts->port, "alice", NULL);
    ws_send_text(&c, sent);
    assert_int_equal(ws_recv_frame(&c, TC_WAIT_MS, &f), 0);
    assert_int_equal(f.opcode, WS_OP_TEXT);
    snprintf(prefix, sizeof(prefix), "{\"type\":\"ack\",\"received\":%s,\"timestamp\":\"", sent);
    if (strncmp((const char *)f.data, prefix, strlen(prefix)) != 0)
        fail_msg("ack %s, want it to start with %s", f.data, prefix);
    reply = json_tokener_parse((const char *)f.data);
    tj_assert_keys(reply, "type", "received", "timestamp", NULL);
    assert_iso_time(tj_str(reply, "timestamp"));
    json_object_put(reply);
    ws_frame_free(&f);
    ws_close(&c);
    tserver_stop(ts);
}

static void test_binary_frame_gets_an_error(void **state)
{
    struct tserver *ts = *state;
    struct ws c;

    tserver_start(ts, NULL);
    ws_open(&c, ts->port, "alice", NULL);
    ws_send_frame(&c, true, WS_OP_BINARY, "{\"type\":\"ping\"}", 15);
    expect_error(ws_recv_json(&c), "binary_not_supported",
                 "send JSON text frames; binary frames are not accepted");
    expect_pong(ws_request(&c, "{\"type\":\"ping\"}"));
    ws_close(&c);
    tserver_stop(ts);
}

/* ------------------------------------------------------------------------------------------
 * Limits and closes
 * ------------------------------------------------------------------------------------------ */

/* n ping commands in one write: the server reads them together, far faster than the rate. */
static void send_pings_at_once(struct ws *c, int n)
{
    struct tbuf b = {0};

    for (int i = 0; i < n; i++)
        ws_frame_build(&b, true, WS_OP_TEXT, "{\"type\":\"ping\"}", 15);
    tc_send_all(c->fd, b.p, b.len);
    tbuf_free(&b);
}

static const char rate_warning[] = "too many messages: slow down, or the connection closes";

/* Over --rate-burst: the message is dropped and one rate_limited error says so; a burst's
 * worth more drops close the connection with 1008, after the answers already queued. */
static void test_rate_limit_warns_then_closes_1008(void **state)
{
    struct tserver *ts = *state;
    struct ws c, calm;
    struct json_object *doc, *r;

    tserver_start(ts, "--rate-limit", "1", "--rate-burst", "3", NULL);
    ws_open(&calm, ts->port, "calm", NULL);
    ws_open(&c, ts->port, "flooder", NULL);
    send_pings_at_once(&c, 2 * 3 + 1);
    for (int i = 0; i < 3; i++)
        expect_pong(ws_recv_json(&c));
    expect_error(ws_recv_json(&c), "rate_limited", rate_warning);
    ws_expect_close(&c, 1008, "rate limit exceeded");
    ws_drop(&c);

    tserver_wait_connections(ts, 1);
    r = refused(ts, &doc);
    assert_int_equal(tj_int(r, "rate_limited_messages"), 4); /* the 4th to the 7th */
    assert_int_equal(tj_int(r, "rate_limit_closes"), 1);
    json_object_put(doc);
    /* The bucket is the connection's: the other one is served. */
    expect_pong(ws_request(&calm, "{\"type\":\"ping\"}"));
    ws_close(&calm);
    tserver_stop(ts);
}

/* A client that slows down after the warning is served again, and warned again at its next
 * flood. */
static void test_rate_limit_spares_a_client_that_slows_down(void **state)
{
    struct tserver *ts = *state;
    struct ws c;
    struct json_object *doc, *r;

    tserver_start(ts, "--rate-limit", "4", "--rate-burst", "3", NULL);
    ws_open(&c, ts->port, "eager", NULL);
    send_pings_at_once(&c, 4);
    for (int i = 0; i < 3; i++)
        expect_pong(ws_recv_json(&c));
    expect_error(ws_recv_json(&c), "rate_limited", rate_warning);
    tc_pause_ms(500); /* the client slows down (pacing, not synchronization): 2 come back */
    expect_pong(ws_request(&c, "{\"type\":\"ping\"}"));
    send_pings_at_once(&c, 4);
    expect_pong(ws_recv_json(&c));
    expect_error(ws_recv_json(&c), "rate_limited", rate_warning);
    ws_expect_quiet(&c);
    r = refused(ts, &doc);
    assert_int_equal(tj_int(r, "rate_limited_messages"), 1 + 3);
    assert_int_equal(tj_int(r, "rate_limit_closes"), 0);
    json_object_put(doc);
    ws_drop(&c);
    tserver_stop(ts);
}

/* Pongs that answer no ping of the server's and empty fragments are charged like messages:
 * a flood of either gets the warning, then close 1008, though neither gets an answer. */
static void test_rate_limit_counts_pongs_and_empty_fragments(void **state)
{
    struct tserver *ts = *state;
    struct tbuf b = {0};
    struct ws c;

    tserver_start(ts, "--rate-limit", "1", "--rate-burst", "3", NULL);
    ws_open(&c, ts->port, "ponger", NULL);
    for (int i = 0; i < 2 * 3 + 1; i++)
        ws_frame_build(&b, true, WS_OP_PONG, "hb", 2); /* lws reports no empty pong */
    tc_send_all(c.fd, b.p, b.len);
    expect_error(ws_recv_json(&c), "rate_limited", rate_warning);
    ws_expect_close(&c, 1008, "rate limit exceeded");
    ws_drop(&c);

    b.len = 0;
    ws_open(&c, ts->port, "fragmenter", NULL);
    ws_frame_build(&b, false, WS_OP_TEXT, "", 0);
    for (int i = 1; i < 2 * 3 + 1; i++)
        ws_frame_build(&b, false, WS_OP_CONT, "", 0);
    tc_send_all(c.fd, b.p, b.len);
    tbuf_free(&b);
    expect_error(ws_recv_json(&c), "rate_limited", rate_warning);
    ws_expect_close(&c, 1008, "rate limit exceeded");
    ws_drop(&c);
    tserver_wait_connections(ts, 0);
    tserver_stop(ts);
}

/* A ping command padded to exactly n bytes. */
static void padded_ping(char *buf, size_t n)
{
    static const char head[] = "{\"type\":\"ping\",\"pad\":\"", tail[] = "\"}";
    size_t pad = n - strlen(head) - strlen(tail);

    /* buf is a string once the tail is copied after the padding, with its NUL.
     * NOLINTNEXTLINE(bugprone-not-null-terminated-result) */
    memcpy(buf, head, strlen(head));
    memset(buf + strlen(head), 'x', pad);
    memcpy(buf + strlen(head) + pad, tail, sizeof(tail));
    assert_int_equal(strlen(buf), n);
}

static void test_message_over_max_size_closes_1009(void **state)
{
    struct tserver *ts = *state;
    struct ws c, frag, bystander;
    char msg[128];

    tserver_start(ts, "--max-message-size", "64", NULL);
    ws_open(&bystander, ts->port, "bob", NULL);
    ws_open(&c, ts->port, "alice", NULL);
    padded_ping(msg, 64); /* exactly the limit: accepted */
    expect_pong(ws_request(&c, msg));
    padded_ping(msg, 65);
    ws_send_text(&c, msg);
    ws_expect_close(&c, 1009, "message too large");
    ws_drop(&c);

    /* The limit is on the whole message: fragments of 30 + 30 + 5 bytes. */
    ws_open(&frag, ts->port, "alice", NULL);
    ws_send_frame(&frag, false, WS_OP_TEXT, msg, 30);
    ws_send_frame(&frag, false, WS_OP_CONT, msg + 30, 30);
    ws_send_frame(&frag, true, WS_OP_CONT, msg + 60, 5);
    ws_expect_close(&frag, 1009, "message too large");
    ws_drop(&frag);

    expect_pong(ws_request(&bystander, "{\"type\":\"ping\"}"));
    ws_close(&bystander);
    tserver_stop(ts);
}

static void test_invalid_utf8_closes_1007(void **state)
{
    struct tserver *ts = *state;
    struct ws c;

    tserver_start(ts, NULL);
    ws_open(&c, ts->port, "alice", NULL);
    ws_send_text(&c, "{\"type\":\"custom\",\"s\":\"\xc3\x28\"}");
    ws_expect_close(&c, 1007, NULL);
    ws_drop(&c);
    tserver_wait_connections(ts, 0);
    tserver_stop(ts);
}

/* The client's close is answered with a close (its code echoed), then the TCP connection
 * ends; the connection leaves the stats, nothing counted as failed. */
static void test_client_close_is_answered(void **state)
{
    struct tserver *ts = *state;
    struct tbuf b = {0};
    struct ws c, late;
    struct ws_frame f;
    struct json_object *doc;
    static const unsigned char close_payload[] = {0x03, 0xe8, 'b', 'y', 'e'}; /* 1000 "bye" */

    tserver_start(ts, NULL);
    ws_open(&c, ts->port, "alice", NULL);
    expect_pong(ws_request(&c, "{\"type\":\"ping\"}"));
    ws_send_frame(&c, true, WS_OP_CLOSE, close_payload, sizeof(close_payload));
    assert_int_equal(ws_recv_frame(&c, TC_WAIT_MS, &f), 0);
    assert_int_equal(f.opcode, WS_OP_CLOSE);
    assert_int_equal(ws_close_code(&f), 1000);
    ws_frame_free(&f);
    ws_expect_eof(&c);
    ws_drop(&c);

    tserver_wait_connections(ts, 0);
    doc = http_get_json(ts->port, "/api/websocket/stats", 200);
    assert_int_equal(tj_int(doc, "connections_opened"), 1);
    assert_int_equal(tj_int(doc, "connections_closed"), 1);
    assert_int_equal(tj_int(tj_get(doc, "message_stats"), "total_sent"), 2); /* welcome, pong */
    assert_int_equal(tj_int(tj_get(doc, "message_stats"), "total_failed"), 0);
    json_object_put(doc);
    doc = http_get_json(ts->port, "/api/websocket/users/alice", 404);
    json_object_put(doc);

    /* A command sent behind the close frame is not run: the close comes, then the end, and no
     * answer was made to be dropped (total_failed stays 0). */
    ws_open(&late, ts->port, "alice", NULL);
    ws_frame_build(&b, true, WS_OP_CLOSE, close_payload, sizeof(close_payload));
    ws_frame_build(&b, true, WS_OP_TEXT, "{\"type\":\"ping\"}", 15);
    tc_send_all(late.fd, b.p, b.len);
    tbuf_free(&b);
    assert_int_equal(ws_recv_frame(&late, TC_WAIT_MS, &f), 0);
    assert_int_equal(f.opcode, WS_OP_CLOSE);
    assert_int_equal(ws_close_code(&f), 1000);
    ws_frame_free(&f);
    ws_expect_eof(&late);
    ws_drop(&late);
    tserver_wait_connections(ts, 0);
    doc = http_get_json(ts->port, "/api/websocket/stats", 200);
    assert_int_equal(tj_int(tj_get(doc, "message_stats"), "total_sent"), 3); /* + welcome */
    assert_int_equal(tj_int(tj_get(doc, "message_stats"), "total_failed"), 0);
    json_object_put(doc);
    tserver_stop(ts);
}

/* The shutdown writes what was queued, then closes with 1001. */
static void test_shutdown_flushes_then_closes_1001(void **state)
{
    struct tserver *ts = *state;
    struct ws c;
    struct json_object *got;

    tserver_start(ts, NULL);
    ws_open(&c, ts->port, "alice", NULL);
    for (int i = 0; i < 3; i++) {
        char body[200];

        snprintf(body, sizeof(body),
                 "{\"target\":{\"user_id\":\"alice\"},\"message\":{\"type\":\"notification\","
                 "\"message\":\"m%d\",\"level\":\"info\"}}",
                 i);
        assert_int_equal(http_publish(ts->port, body), 1);
    }
    tserver_stop_begin(ts);
    for (int i = 0; i < 3; i++) {
        char text[16];

        snprintf(text, sizeof(text), "m%d", i);
        got = ws_recv_json(&c);
        assert_string_equal(tj_str(got, "type"), "notification");
        assert_string_equal(tj_str(got, "message"), text);
        json_object_put(got);
    }
    ws_expect_close(&c, 1001, "server shutting down");
    ws_drop(&c);
    tserver_join(ts);
}

/* After --heartbeat-interval of silence the server sends a protocol PING; a PONG counts as
 * activity; after --stale-timeout of silence the connection is hung up. */
static void test_heartbeat_ping_then_stale_hang_up(void **state)
{
    struct tserver *ts = *state;
    struct ws c;
    struct ws_frame f;
    struct json_object *user;
    char connected_at[40];
    int64_t t0, t_pong;
    int r;

    tserver_start(ts, "--heartbeat-interval", "1", "--stale-timeout", "2", NULL);
    ws_open(&c, ts->port, "alice", NULL);
    t0 = tc_now_ms();
    user = http_get_json(ts->port, "/api/websocket/users/alice", 200);
    snprintf(connected_at, sizeof(connected_at), "%s", tj_str(user, "connected_at"));
    assert_string_equal(tj_str(user, "last_heartbeat"), connected_at);
    json_object_put(user);

    assert_int_equal(ws_recv_frame(&c, 5000, &f), 0);
    assert_int_equal(f.opcode, WS_OP_PING);
    assert_int_equal(f.len, 8); /* the server's send time */
    if (tc_now_ms() - t0 < 900)
        fail_msg("a PING after %lld ms of silence", (long long)(tc_now_ms() - t0));
    ws_send_frame(&c, true, WS_OP_PONG, f.data, f.len);
    t_pong = tc_now_ms();
    ws_frame_free(&f);

    /* The pong is the client's last heartbeat (wait for the server to have read it). */
    for (int64_t deadline = tc_now_ms() + TC_WAIT_MS;; tc_pause_ms(5)) {
        bool moved;

        user = http_get_json(ts->port, "/api/websocket/users/alice", 200);
        moved = strcmp(tj_str(user, "last_heartbeat"), connected_at) > 0;
        json_object_put(user);
        if (moved)
            break;
        assert_true(tc_now_ms() < deadline);
    }

    /* Silent from now on: maybe another PING, then the hang-up (no close frame needed). */
    for (;;) {
        r = ws_recv_frame(&c, 5000, &f);
        if (r != 0)
            break;
        assert_int_equal(f.opcode, WS_OP_PING);
        ws_frame_free(&f);
    }
    if (r != -EPIPE && r != -ECONNRESET)
        fail_msg("not hung up: %s", strerror(-r));
    if (tc_now_ms() - t_pong < 1900)
        fail_msg("hung up %lld ms after the pong", (long long)(tc_now_ms() - t_pong));
    ws_drop(&c);
    tserver_wait_connections(ts, 0);
    tserver_stop(ts);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_connection_established, tserver_setup,
                                        tserver_teardown),
        cmocka_unit_test_setup_teardown(test_upgrade_refused, tserver_setup, tserver_teardown),
        cmocka_unit_test_setup_teardown(test_max_connections_per_user_is_429, tserver_setup,
                                        tserver_teardown),
        cmocka_unit_test_setup_teardown(test_ping_pong, tserver_setup, tserver_teardown),
        cmocka_unit_test_setup_teardown(test_subscribe_and_unsubscribe, tserver_setup,
                                        tserver_teardown),
        cmocka_unit_test_setup_teardown(test_subscribe_errors, tserver_setup, tserver_teardown),
        cmocka_unit_test_setup_teardown(test_too_many_subscriptions, tserver_setup,
                                        tserver_teardown),
        cmocka_unit_test_setup_teardown(test_invalid_frames_get_an_error, tserver_setup,
                                        tserver_teardown),
        cmocka_unit_test_setup_teardown(test_other_type_is_acked_as_sent, tserver_setup,
                                        tserver_teardown),
        cmocka_unit_test_setup_teardown(test_binary_frame_gets_an_error, tserver_setup,
                                        tserver_teardown),
        cmocka_unit_test_setup_teardown(test_rate_limit_warns_then_closes_1008, tserver_setup,
                                        tserver_teardown),
        cmocka_unit_test_setup_teardown(test_rate_limit_spares_a_client_that_slows_down,
                                        tserver_setup, tserver_teardown),
        cmocka_unit_test_setup_teardown(test_rate_limit_counts_pongs_and_empty_fragments,
                                        tserver_setup, tserver_teardown),
        cmocka_unit_test_setup_teardown(test_message_over_max_size_closes_1009, tserver_setup,
                                        tserver_teardown),
        cmocka_unit_test_setup_teardown(test_invalid_utf8_closes_1007, tserver_setup,
                                        tserver_teardown),
        cmocka_unit_test_setup_teardown(test_client_close_is_answered, tserver_setup,
                                        tserver_teardown),
        cmocka_unit_test_setup_teardown(test_shutdown_flushes_then_closes_1001, tserver_setup,
                                        tserver_teardown),
        cmocka_unit_test_setup_teardown(test_heartbeat_ping_then_stale_hang_up, tserver_setup,
                                        tserver_teardown),
    };

    return cmocka_run_group_tests(tests, tserver_group_setup, NULL);
}
