/*
 * web — the live dashboard's files (web/: the page, its script, the JavaScript client and the
 * style sheet), compiled into the binary at build time (cmake/embed_web.cmake), so that the
 * daemon serves them without reading its source tree. http.c answers GET and HEAD for their
 * paths, without the operator token, with headers that lock the page down (a
 * Content-Security-Policy, nosniff, no referrer).
 */
#ifndef DEALWIRE_WEB_H
#define DEALWIRE_WEB_H

#include <stddef.h>

/* One embedded file: where it is served, its type and its bytes (len bytes, then a NUL). */
struct dw_web_file {
    const char *path;         /* "/" for web/index.html, else "/<file name>" */
    const char *content_type; /* from the extension, with "; charset=utf-8" */
    const unsigned char *data;
    size_t len;
};

/* The files of web/ in the build (generated; sorted by file name). */
extern const struct dw_web_file dw_web_files[];
extern const size_t dw_web_file_count;

#endif
