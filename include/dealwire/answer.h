/*
 * answer — the JSON bodies of HTTP answers, made one way for every endpoint: the publish
 * API, the trip planner and the I/O thread's own answers. thread: any.
 */
#ifndef DEALWIRE_ANSWER_H
#define DEALWIRE_ANSWER_H

#include <stddef.h>

struct json_object;

/* thread: any. obj as compact JSON text: a new NUL-terminated string of *len bytes (the
 * caller frees it). Takes ownership of obj. */
char *dw_answer_json(struct json_object *obj, size_t *len);

/* thread: any. The error answer {"error": message[, "field": field]} (field may be NULL), as
 * dw_answer_json returns it. */
char *dw_answer_error(const char *message, const char *field, size_t *len);

#endif
