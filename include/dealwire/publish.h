/*
 * publish — the body of POST /api/publish: parsing, validation and delivery.
 *
 * Body: one object, or a JSON array of them (a batch):
 *   {"target": {"user_id": U} | {"channel": C} | "all",
 *    "message": {"type": T, ...}, "critical": bool}
 * T is one of deal_alert, price_alert, trip_update, notification. The whole body is
 * validated before anything is sent: a bad item fails the request and sends nothing.
 * The message's fields are delivered as given, in order, plus a server "timestamp". Numbers
 * keep their spelling: a body with an integer json-c cannot hold exactly (outside 64 bits, or
 * -0) or with a raw control character in a string is refused with 400 naming the field.
 */
#ifndef DEALWIRE_PUBLISH_H
#define DEALWIRE_PUBLISH_H

#include <stddef.h>

struct dw_hub;

/* Largest batch accepted in one request. */
#define DW_PUBLISH_MAX_BATCH 10000

/* thread: worker (any RCU-registered thread). Publishes what body (len bytes, borrowed)
 * asks for through hub; inside the caller's dw_wake_batch_begin/end, its sends share one
 * wake-up of the I/O thread with what the caller queues next (the HTTP answer). Returns the HTTP
 * status (200, 400, or 503 once the hub is sealed) and sets *resp to a new NUL-terminated JSON
 * answer (the caller frees it) of *resp_len bytes. */
int dw_publish_request(struct dw_hub *hub, const char *body, size_t len, char **resp,
                       size_t *resp_len);

#endif
