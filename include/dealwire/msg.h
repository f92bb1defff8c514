/*
 * msg — a server-to-client message: JSON text rendered once, framed once as a WebSocket text
 * frame, immutable afterwards and shared by every recipient through an atomic refcount.
 *
 * Synchronization: any thread may create, ref and unref a message. Nobody writes to a message
 * after dw_msg_new_*() returns, so readers need no lock. The last unref frees it.
 */
#ifndef DEALWIRE_MSG_H
#define DEALWIRE_MSG_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

struct json_object;

/* Server-to-client message types (the "type" field). */
enum dw_msg_type {
    DW_MSG_CONNECTION_ESTABLISHED = 0,
    DW_MSG_DEAL_ALERT,
    DW_MSG_PRICE_ALERT,
    DW_MSG_TRIP_UPDATE,
    DW_MSG_NOTIFICATION,
    DW_MSG_PONG,
    DW_MSG_ACK,
    DW_MSG_ERROR,
    DW_MSG_STATS,
    DW_MSG_RESUMED,
    DW_MSG__COUNT
};

/* Message flags. A critical message is never dropped by an outbox that overflows. */
#define DW_MSG_F_CRITICAL 0x01u

/* Room reserved in front of the payload for the longest WebSocket frame header. */
#define DW_MSG_HDR_ROOM 10

struct dw_msg {
    _Atomic unsigned _refs;
    uint8_t type;        /* enum dw_msg_type */
    uint8_t flags;       /* DW_MSG_F_* */
    uint8_t hdr_len;     /* bytes of frame header in front of the payload: 2, 4 or 10 */
    uint32_t len;        /* payload (JSON text) length, without the trailing NUL */
    int64_t seq;         /* the user's seq of a message from the durable inbox (inbox.h), else 0 */
    int64_t accepted_at; /* a published message: monotonic ns when it was built, set by its
                          * producer before it is shared (/metrics' delivery latency); else 0 */
    /* DW_MSG_HDR_ROOM bytes of which the last hdr_len are the frame header, then the payload
     * and a NUL. */
    unsigned char _data[];
};

/* thread: any. Makes a message from JSON text (len bytes, copied). Returns a new message with
 * one reference, owned by the caller. */
struct dw_msg *dw_msg_new_text(enum dw_msg_type type, unsigned flags, const char *json, size_t len);

/* thread: any. Renders obj as every message is rendered: adds a "timestamp" member first when
 * it has none, then plain JSON, no escaped slashes. Returns the text (*len bytes), owned by obj
 * and valid until obj changes or is freed. */
const char *dw_msg_render(struct json_object *obj, size_t *len);

/* thread: any. Renders obj (borrowed for the duration of the call) once (dw_msg_render) and
 * makes a message of it. Returns a new message with one reference, owned by the caller. */
struct dw_msg *dw_msg_new_json(enum dw_msg_type type, unsigned flags, struct json_object *obj);

/* thread: any. Takes n more references on m. */
static inline void dw_msg_ref_n(struct dw_msg *m, unsigned n)
{
    atomic_fetch_add_explicit(&m->_refs, n, memory_order_relaxed);
}

/* thread: any. Takes one more reference on m. */
static inline void dw_msg_ref(struct dw_msg *m)
{
    dw_msg_ref_n(m, 1);
}

/* thread: any. Drops n references; the last one frees the message. Dropping more references
 * than were taken is a bug and panics. */
void dw_msg_unref_n(struct dw_msg *m, unsigned n);

/* thread: any. Drops one reference; the last one frees the message. */
static inline void dw_msg_unref(struct dw_msg *m)
{
    dw_msg_unref_n(m, 1);
}

/* thread: any. The whole WebSocket frame (header + payload), valid while a reference is held. */
static inline const unsigned char *dw_msg_frame(const struct dw_msg *m)
{
    return m->_data + DW_MSG_HDR_ROOM - m->hdr_len;
}

/* thread: any. Length of dw_msg_frame(m). */
static inline size_t dw_msg_frame_len(const struct dw_msg *m)
{
    return (size_t)m->hdr_len + m->len;
}

/* thread: any. The JSON text, NUL-terminated, valid while a reference is held. */
static inline const char *dw_msg_payload(const struct dw_msg *m)
{
    return (const char *)m->_data + DW_MSG_HDR_ROOM;
}

/* thread: any. Is m critical (never dropped on overflow)? */
static inline int dw_msg_is_critical(const struct dw_msg *m)
{
    return (m->flags & DW_MSG_F_CRITICAL) != 0;
}

/* thread: any. The wire name of type ("deal_alert", ...), or "?" when out of range. */
const char *dw_msg_type_name(enum dw_msg_type type);

/* thread: any. Parses a wire name. Returns the type, or -EINVAL for an unknown name. */
int dw_msg_type_parse(const char *name);

#endif
