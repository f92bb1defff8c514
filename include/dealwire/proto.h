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
#include <stddef.h>

struct json_object;
struct dw_msg;

/* Longest accepted channel and user names. */
#define DW_CHANNEL_MAX 64
#define DW_USER_ID_MAX 128

enum dw_cmd_kind {
    DW_CMD_INVALID = 0, /* see error_code / error_message */
    DW_CMD_PING,
    DW_CMD_SUBSCRIBE,
    DW_CMD_UNSUBSCRIBE,
    DW_CMD_GET_STATS,
    DW_CMD_OTHER, /* any other "type": acknowledged with an echo */
};

struct dw_cmd {
    enum dw_cmd_kind kind;
    struct json_object *obj; /* the parsed frame, owned; NULL when it did not parse */
    const char *channel;     /* subscribe/unsubscribe: borrowed from obj, validated */
    const char *error_code;  /* DW_CMD_INVALID: "invalid_json", "invalid_message", ... */
    const char *error_message;
};

/* thread: any. Parses one client text frame (len bytes, need not be NUL-terminated). Always
 * fills cmd; release it with dw_cmd_release(). Returns cmd->kind. */
enum dw_cmd_kind dw_proto_parse(const char *text, size_t len, struct dw_cmd *cmd);

/* thread: any. Parses text (len bytes, need not be NUL-terminated) as exactly one JSON value
 * (strict, at most depth levels deep, surrounding whitespace allowed). Returns 0 and sets
 * *out to a new object (NULL for the JSON value null), or -EINVAL when it is not that. */
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

#endif
