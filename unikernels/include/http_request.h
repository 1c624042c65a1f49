/* Parsing of HTTP/1.x request heads (lib/http_request.c), for every HTTP service. */
#ifndef UK_HTTP_REQUEST_H
#define UK_HTTP_REQUEST_H
#include <stdint.h>

#define URI_MAX 2048   /* request target; beyond: 414 */

struct request {
    char *method, *path, *query;   /* point into the parsed head */
    int http10, keep_alive, has_host;
    /* header values the services read, NULL when absent (point into the head) */
    char *host, *content_type, *forwarded_proto;
    char *if_none_match, *if_modified_since, *range, *if_range;   /* a file server's */
    uint32_t content_length;
};

/* Parses a NUL-terminated head ending in CRLFCRLF, in place.
 * Returns 0, or the HTTP status to answer with (400, 413, 414, 501, 505). */
int request_parse(char *head, struct request *r);

/* The length of the request head at the start of in (through its blank
 * line), looking at no more than max bytes; 0 while no whole head is there. */
uint32_t request_head_end(const uint8_t *in, uint32_t len, uint32_t max);

/* Reads unsigned `key=N` from a query string; 0 on success. */
int request_query_uint(const char *query, const char *key, uint32_t *out);
#endif
