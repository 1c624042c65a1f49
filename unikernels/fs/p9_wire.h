/* 9P2000.L on the wire (fs/p9_wire.c): requests built in the transport's
 * buffer, replies read through a bounded reader, and one call that sends a
 * request and checks the reply's size, tag and type. fs/9p.c builds fs.h on it. */
#ifndef UK_P9_WIRE_H
#define UK_P9_WIRE_H
#include <stddef.h>
#include <stdint.h>
#include "fs.h"

#define P9_NOTAG 0xFFFF
#define P9_NOFID 0xFFFFFFFFu
#define P9_HDR 7                          /* size[4] type[1] tag[2] */
#define P9_READ_HDR (P9_HDR + 4)          /* Rread: count[4] */
#define P9_WRITE_HDR (P9_HDR + 4 + 8 + 4) /* Twrite: fid[4] offset[8] count[4] */
#define P9_TIMEOUT_MS 5000                /* a call the host has not answered by then is -ETIMEDOUT */

enum {
    P9_RLERROR = 7, P9_TLOPEN = 12, P9_TLCREATE = 14, P9_TGETATTR = 24, P9_TREADDIR = 40, P9_TFSYNC = 50,
    P9_TRENAMEAT = 74, P9_TVERSION = 100, P9_TATTACH = 104, P9_TWALK = 110, P9_TREAD = 116, P9_TWRITE = 118,
    P9_TCLUNK = 120,
};

#define P9_QT_DIR 0x80
#define P9_QT_SYMLINK 0x02

struct p9_qid { uint8_t type; uint32_t version; uint64_t path; };

/* The session: message size limits, the next tag, counters. */
struct p9_session {
    uint32_t msize;      /* negotiated (buf_size until Tversion is answered) */
    uint32_t buf_size;   /* the transport's buffers */
    uint16_t tag;
    struct fs_counters counters;
};
extern struct p9_session p9;

/* A request being built; overflow is set (and the call refused) if it outgrows msize. */
struct p9_req { uint8_t *p; uint32_t len, cap; int overflow; };
struct p9_req p9_begin(uint8_t type);
void p9_put(struct p9_req *m, const void *v, uint32_t n);
void p9_put8(struct p9_req *m, uint8_t v);
void p9_put16(struct p9_req *m, uint16_t v);
void p9_put32(struct p9_req *m, uint32_t v);
void p9_put64(struct p9_req *m, uint64_t v);
void p9_putstr(struct p9_req *m, const char *s, size_t n);

/* A reply being read: a read past its end sets bad and yields zeros/NULL. */
struct p9_rep { const uint8_t *p; uint32_t len, pos; int bad; };
const uint8_t *p9_take(struct p9_rep *r, uint32_t n);
uint8_t p9_get8(struct p9_rep *r);
uint16_t p9_get16(struct p9_rep *r);
uint32_t p9_get32(struct p9_rep *r);
uint64_t p9_get64(struct p9_rep *r);
const char *p9_getstr(struct p9_rep *r, uint16_t *n);
void p9_getqid(struct p9_rep *r, struct p9_qid *q);
/* 0 if the reply parsed, else -EPROTO (counted). */
int p9_parsed(const struct p9_rep *r);

/* Sends m and points r at the body of its reply of type T+1: 0, a negative
 * errno from an Rlerror, or -EPROTO / -EMSGSIZE / -ETIMEDOUT. */
int p9_rpc(struct p9_req *m, struct p9_rep *r);
#endif
