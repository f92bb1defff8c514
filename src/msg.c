/*
 * msg — DESIGN: a message is rendered and framed once by its producer, then shared read-only by
 * every outbox it is queued on. Server frames are never masked, so the same header+payload
 * bytes serve every recipient and the I/O thread can copy them straight into its write buffer.
 * The refcount is the only field that changes after creation.
 */
#define DW_LOG_MODULE "msg"
#include "dealwire/msg.h"
#include "dealwire/log.h"
#include "dealwire/mem.h"
#include "dealwire/time.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <json-c/json.h>

static const char *const type_names[DW_MSG__COUNT] = {
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

const char *dw_msg_type_name(enum dw_msg_type type)
{
    if ((unsigned)type >= DW_MSG__COUNT)
        return "?";
    return type_names[type];
}

int dw_msg_type_parse(const char *name)
{
    for (int i = 0; i < DW_MSG__COUNT; i++) {
        if (strcmp(name, type_names[i]) == 0)
            return i;
    }
    return -EINVAL;
}

struct dw_msg *dw_msg_new_text(enum dw_msg_type type, unsigned flags, const char *json, size_t len)
{
    struct dw_msg *m;
    unsigned char *h;

    if (len > UINT32_MAX)
        dw_panic("message of %zu bytes", len);
    m = dw_xmalloc(sizeof(*m) + DW_MSG_HDR_ROOM + len + 1);
    atomic_init(&m->_refs, 1);
    m->type = (uint8_t)type;
    m->flags = (uint8_t)flags;
    m->len = (uint32_t)len;
    m->seq = 0;
    m->accepted_at = 0; /* a published message's producer sets it (msg.h) */
    memcpy(m->_data + DW_MSG_HDR_ROOM, json, len);
    m->_data[DW_MSG_HDR_ROOM + len] = '\0';

    /* RFC 6455 5.2: FIN + text opcode, then a 7-, 16- or 64-bit length, no mask. */
    if (len < 126) {
        m->hdr_len = 2;
        h = m->_data + DW_MSG_HDR_ROOM - 2;
        h[1] = (unsigned char)len;
    } else if (len <= 0xffff) {
        m->hdr_len = 4;
        h = m->_data + DW_MSG_HDR_ROOM - 4;
        h[1] = 126;
        h[2] = (unsigned char)(len >> 8);
        h[3] = (unsigned char)len;
    } else {
        m->hdr_len = 10;
        h = m->_data;
        h[1] = 127;
        for (int i = 0; i < 8; i++)
            h[2 + i] = (unsigned char)((uint64_t)len >> (56 - 8 * i));
    }
    h[0] = 0x81;
    return m;
}

const char *dw_msg_render(struct json_object *obj, size_t *len)
{
    if (!json_object_object_get_ex(obj, "timestamp", NULL)) {
        char ts[DW_TIME_ISO_LEN];

        dw_time_format_iso(ts, dw_now_realtime_ns());
        json_object_object_add(obj, "timestamp", json_object_new_string(ts));
    }
    return json_object_to_json_string_length(
        obj, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, len);
}

struct dw_msg *dw_msg_new_json(enum dw_msg_type type, unsigned flags, struct json_object *obj)
{
    size_t len;
    const char *text = dw_msg_render(obj, &len);

    return dw_msg_new_text(type, flags, text, len);
}

void dw_msg_unref_n(struct dw_msg *m, unsigned n)
{
    /* acq_rel: the thread that frees sees every earlier holder's reads as done. */
    unsigned old = atomic_fetch_sub_explicit(&m->_refs, n, memory_order_acq_rel);

    if (old < n)
        dw_panic("message refcount underflow (%u - %u)", old, n);
    if (old == n)
        free(m);
}
