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
#include "dealwire/inbox.h"
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
    const char *id;               /* the publisher's "id" (borrowed from the body), or NULL */
    struct dw_inbox_entry *entry; /* a durable one's place in the inbox write, else NULL */
    struct dw_inbox_track *track; /* with an id and an inbox: what the inbox said of it */
};

/* A validated request: what the answer is built from, now or after the inbox write. */
struct request {
    struct dw_publish_env env;
    struct json_object *root; /* owns every item's message and target name */
    struct item *items;
    size_t n;
    bool batch;
    struct dw_inbox_entry *entries; /* the durable items', in order */
    size_t nentries;
    struct dw_inbox_track *tracks; /* the items with an id, in order */
    size_t ntracks;
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

    if (json_object_object_get_ex(obj, "id", &v)) {
        it->id = dw_proto_json_string(v);
        if (!it->id || !dw_inbox_id_is_valid(it->id))
            return fail(e, index, "id", "\"id\" must be 1-128 characters of A-Z a-z 0-9 _ . : @ -");
    }

    /* Price alerts and trip updates are critical unless the publisher says otherwise. */
    it->critical = it->type == DW_MSG_PRICE_ALERT || it->type == DW_MSG_TRIP_UPDATE;
    if (json_object_object_get_ex(obj, "critical", &critical)) {
        if (!json_object_is_type(critical, json_type_boolean))
            return fail(e, index, "critical", "\"critical\" must be true or false");
        it->critical = json_object_get_boolean(critical);
    }
    return true;
}

/* A duplicate of a publish whose message this request does not send (nor store). */
static bool is_duplicate(const struct item *it)
{
    return it->track && it->track->duplicate && !it->track->redeliver;
}

/* Sends one validated item (a durable one as the inbox numbered it; a duplicate not at all).
 * Returns the number of connections reached; writes its id (the publisher's, or one of ours). */
static size_t send_item(const struct dw_publish_env *env, struct item *it, char id[24])
{
    size_t n;

    if (!it->id)
        snprintf(id, 24, "%" PRIu64, atomic_fetch_add_explicit(&next_id, 1, memory_order_relaxed));
    if (is_duplicate(it))
        return 0;
    if (it->entry)
        n = dw_inbox_deliver(env->hub, it->entry);
    else
        n = dw_events_send(env->hub, &it->target, (enum dw_msg_type)it->type,
                           it->critical ? DW_MSG_F_CRITICAL : 0, it->message);
    if (it->track)
        dw_inbox_note_recipients(env->inbox, it->id, (int64_t)n);
    return n;
}

/* One item's part of the answer: a duplicate's is the first publish's (seq, recipients once
 * recorded), marked "duplicate". */
static struct json_object *item_answer(size_t recipients, const char *id, const struct item *it)
{
    struct json_object *r = json_object_new_object();
    int64_t seq = it->entry ? it->entry->seq : 0;

    if (is_duplicate(it)) {
        recipients = it->track->recipients > 0 ? (size_t)it->track->recipients : 0;
        seq = it->track->seq;
    }
    json_object_object_add(r, "recipients", json_object_new_int64((int64_t)recipients));
    json_object_object_add(r, "id", json_object_new_string(it->id ? it->id : id));
    if (seq)
        json_object_object_add(r, "seq", json_object_new_int64(seq));
    if (it->track && it->track->duplicate)
        json_object_object_add(r, "duplicate", json_object_new_boolean(true));
    return r;
}

/* Sends every item in order and renders the answer. */
static char *send_all(struct request *rq, size_t *resp_len)
{
    struct json_object *answer;
    size_t total = 0;
    char id[24];

    if (!rq->batch) {
        total = send_item(&rq->env, &rq->items[0], id);
        answer = item_answer(total, id, &rq->items[0]);
    } else {
        struct json_object *results = json_object_new_array_ext((int)rq->n);

        for (size_t i = 0; i < rq->n; i++) {
            size_t k = send_item(&rq->env, &rq->items[i], id);

            total += k;
            json_object_array_add(results, item_answer(k, id, &rq->items[i]));
        }
        answer = json_object_new_object();
        json_object_object_add(answer, "recipients", json_object_new_int64((int64_t)total));
        json_object_object_add(answer, "results", results);
    }
    return dw_answer_json(answer, resp_len);
}

static void request_free(struct request *rq)
{
    for (size_t i = 0; i < rq->nentries; i++)
        dw_inbox_entry_release(&rq->entries[i]);
    free(rq->entries);
    free(rq->tracks);
    free(rq->items);
    json_object_put(rq->root);
    free(rq);
}

/* The inbox wrote the durable items (rc 0), or could not: nothing is sent then. */
static void durable_done(void *arg, int rc)
{
    struct request *rq = arg;
    size_t len;
    char *resp;
    int status = 200;

    if (rc < 0) {
        resp = dw_answer_error(rq->nentries ? "critical messages cannot be stored now: the "
                                              "database is unavailable; nothing was sent"
                                            : "publish ids cannot be checked now: the database "
                                              "is unavailable; nothing was sent",
                               NULL, &len);
        status = 503;
    } else {
        resp = send_all(rq, &len);
    }
    rq->env.done(rq->env.arg, status, resp, len);
    request_free(rq);
}

static bool is_durable(const struct item *it)
{
    return it->critical && it->target.kind == DW_TARGET_USER;
}

/* Hands rq to the inbox when it has durable items (critical, to a user) or items with an id,
 * and there is an inbox: true when it took them (the answer comes through env.done). */
static bool submit_durable(struct request *rq)
{
    size_t n = 0, ntracks = 0;

    for (size_t i = 0; rq->env.inbox && i < rq->n; i++) {
        n += is_durable(&rq->items[i]);
        ntracks += rq->items[i].id != NULL;
    }
    if (n == 0 && ntracks == 0)
        return false;
    rq->entries = n ? dw_xcalloc(n, sizeof(*rq->entries)) : NULL;
    rq->nentries = n;
    rq->tracks = ntracks ? dw_xcalloc(ntracks, sizeof(*rq->tracks)) : NULL;
    rq->ntracks = ntracks;
    for (size_t i = 0, k = 0, t = 0; i < rq->n; i++) {
        struct item *it = &rq->items[i];

        if (is_durable(it)) {
            it->entry = &rq->entries[k++];
            dw_inbox_entry_init(it->entry, it->target.name, (enum dw_msg_type)it->type,
                                it->message);
        }
        if (it->id) {
            it->track = &rq->tracks[t++];
            it->track->id = it->id;
            it->track->entry = it->entry;
        }
    }
    if (ntracks)
        return dw_inbox_submit_tracked(rq->env.inbox, rq->entries, n, rq->tracks, ntracks,
                                       durable_done, rq) == 0;
    return dw_inbox_submit(rq->env.inbox, rq->entries, n, durable_done, rq) == 0;
}

static int compare_ids(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Is an id given to two items of rq? (Sorted, not compared pairwise: a batch holds 10,000.) */
static bool ids_repeat(const struct request *rq, struct verr *err)
{
    const char **ids = dw_xmalloc(rq->n * sizeof(*ids));
    size_t n = 0;
    bool repeat = false;

    for (size_t i = 0; i < rq->n; i++) {
        if (rq->items[i].id)
            ids[n++] = rq->items[i].id;
    }
    qsort(ids, n, sizeof(*ids), compare_ids);
    for (size_t i = 1; i < n && !repeat; i++)
        repeat = strcmp(ids[i - 1], ids[i]) == 0;
    free(ids);
    if (repeat)
        fail(err, -1, "id", "two items of the batch have the same \"id\"");
    return repeat;
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

/* A frame of /ws/publish: its "request_id", written into out as JSON text, and the batch it
 * wraps ({"request_id": R, "batch": [...]}), if it does. Returns NULL, or the error message
 * (*field: what it names). */
static const char *stream_envelope(struct json_object *root, char *out, struct json_object **batch,
                                   const char **field)
{
    static const char bad_id[] =
        "\"request_id\" must be a string of 1-128 characters or an integer";
    struct json_object *v;

    *batch = NULL;
    if (!json_object_is_type(root, json_type_object))
        return NULL;
    if (json_object_object_get_ex(root, "request_id", &v)) {
        const char *text;
        size_t n;

        *field = "request_id";
        if (json_object_is_type(v, json_type_string)) {
            n = (size_t)json_object_get_string_len(v);
            if (n == 0 || n > 128)
                return bad_id;
        } else if (!json_object_is_type(v, json_type_int)) {
            return bad_id;
        }
        text = json_object_to_json_string_length(
            v, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &n);
        if (n >= DW_PUBLISH_REQUEST_ID_MAX)
            return bad_id;
        memcpy(out, text, n + 1);
    }
    if (json_object_object_get_ex(root, "batch", &v)) {
        *field = "batch";
        if (!json_object_is_type(v, json_type_array))
            return "\"batch\" must be an array of publish requests";
        *batch = v;
    }
    return NULL;
}

int dw_publish_request(const struct dw_publish_env *env, const char *body, size_t len, char **resp,
                       size_t *resp_len)
{
    struct json_object *root, *items;
    struct request *rq;
    struct verr err = {0};
    struct dw_json_error jerr;
    int status = 400;

    if (env->request_id)
        env->request_id[0] = '\0';
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
    items = root;
    if (env->request_id) {
        struct json_object *batch;
        const char *field = NULL;
        const char *why = stream_envelope(root, env->request_id, &batch, &field);

        if (why) {
            *resp = dw_answer_error(why, field, resp_len);
            json_object_put(root);
            return 400;
        }
        if (batch)
            items = batch;
    }
    rq = dw_xcalloc(1, sizeof(*rq));
    rq->env = *env;
    rq->root = root;
    rq->batch = json_object_is_type(items, json_type_array);
    rq->n = rq->batch ? json_object_array_length(items) : 1;
    if (rq->batch && (rq->n == 0 || rq->n > DW_PUBLISH_MAX_BATCH)) {
        *resp = dw_answer_error("a batch holds 1 to 10000 publish requests", "", resp_len);
        goto out;
    }
    rq->items = dw_xcalloc(rq->n, sizeof(*rq->items));
    for (size_t i = 0; i < rq->n; i++) {
        struct json_object *obj = rq->batch ? json_object_array_get_idx(items, i) : items;

        if (!parse_item(obj, rq->batch ? (int)i : -1, &rq->items[i], &err)) {
            *resp = dw_answer_error(err.message, err.field, resp_len);
            goto out;
        }
    }
    if (rq->batch && ids_repeat(rq, &err)) {
        *resp = dw_answer_error(err.message, err.field, resp_len);
        goto out;
    }
    if (dw_hub_sealed(env->hub)) {
        /* Nothing would be delivered; a send that races with the seal counts no recipients. */
        *resp = dw_answer_error("the server is shutting down", NULL, resp_len);
        status = 503;
        goto out;
    }
    if (submit_durable(rq))
        return DW_PUBLISH_PENDING; /* rq belongs to the inbox's callback now */
    if (rq->entries || rq->tracks) {
        /* The inbox is stopping: the daemon is shutting down. */
        *resp = dw_answer_error("the server is shutting down", NULL, resp_len);
        status = 503;
        goto out;
    }
    *resp = send_all(rq, resp_len);
    status = 200;
out:
    request_free(rq);
    return status;
}
