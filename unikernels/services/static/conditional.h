/* Which answer a GET or HEAD of an existing file gets (RFC 9110 13.2.2). */
#ifndef UK_STATIC_CONDITIONAL_H
#define UK_STATIC_CONDITIONAL_H
#include <stdint.h>
#include "http_request.h"

struct file_answer {
    int status;             /* 200, 206, 304 or 416 */
    uint64_t start, len;    /* the bytes to send (200: all, 206: the range) */
};

void conditional_answer(const struct request *r, int is_get, uint64_t size, const char *etag,
                        int64_t mtime_sec, struct file_answer *out);
#endif
