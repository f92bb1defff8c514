/*
 * mem — DESIGN: allocation wrappers that abort with the caller's file:line on failure, and
 * dw_panic. Used by every thread; nothing here keeps state.
 */
#define DW_LOG_MODULE "mem"
#include "dealwire/mem.h"
#include "dealwire/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void dw__panic(const char *file, const char *func, int line, const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    dw__log_write(DW_LOG_ERROR, "panic", "%s:%d %s(): %s", file, line, func, msg);
    abort();
}

static void *checked(void *p, size_t n, const char *file, int line)
{
    if (!p)
        dw__panic(file, "alloc", line, "out of memory allocating %zu bytes", n);
    return p;
}

void *dw__xmalloc(size_t n, const char *file, int line)
{
    return checked(malloc(n ? n : 1), n, file, line);
}

void *dw__xcalloc(size_t n, size_t size, const char *file, int line)
{
    return checked(calloc(n ? n : 1, size ? size : 1), n * size, file, line);
}

void *dw__xrealloc(void *p, size_t n, const char *file, int line)
{
    return checked(realloc(p, n ? n : 1), n, file, line);
}

char *dw__xstrdup(const char *s, const char *file, int line)
{
    return checked(strdup(s), strlen(s) + 1, file, line);
}

char *dw__xstrndup(const char *s, size_t n, const char *file, int line)
{
    return checked(strndup(s, n), n + 1, file, line);
}
