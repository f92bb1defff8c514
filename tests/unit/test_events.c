/*
 * test_events — the typed producer API (src/events.c) against a real hub.
 *
 * The test thread plays the I/O thread (role io: adds connections, subscribes, drains the
 * ready queue the way dw__conn_drain_ready does) and the producer. Each test calls an events
 * function, pops what reached each connection, parses the payload back with json-c and checks
 * every member, in order, with its value and its rendering (299, not 299.0), the critical
 * flag, the count returned, and the hub's published counters. Invalid calls must send and
 * count nothing. One test runs four producer threads against a draining I/O thread (for tsan).
 * Every test removes its connections and frees its hub, so LeakSanitizer checks the rest.
 */
#include "../../src/hub_int.h"
#include "dealwire/events.h"
#include "dealwire/msg.h"
#include "dealwire/thread.h"
#include "dealwire/wake.h"

#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include <cmocka.h>

#include "test_util.h"

/* ------------------------------------------------------------------------------------------
 * Fixture: a hub, its connections, and what each connection received.
 * ------------------------------------------------------------------------------------------ */

#define MAX_CONNS 8
#define QUEUE_CAP 1000

struct fixture {
    struct dw_hub *hub;
    struct dw_wake wake;    /* count_wake, the fixture */
    _Atomic unsigned wakes; /* producers' threads call the wake function too */
    unsigned nconns;
    struct dw_conn *conns[MAX_CONNS]; /* NULL once removed */
    unsigned received[MAX_CONNS];     /* messages popped per connection */
    struct dw_msg *last[MAX_CONNS];   /* the last one popped; the fixture holds a reference */
};

static void count_wake(void *arg)
{
    struct fixture *fx = arg;

    atomic_fetch_add(&fx->wakes, 1);
}

static int setup(void **state)
{
    struct fixture *fx = calloc(1, sizeof(*fx));

    if (!fx)
        return -1;
    fx->wake = (struct dw_wake){count_wake, fx};
    fx->hub = dw_hub_new(&fx->wake);
    if (!fx->hub)
        return -1;
    *state = fx;
    return 0;
}

static unsigned add_conn(struct fixture *fx, const char *user_id)
{
    struct dw_conn *c;

    assert_true(fx->nconns < MAX_CONNS);
    c = dw__hub_conn_new(fx->hub);
    assert_non_null(c);
    dw__hub_add(fx->hub, c, user_id);
    fx->conns[fx->nconns] = c;
    return fx->nconns++;
}

static void subscribe(struct fixture *fx, unsigned i, const char *channel)
{
    assert_int_equal(dw__hub_subscribe(fx->hub, fx->conns[i], channel, 8), 0);
}

static int find_index(struct fixture *fx, struct dw_conn *c)
{
    for (unsigned i = 0; i < fx->nconns; i++) {
        if (fx->conns[i] == c)
            return (int)i;
    }
    return -1;
}

static void forget_received(struct fixture *fx)
{
    for (unsigned i = 0; i < MAX_CONNS; i++) {
        if (fx->last[i])
            dw_msg_unref(fx->last[i]);
        fx->last[i] = NULL;
        fx->received[i] = 0;
    }
}

/* What the I/O thread does on a wake: take the ready batch; for each open connection, now off
 * the ready queue, unschedule, collect and pop its outbox; drop the ready queue's reference.
 * Keeps the last message of each connection. Returns the number of connections drained. */
static unsigned drain(struct fixture *fx)
{
    struct dw_readyq_batch batch;
    struct cds_wfcq_node *node;
    unsigned n = 0;

    dw__hub_take_ready(fx->hub, &batch);
    while ((node = dw_readyq_batch_next(&batch)) != NULL) {
        struct dw_conn *c = caa_container_of(node, struct dw_conn, ready_node);
        struct dw_msg *m;

        n++;
        if (!atomic_load_explicit(&c->closed, memory_order_relaxed)) {
            int i = find_index(fx, c);

            assert_true(i >= 0);
            dw_outbox_unschedule(&c->outbox);
            assert_int_equal(dw_outbox_collect(&c->outbox, QUEUE_CAP), 0);
            while ((m = dw_outbox_pop(&c->outbox)) != NULL) {
                fx->received[i]++;
                if (fx->last[i])
                    dw_msg_unref(fx->last[i]);
                fx->last[i] = m; /* keeps the queue's reference */
            }
        }
        dw__conn_unref(c);
    }
    return n;
}

static int teardown(void **state)
{
    struct fixture *fx = *state;

    for (unsigned i = 0; i < fx->nconns; i++) {
        if (fx->conns[i])
            dw__hub_remove(fx->hub, fx->conns[i]);
    }
    drain(fx);
    forget_received(fx);
    dw_rcu_barrier();
    assert_int_equal(dw_hub_connection_count(fx->hub), 0);
    dw_hub_free(fx->hub);
    free(fx);
    return 0;
}

static int group_setup(void **state)
{
    (void)state;
    dw_thread_set_role(DW_THREAD_IO);
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

/* ------------------------------------------------------------------------------------------
 * Checking a received message
 * ------------------------------------------------------------------------------------------ */

/* Drains, checks that exactly the connections in want (a bit per index) received exactly one
 * message, the same one, and returns it (borrowed from the fixture). */
static struct dw_msg *drain_one(struct fixture *fx, unsigned want)
{
    struct dw_msg *m = NULL;

    forget_received(fx);
    drain(fx);
    for (unsigned i = 0; i < fx->nconns; i++) {
        if (want & (1u << i)) {
            assert_int_equal(fx->received[i], 1);
            if (m)
                assert_ptr_equal(fx->last[i], m); /* one message shared by every recipient */
            m = fx->last[i];
        } else {
            assert_int_equal(fx->received[i], 0);
        }
    }
    assert_non_null(m);
    return m;
}

/* Parses m's payload; checks the members are exactly keys (NULL-terminated), in that order,
 * and that the last is an ISO-8601 "timestamp". Returns a new object the caller puts. */
static struct json_object *parse_keys(struct dw_msg *m, const char *const *keys)
{
    struct json_object *obj = json_tokener_parse(dw_msg_payload(m));
    struct json_object *ts;
    size_t i = 0;

    assert_non_null(obj);
    assert_true(json_object_is_type(obj, json_type_object));
    json_object_object_foreach(obj, key, val)
    {
        (void)val;
        assert_non_null(keys[i]);
        assert_string_equal(key, keys[i]);
        i++;
    }
    assert_null(keys[i]);
    assert_true(json_object_object_get_ex(obj, "timestamp", &ts));
    assert_int_equal(strlen(json_object_get_string(ts)), 27); /* 2026-11-26T01:02:03.123456Z */
    assert_int_equal(json_object_get_string(ts)[26], 'Z');
    return obj;
}

static const char *str_of(struct json_object *obj, const char *key)
{
    struct json_object *v;

    assert_true(json_object_object_get_ex(obj, key, &v));
    assert_true(json_object_is_type(v, json_type_string));
    return json_object_get_string(v);
}

static double num_of(struct json_object *obj, const char *key)
{
    struct json_object *v;

    assert_true(json_object_object_get_ex(obj, key, &v));
    assert_true(json_object_is_type(v, json_type_int) || json_object_is_type(v, json_type_double));
    return json_object_get_double(v);
}

/* The payload's text up to "timestamp" must be exactly prefix: this checks the rendering of
 * numbers and strings, not just their values. */
static void assert_payload_prefix(struct dw_msg *m, const char *prefix)
{
    const char *p = dw_msg_payload(m);
    size_t n = strlen(prefix);

    if (strncmp(p, prefix, n) != 0 || strncmp(p + n, "\"timestamp\":\"", 13) != 0)
        fail_msg("payload\n  %s\ndoes not start with\n  %s\"timestamp\":\"", p, prefix);
}

static void assert_counters(struct fixture *fx, unsigned deal, unsigned price, unsigned trip,
                            unsigned notif, unsigned broadcast)
{
    struct dw_hub_published ctr;

    dw_hub_get_published(fx->hub, &ctr);
    assert_int_equal(ctr.by_type[DW_MSG_DEAL_ALERT], deal);
    assert_int_equal(ctr.by_type[DW_MSG_PRICE_ALERT], price);
    assert_int_equal(ctr.by_type[DW_MSG_TRIP_UPDATE], trip);
    assert_int_equal(ctr.by_type[DW_MSG_NOTIFICATION], notif);
    assert_int_equal(ctr.by_type[DW_MSG_CONNECTION_ESTABLISHED], 0);
    assert_int_equal(ctr.broadcasts, broadcast);
}

static const struct dw_target to_all = {DW_TARGET_ALL, NULL};

/* ------------------------------------------------------------------------------------------
 * Numbers
 * ------------------------------------------------------------------------------------------ */

static void assert_renders(double v, const char *text)
{
    struct json_object *o = dw_events_new_number(v);
    struct json_object *back;

    assert_non_null(o);
    assert_string_equal(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN), text);
    back = json_tokener_parse(text);
    assert_non_null(back);
    assert_true(json_object_get_double(back) == v);
    json_object_put(back);
    json_object_put(o);
}

static void test_number_rendering(void **state)
{
    (void)state;
    assert_renders(299, "299");
    assert_renders(299.5, "299.5");
    assert_renders(0, "0");
    assert_renders(-0.0, "0");
    assert_renders(0.1, "0.1");
    assert_renders(19.99, "19.99");
    assert_renders(45.5, "45.5");
    assert_renders(220.51, "220.51");
    assert_renders(1000000, "1000000");
    assert_renders(1234567.891, "1234567.891");
    assert_renders(-3.25, "-3.25");
    assert_renders(1e-7, "0.0000001");
    assert_renders(1e20, "1e+20");
    assert_renders(1.0 / 3, "0.3333333333333333");
    assert_null(dw_events_new_number(NAN));
    assert_null(dw_events_new_number(INFINITY));

    /* Any value reads back exactly. */
    for (int i = 0; i < 2000; i++) {
        double v = (double)(i * 7919 % 100003) / 100 + (double)i / 3;
        struct json_object *o = dw_events_new_number(v);
        struct json_object *back =
            json_tokener_parse(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));

        assert_non_null(back);
        assert_true(json_object_get_double(back) == v);
        json_object_put(back);
        json_object_put(o);
    }
}

/* ------------------------------------------------------------------------------------------
 * deal_alert
 * ------------------------------------------------------------------------------------------ */

static void test_deal_alert_to_user(void **state)
{
    static const char *const keys[] = {"type",     "deal_id",   "title",      "price",
                                       "category", "metadata",  "alert_type", "savings_percent",
                                       "discount", "timestamp", NULL};
    struct fixture *fx = *state;
    struct json_object *meta = json_tokener_parse("{\"airline\":\"AF\",\"stops\":0}");
    struct dw_deal deal = {.deal_id = "deal_456",
                           .title = "NYC to Paris $299",
                           .category = "flight",
                           .price = 299,
                           .original_price = 549,
                           .metadata = meta};
    struct json_object *obj, *v;
    struct dw_msg *m;

    add_conn(fx, "alice");
    add_conn(fx, "alice");
    add_conn(fx, "bob");
    assert_int_equal(dw_events_deal_alert(fx->hub, &(struct dw_target){DW_TARGET_USER, "alice"},
                                          &deal, DW_DEAL_ALERT_TRENDING),
                     2);
    assert_int_equal(atomic_load(&fx->wakes), 1);
    m = drain_one(fx, 0x3);
    assert_int_equal(m->type, DW_MSG_DEAL_ALERT);
    assert_false(dw_msg_is_critical(m));
    assert_payload_prefix(m, "{\"type\":\"deal_alert\",\"deal_id\":\"deal_456\",\"title\":\"NYC to "
                             "Paris $299\",\"price\":299,\"category\":\"flight\",\"metadata\":{"
                             "\"airline\":\"AF\",\"stops\":0},\"alert_type\":\"trending\","
                             "\"savings_percent\":45.5,\"discount\":250,");

    obj = parse_keys(m, keys);
    assert_string_equal(str_of(obj, "type"), "deal_alert");
    assert_string_equal(str_of(obj, "deal_id"), "deal_456");
    assert_string_equal(str_of(obj, "title"), "NYC to Paris $299");
    assert_true(num_of(obj, "price") == 299);
    assert_string_equal(str_of(obj, "category"), "flight");
    assert_true(json_object_object_get_ex(obj, "metadata", &v));
    assert_string_equal(str_of(v, "airline"), "AF");
    assert_string_equal(str_of(obj, "alert_type"), "trending");
    assert_true(num_of(obj, "savings_percent") == 45.5); /* 250 / 549 = 45.537 % */
    assert_true(num_of(obj, "discount") == 250);
    json_object_put(obj);

    /* The caller's metadata is as it was: no timestamp added to it, still its own. */
    assert_int_equal(json_object_object_length(meta), 2);
    json_object_put(meta);

    assert_counters(fx, 1, 0, 0, 0, 0);
}

static void test_deal_alert_without_savings(void **state)
{
    static const char *const keys[] = {"type",     "deal_id",    "title",     "price",
                                       "category", "alert_type", "timestamp", NULL};
    struct fixture *fx = *state;
    const struct dw_target deals = {DW_TARGET_CHANNEL, "deals"};
    struct dw_deal deal = {.deal_id = "d1", .title = "Hotel", .category = "hotel", .price = 80.5};
    const double originals[] = {0, 80.5, 60}; /* unknown, equal, lower than the price */
    unsigned a, b;

    a = add_conn(fx, "alice");
    b = add_conn(fx, "bob");
    add_conn(fx, "carol");
    subscribe(fx, a, "deals");
    subscribe(fx, b, "deals");
    subscribe(fx, b, "other");
    for (size_t i = 0; i < sizeof(originals) / sizeof(originals[0]); i++) {
        struct json_object *obj;
        struct dw_msg *m;

        deal.original_price = originals[i];
        assert_int_equal(dw_events_deal_alert(fx->hub, &deals, &deal, "trending"), 2);
        m = drain_one(fx, 0x3);
        assert_payload_prefix(m, "{\"type\":\"deal_alert\",\"deal_id\":\"d1\",\"title\":\"Hotel\","
                                 "\"price\":80.5,\"category\":\"hotel\",\"alert_type\":"
                                 "\"trending\",");
        obj = parse_keys(m, keys);
        assert_true(num_of(obj, "price") == 80.5);
        json_object_put(obj);
    }
    /* A channel is not a broadcast. */
    assert_counters(fx, 3, 0, 0, 0, 0);
}

static void test_hot_deal(void **state)
{
    struct fixture *fx = *state;
    struct dw_deal deal = {.deal_id = "deal_9",
                           .title = "Rome \"Colosseum\" / 3 nights \xc3\xa9t\xc3\xa9",
                           .category = "package",
                           .price = 199.99,
                           .original_price = 420.5};
    struct json_object *obj;
    struct dw_msg *m;

    add_conn(fx, "alice");
    add_conn(fx, "bob");
    add_conn(fx, "bob");
    assert_int_equal(dw_events_hot_deal(fx->hub, &deal), 3);
    m = drain_one(fx, 0x7);
    assert_false(dw_msg_is_critical(m));
    assert_payload_prefix(m, "{\"type\":\"deal_alert\",\"deal_id\":\"deal_9\",\"title\":\"Rome "
                             "\\\"Colosseum\\\" / 3 nights \xc3\xa9t\xc3\xa9\",\"price\":199.99,"
                             "\"category\":\"package\",\"alert_type\":\"hot_deal\","
                             "\"savings_percent\":52.4,\"discount\":220.51,");
    obj = json_tokener_parse(dw_msg_payload(m));
    assert_non_null(obj);
    assert_string_equal(str_of(obj, "title"), deal.title);
    assert_string_equal(str_of(obj, "alert_type"), "hot_deal");
    assert_true(num_of(obj, "discount") == 220.51);
    json_object_put(obj);

    /* Each hot deal counts as a broadcast. */
    assert_int_equal(dw_events_hot_deal(fx->hub, &deal), 3);
    drain_one(fx, 0x7);
    assert_counters(fx, 2, 0, 0, 0, 2);
}

/* ------------------------------------------------------------------------------------------
 * price_alert
 * ------------------------------------------------------------------------------------------ */

static void test_price_alert(void **state)
{
    static const char *const keys[] = {"type",      "deal_id",     "title",        "current_price",
                                       "threshold", "drop_amount", "drop_percent", "reasons",
                                       "timestamp", NULL};
    static const char *const reasons[] = {"Price dropped by $30", "Only 5 rooms left"};
    struct fixture *fx = *state;
    struct json_object *obj, *arr;
    struct dw_msg *m;

    add_conn(fx, "bob");
    add_conn(fx, "alice");
    assert_int_equal(
        dw_events_price_alert(fx->hub, "alice", "deal_789", "Hilton NYC", 120, 150, reasons, 2), 1);
    m = drain_one(fx, 0x2);
    assert_int_equal(m->type, DW_MSG_PRICE_ALERT);
    assert_true(dw_msg_is_critical(m));
    assert_payload_prefix(m,
                          "{\"type\":\"price_alert\",\"deal_id\":\"deal_789\",\"title\":\"Hilton "
                          "NYC\",\"current_price\":120,\"threshold\":150,\"drop_amount\":30,"
                          "\"drop_percent\":20,\"reasons\":[\"Price dropped by $30\",\"Only 5 "
                          "rooms left\"],");
    obj = parse_keys(m, keys);
    assert_string_equal(str_of(obj, "deal_id"), "deal_789");
    assert_string_equal(str_of(obj, "title"), "Hilton NYC");
    assert_true(num_of(obj, "current_price") == 120);
    assert_true(num_of(obj, "threshold") == 150);
    assert_true(num_of(obj, "drop_amount") == 30);
    assert_true(num_of(obj, "drop_percent") == 20);
    assert_true(json_object_object_get_ex(obj, "reasons", &arr));
    assert_int_equal(json_object_array_length(arr), 2);
    assert_string_equal(json_object_get_string(json_object_array_get_idx(arr, 0)), reasons[0]);
    assert_string_equal(json_object_get_string(json_object_array_get_idx(arr, 1)), reasons[1]);
    json_object_put(obj);

    /* Cents and one decimal: 149.5 - 99.99 = 49.51, 33.117 % of 149.5. */
    assert_int_equal(dw_events_price_alert(fx->hub, "alice", "d2", "Inn", 99.99, 149.5, NULL, 0),
                     1);
    m = drain_one(fx, 0x2);
    assert_payload_prefix(m, "{\"type\":\"price_alert\",\"deal_id\":\"d2\",\"title\":\"Inn\","
                             "\"current_price\":99.99,\"threshold\":149.5,\"drop_amount\":49.51,"
                             "\"drop_percent\":33.1,\"reasons\":[],");

    /* Above the threshold (an inventory alert): no negative drop. Threshold 0: no division. */
    assert_int_equal(dw_events_price_alert(fx->hub, "alice", "d3", "", 180, 150, reasons + 1, 1),
                     1);
    m = drain_one(fx, 0x2);
    assert_payload_prefix(m, "{\"type\":\"price_alert\",\"deal_id\":\"d3\",\"title\":\"\","
                             "\"current_price\":180,\"threshold\":150,\"drop_amount\":0,"
                             "\"drop_percent\":0,\"reasons\":[\"Only 5 rooms left\"],");
    assert_int_equal(dw_events_price_alert(fx->hub, "alice", "d4", "t", 0, 0, NULL, 0), 1);
    m = drain_one(fx, 0x2);
    assert_payload_prefix(m, "{\"type\":\"price_alert\",\"deal_id\":\"d4\",\"title\":\"t\","
                             "\"current_price\":0,\"threshold\":0,\"drop_amount\":0,"
                             "\"drop_percent\":0,\"reasons\":[],");

    /* Nobody connected as carol: nothing reached, still published. */
    assert_int_equal(dw_events_price_alert(fx->hub, "carol", "d5", "t", 1, 2, NULL, 0), 0);
    assert_int_equal(drain(fx), 0);
    assert_counters(fx, 0, 5, 0, 0, 0);
}

/* ------------------------------------------------------------------------------------------
 * trip_update
 * ------------------------------------------------------------------------------------------ */

static void test_trip_update(void **state)
{
    static const char *const keys[] = {"type",       "status",    "message", "progress",
                                       "extra_data", "timestamp", NULL};
    struct fixture *fx = *state;
    struct json_object *extra = json_object_new_object();
    struct json_object *obj, *v;
    struct dw_msg *m;

    json_object_object_add(extra, "plan_id", json_object_new_string("plan_1"));
    json_object_object_add(extra, "total_cost", dw_events_new_number(1234.5));
    json_object_object_add(extra, "fit_score", json_object_new_int(87));

    add_conn(fx, "alice");
    add_conn(fx, "bob");
    assert_int_equal(dw_events_trip_update(fx->hub, "alice", "searching",
                                           "Analyzing flights and hotels...", 30, NULL),
                     1);
    m = drain_one(fx, 0x1);
    assert_int_equal(m->type, DW_MSG_TRIP_UPDATE);
    assert_true(dw_msg_is_critical(m));
    assert_payload_prefix(m, "{\"type\":\"trip_update\",\"status\":\"searching\",\"message\":"
                             "\"Analyzing flights and hotels...\",\"progress\":30,"
                             "\"extra_data\":{},");
    obj = parse_keys(m, keys);
    assert_string_equal(str_of(obj, "status"), "searching");
    assert_string_equal(str_of(obj, "message"), "Analyzing flights and hotels...");
    assert_true(json_object_object_get_ex(obj, "progress", &v));
    assert_true(json_object_is_type(v, json_type_int));
    assert_int_equal(json_object_get_int(v), 30);
    assert_true(json_object_object_get_ex(obj, "extra_data", &v));
    assert_int_equal(json_object_object_length(v), 0);
    json_object_put(obj);

    assert_int_equal(
        dw_events_trip_update(fx->hub, "alice", "completed", "Trip plan ready!", 100, extra), 1);
    m = drain_one(fx, 0x1);
    assert_payload_prefix(m, "{\"type\":\"trip_update\",\"status\":\"completed\",\"message\":"
                             "\"Trip plan ready!\",\"progress\":100,\"extra_data\":{\"plan_id\":"
                             "\"plan_1\",\"total_cost\":1234.5,\"fit_score\":87},");
    assert_int_equal(json_object_object_length(extra), 3); /* untouched */

    assert_int_equal(dw_events_trip_update(fx->hub, "alice", "started", "", 0, NULL), 1);
    drain_one(fx, 0x1);
    json_object_put(extra);
    assert_counters(fx, 0, 0, 3, 0, 0);
}

/* ------------------------------------------------------------------------------------------
 * notification
 * ------------------------------------------------------------------------------------------ */

static void test_notification(void **state)
{
    static const char *const keys[] = {"type", "message", "level", "timestamp", NULL};
    static const char *const levels[] = {"info", "success", "warning", "error"};
    struct fixture *fx = *state;
    const struct dw_target alice = {DW_TARGET_USER, "alice"};
    const struct dw_target hot = {DW_TARGET_CHANNEL, "hot_deals"};
    struct json_object *obj;
    struct dw_msg *m;
    unsigned b;

    add_conn(fx, "alice");
    b = add_conn(fx, "bob");
    subscribe(fx, b, "hot_deals");
    for (size_t i = 0; i < 4; i++) {
        assert_true(dw_events_level_is_valid(levels[i]));
        assert_int_equal(dw_events_notification(fx->hub, &alice, "Watch list updated", levels[i]),
                         1);
        m = drain_one(fx, 0x1);
        assert_int_equal(m->type, DW_MSG_NOTIFICATION);
        assert_false(dw_msg_is_critical(m));
        obj = parse_keys(m, keys);
        assert_string_equal(str_of(obj, "type"), "notification");
        assert_string_equal(str_of(obj, "message"), "Watch list updated");
        assert_string_equal(str_of(obj, "level"), levels[i]);
        json_object_put(obj);
    }
    assert_int_equal(dw_events_notification(fx->hub, &hot, "Subscribed", "success"), 1);
    m = drain_one(fx, 0x2);
    assert_payload_prefix(
        m, "{\"type\":\"notification\",\"message\":\"Subscribed\",\"level\":\"success\",");
    assert_int_equal(dw_events_notification(fx->hub, &to_all, "Maintenance at 2am", "warning"), 2);
    drain_one(fx, 0x3);
    assert_counters(fx, 0, 0, 0, 6, 1);

    /* Bad levels send nothing. */
    assert_false(dw_events_level_is_valid(NULL));
    assert_false(dw_events_level_is_valid(""));
    assert_false(dw_events_level_is_valid("INFO"));
    assert_false(dw_events_level_is_valid("debug"));
    assert_false(dw_events_level_is_valid("info "));
    assert_int_equal(dw_events_notification(fx->hub, &alice, "x", "debug"), 0);
    assert_int_equal(dw_events_notification(fx->hub, &to_all, "x", NULL), 0);
    assert_int_equal(drain(fx), 0);
    assert_counters(fx, 0, 0, 0, 6, 1);
}

/* ------------------------------------------------------------------------------------------
 * The generic sender
 * ------------------------------------------------------------------------------------------ */

static void test_send_generic(void **state)
{
    struct fixture *fx = *state;
    const struct dw_target ch = {DW_TARGET_CHANNEL, "deals"};
    struct json_object *obj = json_object_new_object();
    struct dw_msg *m;
    unsigned a;

    a = add_conn(fx, "alice");
    add_conn(fx, "bob");
    subscribe(fx, a, "deals");
    json_object_object_add(obj, "type", json_object_new_string("deal_alert"));
    json_object_object_add(obj, "deal_id", json_object_new_string("x"));
    json_object_object_add(obj, "custom", json_object_new_int(7));

    assert_int_equal(dw_events_send(fx->hub, &ch, DW_MSG_DEAL_ALERT, DW_MSG_F_CRITICAL, obj), 1);
    m = drain_one(fx, 0x1);
    assert_true(dw_msg_is_critical(m));
    assert_payload_prefix(m, "{\"type\":\"deal_alert\",\"deal_id\":\"x\",\"custom\":7,");
    /* As documented: the borrowed object gained the timestamp. */
    assert_true(json_object_object_get_ex(obj, "timestamp", NULL));

    assert_int_equal(dw_events_send(fx->hub, &to_all, DW_MSG_DEAL_ALERT, 0, obj), 2);
    m = drain_one(fx, 0x3);
    assert_false(dw_msg_is_critical(m));
    assert_counters(fx, 2, 0, 0, 0, 1);

    /* "type" must name the type; the object must be an object; flags must be known. */
    assert_int_equal(dw_events_send(fx->hub, &to_all, DW_MSG_PRICE_ALERT, 0, obj), 0);
    assert_int_equal(dw_events_send(fx->hub, &to_all, DW_MSG__COUNT, 0, obj), 0);
    assert_int_equal(dw_events_send(fx->hub, &to_all, (enum dw_msg_type) - 1, 0, obj), 0);
    assert_int_equal(dw_events_send(fx->hub, &to_all, DW_MSG_DEAL_ALERT, 0x80, obj), 0);
    assert_int_equal(dw_events_send(fx->hub, &to_all, DW_MSG_DEAL_ALERT, 0, NULL), 0);
    json_object_object_del(obj, "type");
    assert_int_equal(dw_events_send(fx->hub, &to_all, DW_MSG_DEAL_ALERT, 0, obj), 0);
    json_object_object_add(obj, "type", json_object_new_int(1));
    assert_int_equal(dw_events_send(fx->hub, &to_all, DW_MSG_DEAL_ALERT, 0, obj), 0);
    json_object_put(obj);
    obj = json_object_new_array();
    assert_int_equal(dw_events_send(fx->hub, &to_all, DW_MSG_DEAL_ALERT, 0, obj), 0);
    json_object_put(obj);
    assert_int_equal(drain(fx), 0);
    assert_counters(fx, 2, 0, 0, 0, 1);
}

/* ------------------------------------------------------------------------------------------
 * Invalid arguments: nothing sent, nothing counted, no wake-up, no crash.
 * ------------------------------------------------------------------------------------------ */

static void test_invalid_arguments(void **state)
{
    struct fixture *fx = *state;
    struct dw_hub *hub = fx->hub;
    const struct dw_target alice = {DW_TARGET_USER, "alice"};
    const struct dw_target bad_targets[] = {
        {DW_TARGET_USER, NULL},    {DW_TARGET_USER, ""},       {DW_TARGET_USER, "al ice"},
        {DW_TARGET_CHANNEL, NULL}, {DW_TARGET_CHANNEL, "a@b"}, {(enum dw_target_kind)42, "alice"},
    };
    static const char *const reasons[] = {"ok", NULL};
    const struct dw_deal good = {.deal_id = "d", .title = "t", .category = "c", .price = 1};
    struct dw_deal deal;
    struct json_object *arr = json_object_new_array();
    struct json_object *obj = json_object_new_object();
    struct dw_hub_published ctr;

    json_object_object_add(obj, "type", json_object_new_string("notification"));
    add_conn(fx, "alice");
    subscribe(fx, 0, "deals");

    /* Targets. */
    assert_int_equal(dw_events_notification(hub, NULL, "m", "info"), 0);
    assert_int_equal(dw_events_deal_alert(hub, NULL, &good, "trending"), 0);
    assert_int_equal(dw_events_send(hub, NULL, DW_MSG_NOTIFICATION, 0, obj), 0);
    for (size_t i = 0; i < sizeof(bad_targets) / sizeof(bad_targets[0]); i++) {
        assert_int_equal(dw_events_notification(hub, &bad_targets[i], "m", "info"), 0);
        assert_int_equal(dw_events_deal_alert(hub, &bad_targets[i], &good, "trending"), 0);
        assert_int_equal(dw_events_send(hub, &bad_targets[i], DW_MSG_NOTIFICATION, 0, obj), 0);
    }

    /* NULL hub. */
    assert_int_equal(dw_events_send(NULL, &alice, DW_MSG_NOTIFICATION, 0, obj), 0);
    assert_int_equal(dw_events_deal_alert(NULL, &alice, &good, "trending"), 0);
    assert_int_equal(dw_events_hot_deal(NULL, &good), 0);
    assert_int_equal(dw_events_price_alert(NULL, "alice", "d", "t", 1, 2, NULL, 0), 0);
    assert_int_equal(dw_events_trip_update(NULL, "alice", "s", "m", 1, NULL), 0);
    assert_int_equal(dw_events_notification(NULL, &alice, "m", "info"), 0);

    /* deal_alert / hot_deal. */
    assert_int_equal(dw_events_hot_deal(hub, NULL), 0);
    assert_int_equal(dw_events_deal_alert(hub, &alice, &good, NULL), 0);
    assert_int_equal(dw_events_deal_alert(hub, &alice, &good, ""), 0);
    deal = good, deal.deal_id = NULL;
    assert_int_equal(dw_events_hot_deal(hub, &deal), 0);
    deal = good, deal.deal_id = "";
    assert_int_equal(dw_events_hot_deal(hub, &deal), 0);
    deal = good, deal.title = NULL;
    assert_int_equal(dw_events_hot_deal(hub, &deal), 0);
    deal = good, deal.category = NULL;
    assert_int_equal(dw_events_hot_deal(hub, &deal), 0);
    deal = good, deal.price = -1;
    assert_int_equal(dw_events_hot_deal(hub, &deal), 0);
    deal = good, deal.price = NAN;
    assert_int_equal(dw_events_hot_deal(hub, &deal), 0);
    deal = good, deal.original_price = INFINITY;
    assert_int_equal(dw_events_hot_deal(hub, &deal), 0);
    deal = good, deal.original_price = -5;
    assert_int_equal(dw_events_hot_deal(hub, &deal), 0);
    deal = good, deal.metadata = arr;
    assert_int_equal(dw_events_hot_deal(hub, &deal), 0);

    /* price_alert. */
    assert_int_equal(dw_events_price_alert(hub, NULL, "d", "t", 1, 2, NULL, 0), 0);
    assert_int_equal(dw_events_price_alert(hub, "bad id", "d", "t", 1, 2, NULL, 0), 0);
    assert_int_equal(dw_events_price_alert(hub, "alice", NULL, "t", 1, 2, NULL, 0), 0);
    assert_int_equal(dw_events_price_alert(hub, "alice", "", "t", 1, 2, NULL, 0), 0);
    assert_int_equal(dw_events_price_alert(hub, "alice", "d", NULL, 1, 2, NULL, 0), 0);
    assert_int_equal(dw_events_price_alert(hub, "alice", "d", "t", -1, 2, NULL, 0), 0);
    assert_int_equal(dw_events_price_alert(hub, "alice", "d", "t", 1, INFINITY, NULL, 0), 0);
    assert_int_equal(dw_events_price_alert(hub, "alice", "d", "t", NAN, 2, NULL, 0), 0);
    assert_int_equal(dw_events_price_alert(hub, "alice", "d", "t", 1, 2, NULL, 1), 0);
    assert_int_equal(dw_events_price_alert(hub, "alice", "d", "t", 1, 2, reasons, 2), 0);

    /* trip_update. */
    assert_int_equal(dw_events_trip_update(hub, NULL, "s", "m", 1, NULL), 0);
    assert_int_equal(dw_events_trip_update(hub, "", "s", "m", 1, NULL), 0);
    assert_int_equal(dw_events_trip_update(hub, "alice", NULL, "m", 1, NULL), 0);
    assert_int_equal(dw_events_trip_update(hub, "alice", "", "m", 1, NULL), 0);
    assert_int_equal(dw_events_trip_update(hub, "alice", "s", NULL, 1, NULL), 0);
    assert_int_equal(dw_events_trip_update(hub, "alice", "s", "m", -1, NULL), 0);
    assert_int_equal(dw_events_trip_update(hub, "alice", "s", "m", 101, NULL), 0);
    assert_int_equal(dw_events_trip_update(hub, "alice", "s", "m", 50, arr), 0);

    /* notification. */
    assert_int_equal(dw_events_notification(hub, &alice, NULL, "info"), 0);
    assert_int_equal(dw_events_notification(hub, &alice, "m", "fatal"), 0);

    json_object_put(arr);
    json_object_put(obj);
    assert_int_equal(atomic_load(&fx->wakes), 0);
    assert_int_equal(drain(fx), 0);
    dw_hub_get_published(hub, &ctr);
    for (int i = 0; i < DW_MSG__COUNT; i++)
        assert_int_equal(ctr.by_type[i], 0);
    assert_int_equal(ctr.broadcasts, 0);
}

/* ------------------------------------------------------------------------------------------
 * Concurrent producers (for tsan): four worker threads publish while this thread drains.
 * ------------------------------------------------------------------------------------------ */

#define NPRODUCERS   4
#define PER_PRODUCER 100 /* x NPRODUCERS stays under QUEUE_CAP, so nothing is dropped */

struct producer {
    pthread_t thread;
    struct dw_hub *hub;
    unsigned id;
    size_t reached;
};

static void *produce(void *arg)
{
    struct producer *p = arg;
    char id[16];

    dw_thread_set_role(DW_THREAD_WORKER);
    dw_rcu_register();
    for (unsigned i = 0; i < PER_PRODUCER; i++) {
        snprintf(id, sizeof(id), "p%u-%u", p->id, i);
        switch (i % 3) {
        case 0: {
            struct dw_deal deal = {.deal_id = id,
                                   .title = "t",
                                   .category = "flight",
                                   .price = 100 + i,
                                   .original_price = 400};

            p->reached += dw_events_hot_deal(p->hub, &deal);
            break;
        }
        case 1:
            p->reached += dw_events_price_alert(p->hub, "alice", id, "t", 10, 20, NULL, 0);
            break;
        default:
            p->reached += dw_events_notification(p->hub, &to_all, id, "info");
            break;
        }
    }
    dw_rcu_unregister();
    return NULL;
}

static void test_concurrent_producers(void **state)
{
    struct fixture *fx = *state;
    struct producer p[NPRODUCERS];
    size_t reached = 0;
    unsigned a, b;

    a = add_conn(fx, "alice");
    b = add_conn(fx, "bob");
    for (unsigned i = 0; i < NPRODUCERS; i++) {
        p[i] = (struct producer){.hub = fx->hub, .id = i};
        assert_int_equal(pthread_create(&p[i].thread, NULL, produce, &p[i]), 0);
    }
    /* Drain while they run; received[] accumulates (drain_one is not used here). */
    for (int spin = 0; spin < 200; spin++)
        drain(fx);
    for (unsigned i = 0; i < NPRODUCERS; i++) {
        assert_int_equal(pthread_join(p[i].thread, NULL), 0);
        reached += p[i].reached;
    }
    drain(fx);

    /* Per producer: 34 hot deals (to both), 33 price alerts (alice), 33 notifications (both). */
    assert_int_equal(fx->received[a], NPRODUCERS * PER_PRODUCER);
    assert_int_equal(fx->received[b], NPRODUCERS * (34 + 33));
    assert_int_equal(reached, fx->received[a] + fx->received[b]);
    assert_counters(fx, NPRODUCERS * 34, NPRODUCERS * 33, 0, NPRODUCERS * 33,
                    NPRODUCERS * (34 + 33));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_number_rendering),
        cmocka_unit_test_setup_teardown(test_deal_alert_to_user, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deal_alert_without_savings, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hot_deal, setup, teardown),
        cmocka_unit_test_setup_teardown(test_price_alert, setup, teardown),
        cmocka_unit_test_setup_teardown(test_trip_update, setup, teardown),
        cmocka_unit_test_setup_teardown(test_notification, setup, teardown),
        cmocka_unit_test_setup_teardown(test_send_generic, setup, teardown),
        cmocka_unit_test_setup_teardown(test_invalid_arguments, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_producers, setup, teardown),
    };

    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
