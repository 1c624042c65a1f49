/* fs.h over 9P2000.L (fs/p9_wire.c speaks the messages): fids are handles,
 * 0 is the share's root and the others come from a bounded table; walks go
 * component by component and refuse to pass through a symlink (each qid on
 * the way must be a directory); readdir hands out one entry per call from
 * one fetched batch. */
#include <string.h>
#include "fs.h"
#include "p9_wire.h"
#include "virtio_9p.h"

#define MIN_MSIZE 4096
#define MAX_FIDS 1024
#define ROOT_FID 0
#define MAX_WALK 16            /* names per Twalk (the protocol's limit) */
#define MAX_NAME 255
#define GETATTR_BASIC 0x7FFull

/* Linux open flags, as 9P2000.L carries them */
#define L_WRONLY 01
#define L_TRUNC 01000
#define L_APPEND 02000
#define L_NOFOLLOW 0400000

static struct {
    int mounted, writable;
    uint8_t fid_used[MAX_FIDS / 8];
    uint8_t fid_open[MAX_FIDS / 8];
} fs;

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
    struct p9_req m = p9_begin(P9_TCLUNK);
    p9_put32(&m, fid);
    struct p9_rep r;
    set_bit(fs.fid_open, fid, 0);
    readdir_forget(fid);
    if (p9_rpc(&m, &r) == -ETIMEDOUT)
        return;   /* the server may still hold it: never reused */
    set_bit(fs.fid_used, fid, 0);
}

static int open_fid(fs_file f)
{
    return fs.mounted && f > ROOT_FID && f < MAX_FIDS && bit(fs.fid_open, (uint32_t)f);
}

/* ---- paths ---- */

#define MAX_DEPTH 64

/* A path as its components (pointers into the path, and lengths). */
struct path {
    const char *names[MAX_DEPTH];
    uint16_t lens[MAX_DEPTH];
    int n;
};

/* Splits path into pp: 0, -ENODEV before a mount, -EINVAL for an empty, "."
 * or ".." component or one too long, -ENAMETOOLONG past MAX_DEPTH. */
static int split(const char *path, struct path *pp)
{
    pp->n = 0;
    if (!fs.mounted)
        return -ENODEV;
    if (!*path)
        return 0;
    for (const char *p = path;;) {
        const char *end = strchr(p, '/');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == 0 || len > MAX_NAME || (len == 1 && p[0] == '.') || (len == 2 && p[0] == '.' && p[1] == '.'))
            return -EINVAL;
        if (pp->n == MAX_DEPTH)
            return -ENAMETOOLONG;
        pp->names[pp->n] = p;
        pp->lens[pp->n++] = (uint16_t)len;
        if (!end)
            return 0;
        p = end + 1;
    }
}

/* Walks newfid (allocated here) to the first n of the given components. Every
 * qid but the last must be a directory (-ELOOP for a symlink, -ENOTDIR else).
 * 0 with *fid and *last (the root's qid type when n is 0), or a negative errno
 * with nothing left allocated. */
static int walk(const struct path *pp, int n, uint32_t *fid, struct p9_qid *last)
{
    const char *const *names = pp->names;
    const uint16_t *lens = pp->lens;
    uint32_t newfid;
    int rc = fid_alloc(&newfid);
    if (rc)
        return rc;
    last->type = P9_QT_DIR;
    int done = 0, established = 0;
    do {
        int chunk = n - done < MAX_WALK ? n - done : MAX_WALK;
        struct p9_req m = p9_begin(P9_TWALK);
        p9_put32(&m, established ? newfid : ROOT_FID);
        p9_put32(&m, newfid);
        p9_put16(&m, (uint16_t)chunk);
        for (int i = 0; i < chunk; i++)
            p9_putstr(&m, names[done + i], lens[done + i]);
        struct p9_rep r;
        rc = p9_rpc(&m, &r);
        if (!rc) {
            int refused = 0;
            uint16_t nwqid = p9_get16(&r);
            if (nwqid > chunk)
                r.bad = 1;
            for (int i = 0; i < nwqid && !r.bad; i++) {
                struct p9_qid q;
                p9_getqid(&r, &q);
                if (done + i < n - 1 && !(q.type & P9_QT_DIR) && !refused)
                    refused = q.type & P9_QT_SYMLINK ? -ELOOP : -ENOTDIR;
                *last = q;
            }
            rc = p9_parsed(&r);
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
    return fs.mounted ? p9.msize - P9_WRITE_HDR : 0;
}

void fs_counters(struct fs_counters *out)
{
    *out = p9.counters;
}

int fs_mount(const char *tag, int writable)
{
    if (fs.mounted)
        return -EBUSY;
    uint32_t buf_size;
    int rc = v9p_open(tag, &buf_size);
    if (rc)
        return rc;
    p9.buf_size = p9.msize = buf_size;

    struct p9_req m = p9_begin(P9_TVERSION);
    p9_put32(&m, buf_size);
    p9_putstr(&m, "9P2000.L", 8);
    struct p9_rep r;
    if ((rc = p9_rpc(&m, &r)))
        return rc;
    uint32_t msize = p9_get32(&r);
    uint16_t vlen;
    const char *version = p9_getstr(&r, &vlen);
    if ((rc = p9_parsed(&r)))
        return rc;
    if (vlen != 8 || memcmp(version, "9P2000.L", 8))
        return -ENOSYS;   /* the server does not speak 9P2000.L */
    if (msize < MIN_MSIZE || msize > buf_size) {
        p9.counters.bad_replies++;
        return -EPROTO;
    }
    p9.msize = msize;

    m = p9_begin(P9_TATTACH);
    p9_put32(&m, ROOT_FID);
    p9_put32(&m, P9_NOFID);
    p9_putstr(&m, "root", 4);
    p9_putstr(&m, "", 0);
    p9_put32(&m, 0);   /* n_uname */
    if ((rc = p9_rpc(&m, &r)))
        return rc;
    struct p9_qid q;
    p9_getqid(&r, &q);
    if ((rc = p9_parsed(&r)))
        return rc;
    if (!(q.type & P9_QT_DIR))
        return -ENOTDIR;
    set_bit(fs.fid_used, ROOT_FID, 1);
    fs.writable = writable;
    fs.mounted = 1;
    return 0;
}

/* Tgetattr on a walked or open fid. */
static int getattr(uint32_t fid, struct fs_stat *st)
{
    struct p9_req m = p9_begin(P9_TGETATTR);
    p9_put32(&m, fid);
    p9_put64(&m, GETATTR_BASIC);
    struct p9_rep r;
    int rc = p9_rpc(&m, &r);
    if (rc)
        return rc;
    struct p9_qid q;
    (void)p9_get64(&r);   /* valid */
    p9_getqid(&r, &q);
    st->mode = p9_get32(&r);
    (void)p9_get32(&r);   /* uid */
    (void)p9_get32(&r);   /* gid */
    (void)p9_get64(&r);   /* nlink */
    (void)p9_get64(&r);   /* rdev */
    st->size = p9_get64(&r);
    (void)p9_get64(&r);   /* blksize */
    (void)p9_get64(&r);   /* blocks */
    (void)p9_get64(&r);   /* atime */
    (void)p9_get64(&r);
    st->mtime_sec = p9_get64(&r);
    st->mtime_nsec = (uint32_t)p9_get64(&r);
    (void)p9_take(&r, 8 * 6);   /* ctime, btime, gen, data_version */
    st->ino = q.path;
    st->version = q.version;
    return p9_parsed(&r);
}

int fs_stat(const char *path, struct fs_stat *st)
{
    struct path pp;
    uint32_t fid;
    struct p9_qid q;
    int rc = split(path, &pp);
    if (!rc)
        rc = walk(&pp, pp.n, &fid, &q);
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

/* Sends a Tlopen or Tlcreate and reads its reply (qid, iounit). */
static int open_rpc(struct p9_req *m)
{
    struct p9_rep r;
    int rc = p9_rpc(m, &r);
    if (rc)
        return rc;
    struct p9_qid q;
    p9_getqid(&r, &q);
    (void)p9_get32(&r);   /* iounit: we bound every transfer by msize instead */
    return p9_parsed(&r);
}

/* Opens fid (walked to an existing file) with Tlopen. */
static int lopen(uint32_t fid, uint32_t lflags)
{
    struct p9_req m = p9_begin(P9_TLOPEN);
    p9_put32(&m, fid);
    p9_put32(&m, lflags | L_NOFOLLOW);
    return open_rpc(&m);
}

/* Creates leaf in dirfid, which becomes the open file (Tlcreate). */
static int lcreate(uint32_t dirfid, const char *leaf, uint16_t len, uint32_t lflags)
{
    struct p9_req m = p9_begin(P9_TLCREATE);
    p9_put32(&m, dirfid);
    p9_putstr(&m, leaf, len);
    p9_put32(&m, lflags | L_NOFOLLOW);
    p9_put32(&m, 0644);
    p9_put32(&m, 0);   /* gid */
    return open_rpc(&m);
}

int fs_open(const char *path, int flags, fs_file *out)
{
    struct path pp;
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
    int rc = split(path, &pp), n = pp.n;
    if (rc)
        return rc;
    uint32_t fid;
    struct p9_qid q;
    rc = walk(&pp, n, &fid, &q);
    if (!rc) {
        if (q.type & P9_QT_SYMLINK)
            rc = -ELOOP;
        else
            rc = lopen(fid, lflags);
    } else if (rc == -ENOENT && (flags & FS_CREAT) && n > 0) {
        if ((rc = walk(&pp, n - 1, &fid, &q)))
            return rc;
        rc = lcreate(fid, pp.names[n - 1], pp.lens[n - 1], lflags);
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

/* Sends a Tread or Treaddir of up to max bytes and copies the data of its
 * reply to buf: the count, or a negative errno. */
static int read_rpc(uint8_t type, uint32_t fid, uint64_t off, uint32_t max, void *buf)
{
    struct p9_req m = p9_begin(type);
    p9_put32(&m, fid);
    p9_put64(&m, off);
    p9_put32(&m, max);
    struct p9_rep r;
    int rc = p9_rpc(&m, &r);
    if (rc)
        return rc;
    uint32_t count = p9_get32(&r);
    if (count > max)
        r.bad = 1;
    const uint8_t *data = p9_take(&r, count);
    if ((rc = p9_parsed(&r)))
        return rc;
    memcpy(buf, data, count);
    return (int)count;
}

int fs_read(fs_file f, uint64_t off, void *buf, uint32_t n)
{
    if (!open_fid(f))
        return -EBADF;
    if (n > p9.msize - P9_READ_HDR)
        n = p9.msize - P9_READ_HDR;
    return read_rpc(P9_TREAD, (uint32_t)f, off, n, buf);
}

int fs_write(fs_file f, uint64_t off, const void *buf, uint32_t n)
{
    if (!open_fid(f))
        return -EBADF;
    if (!fs.writable)
        return -EROFS;
    if (n > p9.msize - P9_WRITE_HDR)
        n = p9.msize - P9_WRITE_HDR;
    struct p9_req m = p9_begin(P9_TWRITE);
    p9_put32(&m, (uint32_t)f);
    p9_put64(&m, off);
    p9_put32(&m, n);
    p9_put(&m, buf, n);
    struct p9_rep r;
    int rc = p9_rpc(&m, &r);
    if (rc)
        return rc;
    uint32_t count = p9_get32(&r);
    if (count > n)
        r.bad = 1;
    if ((rc = p9_parsed(&r)))
        return rc;
    return (int)count;
}

int fs_fsync(fs_file f)
{
    if (!open_fid(f))
        return -EBADF;
    struct p9_req m = p9_begin(P9_TFSYNC);
    p9_put32(&m, (uint32_t)f);
    p9_put32(&m, 0);   /* datasync: no, metadata too */
    struct p9_rep r;
    return p9_rpc(&m, &r);
}

int fs_rename(const char *from, const char *to)
{
    struct path fp, tp;
    if (!fs.mounted)
        return -ENODEV;
    if (!fs.writable)
        return -EROFS;
    int rc = split(from, &fp);
    if (!rc)
        rc = split(to, &tp);
    if (rc)
        return rc;
    if (fp.n == 0 || tp.n == 0)
        return -EBUSY;   /* the share's root cannot move */
    uint32_t fdir, tdir;
    struct p9_qid q;
    rc = walk(&fp, fp.n - 1, &fdir, &q);
    if (rc)
        return rc;
    rc = walk(&tp, tp.n - 1, &tdir, &q);
    if (rc) {
        clunk(fdir);
        return rc;
    }
    struct p9_req m = p9_begin(P9_TRENAMEAT);
    p9_put32(&m, fdir);
    p9_putstr(&m, fp.names[fp.n - 1], fp.lens[fp.n - 1]);
    p9_put32(&m, tdir);
    p9_putstr(&m, tp.names[tp.n - 1], tp.lens[tp.n - 1]);
    struct p9_rep r;
    rc = p9_rpc(&m, &r);
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
    uint32_t count = p9.msize - P9_READ_HDR < READDIR_COUNT ? p9.msize - P9_READ_HDR : READDIR_COUNT;
    int n = read_rpc(P9_TREADDIR, fid, cookie, count, rd.data);
    if (n < 0)
        return n;
    rd.fid = fid;
    rd.next_cookie = cookie;
    rd.len = (uint32_t)n;
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
                p9.counters.bad_replies++;
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
        struct p9_rep r = { rd.data, rd.len, rd.pos, 0 };
        struct p9_qid q;
        p9_getqid(&r, &q);
        uint64_t next = p9_get64(&r);
        uint8_t t = p9_get8(&r);
        uint16_t n;
        const char *s = p9_getstr(&r, &n);
        int rc = p9_parsed(&r);
        if (rc) {
            rd.fid = 0;
            return rc;
        }
        rd.pos = r.pos;
        rd.next_cookie = *cookie = next;
        if ((n == 1 && s[0] == '.') || (n == 2 && s[0] == '.' && s[1] == '.'))
            continue;
        if (n == 0 || n >= name_len || has_byte(s, n, '/') || has_byte(s, n, 0)) {
            p9.counters.bad_replies++;
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
