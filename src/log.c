/*
 * log — DESIGN: one line, one write(2). The line is formatted into a stack buffer (timestamp,
 * level, module, message) and written with a single call, so concurrent threads never
 * interleave within a line. Any thread may log; the level is one relaxed atomic.
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

static const char *const level_names[] = {"error", "warn", "info", "debug"};

void dw_log_set_level(enum dw_log_level level)
{
    atomic_store_explicit(&dw__log_level, (int)level, memory_order_relaxed);
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

void dw__log_write(enum dw_log_level level, const char *module, const char *fmt, ...)
{
    char line[1024];
    struct timespec ts;
    struct tm tm;
    size_t n;
    int r;
    va_list ap;

    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    n = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
    r = snprintf(line + n, sizeof(line) - n, ".%03ldZ %-5s %s: ", ts.tv_nsec / 1000000,
                 dw_log_level_name(level), module);
    if (r > 0)
        n += (size_t)r < sizeof(line) - n ? (size_t)r : sizeof(line) - n - 1;

    va_start(ap, fmt);
    r = vsnprintf(line + n, sizeof(line) - n, fmt, ap);
    va_end(ap);
    if (r > 0)
        n += (size_t)r < sizeof(line) - n ? (size_t)r : sizeof(line) - n - 1;

    /* Room for the newline is kept: a truncated line still ends the line. */
    if (n >= sizeof(line) - 1)
        n = sizeof(line) - 2;
    line[n++] = '\n';

    const char *p = line;
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
