/* See aof.h. All file I/O goes through fs.h (9P in the VM, POSIX on the host). */
#include <string.h>
#include <stdio.h>
#include "aof.h"
#include "fs.h"
#include "resp.h"

#define CHUNK 16384
#define REWRITE_MIN (1u << 20)   /* never rewrite a log smaller than 1 MiB */

static struct {
    char path[128], tmp[136];
    fs_file f;
    uint64_t size, base_size;     /* now, and just after the last rewrite */
    enum aof_fsync policy;
    int64_t last_sync;
    int dirty, open, torn;
} aof = {.f = -1};

static void rewrite(struct kv_server *kv, int64_t now);

static char chunk[CHUNK + KV_MAX_COMMAND + 128];   /* replay window: one whole record always fits */
static struct resp_cmd replay_cmd;

static int write_all(fs_file f, uint64_t off, const char *buf, uint32_t n)
{
    while (n) {
        int w = fs_write(f, off, buf, n);
        if (w <= 0)
            return w < 0 ? w : -EIO;
        off += (uint32_t)w;
        buf += w;
        n -= (uint32_t)w;
    }
    return 0;
}

/* Returns the bytes of whole records replayed (the rest is a torn tail). */
static int64_t replay(struct kv_server *kv, fs_file f, int64_t now)
{
    uint64_t off = 0, good = 0;
    size_t have = 0;
    for (;;) {
        int r = fs_read(f, off, chunk + have, (uint32_t)(sizeof chunk - have));
        if (r < 0)
            return r;
        off += (uint32_t)r;
        have += (size_t)r;
        size_t pos = 0;
        for (;;) {
            const char *err;
            if (pos == have || chunk[pos] != '*')   /* kv writes arrays only: anything else is torn */
                break;
            long n = resp_parse(chunk + pos, have - pos, &replay_cmd, &err);
            if (n <= 0)
                break;
            if (kv_replay(kv, &replay_cmd, now) < 0)
                printf("kv: log record at byte %llu not replayed\n", (unsigned long long)(good + pos));
            pos += (size_t)n;
        }
        good += pos;
        memmove(chunk, chunk + pos, have - pos);
        have -= pos;
        if (r == 0 || have == sizeof chunk || (have && chunk[0] != '*'))
            break;   /* end of file, or bytes no record of kv's starts with: the tail is torn */
    }
    if (have) {
        printf("kv: %u bytes of a torn record at the end of the log cut off\n", (unsigned)have);
        aof.torn = 1;
    }
    return (int64_t)good;
}

int aof_start(struct kv_server *kv, const char *path, enum aof_fsync policy, int64_t now)
{
    fs_file f;
    snprintf(aof.path, sizeof aof.path, "%s", path);
    snprintf(aof.tmp, sizeof aof.tmp, "%s.tmp", path);
    aof.policy = policy;
    int rc = fs_open(path, FS_RDONLY, &f);
    int64_t good = 0;
    if (rc == 0) {
        good = replay(kv, f, now);
        fs_close(f);
        if (good < 0)
            return (int)good;
    } else if (rc != -ENOENT) {
        return rc;
    }
    rc = fs_open(path, FS_WRONLY | FS_CREAT, &aof.f);
    if (rc)
        return rc;
    aof.size = aof.base_size = (uint64_t)good;   /* appends overwrite a torn tail */
    aof.last_sync = now;
    aof.open = 1;
    kv->aof_enabled = 1;
    kv->appendfsync = policy == AOF_ALWAYS ? "always" : "everysec";
    kv->aof_bytes = aof.size;
    if (aof.torn)
        rewrite(kv, now);   /* a fresh file: no torn bytes left behind the appends */
    return 0;
}

int aof_start_on_share(struct kv_server *kv, const char *share, const char *appendfsync, int64_t now)
{
    int rc = fs_mount(share, 1);
    if (rc)
        return rc;
    return aof_start(kv, "appendonly.aof", appendfsync && !strcmp(appendfsync, "everysec") ? AOF_EVERYSEC : AOF_ALWAYS,
                     now);
}

int aof_append(struct kv_server *kv, const char *buf, uint32_t n, int64_t now)
{
    if (!aof.open || n == 0)
        return 0;
    int rc = write_all(aof.f, aof.size, buf, n);
    if (rc)
        return rc;
    aof.size += n;
    kv->aof_bytes = aof.size;
    aof.dirty = 1;
    if (aof.policy == AOF_ALWAYS) {
        rc = fs_fsync(aof.f);
        aof.dirty = 0;
        aof.last_sync = now;
    }
    return rc;
}

struct rewrite {
    fs_file f;
    uint64_t off;
    struct resp_out out;
    int err;
};

static int flush_rewrite(struct rewrite *w)
{
    if (!w->err && w->out.len)
        w->err = write_all(w->f, w->off, w->out.buf, (uint32_t)w->out.len);
    w->off += w->out.len;
    w->out.len = 0;
    return w->err;
}

static int rewrite_entry(void *ctx, const struct kv_entry *e)
{
    struct rewrite *w = ctx;
    if (w->out.cap - w->out.len < e->klen + e->vlen + 96 && flush_rewrite(w))
        return 1;
    kv_record_entry(&w->out, e);
    return 0;
}

/* Writes the live keys to a new file, syncs it, and renames it over the log. */
static void rewrite(struct kv_server *kv, int64_t now)
{
    struct rewrite w = {.out = {chunk, 0, sizeof chunk, 0}};
    if (fs_open(aof.tmp, FS_WRONLY | FS_CREAT | FS_TRUNC, &w.f))
        return;
    kv_each(&kv->store, now, rewrite_entry, &w);
    if (flush_rewrite(&w) || fs_fsync(w.f)) {
        fs_close(w.f);
        return;
    }
    if (fs_rename(aof.tmp, aof.path)) {
        fs_close(w.f);
        return;
    }
    fs_close(aof.f);
    aof.f = w.f;
    aof.size = aof.base_size = w.off;
    aof.dirty = 0;
    aof.last_sync = now;
    kv->aof_bytes = aof.size;
    kv->aof_rewrites++;
}

void aof_tick(struct kv_server *kv, int64_t now)
{
    if (!aof.open)
        return;
    if (aof.dirty && now - aof.last_sync >= 1000) {
        fs_fsync(aof.f);
        aof.dirty = 0;
        aof.last_sync = now;
    }
    if (aof.size >= REWRITE_MIN && aof.size >= 2 * aof.base_size)
        rewrite(kv, now);
}

int aof_unsynced(void) { return aof.open && aof.dirty; }
