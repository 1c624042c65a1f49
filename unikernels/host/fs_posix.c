/* fs.h over a Linux directory, for the services built as one Linux process:
 * the same calls the unikernel makes over 9P, with the same rule that a
 * symlink is never followed (O_NOFOLLOW on every component). */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "fs.h"
#include "fs_posix.h"

#define MAX_FILES 256

static int root = -1;
static DIR *dirs[MAX_FILES];

uint32_t fs_max_io(void) { return 1u << 20; }

int fs_mount(const char *dir, int writable)
{
    (void)writable;
    root = open(dir, O_DIRECTORY | O_RDONLY | O_CLOEXEC);
    return root < 0 ? -errno : 0;
}

int posix_open_beneath(int top, const char *path, int flags, int mode)
{
    char part[256];
    int dir = dup(top);
    if (dir < 0)
        return -errno;
    const char *p = path;
    while (*p) {
        const char *slash = strchr(p, '/');
        size_t n = slash ? (size_t)(slash - p) : strlen(p);
        if (n == 0 || n >= sizeof part) {
            close(dir);
            return n ? -ENAMETOOLONG : -EINVAL;
        }
        memcpy(part, p, n);
        part[n] = 0;
        int last = !slash;
        int fd = last ? openat(dir, part, flags | O_NOFOLLOW | O_CLOEXEC, (mode_t)mode)
                      : openat(dir, part, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        int err = errno;
        close(dir);
        if (fd < 0)
            return err == ENOTDIR && !last ? -ELOOP : -err;
        dir = fd;
        p += n + (slash ? 1 : 0);
    }
    if (p == path) {   /* "" is the root itself */
        close(dir);
        return openat(top, ".", flags | O_CLOEXEC);
    }
    return dir;
}

static int walk(const char *path, int flags, mode_t mode) { return posix_open_beneath(root, path, flags, (int)mode); }

int fs_stat(const char *path, struct fs_stat *st)
{
    int fd = walk(path, O_PATH, 0);
    struct stat s;
    if (fd < 0)
        return fd;
    int rc = fstat(fd, &s) ? -errno : 0;
    close(fd);
    if (rc)
        return rc;
    *st = (struct fs_stat){(uint64_t)s.st_size, (uint64_t)s.st_mtim.tv_sec, (uint32_t)s.st_mtim.tv_nsec,
                           s.st_mode, s.st_ino, 0};
    return 0;
}

int fs_open(const char *path, int flags, fs_file *out)
{
    int os = (flags & FS_WRONLY ? O_WRONLY : O_RDONLY) | (flags & FS_CREAT ? O_CREAT : 0)
           | (flags & FS_TRUNC ? O_TRUNC : 0) | (flags & FS_APPEND ? O_APPEND : 0);
    int fd = walk(path, os, 0644);
    if (fd < 0)
        return fd;
    struct stat s;
    if (fstat(fd, &s) == 0 && S_ISLNK(s.st_mode)) {
        close(fd);
        return -ELOOP;
    }
    *out = fd;
    return 0;
}

int fs_read(fs_file f, uint64_t off, void *buf, uint32_t n)
{
    ssize_t r = pread(f, buf, n, (off_t)off);
    return r < 0 ? -errno : (int)r;
}

int fs_write(fs_file f, uint64_t off, const void *buf, uint32_t n)
{
    ssize_t r = pwrite(f, buf, n, (off_t)off);
    return r < 0 ? -errno : (int)r;
}

int fs_fsync(fs_file f) { return fsync(f) ? -errno : 0; }

int fs_rename(const char *from, const char *to)
{
    if (strchr(from, '/') || strchr(to, '/'))
        return -EINVAL;   /* kv renames within the root only */
    return renameat(root, from, root, to) ? -errno : 0;
}

int fs_readdir(fs_file dir, uint64_t *cookie, char *name, uint32_t name_len, uint8_t *type)
{
    if (dir < 0 || dir >= MAX_FILES)
        return -EBADF;
    if (!dirs[dir]) {
        int fd = dup(dir);
        if (fd < 0 || !(dirs[dir] = fdopendir(fd)))
            return -errno;
    }
    if (*cookie == 0)
        rewinddir(dirs[dir]);
    struct dirent *d;
    do {
        errno = 0;
        d = readdir(dirs[dir]);
    } while (d && (!strcmp(d->d_name, ".") || !strcmp(d->d_name, "..")));
    if (!d)
        return errno ? -errno : 0;
    snprintf(name, name_len, "%s", d->d_name);
    *type = d->d_type;
    (*cookie)++;
    return 1;
}

void fs_close(fs_file f)
{
    if (f >= 0 && f < MAX_FILES && dirs[f]) {
        closedir(dirs[f]);
        dirs[f] = NULL;
    }
    close(f);
}

void fs_counters(struct fs_counters *out) { *out = (struct fs_counters){0, 0, 0}; }
