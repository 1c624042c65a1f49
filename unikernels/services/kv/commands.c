/* See commands.h. Replies and error texts follow Redis 7 so that redis-cli,
 * redis-benchmark and client libraries see what they expect. */
#include <string.h>
#include <stdio.h>
#include "commands.h"

#define OOM_ERR "OOM command not allowed when used memory > 'maxmemory'."
#define INT_ERR "ERR value is not an integer or out of range"
#define SYNTAX_ERR "ERR syntax error"

struct call {
    struct kv_server *kv;
    const struct resp_cmd *c;
    struct resp_out *out, *log;
    int64_t now;
};

static int word_is(const char *s, uint32_t n, const char *w)
{
    if (strlen(w) != n)
        return 0;
    for (uint32_t i = 0; i < n; i++) {
        char a = s[i];
        if (a >= 'a' && a <= 'z')
            a = (char)(a - 32);
        if (a != w[i])
            return 0;
    }
    return 1;
}

static int arg_is(const struct call *x, int i, const char *w) { return word_is(x->c->argv[i], x->c->argl[i], w); }

static void log_args(struct resp_out *log, int n, const char *const *v, const uint32_t *l)
{
    resp_array(log, n);
    for (int i = 0; i < n; i++)
        resp_bulk(log, v[i], l[i]);
}

static void log_set(struct resp_out *log, const char *k, uint32_t kl, const char *v, uint32_t vl, int64_t at)
{
    if (!log)
        return;
    char t[24];
    int tl = snprintf(t, sizeof t, "%lld", (long long)at);
    const char *argv[5] = {"SET", k, v, "PXAT", t};
    uint32_t argl[5] = {3, kl, vl, 4, (uint32_t)tl};
    log_args(log, at ? 5 : 3, argv, argl);
}

void kv_record_entry(struct resp_out *log, const struct kv_entry *e)
{
    log_set(log, kv_key(e), e->klen, kv_value(e), e->vlen, e->expire_ms);
}

static void cmd_set(struct call *x)
{
    const struct resp_cmd *c = x->c;
    int nx = 0, xx = 0, keepttl = 0;
    int64_t at = 0;

    for (int i = 3; i < c->argc; i++) {
        int64_t v;
        if (arg_is(x, i, "NX") && !xx) {
            nx = 1;
        } else if (arg_is(x, i, "XX") && !nx) {
            xx = 1;
        } else if (arg_is(x, i, "KEEPTTL") && !at) {
            keepttl = 1;
        } else if ((arg_is(x, i, "EX") || arg_is(x, i, "PX") || arg_is(x, i, "EXAT") || arg_is(x, i, "PXAT"))
                   && !at && !keepttl && i + 1 < c->argc) {
            int ms = arg_is(x, i, "PX") || arg_is(x, i, "PXAT");
            int abs = arg_is(x, i, "EXAT") || arg_is(x, i, "PXAT");
            if (resp_parse_int(c->argv[i + 1], c->argl[i + 1], &v)) {
                resp_error(x->out, INT_ERR);
                return;
            }
            if (v <= 0 || (!ms && v > INT64_MAX / 1000)) {
                resp_error(x->out, "ERR invalid expire time in 'set' command");
                return;
            }
            v = ms ? v : v * 1000;
            if (!abs && v > INT64_MAX - x->now) {
                resp_error(x->out, "ERR invalid expire time in 'set' command");
                return;
            }
            at = abs ? v : x->now + v;
            i++;
        } else {
            resp_error(x->out, SYNTAX_ERR);
            return;
        }
    }
    struct kv_entry *old = kv_get(&x->kv->store, c->argv[1], c->argl[1], x->now);
    if ((nx && old) || (xx && !old)) {
        resp_nil(x->out);
        return;
    }
    if (keepttl && old)
        at = old->expire_ms;
    if (kv_set(&x->kv->store, c->argv[1], c->argl[1], c->argv[2], c->argl[2], at)) {
        resp_error(x->out, OOM_ERR);
        return;
    }
    log_set(x->log, c->argv[1], c->argl[1], c->argv[2], c->argl[2], at);
    resp_simple(x->out, "OK");
}

static void cmd_get(struct call *x)
{
    struct kv_entry *e = kv_get(&x->kv->store, x->c->argv[1], x->c->argl[1], x->now);
    if (e)
        resp_bulk(x->out, kv_value(e), e->vlen);
    else
        resp_nil(x->out);
}

static void cmd_mget(struct call *x)
{
    resp_array(x->out, x->c->argc - 1);
    for (int i = 1; i < x->c->argc; i++) {
        struct kv_entry *e = kv_get(&x->kv->store, x->c->argv[i], x->c->argl[i], x->now);
        if (e)
            resp_bulk(x->out, kv_value(e), e->vlen);
        else
            resp_nil(x->out);
    }
}

static void cmd_del(struct call *x)
{
    int64_t n = 0;
    for (int i = 1; i < x->c->argc; i++)
        n += kv_del(&x->kv->store, x->c->argv[i], x->c->argl[i], x->now);
    if (n && x->log)
        log_args(x->log, x->c->argc, x->c->argv, x->c->argl);
    resp_int(x->out, n);
}

static void cmd_exists(struct call *x)
{
    int64_t n = 0;
    for (int i = 1; i < x->c->argc; i++)
        n += kv_get(&x->kv->store, x->c->argv[i], x->c->argl[i], x->now) != NULL;
    resp_int(x->out, n);
}

static void incr_by(struct call *x, int64_t by)
{
    const struct resp_cmd *c = x->c;
    struct kv_entry *e = kv_get(&x->kv->store, c->argv[1], c->argl[1], x->now);
    int64_t v = 0;
    if (e && resp_parse_int(kv_value(e), e->vlen, &v)) {
        resp_error(x->out, INT_ERR);
        return;
    }
    if ((by > 0 && v > INT64_MAX - by) || (by < 0 && v < INT64_MIN - by)) {
        resp_error(x->out, "ERR increment or decrement would overflow");
        return;
    }
    v += by;
    char num[24];
    int n = snprintf(num, sizeof num, "%lld", (long long)v);
    int64_t at = e ? e->expire_ms : 0;
    if (kv_set(&x->kv->store, c->argv[1], c->argl[1], num, (uint32_t)n, at)) {
        resp_error(x->out, OOM_ERR);
        return;
    }
    log_set(x->log, c->argv[1], c->argl[1], num, (uint32_t)n, at);
    resp_int(x->out, v);
}

static void cmd_incr(struct call *x) { incr_by(x, 1); }

static void cmd_incrby(struct call *x)
{
    int64_t by;
    if (resp_parse_int(x->c->argv[2], x->c->argl[2], &by))
        resp_error(x->out, INT_ERR);
    else
        incr_by(x, by);
}

/* EXPIRE (seconds from now) and PEXPIREAT (absolute ms, what the log holds). */
static void expire_at(struct call *x, int64_t at)
{
    const struct resp_cmd *c = x->c;
    struct kv_entry *e = kv_get(&x->kv->store, c->argv[1], c->argl[1], x->now);
    if (!e) {
        resp_int(x->out, 0);
        return;
    }
    if (at <= x->now) {
        kv_del(&x->kv->store, c->argv[1], c->argl[1], x->now);
        if (x->log) {
            const char *argv[2] = {"DEL", c->argv[1]};
            uint32_t argl[2] = {3, c->argl[1]};
            log_args(x->log, 2, argv, argl);
        }
    } else {
        e->expire_ms = at;
        if (x->log) {
            char t[24];
            int tl = snprintf(t, sizeof t, "%lld", (long long)at);
            const char *argv[3] = {"PEXPIREAT", c->argv[1], t};
            uint32_t argl[3] = {9, c->argl[1], (uint32_t)tl};
            log_args(x->log, 3, argv, argl);
        }
    }
    resp_int(x->out, 1);
}

static void cmd_expire(struct call *x)
{
    int64_t s;
    if (resp_parse_int(x->c->argv[2], x->c->argl[2], &s) || s > INT64_MAX / 1000 || s < INT64_MIN / 1000
        || (s > 0 && s * 1000 > INT64_MAX - x->now)) {
        resp_error(x->out, s > 0 ? "ERR invalid expire time in 'expire' command" : INT_ERR);
        return;
    }
    expire_at(x, x->now + s * 1000);
}

static void cmd_pexpireat(struct call *x)
{
    int64_t at;
    if (resp_parse_int(x->c->argv[2], x->c->argl[2], &at))
        resp_error(x->out, INT_ERR);
    else
        expire_at(x, at);
}

static void ttl(struct call *x, int ms)
{
    struct kv_entry *e = kv_get(&x->kv->store, x->c->argv[1], x->c->argl[1], x->now);
    if (!e)
        resp_int(x->out, -2);
    else if (!e->expire_ms)
        resp_int(x->out, -1);
    else
        resp_int(x->out, ms ? e->expire_ms - x->now : (e->expire_ms - x->now + 500) / 1000);
}

static void cmd_ttl(struct call *x) { ttl(x, 0); }
static void cmd_pttl(struct call *x) { ttl(x, 1); }

static void cmd_ping(struct call *x)
{
    if (x->c->argc == 2)
        resp_bulk(x->out, x->c->argv[1], x->c->argl[1]);
    else
        resp_simple(x->out, "PONG");
}

static void cmd_echo(struct call *x) { resp_bulk(x->out, x->c->argv[1], x->c->argl[1]); }
static void cmd_dbsize(struct call *x) { resp_int(x->out, x->kv->store.count); }
static void cmd_quit(struct call *x) { resp_simple(x->out, "OK"); }

static void cmd_info(struct call *x)
{
    const struct kv_server *kv = x->kv;
    char body[768];
    int n = snprintf(body, sizeof body,
                     "# Server\r\nredis_version:7.0.0-ukproxy-kv\r\nredis_mode:standalone\r\n"
                     "server_name:%s\r\nuptime_in_seconds:%lld\r\n"
                     "# Clients\r\nconnected_clients:%u\r\n"
                     "# Memory\r\nused_memory:%u\r\nmaxmemory:%u\r\n"
                     "# Persistence\r\naof_enabled:%d\r\nappendfsync:%s\r\naof_current_size:%llu\r\n"
                     "aof_rewrites:%llu\r\n"
                     "# Stats\r\ntotal_connections_received:%llu\r\ntotal_commands_processed:%llu\r\n"
                     "expired_keys:%llu\r\nrejected_writes_oom:%llu\r\n"
                     "# Keyspace\r\ndb0:keys=%u\r\n",
                     kv->name, (long long)((x->now - kv->started_ms) / 1000), kv->clients,
                     (unsigned)kv->store.used, (unsigned)kv->store.max, kv->aof_enabled,
                     kv->appendfsync ? kv->appendfsync : "no", (unsigned long long)kv->aof_bytes,
                     (unsigned long long)kv->aof_rewrites, (unsigned long long)kv->connections_total,
                     (unsigned long long)kv->commands, (unsigned long long)kv->store.expired,
                     (unsigned long long)kv->store.refused, kv->store.count);
    resp_bulk(x->out, body, n < (int)sizeof body ? (size_t)n : sizeof body - 1);
}

/* Redis's arity: > 0 exactly that many words, < 0 at least -arity. */
struct command {
    const char *name;
    int arity;
    void (*run)(struct call *x);
};

static const struct command commands[] = {
    {"GET", 2, cmd_get},       {"SET", -3, cmd_set},         {"DEL", -2, cmd_del},
    {"EXISTS", -2, cmd_exists}, {"INCR", 2, cmd_incr},        {"INCRBY", 3, cmd_incrby},
    {"EXPIRE", 3, cmd_expire}, {"PEXPIREAT", 3, cmd_pexpireat}, {"TTL", 2, cmd_ttl},
    {"PTTL", 2, cmd_pttl},     {"MGET", -2, cmd_mget},       {"PING", -1, cmd_ping},
    {"ECHO", 2, cmd_echo},     {"DBSIZE", 1, cmd_dbsize},    {"INFO", -1, cmd_info},
    {"QUIT", -1, cmd_quit},
};

static const struct command *lookup(const struct resp_cmd *c)
{
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (word_is(c->argv[0], c->argl[0], commands[i].name))
            return &commands[i];
    return NULL;
}

/* Redis quotes at most 128 bytes of a name or argument in its error texts. */
static int quoted(char *dst, size_t n, const char *s, uint32_t l)
{
    return snprintf(dst, n, "'%.*s'", (int)(l > 128 ? 128 : l), s);
}

static void unknown(struct call *x)
{
    char msg[512];
    int n = snprintf(msg, sizeof msg, "ERR unknown command ");
    n += quoted(msg + n, sizeof msg - n, x->c->argv[0], x->c->argl[0]);
    n += snprintf(msg + n, sizeof msg - n, ", with args beginning with: ");
    for (int i = 1; i < x->c->argc && i < 4 && n < (int)sizeof msg - 140; i++) {
        n += quoted(msg + n, sizeof msg - n, x->c->argv[i], x->c->argl[i]);
        n += snprintf(msg + n, sizeof msg - n, " ");
    }
    resp_error(x->out, msg);
}

enum kv_after kv_execute(struct kv_server *kv, const struct resp_cmd *cmd, struct resp_out *out,
                         struct resp_out *log, int64_t now)
{
    struct call x = {kv, cmd, out, log, now};
    if (cmd->argc == 0)
        return KV_CONTINUE;   /* an empty inline line: Redis ignores it */
    kv->commands++;
    const struct command *c = lookup(cmd);
    if (!c) {
        unknown(&x);
        return KV_CONTINUE;
    }
    if ((c->arity > 0 && cmd->argc != c->arity) || (c->arity < 0 && cmd->argc < -c->arity)) {
        char msg[200];
        char lower[16];
        size_t i = 0;
        for (; c->name[i] && i < sizeof lower - 1; i++)
            lower[i] = (char)(c->name[i] | 0x20);
        lower[i] = 0;
        snprintf(msg, sizeof msg, "ERR wrong number of arguments for '%s' command", lower);
        resp_error(out, msg);
        return KV_CONTINUE;
    }
    c->run(&x);
    return c->run == cmd_quit ? KV_CLOSE : KV_CONTINUE;
}

int kv_replay(struct kv_server *kv, const struct resp_cmd *cmd, int64_t now)
{
    char scratch[64];
    struct resp_out sink = {scratch, 0, sizeof scratch, 0};
    const struct command *c = cmd->argc ? lookup(cmd) : NULL;
    if (!c || (c->run != cmd_set && c->run != cmd_del && c->run != cmd_pexpireat))
        return -1;
    if ((c->arity > 0 && cmd->argc != c->arity) || (c->arity < 0 && cmd->argc < -c->arity))
        return -1;
    struct call x = {kv, cmd, &sink, NULL, now};
    c->run(&x);
    return sink.len && scratch[0] == '-' && scratch[1] == 'O' ? -1 : 0;   /* -OOM: the log no longer fits */
}
