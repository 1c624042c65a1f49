/* kv_port.h in the one-process original: a batch is handed to kv's own code
 * (kv_session_feed, the same commands, store and log as the kv unikernel) by
 * a function call, no socket and no RESP parsing by a server in between. The
 * batches of one loop turn run together, their log records are written (and
 * synced, under appendfsync always) once, and then every caller hears back:
 * the same group commit as the kv service. */
#include <stdlib.h>
#include <string.h>
#include "kv_port.h"
#include "kv_inprocess.h"
#include "session.h"
#include "aof.h"

struct job {
    struct job *next;
    kv_done_fn done;
    void *arg;
    int commands;
    uint32_t len;
    char buf[KV_BATCH_MAX];
    char reply[KV_BATCH_MAX * 16];
    uint32_t reply_len;
};

static struct kv_server *kv;
static struct job *queue, *queue_tail;
static int64_t (*clock_ms)(void);
static char log_buf[KV_BATCH_MAX * 64];
static struct kv_reply replies[KV_REPLIES_MAX];

void kv_inprocess_init(struct kv_server *server, int64_t (*now_ms)(void))
{
    kv = server;
    clock_ms = now_ms;
}

void kv_port_init(void) {}

void kv_submit(const struct kv_batch *b, kv_done_fn done, void *arg)
{
    struct job *j = malloc(sizeof *j);
    if (!j)
        abort();
    j->next = NULL;
    j->done = done;
    j->arg = arg;
    j->commands = b->overflow ? 0 : b->commands;
    j->len = b->len;
    memcpy(j->buf, b->buf, b->len);
    if (queue_tail)
        queue_tail->next = j;
    else
        queue = j;
    queue_tail = j;
}

int kv_inprocess_turn(void)
{
    int64_t now = clock_ms();
    kv_expire_some(&kv->store, now, 16);
    aof_tick(kv, now);   /* everysec's sync, and compaction */
    struct job *batch = queue;
    queue = queue_tail = NULL;
    if (!batch)
        return 0;
    struct resp_out log = {log_buf, 0, sizeof log_buf, 0};
    for (struct job *j = batch; j; j = j->next) {
        struct resp_out out = {j->reply, 0, sizeof j->reply, 0};
        int close = 0;
        if (log.cap - log.len < j->len + 64 && aof_append(kv, log.buf, (uint32_t)log.len, now) == 0)
            log.len = 0;
        kv_session_feed(kv, j->buf, j->len, &out, kv->aof_enabled ? &log : NULL, now, &close);
        j->reply_len = (uint32_t)out.len;
    }
    int log_ok = !log.len || aof_append(kv, log.buf, (uint32_t)log.len, now) == 0;
    for (struct job *j = batch, *next; j; j = next) {
        next = j->next;
        int n = 0;
        long used = log_ok && j->commands
                        ? kv_parse_replies(j->reply, j->reply_len, j->commands, replies, KV_REPLIES_MAX, &n)
                        : -1;
        j->done(j->arg, replies, used > 0 ? n : 0, used > 0 ? 0 : -5 /* EIO */);
        free(j);
    }
    return queue != NULL;
}
