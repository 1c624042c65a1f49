/* Entity tags and the conditional headers that compare against them. */
#ifndef UK_STATIC_VALIDATORS_H
#define UK_STATIC_VALIDATORS_H
#include <stdint.h>

#define ETAG_MAX 64   /* with the quotes and the NUL */

/* A strong ETag from what changes when the file does: inode, size and mtime
 * to the nanosecond (an edit within one second still changes it). */
void etag_make(uint64_t ino, uint64_t size, uint64_t mtime_sec, uint32_t mtime_nsec, char out[ETAG_MAX]);
/* If-None-Match: 1 if `field` ("*" or a list of [W/]"tags") matches `etag`
 * by weak comparison, 0 if not or if the field is malformed. */
int etag_list_matches(const char *field, const char *etag);
/* If-Range: 1 if the validator in `field` still holds (a strong match of
 * the ETag, or exactly the Last-Modified date), so the Range applies. */
int if_range_holds(const char *field, const char *etag, int64_t mtime_sec);
#endif
