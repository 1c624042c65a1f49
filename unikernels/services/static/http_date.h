/* HTTP dates (RFC 9110 section 5.6.7) <-> seconds since the epoch, UTC. */
#ifndef UK_STATIC_HTTP_DATE_H
#define UK_STATIC_HTTP_DATE_H
#include <stddef.h>
#include <stdint.h>

#define HTTP_DATE_LEN 29   /* "Sun, 06 Nov 1994 08:49:37 GMT" */

/* Writes the IMF-fixdate for `secs` into out (>= HTTP_DATE_LEN + 1 bytes). */
void http_date_format(int64_t secs, char *out);
/* Parses an IMF-fixdate, an RFC 850 date or an asctime() date;
 * 0 and *secs on success, -1 if it is none of them. */
int http_date_parse(const char *s, int64_t *secs);
#endif
