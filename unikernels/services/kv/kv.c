/* kv: an in-memory store that speaks RESP2 (redis-cli and redis-benchmark
 * work against it), durable through an append-only log on its 9P share.
 *
 * The protocol, the store and the log are shared with the Linux build of the
 * same code (resp.c, store.c, commands.c, session.c, aof.c); this file is the
 * VM's front-end on the connection layer. Replies to writes wait for the log:
 * with appendfsync=always, a turn's writes from every connection are written
 * and synced once, on the next turn (conn_defer), and only then answered —
 * Redis's group commit. A client that does not read its replies is held back
 * by its window: its input is not consumed while replies are pending. */
#include <string.h>
#include "kernel.h"
#include "services.h"
#include "cmdline.h"
#include "conn.h"
#include "fs.h"
#include "wallclock.h"
#include "arena.h"
#include "aof.h"
#include "session.h"
#include "lwip/timeouts.h"

#define RX_MAX (KV_MAX_COMMAND + 1024)
#define OUT_MAX (KV_MAX_COMMAND + 16 * 1024)
#define LOG_MAX (KV_MAX_COMMAND + 16 * 1024)

struct kv_conn {
    uint8_t *held;             /* replies not yet taken by lwIP (arena), or waiting for the log */
    uint32_t held_len, held_off, held_cap;
    uint8_t closing, awaiting_log;
};

static struct kv_server kv = {.name = "kv"};
static char out_buf[OUT_MAX] LAZY;   /* one connection's replies at a time: single-threaded */
static char log_buf[LOG_MAX] LAZY;   /* resp_out writes before it reads */
static struct resp_out log = {log_buf, 0, LOG_MAX, 0};
static int log_failed;

static void release(struct kv_conn *k)
{
    if (k->held)
        kv_mem_free(k->held, k->held_cap);
    k->held = NULL;
    k->held_len = k->held_off = k->held_cap = 0;
}

/* Writes (and, under always, syncs) the records gathered so far. */
static void commit_log(void)
{
    if (log.len && aof_append(&kv, log.buf, (uint32_t)log.len, wallclock_ms()))
        log_failed = 1;   /* nothing more is acknowledged: writes would be lost */
    log.len = 0;
}

/* Sends held replies; 1 when all went out. */
static int send_held(struct conn *c, struct kv_conn *k)
{
    while (k->held_off < k->held_len) {
        uint32_t n = conn_send(c, k->held + k->held_off, k->held_len - k->held_off, CONN_COPY);
        if (n == 0)
            return 0;
        k->held_off += n;
    }
    release(k);
    if (k->closing)
        conn_close(c);
    return 1;
}

static int hold(struct conn *c, struct kv_conn *k, const char *p, uint32_t n)
{
    k->held = kv_mem_alloc(n);
    if (!k->held) {
        conn_abort(c);   /* no memory to keep its replies: it cannot be served */
        return -1;
    }
    memcpy(k->held, p, n);
    k->held_len = k->held_cap = n;
    return 0;
}

static void run(struct conn *c)
{
    struct kv_conn *k = conn_state(c);
    while (!k->held && !k->closing && !conn_closed(c)) {
        uint32_t len;
        const uint8_t *in = conn_rx(c, &len);
        if (len == 0)
            break;
        if (log_failed) {
            conn_abort(c);
            return;
        }
        struct resp_out out = {out_buf, 0, OUT_MAX, 0};
        int close_after = 0;
        size_t used = kv_session_feed(&kv, (const char *)in, len, &out, kv.aof_enabled ? &log : NULL,
                                      wallclock_ms(), &close_after);
        conn_consume(c, (uint32_t)used);
        k->closing = (uint8_t)close_after;
        if (used == 0 && out.len == 0) {
            if (log.len && log.cap - log.len < len + 64) {
                commit_log();   /* the log was too full for the next record */
                continue;
            }
            if (conn_rx_full(c)) {
                struct resp_out err = {out_buf, 0, OUT_MAX, 0};
                resp_error(&err, "ERR Protocol error: command too large");
                conn_send(c, err.buf, (uint32_t)err.len, CONN_COPY);
                conn_close(c);
            }
            break;   /* an incomplete command: wait for more */
        }
        if (log.len && kv.appendfsync && kv.appendfsync[0] == 'a') {
            /* Writes under always: answer once the log holds them, on the next turn. */
            if (hold(c, k, out.buf, (uint32_t)out.len) == 0) {
                k->awaiting_log = 1;
                conn_defer(c);
            }
            return;
        }
        commit_log();   /* everysec (or reads only): written now, synced within a second */
        uint32_t sent = conn_send(c, out.buf, (uint32_t)out.len, CONN_COPY);
        if (sent < out.len && hold(c, k, out.buf + sent, (uint32_t)(out.len - sent)))
            return;
        if (!k->held && k->closing)
            conn_close(c);
    }
    if (conn_peer_closed(c) && !k->held && !conn_closed(c))
        conn_close(c);
}

static void housekeeping(void *arg);
static int housekeeping_due;

static void on_data(struct conn *c)
{
    struct kv_conn *k = conn_state(c);
    struct conn_stats s;
    conn_get_stats(&s);   /* for INFO */
    kv.clients = s.open;
    kv.connections_total = s.accepted;
    if (!housekeeping_due) {
        housekeeping_due = 1;
        sys_timeout(100, housekeeping, NULL);
    }
    if (!k->held)
        run(c);
}

static void on_resume(struct conn *c)
{
    struct kv_conn *k = conn_state(c);
    if (!k->awaiting_log)
        return;
    commit_log();   /* the first connection of the turn commits for all */
    k->awaiting_log = 0;
    if (log_failed) {
        conn_abort(c);
        return;
    }
    if (send_held(c, k))
        run(c);
}

static void on_writable(struct conn *c)
{
    struct kv_conn *k = conn_state(c);
    if (k->held && !k->awaiting_log && send_held(c, k))
        run(c);
}

static void on_close(struct conn *c)
{
    release(conn_state(c));
}

static const struct conn_handlers handlers = {on_data, on_writable, on_resume, on_close};
static struct conn_limits limits = {RX_MAX, 0, 300 * 1000, 256, sizeof(struct kv_conn)};


static int kv_start(const struct boot_args *a)
{
    uint32_t maxmemory_mb = cmdline_uint("maxmemory_mb", 1, 1024, 4);
    const char *appendonly = cmdline_value("appendonly");
    const char *fsync_policy = cmdline_value("appendfsync");
    const char *tag = cmdline_value("share_tag");

    if (fsync_policy && strcmp(fsync_policy, "always") && strcmp(fsync_policy, "everysec"))
        cmdline_die("appendfsync must be always or everysec", fsync_policy);
    if (appendonly && strcmp(appendonly, "yes") && strcmp(appendonly, "no"))
        cmdline_die("appendonly must be yes or no", appendonly);
    kv.name = a->name;
    kv.started_ms = wallclock_ms();
    /* The arena holds the store's budget plus room for held replies. */
    arena_init((size_t)maxmemory_mb * 1024 * 1024 + (size_t)maxmemory_mb * 256 * 1024 + 2 * OUT_MAX);
    if (kv_store_init(&kv.store, (size_t)maxmemory_mb * 1024 * 1024))
        panic("kv: no memory for the store");
    if (!appendonly || !strcmp(appendonly, "yes")) {
        int rc = aof_start_on_share(&kv, tag ? tag : "share", fsync_policy, wallclock_ms());
        if (rc) {
            printf("error: kv: cannot use the append-only log on share '%s': errno %d\n", tag ? tag : "share", -rc);
            return -1;
        }
        printf("kv: log replayed, %u keys\n", kv.store.count);
    }
    conn_limits_from_args(&limits);
    return conn_listen(a->port, &handlers, &limits);
}

/* 100 ms after activity: expire some keys, sync the log under everysec, and
 * compact it when grown. An idle VM has no timer (expired keys wait to be
 * touched, as Redis's lazy expiry), so it sleeps. */
static void housekeeping(void *arg)
{
    int64_t now = wallclock_ms();
    kv_expire_some(&kv.store, now, 64);
    aof_tick(&kv, now);
    if (aof_unsynced())
        sys_timeout(100, housekeeping, NULL);   /* everysec: the sync is still to come */
    else
        housekeeping_due = 0;
}

static const char *const kv_keys[] = {"maxmemory_mb", "appendonly", "appendfsync", "share_tag", CONN_KEYS, NULL};
SERVICE_DEFINE(kv_service, "kv", kv_keys, kv_start);
