/* One byte range from a Range header (RFC 9110 section 14.2). */
#ifndef UK_STATIC_RANGE_H
#define UK_STATIC_RANGE_H
#include <stdint.h>

enum range_result {
    RANGE_NONE,            /* absent, malformed, another unit, or several ranges: send it all (200) */
    RANGE_ONE,             /* [*start, *start + *len) of the file: 206 */
    RANGE_UNSATISFIABLE,   /* 416 with Content-Range: bytes *<size> */
};

enum range_result range_parse(const char *field, uint64_t size, uint64_t *start, uint64_t *len);
#endif
