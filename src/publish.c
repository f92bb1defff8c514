/*
 * publish — DESIGN: the publish API runs on a worker, never on the I/O thread. It parses the body
 * with json-c (bounded depth), validates every item first so that a batch is all or nothing,
 * then renders each message once and fans it out through the hub. The caller opens the hub
 * batch around it (http.c's publish_job, with the answer in it), so a whole request and its
 * answer cost one wake-up of the I/O thread.
 */
#define DW_LOG_MODULE "publish"
#include "dealwire/publish.h"
#include "dealwire/answer.h"
#include "dealwire/events.h"
#include "dealwire/hub.h"
#include "dealwire/log.h"
#include "dealwire/mem.h"
#include "dealwire/msg.h"
#include "dealwire/proto.h"

#include <inttypes.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#define PARSE_DEPTH 32

struct item {
    struct dw_target target; /* its name is borrowed from the parsed body */
    struct json_object *message;
    int type;
    bool critical;
};

static _Atomic uint64_t next_id = 1;

/* Validation error: message and field, where field is prefixed with "[i]." in a batch. */
struct verr {
    const char *message;
    char field[48];
};

static bool fail(struct verr *e, int index, const char *field, const char *message)
{
    e->message = message;
    if (index >= 0)
        snprintf(e->field, sizeof(e->field), "[%d].%s", index, field);
    else
        snprintf(e->field, sizeof(e->field), "%s", field);
    return false;
}

/* Whether target is an object with key as its one key; *value is then key's value (NULL for a
 * JSON null). */
static bool only_key(struct json_object *target, const char *key, struct json_object **value)
{
    return json_object_is_type(target, json_type_object) &&
           json_object_object_length(target) == 1 && json_object_object_get_ex(target, key, value);
}

static bool parse_item(struct json_object *obj, int index, struct item *it, struct verr *e)
{
    struct json_object *target, *message, *type, *critical, *v;
    const char *tname;

    if (!json_object_is_type(obj, json_type_object))
        return fail(e, index, "", "each publish request must be a JSON object");

    if (!json_object_object_get_ex(obj, "target", &target))
        return fail(e, index, "target", "\"target\" is required");
    if (json_object_is_type(target, json_type_string) &&
        strcmp(json_object_get_string(target), "all") == 0) {
        it->target.kind = DW_TARGET_ALL;
        it->target.name = NULL;
    } else if (only_key(target, "user_id", &v)) {
        it->target.name = dw_proto_json_string(v);
        if (!it->target.name || !dw_proto_user_id_is_valid(it->target.name))
            return fail(e, index, "target.user_id",
                        "user_id must be 1-128 characters of A-Z a-z 0-9 _ . : @ -");
        it->target.kind = DW_TARGET_USER;
    } else if (only_key(target, "channel", &v)) {
        it->target.name = dw_proto_json_string(v);
        if (!it->target.name || !dw_proto_channel_is_valid(it->target.name))
            return fail(e, index, "target.channel",
                        "channel must be 1-64 characters of A-Z a-z 0-9 _ . : -");
        it->target.kind = DW_TARGET_CHANNEL;
    } else {
        return fail(e, index, "target",
                    "\"target\" must be \"all\", {\"user_id\": ...} or {\"channel\": ...}");
    }

    if (!json_object_object_get_ex(obj, "message", &message))
        return fail(e, index, "message", "\"message\" is required");
    if (!json_object_is_type(message, json_type_object))
        return fail(e, index, "message", "\"message\" must be a JSON object");
    if (!json_object_object_get_ex(message, "type", &type) ||
        !json_object_is_type(type, json_type_string))
        return fail(e, index, "message.type", "\"message.type\" must be a string");
    tname = json_object_get_string(type);
    it->type = dw_msg_type_parse(tname);
    if (it->type != DW_MSG_DEAL_ALERT && it->type != DW_MSG_PRICE_ALERT &&
        it->type != DW_MSG_TRIP_UPDATE && it->type != DW_MSG_NOTIFICATION)
        return fail(e, index, "message.type",
                    "\"message.type\" must be deal_alert, price_alert, trip_update or "
                    "notification");
    if (it->type == DW_MSG_NOTIFICATION && json_object_object_get_ex(message, "level", &v) &&
        !dw_events_level_is_valid(
            json_object_is_type(v, json_type_string) ? json_object_get_string(v) : ""))
        return fail(e, index, "message.level", "\"level\" must be info, success, warning or error");
    /* Every message a client gets has a string timestamp (protocol.md): the publisher may set
     * its own (its event time), but not as anything else. Found by tests/fuzz. */
    if (json_object_object_get_ex(message, "timestamp", &v) &&
        !json_object_is_type(v, json_type_string))
        return fail(e, index, "message.timestamp", "\"timestamp\" must be a string");
    it->message = message;

    /* Price alerts and trip updates are critical unless the publisher says otherwise. */
    it->critical = it->type == DW_MSG_PRICE_ALERT || it->type == DW_MSG_TRIP_UPDATE;
    if (json_object_object_get_ex(obj, "critical", &critical)) {
        if (!json_object_is_type(critical, json_type_boolean))
            return fail(e, index, "critical", "\"critical\" must be true or false");
        it->critical = json_object_get_boolean(critical);
    }
    return true;
}

/* Sends one validated item. Returns the number of connections reached; writes its id. */
static size_t send_item(struct dw_hub *hub, struct item *it, char id[24])
{
    snprintf(id, 24, "%" PRIu64, atomic_fetch_add_explicit(&next_id, 1, memory_order_relaxed));
    return dw_events_send(hub, &it->target, (enum dw_msg_type)it->type,
                          it->critical ? DW_MSG_F_CRITICAL : 0, it->message);
}

/* The answer to a body that dw_proto_parse_json_ex refused. Only what json-c would have taken
 * but cannot deliver as written names a field; other invalid JSON has no place to name. */
static char *json_error_body(const struct dw_json_error *e, size_t *len)
{
    switch (e->kind) {
    case DW_JSON_ERR_NUMBER:
        return dw_answer_error(e->message, e->field, len);
    case DW_JSON_ERR_CONTROL_CHAR:
        return dw_answer_error("body is not valid JSON: unescaped control character in a string",
                               e->field, len);
    case DW_JSON_ERR_SYNTAX:
        break;
    }
    return dw_answer_error("body is not valid JSON", NULL, len);
}

int dw_publish_request(struct dw_hub *hub, const char *body, size_t len, char **resp,
                       size_t *resp_len)
{
    struct json_object *root, *answer;
    struct item *items = NULL;
    struct verr err = {0};
    struct dw_json_error jerr;
    size_t n, total = 0;
    bool batch;
    char id[24];
    int status = 400;

    if (dw_proto_parse_json_ex(body, len, PARSE_DEPTH, &root, &jerr) < 0) {
        *resp = json_error_body(&jerr, resp_len);
        return 400;
    }
    if (!json_object_is_type(root, json_type_object) &&
        !json_object_is_type(root, json_type_array)) {
        *resp = dw_answer_error("body must be a JSON object or an array of them", NULL, resp_len);
        json_object_put(root);
        return 400;
    }
    batch = json_object_is_type(root, json_type_array);
    n = batch ? json_object_array_length(root) : 1;
    if (batch && (n == 0 || n > DW_PUBLISH_MAX_BATCH)) {
        *resp = dw_answer_error("a batch holds 1 to 10000 publish requests", "", resp_len);
        goto out;
    }
    items = dw_xcalloc(n, sizeof(*items));
    for (size_t i = 0; i < n; i++) {
        struct json_object *obj = batch ? json_object_array_get_idx(root, i) : root;

        if (!parse_item(obj, batch ? (int)i : -1, &items[i], &err)) {
            *resp = dw_answer_error(err.message, err.field, resp_len);
            goto out;
        }
    }
    if (dw_hub_sealed(hub)) {
        /* Nothing would be delivered; a send that races with the seal counts no recipients. */
        *resp = dw_answer_error("the server is shutting down", NULL, resp_len);
        status = 503;
        goto out;
    }

    if (!batch) {
        total = send_item(hub, &items[0], id);
        answer = json_object_new_object();
        json_object_object_add(answer, "recipients", json_object_new_int64((int64_t)total));
        json_object_object_add(answer, "id", json_object_new_string(id));
    } else {
        struct json_object *results = json_object_new_array_ext((int)n);

        for (size_t i = 0; i < n; i++) {
            struct json_object *r = json_object_new_object();
            size_t k = send_item(hub, &items[i], id);

            total += k;
            json_object_object_add(r, "recipients", json_object_new_int64((int64_t)k));
            json_object_object_add(r, "id", json_object_new_string(id));
            json_object_array_add(results, r);
        }
        answer = json_object_new_object();
        json_object_object_add(answer, "recipients", json_object_new_int64((int64_t)total));
        json_object_object_add(answer, "results", results);
    }
    *resp = dw_answer_json(answer, resp_len);
    status = 200;
out:
    free(items);
    json_object_put(root);
    return status;
}
