/*
 * publish — the body of POST /api/publish: parsing, validation and delivery.
 *
 * Body: one object, or a JSON array of them (a batch):
 *   {"target": {"user_id": U} | {"channel": C} | "all",
 *    "message": {"type": T, ...}, "critical": bool, "id": ID}
 * T is one of deal_alert, price_alert, trip_update, notification. The whole body is
 * validated before anything is sent: a bad item fails the request and sends nothing.
 * The message's fields are delivered as given, in order, plus a server "timestamp". Numbers
 * keep their spelling: a body with an integer json-c cannot hold exactly (outside 64 bits, or
 * -0) or with a raw control character in a string is refused with 400 naming the field.
 * An item with an "id" (with a database) is published once per id within --inbox-retention:
 * published again, it is neither stored nor sent, and its answer is the first one's, marked
 * "duplicate" (publishers retry after timeouts). Without a database the id is only echoed.
 */
#ifndef DEALWIRE_PUBLISH_H
#define DEALWIRE_PUBLISH_H

#include <stddef.h>

struct dw_hub;
struct dw_inbox;

/* Largest batch accepted in one request. */
#define DW_PUBLISH_MAX_BATCH 10000

/* dw_publish_request's result when the answer comes later, through env->done. */
#define DW_PUBLISH_PENDING 0

/* Called once with the answer of a request that was DW_PUBLISH_PENDING, on the inbox's
 * thread: the HTTP status and a new NUL-terminated JSON text of len bytes (the callee owns
 * it). */
typedef void dw_publish_done_fn(void *arg, int status, char *resp, size_t len);

/* Room for a request_id's JSON text (128 characters, each escaped at worst as \uXXXX) and
 * its NUL. */
#define DW_PUBLISH_REQUEST_ID_MAX 800

/* Where a publish goes. */
struct dw_publish_env {
    struct dw_hub *hub;
    struct dw_inbox *inbox; /* the durable inbox (--db), or NULL */
    dw_publish_done_fn *done;
    void *arg;
    /* A frame of /ws/publish (stream.c), else NULL: the body may then carry a
     * "request_id" (a string of 1-128 characters, or an integer), in a single publish or
     * around a batch ({"request_id": R, "batch": [...]}); its JSON text is written here
     * (DW_PUBLISH_REQUEST_ID_MAX bytes), "" when there is none or it is refused. */
    char *request_id;
};

/* thread: worker (any RCU-registered thread). Publishes what body (len bytes, borrowed)
 * asks for through env->hub; inside the caller's dw_wake_batch_begin/end, its sends share one
 * wake-up of the I/O thread with what the caller queues next (the HTTP answer). Returns the
 * HTTP status (200, 400, or 503 once the hub is sealed) and sets *resp to a new
 * NUL-terminated JSON answer (the caller frees it) of *resp_len bytes.
 *
 * With env->inbox, the critical items to a user are durable, and items with an id are
 * checked against the ids seen before: the request goes to the inbox,
 * and once they are written (each with its user's seq, which its result carries) every item
 * is sent in order and env->done gets the answer; if they cannot be written, nothing is sent
 * and the answer is 503. dw_publish_request then returns DW_PUBLISH_PENDING and sets nothing.
 * Without an inbox, or without such items, it never does. */
int dw_publish_request(const struct dw_publish_env *env, const char *body, size_t len, char **resp,
                       size_t *resp_len);

#endif
