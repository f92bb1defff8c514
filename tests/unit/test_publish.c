/*
 * test_api — POST /api/publish bodies (src/api.c) against a real hub with no connections: the
 * status and the JSON answer of dw_publish_request for bodies that json-c would parse but that
 * cannot be delivered as written (integers outside 64 bits, raw control characters), with the
 * field they name, and that nothing was published then (the hub's per-type counters). The
 * delivered bytes themselves are checked in test_proto (dw_msg_new_json) and on the wire in
 * tests/integration/test_json_strict.py.
 */
#include "dealwire/publish.h"
#include "dealwire/hub.h"
#include "dealwire/msg.h"
#include "dealwire/rcu.h"
#include "dealwire/thread.h"
#include "dealwire/wake.h"

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
 * Fixture: a hub with no connections.
 * ------------------------------------------------------------------------------------------ */

static void no_wake(void *arg)
{
    (void)arg;
}

static const struct dw_wake quiet = {no_wake, NULL};

static int setup(void **state)
{
    struct dw_hub *hub = dw_hub_new(&quiet);

    if (!hub)
        return -1;
    *state = hub;
    return 0;
}

static int teardown(void **state)
{
    dw_rcu_barrier();
    dw_hub_free(*state);
    return 0;
}

static int group_setup(void **state)
{
    (void)state;
    dw_thread_set_role(DW_THREAD_IO); /* publishing is any thread; the fixture is the I/O one */
    dw_rcu_register();
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    dw_rcu_barrier();
    dw_rcu_unregister();
    return 0;
}

static uint64_t published(struct dw_hub *hub)
{
    struct dw_hub_published c;

    dw_hub_get_published(hub, &c);
    return c.by_type[DW_MSG_DEAL_ALERT];
}

/* Publishes body and expects status; returns the answer parsed (the caller puts it). */
static struct json_object *publish(struct dw_hub *hub, const char *body, int status)
{
    struct json_object *answer;
    size_t len = 0;
    char *resp = NULL;
    const struct dw_publish_env env = {.hub = hub};
    int got = dw_publish_request(&env, body, strlen(body), &resp, &len);

    assert_non_null(resp);
    assert_int_equal(strlen(resp), len);
    if (got != status)
        fail_msg("%s: status %d (%s), want %d", body, got, resp, status);
    answer = json_tokener_parse(resp);
    free(resp);
    assert_true(json_object_is_type(answer, json_type_object));
    return answer;
}

/* Publishes body, expects 400 {"error": <starts with error>, "field": field} (no "field" when
 * field is NULL) and that nothing was published. */
static void expect_400(struct dw_hub *hub, const char *body, const char *error, const char *field)
{
    uint64_t before = published(hub);
    struct json_object *answer = publish(hub, body, 400), *v;

    assert_true(json_object_object_get_ex(answer, "error", &v));
    if (strncmp(json_object_get_string(v), error, strlen(error)) != 0)
        fail_msg("%s: error \"%s\", want \"%s...\"", body, json_object_get_string(v), error);
    if (field) {
        if (!json_object_object_get_ex(answer, "field", &v))
            fail_msg("%s: no field in %s", body, json_object_to_json_string(answer));
        assert_string_equal(json_object_get_string(v), field);
    } else {
        assert_false(json_object_object_get_ex(answer, "field", NULL));
    }
    json_object_put(answer);
    assert_int_equal(published(hub), before);
}

/* ------------------------------------------------------------------------------------------
 * Tests
 * ------------------------------------------------------------------------------------------ */

static void test_integer_outside_64_bits(void **state)
{
    struct dw_hub *hub = *state;
    static const char range[] = "integer outside the 64-bit range";

    expect_400(hub,
               "{\"target\":\"all\",\"message\":{\"type\":\"deal_alert\","
               "\"price\":123456789012345678901234567890}}",
               range, "message.price");
    expect_400(hub,
               "{\"target\":\"all\",\"message\":{\"type\":\"deal_alert\","
               "\"price\":-9223372036854775809}}",
               range, "message.price");
    expect_400(hub,
               "{\"target\":\"all\",\"message\":{\"type\":\"deal_alert\","
               "\"meta\":{\"ids\":[1,18446744073709551616]}}}",
               range, "message.meta.ids[1]");
    /* In a batch the root index comes first, and the good items are not sent either. */
    expect_400(hub,
               "[{\"target\":\"all\",\"message\":{\"type\":\"deal_alert\",\"price\":1}},"
               "{\"target\":\"all\",\"message\":{\"type\":\"deal_alert\",\"price\":2}},"
               "{\"target\":\"all\",\"message\":{\"type\":\"deal_alert\",\"price\":3}},"
               "{\"target\":\"all\",\"message\":{\"type\":\"deal_alert\","
               "\"price\":18446744073709551616}}]",
               range, "[3].message.price");
    /* Anywhere in the body, not only in the message. */
    expect_400(hub,
               "{\"target\":\"all\",\"critical\":99999999999999999999,"
               "\"message\":{\"type\":\"deal_alert\"}}",
               range, "critical");
    expect_400(hub, "{\"target\":\"all\",\"message\":{\"type\":\"deal_alert\",\"n\":-0}}", "-0",
               "message.n");
}

static void test_control_character(void **state)
{
    struct dw_hub *hub = *state;
    static const char control[] = "body is not valid JSON: unescaped control character";

    expect_400(hub,
               "{\"target\":\"all\",\"message\":{\"type\":\"deal_alert\",\"title\":\"a\x01\"}}",
               control, "message.title");
    expect_400(hub,
               "[{\"target\":\"all\",\"message\":{\"type\":\"deal_alert\"}},"
               "{\"target\":\"all\",\"message\":{\"type\":\"deal_alert\",\"t\":\"\x1f\"}}]",
               control, "[1].message.t");
    expect_400(hub, "{\"target\":\"all\",\"message\":{\"type\":\"deal_alert\",\"k\x02\":1}}",
               control, "message.k\\u0002");
}

/* Other invalid JSON keeps its answer, with no field. */
static void test_other_invalid_json(void **state)
{
    struct dw_hub *hub = *state;

    expect_400(hub, "{\"target\":\"all\",", "body is not valid JSON", NULL);
    expect_400(hub, "{\"target\":\"all\",\"message\":{\"type\":\"deal_alert\",\"n\":NaN}}",
               "body is not valid JSON", NULL);
    expect_400(hub, "{\"target\":\"all\",\"message\":{\"type\":\"deal_alert\",\"n\":012}}",
               "body is not valid JSON", NULL);
}

/* The limits themselves, doubles and escaped control characters are published. */
static void test_accepted(void **state)
{
    struct dw_hub *hub = *state;
    uint64_t before = published(hub);
    struct json_object *answer, *v;

    answer = publish(hub,
                     "{\"target\":\"all\",\"message\":{\"type\":\"deal_alert\","
                     "\"a\":18446744073709551615,\"b\":-9223372036854775808,"
                     "\"c\":9223372036854775808,\"d\":1e400,\"e\":1.10,"
                     "\"s\":\"123456789012345678901234567890\\u0001\x7f\"}}",
                     200);
    assert_true(json_object_object_get_ex(answer, "recipients", &v));
    assert_int_equal(json_object_get_int64(v), 0);
    json_object_put(answer);
    assert_int_equal(published(hub), before + 1);
}

/* Publishes body as a frame of /ws/publish; returns the status, *answer (the caller puts it)
 * and the request_id's JSON text in rid (written through the env, which tidy does not see).
 * NOLINTNEXTLINE(readability-non-const-parameter) */
static int publish_frame(struct dw_hub *hub, const char *body, char rid[DW_PUBLISH_REQUEST_ID_MAX],
                         struct json_object **answer)
{
    size_t len = 0;
    char *resp = NULL;
    const struct dw_publish_env env = {.hub = hub, .request_id = rid};
    int status = dw_publish_request(&env, body, strlen(body), &resp, &len);

    *answer = json_tokener_parse(resp);
    free(resp);
    return status;
}

/* /ws/publish: the request_id is read (a string or an integer, as JSON text), a batch may be
 * wrapped with it, and a bad one is refused naming it; over HTTP it is an unknown member. */
static void test_request_id(void **state)
{
    struct dw_hub *hub = *state;
    char rid[DW_PUBLISH_REQUEST_ID_MAX];
    struct json_object *answer, *v;
    uint64_t before = published(hub);

    memset(rid, 'x', sizeof(rid));
    assert_int_equal(publish_frame(hub,
                                   "{\"request_id\":\"r/1\\u0001\",\"target\":\"all\","
                                   "\"message\":{\"type\":\"deal_alert\"}}",
                                   rid, &answer),
                     200);
    assert_string_equal(rid, "\"r/1\\u0001\"");
    json_object_put(answer);
    assert_int_equal(publish_frame(hub,
                                   "{\"request_id\":-42,\"batch\":[{\"target\":\"all\","
                                   "\"message\":{\"type\":\"deal_alert\"}},{\"target\":\"all\","
                                   "\"message\":{\"type\":\"deal_alert\"}}]}",
                                   rid, &answer),
                     200);
    assert_string_equal(rid, "-42");
    assert_true(json_object_object_get_ex(answer, "results", &v));
    assert_int_equal(json_object_array_length(v), 2);
    json_object_put(answer);
    assert_int_equal(published(hub), before + 3);

    /* No request_id: "" (not what the previous frame had). */
    assert_int_equal(publish_frame(hub,
                                   "{\"target\":\"all\",\"message\":{\"type\":\"deal_alert\"}}",
                                   rid, &answer),
                     200);
    assert_string_equal(rid, "");
    json_object_put(answer);

    /* Refused, naming it; nothing published. */
    before = published(hub);
    for (const char *const *b =
             (const char *const[]){
                 "{\"request_id\":1.5,\"target\":\"all\",\"message\":{\"type\":\"deal_alert\"}}",
                 "{\"request_id\":\"\",\"target\":\"all\",\"message\":{\"type\":\"deal_alert\"}}",
                 "{\"request_id\":null,\"target\":\"all\",\"message\":{\"type\":\"deal_alert\"}}",
                 NULL};
         *b; b++) {
        assert_int_equal(publish_frame(hub, *b, rid, &answer), 400);
        assert_true(json_object_object_get_ex(answer, "field", &v));
        assert_string_equal(json_object_get_string(v), "request_id");
        json_object_put(answer);
    }
    assert_int_equal(publish_frame(hub, "{\"request_id\":\"b\",\"batch\":{}}", rid, &answer), 400);
    assert_true(json_object_object_get_ex(answer, "field", &v));
    assert_string_equal(json_object_get_string(v), "batch");
    assert_string_equal(rid, "\"b\"");
    json_object_put(answer);
    assert_int_equal(published(hub), before);

    /* Over HTTP, "batch" is no wrapper: the object is one publish without a target. */
    expect_400(hub, "{\"batch\":[{\"target\":\"all\",\"message\":{\"type\":\"deal_alert\"}}]}",
               "\"target\" is required", "target");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_integer_outside_64_bits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_control_character, setup, teardown),
        cmocka_unit_test_setup_teardown(test_other_invalid_json, setup, teardown),
        cmocka_unit_test_setup_teardown(test_accepted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_request_id, setup, teardown),
    };

    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
