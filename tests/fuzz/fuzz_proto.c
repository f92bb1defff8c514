/*
 * fuzz_proto — libFuzzer target: one client text frame through the command parser
 * (dw_proto_parse, src/proto.c) and the reply the I/O thread builds for it.
 *
 * Beyond "no crash, no leak, no undefined behaviour", each input checks that:
 *   - every command but get_stats (answered from the hub, not here) gets a well-formed reply
 *     (fuzz_util.h: RFC 8259 JSON, and UTF-8 when the frame was, since lws refuses a text
 *     frame that is not), an invalid one with an error code and message;
 *   - an ack echoes the object as it was parsed (docs/protocol.md: "received is the object as
 *     sent");
 *   - a subscribe or unsubscribe names a channel matching the documented pattern;
 *   - the channel and user id checks, given the input as a C string, agree with the patterns
 *     [A-Za-z0-9_.:-]{1,64} and [A-Za-z0-9_.:@-]{1,128}.
 * The frame is passed as libFuzzer holds it, with no copy and no NUL after it, as lws hands a
 * frame over, so ASan sees any read past its end. How to run: tests/fuzz/README.md.
 */
#include "dealwire/jwt.h"
#include "dealwire/msg.h"
#include "dealwire/proto.h"
#include "fuzz_util.h"

#include <assert.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The characters of docs/protocol.md's name patterns, written independently of src/proto.c:
 * the two must agree. User ids also allow '@'. */
#define NAME_CHARS "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.:-"

static bool matches(const char *s, const char *chars, size_t max)
{
    size_t n = strlen(s);

    return n >= 1 && n <= max && strspn(s, chars) == n;
}

/* The input up to its first NUL, cut just past the longest valid name, as a name. */
static void check_names(const uint8_t *data, size_t size)
{
    char name[DW_USER_ID_MAX + 2];
    size_t n = size < sizeof(name) - 1 ? size : sizeof(name) - 1;

    memcpy(name, data, n);
    name[n] = '\0';
    assert(dw_proto_channel_is_valid(name) == matches(name, NAME_CHARS, DW_CHANNEL_MAX));
    assert(dw_proto_user_id_is_valid(name) == matches(name, NAME_CHARS "@", DW_USER_ID_MAX));
}

/* What src/conn.c answers cmd with, as far as proto builds it; NULL for get_stats and ack. */
static struct dw_msg *reply(const struct dw_cmd *cmd)
{
    switch (cmd->kind) {
    case DW_CMD_INVALID:
        assert(cmd->error_code && cmd->error_message);
        return dw_proto_error(cmd->error_code, cmd->error_message);
    case DW_CMD_PING:
        return dw_proto_pong();
    case DW_CMD_SUBSCRIBE:
    case DW_CMD_UNSUBSCRIBE:
        assert(cmd->channel && matches(cmd->channel, NAME_CHARS, DW_CHANNEL_MAX));
        return dw_proto_subscription_notice(cmd->channel, cmd->kind == DW_CMD_SUBSCRIBE);
    case DW_CMD_GET_STATS:
        return NULL;
    case DW_CMD_ACK:
        assert(cmd->seq >= 1); /* answered with nothing */
        return NULL;
    case DW_CMD_RESUME:
        assert(cmd->seq >= 0); /* answered by the replay (replay.c) */
        return NULL;
    case DW_CMD_REFRESH:
        /* the token verified by the connection's verifier (conn.c); answered, when taken,
         * with the refresh notice */
        assert(cmd->token && cmd->token_len >= 1 && cmd->token_len <= DW_JWT_MAX_LEN);
        return dw_proto_refresh_notice("2026-12-07T04:20:00.000000Z");
    case DW_CMD_OTHER:
        return dw_proto_ack(cmd->obj);
    }
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct dw_cmd cmd;
    enum dw_cmd_kind kind = dw_proto_parse((const char *)data, size, &cmd);
    struct json_object *sent, *received;
    struct dw_msg *m;

    assert(kind == cmd.kind);
    if (kind != DW_CMD_INVALID)
        assert(json_object_is_type(cmd.obj, json_type_object));

    m = reply(&cmd);
    if (m) {
        sent = fuzz_check_msg(m, fuzz_is_utf8(data, size));
        if (kind == DW_CMD_OTHER) {
            received = json_object_object_get(sent, "received");
            assert(received && json_object_equal(received, cmd.obj));
        }
        json_object_put(sent);
        dw_msg_unref(m);
    }
    dw_cmd_release(&cmd);

    check_names(data, size);
    return 0;
}
