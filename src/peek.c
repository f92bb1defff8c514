/*
 * peek — what a new socket is, from the first bytes it sent (include/dealwire/peek.h).
 *
 * A request line is "METHOD SP path ...": the method is whatever comes before the first
 * space (lws judges it later; a client gains nothing by naming a strange one, its request is
 * answered in the pass as any API request is), then the path is compared with API_PATHS by
 * prefix. No space within DW_PEEK_HEAD bytes, or bytes that are not a request line at all (a
 * TLS ClientHello), are DW_PEEK_OTHER.
 */
#include "dealwire/peek.h"

#include <string.h>

static const char *const API_PATHS[] = {"/api/", "/healthz", "/readyz", "/metrics"};

enum dw_peek dw_peek_request(const char *head, size_t n)
{
    const char *path, *end;

    if (n > DW_PEEK_HEAD)
        n = DW_PEEK_HEAD;
    end = head + n;
    path = memchr(head, ' ', n);
    if (!path)
        return n == DW_PEEK_HEAD ? DW_PEEK_OTHER : DW_PEEK_MORE;
    if (path == head)
        return DW_PEEK_OTHER; /* no method */
    path++;
    for (size_t i = 0; i < sizeof(API_PATHS) / sizeof(API_PATHS[0]); i++) {
        size_t len = strlen(API_PATHS[i]), have = (size_t)(end - path);

        if (memcmp(path, API_PATHS[i], have < len ? have : len) == 0)
            return have < len ? DW_PEEK_MORE : DW_PEEK_API;
    }
    return DW_PEEK_OTHER;
}
