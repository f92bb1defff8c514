/*
 * proto — the client-to-server half of the wire protocol: parsing a client's text frame into
 * a command, validating names, and building the small replies (pong, ack, error, notice).
 *
 * Pure functions with no connection state: they take bytes and return values, so they can be
 * unit-tested and fuzzed alone. thread: any.
 */
#ifndef DEALWIRE_PROTO_H
#define DEALWIRE_PROTO_H

#include <stdbool.h>
#include <stdint.h>
#include <stddef.h>

struct json_object;
struct dw_msg;

/* Longest accepted channel and user names. */
#define DW_CHANNEL_MAX 64
#define DW_USER_ID_MAX 128

/* Room for the field path of a JSON error, NUL included; a longer path is cut and ends in
 * "...". */
#define DW_JSON_FIELD_MAX 128

/* Largest depth argument of dw_proto_parse_json and dw_proto_parse_json_ex. */
#define DW_JSON_DEPTH_MAX 64

/* Why dw_proto_parse_json_ex refused a text. */
enum dw_json_error_kind {
    DW_JSON_ERR_SYNTAX = 1,   /* not one JSON value: syntax, UTF-8, depth, trailing data */
    DW_JSON_ERR_CONTROL_CHAR, /* an unescaped U+0000..U+001F in a string or a key */
    DW_JSON_ERR_NUMBER,       /* an integer that cannot be kept as written (outside 64 bits, -0) */
};

/* Where and why a text was refused. field is the path of the value, in the style of the
 * publish API's validation errors: "message.price", "[3].message.price" (an element of a root
 * array), "items[2]" (nested arrays). Keys appear as written between their quotes, with a raw
 * control character shown as \u00XX. field is "" for the root value and when the place is
 * unknown (most syntax errors). */
struct dw_json_error {
    enum dw_json_error_kind kind;
    const char *message; /* static text, e.g. "integer outside the 64-bit range: ..." */
    char field[DW_JSON_FIELD_MAX];
};

enum dw_cmd_kind {
    DW_CMD_INVALID = 0, /* see error_code / error_message */
    DW_CMD_PING,
    DW_CMD_SUBSCRIBE,
    DW_CMD_UNSUBSCRIBE,
    DW_CMD_GET_STATS,
    DW_CMD_ACK,     /* "ack" with "seq": the user's messages through seq were handled */
    DW_CMD_RESUME,  /* "resume" with "last_seq": replay the user's messages after it */
    DW_CMD_REFRESH, /* "refresh" with "token": a new token for the connection (JWT auth) */
    DW_CMD_OTHER,   /* any other "type": acknowledged with an echo */
};

struct dw_cmd {
    enum dw_cmd_kind kind;
    struct json_object *obj; /* the parsed frame, owned; NULL when it did not parse */
    const char *channel;     /* subscribe/unsubscribe: borrowed from obj, validated */
    int64_t seq;             /* ack: 1 .. INT64_MAX; resume (its last_seq): 0 .. INT64_MAX */
    const char *token;       /* refresh: borrowed from obj, token_len bytes (1 .. 8192) */
    size_t token_len;
    const char *error_code;    /* DW_CMD_INVALID: "invalid_json", "invalid_number", ... */
    const char *error_message; /* static, or in _error_text: valid until dw_cmd_release */
    char _error_text[DW_JSON_FIELD_MAX + 96];
};

/* thread: any. Parses one client text frame (len bytes, need not be NUL-terminated). Always
 * fills cmd; release it with dw_cmd_release(). Returns cmd->kind. */
enum dw_cmd_kind dw_proto_parse(const char *text, size_t len, struct dw_cmd *cmd);

/* thread: any. Parses text (len bytes, need not be NUL-terminated) as exactly one JSON value
 * (RFC 8259, UTF-8, at most depth levels deep, 1 <= depth <= DW_JSON_DEPTH_MAX, surrounding
 * whitespace allowed) that json-c keeps as written: every integer is in [-2^63, 2^64 - 1] and
 * is not -0 (json-c would clamp it, or make it 0); other numbers keep their text. Returns 0
 * and sets *out to a new object (NULL for the JSON value null). Otherwise returns -EINVAL
 * (-ENOMEM if json-c could not allocate), sets *out to NULL and, when err is not NULL, fills
 * *err. Anything the daemon echoes or delivers to clients is parsed with this function. */
int dw_proto_parse_json_ex(const char *text, size_t len, int depth, struct json_object **out,
                           struct dw_json_error *err);

/* thread: any. dw_proto_parse_json_ex without the error, and lenient about integers that
 * json-c cannot keep as written: those are accepted, clamped to [-2^63, 2^64 - 1] (-0 reads
 * as 0). Only for callers that read numbers and check their range themselves (JWT claims,
 * planner requests); never for text whose numbers are passed on. */
int dw_proto_parse_json(const char *text, size_t len, int depth, struct json_object **out);

/* thread: any. Frees what cmd owns. */
void dw_cmd_release(struct dw_cmd *cmd);

/* thread: any. The string value of v when it is a JSON string with no NUL inside (so that the
 * C string is the whole value), else NULL. Borrowed from v. */
const char *dw_proto_json_string(struct json_object *v);

/* thread: any. Is name a valid channel name ([A-Za-z0-9_.:-]{1,64})? */
bool dw_proto_channel_is_valid(const char *name);

/* thread: any. Is id a valid user id ([A-Za-z0-9_.:@-]{1,128})? */
bool dw_proto_user_id_is_valid(const char *id);

/* thread: any. {"type":"error","code":code,"message":message,"timestamp":...}. Returns a new
 * message with one reference. */
struct dw_msg *dw_proto_error(const char *code, const char *message);

/* thread: any. {"type":"pong","timestamp":...}. Returns a new message with one reference. */
struct dw_msg *dw_proto_pong(void);

/* thread: any. {"type":"ack","received":obj,...}; obj is borrowed. New reference. */
struct dw_msg *dw_proto_ack(struct json_object *received);

/* thread: any. The notification answering subscribe (subscribed = true) or unsubscribe.
 * Returns a new message with one reference. */
struct dw_msg *dw_proto_subscription_notice(const char *channel, bool subscribed);

/* thread: any. The same notification when the operator API (re)moved the subscription: its
 * message says "by the server" and it has "by": "server". A new message with one reference. */
struct dw_msg *dw_proto_server_subscription_notice(const char *channel, bool subscribed);

/* thread: any. The notification answering a refresh that was taken: the connection is now
 * closed (4001) at expires_iso, an ISO 8601 time. Returns a new message with one reference. */
struct dw_msg *dw_proto_refresh_notice(const char *expires_iso);

#endif
