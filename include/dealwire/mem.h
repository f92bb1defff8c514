/*
 * mem — allocation that never returns NULL, and dw_panic for "cannot happen".
 *
 * The daemon aborts with file:line on allocation failure: an untested OOM path does more harm
 * than a clean crash. Untrusted input never reaches these aborts; it gets an error reply.
 */
#ifndef DEALWIRE_MEM_H
#define DEALWIRE_MEM_H

#include <stddef.h>

/* thread: any. Prints file, function, line and the message, then abort()s. */
void dw__panic(const char *file, const char *func, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5), noreturn));

#define dw_panic(...) dw__panic(__FILE__, __func__, __LINE__, __VA_ARGS__)

void *dw__xmalloc(size_t n, const char *file, int line);
void *dw__xcalloc(size_t n, size_t size, const char *file, int line);
void *dw__xrealloc(void *p, size_t n, const char *file, int line);
char *dw__xstrdup(const char *s, const char *file, int line);
char *dw__xstrndup(const char *s, size_t n, const char *file, int line);

/* thread: any. malloc/calloc/realloc/strdup that panic instead of returning NULL. */
#define dw_xmalloc(n)       dw__xmalloc((n), __FILE__, __LINE__)
#define dw_xcalloc(n, size) dw__xcalloc((n), (size), __FILE__, __LINE__)
#define dw_xrealloc(p, n)   dw__xrealloc((p), (n), __FILE__, __LINE__)
#define dw_xstrdup(s)       dw__xstrdup((s), __FILE__, __LINE__)
#define dw_xstrndup(s, n)   dw__xstrndup((s), (n), __FILE__, __LINE__)

#endif
