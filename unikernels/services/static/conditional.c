/* The order of RFC 9110 13.2.2: If-None-Match, else If-Modified-Since (304);
 * then, for GET only, Range, unless an If-Range validator no longer holds. */
#include "conditional.h"
#include "http_date.h"
#include "range.h"
#include "validators.h"

void conditional_answer(const struct request *r, int is_get, uint64_t size, const char *etag,
                        int64_t mtime_sec, struct file_answer *out)
{
    out->status = 200;
    out->start = 0;
    out->len = size;
    if (r->if_none_match) {
        if (etag_list_matches(r->if_none_match, etag)) {
            out->status = 304;
            return;
        }
    } else if (r->if_modified_since) {
        int64_t since;
        if (!http_date_parse(r->if_modified_since, &since) && mtime_sec <= since) {
            out->status = 304;
            return;
        }
    }
    if (!is_get || !r->range)
        return;
    if (r->if_range && !if_range_holds(r->if_range, etag, mtime_sec))
        return;
    switch (range_parse(r->range, size, &out->start, &out->len)) {
    case RANGE_ONE:
        out->status = 206;
        break;
    case RANGE_UNSATISFIABLE:
        out->status = 416;
        out->start = out->len = 0;
        break;
    case RANGE_NONE:
        break;
    }
}
