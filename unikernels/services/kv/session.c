/* See session.h. */
#include <string.h>
#include "session.h"

static struct resp_cmd cmd;   /* one at a time: the front-ends are single-threaded */

size_t kv_session_feed(struct kv_server *kv, const char *in, size_t len, struct resp_out *out,
                       struct resp_out *log, int64_t now, int *close)
{
    size_t used = 0;
    *close = 0;
    while (used < len && out->cap - out->len >= KV_REPLY_ROOM) {
        const char *err = NULL;
        long n = resp_parse(in + used, len - used, &cmd, &err);
        if (n == 0)
            break;
        if (n < 0) {
            resp_error(out, err);
            *close = 1;
            return len;
        }
        /* A write's record is at most its command plus an absolute expiry:
         * leave it to the caller to flush the log first when that may not fit. */
        if (log && log->cap - log->len < (size_t)n + 64)
            break;
        size_t mark = out->len;
        enum kv_after after = kv_execute(kv, &cmd, out, log, now);
        if (out->overflow) {
            out->overflow = 0;
            out->len = mark;
            resp_error(out, "ERR reply too large for this connection's buffer");
        }
        used += (size_t)n;
        if (after == KV_CLOSE) {
            *close = 1;
            break;
        }
    }
    return used;
}
