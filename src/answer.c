/*
 * answer — DESIGN: every JSON body an HTTP answer carries is rendered here, compact (json-c's
 * PLAIN), so that the endpoints agree on the form of their errors ({"error", "field"}).
 */
#include "dealwire/answer.h"
#include "dealwire/mem.h"

#include <json-c/json.h>

char *dw_answer_json(struct json_object *obj, size_t *len)
{
    const char *s = json_object_to_json_string_length(obj, JSON_C_TO_STRING_PLAIN, len);
    char *out = dw_xstrndup(s, *len);

    json_object_put(obj);
    return out;
}

char *dw_answer_error(const char *message, const char *field, size_t *len)
{
    struct json_object *obj = json_object_new_object();

    json_object_object_add(obj, "error", json_object_new_string(message));
    if (field)
        json_object_object_add(obj, "field", json_object_new_string(field));
    return dw_answer_json(obj, len);
}
