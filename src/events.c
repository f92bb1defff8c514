/*
 * events — DESIGN: the typed producer API for the wire protocol's events. It owns no state and
 * runs on whichever thread calls it (workers, in practice), registered with RCU because the
 * hub's send functions read its RCU maps.
 *
 * The one idea: everything is checked before anything is built, so an invalid call costs no
 * allocation, sends nothing and counts nothing; a valid call renders its JSON once (json-c,
 * members in the protocol's order, "timestamp" appended by dw_msg_new_json), makes one
 * refcounted dw_msg and hands it to the hub, which queues a reference per recipient. Money and
 * percentages are rendered in the shortest form that reads back as the same double (299, not
 * 299.0; 299.5), after the derived values are rounded to cents or to one decimal.
 */
#define DW_LOG_MODULE "events"
#include "dealwire/events.h"
#include "dealwire/hub.h"
#include "dealwire/log.h"
#include "dealwire/mem.h"
#include "dealwire/msg.h"
#include "dealwire/proto.h"
#include "dealwire/time.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

/* ==========================================================================================
 * Numbers
 */

/* By hand rather than round(), so that dw_core needs no libm. */
double dw_events_round(double v, double scale)
{
    double x = v * scale;

    if (!(x < 9.0e18))
        return v;
    return (double)(int64_t)(x + 0.5) / scale;
}

struct json_object *dw_events_new_number(double v)
{
    char buf[64];
    struct json_object *num;

    if (!isfinite(v))
        return NULL;
    if (v == 0)
        v = 0; /* -0 renders as 0 */

    /* Fixed notation with the fewest decimals that read back as v. 1e15 keeps the integral
     * part within the 17 significant digits a double needs, so some precision always
     * matches. */
    buf[0] = '\0';
    if ((v < 0 ? -v : v) < 1e15) {
        for (int d = 0; d <= 17; d++) {
            snprintf(buf, sizeof(buf), "%.*f", d, v);
            if (strtod(buf, NULL) == v)
                break;
            buf[0] = '\0';
        }
    }
    /* Very large or very small magnitudes: the shortest %g (with an exponent). */
    for (int p = 1; buf[0] == '\0' && p <= 17; p++) {
        snprintf(buf, sizeof(buf), "%.*g", p, v);
        if (p < 17 && strtod(buf, NULL) != v)
            buf[0] = '\0';
    }
    num = json_object_new_double_s(v, buf);
    if (!num)
        dw_panic("out of memory");
    return num;
}

static bool is_price(double v)
{
    return isfinite(v) && v >= 0;
}

/* ==========================================================================================
 * Building and sending
 */

/* Adds key (a string literal, not yet in obj) = val, taking ownership of val. */
static void add(struct json_object *obj, const char *key, struct json_object *val)
{
    if (!val ||
        json_object_object_add_ex(
            obj, key, val, JSON_C_OBJECT_ADD_KEY_IS_NEW | JSON_C_OBJECT_ADD_CONSTANT_KEY) != 0)
        dw_panic("out of memory adding \"%s\"", key);
}

static void add_string(struct json_object *obj, const char *key, const char *s)
{
    add(obj, key, json_object_new_string(s));
}

static struct json_object *new_event(enum dw_msg_type type)
{
    struct json_object *obj = json_object_new_object();

    if (!obj)
        dw_panic("out of memory");
    add_string(obj, "type", dw_msg_type_name(type));
    return obj;
}

/* Adds key = o, where o is borrowed: the tree takes a reference of its own. */
static void add_borrowed(struct json_object *obj, const char *key, struct json_object *o)
{
    add(obj, key, json_object_get(o));
}

/* An argument check failed. Logged at debug only: a buggy producer would otherwise flood the
 * log on every round. */
static size_t invalid(const char *func, const char *what)
{
    dw_log(DW_LOG_DEBUG, "%s: invalid %s, nothing sent", func, what);
    return 0;
}

static struct json_object *invalid_obj(const char *func, const char *what)
{
    invalid(func, what);
    return NULL;
}

static bool target_is_valid(const struct dw_target *t)
{
    if (!t)
        return false;
    switch (t->kind) {
    case DW_TARGET_USER:
        return t->name && dw_proto_user_id_is_valid(t->name);
    case DW_TARGET_CHANNEL:
        return t->name && dw_proto_channel_is_valid(t->name);
    case DW_TARGET_ALL:
        return true;
    }
    return false;
}

static bool nonempty(const char *s)
{
    return s && s[0] != '\0';
}

/* Renders obj once and fans it out; the arguments are already checked. */
static size_t fan_out(struct dw_hub *hub, const struct dw_target *target, enum dw_msg_type type,
                      unsigned flags, struct json_object *obj)
{
    struct dw_msg *m = dw_msg_new_json(type, flags, obj);
    size_t n = 0;

    m->accepted_at = dw_now_mono_ns(); /* /metrics: delivery latency from here, once per message */

    switch (target->kind) {
    case DW_TARGET_USER:
        n = dw_hub_send_user(hub, target->name, m);
        break;
    case DW_TARGET_CHANNEL:
        n = dw_hub_send_channel(hub, target->name, m);
        break;
    case DW_TARGET_ALL:
        n = dw_hub_send_all(hub, m);
        break;
    }
    dw_hub_count_published(hub, (int)type, target->kind == DW_TARGET_ALL);
    dw_msg_unref(m);
    return n;
}

/* Fans out obj and releases it (obj is the caller's own new object). */
static size_t send_owned(struct dw_hub *hub, const struct dw_target *target, enum dw_msg_type type,
                         unsigned flags, struct json_object *obj)
{
    size_t n = fan_out(hub, target, type, flags, obj);

    json_object_put(obj);
    return n;
}

size_t dw_events_send(struct dw_hub *hub, const struct dw_target *target, enum dw_msg_type type,
                      unsigned flags, struct json_object *obj)
{
    struct json_object *t;

    if (!hub)
        return invalid(__func__, "hub");
    if (!target_is_valid(target))
        return invalid(__func__, "target");
    if ((unsigned)type >= DW_MSG__COUNT)
        return invalid(__func__, "type");
    if (flags & ~DW_MSG_F_CRITICAL)
        return invalid(__func__, "flags");
    if (!json_object_is_type(obj, json_type_object) ||
        !json_object_object_get_ex(obj, "type", &t) || !json_object_is_type(t, json_type_string) ||
        strcmp(json_object_get_string(t), dw_msg_type_name(type)) != 0)
        return invalid(__func__, "object (not an object, or \"type\" does not match)");
    return fan_out(hub, target, type, flags, obj);
}

/* ==========================================================================================
 * The typed events
 */

size_t dw_events_deal_alert(struct dw_hub *hub, const struct dw_target *target,
                            const struct dw_deal *deal, const char *alert_type)
{
    struct json_object *obj;

    if (!hub)
        return invalid(__func__, "hub");
    if (!target_is_valid(target))
        return invalid(__func__, "target");
    if (!deal || !nonempty(deal->deal_id) || !deal->title || !deal->category)
        return invalid(__func__, "deal");
    if (!is_price(deal->price) || !is_price(deal->original_price))
        return invalid(__func__, "price");
    if (deal->metadata && !json_object_is_type(deal->metadata, json_type_object))
        return invalid(__func__, "metadata (not an object)");
    if (!nonempty(alert_type))
        return invalid(__func__, "alert_type");

    obj = new_event(DW_MSG_DEAL_ALERT);
    add_string(obj, "deal_id", deal->deal_id);
    add_string(obj, "title", deal->title);
    add(obj, "price", dw_events_new_number(deal->price));
    add_string(obj, "category", deal->category);
    if (deal->metadata)
        add_borrowed(obj, "metadata", deal->metadata);
    add_string(obj, "alert_type", alert_type);
    if (deal->original_price > deal->price) {
        double saved = deal->original_price - deal->price;

        add(obj, "savings_percent",
            dw_events_new_number(dw_events_round(saved / deal->original_price * 100, 10)));
        add(obj, "discount", dw_events_new_number(dw_events_round(saved, 100)));
    }
    return send_owned(hub, target, DW_MSG_DEAL_ALERT, 0, obj);
}

size_t dw_events_hot_deal(struct dw_hub *hub, const struct dw_deal *deal)
{
    static const struct dw_target all = {DW_TARGET_ALL, NULL};

    return dw_events_deal_alert(hub, &all, deal, DW_DEAL_ALERT_HOT_DEAL);
}

struct json_object *dw_events_price_alert_new(const char *user_id, const char *deal_id,
                                              const char *title, double current_price,
                                              double threshold, const char *const *reasons,
                                              size_t nreasons)
{
    const struct dw_target target = {DW_TARGET_USER, user_id};
    struct json_object *obj, *arr;
    double drop;

    if (!target_is_valid(&target))
        return invalid_obj(__func__, "user_id");
    if (!nonempty(deal_id) || !title)
        return invalid_obj(__func__, "deal_id or title");
    if (!is_price(current_price) || !is_price(threshold))
        return invalid_obj(__func__, "price");
    if (nreasons > 0 && !reasons)
        return invalid_obj(__func__, "reasons");
    for (size_t i = 0; i < nreasons; i++) {
        if (!reasons[i])
            return invalid_obj(__func__, "reasons (NULL entry)");
    }

    /* An alert for low inventory can come with the price still above the threshold. */
    drop = threshold > current_price ? threshold - current_price : 0;

    obj = new_event(DW_MSG_PRICE_ALERT);
    add_string(obj, "deal_id", deal_id);
    add_string(obj, "title", title);
    add(obj, "current_price", dw_events_new_number(current_price));
    add(obj, "threshold", dw_events_new_number(threshold));
    add(obj, "drop_amount", dw_events_new_number(dw_events_round(drop, 100)));
    add(obj, "drop_percent",
        dw_events_new_number(threshold > 0 ? dw_events_round(drop / threshold * 100, 10) : 0));
    arr = json_object_new_array();
    if (!arr)
        dw_panic("out of memory");
    for (size_t i = 0; i < nreasons; i++) {
        if (json_object_array_add(arr, json_object_new_string(reasons[i])) != 0)
            dw_panic("out of memory");
    }
    add(obj, "reasons", arr);
    return obj;
}

size_t dw_events_price_alert(struct dw_hub *hub, const char *user_id, const char *deal_id,
                             const char *title, double current_price, double threshold,
                             const char *const *reasons, size_t nreasons)
{
    const struct dw_target target = {DW_TARGET_USER, user_id};
    struct json_object *obj;

    if (!hub)
        return invalid(__func__, "hub");
    obj = dw_events_price_alert_new(user_id, deal_id, title, current_price, threshold, reasons,
                                    nreasons);
    if (!obj)
        return 0;
    return send_owned(hub, &target, DW_MSG_PRICE_ALERT, DW_MSG_F_CRITICAL, obj);
}

struct json_object *dw_events_trip_update_new(const char *user_id, const char *status,
                                              const char *message, int progress,
                                              struct json_object *extra)
{
    const struct dw_target target = {DW_TARGET_USER, user_id};
    struct json_object *obj;

    if (!target_is_valid(&target))
        return invalid_obj(__func__, "user_id");
    if (!nonempty(status) || !message)
        return invalid_obj(__func__, "status or message");
    if (progress < 0 || progress > 100)
        return invalid_obj(__func__, "progress");
    if (extra && !json_object_is_type(extra, json_type_object))
        return invalid_obj(__func__, "extra (not an object)");

    obj = new_event(DW_MSG_TRIP_UPDATE);
    add_string(obj, "status", status);
    add_string(obj, "message", message);
    add(obj, "progress", json_object_new_int(progress));
    if (extra)
        add_borrowed(obj, "extra_data", extra);
    else
        add(obj, "extra_data", json_object_new_object());
    return obj;
}

size_t dw_events_trip_update(struct dw_hub *hub, const char *user_id, const char *status,
                             const char *message, int progress, struct json_object *extra)
{
    const struct dw_target target = {DW_TARGET_USER, user_id};
    struct json_object *obj;

    if (!hub)
        return invalid(__func__, "hub");
    obj = dw_events_trip_update_new(user_id, status, message, progress, extra);
    if (!obj)
        return 0;
    return send_owned(hub, &target, DW_MSG_TRIP_UPDATE, DW_MSG_F_CRITICAL, obj);
}

bool dw_events_level_is_valid(const char *level)
{
    static const char *const levels[] = {"info", "success", "warning", "error"};

    if (!level)
        return false;
    for (size_t i = 0; i < sizeof(levels) / sizeof(levels[0]); i++) {
        if (strcmp(level, levels[i]) == 0)
            return true;
    }
    return false;
}

size_t dw_events_notification(struct dw_hub *hub, const struct dw_target *target,
                              const char *message, const char *level)
{
    struct json_object *obj;

    if (!hub)
        return invalid(__func__, "hub");
    if (!target_is_valid(target))
        return invalid(__func__, "target");
    if (!message)
        return invalid(__func__, "message");
    if (!dw_events_level_is_valid(level))
        return invalid(__func__, "level");

    obj = new_event(DW_MSG_NOTIFICATION);
    add_string(obj, "message", message);
    add_string(obj, "level", level);
    return send_owned(hub, target, DW_MSG_NOTIFICATION, 0, obj);
}
