/*
 * log — levelled log lines to stderr, as text or as JSON (--log-format).
 *
 * Each .c file defines DW_LOG_MODULE before including this header, so every line names the
 * module that wrote it. dw_log() tests the level before evaluating its arguments, and each line
 * is written with a single write(2), so lines from different threads never interleave.
 *
 * Lines an operator alerts or searches on are written with dw_log_event(): an event name and
 * key/value fields besides the message. The text format prints the message only, exactly as
 * dw_log() would; the JSON format prints one object per line:
 *
 *   {"time":"2026-11-26T01:02:03.456Z","level":"info","module":"conn","event":"conn.close",
 *    "reason":"slow consumer","conn":12,"user":"u1","message":"connection 12 (user u1): ..."}
 *
 * (on one line). A plain dw_log() line has the event "log" and no fields.
 */
#ifndef DEALWIRE_LOG_H
#define DEALWIRE_LOG_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

enum dw_log_level {
    DW_LOG_ERROR = 0,
    DW_LOG_WARN = 1,
    DW_LOG_INFO = 2,
    DW_LOG_DEBUG = 3,
};

/* --log-format: what a line looks like. */
enum dw_log_format {
    DW_LOG_TEXT = 0, /* "<time> <level> <module>: <message>", as ever */
    DW_LOG_JSON = 1, /* one JSON object per line */
};

#ifndef DW_LOG_MODULE
#define DW_LOG_MODULE "dealwire"
#endif

/* The event of a line written without one (dw_log()). */
#define DW_LOG_EVENT_NONE "log"

/* One field of a structured line: a string (str; NULL writes JSON null) or an integer. The key
 * is never one of the members every line has (time, level, module, event, message,
 * truncated). */
struct dw_log_field {
    const char *key;
    const char *str;
    long long num;
    bool is_str;
};

#define DW_LOG_STR(k, v) ((struct dw_log_field){.key = (k), .str = (v), .is_str = true})
#define DW_LOG_INT(k, v) ((struct dw_log_field){.key = (k), .num = (long long)(v)})

/* The level in force; lines above it are skipped. Read relaxed on every dw_log(). */
extern _Atomic int dw__log_level;

/* thread: any. Sets the level in force. */
void dw_log_set_level(enum dw_log_level level);

/* thread: main, before other threads start. Sets the format of every line that follows. */
void dw_log_set_format(enum dw_log_format format);

/* thread: any. Parses "error", "warn", "info" or "debug". Returns the level, or -EINVAL. */
int dw_log_level_parse(const char *name);

/* thread: any. Returns the name of level ("info", ...). */
const char *dw_log_level_name(enum dw_log_level level);

/* thread: any. Formats and writes one line; use dw_log() instead. */
void dw__log_write(enum dw_log_level level, const char *module, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* thread: any. Formats and writes one line with an event (NULL: DW_LOG_EVENT_NONE) and
 * n fields, borrowed for the call; use dw_log_event() instead. */
void dw__log_event(enum dw_log_level level, const char *module, const char *event,
                   const struct dw_log_field *fields, size_t n, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

#define dw_log(level, ...)                                                                         \
    do {                                                                                           \
        if ((int)(level) <= atomic_load_explicit(&dw__log_level, memory_order_relaxed))            \
            dw__log_write((level), DW_LOG_MODULE, __VA_ARGS__);                                    \
    } while (0)

/* dw_log() with an event name and fields, given as a parenthesised list that may be empty:
 *
 *   dw_log_event(DW_LOG_INFO, "conn.close",
 *                (DW_LOG_STR("reason", "token expired"), DW_LOG_INT("conn", id)),
 *                "connection %llu: token expired, closing", id);
 *
 * The level is tested before the fields or the arguments are evaluated. DW_LOG_FIELDS puts an
 * unused first element in front of the fields (C has no empty initializer list), so that the
 * list may be empty: "()". */
#define dw_log_event(level, event, fields, ...)                                                    \
    do {                                                                                           \
        if ((int)(level) <= atomic_load_explicit(&dw__log_level, memory_order_relaxed))            \
            dw__log_event((level), DW_LOG_MODULE, (event), DW_LOG_FIELDS(fields), __VA_ARGS__);    \
    } while (0)

/* The fields and their count, as dw__log_event() takes them, from a parenthesised list: for
 * macros like dw_log_event() that add to what a line says (conn.c's conn_event()). */
#define DW_LOG_FIELDS(fields)                                                                      \
    DW__LOG_ARRAY(fields) + 1, sizeof(DW__LOG_ARRAY(fields)) / sizeof(struct dw_log_field) - 1
#define DW__LOG_ARRAY(fields) ((const struct dw_log_field[]){{.key = NULL}, DW__LOG_UNPAREN fields})
#define DW__LOG_UNPAREN(...)  __VA_ARGS__

#endif
