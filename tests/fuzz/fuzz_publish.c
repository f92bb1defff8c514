/*
 * fuzz_publish — libFuzzer target: one POST /api/publish body through dw_publish_request
 * (src/publish.c) against a real hub.
 *
 * The hub is made once, in LLVMFuzzerInitialize, with three connections: alice (two, one of
 * them subscribed to hot_deals and flights:nyc-par) and bob@example.com (one, subscribed to
 * hot_deals), so that each form of target reaches someone. The fuzzing thread plays both
 * sides, as tests/unit/test_hub.c does: it is the I/O thread that owns the connections and the
 * worker that publishes. After each body it drains the ready queue the way the I/O thread
 * does, so memory does not grow from one input to the next.
 *
 * Beyond "no crash, no leak, no undefined behaviour", each input checks that:
 *   - the status is 200 or 400 and the answer is JSON of *resp_len bytes: {"recipients": N,
 *     ...} for 200, {"error": ...} for 400;
 *   - a 400 delivers nothing (a batch is all or nothing), and a 200 queues exactly the
 *     "recipients" it reports;
 *   - the request wakes the I/O thread at most once;
 *   - every queued message is well formed (fuzz_util.h), UTF-8 included: nothing checks the
 *     body's encoding before this parser, and a browser fails a connection that receives a
 *     text frame that is not UTF-8.
 * The body is passed as libFuzzer holds it, with no NUL after it. How to run:
 * tests/fuzz/README.md.
 */
#include "../../src/hub_int.h"
#include "dealwire/publish.h"
#include "dealwire/log.h"
#include "dealwire/msg.h"
#include "dealwire/thread.h"
#include "dealwire/wake.h"
#include "fuzz_util.h"

#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The daemon's default --queue-size: large batches to "all" make the outboxes drop. */
#define QUEUE_SIZE 100

static struct dw_hub *hub;
static unsigned wakes;

static void count_wake(void *arg)
{
    (void)arg;
    wakes++;
}

static const struct dw_wake counted_wake = {count_wake, NULL};

static struct dw_conn *add_conn(const char *user_id)
{
    struct dw_conn *c = dw__hub_conn_new(hub);

    dw__hub_add(hub, c, user_id);
    return c;
}

/* The signature is libFuzzer's. NOLINTNEXTLINE(readability-non-const-parameter) */
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    struct dw_conn *alice, *bob;

    (void)argc;
    (void)argv;
    dw_thread_set_role(DW_THREAD_IO);
    dw_rcu_register();
    dw_log_set_level(DW_LOG_ERROR);

    hub = dw_hub_new(&counted_wake);
    alice = add_conn("alice");
    add_conn("alice");
    bob = add_conn("bob@example.com");
    if (dw__hub_subscribe(hub, alice, "hot_deals", 64) != 0 ||
        dw__hub_subscribe(hub, alice, "flights:nyc-par", 64) != 0 ||
        dw__hub_subscribe(hub, bob, "hot_deals", 64) != 0)
        abort();
    return 0;
}

/* What the I/O thread does on a wake (src/conn.c): take the ready batch and, for each
 * connection, unschedule, collect and pop its outbox, then drop the ready queue's reference.
 * Returns the number of messages popped plus those the outbox bound dropped. */
static size_t drain(void)
{
    struct dw_readyq_batch batch;
    struct cds_wfcq_node *node;
    size_t n = 0;

    dw__hub_take_ready(hub, &batch);
    while ((node = dw_readyq_batch_next(&batch)) != NULL) {
        struct dw_conn *c = caa_container_of(node, struct dw_conn, ready_node);
        struct dw_msg *m;

        dw_outbox_unschedule(&c->outbox);
        n += dw_outbox_collect(&c->outbox, QUEUE_SIZE);
        while ((m = dw_outbox_pop(&c->outbox)) != NULL) {
            json_object_put(fuzz_check_msg(m, true));
            dw_msg_unref(m);
            n++;
        }
        dw__conn_unref(c);
    }
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const struct dw_publish_env env = {.hub = hub}; /* no inbox: answered at once */
    struct json_object *answer, *v;
    char *resp = NULL;
    size_t resp_len = 0, delivered;
    int status, rc;

    wakes = 0;
    dw_wake_batch_begin(); /* as http.c's publish_job: the request's sends, one wake-up */
    status = dw_publish_request(&env, (const char *)data, size, &resp, &resp_len);
    dw_wake_batch_end();
    delivered = drain();

    assert(status == 200 || status == 400);
    assert(wakes <= 1);
    assert(resp && strlen(resp) == resp_len);
    assert(fuzz_is_json(resp, resp_len) && fuzz_is_utf8((const unsigned char *)resp, resp_len));
    rc = dw_proto_parse_json(resp, resp_len, FUZZ_JSON_DEPTH, &answer);
    assert(rc == 0 && json_object_is_type(answer, json_type_object));
    if (status == 200) {
        v = json_object_object_get(answer, "recipients");
        assert(json_object_is_type(v, json_type_int));
        assert((size_t)json_object_get_int64(v) == delivered);
    } else {
        assert(json_object_is_type(json_object_object_get(answer, "error"), json_type_string));
        assert(delivered == 0 && wakes == 0);
    }
    json_object_put(answer);
    free(resp);
    return 0;
}
