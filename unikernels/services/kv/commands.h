/* The kv commands, as Redis answers them: one parsed command in, its RESP
 * reply out, and for a write the record to append to the log (an absolute,
 * replayable form: SET with PXAT, PEXPIREAT, DEL). No I/O here. */
#ifndef KV_COMMANDS_H
#define KV_COMMANDS_H
#include "resp.h"
#include "store.h"

struct kv_server {
    struct kv_store store;
    const char *name;            /* shown by INFO */
    int64_t started_ms;
    uint64_t commands, connections_total;
    uint32_t clients;            /* open connections, kept by the front-end */
    int aof_enabled;
    const char *appendfsync;     /* "always" or "everysec" */
    uint64_t aof_bytes, aof_rewrites;
};

enum kv_after { KV_CONTINUE, KV_CLOSE };

/* Executes one command at time `now` (Unix ms). `log` (may be NULL) gets the
 * record of a write that changed something. Returns KV_CLOSE after QUIT. */
enum kv_after kv_execute(struct kv_server *kv, const struct resp_cmd *cmd, struct resp_out *out,
                         struct resp_out *log, int64_t now);

/* Replays one logged record (no reply); 0, or -1 if it is not a record kv writes. */
int kv_replay(struct kv_server *kv, const struct resp_cmd *cmd, int64_t now);

/* Writes one live entry as a log record (SET k v [PXAT t]), for compaction. */
void kv_record_entry(struct resp_out *log, const struct kv_entry *e);
#endif
