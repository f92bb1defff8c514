/*
 * fuzz_util.h — the checks shared by the fuzz targets: whatever a client or publisher sends,
 * what the server queues for a client is one well-formed WebSocket text frame holding one JSON
 * object (RFC 8259, checked here independently of json-c, which is more lenient) whose "type"
 * is the message's type and which carries a "timestamp"; and a text frame must be valid UTF-8
 * (RFC 6455, 8.1: a browser fails the connection otherwise).
 *
 * The targets check with assert(), so they are built without NDEBUG (the fuzz preset).
 */
#ifndef DEALWIRE_FUZZ_UTIL_H
#define DEALWIRE_FUZZ_UTIL_H

#ifdef NDEBUG
#error "the fuzz targets check with assert(): build them without NDEBUG (the fuzz preset)"
#endif

#include "dealwire/msg.h"
#include "dealwire/proto.h"

#include <assert.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include <json-c/json.h>

/* Deep enough for any reply: the parsers' own limits (16, 32) plus the reply's wrapping. */
#define FUZZ_JSON_DEPTH 64

/* Is s (n bytes) valid UTF-8 (RFC 3629: no overlong forms, no surrogates, at most
 * U+10FFFF)? */
static inline bool fuzz_is_utf8(const unsigned char *s, size_t n)
{
    size_t i = 0;

    while (i < n) {
        unsigned char c = s[i];
        uint32_t cp;
        size_t k;

        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xc2 && c <= 0xdf) {
            k = 1;
            cp = c & 0x1f;
        } else if (c >= 0xe0 && c <= 0xef) {
            k = 2;
            cp = c & 0x0f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            k = 3;
            cp = c & 0x07;
        } else {
            return false;
        }
        if (n - i <= k)
            return false;
        for (size_t t = 1; t <= k; t++) {
            if ((s[i + t] & 0xc0) != 0x80)
                return false;
            cp = cp << 6 | (s[i + t] & 0x3f);
        }
        if ((k == 2 && cp < 0x800) || (k == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
            (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += k + 1;
    }
    return true;
}

/* ------------------------------------------------------------------------------------------
 * An RFC 8259 recogniser (grammar only; bytes >= 0x80 in strings are left to fuzz_is_utf8).
 * json-c's strict mode still takes NaN, Infinity and "1.", and prints them back as read.
 * ------------------------------------------------------------------------------------------ */

struct fuzz_json {
    const unsigned char *p, *end;
};

static inline bool fj_value(struct fuzz_json *j, int depth);

static inline void fj_ws(struct fuzz_json *j)
{
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
        j->p++;
}

/* Consumes lit if the text continues with it. */
static inline bool fj_lit(struct fuzz_json *j, const char *lit)
{
    size_t n = strlen(lit);

    if ((size_t)(j->end - j->p) < n || memcmp(j->p, lit, n) != 0)
        return false;
    j->p += n;
    return true;
}

static inline size_t fj_digits(struct fuzz_json *j)
{
    size_t n = 0;

    for (; j->p < j->end && *j->p >= '0' && *j->p <= '9'; j->p++)
        n++;
    return n;
}

/* number = [ "-" ] ( "0" / digit1-9 *digit ) [ "." 1*digit ] [ ("e"/"E") ["+"/"-"] 1*digit ] */
static inline bool fj_number(struct fuzz_json *j)
{
    fj_lit(j, "-");
    if (!fj_lit(j, "0") && fj_digits(j) == 0)
        return false;
    if (fj_lit(j, ".") && fj_digits(j) == 0)
        return false;
    if (fj_lit(j, "e") || fj_lit(j, "E")) {
        if (!fj_lit(j, "+"))
            fj_lit(j, "-");
        if (fj_digits(j) == 0)
            return false;
    }
    return true;
}

static inline bool fj_string(struct fuzz_json *j)
{
    if (!fj_lit(j, "\""))
        return false;
    while (j->p < j->end) {
        unsigned char c = *j->p++;

        if (c == '"')
            return true;
        if (c < 0x20)
            return false;
        if (c != '\\')
            continue;
        if (j->p == j->end)
            return false;
        c = *j->p++;
        if (c == 'u') {
            for (int i = 0; i < 4; i++, j->p++) {
                if (j->p == j->end || *j->p == '\0' || !strchr("0123456789abcdefABCDEF", *j->p))
                    return false;
            }
        } else if (c == '\0' || !strchr("\"\\/bfnrt", c)) {
            return false;
        }
    }
    return false;
}

/* An object or array; j->p is on its '{' or '['. */
static inline bool fj_container(struct fuzz_json *j, int depth)
{
    bool object = *j->p++ == '{';
    const char *close = object ? "}" : "]";

    fj_ws(j);
    if (fj_lit(j, close))
        return true;
    do {
        if (object) {
            fj_ws(j);
            if (!fj_string(j))
                return false;
            fj_ws(j);
            if (!fj_lit(j, ":"))
                return false;
        }
        if (!fj_value(j, depth))
            return false;
        fj_ws(j);
    } while (fj_lit(j, ","));
    return fj_lit(j, close);
}

static inline bool fj_value(struct fuzz_json *j, int depth)
{
    fj_ws(j);
    if (j->p == j->end)
        return false;
    switch (*j->p) {
    case '{':
    case '[':
        return depth > 0 && fj_container(j, depth - 1);
    case '"':
        return fj_string(j);
    case 't':
        return fj_lit(j, "true");
    case 'f':
        return fj_lit(j, "false");
    case 'n':
        return fj_lit(j, "null");
    default:
        return fj_number(j);
    }
}

/* Is s (n bytes) one JSON value, surrounding whitespace allowed, at most FUZZ_JSON_DEPTH
 * levels deep? */
static inline bool fuzz_is_json(const char *s, size_t n)
{
    struct fuzz_json j = {(const unsigned char *)s, (const unsigned char *)s + n};
    bool ok = fj_value(&j, FUZZ_JSON_DEPTH);

    fj_ws(&j);
    return ok && j.p == j.end;
}

/* ------------------------------------------------------------------------------------------ */

/* Checks m's frame and JSON text, and that the text is UTF-8 when check_utf8 (false only
 * where the daemon never gets that far: a client frame that is not UTF-8 is refused by lws).
 * Returns the text parsed, a new object the caller puts. */
static inline struct json_object *fuzz_check_msg(const struct dw_msg *m, bool check_utf8)
{
    const unsigned char *f = dw_msg_frame(m);
    const char *text = dw_msg_payload(m);
    size_t n = m->len;
    uint64_t wire_len = 0;
    struct json_object *obj, *v;
    int rc;

    /* FIN + text opcode, unmasked, the shortest length encoding (RFC 6455, 5.2). */
    assert(f[0] == 0x81);
    if (n < 126) {
        assert(m->hdr_len == 2);
        wire_len = f[1];
    } else if (n < 65536) {
        assert(m->hdr_len == 4 && f[1] == 126);
        wire_len = (uint64_t)f[2] << 8 | f[3];
    } else {
        assert(m->hdr_len == 10 && f[1] == 127);
        for (int i = 2; i < 10; i++)
            wire_len = wire_len << 8 | f[i];
    }
    assert(wire_len == n);
    assert(dw_msg_frame_len(m) == m->hdr_len + n);
    assert(text[n] == '\0' && strlen(text) == n);
    assert(fuzz_is_json(text, n));
    if (check_utf8)
        assert(fuzz_is_utf8((const unsigned char *)text, n));

    rc = dw_proto_parse_json(text, n, FUZZ_JSON_DEPTH, &obj);
    assert(rc == 0);
    assert(json_object_is_type(obj, json_type_object));
    v = json_object_object_get(obj, "type");
    assert(json_object_is_type(v, json_type_string));
    assert(strcmp(json_object_get_string(v), dw_msg_type_name((enum dw_msg_type)m->type)) == 0);
    v = json_object_object_get(obj, "timestamp");
    assert(json_object_is_type(v, json_type_string));
    return obj;
}

#endif
