/* A short cache of open files by share path (nginx's open_file_cache): a
 * repeated request skips the walk, open and getattr round trips to the host.
 * Bounded in entries (a fixed table, LRU eviction clunks the fid) and in age
 * (an entry older than its validity is opened afresh, so a host edit shows
 * within that bound). See docs/architecture.md (the static service). */
#ifndef STATIC_FILE_CACHE_H
#define STATIC_FILE_CACHE_H
#include <stdint.h>
#include "fs.h"

#define FCACHE_MAX 64           /* entries at most, whatever the boot key says */
#define FCACHE_PATH_MAX 128     /* longer paths are opened uncached (bounds the table's memory) */

/* valid_ms 0 or max_entries 0: no caching (every request opens afresh). */
void fcache_configure(uint32_t valid_ms, uint32_t max_entries);

/* Opens and stats path (relative to the share), through the cache. 0 with
 * *f, *st and *slot: the entry now held (release it with fcache_release), or
 * 0 when the file is not cached and the caller closes *f itself. A negative
 * errno otherwise, nothing held. */
int fcache_open(const char *path, fs_file *f, struct fs_stat *st, uint16_t *slot);

/* The holder is done with the entry's file. */
void fcache_release(uint16_t slot);

/* A read through the entry failed: nobody finds it again, and its fid is
 * clunked once the last holder releases it. */
void fcache_invalidate(uint16_t slot);
#endif
