/*
 * log — DESIGN: one line, one write(2). The line is formatted into a stack buffer and written
 * with a single call, so concurrent threads never interleave within a line, with no lock and
 * no allocation. Any thread may log; the level and the format are relaxed atomics.
 *
 * Two formats (--log-format). text: "<time> <level> <module>: <message>". json: one object
 * per line, {"time", "level", "module", "event", the fields, "message"}, for a machine to
 * read: so every line must parse, whatever bytes a message or a field holds (a user id, a
 * peer's reason phrase). Strings are escaped here, bytes that are not UTF-8 become U+FFFD,
 * and a line longer than its buffer is cut between characters, closed properly and marked
 * "truncated":true. The room for that ending, and for the message (as much as it needs, up to
 * half the line), is set aside before the fields are written: a long field cannot push them
 * out, and every line keeps its message.
 */
#define DW_LOG_MODULE "log"
#include "dealwire/log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

_Atomic int dw__log_level = DW_LOG_INFO;
static _Atomic int log_format = DW_LOG_TEXT;

static const char *const level_names[] = {"error", "warn", "info", "debug"};

/* The text format's whole line, and the JSON format's message before it is escaped. */
#define LINE_MAX_TEXT 1024
/* A JSON line: the message escaped (up to 6 bytes a byte) and the fields around it. */
#define LINE_MAX_JSON 2048

void dw_log_set_level(enum dw_log_level level)
{
    atomic_store_explicit(&dw__log_level, (int)level, memory_order_relaxed);
}

void dw_log_set_format(enum dw_log_format format)
{
    atomic_store_explicit(&log_format, (int)format, memory_order_relaxed);
}

int dw_log_level_parse(const char *name)
{
    for (int i = 0; i < (int)(sizeof(level_names) / sizeof(level_names[0])); i++) {
        if (strcmp(name, level_names[i]) == 0)
            return i;
    }
    return -EINVAL;
}

const char *dw_log_level_name(enum dw_log_level level)
{
    if ((int)level < 0 || (int)level > DW_LOG_DEBUG)
        return "?";
    return level_names[level];
}

/* Writes the n bytes at p to stderr, all of them unless it fails. */
static void write_line(const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(STDERR_FILENO, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            break;
        p += w;
        n -= (size_t)w;
    }
}

/* Writes "2026-11-26T01:02:03.456Z" (RFC 3339, UTC, milliseconds) at buf; returns its length. */
static size_t put_time(char *buf, size_t cap, const struct timespec *ts)
{
    struct tm tm;
    size_t n;
    int r;

    gmtime_r(&ts->tv_sec, &tm);
    n = strftime(buf, cap, "%Y-%m-%dT%H:%M:%S", &tm);
    r = snprintf(buf + n, cap - n, ".%03ldZ", ts->tv_nsec / 1000000);
    if (r > 0)
        n += (size_t)r < cap - n ? (size_t)r : cap - n - 1;
    return n;
}

/* ==========================================================================================
 * The text line
 */

static void write_text(enum dw_log_level level, const char *module, const struct timespec *ts,
                       const char *fmt, va_list ap) __attribute__((format(printf, 4, 0)));

static void write_text(enum dw_log_level level, const char *module, const struct timespec *ts,
                       const char *fmt, va_list ap)
{
    char line[LINE_MAX_TEXT];
    size_t n;
    int r;

    n = put_time(line, sizeof(line), ts);
    r = snprintf(line + n, sizeof(line) - n, " %-5s %s: ", dw_log_level_name(level), module);
    if (r > 0)
        n += (size_t)r < sizeof(line) - n ? (size_t)r : sizeof(line) - n - 1;

    r = vsnprintf(line + n, sizeof(line) - n, fmt, ap);
    if (r > 0)
        n += (size_t)r < sizeof(line) - n ? (size_t)r : sizeof(line) - n - 1;

    /* Room for the newline is kept: a truncated line still ends the line. */
    if (n >= sizeof(line) - 1)
        n = sizeof(line) - 2;
    line[n++] = '\n';
    write_line(line, n);
}

/* ==========================================================================================
 * The JSON line
 */

/* One line's content, before it is rendered. */
struct record {
    struct timespec ts;
    enum dw_log_level level;
    const char *module;
    const char *event; /* NULL: DW_LOG_EVENT_NONE */
    const struct dw_log_field *fields;
    size_t n_fields;
    const char *msg;
    size_t msg_len;
    bool msg_cut; /* the message was longer than its buffer */
};

/* A line being built: writes stop at end, past which the line's ending has its room. */
struct jline {
    char *buf;
    size_t len;
    size_t end;
    bool cut; /* something did not fit */
};

/* What every line ends with, kept free from the start, and the message's key. */
static const char tail_cut[] = ",\"truncated\":true}\n";
static const char message_key[] = ",\"message\":";
#define TAIL_ROOM (sizeof(tail_cut) - 1)

/* Appends n bytes if they all fit. */
static bool put_raw(struct jline *j, const char *s, size_t n)
{
    if (n > j->end - j->len) {
        j->cut = true;
        return false;
    }
    memcpy(j->buf + j->len, s, n);
    j->len += n;
    return true;
}

/* The length of the well-formed UTF-8 sequence at p (n bytes left), 0 when there is none:
 * no overlong forms, no surrogates, nothing past U+10FFFF (RFC 3629, table 3-7 of Unicode). */
static size_t utf8_len(const unsigned char *p, size_t n)
{
    unsigned char lo = 0x80, hi = 0xbf;
    size_t len;

    if (p[0] < 0x80)
        return 1;
    if (p[0] >= 0xc2 && p[0] <= 0xdf) {
        len = 2;
    } else if (p[0] >= 0xe0 && p[0] <= 0xef) {
        len = 3;
        lo = p[0] == 0xe0 ? 0xa0 : 0x80;
        hi = p[0] == 0xed ? 0x9f : 0xbf;
    } else if (p[0] >= 0xf0 && p[0] <= 0xf4) {
        len = 4;
        lo = p[0] == 0xf0 ? 0x90 : 0x80;
        hi = p[0] == 0xf4 ? 0x8f : 0xbf;
    } else {
        return 0;
    }
    if (n < len || p[1] < lo || p[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
    }
    return len;
}

/* How the character at s[i] (of n bytes) is written in a JSON string: sets *piece (s + i, or
 * esc, 8 bytes) and returns its length, and *step to the bytes of s it stands for. Quotes,
 * backslashes and control characters are escaped, and each byte that starts no well-formed
 * UTF-8 sequence becomes \ufffd. */
static size_t next_piece(const char *s, size_t n, size_t i, char *esc, const char **piece,
                         size_t *step)
{
    const unsigned char c = (unsigned char)s[i];

    *piece = esc;
    *step = 1;
    if (c == '"' || c == '\\' || c == '\n' || c == '\t' || c == '\r') {
        esc[0] = '\\';
        esc[1] = (char)(c == '\n' ? 'n' : c == '\t' ? 't' : c == '\r' ? 'r' : c);
        return 2;
    }
    if (c < 0x20 || c == 0x7f)
        return (size_t)snprintf(esc, 8, "\\u%04x", c);
    *step = utf8_len((const unsigned char *)s + i, n - i);
    if (*step > 0) {
        *piece = s + i;
        return *step;
    }
    *step = 1;
    *piece = "\\ufffd";
    return 6;
}

/* The length of s (n bytes) written as a JSON string, quotes included. */
static size_t string_len(const char *s, size_t n)
{
    char esc[8];
    const char *piece;
    size_t len = 2, step;

    for (size_t i = 0; i < n; i += step)
        len += next_piece(s, n, i, esc, &piece, &step);
    return len;
}

/* Appends s (n bytes) as a JSON string (next_piece). What does not fit is left out between two
 * characters and the string is closed all the same. Returns true when all of s was written;
 * false when part or all of it (then nothing) was not. */
static bool put_string(struct jline *j, const char *s, size_t n)
{
    char esc[8];
    size_t i = 0;

    if (j->end - j->len < 2) {
        j->cut = true;
        return false;
    }
    j->buf[j->len++] = '"';
    while (i < n) {
        const char *piece;
        size_t step, len = next_piece(s, n, i, esc, &piece, &step);

        /* One byte stays free for the closing quote. */
        if (len > j->end - j->len - 1) {
            j->cut = true;
            break;
        }
        memcpy(j->buf + j->len, piece, len);
        j->len += len;
        i += step;
    }
    j->buf[j->len++] = '"';
    return i == n;
}

/* Appends ,"key": and the field's value; a field whose key does not fit whole is left out.
 * Returns false when it was left out. */
static bool put_field(struct jline *j, const struct dw_log_field *f)
{
    size_t mark = j->len, value;
    char num[24];
    int n;

    if (!put_raw(j, ",", 1) || !put_string(j, f->key, strlen(f->key)) || !put_raw(j, ":", 1))
        goto undo;
    value = j->len;
    if (!f->is_str) {
        n = snprintf(num, sizeof(num), "%lld", f->num);
        if (!put_raw(j, num, (size_t)n))
            goto undo;
    } else if (!f->str) {
        if (!put_raw(j, "null", 4))
            goto undo;
    } else if (!put_string(j, f->str, strlen(f->str)) && j->len == value) {
        goto undo;
    }
    return true;
undo:
    j->len = mark;
    j->cut = true;
    return false;
}

/* Renders r as one JSON object and a newline into buf (cap bytes, at least 256); returns the
 * line's length. The result always parses: see the DESIGN comment. The message keeps the room
 * it needs, up to half the line, out of the reach of the fields. */
static size_t render_json(char *buf, size_t cap, const struct record *r)
{
    size_t msg_room = string_len(r->msg, r->msg_len);
    struct jline j = {.buf = buf};
    const struct dw_log_field head[] = {
        DW_LOG_STR("level", dw_log_level_name(r->level)),
        DW_LOG_STR("module", r->module),
        DW_LOG_STR("event", r->event ? r->event : DW_LOG_EVENT_NONE),
    };
    char time_text[40];

    if (msg_room > cap / 2)
        msg_room = cap / 2;
    j.end = cap - TAIL_ROOM - (sizeof(message_key) - 1) - msg_room;
    /* The time always fits (cap is at least 256); the rest goes member by member, each
     * whole or cut inside its value, so a long module or event cannot break the object. */
    put_raw(&j, "{\"time\":", 8);
    put_string(&j, time_text, put_time(time_text, sizeof(time_text), &r->ts));
    for (size_t i = 0; i < sizeof(head) / sizeof(head[0]); i++)
        put_field(&j, &head[i]);
    for (size_t i = 0; i < r->n_fields; i++) {
        if (!put_field(&j, &r->fields[i]))
            break; /* the next ones would not fit either, or barely */
    }

    /* The message, last and always there. */
    j.end = cap - TAIL_ROOM;
    put_raw(&j, message_key, sizeof(message_key) - 1);
    put_string(&j, r->msg, r->msg_len);
    if (r->msg_cut)
        j.cut = true;

    /* The ending's room is past j.end: written directly. */
    if (j.cut) {
        memcpy(buf + j.len, tail_cut, TAIL_ROOM);
        return j.len + TAIL_ROOM;
    }
    buf[j.len++] = '}';
    buf[j.len++] = '\n';
    return j.len;
}

static void write_json(const struct record *head, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));

static void write_json(const struct record *head, const char *fmt, va_list ap)
{
    char msg[LINE_MAX_TEXT], line[LINE_MAX_JSON];
    struct record r = *head;
    int n;

    n = vsnprintf(msg, sizeof(msg), fmt, ap);
    if (n < 0)
        n = 0;
    r.msg = msg;
    r.msg_len = (size_t)n < sizeof(msg) ? (size_t)n : sizeof(msg) - 1;
    r.msg_cut = (size_t)n >= sizeof(msg);
    write_line(line, render_json(line, sizeof(line), &r));
}

/* ==========================================================================================
 * Entry points
 */

static void log_vevent(enum dw_log_level level, const char *module, const char *event,
                       const struct dw_log_field *fields, size_t n, const char *fmt, va_list ap)
    __attribute__((format(printf, 6, 0)));

static void log_vevent(enum dw_log_level level, const char *module, const char *event,
                       const struct dw_log_field *fields, size_t n, const char *fmt, va_list ap)
{
    struct record r = {
        .level = level, .module = module, .event = event, .fields = fields, .n_fields = n};

    clock_gettime(CLOCK_REALTIME, &r.ts);
    if (atomic_load_explicit(&log_format, memory_order_relaxed) == DW_LOG_JSON)
        write_json(&r, fmt, ap);
    else
        write_text(level, module, &r.ts, fmt, ap);
}

void dw__log_write(enum dw_log_level level, const char *module, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    log_vevent(level, module, NULL, NULL, 0, fmt, ap);
    va_end(ap);
}

void dw__log_event(enum dw_log_level level, const char *module, const char *event,
                   const struct dw_log_field *fields, size_t n, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    log_vevent(level, module, event, fields, n, fmt, ap);
    va_end(ap);
}
