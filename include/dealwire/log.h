/*
 * log — levelled log lines to stderr.
 *
 * Each .c file defines DW_LOG_MODULE before including this header, so every line names the
 * module that wrote it. dw_log() tests the level before evaluating its arguments, and each line
 * is written with a single write(2), so lines from different threads never interleave.
 */
#ifndef DEALWIRE_LOG_H
#define DEALWIRE_LOG_H

#include <stdatomic.h>

enum dw_log_level {
    DW_LOG_ERROR = 0,
    DW_LOG_WARN = 1,
    DW_LOG_INFO = 2,
    DW_LOG_DEBUG = 3,
};

#ifndef DW_LOG_MODULE
#define DW_LOG_MODULE "dealwire"
#endif

/* The level in force; lines above it are skipped. Read relaxed on every dw_log(). */
extern _Atomic int dw__log_level;

/* thread: any. Sets the level in force. */
void dw_log_set_level(enum dw_log_level level);

/* thread: any. Parses "error", "warn", "info" or "debug". Returns the level, or -EINVAL. */
int dw_log_level_parse(const char *name);

/* thread: any. Returns the name of level ("info", ...). */
const char *dw_log_level_name(enum dw_log_level level);

/* thread: any. Formats and writes one line; use dw_log() instead. */
void dw__log_write(enum dw_log_level level, const char *module, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define dw_log(level, ...)                                                                         \
    do {                                                                                           \
        if ((int)(level) <= atomic_load_explicit(&dw__log_level, memory_order_relaxed))            \
            dw__log_write((level), DW_LOG_MODULE, __VA_ARGS__);                                    \
    } while (0)

#endif
