/*
 * test_msg — struct dw_msg through its public contract: the WebSocket framing for every header
 * size (7-, 16- and 64-bit lengths, at and around each boundary), dw_msg_new_json's one-time
 * rendering and its "timestamp" rule, the refcount (ref, ref_n, unref_n, last unref frees,
 * underflow panics), the type names and the ISO-8601 time format.
 *
 * Leaks are caught by the asan preset (LeakSanitizer at exit), so every test frees what it makes.
 */
#include "dealwire/msg.h"
#include "dealwire/time.h"

#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <json-c/json.h>

#include "test_util.h"

/* ------------------------------------------------------------------------------------------
 * Helpers
 * ------------------------------------------------------------------------------------------ */

static unsigned refs_of(struct dw_msg *m)
{
    return atomic_load_explicit(&m->_refs, memory_order_relaxed);
}

/* A payload of len bytes that is not all the same byte, so an off-by-one copy shows. */
static char *make_payload(size_t len)
{
    char *p = malloc(len + 1);

    assert_non_null(p);
    for (size_t i = 0; i < len; i++)
        p[i] = (char)('a' + i % 26);
    p[len] = '\0';
    return p;
}

/* Checks the frame of a message made from payload: FIN+text, unmasked, the expected header
 * length and length encoding, then exactly the payload. */
static void check_frame(size_t len, size_t hdr_len)
{
    char *payload = make_payload(len);
    struct dw_msg *m = dw_msg_new_text(DW_MSG_DEAL_ALERT, 0, payload, len);
    const unsigned char *f = dw_msg_frame(m);

    assert_int_equal(m->len, len);
    assert_int_equal(m->hdr_len, hdr_len);
    assert_int_equal(dw_msg_frame_len(m), hdr_len + len);
    assert_int_equal(f[0], 0x81);     /* FIN, opcode 1 (text) */
    assert_int_equal(f[1] & 0x80, 0); /* server frames are never masked */
    switch (hdr_len) {
    case 2:
        assert_int_equal(f[1], len);
        break;
    case 4:
        assert_int_equal(f[1], 126);
        assert_int_equal(((size_t)f[2] << 8) | f[3], len);
        break;
    case 10: {
        uint64_t n = 0;

        assert_int_equal(f[1], 127);
        assert_int_equal(f[2] & 0x80, 0); /* RFC 6455: the most significant bit is 0 */
        for (int i = 0; i < 8; i++)
            n = (n << 8) | f[2 + i];
        assert_int_equal(n, len);
        break;
    }
    default:
        fail_msg("unexpected header length %zu", hdr_len);
    }
    /* The frame ends exactly where the payload ends, and the payload is the input. */
    assert_ptr_equal(f + hdr_len, (const unsigned char *)dw_msg_payload(m));
    assert_memory_equal(f + hdr_len, payload, len);
    assert_int_equal(dw_msg_payload(m)[len], '\0');
    assert_int_equal(refs_of(m), 1);
    dw_msg_unref(m);
    free(payload);
}

/* Counts the occurrences of needle in s. */
static unsigned count_substr(const char *s, const char *needle)
{
    unsigned n = 0;

    while ((s = strstr(s, needle)) != NULL) {
        n++;
        s += strlen(needle);
    }
    return n;
}

/* ------------------------------------------------------------------------------------------
 * Framing
 * ------------------------------------------------------------------------------------------ */

static void test_frame_empty(void **state)
{
    (void)state;
    check_frame(0, 2);
}

static void test_frame_7bit_max(void **state)
{
    (void)state;
    check_frame(125, 2);
}

static void test_frame_16bit_min(void **state)
{
    (void)state;
    check_frame(126, 4);
}

static void test_frame_16bit_max(void **state)
{
    (void)state;
    check_frame(65535, 4);
}

static void test_frame_64bit_min(void **state)
{
    (void)state;
    check_frame(65536, 10);
}

static void test_frame_64bit_large(void **state)
{
    (void)state;
    check_frame(70000, 10);
}

static void test_new_text_fields(void **state)
{
    static const char json[] = "{\"type\":\"price_alert\"}";
    struct dw_msg *m;

    (void)state;
    m = dw_msg_new_text(DW_MSG_PRICE_ALERT, DW_MSG_F_CRITICAL, json, sizeof(json) - 1);
    assert_int_equal(m->type, DW_MSG_PRICE_ALERT);
    assert_int_equal(m->flags, DW_MSG_F_CRITICAL);
    assert_true(dw_msg_is_critical(m));
    assert_string_equal(dw_msg_payload(m), json);
    dw_msg_unref(m);

    /* Only len bytes are copied: the input need not be NUL-terminated. */
    m = dw_msg_new_text(DW_MSG_PONG, 0, "abcdef", 3);
    assert_false(dw_msg_is_critical(m));
    assert_string_equal(dw_msg_payload(m), "abc");
    assert_int_equal(dw_msg_frame_len(m), 5);
    dw_msg_unref(m);
}

/* ------------------------------------------------------------------------------------------
 * dw_msg_new_json
 * ------------------------------------------------------------------------------------------ */

static void test_new_json_adds_timestamp(void **state)
{
    struct json_object *obj = json_object_new_object(), *ts, *parsed;
    struct dw_msg *m;
    char before[DW_TIME_ISO_LEN], after[DW_TIME_ISO_LEN];

    (void)state;
    json_object_object_add(obj, "type", json_object_new_string("deal_alert"));
    json_object_object_add(obj, "n", json_object_new_int(7));

    dw_time_format_iso(before, dw_now_realtime_ns());
    m = dw_msg_new_json(DW_MSG_DEAL_ALERT, 0, obj);
    dw_time_format_iso(after, dw_now_realtime_ns());

    /* Added to obj itself (documented), as a well-formed time taken during the call. */
    assert_true(json_object_object_get_ex(obj, "timestamp", &ts));
    assert_true(json_object_is_type(ts, json_type_string));
    assert_iso_time(json_object_get_string(ts));
    assert_true(strcmp(before, json_object_get_string(ts)) <= 0);
    assert_true(strcmp(json_object_get_string(ts), after) <= 0);

    /* The payload is obj rendered once, and it parses back to the same object. */
    assert_int_equal(m->type, DW_MSG_DEAL_ALERT);
    assert_int_equal(m->len, strlen(dw_msg_payload(m)));
    assert_string_equal(dw_msg_payload(m),
                        json_object_to_json_string_ext(obj, JSON_C_TO_STRING_PLAIN |
                                                                JSON_C_TO_STRING_NOSLASHESCAPE));
    assert_int_equal(count_substr(dw_msg_payload(m), "\"timestamp\""), 1);
    parsed = json_tokener_parse(dw_msg_payload(m));
    assert_non_null(parsed);
    assert_true(json_object_equal(parsed, obj));
    json_object_put(parsed);

    /* The message is a copy: changing obj afterwards does not change it. */
    {
        char *copy = strdup(dw_msg_payload(m));

        assert_non_null(copy);
        json_object_object_add(obj, "later", json_object_new_int(1));
        assert_string_equal(dw_msg_payload(m), copy);
        assert_null(strstr(dw_msg_payload(m), "later"));
        free(copy);
    }
    dw_msg_unref(m);
    json_object_put(obj);
}

static void test_new_json_keeps_timestamp(void **state)
{
    static const char ts[] = "2020-01-02T03:04:05.000006Z";
    struct json_object *obj = json_object_new_object(), *got;
    struct dw_msg *m;

    (void)state;
    json_object_object_add(obj, "type", json_object_new_string("notification"));
    json_object_object_add(obj, "timestamp", json_object_new_string(ts));
    m = dw_msg_new_json(DW_MSG_NOTIFICATION, DW_MSG_F_CRITICAL, obj);

    assert_true(json_object_object_get_ex(obj, "timestamp", &got));
    assert_string_equal(json_object_get_string(got), ts);
    assert_int_equal(json_object_object_length(obj), 2);
    assert_int_equal(count_substr(dw_msg_payload(m), "\"timestamp\""), 1);
    assert_non_null(strstr(dw_msg_payload(m), ts));
    assert_string_equal(dw_msg_payload(m),
                        "{\"type\":\"notification\",\"timestamp\":\"" /* plain, in order */
                        "2020-01-02T03:04:05.000006Z\"}");
    assert_true(dw_msg_is_critical(m));
    dw_msg_unref(m);

    /* A timestamp of another JSON type still counts as present. */
    json_object_object_add(obj, "timestamp", json_object_new_int(5));
    m = dw_msg_new_json(DW_MSG_NOTIFICATION, 0, obj);
    assert_string_equal(dw_msg_payload(m), "{\"type\":\"notification\",\"timestamp\":5}");
    dw_msg_unref(m);
    json_object_put(obj);
}

static void test_new_json_no_slash_escape(void **state)
{
    struct json_object *obj = json_object_new_object();
    struct dw_msg *m;

    (void)state;
    json_object_object_add(obj, "url", json_object_new_string("https://x/y"));
    json_object_object_add(obj, "timestamp", json_object_new_string("t"));
    m = dw_msg_new_json(DW_MSG_TRIP_UPDATE, 0, obj);
    assert_string_equal(dw_msg_payload(m), "{\"url\":\"https://x/y\",\"timestamp\":\"t\"}");
    /* A frame header in front of it, as for dw_msg_new_text. */
    assert_int_equal(dw_msg_frame(m)[0], 0x81);
    assert_int_equal(dw_msg_frame(m)[1], m->len);
    dw_msg_unref(m);
    json_object_put(obj);
}

/* ------------------------------------------------------------------------------------------
 * Refcount
 * ------------------------------------------------------------------------------------------ */

static void test_refcount(void **state)
{
    struct dw_msg *m;

    (void)state;
    m = dw_msg_new_text(DW_MSG_ACK, 0, "{}", 2);
    assert_int_equal(refs_of(m), 1);
    dw_msg_ref(m);
    assert_int_equal(refs_of(m), 2);
    dw_msg_ref_n(m, 3);
    assert_int_equal(refs_of(m), 5);
    dw_msg_ref_n(m, 0);
    assert_int_equal(refs_of(m), 5);
    dw_msg_unref_n(m, 4);
    assert_int_equal(refs_of(m), 1);
    /* Still usable with one reference left. */
    assert_string_equal(dw_msg_payload(m), "{}");
    dw_msg_unref(m); /* the last: frees (a leak or double free shows under asan) */
}

static void test_unref_n_last_frees(void **state)
{
    struct dw_msg *m;

    (void)state;
    m = dw_msg_new_text(DW_MSG_ACK, 0, "[]", 2);
    dw_msg_ref_n(m, 9);
    assert_int_equal(refs_of(m), 10);
    dw_msg_unref_n(m, 10); /* all at once: frees */
}

/* Runs fn(m) in a child process; returns its wait status. The child's stderr (the panic line)
 * goes to /dev/null. */
static int in_child(void (*fn)(void))
{
    int status = 0;
    pid_t pid = fork();

    assert_true(pid >= 0);
    if (pid == 0) {
        int null = open("/dev/null", O_WRONLY);

        if (null >= 0)
            dup2(null, STDERR_FILENO);
        fn();
        _exit(0);
    }
    assert_int_equal(waitpid(pid, &status, 0), pid);
    return status;
}

static void underflow_by_n(void)
{
    struct dw_msg *m = dw_msg_new_text(DW_MSG_ACK, 0, "{}", 2);

    dw_msg_ref(m);        /* 2 */
    dw_msg_unref_n(m, 3); /* one more than taken: must panic, not free or clamp */
}

static void underflow_from_one(void)
{
    struct dw_msg *m = dw_msg_new_text(DW_MSG_ACK, 0, "{}", 2);

    dw_msg_unref_n(m, 2);
}

static void balanced(void)
{
    struct dw_msg *m = dw_msg_new_text(DW_MSG_ACK, 0, "{}", 2);

    dw_msg_ref_n(m, 2);
    dw_msg_unref_n(m, 3);
}

/* dw_panic() abort()s, which cmocka's expect_assert_failure cannot catch (it needs
 * mock_assert), so the underflow runs in a forked child and the test checks it died of SIGABRT.
 * The control child proves the harness itself exits cleanly. */
static void test_unref_underflow_panics(void **state)
{
    int status;

    (void)state;
    status = in_child(balanced);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);

    status = in_child(underflow_by_n);
    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), SIGABRT);

    status = in_child(underflow_from_one);
    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), SIGABRT);
}

/* ------------------------------------------------------------------------------------------
 * Types and time
 * ------------------------------------------------------------------------------------------ */

static void test_type_names(void **state)
{
    static const char *const wire[DW_MSG__COUNT] = {
        [DW_MSG_CONNECTION_ESTABLISHED] = "connection_established",
        [DW_MSG_DEAL_ALERT] = "deal_alert",
        [DW_MSG_PRICE_ALERT] = "price_alert",
        [DW_MSG_TRIP_UPDATE] = "trip_update",
        [DW_MSG_NOTIFICATION] = "notification",
        [DW_MSG_PONG] = "pong",
        [DW_MSG_ACK] = "ack",
        [DW_MSG_ERROR] = "error",
        [DW_MSG_STATS] = "stats",
        [DW_MSG_RESUMED] = "resumed",
    };

    (void)state;
    for (int t = 0; t < DW_MSG__COUNT; t++) {
        const char *name = dw_msg_type_name((enum dw_msg_type)t);

        assert_non_null(wire[t]);
        assert_string_equal(name, wire[t]);
        assert_int_equal(dw_msg_type_parse(name), t);
    }
    assert_string_equal(dw_msg_type_name(DW_MSG__COUNT), "?");
    assert_string_equal(dw_msg_type_name((enum dw_msg_type)200), "?");
    assert_int_equal(dw_msg_type_parse("nope"), -EINVAL);
    assert_int_equal(dw_msg_type_parse(""), -EINVAL);
    assert_int_equal(dw_msg_type_parse("Deal_Alert"), -EINVAL);
    assert_int_equal(dw_msg_type_parse("deal_alert "), -EINVAL);
    assert_int_equal(dw_msg_type_parse("?"), -EINVAL);
}

static void test_format_time(void **state)
{
    struct tm tm = {.tm_year = 2026 - 1900,
                    .tm_mon = 10,
                    .tm_mday = 26,
                    .tm_hour = 1,
                    .tm_min = 2,
                    .tm_sec = 3};
    char out[DW_TIME_ISO_LEN];
    int64_t sec;

    (void)state;
    sec = (int64_t)timegm(&tm);
    dw_time_format_iso(out, sec * 1000000000 + 123456789);
    assert_string_equal(out, "2026-11-26T01:02:03.123456Z"); /* microseconds, truncated */

    dw_time_format_iso(out, 1700000000LL * 1000000000 + 5000);
    assert_string_equal(out, "2023-11-14T22:13:20.000005Z");

    dw_time_format_iso(out, 0);
    assert_string_equal(out, "1970-01-01T00:00:00.000000Z");

    dw_time_format_iso(out, 999); /* under a microsecond */
    assert_string_equal(out, "1970-01-01T00:00:00.000000Z");

    dw_time_format_iso(out, 951868799LL * 1000000000 + 999999999); /* leap day, last us */
    assert_string_equal(out, "2000-02-29T23:59:59.999999Z");

    dw_time_format_iso(out, dw_now_realtime_ns());
    assert_iso_time(out);
}

static void test_clocks(void **state)
{
    int64_t a, b;

    (void)state;
    assert_true(dw_now_realtime_ns() > 1600000000LL * 1000000000); /* after 2020 */
    a = dw_now_mono_ns();
    b = dw_now_mono_ns();
    assert_true(a > 0);
    assert_true(b >= a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_frame_empty),
        cmocka_unit_test(test_frame_7bit_max),
        cmocka_unit_test(test_frame_16bit_min),
        cmocka_unit_test(test_frame_16bit_max),
        cmocka_unit_test(test_frame_64bit_min),
        cmocka_unit_test(test_frame_64bit_large),
        cmocka_unit_test(test_new_text_fields),
        cmocka_unit_test(test_new_json_adds_timestamp),
        cmocka_unit_test(test_new_json_keeps_timestamp),
        cmocka_unit_test(test_new_json_no_slash_escape),
        cmocka_unit_test(test_refcount),
        cmocka_unit_test(test_unref_n_last_frees),
        cmocka_unit_test(test_unref_underflow_panics),
        cmocka_unit_test(test_type_names),
        cmocka_unit_test(test_format_time),
        cmocka_unit_test(test_clocks),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
