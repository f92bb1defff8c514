/*
 * proto — DESIGN: everything a client can send is parsed here, strictly and with bounded
 * depth, before the I/O thread acts on it. A frame that is not JSON, not an object, or has no
 * string "type" becomes DW_CMD_INVALID with a code the client can act on; nothing a client
 * sends can crash or stall the daemon.
 */
#define DW_LOG_MODULE "proto"
#include "dealwire/proto.h"
#include "dealwire/msg.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <json-c/json.h>

/* Deep nesting buys a client nothing; refuse it early. */
#define PARSE_DEPTH 16

static bool name_is_valid(const char *s, size_t max, const char *extra)
{
    size_t n = 0;

    for (; s[n]; n++) {
        unsigned char c = (unsigned char)s[n];

        if (n >= max)
            return false;
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))
            continue;
        if (!strchr(extra, c))
            return false;
    }
    return n > 0;
}

bool dw_proto_channel_is_valid(const char *name)
{
    return name_is_valid(name, DW_CHANNEL_MAX, "_.:-");
}

bool dw_proto_user_id_is_valid(const char *id)
{
    return name_is_valid(id, DW_USER_ID_MAX, "_.:@-");
}

const char *dw_proto_json_string(struct json_object *v)
{
    const char *s;

    if (!json_object_is_type(v, json_type_string))
        return NULL;
    s = json_object_get_string(v);
    if (strlen(s) != (size_t)json_object_get_string_len(v))
        return NULL;
    return s;
}

static enum dw_cmd_kind invalid(struct dw_cmd *cmd, const char *code, const char *message)
{
    cmd->kind = DW_CMD_INVALID;
    cmd->error_code = code;
    cmd->error_message = message;
    return cmd->kind;
}

static enum dw_cmd_kind parse_channel_cmd(struct dw_cmd *cmd, enum dw_cmd_kind kind)
{
    struct json_object *ch;

    if (!json_object_object_get_ex(cmd->obj, "channel", &ch) ||
        !json_object_is_type(ch, json_type_string))
        return invalid(cmd, "invalid_channel", "\"channel\" must be a string");
    cmd->channel = dw_proto_json_string(ch);
    if (!cmd->channel || !dw_proto_channel_is_valid(cmd->channel))
        return invalid(cmd, "invalid_channel",
                       "channel names are 1-64 characters of A-Z a-z 0-9 _ . : -");
    cmd->kind = kind;
    return kind;
}

/* Is s a JSON number (RFC 8259)? json-c's strict mode also takes NaN, Infinity, "1." and
 * "02.1", and would print them back as read. */
static bool number_is_json(const char *s)
{
    if (*s == '-')
        s++;
    if (*s == '0')
        s++;
    else if (*s >= '1' && *s <= '9')
        while (*s >= '0' && *s <= '9')
            s++;
    else
        return false;
    if (*s == '.') {
        if (!(*++s >= '0' && *s <= '9'))
            return false;
        while (*s >= '0' && *s <= '9')
            s++;
    }
    if (*s == 'e' || *s == 'E') {
        s++;
        if (*s == '+' || *s == '-')
            s++;
        if (!(*s >= '0' && *s <= '9'))
            return false;
        while (*s >= '0' && *s <= '9')
            s++;
    }
    return *s == '\0';
}

static bool numbers_are_json(struct json_object *v)
{
    switch (json_object_get_type(v)) {
    case json_type_double:
        return number_is_json(json_object_to_json_string(v));
    case json_type_array:
        for (size_t i = 0; i < json_object_array_length(v); i++)
            if (!numbers_are_json(json_object_array_get_idx(v, i)))
                return false;
        return true;
    case json_type_object: {
        json_object_object_foreach(v, key, val)
        {
            (void)key;
            if (!numbers_are_json(val))
                return false;
        }
        return true;
    }
    default:
        return true;
    }
}

/* RFC 3629 UTF-8: json-c's JSON_TOKENER_VALIDATE_UTF8 lets overlong forms, surrogates and
 * code points past U+10FFFF through, and a browser fails a connection on such a text frame. */
static bool is_utf8(const unsigned char *s, size_t n)
{
    size_t i = 0;

    while (i < n) {
        unsigned char c = s[i];
        unsigned char lo = 0x80, hi = 0xbf;
        size_t k;

        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xc2 && c <= 0xdf)
            k = 1;
        else if (c >= 0xe0 && c <= 0xef)
            k = 2;
        else if (c >= 0xf0 && c <= 0xf4)
            k = 3;
        else
            return false;
        if (c == 0xe0)
            lo = 0xa0;
        else if (c == 0xed)
            hi = 0x9f;
        else if (c == 0xf0)
            lo = 0x90;
        else if (c == 0xf4)
            hi = 0x8f;
        if (n - i <= k || s[i + 1] < lo || s[i + 1] > hi)
            return false;
        for (size_t t = 2; t <= k; t++)
            if ((s[i + t] & 0xc0) != 0x80)
                return false;
        i += k + 1;
    }
    return true;
}

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

int dw_proto_parse_json(const char *text, size_t len, int depth, struct json_object **out)
{
    struct json_tokener *tok;
    struct json_object *obj;
    enum json_tokener_error err;
    size_t end;

    *out = NULL;
    if (len > (size_t)INT32_MAX || !is_utf8((const unsigned char *)text, len))
        return -EINVAL;
    tok = json_tokener_new_ex(depth);
    if (!tok)
        return -ENOMEM;
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
    obj = json_tokener_parse_ex(tok, text, (int)len);
    err = json_tokener_get_error(tok);
    end = json_tokener_get_parse_end(tok);
    if (err == json_tokener_continue) {
        /* A bare number (or nothing) at the end: the terminator tells json-c it is over. */
        obj = json_tokener_parse_ex(tok, "", 1);
        err = json_tokener_get_error(tok);
        end = len;
    }
    json_tokener_free(tok);
    while (err == json_tokener_success && end < len && is_space(text[end]))
        end++;
    if (err != json_tokener_success || end != len || !numbers_are_json(obj)) {
        json_object_put(obj);
        return -EINVAL;
    }
    *out = obj;
    return 0;
}

enum dw_cmd_kind dw_proto_parse(const char *text, size_t len, struct dw_cmd *cmd)
{
    struct json_object *type;
    const char *name;

    memset(cmd, 0, sizeof(*cmd));
    if (dw_proto_parse_json(text, len, PARSE_DEPTH, &cmd->obj) < 0)
        return invalid(cmd, "invalid_json", "message is not valid JSON");

    if (!json_object_is_type(cmd->obj, json_type_object))
        return invalid(cmd, "invalid_message", "message must be a JSON object");
    if (!json_object_object_get_ex(cmd->obj, "type", &type) ||
        !json_object_is_type(type, json_type_string))
        return invalid(cmd, "invalid_message", "message needs a string \"type\"");

    name = json_object_get_string(type);
    if (strcmp(name, "ping") == 0)
        cmd->kind = DW_CMD_PING;
    else if (strcmp(name, "subscribe") == 0)
        return parse_channel_cmd(cmd, DW_CMD_SUBSCRIBE);
    else if (strcmp(name, "unsubscribe") == 0)
        return parse_channel_cmd(cmd, DW_CMD_UNSUBSCRIBE);
    else if (strcmp(name, "get_stats") == 0)
        cmd->kind = DW_CMD_GET_STATS;
    else
        cmd->kind = DW_CMD_OTHER;
    return cmd->kind;
}

void dw_cmd_release(struct dw_cmd *cmd)
{
    json_object_put(cmd->obj);
    memset(cmd, 0, sizeof(*cmd));
}

static struct dw_msg *finish(enum dw_msg_type type, struct json_object *obj)
{
    struct dw_msg *m = dw_msg_new_json(type, 0, obj);

    json_object_put(obj);
    return m;
}

static struct json_object *new_typed(enum dw_msg_type type)
{
    struct json_object *obj = json_object_new_object();

    json_object_object_add(obj, "type", json_object_new_string(dw_msg_type_name(type)));
    return obj;
}

struct dw_msg *dw_proto_error(const char *code, const char *message)
{
    struct json_object *obj = new_typed(DW_MSG_ERROR);

    json_object_object_add(obj, "code", json_object_new_string(code));
    json_object_object_add(obj, "message", json_object_new_string(message));
    return finish(DW_MSG_ERROR, obj);
}

struct dw_msg *dw_proto_pong(void)
{
    return finish(DW_MSG_PONG, new_typed(DW_MSG_PONG));
}

struct dw_msg *dw_proto_ack(struct json_object *received)
{
    struct json_object *obj = new_typed(DW_MSG_ACK);

    json_object_object_add(obj, "received", json_object_get(received));
    return finish(DW_MSG_ACK, obj);
}

struct dw_msg *dw_proto_subscription_notice(const char *channel, bool subscribed)
{
    struct json_object *obj = new_typed(DW_MSG_NOTIFICATION);
    char text[DW_CHANNEL_MAX + 40];

    snprintf(text, sizeof(text),
             subscribed ? "Subscribed to %s updates" : "Unsubscribed from %s updates", channel);
    json_object_object_add(obj, "message", json_object_new_string(text));
    json_object_object_add(obj, "level", json_object_new_string(subscribed ? "success" : "info"));
    json_object_object_add(obj, "action",
                           json_object_new_string(subscribed ? "subscribe" : "unsubscribe"));
    json_object_object_add(obj, "channel", json_object_new_string(channel));
    return finish(DW_MSG_NOTIFICATION, obj);
}
