/* One kv connection's input turned into replies and log records: the part of
 * a connection that both front-ends (the unikernel's and the Linux process's)
 * share. The front-end owns the buffers, so it bounds the memory. */
#ifndef KV_SESSION_H
#define KV_SESSION_H
#include "commands.h"

/* Room kept free in `out` before another command runs: a reply larger than
 * what is left is cut off (overflow), so a command only starts with this much. */
#define KV_REPLY_ROOM 1024

/* Runs the complete commands in in[0..len), appending replies to `out` and log
 * records to `log`. Stops when the input is used up, when `out` has less than
 * KV_REPLY_ROOM free or `log` may not hold the next record, or after QUIT or a protocol error (then *close is set,
 * and the reply says why). Returns the bytes of input consumed. A reply that
 * did not fit is replaced by an error. */
size_t kv_session_feed(struct kv_server *kv, const char *in, size_t len, struct resp_out *out,
                       struct resp_out *log, int64_t now, int *close);
#endif
