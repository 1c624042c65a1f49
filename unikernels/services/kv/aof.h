/* kv's append-only log on its share (as Redis's AOF): every write that changed
 * something is appended as a replayable command, replayed at boot, and the log
 * is rewritten from the live keys when it has grown to twice its last size. */
#ifndef KV_AOF_H
#define KV_AOF_H
#include <stdint.h>
#include "commands.h"

enum aof_fsync { AOF_ALWAYS, AOF_EVERYSEC };

/* Replays `path` on the mounted share into kv, then opens it for appending.
 * Returns 0, or a negative errno; a torn last record (a crash mid-write) is
 * cut off, as redis-check-aof would. */
int aof_start(struct kv_server *kv, const char *path, enum aof_fsync policy, int64_t now);
/* Mounts `share` writable and starts the log appendonly.aof on it, syncing
 * as `appendfsync` says (everysec, or always for anything else): the VM's and
 * the host programs' one way in. 0 or -errno. */
int aof_start_on_share(struct kv_server *kv, const char *share, const char *appendfsync, int64_t now);
/* Appends records; with `always`, fsyncs before returning. 0 or -errno. */
int aof_append(struct kv_server *kv, const char *buf, uint32_t n, int64_t now);
/* everysec: fsyncs when a second has passed since the last; rewrites when grown. */
void aof_tick(struct kv_server *kv, int64_t now);
/* Records written but not yet synced (everysec): the caller ticks again later. */
int aof_unsynced(void);
#endif
