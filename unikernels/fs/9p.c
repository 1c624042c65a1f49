/* A 9P2000.L client implementing fs.h over the virtio-9p transport.
 * The host is trusted to serve files, not to send well-formed messages: every
 * reply is read through a bounded reader (a field past the reply's end marks
 * it bad instead of reading on), its size, tag and type are checked, and an
 * Rlerror becomes that negative errno. Fids are handles: 0 is the share's
 * root, the others come from a bounded table. Walks refuse to go through a
 * symlink (each qid on the way must be a directory). */
#include <string.h>
#include "fs.h"
#include "virtio_9p.h"

#define TIMEOUT_MS 5000
#define MIN_MSIZE 4096
#define MAX_FIDS 1024
#define ROOT_FID 0
#define NOTAG 0xFFFF
#define NOFID 0xFFFFFFFFu
#define MAX_WALK 16            /* names per Twalk (the protocol's limit) */
#define MAX_NAME 255
#define HDR 7                  /* size[4] type[1] tag[2] */
#define READ_HDR (HDR + 4)     /* Rread: count[4] */
#define WRITE_HDR (HDR + 4 + 8 + 4)   /* Twrite: fid[4] offset[8] count[4] */

enum {
    RLERROR = 7, TLOPEN = 12, TLCREATE = 14, TGETATTR = 24, TREADDIR = 40, TFSYNC = 50,
    TRENAMEAT = 74, TVERSION = 100, TATTACH = 104, TWALK = 110, TREAD = 116, TWRITE = 118, TCLUNK = 120,
};

#define QT_DIR 0x80
#define QT_SYMLINK 0x02
#define GETATTR_BASIC 0x7FFull

/* Linux open flags, as 9P2000.L carries them */
#define L_WRONLY 01
#define L_TRUNC 01000
#define L_APPEND 02000
#define L_NOFOLLOW 0400000

struct qid { uint8_t type; uint32_t version; uint64_t path; };

static struct {
    int mounted, writable;
    uint32_t msize, buf_size;
    uint16_t tag;
    uint8_t fid_used[MAX_FIDS / 8];
    uint8_t fid_open[MAX_FIDS / 8];
    struct fs_counters counters;
} fs;

/* ---- building a request in the transport's buffer ---- */

struct req { uint8_t *p; uint32_t len, cap; int overflow; };

static void put(struct req *m, const void *v, uint32_t n)
{
    if (m->overflow || n > m->cap - m->len) {
        m->overflow = 1;
        return;
    }
    memcpy(m->p + m->len, v, n);
    m->len += n;
}

static void put8(struct req *m, uint8_t v) { put(m, &v, 1); }
static void put16(struct req *m, uint16_t v) { uint8_t b[2] = { (uint8_t)v, (uint8_t)(v >> 8) }; put(m, b, 2); }
static void put32(struct req *m, uint32_t v) { put16(m, (uint16_t)v); put16(m, (uint16_t)(v >> 16)); }
static void put64(struct req *m, uint64_t v) { put32(m, (uint32_t)v); put32(m, (uint32_t)(v >> 32)); }

static void putstr(struct req *m, const char *s, size_t n)
{
    if (n > 0xFFFF) {
        m->overflow = 1;
        return;
    }
    put16(m, (uint16_t)n);
    put(m, s, (uint32_t)n);
}

static struct req begin(uint8_t type)
{
    struct req m = { v9p_request_buf(), 0, fs.msize, 0 };
    put32(&m, 0);   /* size, filled in by rpc() */
    put8(&m, type);
    put16(&m, 0);   /* tag, filled in by rpc() */
    return m;
}

/* ---- reading a reply: every get is bounded by the reply's size ---- */

struct rep { const uint8_t *p; uint32_t len, pos; int bad; };

static const uint8_t *take(struct rep *r, uint32_t n)
{
    if (r->bad || n > r->len - r->pos) {
        r->bad = 1;
        return NULL;
    }
    const uint8_t *at = r->p + r->pos;
    r->pos += n;
    return at;
}

static uint8_t get8(struct rep *r) { const uint8_t *b = take(r, 1); return b ? b[0] : 0; }
static uint16_t get16(struct rep *r) { const uint8_t *b = take(r, 2); return b ? (uint16_t)(b[0] | b[1] << 8) : 0; }
static uint32_t get32(struct rep *r)
{
    const uint8_t *b = take(r, 4);
    return b ? (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24 : 0;
}
static uint64_t get64(struct rep *r) { uint64_t lo = get32(r); return lo | (uint64_t)get32(r) << 32; }

static const char *getstr(struct rep *r, uint16_t *n)
{
    *n = get16(r);
    return (const char *)take(r, *n);
}

static void getqid(struct rep *r, struct qid *q)
{
    q->type = get8(r);
    q->version = get32(r);
    q->path = get64(r);
}

/* A reply that parsed (0) or did not (-EPROTO, counted). */
static int parsed(const struct rep *r)
{
    if (!r->bad)
        return 0;
    fs.counters.bad_replies++;
    return -EPROTO;
}

/* Sends m, waits for the reply of type `type`+1 and points r at its body.
 * 0, a negative errno from an Rlerror, or -EPROTO/-EMSGSIZE/-ETIMEDOUT. */
static int rpc(struct req *m, struct rep *r)
{
    if (m->overflow)
        return -EMSGSIZE;
    uint8_t type = m->p[4];
    uint16_t tag = NOTAG;
    if (type != TVERSION) {
        tag = fs.tag;
        fs.tag = (uint16_t)(fs.tag + 1 == NOTAG ? 0 : fs.tag + 1);
    }
    m->p[0] = (uint8_t)m->len;
    m->p[1] = (uint8_t)(m->len >> 8);
    m->p[2] = (uint8_t)(m->len >> 16);
    m->p[3] = (uint8_t)(m->len >> 24);
    m->p[5] = (uint8_t)tag;
    m->p[6] = (uint8_t)(tag >> 8);

    const uint8_t *reply;
    uint32_t reply_len;
    fs.counters.requests++;
    int rc = v9p_rpc(m->len, &reply, &reply_len, TIMEOUT_MS);
    if (rc == -ETIMEDOUT)
        fs.counters.timeouts++;
    if (rc)
        return rc;
    if (reply_len > fs.buf_size) {
        fs.counters.bad_replies++;
        return -EPROTO;
    }
    *r = (struct rep){ reply, reply_len, 0, 0 };
    uint32_t size = get32(r);
    uint8_t rtype = get8(r);
    uint16_t rtag = get16(r);
    if (r->bad || size < HDR || size > reply_len || rtag != tag) {
        fs.counters.bad_replies++;
        return -EPROTO;
    }
    r->len = size;   /* nothing past the message's own end is read */
    if (rtype == RLERROR) {
        uint32_t ecode = get32(r);
        if (r->bad || ecode == 0 || ecode > 4095) {
            fs.counters.bad_replies++;
            return -EPROTO;
        }
        return -(int)ecode;
    }
    if (rtype != (uint8_t)(type + 1)) {
        fs.counters.bad_replies++;
        return -EPROTO;
    }
    return 0;
}

/* ---- fids ---- */

static int bit(const uint8_t *set, uint32_t i) { return set[i / 8] >> (i % 8) & 1; }
static void set_bit(uint8_t *set, uint32_t i, int v)
{
    if (v)
        set[i / 8] |= (uint8_t)(1u << (i % 8));
    else
        set[i / 8] &= (uint8_t)~(1u << (i % 8));
}

static int fid_alloc(uint32_t *fid)
{
    for (uint32_t i = ROOT_FID + 1; i < MAX_FIDS; i++) {
        if (!bit(fs.fid_used, i)) {
            set_bit(fs.fid_used, i, 1);
            *fid = i;
            return 0;
        }
    }
    return -EMFILE;
}

static void readdir_forget(uint32_t fid);

/* Tells the server to forget fid and frees it (errors only mean it is gone already). */
static void clunk(uint32_t fid)
{
    struct req m = begin(TCLUNK);
    put32(&m, fid);
    struct rep r;
    set_bit(fs.fid_open, fid, 0);
    readdir_forget(fid);
    if (rpc(&m, &r) == -ETIMEDOUT)
        return;   /* the server may still hold it: never reused */
    set_bit(fs.fid_used, fid, 0);
}

static int open_fid(fs_file f)
{
    return fs.mounted && f > ROOT_FID && f < MAX_FIDS && bit(fs.fid_open, (uint32_t)f);
}

/* ---- paths ---- */

/* Splits path into its components (pointers into path, lengths); the count,
 * or -EINVAL for an empty, "." or ".." component or one with a NUL or too long. */
static int split(const char *path, const char **names, uint16_t *lens, int max)
{
    int n = 0;
    if (!*path)
        return 0;
    for (const char *p = path;;) {
        const char *end = strchr(p, '/');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == 0 || len > MAX_NAME || (len == 1 && p[0] == '.') || (len == 2 && p[0] == '.' && p[1] == '.'))
            return -EINVAL;
        if (n == max)
            return -ENAMETOOLONG;
        names[n] = p;
        lens[n++] = (uint16_t)len;
        if (!end)
            return n;
        p = end + 1;
    }
}

#define MAX_DEPTH 64

/* Walks newfid (allocated here) to the first n of the given components. Every
 * qid but the last must be a directory (-ELOOP for a symlink, -ENOTDIR else).
 * 0 with *fid and *last (the root's qid type when n is 0), or a negative errno
 * with nothing left allocated. */
static int walk(const char *const *names, const uint16_t *lens, int n, uint32_t *fid, struct qid *last)
{
    uint32_t newfid;
    int rc = fid_alloc(&newfid);
    if (rc)
        return rc;
    last->type = QT_DIR;
    int done = 0, established = 0;
    do {
        int chunk = n - done < MAX_WALK ? n - done : MAX_WALK;
        struct req m = begin(TWALK);
        put32(&m, established ? newfid : ROOT_FID);
        put32(&m, newfid);
        put16(&m, (uint16_t)chunk);
        for (int i = 0; i < chunk; i++)
            putstr(&m, names[done + i], lens[done + i]);
        struct rep r;
        rc = rpc(&m, &r);
        if (!rc) {
            int refused = 0;
            uint16_t nwqid = get16(&r);
            if (nwqid > chunk)
                r.bad = 1;
            for (int i = 0; i < nwqid && !r.bad; i++) {
                struct qid q;
                getqid(&r, &q);
                if (done + i < n - 1 && !(q.type & QT_DIR) && !refused)
                    refused = q.type & QT_SYMLINK ? -ELOOP : -ENOTDIR;
                *last = q;
            }
            rc = parsed(&r);
            if (rc || nwqid == chunk)
                established = 1;   /* (after a bad reply we cannot know: clunk to be sure) */
            if (!rc)
                rc = refused ? refused : nwqid < chunk ? -ENOENT : 0;   /* partial: newfid did not move */
        }
        done += chunk;
    } while (!rc && done < n);
    if (rc == -ETIMEDOUT)
        return rc;   /* the server may yet take newfid: it stays allocated here */
    if (rc) {
        if (established)
            clunk(newfid);
        else
            set_bit(fs.fid_used, newfid, 0);
        return rc;
    }
    *fid = newfid;
    return 0;
}

/* ---- the API ---- */

uint32_t fs_max_io(void)
{
    return fs.mounted ? fs.msize - WRITE_HDR : 0;
}

void fs_counters(struct fs_counters *out)
{
    *out = fs.counters;
}

int fs_mount(const char *tag, int writable)
{
    if (fs.mounted)
        return -EBUSY;
    uint32_t buf_size;
    int rc = v9p_open(tag, &buf_size);
    if (rc)
        return rc;
    fs.buf_size = fs.msize = buf_size;

    struct req m = begin(TVERSION);
    put32(&m, buf_size);
    putstr(&m, "9P2000.L", 8);
    struct rep r;
    if ((rc = rpc(&m, &r)))
        return rc;
    uint32_t msize = get32(&r);
    uint16_t vlen;
    const char *version = getstr(&r, &vlen);
    if ((rc = parsed(&r)))
        return rc;
    if (vlen != 8 || memcmp(version, "9P2000.L", 8))
        return -ENOSYS;   /* the server does not speak 9P2000.L */
    if (msize < MIN_MSIZE || msize > buf_size) {
        fs.counters.bad_replies++;
        return -EPROTO;
    }
    fs.msize = msize;

    m = begin(TATTACH);
    put32(&m, ROOT_FID);
    put32(&m, NOFID);
    putstr(&m, "root", 4);
    putstr(&m, "", 0);
    put32(&m, 0);   /* n_uname */
    if ((rc = rpc(&m, &r)))
        return rc;
    struct qid q;
    getqid(&r, &q);
    if ((rc = parsed(&r)))
        return rc;
    if (!(q.type & QT_DIR))
        return -ENOTDIR;
    set_bit(fs.fid_used, ROOT_FID, 1);
    fs.writable = writable;
    fs.mounted = 1;
    return 0;
}

/* Tgetattr on a walked or open fid. */
static int getattr(uint32_t fid, struct fs_stat *st)
{
    struct req m = begin(TGETATTR);
    put32(&m, fid);
    put64(&m, GETATTR_BASIC);
    struct rep r;
    int rc = rpc(&m, &r);
    if (rc)
        return rc;
    struct qid q;
    (void)get64(&r);   /* valid */
    getqid(&r, &q);
    st->mode = get32(&r);
    (void)get32(&r);   /* uid */
    (void)get32(&r);   /* gid */
    (void)get64(&r);   /* nlink */
    (void)get64(&r);   /* rdev */
    st->size = get64(&r);
    (void)get64(&r);   /* blksize */
    (void)get64(&r);   /* blocks */
    (void)get64(&r);   /* atime */
    (void)get64(&r);
    st->mtime_sec = get64(&r);
    st->mtime_nsec = (uint32_t)get64(&r);
    (void)take(&r, 8 * 6);   /* ctime, btime, gen, data_version */
    st->ino = q.path;
    st->version = q.version;
    return parsed(&r);
}

int fs_stat(const char *path, struct fs_stat *st)
{
    const char *names[MAX_DEPTH];
    uint16_t lens[MAX_DEPTH];
    if (!fs.mounted)
        return -ENODEV;
    int n = split(path, names, lens, MAX_DEPTH);
    if (n < 0)
        return n;
    uint32_t fid;
    struct qid q;
    int rc = walk(names, lens, n, &fid, &q);
    if (rc)
        return rc;
    rc = getattr(fid, st);
    clunk(fid);
    return rc;
}

int fs_fstat(fs_file f, struct fs_stat *st)
{
    if (!open_fid(f))
        return -EBADF;
    return getattr((uint32_t)f, st);
}

/* Opens fid (walked to an existing file) with Tlopen. */
static int lopen(uint32_t fid, uint32_t lflags)
{
    struct req m = begin(TLOPEN);
    put32(&m, fid);
    put32(&m, lflags | L_NOFOLLOW);
    struct rep r;
    int rc = rpc(&m, &r);
    if (rc)
        return rc;
    struct qid q;
    getqid(&r, &q);
    (void)get32(&r);   /* iounit: we bound every transfer by msize instead */
    return parsed(&r);
}

/* Creates leaf in dirfid, which becomes the open file (Tlcreate). */
static int lcreate(uint32_t dirfid, const char *leaf, uint16_t len, uint32_t lflags)
{
    struct req m = begin(TLCREATE);
    put32(&m, dirfid);
    putstr(&m, leaf, len);
    put32(&m, lflags | L_NOFOLLOW);
    put32(&m, 0644);
    put32(&m, 0);   /* gid */
    struct rep r;
    int rc = rpc(&m, &r);
    if (rc)
        return rc;
    struct qid q;
    getqid(&r, &q);
    (void)get32(&r);   /* iounit */
    return parsed(&r);
}

int fs_open(const char *path, int flags, fs_file *out)
{
    const char *names[MAX_DEPTH];
    uint16_t lens[MAX_DEPTH];
    if (!fs.mounted)
        return -ENODEV;
    if (flags & ~(FS_WRONLY | FS_CREAT | FS_TRUNC | FS_APPEND))
        return -EINVAL;
    int write = flags & FS_WRONLY;
    if ((flags & (FS_CREAT | FS_TRUNC | FS_APPEND)) && !write)
        return -EINVAL;
    if (write && !fs.writable)
        return -EROFS;
    uint32_t lflags = (write ? L_WRONLY : 0) | (flags & FS_TRUNC ? L_TRUNC : 0) | (flags & FS_APPEND ? L_APPEND : 0);
    int n = split(path, names, lens, MAX_DEPTH);
    if (n < 0)
        return n;
    uint32_t fid;
    struct qid q;
    int rc = walk(names, lens, n, &fid, &q);
    if (!rc) {
        if (q.type & QT_SYMLINK)
            rc = -ELOOP;
        else
            rc = lopen(fid, lflags);
    } else if (rc == -ENOENT && (flags & FS_CREAT) && n > 0) {
        if ((rc = walk(names, lens, n - 1, &fid, &q)))
            return rc;
        rc = lcreate(fid, names[n - 1], lens[n - 1], lflags);
    } else {
        return rc;
    }
    if (rc) {
        clunk(fid);
        return rc;
    }
    set_bit(fs.fid_open, fid, 1);
    *out = (fs_file)fid;
    return 0;
}

int fs_read(fs_file f, uint64_t off, void *buf, uint32_t n)
{
    if (!open_fid(f))
        return -EBADF;
    if (n > fs.msize - READ_HDR)
        n = fs.msize - READ_HDR;
    struct req m = begin(TREAD);
    put32(&m, (uint32_t)f);
    put64(&m, off);
    put32(&m, n);
    struct rep r;
    int rc = rpc(&m, &r);
    if (rc)
        return rc;
    uint32_t count = get32(&r);
    if (count > n)
        r.bad = 1;
    const uint8_t *data = take(&r, count);
    if ((rc = parsed(&r)))
        return rc;
    memcpy(buf, data, count);
    return (int)count;
}

int fs_write(fs_file f, uint64_t off, const void *buf, uint32_t n)
{
    if (!open_fid(f))
        return -EBADF;
    if (!fs.writable)
        return -EROFS;
    if (n > fs.msize - WRITE_HDR)
        n = fs.msize - WRITE_HDR;
    struct req m = begin(TWRITE);
    put32(&m, (uint32_t)f);
    put64(&m, off);
    put32(&m, n);
    put(&m, buf, n);
    struct rep r;
    int rc = rpc(&m, &r);
    if (rc)
        return rc;
    uint32_t count = get32(&r);
    if (count > n)
        r.bad = 1;
    if ((rc = parsed(&r)))
        return rc;
    return (int)count;
}

int fs_fsync(fs_file f)
{
    if (!open_fid(f))
        return -EBADF;
    struct req m = begin(TFSYNC);
    put32(&m, (uint32_t)f);
    put32(&m, 0);   /* datasync: no, metadata too */
    struct rep r;
    return rpc(&m, &r);
}

int fs_rename(const char *from, const char *to)
{
    const char *fnames[MAX_DEPTH], *tnames[MAX_DEPTH];
    uint16_t flens[MAX_DEPTH], tlens[MAX_DEPTH];
    if (!fs.mounted)
        return -ENODEV;
    if (!fs.writable)
        return -EROFS;
    int fn = split(from, fnames, flens, MAX_DEPTH), tn = split(to, tnames, tlens, MAX_DEPTH);
    if (fn < 0 || tn < 0)
        return fn < 0 ? fn : tn;
    if (fn == 0 || tn == 0)
        return -EBUSY;   /* the share's root cannot move */
    uint32_t fdir, tdir;
    struct qid q;
    int rc = walk(fnames, flens, fn - 1, &fdir, &q);
    if (rc)
        return rc;
    rc = walk(tnames, tlens, tn - 1, &tdir, &q);
    if (rc) {
        clunk(fdir);
        return rc;
    }
    struct req m = begin(TRENAMEAT);
    put32(&m, fdir);
    putstr(&m, fnames[fn - 1], flens[fn - 1]);
    put32(&m, tdir);
    putstr(&m, tnames[tn - 1], tlens[tn - 1]);
    struct rep r;
    rc = rpc(&m, &r);
    clunk(fdir);
    clunk(tdir);
    return rc;
}

/* Readdir: one Treaddir fetches as many entries as fit; they are handed out
 * one per call while the caller's cookie follows on from the last one. */
#define READDIR_COUNT 8192
static struct {
    uint32_t fid;          /* 0: nothing cached */
    uint64_t next_cookie;  /* the cookie that continues at pos */
    uint32_t len, pos;
    uint8_t data[READDIR_COUNT];
} rd;

static int has_byte(const char *s, uint16_t n, char c)
{
    for (uint16_t i = 0; i < n; i++)
        if (s[i] == c)
            return 1;
    return 0;
}

static void readdir_forget(uint32_t fid)
{
    if (rd.fid == fid)
        rd.fid = 0;
}

static int readdir_fetch(uint32_t fid, uint64_t cookie)
{
    rd.fid = 0;
    uint32_t count = fs.msize - READ_HDR < READDIR_COUNT ? fs.msize - READ_HDR : READDIR_COUNT;
    struct req m = begin(TREADDIR);
    put32(&m, fid);
    put64(&m, cookie);
    put32(&m, count);
    struct rep r;
    int rc = rpc(&m, &r);
    if (rc)
        return rc;
    uint32_t n = get32(&r);
    if (n > count)
        r.bad = 1;
    const uint8_t *data = take(&r, n);
    if ((rc = parsed(&r)))
        return rc;
    memcpy(rd.data, data, n);
    rd.fid = fid;
    rd.next_cookie = cookie;
    rd.len = n;
    rd.pos = 0;
    return 0;
}

int fs_readdir(fs_file dir, uint64_t *cookie, char *name, uint32_t name_len, uint8_t *type)
{
    if (!open_fid(dir))
        return -EBADF;
    if (name_len < 2)
        return -EINVAL;
    /* A server whose entries never advance must not keep us here. */
    for (int fetches = 0;;) {
        if (rd.fid != (uint32_t)dir || rd.next_cookie != *cookie || rd.pos >= rd.len) {
            if (++fetches > 8) {
                fs.counters.bad_replies++;
                return -EPROTO;
            }
            int rc = readdir_fetch((uint32_t)dir, *cookie);
            if (rc)
                return rc;
            if (rd.len == 0) {
                rd.fid = 0;
                return 0;   /* the end */
            }
        }
        struct rep r = { rd.data, rd.len, rd.pos, 0 };
        struct qid q;
        getqid(&r, &q);
        uint64_t next = get64(&r);
        uint8_t t = get8(&r);
        uint16_t n;
        const char *s = getstr(&r, &n);
        int rc = parsed(&r);
        if (rc) {
            rd.fid = 0;
            return rc;
        }
        rd.pos = r.pos;
        rd.next_cookie = *cookie = next;
        if ((n == 1 && s[0] == '.') || (n == 2 && s[0] == '.' && s[1] == '.'))
            continue;
        if (n == 0 || n >= name_len || has_byte(s, n, '/') || has_byte(s, n, 0)) {
            fs.counters.bad_replies++;
            continue;   /* a name the caller could not hold or use: skipped */
        }
        memcpy(name, s, n);
        name[n] = 0;
        *type = t;
        return 1;
    }
}

void fs_close(fs_file f)
{
    if (open_fid(f))
        clunk((uint32_t)f);
}
