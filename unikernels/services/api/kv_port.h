/* How the link logic reaches kv: a batch of RESP commands goes out, its
 * replies come back to a callback. In the VM the batch travels over TCP to
 * kv's service address (lib/resp_client.c); in the one-process original it
 * is handed to kv's own code by a function call. */
#ifndef API_KV_PORT_H
#define API_KV_PORT_H
#include <stdint.h>

#define KV_BATCH_MAX 4096   /* bytes of commands in one batch */
#define KV_REPLIES_MAX 40   /* replies in one batch, array elements included */

struct kv_batch {
    char buf[KV_BATCH_MAX];
    uint32_t len;
    int commands;
    int overflow;
};

/* One reply; an array ('*', num = its length) is followed by its elements. */
struct kv_reply {
    char type;          /* '+' status, '-' error, ':' integer, '$' bulk, '*' array, '_' nil */
    const char *str;    /* '+', '-', '$': the text (valid during the callback) */
    uint32_t len;
    int64_t num;        /* ':': the value; '*': element count */
};

/* err: 0, or negative (-ETIMEDOUT, -ECONNREFUSED, -EPROTO...) when kv could not answer. */
typedef void (*kv_done_fn)(void *arg, const struct kv_reply *r, int n, int err);

void kvb_reset(struct kv_batch *b);
/* Appends one command; words given as NUL-terminated strings. */
void kvb_cmd(struct kv_batch *b, int argc, const char *const *argv);
/* Sets the transport up (the VM: kv=IP:PORT from the command line). */
void kv_port_init(void);
/* Sends the batch; `done` is called exactly once, later (never from inside kv_submit). */
void kv_submit(const struct kv_batch *b, kv_done_fn done, void *arg);

/* Parses replies from buf[0..len) into r (at most max, arrays flattened),
 * stopping after `top` top-level replies. Returns bytes used, 0 if incomplete,
 * -1 if malformed or too many. Shared by both transports. */
long kv_parse_replies(const char *buf, uint32_t len, int top, struct kv_reply *r, int max, int *n);
#endif
