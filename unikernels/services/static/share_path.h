/* Request path -> path inside the share, never outside it (see share_path.c). */
#ifndef UK_STATIC_SHARE_PATH_H
#define UK_STATIC_SHARE_PATH_H
#include <stddef.h>

#define SHARE_PATH_MAX 1024   /* decoded path; beyond: 414 */
#define SHARE_NAME_MAX 255    /* one component; beyond: 404 (no such name can exist) */

/* Decodes the request path `target` (from '/', query already cut off) into
 * `out` (out_len bytes): components joined by '/', no leading slash, "" for
 * the root. *trailing_slash says whether the target ended in '/'.
 * Returns 0, or the status to answer with: 400 for a malformed target (bad
 * or overlong escapes, NUL or control bytes, invalid UTF-8), 404 for a name
 * that can never be served (".", "..", a slash or backslash inside a
 * component, an empty component), 414 if it does not fit. */
int share_path(const char *target, char *out, size_t out_len, int *trailing_slash);
#endif
