/* Files on a host folder shared over virtio-9p (9P2000.L): fs/9p.c over
 * drivers/virtio_9p.c. One share per image, mounted once at start.
 * Every call is synchronous with a bound (a device that does not answer gives
 * -ETIMEDOUT) and returns 0 or a count on success, or a negative errno: the
 * host's own (an Rlerror's, Linux numbers, see errno.h) or ours for a reply
 * that is malformed (-EPROTO), too large (-EMSGSIZE) or absent (-ETIMEDOUT).
 * A symlink is never followed: fs_stat reports it (S_IFLNK), fs_open refuses
 * it (-ELOOP), and a path through one fails with -ELOOP. */
#ifndef UK_FS_H
#define UK_FS_H
#include <stdint.h>
#include "errno.h"

#define FS_S_IFMT 0170000
#define FS_S_IFDIR 0040000
#define FS_S_IFREG 0100000
#define FS_S_IFLNK 0120000
#ifndef S_IFMT
#define S_IFMT FS_S_IFMT
#define S_IFDIR FS_S_IFDIR
#define S_IFREG FS_S_IFREG
#define S_IFLNK FS_S_IFLNK
#endif

struct fs_stat { uint64_t size; uint64_t mtime_sec; uint32_t mtime_nsec; uint32_t mode; /* S_IF* bits + perms */
                 uint64_t ino; uint32_t version; };
typedef int32_t fs_file;                        /* an open handle (a fid), >= 0 */

/* fs_open flags */
#define FS_RDONLY 0
#define FS_WRONLY 1
#define FS_CREAT 0100
#define FS_TRUNC 01000
#define FS_APPEND 02000

/* readdir entry types (as in struct dirent's d_type) */
#define FS_DT_DIR 4
#define FS_DT_REG 8
#define FS_DT_LNK 10

/* Largest fs_read / fs_write a single call transfers; larger requests are
 * short counts (call again). Known after fs_mount (from the negotiated msize). */
uint32_t fs_max_io(void);

int  fs_mount(const char *tag, int writable);   /* find the virtio-9p device with this mount tag, version+attach */
int  fs_stat(const char *path, struct fs_stat *st);   /* path relative to the share root: "a/b.txt", "" = root;
                                                   components must already be validated by the caller (no "..",
                                                   no "."/empty components); walks component by component */
int  fs_open(const char *path, int flags, fs_file *out);  /* FS_RDONLY, FS_WRONLY|FS_CREAT|FS_TRUNC|FS_APPEND */
int  fs_read(fs_file f, uint64_t off, void *buf, uint32_t n);        /* bytes, 0 at EOF */
int  fs_write(fs_file f, uint64_t off, const void *buf, uint32_t n);  /* bytes written */
int  fs_fsync(fs_file f);
int  fs_rename(const char *from, const char *to);
int  fs_readdir(fs_file dir, uint64_t *cookie, char *name, uint32_t name_len, uint8_t *type); /* 1 entry, 0 end */
void fs_close(fs_file f);
/* The stat of an open file: one round trip, where fs_stat(path) takes three
 * (walk, getattr, clunk), so open-then-fstat is the cheap way to serve a file. */
int  fs_fstat(fs_file f, struct fs_stat *st);

/* Counters for a service's info page: requests sent, replies refused as
 * malformed, timeouts. */
struct fs_counters { uint32_t requests, bad_replies, timeouts; };
void fs_counters(struct fs_counters *out);
#endif
