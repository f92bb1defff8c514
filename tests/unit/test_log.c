/*
 * test_log — the log line (src/log.c). The JSON line builder: every member and field, the
 * escaping of quotes, backslashes and control characters, bytes that are not UTF-8 (invalid,
 * overlong, surrogates, cut sequences) as U+FFFD, and lines cut at every buffer size from the
 * smallest allowed up: each one parses with json-c in strict, UTF-8-validating mode, and says
 * "truncated" exactly when something was left out. Then the written lines, read back from
 * stderr: the text format as it always was (with or without an event), the JSON format, and
 * the dw_log_event() macro, which evaluates nothing below the level in force.
 */
#include "../../src/log.c"
#undef DW_LOG_MODULE
#define DW_LOG_MODULE "test_log"

#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <json-c/json.h>

#include "test_util.h"

/* ------------------------------------------------------------------------------------------
 * Helpers
 * ------------------------------------------------------------------------------------------ */

/* Parses line (n bytes, ending in exactly one newline) strictly; fails the test unless it is
 * one JSON object and nothing else. Returns a new reference. */
static struct json_object *parse_line(const char *line, size_t n)
{
    struct json_tokener *tok = json_tokener_new();
    struct json_object *obj;

    assert_true(n >= 2);
    assert_int_equal(line[n - 1], '\n');
    assert_null(memchr(line, '\n', n - 1));
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
    obj = json_tokener_parse_ex(tok, line, (int)(n - 1));
    if (!obj || json_tokener_get_error(tok) != json_tokener_success ||
        json_tokener_get_parse_end(tok) != n - 1)
        fail_msg("not one JSON object: %.*s", (int)n, line);
    assert_true(json_object_is_type(obj, json_type_object));
    json_tokener_free(tok);
    return obj;
}

static const char *member_str(struct json_object *obj, const char *key)
{
    struct json_object *v;

    if (!json_object_object_get_ex(obj, key, &v))
        fail_msg("no member \"%s\" in %s", key, json_object_to_json_string(obj));
    assert_true(json_object_is_type(v, json_type_string));
    return json_object_get_string(v);
}

static bool has(struct json_object *obj, const char *key)
{
    return json_object_object_get_ex(obj, key, NULL);
}

/* A record at a fixed time: 2026-11-26T01:02:03.456Z. */
static struct record record_of(const char *msg, const struct dw_log_field *fields, size_t n)
{
    struct record r = {.ts = {.tv_sec = 1795654923, .tv_nsec = 456789000},
                       .level = DW_LOG_WARN,
                       .module = "conn",
                       .event = "conn.close",
                       .fields = fields,
                       .n_fields = n,
                       .msg = msg,
                       .msg_len = strlen(msg)};
    return r;
}

/* ------------------------------------------------------------------------------------------
 * The JSON line builder
 * ------------------------------------------------------------------------------------------ */

static void test_members_and_fields(void **state)
{
    const struct dw_log_field fields[] = {
        DW_LOG_STR("reason", "slow consumer"),
        DW_LOG_INT("conn", 12),
        DW_LOG_INT("min", LLONG_MIN),
        DW_LOG_STR("user", NULL),
        DW_LOG_STR("empty", ""),
    };
    struct record r = record_of("connection 12: closing", fields, 5);
    char line[LINE_MAX_JSON];
    size_t n = render_json(line, sizeof(line), &r);
    struct json_object *obj = parse_line(line, n), *v;
    static const char want[] =
        "{\"time\":\"2026-11-26T01:02:03.456Z\",\"level\":\"warn\",\"module\":\"conn\","
        "\"event\":\"conn.close\",\"reason\":\"slow consumer\",\"conn\":12,"
        "\"min\":-9223372036854775808,\"user\":null,\"empty\":\"\","
        "\"message\":\"connection 12: closing\"}\n";

    (void)state;
    /* The members in their order, then the fields in theirs, the message last. */
    assert_int_equal(n, sizeof(want) - 1);
    assert_memory_equal(line, want, n);
    assert_string_equal(member_str(obj, "message"), "connection 12: closing");
    assert_true(json_object_object_get_ex(obj, "min", &v));
    assert_int_equal(json_object_get_int64(v), INT64_MIN);
    assert_false(has(obj, "truncated"));
    json_object_put(obj);

    /* No event: "log"; no fields. */
    r = record_of("hello", NULL, 0);
    r.event = NULL;
    r.level = DW_LOG_DEBUG;
    n = render_json(line, sizeof(line), &r);
    obj = parse_line(line, n);
    assert_string_equal(member_str(obj, "event"), "log");
    assert_string_equal(member_str(obj, "level"), "debug");
    assert_int_equal(json_object_object_length(obj), 5);
    json_object_put(obj);
}

static void test_escaping_quotes_controls_and_bad_utf8(void **state)
{
    static const struct {
        const char *in, *out;
    } cases[] = {
        {"say \"hi\" \\ bye", "say \"hi\" \\ bye"},
        {"a\nb\tc\rd", "a\nb\tc\rd"},
        {"\x01\x1f\x7f", "\x01\x1f\x7f"},
        {"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"},
        {"bad \xff here", "bad \xef\xbf\xbd here"},
        {"lone \x80", "lone \xef\xbf\xbd"},
        {"overlong \xc0\xaf", "overlong \xef\xbf\xbd\xef\xbf\xbd"},
        {"overlong3 \xe0\x80\xaf", "overlong3 \xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"},
        {"surrogate \xed\xa0\x80", "surrogate \xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"},
        {"too big \xf4\x90\x80\x80", "too big \xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"},
        {"cut at end \xe2\x82", "cut at end \xef\xbf\xbd\xef\xbf\xbd"},
        {"\xe2\x82 cut inside", "\xef\xbf\xbd\xef\xbf\xbd cut inside"},
    };
    char line[LINE_MAX_JSON];

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        /* The same string as the message, as a field value and as a field key. */
        const struct dw_log_field fields[] = {DW_LOG_STR("value", cases[i].in),
                                              DW_LOG_INT(cases[i].in, 7)};
        struct record r = record_of(cases[i].in, fields, 2);
        size_t n = render_json(line, sizeof(line), &r);
        struct json_object *obj = parse_line(line, n), *v;

        assert_string_equal(member_str(obj, "message"), cases[i].out);
        assert_string_equal(member_str(obj, "value"), cases[i].out);
        assert_true(json_object_object_get_ex(obj, cases[i].out, &v));
        assert_int_equal(json_object_get_int(v), 7);
        assert_false(has(obj, "truncated"));
        json_object_put(obj);
    }

    /* Control characters are written as escapes, never raw. */
    {
        struct record r = record_of("\x01\x7f\n", NULL, 0);
        size_t n = render_json(line, sizeof(line), &r);

        line[n] = '\0';
        assert_non_null(strstr(line, "\"message\":\"\\u0001\\u007f\\n\"}\n"));
    }
}

/* A message that is cut: in every buffer size from 256 bytes up, the line parses, fits, keeps
 * the members and says "truncated" exactly when the message or a field is not all there. */
static void test_a_cut_line_still_parses_at_every_buffer_size(void **state)
{
    static const char unit[] = "ab\"\\\n\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\x01";
    char msg[1200], line[LINE_MAX_JSON + 16], big[600];
    size_t len = 0;

    (void)state;
    while (len + sizeof(unit) < sizeof(msg)) {
        memcpy(msg + len, unit, sizeof(unit) - 1);
        len += sizeof(unit) - 1;
    }
    msg[len] = '\0';
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';

    for (size_t cap = 256; cap <= LINE_MAX_JSON; cap++) {
        const struct dw_log_field fields[] = {DW_LOG_STR("user", "u\"1"), DW_LOG_STR("big", big),
                                              DW_LOG_INT("n", 5)};
        struct record r = record_of(msg, fields, 3);
        struct json_object *obj, *v;
        const char *m;
        size_t n;

        memset(line, 0x55, sizeof(line));
        n = render_json(line, cap, &r);
        assert_true(n <= cap);
        assert_int_equal((unsigned char)line[cap], 0x55); /* nothing past the buffer */
        obj = parse_line(line, n);
        m = member_str(obj, "message");
        assert_string_equal(member_str(obj, "time"), "2026-11-26T01:02:03.456Z");
        assert_string_equal(member_str(obj, "event"), "conn.close");
        /* The message is the start of what was formatted, cut between characters. */
        assert_true(strlen(m) <= len);
        assert_int_equal(memcmp(m, msg, strlen(m)), 0);
        /* Cut only when it needs more than half the line, whatever the fields take. */
        assert_true(strlen(m) == len || string_len(msg, len) > cap / 2);
        if (strlen(m) == len && has(obj, "n")) {
            assert_false(has(obj, "truncated"));
            assert_string_equal(member_str(obj, "big"), big);
        } else {
            assert_true(json_object_object_get_ex(obj, "truncated", &v));
            assert_true(json_object_get_boolean(v));
        }
        json_object_put(obj);
    }
}

/* A module or an event name longer than the line is cut inside its value, and the line
 * still parses with its message member. */
static void test_long_names_are_cut_inside_their_value(void **state)
{
    char name[400], line[LINE_MAX_JSON];

    (void)state;
    memset(name, 'm', sizeof(name) - 1);
    name[sizeof(name) - 1] = '\0';
    for (size_t cap = 256; cap <= 1000; cap++) {
        const struct dw_log_field fields[] = {DW_LOG_INT("n", 1)};
        struct record r = record_of("hello", fields, 1);
        struct json_object *obj;

        r.module = name;
        r.event = name;
        obj = parse_line(line, render_json(line, cap, &r));
        assert_string_equal(member_str(obj, "message"), "hello");
        assert_int_equal(strncmp(member_str(obj, "module"), name, 10), 0);
        /* Marked exactly when something is not all there. */
        assert_true(has(obj, "truncated") != (has(obj, "event") && has(obj, "n") &&
                                              strcmp(member_str(obj, "event"), name) == 0));
        json_object_put(obj);
    }
}

/* A message cut by its own buffer (msg_cut) is marked even when the line has room. */
static void test_message_cut_is_marked(void **state)
{
    struct record r = record_of("short", NULL, 0);
    char line[LINE_MAX_JSON];
    struct json_object *obj;
    size_t n;

    (void)state;
    r.msg_cut = true;
    n = render_json(line, sizeof(line), &r);
    obj = parse_line(line, n);
    assert_true(has(obj, "truncated"));
    assert_string_equal(member_str(obj, "message"), "short");
    json_object_put(obj);
}

/* ------------------------------------------------------------------------------------------
 * Lines as written to stderr
 * ------------------------------------------------------------------------------------------ */

static int saved_stderr = -1;
static FILE *capture;

/* Sends stderr to a temporary file until captured() reads it back. */
static void capture_stderr(void)
{
    capture = tmpfile();
    assert_non_null(capture);
    fflush(stderr);
    saved_stderr = dup(STDERR_FILENO);
    assert_true(saved_stderr >= 0);
    assert_true(dup2(fileno(capture), STDERR_FILENO) >= 0);
}

/* Restores stderr; returns what was written (a new string) and its length in *n. */
static char *captured(size_t *n)
{
    long size;
    char *text;

    assert_true(dup2(saved_stderr, STDERR_FILENO) >= 0);
    close(saved_stderr);
    size = lseek(fileno(capture), 0, SEEK_END); /* the offset fd 2 shared with it */
    assert_true(size >= 0);
    text = malloc((size_t)size + 1);
    assert_non_null(text);
    assert_int_equal(pread(fileno(capture), text, (size_t)size, 0), size);
    text[size] = '\0';
    fclose(capture);
    *n = (size_t)size;
    return text;
}

/* Is line "<RFC 3339 time> <level padded to 5> <rest>"? */
static void assert_text_line(const char *line, const char *level_and_rest)
{
    assert_true(strlen(line) > 25);
    assert_int_equal(line[4], '-');
    assert_int_equal(line[10], 'T');
    assert_int_equal(line[19], '.');
    assert_int_equal(line[23], 'Z');
    assert_int_equal(line[24], ' ');
    assert_string_equal(line + 25, level_and_rest);
}

static int evaluated;

static int count_evaluation(void)
{
    return ++evaluated;
}

/* Splits text at its newlines in place: the lines, without them, into lines[] (at most max);
 * returns how many. The text must end with a newline. */
static size_t split_lines(char *text, char **lines, size_t max)
{
    size_t k = 0;
    char *nl;

    while ((nl = strchr(text, '\n')) != NULL && k < max) {
        *nl = '\0';
        lines[k++] = text;
        text = nl + 1;
    }
    assert_int_equal(*text, '\0');
    return k;
}

/* Captures stderr (captured() ends it) and writes a dw_log() line and an event's line in
 * format. */
static void write_two_lines(enum dw_log_format format)
{
    dw_log_set_format(format);
    dw_log_set_level(DW_LOG_INFO);
    capture_stderr();
    dw_log(DW_LOG_INFO, "plain %d", 42);
    dw_log_event(DW_LOG_WARN, "conn.close", (DW_LOG_STR("reason", "x"), DW_LOG_INT("conn", 3)),
                 "connection %d closing", 3);
}

static void test_text_format_unchanged(void **state)
{
    char *text, *lines[4], longer[1500];
    size_t n;

    (void)state;
    memset(longer, 'y', sizeof(longer) - 1);
    longer[sizeof(longer) - 1] = '\0';
    write_two_lines(DW_LOG_TEXT);
    dw_log(DW_LOG_ERROR, "%s", longer);
    text = captured(&n);

    assert_int_equal(split_lines(text, lines, 4), 3);
    assert_text_line(lines[0], "info  test_log: plain 42");
    /* An event's line is the message only, as dw_log() writes it. */
    assert_text_line(lines[1], "warn  test_log: connection 3 closing");
    /* Cut at 1,023 bytes with its newline, as it always was. */
    assert_int_equal(strlen(lines[2]), 1022);
    assert_int_equal(strncmp(lines[2] + 25, "error test_log: yyy", 19), 0);
    free(text);
}

static void test_json_lines_written(void **state)
{
    char *text, *lines[3];
    struct json_object *obj, *v;
    size_t n, len[3];

    (void)state;
    write_two_lines(DW_LOG_JSON);
    dw_log_event(DW_LOG_INFO, "start", (), "no fields");
    text = captured(&n);
    dw_log_set_format(DW_LOG_TEXT);

    for (size_t i = 0, at = 0; i < 3; i++) {
        assert_non_null(strchr(text + at, '\n'));
        lines[i] = text + at;
        len[i] = (size_t)(strchr(lines[i], '\n') - lines[i]) + 1;
        at += len[i];
        assert_true(i < 2 || at == n);
    }
    obj = parse_line(lines[0], len[0]);
    assert_string_equal(member_str(obj, "event"), "log");
    assert_string_equal(member_str(obj, "module"), "test_log");
    assert_string_equal(member_str(obj, "level"), "info");
    assert_string_equal(member_str(obj, "message"), "plain 42");
    json_object_put(obj);
    obj = parse_line(lines[1], len[1]);
    assert_string_equal(member_str(obj, "event"), "conn.close");
    assert_string_equal(member_str(obj, "reason"), "x");
    assert_true(json_object_object_get_ex(obj, "conn", &v));
    assert_int_equal(json_object_get_int(v), 3);
    assert_string_equal(member_str(obj, "message"), "connection 3 closing");
    json_object_put(obj);
    obj = parse_line(lines[2], len[2]);
    assert_string_equal(member_str(obj, "event"), "start");
    assert_int_equal(json_object_object_length(obj), 5);
    json_object_put(obj);
    free(text);
}

/* Below the level, dw_log_event() evaluates neither its fields nor its arguments. */
static void test_level_before_arguments(void **state)
{
    char *text;
    size_t n;

    (void)state;
    dw_log_set_level(DW_LOG_WARN);
    evaluated = 0;
    capture_stderr();
    dw_log_event(DW_LOG_INFO, "e", (DW_LOG_INT("n", count_evaluation())), "%d", count_evaluation());
    dw_log_event(DW_LOG_WARN, "e", (DW_LOG_INT("n", count_evaluation())), "%d", count_evaluation());
    text = captured(&n);
    dw_log_set_level(DW_LOG_INFO);
    assert_int_equal(evaluated, 2); /* the second call's field and argument, once each */
    assert_non_null(strstr(text, " warn  test_log: "));
    assert_int_equal(strchr(text, '\n') - text + 1, (long)n); /* one line */
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_members_and_fields),
        cmocka_unit_test(test_escaping_quotes_controls_and_bad_utf8),
        cmocka_unit_test(test_a_cut_line_still_parses_at_every_buffer_size),
        cmocka_unit_test(test_long_names_are_cut_inside_their_value),
        cmocka_unit_test(test_message_cut_is_marked),
        cmocka_unit_test(test_text_format_unchanged),
        cmocka_unit_test(test_json_lines_written),
        cmocka_unit_test(test_level_before_arguments),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
