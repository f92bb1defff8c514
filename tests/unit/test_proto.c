/*
 * test_proto — the client half of the wire protocol, as pure functions: dw_proto_parse for
 * every command kind and every way a frame is refused (with the error code the client sees),
 * the channel and user id rules, and the replies, parsed back with json-c and compared field by
 * field with the documented shapes (tests/integration/test_protocol.py checks the same on the
 * wire).
 */
#include "dealwire/msg.h"
#include "dealwire/proto.h"

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
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

/* {"type":"ack","seq":N}: N a whole number from 1 to 2^63 - 1, anything else refused. */
static void test_parse_ack(void **state)
{
    static const char *const bad[] = {
        "{\"type\":\"ack\"}",
        "{\"type\":\"ack\",\"seq\":0}",
        "{\"type\":\"ack\",\"seq\":-3}",
        "{\"type\":\"ack\",\"seq\":1.5}",
        "{\"type\":\"ack\",\"seq\":\"7\"}",
        "{\"type\":\"ack\",\"seq\":null}",
        "{\"type\":\"ack\",\"seq\":9223372036854775808}",
        "{\"type\":\"ack\",\"seq\":18446744073709551615}",
    };
    struct dw_cmd cmd;

    (void)state;
    assert_int_equal(parse_str("{\"type\":\"ack\",\"seq\":7}", &cmd), DW_CMD_ACK);
    assert_int_equal(cmd.seq, 7);
    dw_cmd_release(&cmd);
    assert_int_equal(parse_str("{\"type\":\"ack\",\"seq\":9223372036854775807}", &cmd), DW_CMD_ACK);
    assert_int_equal(cmd.seq, INT64_MAX);
    dw_cmd_release(&cmd);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (parse_str(bad[i], &cmd) != DW_CMD_INVALID)
            fail_msg("%s: accepted", bad[i]);
        assert_string_equal(cmd.error_code, "invalid_message");
        assert_non_null(strstr(cmd.error_message, "seq"));
        dw_cmd_release(&cmd);
    }
}

static void test_parse_resume(void **state)
{
    static const char *const bad[] = {
        "{\"type\":\"resume\"}",
        "{\"type\":\"resume\",\"last_seq\":-1}",
        "{\"type\":\"resume\",\"last_seq\":2.5}",
        "{\"type\":\"resume\",\"last_seq\":\"3\"}",
        "{\"type\":\"resume\",\"seq\":3}",
        "{\"type\":\"resume\",\"last_seq\":9223372036854775808}",
    };
    struct dw_cmd cmd;

    (void)state;
    assert_int_equal(parse_str("{\"type\":\"resume\",\"last_seq\":0}", &cmd), DW_CMD_RESUME);
    assert_int_equal(cmd.seq, 0);
    dw_cmd_release(&cmd);
    assert_int_equal(parse_str("{\"last_seq\":41,\"type\":\"resume\"}", &cmd), DW_CMD_RESUME);
    assert_int_equal(cmd.seq, 41);
    dw_cmd_release(&cmd);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (parse_str(bad[i], &cmd) != DW_CMD_INVALID)
            fail_msg("%s: accepted", bad[i]);
        assert_string_equal(cmd.error_code, "invalid_message");
        assert_non_null(strstr(cmd.error_message, "last_seq"));
        dw_cmd_release(&cmd);
    }
}

/* {"type":"refresh","token":T}: T a string of 1-8192 bytes, borrowed with its length; the
 * token itself is the verifier's to judge (conn.c). */
static void test_parse_refresh(void **state)
{
    static const char *const bad[] = {
        "{\"type\":\"refresh\"}",
        "{\"type\":\"refresh\",\"token\":\"\"}",
        "{\"type\":\"refresh\",\"token\":42}",
        "{\"type\":\"refresh\",\"token\":[\"a.b.c\"]}",
        "{\"type\":\"refresh\",\"token\":null}",
    };
    char big[8192 + 64];
    struct dw_cmd cmd;
    int n;

    (void)state;
    assert_int_equal(parse_str("{\"type\":\"refresh\",\"token\":\"a.b\\u0000c\"}", &cmd),
                     DW_CMD_REFRESH);
    assert_int_equal(cmd.token_len, 5); /* the NUL counts: the verifier refuses it */
    assert_memory_equal(cmd.token, "a.b\0c", 5);
    dw_cmd_release(&cmd);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (parse_str(bad[i], &cmd) != DW_CMD_INVALID)
            fail_msg("%s: accepted", bad[i]);
        assert_string_equal(cmd.error_code, "invalid_token");
        dw_cmd_release(&cmd);
    }
    /* 8192 characters are taken, 8193 are not */
    for (size_t len = 8192; len <= 8193; len++) {
        n = snprintf(big, sizeof(big), "{\"type\":\"refresh\",\"token\":\"%0*d\"}", (int)len, 0);
        assert_true(n > 0 && (size_t)n < sizeof(big));
        assert_int_equal(dw_proto_parse(big, (size_t)n, &cmd),
                         len == 8192 ? DW_CMD_REFRESH : DW_CMD_INVALID);
        if (len == 8192)
            assert_int_equal(cmd.token_len, 8192);
        dw_cmd_release(&cmd);
    }
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

/* ------------------------------------------------------------------------------------------
 * Numbers and strings json-c takes but would not keep as written
 * ------------------------------------------------------------------------------------------ */

/* Parses text with dw_proto_parse_json_ex and expects a refusal of kind at field. */
static void expect_refused_at(const char *text, size_t len, enum dw_json_error_kind kind,
                              const char *field)
{
    struct json_object *obj = (struct json_object *)&obj; /* must be reset to NULL */
    struct dw_json_error err;

    memset(&err, 0x55, sizeof(err));
    if (dw_proto_parse_json_ex(text, len, 16, &obj, &err) != -EINVAL)
        fail_msg("%s: accepted", text);
    assert_null(obj);
    if (err.kind != kind)
        fail_msg("%s: error kind %d, want %d", text, (int)err.kind, (int)kind);
    assert_non_null(err.message);
    assert_true(err.message[0] != '\0');
    if (strcmp(err.field, field) != 0)
        fail_msg("%s: field \"%s\", want \"%s\"", text, err.field, field);
}

static void expect_refused(const char *text, enum dw_json_error_kind kind, const char *field)
{
    expect_refused_at(text, strlen(text), kind, field);
}

/* Parses text with dw_proto_parse_json_ex, expects success and returns the object. */
static struct json_object *parse_exact(const char *text)
{
    struct json_object *obj;
    struct dw_json_error err = {0};

    if (dw_proto_parse_json_ex(text, strlen(text), 16, &obj, &err) != 0)
        fail_msg("%s: refused (%d, %s, field \"%s\")", text, (int)err.kind,
                 err.message ? err.message : "(null)", err.field);
    return obj;
}

/* The object text is delivered byte for byte: rendered by dw_msg_new_json (the path of
 * published events) it starts with text less its closing brace. */
static void expect_delivered_as_written(const char *text)
{
    struct json_object *obj = parse_exact(text);
    size_t n = strlen(text) - 1;
    struct dw_msg *m;

    assert_true(json_object_is_type(obj, json_type_object));
    m = dw_msg_new_json(DW_MSG_DEAL_ALERT, 0, obj);
    json_object_put(obj);
    if (strncmp(dw_msg_payload(m), text, n) != 0 || dw_msg_payload(m)[n] != ',')
        fail_msg("sent %s, delivered %s", text, dw_msg_payload(m));
    dw_msg_unref(m);
}

/* The ack echoes text (an object with "type" first) byte for byte. */
static void expect_echoed_as_written(const char *text)
{
    struct dw_cmd cmd;
    struct dw_msg *m;
    char *want;

    if (parse_str(text, &cmd) != DW_CMD_OTHER)
        fail_msg("%s: %s (%s)", text, cmd.error_code ? cmd.error_code : "not other",
                 cmd.error_message ? cmd.error_message : "");
    m = dw_proto_ack(cmd.obj);
    dw_cmd_release(&cmd);
    assert_true(asprintf(&want, "{\"type\":\"ack\",\"received\":%s,", text) > 0);
    if (strncmp(dw_msg_payload(m), want, strlen(want)) != 0)
        fail_msg("sent %s, echoed %s", text, dw_msg_payload(m));
    free(want);
    dw_msg_unref(m);
}

/* The limits of json-c's integers (int64, and uint64 above INT64_MAX) come back exactly. */
static void test_integers_at_the_limits_kept(void **state)
{
    static const char *const values[] = {
        "0",
        "-1",
        "9223372036854775807",
        "9223372036854775808",
        "18446744073709551615",
        "-9223372036854775808",
        "10000000000000000000",
        "-999999999999999999",
    };
    char text[128];

    (void)state;
    for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
        snprintf(text, sizeof(text), "{\"type\":\"x\",\"n\":%s,\"a\":[%s]}", values[i], values[i]);
        expect_delivered_as_written(text);
        expect_echoed_as_written(text);
    }
}

static void test_integers_out_of_range_refused(void **state)
{
    static const struct {
        const char *text, *field;
    } cases[] = {
        {"{\"n\":18446744073709551616}", "n"},
        {"{\"n\":-9223372036854775809}", "n"},
        {"{\"n\":123456789012345678901234567890}", "n"},
        {"{\"n\":-123456789012345678901234567890}", "n"},
        {"{\"n\":99999999999999999999}", "n"},
        {"{\"n\":-10000000000000000000}", "n"},
        {"123456789012345678901234567890", ""},
        {" 18446744073709551616 ", ""},
        {"[18446744073709551616]", "[0]"},
        {"{\"target\":\"all\",\"message\":{\"type\":\"deal_alert\",\"price\":"
         "18446744073709551616}}",
         "message.price"},
        {"{\"a\":{\"b\":{\"c\":[1,2,-9223372036854775809]}}}", "a.b.c[2]"},
        {"{\"items\":[[1],[2,3,[4,18446744073709551616]]]}", "items[1][2][1]"},
        {"[{\"message\":{\"price\":1}},{},{\"x\":[]},"
         "{\"message\":{\"price\":123456789012345678901234567890}}]",
         "[3].message.price"},
        {"[1,{\"a\":1,\"b\":{\"c\":1},\"d\":[0,[1,99999999999999999999]]}]", "[1].d[1][1]"},
        /* The key of the member counts, not the keys before it or inside earlier values. */
        {"{\"a\":{\"x\":1},\"b\":\"s\",\"c\":[{\"y\":2}],\"n\":18446744073709551616}", "n"},
        /* Keys with escapes appear as written. */
        {"{\"a\\\"b\\\\\":18446744073709551616}", "a\\\"b\\\\"},
        /* json-c would deliver -0 as 0. */
        {"{\"n\":-0}", "n"},
        {"[0,-0]", "[1]"},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        expect_refused(cases[i].text, DW_JSON_ERR_NUMBER, cases[i].field);
}

/* dw_proto_parse_json (JWT claims, planner requests) still reads them, clamped. */
static void test_integers_out_of_range_lenient(void **state)
{
    static const char text[] = "[18446744073709551616,-9223372036854775809,-0]";
    struct json_object *obj;

    (void)state;
    assert_int_equal(dw_proto_parse_json(text, strlen(text), 8, &obj), 0);
    assert_string_equal(json_object_to_json_string_ext(obj, JSON_C_TO_STRING_PLAIN),
                        "[18446744073709551615,-9223372036854775808,0]");
    json_object_put(obj);
}

/* Over a WebSocket: the code is invalid_number and the message names the field. */
static void test_parse_invalid_number(void **state)
{
    static const struct {
        const char *text, *field;
    } cases[] = {
        {"{\"type\":\"x\",\"n\":123456789012345678901234567890}", "(field \"n\")"},
        {"{\"type\":\"x\",\"a\":{\"b\":[0,-9223372036854775809]}}", "(field \"a.b[1]\")"},
        {"{\"type\":\"x\",\"n\":-0}", "(field \"n\")"},
    };
    struct dw_cmd cmd;

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        assert_int_equal(parse_str(cases[i].text, &cmd), DW_CMD_INVALID);
        assert_null(cmd.obj);
        assert_string_equal(cmd.error_code, "invalid_number");
        if (!strstr(cmd.error_message, cases[i].field))
            fail_msg("%s: message \"%s\" does not name %s", cases[i].text, cmd.error_message,
                     cases[i].field);
        dw_cmd_release(&cmd);
    }
    expect_invalid("{\"type\":\"x\",\"n\":18446744073709551616}", "invalid_number");
}

/* Digits in strings and keys are not numbers; escapes do not confuse the scan. */
static void test_digits_in_strings_ignored(void **state)
{
    (void)state;
    expect_echoed_as_written("{\"type\":\"x\",\"s\":\"123456789012345678901234567890\","
                             "\"123456789012345678901234567890\":\"-0\"}");
    expect_echoed_as_written(
        "{\"type\":\"x\",\"s\":\"\\\\\",\"t\":\"q\\\"99999999999999999999\\\"\","
        "\"u\":\"\\\\\\\"\",\"n\":1}");
    expect_refused("{\"s\":\"\\\\\",\"t\":\"\\\"\",\"n\":99999999999999999999}", DW_JSON_ERR_NUMBER,
                   "n");
}

/* Doubles keep the text they were sent with (json-c keeps it), so they are not refused. */
static void test_doubles_kept_as_written(void **state)
{
    (void)state;
    expect_delivered_as_written("{\"type\":\"deal_alert\",\"a\":1e400,\"b\":1.10,\"c\":-0.0,"
                                "\"d\":1E+9,\"e\":0.30000000000000004,\"f\":-1e-400,"
                                "\"g\":123456789012345678901234567890.0,\"h\":1e01}");
    expect_echoed_as_written("{\"type\":\"x\",\"a\":1e400,\"b\":[1.10,-0.0]}");
}

/* json-c reads integers with leading zeros; JSON has none. */
static void test_leading_zeros_refused(void **state)
{
    struct json_object *obj;

    (void)state;
    expect_refused("[00]", DW_JSON_ERR_SYNTAX, "[0]");
    expect_refused("{\"a\":-012}", DW_JSON_ERR_SYNTAX, "a");
    expect_refused("-00", DW_JSON_ERR_SYNTAX, "");
    expect_invalid("{\"type\":\"x\",\"n\":00}", "invalid_json");
    assert_int_equal(dw_proto_parse_json("[-012]", 6, 8, &obj), -EINVAL);
    assert_null(obj);
}

/* RFC 8259: U+0000..U+001F must be escaped inside strings, keys included. */
static void test_control_characters_refused(void **state)
{
    static const char nul[] = "{\"s\":\"a\0b\"}";
    struct json_object *obj;
    char text[64];

    (void)state;
    expect_refused("{\"s\":\"a\x01\"}", DW_JSON_ERR_CONTROL_CHAR, "s");
    expect_refused("{\"s\":\"\x1f\"}", DW_JSON_ERR_CONTROL_CHAR, "s");
    expect_refused("{\"s\":\"tab\there\"}", DW_JSON_ERR_CONTROL_CHAR, "s");
    expect_refused("{\"s\":\"line\nbreak\"}", DW_JSON_ERR_CONTROL_CHAR, "s");
    expect_refused("\"\x01\"", DW_JSON_ERR_CONTROL_CHAR, "");
    expect_refused("{\"m\":{\"list\":[\"ok\",\"\\\"\x02\"]}}", DW_JSON_ERR_CONTROL_CHAR,
                   "m.list[1]");
    expect_refused("[{},{},{\"message\":{\"title\":\"\x1b[31m\"}}]", DW_JSON_ERR_CONTROL_CHAR,
                   "[2].message.title");
    /* In a key: the field shows the key, the character escaped. */
    expect_refused("{\"a\x01\x62\":1}", DW_JSON_ERR_CONTROL_CHAR, "a\\u0001b");
    expect_refused("{\"m\":{\"\x1f\":1}}", DW_JSON_ERR_CONTROL_CHAR, "m.\\u001f");
    /* A raw NUL inside a string (the length is explicit): json-c itself stops there. */
    assert_int_equal(dw_proto_parse_json_ex(nul, sizeof(nul) - 1, 8, &obj, NULL), -EINVAL);
    assert_null(obj);
    /* Every other one, and the lenient parser refuses them too. */
    for (int c = 1; c < 0x20; c++) {
        int n = snprintf(text, sizeof(text), "[\"x%cy\"]", c);

        expect_refused_at(text, (size_t)n, DW_JSON_ERR_CONTROL_CHAR, "[0]");
        assert_int_equal(dw_proto_parse_json(text, (size_t)n, 8, &obj), -EINVAL);
    }

    /* Over a WebSocket: invalid_json, naming the field. */
    {
        struct dw_cmd cmd;

        assert_int_equal(parse_str("{\"type\":\"x\",\"s\":\"\x01\"}", &cmd), DW_CMD_INVALID);
        assert_string_equal(cmd.error_code, "invalid_json");
        assert_non_null(strstr(cmd.error_message, "control character"));
        assert_non_null(strstr(cmd.error_message, "(field \"s\")"));
        dw_cmd_release(&cmd);
    }
}

/* Escaped control characters, DEL and everything from U+0020 up are fine. */
static void test_escaped_control_characters_kept(void **state)
{
    struct json_object *obj, *s;

    (void)state;
    expect_echoed_as_written("{\"type\":\"x\",\"s\":\"a\\u0001b\\u001f\\n\\t\"}");
    expect_echoed_as_written("{\"type\":\"x\",\"s\":\"del\x7f \xc2\x80\"}");
    expect_echoed_as_written("{\"type\":\"x\",\"k\\u0001\":1}");

    obj = parse_exact("{\"s\":\"a\\u0001\"}");
    assert_true(json_object_object_get_ex(obj, "s", &s));
    assert_int_equal(json_object_get_string_len(s), 2);
    assert_memory_equal(json_object_get_string(s), "a\x01", 2);
    json_object_put(obj);
}

/* A long path is cut, ends in "...", and is never cut inside a UTF-8 character. */
static void test_field_path_cut(void **state)
{
    char text[1024], key[401];
    struct json_object *obj;
    struct dw_json_error err;
    size_t n;

    (void)state;
    memset(key, 'k', 400);
    key[400] = '\0';
    snprintf(text, sizeof(text), "{\"%s\":{\"b\":18446744073709551616}}", key);
    assert_int_equal(dw_proto_parse_json_ex(text, strlen(text), 8, &obj, &err), -EINVAL);
    assert_int_equal(err.kind, DW_JSON_ERR_NUMBER);
    n = strlen(err.field);
    assert_true(n < DW_JSON_FIELD_MAX);
    assert_true(n > DW_JSON_FIELD_MAX / 2);
    assert_string_equal(err.field + n - 3, "...");
    assert_int_equal(strspn(err.field, "k"), n - 3);

    /* 200 x U+00E9 (2 bytes each): an even number of bytes survives the cut. */
    for (size_t i = 0; i < 200; i++)
        memcpy(key + 2 * i, "\xc3\xa9", 2);
    key[400] = '\0';
    snprintf(text, sizeof(text), "[{\"%s\":\"\x01\"}]", key);
    assert_int_equal(dw_proto_parse_json_ex(text, strlen(text), 8, &obj, &err), -EINVAL);
    assert_int_equal(err.kind, DW_JSON_ERR_CONTROL_CHAR);
    n = strlen(err.field);
    assert_true(n < DW_JSON_FIELD_MAX);
    assert_memory_equal(err.field, "[0].", 4);
    assert_string_equal(err.field + n - 3, "...");
    assert_int_equal((n - 7) % 2, 0);
    assert_memory_equal(err.field + 4, key, n - 7);

    /* Over a WebSocket the message still names the (cut) field. */
    {
        struct dw_cmd cmd;

        snprintf(text, sizeof(text), "{\"type\":\"x\",\"%s\":18446744073709551616}", key);
        assert_int_equal(parse_str(text, &cmd), DW_CMD_INVALID);
        assert_string_equal(cmd.error_code, "invalid_number");
        assert_non_null(strstr(cmd.error_message, "...\")"));
        dw_cmd_release(&cmd);
    }
}

/* Other errors keep their place unknown, and the arguments are checked. */
static void test_parse_json_ex_errors(void **state)
{
    struct json_object *obj;
    struct dw_json_error err;
    char deep[200];

    (void)state;
    expect_refused("{\"n\":1,}", DW_JSON_ERR_SYNTAX, "");
    expect_refused("{\"n\":NaN}", DW_JSON_ERR_SYNTAX, "");
    expect_refused("[\"\xe9\"]", DW_JSON_ERR_SYNTAX, "");
    assert_int_equal(dw_proto_parse_json_ex("1", 1, 0, &obj, &err), -EINVAL);
    assert_int_equal(dw_proto_parse_json_ex("1", 1, DW_JSON_DEPTH_MAX + 1, &obj, NULL), -EINVAL);
    assert_null(obj);

    /* The deepest nesting allowed parses: depth levels, the number at the bottom being one. */
    memset(deep, '[', DW_JSON_DEPTH_MAX - 1);
    /* deep is passed with its length, never as a string: nothing in it is NUL-terminated.
     * NOLINTNEXTLINE(bugprone-not-null-terminated-result) */
    memcpy(deep + DW_JSON_DEPTH_MAX - 1, "18446744073709551615", 20);
    memset(deep + DW_JSON_DEPTH_MAX - 1 + 20, ']', DW_JSON_DEPTH_MAX - 1);
    assert_int_equal(dw_proto_parse_json_ex(deep, 2 * (DW_JSON_DEPTH_MAX - 1) + 20,
                                            DW_JSON_DEPTH_MAX, &obj, NULL),
                     0);
    json_object_put(obj);
    deep[DW_JSON_DEPTH_MAX - 1 + 19] = '6';
    assert_int_equal(dw_proto_parse_json_ex(deep, 2 * (DW_JSON_DEPTH_MAX - 1) + 20,
                                            DW_JSON_DEPTH_MAX, &obj, &err),
                     -EINVAL);
    assert_int_equal(err.kind, DW_JSON_ERR_NUMBER);
    assert_memory_equal(err.field, "[0][0][0]", 9);
    assert_string_equal(err.field + strlen(err.field) - 4, "]...");

    /* As many open containers as depth allows, all of them empty. */
    memset(deep, '[', DW_JSON_DEPTH_MAX);
    memset(deep + DW_JSON_DEPTH_MAX, ']', DW_JSON_DEPTH_MAX);
    assert_int_equal(
        dw_proto_parse_json_ex(deep, (size_t)2 * DW_JSON_DEPTH_MAX, DW_JSON_DEPTH_MAX, &obj, NULL),
        0);
    json_object_put(obj);
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

    /* Done by the operator API: it says so, in the message and in "by". */
    obj = reply_obj(dw_proto_server_subscription_notice(longest, true), DW_MSG_NOTIFICATION, 7);
    snprintf(want, sizeof(want), "Subscribed to %s updates by the server", longest);
    assert_string_equal(get_str(obj, "message"), want);
    assert_string_equal(get_str(obj, "action"), "subscribe");
    assert_string_equal(get_str(obj, "by"), "server");
    json_object_put(obj);
    obj = reply_obj(dw_proto_server_subscription_notice("x", false), DW_MSG_NOTIFICATION, 7);
    assert_string_equal(get_str(obj, "message"), "Unsubscribed from x updates by the server");
    assert_string_equal(get_str(obj, "by"), "server");
    json_object_put(obj);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_ping),
        cmocka_unit_test(test_parse_subscribe_unsubscribe),
        cmocka_unit_test(test_parse_get_stats_and_other),
        cmocka_unit_test(test_parse_uses_len_only),
        cmocka_unit_test(test_parse_ack),
        cmocka_unit_test(test_parse_resume),
        cmocka_unit_test(test_parse_refresh),
        cmocka_unit_test(test_invalid_json),
        cmocka_unit_test(test_valid_json_edges),
        cmocka_unit_test(test_integers_at_the_limits_kept),
        cmocka_unit_test(test_integers_out_of_range_refused),
        cmocka_unit_test(test_integers_out_of_range_lenient),
        cmocka_unit_test(test_parse_invalid_number),
        cmocka_unit_test(test_digits_in_strings_ignored),
        cmocka_unit_test(test_doubles_kept_as_written),
        cmocka_unit_test(test_leading_zeros_refused),
        cmocka_unit_test(test_control_characters_refused),
        cmocka_unit_test(test_escaped_control_characters_kept),
        cmocka_unit_test(test_field_path_cut),
        cmocka_unit_test(test_parse_json_ex_errors),
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
