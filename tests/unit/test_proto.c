/*
 * test_proto — the client half of the wire protocol, as pure functions: dw_proto_parse for
 * every command kind and every way a frame is refused (with the error code the client sees),
 * the channel and user id rules, and the replies, parsed back with json-c and compared field by
 * field with the documented shapes (tests/integration/test_protocol.py checks the same on the
 * wire).
 */
#include "dealwire/msg.h"
#include "dealwire/proto.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <json-c/json.h>

#include "test_util.h"

/* ------------------------------------------------------------------------------------------
 * Helpers
 * ------------------------------------------------------------------------------------------ */

static enum dw_cmd_kind parse_str(const char *text, struct dw_cmd *cmd)
{
    return dw_proto_parse(text, strlen(text), cmd);
}

/* Parses text, expects DW_CMD_INVALID with code, and releases (before asserting, so that a
 * failure leaks nothing and only the failure is reported). */
static void expect_invalid(const char *text, const char *code)
{
    struct dw_cmd cmd;
    enum dw_cmd_kind kind = parse_str(text, &cmd);
    const char *got = cmd.error_code; /* static strings, valid after release */
    bool has_message = cmd.error_message && cmd.error_message[0] != '\0';

    dw_cmd_release(&cmd);
    assert_null(cmd.obj);
    if (kind != DW_CMD_INVALID)
        fail_msg("%s: parsed as kind %d, want invalid (%s)", text, (int)kind, code);
    assert_non_null(got);
    if (strcmp(got, code) != 0)
        fail_msg("%s: error code %s, want %s", text, got, code);
    assert_true(has_message);
}

static const char *get_str(struct json_object *obj, const char *key)
{
    struct json_object *v;

    if (!json_object_object_get_ex(obj, key, &v))
        fail_msg("no \"%s\" in %s", key, json_object_to_json_string(obj));
    assert_true(json_object_is_type(v, json_type_string));
    return json_object_get_string(v);
}

/* Checks that m is a framed, well-formed reply of type, with a valid timestamp and nkeys
 * members in all; returns it parsed (caller puts it) and drops m. */
static struct json_object *reply_obj(struct dw_msg *m, enum dw_msg_type type, int nkeys)
{
    struct json_object *obj;

    assert_non_null(m);
    assert_int_equal(m->type, type);
    assert_int_equal(m->flags, 0);
    assert_int_equal(atomic_load(&m->_refs), 1);
    assert_int_equal(dw_msg_frame(m)[0], 0x81);
    assert_int_equal(dw_msg_frame_len(m), m->hdr_len + m->len);
    obj = json_tokener_parse(dw_msg_payload(m));
    assert_non_null(obj);
    assert_true(json_object_is_type(obj, json_type_object));
    assert_string_equal(get_str(obj, "type"), dw_msg_type_name(type));
    assert_iso_time(get_str(obj, "timestamp"));
    assert_int_equal(json_object_object_length(obj), nkeys);
    dw_msg_unref(m);
    return obj;
}

/* ------------------------------------------------------------------------------------------
 * Commands
 * ------------------------------------------------------------------------------------------ */

static void test_parse_ping(void **state)
{
    struct dw_cmd cmd;

    (void)state;
    assert_int_equal(parse_str("{\"type\":\"ping\"}", &cmd), DW_CMD_PING);
    assert_int_equal(cmd.kind, DW_CMD_PING);
    assert_non_null(cmd.obj);
    assert_null(cmd.channel);
    assert_null(cmd.error_code);
    dw_cmd_release(&cmd);
    assert_null(cmd.obj);
    assert_int_equal(cmd.kind, DW_CMD_INVALID); /* released: zeroed */

    /* Whitespace around the value is JSON; other members are allowed. */
    assert_int_equal(parse_str(" {\"type\" : \"ping\", \"x\": [1]}\r\n", &cmd), DW_CMD_PING);
    dw_cmd_release(&cmd);
}

static void test_parse_subscribe_unsubscribe(void **state)
{
    struct dw_cmd cmd;

    (void)state;
    assert_int_equal(parse_str("{\"type\":\"subscribe\",\"channel\":\"hot_deals\"}", &cmd),
                     DW_CMD_SUBSCRIBE);
    assert_non_null(cmd.channel);
    assert_string_equal(cmd.channel, "hot_deals");
    assert_null(cmd.error_code);
    dw_cmd_release(&cmd);

    assert_int_equal(parse_str("{\"channel\":\"deals.eu:1\",\"type\":\"unsubscribe\"}", &cmd),
                     DW_CMD_UNSUBSCRIBE);
    assert_string_equal(cmd.channel, "deals.eu:1");
    dw_cmd_release(&cmd);
}

static void test_parse_get_stats_and_other(void **state)
{
    struct dw_cmd cmd;
    struct json_object *z;

    (void)state;
    assert_int_equal(parse_str("{\"type\":\"get_stats\"}", &cmd), DW_CMD_GET_STATS);
    dw_cmd_release(&cmd);

    assert_int_equal(parse_str("{\"type\":\"custom_event\",\"z\":1}", &cmd), DW_CMD_OTHER);
    assert_non_null(cmd.obj);
    assert_true(json_object_object_get_ex(cmd.obj, "z", &z));
    assert_int_equal(json_object_get_int(z), 1);
    dw_cmd_release(&cmd);

    /* Names are exact: case and look-alikes are "other". */
    assert_int_equal(parse_str("{\"type\":\"PING\"}", &cmd), DW_CMD_OTHER);
    dw_cmd_release(&cmd);
    assert_int_equal(parse_str("{\"type\":\"\"}", &cmd), DW_CMD_OTHER);
    dw_cmd_release(&cmd);
    assert_int_equal(parse_str("{\"type\":\"subscribe_all\",\"channel\":5}", &cmd), DW_CMD_OTHER);
    dw_cmd_release(&cmd);
}

static void test_parse_uses_len_only(void **state)
{
    static const char buf[] = "{\"type\":\"ping\"}{\"type\":\"get_stats\"}";
    struct dw_cmd cmd;

    (void)state;
    /* The frame need not be NUL-terminated: only len bytes count. */
    assert_int_equal(dw_proto_parse(buf, 15, &cmd), DW_CMD_PING);
    dw_cmd_release(&cmd);
    assert_int_equal(dw_proto_parse(buf + 15, sizeof(buf) - 1 - 15, &cmd), DW_CMD_GET_STATS);
    dw_cmd_release(&cmd);
    /* Both at once is trailing data. */
    assert_int_equal(dw_proto_parse(buf, sizeof(buf) - 1, &cmd), DW_CMD_INVALID);
    assert_string_equal(cmd.error_code, "invalid_json");
    dw_cmd_release(&cmd);
    /* Cut short is incomplete. */
    assert_int_equal(dw_proto_parse(buf, 14, &cmd), DW_CMD_INVALID);
    assert_string_equal(cmd.error_code, "invalid_json");
    dw_cmd_release(&cmd);
}

/* ------------------------------------------------------------------------------------------
 * Refused frames
 * ------------------------------------------------------------------------------------------ */

static void test_invalid_json(void **state)
{
    static const char *const cases[] = {
        "not json",
        "{",
        "{\"type\": \"ping\"",
        "{'type': 'ping'}",
        "{}x",
        "{\"type\": \"ping\"} trailing",
        "{\"type\":\"ping\"}{}",
        "",
        " ",
        "{\"type\":\"ping\",}",    /* trailing comma (strict) */
        "{\"type\":\"ping\"}\x01", /* a control byte after the value */
        /* Numbers json-c takes but JSON does not (found by tests/fuzz): a browser's
         * JSON.parse would refuse the echo. */
        "{\"type\":\"x\",\"n\":NaN}",
        "{\"type\":\"x\",\"n\":-Infinity}",
        "{\"type\":\"x\",\"n\":1.}",
        "{\"type\":\"x\",\"n\":1.e5}",
        "{\"type\":\"x\",\"n\":[02.1]}",
        /* Not UTF-8: a lone continuation byte, an overlong '/', a UTF-8 surrogate, a code
         * point past U+10FFFF, a truncated sequence. */
        "{\"type\":\"x\",\"s\":\"\xe9\"}",
        "{\"type\":\"x\",\"s\":\"\xc0\xaf\"}",
        "{\"type\":\"x\",\"s\":\"\xed\xb8\xad\"}",
        "{\"type\":\"x\",\"s\":\"\xf4\x90\x80\x80\"}",
        "{\"type\":\"x\",\"s\":\"\xe2\x82\"}",
    };
    struct dw_cmd cmd;

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        expect_invalid(cases[i], "invalid_json");

    /* "" with len 0 and a NULL-free buffer: no object. */
    assert_int_equal(dw_proto_parse("x", 0, &cmd), DW_CMD_INVALID);
    assert_null(cmd.obj);
    dw_cmd_release(&cmd);
}

/* What JSON allows still parses: numbers in every form, and 1- to 4-byte UTF-8. */
static void test_valid_json_edges(void **state)
{
    static const char *const cases[] = {
        "{\"type\":\"x\",\"n\":[0,-0,0.5,-0.5e-3,1E+9,1e9,10,123456789]}",
        "{\"type\":\"x\",\"s\":\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x9a\x80 \xf4\x8f\xbf\xbf\"}",
    };
    struct json_object *obj;

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        assert_int_equal(dw_proto_parse_json(cases[i], strlen(cases[i]), 8, &obj), 0);
        json_object_put(obj);
    }
}

static void test_invalid_json_too_deep(void **state)
{
    char text[256];
    size_t n = 0;

    (void)state;
    /* Nesting is bounded (PARSE_DEPTH 16): 20 levels are refused, a few are fine. */
    n += (size_t)snprintf(text + n, sizeof(text) - n, "{\"type\":\"x\",\"a\":");
    for (int i = 0; i < 20; i++)
        text[n++] = '[';
    for (int i = 0; i < 20; i++)
        text[n++] = ']';
    text[n++] = '}';
    text[n] = '\0';
    expect_invalid(text, "invalid_json");

    {
        struct dw_cmd cmd;

        assert_int_equal(parse_str("{\"type\":\"x\",\"a\":[[[{\"b\":[1]}]]]}", &cmd), DW_CMD_OTHER);
        dw_cmd_release(&cmd);
    }
}

static void test_invalid_message_non_object(void **state)
{
    (void)state;
    expect_invalid("[1, 2]", "invalid_message");
    expect_invalid("[]", "invalid_message");
    expect_invalid("\"ping\"", "invalid_message");
    expect_invalid("[{\"type\":\"ping\"}]", "invalid_message");
}

/* Bare scalars are valid JSON but not objects: the protocol (tests/integration/
 * test_protocol.py, test_invalid_message) answers them with "invalid_message", like arrays. */
static void test_invalid_message_scalar(void **state)
{
    (void)state;
    expect_invalid("42", "invalid_message");
    expect_invalid("-1.5", "invalid_message");
    expect_invalid("true", "invalid_message");
    expect_invalid("false", "invalid_message");
    expect_invalid("null", "invalid_message");
}

static void test_invalid_message_type(void **state)
{
    (void)state;
    expect_invalid("{}", "invalid_message");
    expect_invalid("{\"channel\": \"hot_deals\"}", "invalid_message");
    expect_invalid("{\"Type\": \"ping\"}", "invalid_message");
    expect_invalid("{\"type\": 5}", "invalid_message");
    expect_invalid("{\"type\": null}", "invalid_message");
    expect_invalid("{\"type\": true}", "invalid_message");
    expect_invalid("{\"type\": [\"ping\"]}", "invalid_message");
    expect_invalid("{\"type\": {\"name\": \"ping\"}}", "invalid_message");
}

static void test_invalid_channel(void **state)
{
    char text[160];
    char c65[66];

    (void)state;
    memset(c65, 'x', 65);
    c65[65] = '\0';

    expect_invalid("{\"type\":\"subscribe\"}", "invalid_channel");
    expect_invalid("{\"type\":\"subscribe\",\"channel\":\"\"}", "invalid_channel");
    expect_invalid("{\"type\":\"subscribe\",\"channel\":\"a b\"}", "invalid_channel");
    expect_invalid("{\"type\":\"subscribe\",\"channel\":\"slash/channel\"}", "invalid_channel");
    expect_invalid("{\"type\":\"subscribe\",\"channel\":\"at@sign\"}", "invalid_channel");
    expect_invalid("{\"type\":\"subscribe\",\"channel\":\"caf\\u00e9\"}", "invalid_channel");
    expect_invalid("{\"type\":\"subscribe\",\"channel\":123}", "invalid_channel");
    expect_invalid("{\"type\":\"subscribe\",\"channel\":null}", "invalid_channel");
    expect_invalid("{\"type\":\"subscribe\",\"channel\":[\"hot_deals\"]}", "invalid_channel");
    snprintf(text, sizeof(text), "{\"type\":\"subscribe\",\"channel\":\"%s\"}", c65);
    expect_invalid(text, "invalid_channel");
    snprintf(text, sizeof(text), "{\"type\":\"unsubscribe\",\"channel\":\"%s\"}", c65);
    expect_invalid(text, "invalid_channel");
    expect_invalid("{\"type\":\"unsubscribe\"}", "invalid_channel");
    expect_invalid("{\"type\":\"unsubscribe\",\"channel\":\"x y\"}", "invalid_channel");
}

/* A JSON string may hold U+0000. "a\u0000b" is not a valid channel name (NUL is not in the
 * allowed set), so it must be refused, not silently read as the channel "a". */
static void test_invalid_channel_embedded_nul(void **state)
{
    (void)state;
    expect_invalid("{\"type\":\"subscribe\",\"channel\":\"a\\u0000b\"}", "invalid_channel");
    expect_invalid("{\"type\":\"unsubscribe\",\"channel\":\"hot_deals\\u0000\"}",
                   "invalid_channel");
}

static void test_longest_valid_channel(void **state)
{
    static const char channel[] =
        "A-z_0.9:A-z_0.9:A-z_0.9:A-z_0.9:A-z_0.9:A-z_0.9:A-z_0.9:A-z_0.9:";
    char text[160];
    struct dw_cmd cmd;

    (void)state;
    assert_int_equal(strlen(channel), DW_CHANNEL_MAX);
    snprintf(text, sizeof(text), "{\"type\":\"subscribe\",\"channel\":\"%s\"}", channel);
    assert_int_equal(parse_str(text, &cmd), DW_CMD_SUBSCRIBE);
    assert_string_equal(cmd.channel, channel);
    dw_cmd_release(&cmd);
}

/* ------------------------------------------------------------------------------------------
 * Names
 * ------------------------------------------------------------------------------------------ */

static void test_channel_names(void **state)
{
    char s[DW_CHANNEL_MAX + 2];

    (void)state;
    assert_true(dw_proto_channel_is_valid("a"));
    assert_true(dw_proto_channel_is_valid("hot_deals"));
    assert_true(dw_proto_channel_is_valid("deals.eu:1-2"));
    assert_true(dw_proto_channel_is_valid("ABCxyz0189_.:-"));
    assert_false(dw_proto_channel_is_valid(""));
    assert_false(dw_proto_channel_is_valid("a b"));
    assert_false(dw_proto_channel_is_valid("a/b"));
    assert_false(dw_proto_channel_is_valid("a@b")); /* allowed in user ids only */
    assert_false(dw_proto_channel_is_valid("caf\xc3\xa9"));
    assert_false(dw_proto_channel_is_valid("tab\t"));
    assert_false(dw_proto_channel_is_valid("\"q\""));

    memset(s, 'c', sizeof(s));
    s[DW_CHANNEL_MAX] = '\0';
    assert_true(dw_proto_channel_is_valid(s)); /* 64 */
    s[DW_CHANNEL_MAX] = 'c';
    s[DW_CHANNEL_MAX + 1] = '\0';
    assert_false(dw_proto_channel_is_valid(s)); /* 65 */
}

static void test_user_ids(void **state)
{
    char s[DW_USER_ID_MAX + 2];

    (void)state;
    assert_true(dw_proto_user_id_is_valid("a"));
    assert_true(dw_proto_user_id_is_valid("A-Za-z0-9_.:@-"));
    assert_true(dw_proto_user_id_is_valid("user@example.com"));
    assert_false(dw_proto_user_id_is_valid(""));
    assert_false(dw_proto_user_id_is_valid("a b"));
    assert_false(dw_proto_user_id_is_valid("a/b"));
    assert_false(dw_proto_user_id_is_valid("\xc3\xa9"));
    assert_false(dw_proto_user_id_is_valid("a\"b"));
    assert_false(dw_proto_user_id_is_valid("a+b"));
    assert_false(dw_proto_user_id_is_valid("a%20b"));

    memset(s, 'x', sizeof(s));
    s[DW_USER_ID_MAX] = '\0';
    assert_true(dw_proto_user_id_is_valid(s)); /* 128 */
    s[DW_USER_ID_MAX] = 'x';
    s[DW_USER_ID_MAX + 1] = '\0';
    assert_false(dw_proto_user_id_is_valid(s)); /* 129 */
}

/* ------------------------------------------------------------------------------------------
 * Replies
 * ------------------------------------------------------------------------------------------ */

static void test_reply_error(void **state)
{
    struct json_object *obj;

    (void)state;
    obj = reply_obj(dw_proto_error("invalid_json", "message is not valid JSON"), DW_MSG_ERROR, 4);
    assert_string_equal(get_str(obj, "code"), "invalid_json");
    assert_string_equal(get_str(obj, "message"), "message is not valid JSON");
    json_object_put(obj);

    /* Text that needs escaping survives the round trip. */
    obj = reply_obj(dw_proto_error("x", "quote \" slash / nl \n"), DW_MSG_ERROR, 4);
    assert_string_equal(get_str(obj, "message"), "quote \" slash / nl \n");
    json_object_put(obj);
}

static void test_reply_pong(void **state)
{
    struct json_object *obj;

    (void)state;
    obj = reply_obj(dw_proto_pong(), DW_MSG_PONG, 2);
    json_object_put(obj);
}

static void test_reply_ack(void **state)
{
    static const char sent[] = "{\"type\":\"custom_event\",\"z\":1,\"a\":[1,\"two\",{\"x\":null}],"
                               "\"nested\":{\"b\":true}}";
    struct dw_cmd cmd;
    struct json_object *obj, *received;
    struct dw_msg *m;
    char *expected;

    (void)state;
    assert_int_equal(parse_str(sent, &cmd), DW_CMD_OTHER);
    m = dw_proto_ack(cmd.obj);
    /* The received object is borrowed: it is unchanged (no timestamp added to it). */
    assert_false(json_object_object_get_ex(cmd.obj, "timestamp", NULL));

    /* The echo keeps the client's member order. */
    assert_true(asprintf(&expected, "\"received\":%s", sent) > 0);
    assert_non_null(strstr(dw_msg_payload(m), expected));
    free(expected);

    obj = reply_obj(m, DW_MSG_ACK, 3);
    assert_true(json_object_object_get_ex(obj, "received", &received));
    assert_true(json_object_equal(received, cmd.obj));
    json_object_put(obj);
    dw_cmd_release(&cmd); /* still ours to free after the reply is gone */
}

static void test_reply_subscription_notice(void **state)
{
    static const char longest[] =
        "A-z_0.9:A-z_0.9:A-z_0.9:A-z_0.9:A-z_0.9:A-z_0.9:A-z_0.9:A-z_0.9:";
    struct json_object *obj;
    char want[128];

    (void)state;
    obj = reply_obj(dw_proto_subscription_notice("hot_deals", true), DW_MSG_NOTIFICATION, 6);
    assert_string_equal(get_str(obj, "message"), "Subscribed to hot_deals updates");
    assert_string_equal(get_str(obj, "level"), "success");
    assert_string_equal(get_str(obj, "action"), "subscribe");
    assert_string_equal(get_str(obj, "channel"), "hot_deals");
    json_object_put(obj);

    obj = reply_obj(dw_proto_subscription_notice("hot_deals", false), DW_MSG_NOTIFICATION, 6);
    assert_string_equal(get_str(obj, "message"), "Unsubscribed from hot_deals updates");
    assert_string_equal(get_str(obj, "level"), "info");
    assert_string_equal(get_str(obj, "action"), "unsubscribe");
    assert_string_equal(get_str(obj, "channel"), "hot_deals");
    json_object_put(obj);

    /* The longest channel name is not truncated in the message. */
    obj = reply_obj(dw_proto_subscription_notice(longest, false), DW_MSG_NOTIFICATION, 6);
    snprintf(want, sizeof(want), "Unsubscribed from %s updates", longest);
    assert_string_equal(get_str(obj, "message"), want);
    assert_string_equal(get_str(obj, "channel"), longest);
    json_object_put(obj);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_ping),
        cmocka_unit_test(test_parse_subscribe_unsubscribe),
        cmocka_unit_test(test_parse_get_stats_and_other),
        cmocka_unit_test(test_parse_uses_len_only),
        cmocka_unit_test(test_invalid_json),
        cmocka_unit_test(test_valid_json_edges),
        cmocka_unit_test(test_invalid_json_too_deep),
        cmocka_unit_test(test_invalid_message_non_object),
        cmocka_unit_test(test_invalid_message_scalar),
        cmocka_unit_test(test_invalid_message_type),
        cmocka_unit_test(test_invalid_channel),
        cmocka_unit_test(test_invalid_channel_embedded_nul),
        cmocka_unit_test(test_longest_valid_channel),
        cmocka_unit_test(test_channel_names),
        cmocka_unit_test(test_user_ids),
        cmocka_unit_test(test_reply_error),
        cmocka_unit_test(test_reply_pong),
        cmocka_unit_test(test_reply_ack),
        cmocka_unit_test(test_reply_subscription_notice),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
