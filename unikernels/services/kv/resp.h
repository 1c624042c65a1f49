/* RESP2, the Redis protocol: an incremental request parser and reply writers.
 * Pure byte handling, no I/O: the unikernel and the one-process original share it. */
#ifndef KV_RESP_H
#define KV_RESP_H
#include <stddef.h>
#include <stdint.h>

#define RESP_MAX_ARGS   1024        /* MGET/DEL/EXISTS with more keys: a protocol error */
#define KV_MAX_COMMAND  (64 * 1024)  /* a command must fit a connection's input buffer */
#define RESP_MAX_BULK   KV_MAX_COMMAND

struct resp_cmd {
    int argc;
    const char *argv[RESP_MAX_ARGS];   /* point into the parsed buffer, not NUL-terminated */
    uint32_t argl[RESP_MAX_ARGS];
};

/* Parses one command (a RESP array of bulk strings, or an inline line) from
 * buf[0..len). Returns the bytes it took (> 0), 0 when more input is needed,
 * or -1 on a protocol error, with *err set to Redis's message. */
long resp_parse(const char *buf, size_t len, struct resp_cmd *cmd, const char **err);

/* A reply being built into a caller-owned buffer; `overflow` once it does not fit. */
struct resp_out {
    char *buf;
    size_t len, cap;
    int overflow;
};

void resp_raw(struct resp_out *o, const char *s, size_t n);
void resp_simple(struct resp_out *o, const char *s);   /* +s */
void resp_error(struct resp_out *o, const char *s);    /* -s (s starts with ERR, OOM, ...) */
void resp_int(struct resp_out *o, int64_t v);          /* :v */
void resp_bulk(struct resp_out *o, const char *s, size_t n);
void resp_nil(struct resp_out *o);                     /* $-1 */
void resp_array(struct resp_out *o, long n);           /* *n */

/* Strict decimal int64 as Redis reads numbers; 0 on success. */
int resp_parse_int(const char *s, size_t n, int64_t *out);
#endif
