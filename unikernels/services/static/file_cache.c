/* The open-file cache (file_cache.h). A linear table: FCACHE_MAX entries
 * scanned with a hash first is nothing next to one round trip to the host.
 * An entry is held (refs) while responses stream from its fid, so eviction
 * takes only unheld entries, least recently used first; an expired or
 * invalidated entry that is still held is hidden from lookups and clunked
 * by its last release. */
#include <string.h>
#include "kernel.h"
#include "file_cache.h"

struct entry {
    char path[FCACHE_PATH_MAX + 1];
    uint32_t hash;
    uint8_t used;                /* holds an open fid */
    uint8_t live;                /* findable by path (not expired, not invalidated) */
    uint16_t refs;               /* responses using the fid now */
    fs_file file;
    struct fs_stat st;
    uint32_t opened_ms;          /* when the path was opened and stat'd */
    uint32_t last_use;           /* LRU clock */
};

static struct entry table[FCACHE_MAX];
static uint32_t valid_ms, max_entries, clock;

void fcache_configure(uint32_t valid, uint32_t max)
{
    valid_ms = valid;
    max_entries = max < FCACHE_MAX ? max : FCACHE_MAX;
}

static uint32_t hash_of(const char *p)
{
    uint32_t h = 2166136261u;   /* FNV-1a */
    while (*p)
        h = (h ^ (uint8_t)*p++) * 16777619u;
    return h;
}

static void drop(struct entry *e)
{
    fs_close(e->file);
    e->used = e->live = 0;
}

/* Opens the file and stats the open fid (one round trip fewer than a stat by
 * path first). A symlink is refused (-ELOOP), as is a FIFO, socket or device
 * (-ENXIO, by QEMU). 0, or a negative errno with nothing open. */
static int open_stat(const char *p, fs_file *f, struct fs_stat *st)
{
    int rc = fs_open(p, FS_RDONLY, f);
    if (rc)
        return rc;
    rc = fs_fstat(*f, st);
    if (rc)
        fs_close(*f);
    return rc;
}

/* A free entry, or the least recently used unheld one emptied; NULL when
 * every entry is held. */
static struct entry *victim(void)
{
    struct entry *lru = NULL;
    for (uint32_t i = 0; i < max_entries; i++) {
        struct entry *e = &table[i];
        if (!e->used)
            return e;
        if (!e->refs && (!lru || (int32_t)(e->last_use - lru->last_use) < 0))
            lru = e;
    }
    if (lru)
        drop(lru);
    return lru;
}

int fcache_open(const char *path, fs_file *f, struct fs_stat *st, uint16_t *slot)
{
    *slot = 0;
    size_t len = strlen(path);
    if (!valid_ms || !max_entries || len > FCACHE_PATH_MAX)
        return open_stat(path, f, st);
    uint32_t h = hash_of(path), now = uptime_ms();
    for (uint32_t i = 0; i < max_entries; i++) {
        struct entry *e = &table[i];
        if (!e->live || e->hash != h || strcmp(e->path, path))
            continue;
        if (now - e->opened_ms >= valid_ms) {   /* too old: open afresh below */
            e->live = 0;
            if (!e->refs)
                drop(e);
            break;
        }
        e->refs++;
        e->last_use = ++clock;
        *f = e->file;
        *st = e->st;
        *slot = (uint16_t)(i + 1);
        return 0;
    }
    int rc = open_stat(path, f, st);
    if (rc)
        return rc;   /* errors are not cached: a hostile client's misses cost no entry */
    struct entry *e = victim();
    if (!e)
        return 0;   /* all held: this one stays uncached */
    memcpy(e->path, path, len + 1);
    e->hash = h;
    e->used = e->live = 1;
    e->refs = 1;
    e->file = *f;
    e->st = *st;
    e->opened_ms = now;
    e->last_use = ++clock;
    *slot = (uint16_t)(e - table + 1);
    return 0;
}

void fcache_release(uint16_t slot)
{
    struct entry *e = &table[slot - 1];
    if (e->refs && !--e->refs && !e->live)
        drop(e);
}

void fcache_invalidate(uint16_t slot)
{
    table[slot - 1].live = 0;
}
