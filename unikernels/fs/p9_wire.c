/* 9P2000.L messages (see p9_wire.h). The host is trusted to serve files, not
 * to send well-formed messages: every field is read through a bounded reader
 * (a field past the reply's end marks it bad instead of reading on), and a
 * reply's size, tag and type are checked before anything else looks at it. */
#include <string.h>
#include "p9_wire.h"
#include "virtio_9p.h"

struct p9_session p9;

/* ---- building a request in the transport's buffer ---- */

void p9_put(struct p9_req *m, const void *v, uint32_t n)
{
    if (m->overflow || n > m->cap - m->len) {
        m->overflow = 1;
        return;
    }
    memcpy(m->p + m->len, v, n);
    m->len += n;
}

void p9_put8(struct p9_req *m, uint8_t v) { p9_put(m, &v, 1); }
void p9_put16(struct p9_req *m, uint16_t v) { uint8_t b[2] = { (uint8_t)v, (uint8_t)(v >> 8) }; p9_put(m, b, 2); }
void p9_put32(struct p9_req *m, uint32_t v) { p9_put16(m, (uint16_t)v); p9_put16(m, (uint16_t)(v >> 16)); }
void p9_put64(struct p9_req *m, uint64_t v) { p9_put32(m, (uint32_t)v); p9_put32(m, (uint32_t)(v >> 32)); }

void p9_putstr(struct p9_req *m, const char *s, size_t n)
{
    if (n > 0xFFFF) {
        m->overflow = 1;
        return;
    }
    p9_put16(m, (uint16_t)n);
    p9_put(m, s, (uint32_t)n);
}

struct p9_req p9_begin(uint8_t type)
{
    struct p9_req m = { v9p_request_buf(), 0, p9.msize, 0 };
    p9_put32(&m, 0);   /* size, filled in by p9_rpc() */
    p9_put8(&m, type);
    p9_put16(&m, 0);   /* tag, filled in by p9_rpc() */
    return m;
}

/* ---- reading a reply: every get is bounded by the reply's size ---- */

const uint8_t *p9_take(struct p9_rep *r, uint32_t n)
{
    if (r->bad || n > r->len - r->pos) {
        r->bad = 1;
        return NULL;
    }
    const uint8_t *at = r->p + r->pos;
    r->pos += n;
    return at;
}

uint8_t p9_get8(struct p9_rep *r) { const uint8_t *b = p9_take(r, 1); return b ? b[0] : 0; }
uint16_t p9_get16(struct p9_rep *r) { const uint8_t *b = p9_take(r, 2); return b ? (uint16_t)(b[0] | b[1] << 8) : 0; }

uint32_t p9_get32(struct p9_rep *r)
{
    const uint8_t *b = p9_take(r, 4);
    return b ? (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24 : 0;
}

uint64_t p9_get64(struct p9_rep *r) { uint64_t lo = p9_get32(r); return lo | (uint64_t)p9_get32(r) << 32; }

const char *p9_getstr(struct p9_rep *r, uint16_t *n)
{
    *n = p9_get16(r);
    return (const char *)p9_take(r, *n);
}

void p9_getqid(struct p9_rep *r, struct p9_qid *q)
{
    q->type = p9_get8(r);
    q->version = p9_get32(r);
    q->path = p9_get64(r);
}

int p9_parsed(const struct p9_rep *r)
{
    if (!r->bad)
        return 0;
    p9.counters.bad_replies++;
    return -EPROTO;
}

static int refuse(void)
{
    p9.counters.bad_replies++;
    return -EPROTO;
}

int p9_rpc(struct p9_req *m, struct p9_rep *r)
{
    if (m->overflow)
        return -EMSGSIZE;
    uint8_t type = m->p[4];
    uint16_t tag = P9_NOTAG;
    if (type != P9_TVERSION) {
        tag = p9.tag;
        p9.tag = (uint16_t)(p9.tag + 1 == P9_NOTAG ? 0 : p9.tag + 1);
    }
    m->p[0] = (uint8_t)m->len;
    m->p[1] = (uint8_t)(m->len >> 8);
    m->p[2] = (uint8_t)(m->len >> 16);
    m->p[3] = (uint8_t)(m->len >> 24);
    m->p[5] = (uint8_t)tag;
    m->p[6] = (uint8_t)(tag >> 8);

    const uint8_t *reply;
    uint32_t reply_len;
    p9.counters.requests++;
    int rc = v9p_rpc(m->len, &reply, &reply_len, P9_TIMEOUT_MS);
    if (rc == -ETIMEDOUT)
        p9.counters.timeouts++;
    if (rc)
        return rc;
    if (reply_len > p9.buf_size)
        return refuse();
    *r = (struct p9_rep){ reply, reply_len, 0, 0 };
    uint32_t size = p9_get32(r);
    uint8_t rtype = p9_get8(r);
    uint16_t rtag = p9_get16(r);
    if (r->bad || size < P9_HDR || size > reply_len || rtag != tag)
        return refuse();
    r->len = size;   /* nothing past the message's own end is read */
    if (rtype == P9_RLERROR) {
        uint32_t ecode = p9_get32(r);
        if (r->bad || ecode == 0 || ecode > 4095)
            return refuse();
        return -(int)ecode;
    }
    if (rtype != (uint8_t)(type + 1))
        return refuse();
    return 0;
}
