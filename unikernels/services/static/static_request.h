/* Request heads as the static service needs them (see static_request.c). */
#ifndef UK_STATIC_REQUEST_H
#define UK_STATIC_REQUEST_H
#include <stdint.h>

#define TARGET_MAX 2048   /* request target; beyond: 414 */

struct static_request {
    char *method, *path, *query;   /* point into the parsed head; query may be NULL */
    int http10, keep_alive;
    uint32_t content_length;       /* a body to skip (GET/HEAD have none, others get 405) */
    /* conditional and range fields, NULL when absent */
    char *if_none_match, *if_modified_since, *range, *if_range;
};

/* Parses a NUL-terminated head ending in CRLFCRLF, in place.
 * Returns 0, or the status to answer with (400, 413, 414, 501, 505). */
int static_request_parse(char *head, struct static_request *r);
#endif
