/*
 * events — the typed API producers (monitors, the trip planner) use to send the wire
 * protocol's events: deal_alert, price_alert, trip_update and notification.
 *
 * Each function checks its arguments, builds the JSON object once with json-c (members in the
 * protocol's order, see docs/protocol.md; dw_msg_new_json() appends "timestamp"), makes ONE
 * dw_msg, fans it out through the hub, counts it in the hub's published counters, drops its
 * own reference, and returns the number of connections it was queued for. Nothing here
 * touches lws or blocks.
 *
 * Return value: the number of connections reached, which is 0 both when nobody matched and
 * when an argument was invalid (NULL hub, target or required string, a bad user id or channel
 * name, a price that is negative or not finite, progress outside 0..100, an unknown level).
 * An invalid call sends nothing and counts nothing. Callers that need to tell the two apart
 * check their input first (e.g. with dw_events_level_is_valid()).
 *
 * Each call wakes the I/O thread at most once; wrap several in dw_wake_batch_begin() /
 * dw_wake_batch_end() (wake.h) to wake it once for the batch.
 *
 * Target, as a compound literal:
 *   dw_events_notification(hub, &(struct dw_target){DW_TARGET_USER, "alice"},
 *                          "Watch list updated", "info");
 */
#ifndef DEALWIRE_EVENTS_H
#define DEALWIRE_EVENTS_H

#include <stdbool.h>
#include <stddef.h>

#include "dealwire/msg.h"

struct dw_hub;
struct json_object;

/* Who a message goes to. */
enum dw_target_kind {
    DW_TARGET_USER,    /* every connection of the user named name */
    DW_TARGET_CHANNEL, /* every member of the channel named name */
    DW_TARGET_ALL,     /* every connection (a broadcast); name is ignored */
};

struct dw_target {
    enum dw_target_kind kind;
    const char *name; /* user id or channel name; borrowed for the duration of the call */
};

/* The alert_type values of deal_alert. */
#define DW_DEAL_ALERT_HOT_DEAL "hot_deal"
#define DW_DEAL_ALERT_TRENDING "trending"

/* A deal, as the deal monitors know it. Every pointer is borrowed for the duration of the
 * call. metadata is linked into the message's JSON tree while it is rendered (json-c's
 * refcount, which is not atomic), so no other thread may use it during the call; the same
 * holds for trip_update's extra. */
struct dw_deal {
    const char *deal_id;          /* required, non-empty */
    const char *title;            /* required */
    const char *category;         /* required ("flight", "hotel", ...) */
    double price;                 /* finite, >= 0 */
    double original_price;        /* finite, >= 0; 0 when unknown */
    struct json_object *metadata; /* a JSON object, or NULL to leave "metadata" out */
};

/* thread: any; rcu: registered. Sends obj (borrowed for the duration of the call) as a message
 * of type with flags (DW_MSG_F_*) to target, and counts it as published (a broadcast when the
 * target is DW_TARGET_ALL). obj must be a JSON object whose "type" member is the wire name of
 * type; it gains a "timestamp" member when it has none (see dw_msg_new_json()). Returns the
 * number of connections reached, 0 when invalid (see the top of this file). */
size_t dw_events_send(struct dw_hub *hub, const struct dw_target *target, enum dw_msg_type type,
                      unsigned flags, struct json_object *obj);

/* thread: any; rcu: registered. Sends a deal_alert for deal with alert_type (non-empty, e.g.
 * DW_DEAL_ALERT_TRENDING) to target: type, deal_id, title, price, category, metadata (when
 * deal->metadata is set), alert_type, then, only when original_price > price,
 * savings_percent (rounded to 1 decimal) and discount (original_price - price, rounded to
 * cents). Not critical. Returns the number of connections reached, 0 when invalid. */
size_t dw_events_deal_alert(struct dw_hub *hub, const struct dw_target *target,
                            const struct dw_deal *deal, const char *alert_type);

/* thread: any; rcu: registered. dw_events_deal_alert() with alert_type "hot_deal" to every
 * connection (counted as a broadcast). Returns the number of connections reached. */
size_t dw_events_hot_deal(struct dw_hub *hub, const struct dw_deal *deal);

/* thread: any; rcu: registered. Sends a critical price_alert to every connection of user_id:
 * type, deal_id, title, current_price, threshold, drop_amount (threshold - current_price in
 * cents, never negative), drop_percent (drop_amount as a percentage of threshold, 1 decimal;
 * 0 when threshold is 0), reasons (the nreasons strings of reasons, in order; reasons may be
 * NULL when nreasons is 0). Prices must be finite and >= 0. Everything is borrowed for the
 * duration of the call. Returns the number of connections reached, 0 when invalid. */
size_t dw_events_price_alert(struct dw_hub *hub, const char *user_id, const char *deal_id,
                             const char *title, double current_price, double threshold,
                             const char *const *reasons, size_t nreasons);

/* thread: any. The object dw_events_price_alert() would send, for a caller that sends it
 * another way (the durable inbox): a new object the caller puts, or NULL when invalid. */
struct json_object *dw_events_price_alert_new(const char *user_id, const char *deal_id,
                                              const char *title, double current_price,
                                              double threshold, const char *const *reasons,
                                              size_t nreasons);

/* thread: any; rcu: registered. Sends a critical trip_update to every connection of user_id:
 * type, status (non-empty, e.g. "searching"), message, progress (0..100), extra_data (extra,
 * a JSON object borrowed for the duration of the call, or {} when NULL). Returns the number
 * of connections reached, 0 when invalid. */
size_t dw_events_trip_update(struct dw_hub *hub, const char *user_id, const char *status,
                             const char *message, int progress, struct json_object *extra);

/* thread: any. The object dw_events_trip_update() would send: a new object the caller puts,
 * or NULL when invalid. */
struct json_object *dw_events_trip_update_new(const char *user_id, const char *status,
                                              const char *message, int progress,
                                              struct json_object *extra);

/* thread: any. Is level one of "info", "success", "warning", "error"? */
bool dw_events_level_is_valid(const char *level);

/* thread: any; rcu: registered. Sends a notification (type, message, level) to target. level
 * must pass dw_events_level_is_valid(), otherwise nothing is sent and 0 is returned. Not
 * critical. Returns the number of connections reached, 0 when invalid. */
size_t dw_events_notification(struct dw_hub *hub, const struct dw_target *target,
                              const char *message, const char *level);

/* thread: any. v (>= 0) rounded to 1/scale (scale 100: cents, 10: a tenth of a percent);
 * values too large for an int64 are integral already and come back unchanged. */
double dw_events_round(double v, double scale);

/* thread: any. A new JSON number for v that renders in the shortest form that reads back as v,
 * without exponent for usual magnitudes and without a trailing ".0": 299 as 299, 299.5 as
 * 299.5, 0.1 as 0.1. Returns a new reference (caller owns it), or NULL (JSON null) when v is
 * not finite. */
struct json_object *dw_events_new_number(double v);

#endif
