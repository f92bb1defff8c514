/*
 * proto — DESIGN: everything a client can send is parsed here, strictly and with bounded
 * depth, before the I/O thread acts on it. A frame that is not JSON, not an object, or has no
 * string "type" becomes DW_CMD_INVALID with a code the client can act on; nothing a client
 * sends can crash or stall the daemon.
 *
 * json-c does the parsing, and is more lenient than RFC 8259: it takes NaN, "1.", "-012",
 * raw control characters in strings, and it clamps integers past 64 bits without a word.
 * So after json-c succeeds, two checks refuse what it should have: a walk of the parsed
 * values for doubles (json-c keeps their text, so the text is checked), and one pass over the
 * raw text (scan_text) for integers and strings, which json-c does not keep as written. The
 * pass tracks the path of the current value so that an error can name its field.
 */
#define DW_LOG_MODULE "proto"
#include "dealwire/proto.h"
#include "dealwire/jwt.h"
#include "dealwire/msg.h"

#include <errno.h>
#include <stdint.h>
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

/* {"type":"refresh","token":"..."}: a string of 1 to DW_JWT_MAX_LEN bytes (what it holds is
 * for the connection's verifier to judge). */
static enum dw_cmd_kind parse_refresh(struct dw_cmd *cmd)
{
    struct json_object *token;
    int len;

    if (!json_object_object_get_ex(cmd->obj, "token", &token) ||
        !json_object_is_type(token, json_type_string))
        return invalid(cmd, "invalid_token", "\"token\" must be a string");
    len = json_object_get_string_len(token);
    if (len < 1 || len > DW_JWT_MAX_LEN)
        return invalid(cmd, "invalid_token", "\"token\" must be 1-8192 characters");
    cmd->token = json_object_get_string(token);
    cmd->token_len = (size_t)len;
    cmd->kind = DW_CMD_REFRESH;
    return DW_CMD_REFRESH;
}

/* {"type":"ack","seq":N} (N from 1) and {"type":"resume","last_seq":N} (N from 0): N a whole
 * number up to 2^63 - 1 in member name. */
static enum dw_cmd_kind parse_seq_cmd(struct dw_cmd *cmd, enum dw_cmd_kind kind, const char *name,
                                      int64_t min, const char *error)
{
    struct json_object *v;
    int64_t seq;

    if (!json_object_object_get_ex(cmd->obj, name, &v) || !json_object_is_type(v, json_type_int))
        return invalid(cmd, "invalid_message", error);
    seq = json_object_get_int64(v);
    /* json-c keeps integers up to 2^64 - 1; get_int64 clamps those above 2^63 - 1. */
    if (seq < min || (seq == INT64_MAX && json_object_get_uint64(v) > (uint64_t)INT64_MAX))
        return invalid(cmd, "invalid_message", error);
    cmd->seq = seq;
    cmd->kind = kind;
    return cmd->kind;
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

/* ------------------------------------------------------------------------------------------
 * The pass over the raw text
 * ------------------------------------------------------------------------------------------ */

static const char msg_syntax[] = "not valid JSON";
static const char msg_control[] = "unescaped control character in a string";
static const char msg_range[] = "integer outside the 64-bit range: send it as a string";
static const char msg_minus_zero[] = "-0 would arrive as 0: send 0, or -0.0 for a negative zero";

/* One open container: an array and the index of its current element, or an object and the
 * key of its current member (as written, between the quotes). */
struct level {
    const char *key;
    size_t key_len;
    size_t index;
    bool is_array;
    bool want_key; /* object: the next string is a key */
};

struct scan {
    const char *p, *end;
    bool exact; /* refuse integers json-c does not keep as written */
    int depth;
    struct level open[DW_JSON_DEPTH_MAX];
};

/* The field path being built: at most DW_JSON_FIELD_MAX - 4 bytes, so "..." and the NUL fit
 * after a cut. */
struct path {
    char *buf;
    size_t len;
    bool cut;
};

/* Appends n bytes that must not be split (one UTF-8 character, an escape, an index). */
static void path_put(struct path *pt, const char *s, size_t n)
{
    if (pt->cut || pt->len + n > DW_JSON_FIELD_MAX - 4) {
        pt->cut = true;
        return;
    }
    memcpy(pt->buf + pt->len, s, n);
    pt->len += n;
}

/* Appends a key as written, one character at a time; the text is valid UTF-8 (is_utf8). */
static void path_put_key(struct path *pt, const char *key, size_t n)
{
    size_t i = 0;

    while (i < n && !pt->cut) {
        unsigned char c = (unsigned char)key[i];
        size_t k = c < 0x80 ? 1 : c < 0xe0 ? 2 : c < 0xf0 ? 3 : 4;
        char esc[8];

        if (c < 0x20) {
            snprintf(esc, sizeof(esc), "\\u%04x", c);
            path_put(pt, esc, 6);
        } else {
            path_put(pt, key + i, k < n - i ? k : n - i);
        }
        i += k;
    }
}

/* Fills err with kind, message and the path of the value the scan is at. */
static int scan_fail(const struct scan *s, struct dw_json_error *err, enum dw_json_error_kind kind,
                     const char *message)
{
    struct path pt = {err->field, 0, false};
    char index[24];

    err->kind = kind;
    err->message = message;
    for (int i = 0; i < s->depth; i++) {
        const struct level *l = &s->open[i];

        if (l->is_array) {
            snprintf(index, sizeof(index), "[%zu]", l->index);
            path_put(&pt, index, strlen(index));
        } else if (l->key) {
            if (pt.len > 0)
                path_put(&pt, ".", 1);
            path_put_key(&pt, l->key, l->key_len);
        }
    }
    if (pt.cut) {
        if (pt.len > 0 && err->field[pt.len - 1] == '.')
            pt.len--; /* a separator with nothing after it */
        memcpy(err->field + pt.len, "...", 3);
        pt.len += 3;
    }
    err->field[pt.len] = '\0';
    return -EINVAL;
}

/* At the opening quote of a string: moves past the closing one, and sets *content and *n to
 * the bytes between. Returns false if one of them is a control character. */
static bool scan_string(struct scan *s, const char **content, size_t *n)
{
    const char *start = ++s->p;
    bool clean = true;

    while (s->p < s->end && *s->p != '"') {
        /* json-c checked the escapes; skipping past the backslash is enough to find the end. */
        if (*s->p == '\\' && s->end - s->p > 1)
            s->p++;
        if ((unsigned char)*s->p < 0x20)
            clean = false;
        s->p++;
    }
    *content = start;
    *n = (size_t)(s->p - start);
    if (s->p < s->end)
        s->p++;
    return clean;
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static bool is_number_char(char c)
{
    return is_digit(c) || c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E';
}

/* At the first character of a number: moves past it and checks it if it is an integer
 * (no '.', 'e' or 'E'). Its range is compared as a digit string, so nothing can overflow. */
static int scan_number(struct scan *s, struct dw_json_error *err)
{
    const char *start = s->p, *digits = start + (*start == '-');
    bool is_integer = true;
    size_t n;

    while (s->p < s->end && is_number_char(*s->p)) {
        if (*s->p == '.' || *s->p == 'e' || *s->p == 'E')
            is_integer = false;
        s->p++;
    }
    if (!is_integer)
        return 0; /* a double: numbers_are_json checked its text, which json-c keeps */
    n = (size_t)(s->p - digits);
    for (size_t i = 0; i < n; i++)
        if (!is_digit(digits[i]))
            return scan_fail(s, err, DW_JSON_ERR_SYNTAX, msg_syntax);
    /* json-c reads "00" and "-012" as 0 and -12. */
    if (n == 0 || (digits[0] == '0' && n > 1))
        return scan_fail(s, err, DW_JSON_ERR_SYNTAX, msg_syntax);
    if (!s->exact)
        return 0;
    if (digits == start) {
        if (n > 20 || (n == 20 && memcmp(digits, "18446744073709551615", 20) > 0))
            return scan_fail(s, err, DW_JSON_ERR_NUMBER, msg_range);
    } else {
        if (n > 19 || (n == 19 && memcmp(digits, "9223372036854775808", 19) > 0))
            return scan_fail(s, err, DW_JSON_ERR_NUMBER, msg_range);
        if (n == 1 && digits[0] == '0')
            return scan_fail(s, err, DW_JSON_ERR_NUMBER, msg_minus_zero);
    }
    return 0;
}

/* One pass over text that json-c parsed: refuses control characters in strings and
 * integers json-c did not keep as written (see scan_number). Only structure is tracked:
 * json-c already checked the syntax, so anything else (whitespace, true, false, null) is
 * skipped. */
static int scan_text(struct scan *s, struct dw_json_error *err)
{
    while (s->p < s->end) {
        struct level *top = s->depth > 0 ? &s->open[s->depth - 1] : NULL;
        const char *content;
        size_t n;
        bool clean;
        int r;

        switch (*s->p) {
        case '{':
        case '[':
            /* json-c's depth bound keeps this from happening; do not trust it blindly. */
            if (s->depth == DW_JSON_DEPTH_MAX)
                return scan_fail(s, err, DW_JSON_ERR_SYNTAX, msg_syntax);
            s->open[s->depth++] =
                (struct level){.is_array = *s->p == '[', .want_key = *s->p == '{'};
            s->p++;
            break;
        case '}':
        case ']':
            if (s->depth > 0)
                s->depth--;
            s->p++;
            break;
        case ',':
            if (top && top->is_array)
                top->index++;
            else if (top)
                top->want_key = true;
            s->p++;
            break;
        case '"':
            clean = scan_string(s, &content, &n);
            if (top && top->want_key) {
                top->key = content;
                top->key_len = n;
                top->want_key = false;
            }
            if (!clean)
                return scan_fail(s, err, DW_JSON_ERR_CONTROL_CHAR, msg_control);
            break;
        default:
            if (*s->p == '-' || is_digit(*s->p)) {
                r = scan_number(s, err);
                if (r < 0)
                    return r;
            } else {
                s->p++;
            }
            break;
        }
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------
 * Parsing
 * ------------------------------------------------------------------------------------------ */

static int parse_json(const char *text, size_t len, int depth, bool exact, struct json_object **out,
                      struct dw_json_error *err)
{
    struct json_tokener *tok;
    struct json_object *obj;
    enum json_tokener_error jerr;
    struct scan s;
    size_t end;
    int r;

    *out = NULL;
    err->kind = DW_JSON_ERR_SYNTAX;
    err->message = msg_syntax;
    err->field[0] = '\0';
    if (depth < 1 || depth > DW_JSON_DEPTH_MAX)
        return -EINVAL;
    if (len > (size_t)INT32_MAX || !is_utf8((const unsigned char *)text, len))
        return -EINVAL;
    tok = json_tokener_new_ex(depth);
    if (!tok)
        return -ENOMEM;
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
    obj = json_tokener_parse_ex(tok, text, (int)len);
    jerr = json_tokener_get_error(tok);
    end = json_tokener_get_parse_end(tok);
    if (jerr == json_tokener_continue) {
        /* A bare number (or nothing) at the end: the terminator tells json-c it is over. */
        obj = json_tokener_parse_ex(tok, "", 1);
        jerr = json_tokener_get_error(tok);
        end = len;
    }
    json_tokener_free(tok);
    while (jerr == json_tokener_success && end < len && is_space(text[end]))
        end++;
    if (jerr != json_tokener_success || end != len || !numbers_are_json(obj)) {
        json_object_put(obj);
        return -EINVAL;
    }
    s.p = text;
    s.end = text + len;
    s.exact = exact;
    s.depth = 0;
    r = scan_text(&s, err);
    if (r < 0) {
        json_object_put(obj);
        return r;
    }
    *out = obj;
    return 0;
}

int dw_proto_parse_json_ex(const char *text, size_t len, int depth, struct json_object **out,
                           struct dw_json_error *err)
{
    struct dw_json_error ignored;

    return parse_json(text, len, depth, true, out, err ? err : &ignored);
}

int dw_proto_parse_json(const char *text, size_t len, int depth, struct json_object **out)
{
    struct dw_json_error ignored;

    return parse_json(text, len, depth, false, out, &ignored);
}

/* Refuses a frame that dw_proto_parse_json_ex refused, naming the field when it is known. */
static enum dw_cmd_kind invalid_json(struct dw_cmd *cmd, const struct dw_json_error *err)
{
    const char *code = err->kind == DW_JSON_ERR_NUMBER ? "invalid_number" : "invalid_json";

    if (err->kind == DW_JSON_ERR_SYNTAX)
        return invalid(cmd, code, "message is not valid JSON");
    snprintf(cmd->_error_text, sizeof(cmd->_error_text), "%s%s%s%s%s",
             err->kind == DW_JSON_ERR_CONTROL_CHAR ? "message is not valid JSON: " : "",
             err->message, err->field[0] ? " (field \"" : "", err->field,
             err->field[0] ? "\")" : "");
    return invalid(cmd, code, cmd->_error_text);
}

enum dw_cmd_kind dw_proto_parse(const char *text, size_t len, struct dw_cmd *cmd)
{
    struct dw_json_error err;
    struct json_object *type;
    const char *name;

    memset(cmd, 0, sizeof(*cmd));
    if (dw_proto_parse_json_ex(text, len, PARSE_DEPTH, &cmd->obj, &err) < 0)
        return invalid_json(cmd, &err);

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
    else if (strcmp(name, "ack") == 0)
        return parse_seq_cmd(cmd, DW_CMD_ACK, "seq", 1, "\"seq\" must be a positive integer");
    else if (strcmp(name, "resume") == 0)
        return parse_seq_cmd(cmd, DW_CMD_RESUME, "last_seq", 0,
                             "\"last_seq\" must be an integer of at least 0");
    else if (strcmp(name, "refresh") == 0)
        return parse_refresh(cmd);
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

/* {"type":"notification","message":...,"level":...,"action":...}, the answer to a command
 * that was taken; the caller adds what is particular to it. */
static struct json_object *new_notice(const char *message, const char *level, const char *action)
{
    struct json_object *obj = new_typed(DW_MSG_NOTIFICATION);

    json_object_object_add(obj, "message", json_object_new_string(message));
    json_object_object_add(obj, "level", json_object_new_string(level));
    json_object_object_add(obj, "action", json_object_new_string(action));
    return obj;
}

struct dw_msg *dw_proto_refresh_notice(const char *expires_iso)
{
    struct json_object *obj = new_notice("Token refreshed", "success", "refresh");

    json_object_object_add(obj, "token_expires_at", json_object_new_string(expires_iso));
    return finish(DW_MSG_NOTIFICATION, obj);
}

/* The subscription notice; by_server: the operator API made the change (it says so). */
static struct dw_msg *subscription_notice(const char *channel, bool subscribed, bool by_server)
{
    struct json_object *obj;
    char text[DW_CHANNEL_MAX + 60];

    snprintf(text, sizeof(text),
             subscribed ? "Subscribed to %s updates%s" : "Unsubscribed from %s updates%s", channel,
             by_server ? " by the server" : "");
    obj =
        new_notice(text, subscribed ? "success" : "info", subscribed ? "subscribe" : "unsubscribe");
    json_object_object_add(obj, "channel", json_object_new_string(channel));
    if (by_server)
        json_object_object_add(obj, "by", json_object_new_string("server"));
    return finish(DW_MSG_NOTIFICATION, obj);
}

struct dw_msg *dw_proto_subscription_notice(const char *channel, bool subscribed)
{
    return subscription_notice(channel, subscribed, false);
}

struct dw_msg *dw_proto_server_subscription_notice(const char *channel, bool subscribed)
{
    return subscription_notice(channel, subscribed, true);
}
