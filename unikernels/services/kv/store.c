/* See store.h. The table doubles when it holds more entries than buckets;
 * growing is refused (the table stays as it is) when the budget has no room,
 * so a full store still answers, only slower. */
#include <string.h>
#include "store.h"

#define INITIAL_BUCKETS 64u

static uint32_t hash_key(const char *k, uint32_t n)
{
    uint32_t h = 2166136261u;   /* FNV-1a */
    for (uint32_t i = 0; i < n; i++)
        h = (h ^ (uint8_t)k[i]) * 16777619u;
    return h;
}

static size_t entry_size(uint32_t kl, uint32_t vl) { return sizeof(struct kv_entry) + kl + vl; }

static int charge(struct kv_store *s, size_t n)
{
    if (s->max && s->used + n > s->max)
        return -1;
    s->used += n;
    return 0;
}

int kv_store_init(struct kv_store *s, size_t max_bytes)
{
    memset(s, 0, sizeof *s);
    s->max = max_bytes;
    size_t bytes = INITIAL_BUCKETS * sizeof(struct kv_entry *);
    if (charge(s, bytes))
        return -1;
    s->buckets = kv_mem_alloc(bytes);
    if (!s->buckets)
        return -1;
    memset(s->buckets, 0, bytes);
    s->mask = INITIAL_BUCKETS - 1;
    return 0;
}

static void free_entry(struct kv_store *s, struct kv_entry *e)
{
    size_t n = entry_size(e->klen, e->vlen);
    s->used -= n;
    s->count--;
    kv_mem_free(e, n);
}

void kv_store_clear(struct kv_store *s)
{
    for (uint32_t b = 0; b <= s->mask; b++) {
        struct kv_entry *e = s->buckets[b];
        while (e) {
            struct kv_entry *next = e->next;
            free_entry(s, e);
            e = next;
        }
        s->buckets[b] = NULL;
    }
}

static void grow(struct kv_store *s)
{
    uint32_t old_n = s->mask + 1, new_n = old_n * 2;
    size_t bytes = new_n * sizeof(struct kv_entry *);
    if (new_n == 0 || charge(s, bytes))
        return;
    struct kv_entry **nb = kv_mem_alloc(bytes);
    if (!nb) {
        s->used -= bytes;
        return;
    }
    memset(nb, 0, bytes);
    for (uint32_t b = 0; b < old_n; b++) {
        struct kv_entry *e = s->buckets[b];
        while (e) {
            struct kv_entry *next = e->next;
            e->next = nb[e->hash & (new_n - 1)];
            nb[e->hash & (new_n - 1)] = e;
            e = next;
        }
    }
    kv_mem_free(s->buckets, old_n * sizeof(struct kv_entry *));
    s->used -= old_n * sizeof(struct kv_entry *);
    s->buckets = nb;
    s->mask = new_n - 1;
}

/* The link that points at the key's entry (or at the chain's end). */
static struct kv_entry **find(struct kv_store *s, const char *k, uint32_t kl, uint32_t h)
{
    struct kv_entry **link = &s->buckets[h & s->mask];
    for (; *link; link = &(*link)->next)
        if ((*link)->hash == h && (*link)->klen == kl && memcmp((*link)->data, k, kl) == 0)
            break;
    return link;
}

static int expired(const struct kv_entry *e, int64_t now) { return e->expire_ms && e->expire_ms <= now; }

static void unlink_free(struct kv_store *s, struct kv_entry **link)
{
    struct kv_entry *e = *link;
    *link = e->next;
    free_entry(s, e);
}

struct kv_entry *kv_get(struct kv_store *s, const char *k, uint32_t kl, int64_t now)
{
    struct kv_entry **link = find(s, k, kl, hash_key(k, kl));
    if (*link && expired(*link, now)) {
        unlink_free(s, link);
        s->expired++;
    }
    return *link;
}

int kv_set(struct kv_store *s, const char *k, uint32_t kl, const char *v, uint32_t vl, int64_t expire_ms)
{
    uint32_t h = hash_key(k, kl);
    struct kv_entry **link = find(s, k, kl, h);
    size_t n = entry_size(kl, vl);
    size_t old = *link ? entry_size((*link)->klen, (*link)->vlen) : 0;

    if (s->max && s->used - old + n > s->max) {
        s->refused++;
        return -1;
    }
    struct kv_entry *e = kv_mem_alloc(n);
    if (!e) {
        s->refused++;
        return -1;
    }
    e->hash = h;
    e->klen = kl;
    e->vlen = vl;
    e->expire_ms = expire_ms;
    memcpy(e->data, k, kl);
    memcpy(e->data + kl, v, vl);
    s->used += n;
    s->count++;
    if (*link) {
        e->next = (*link)->next;
        struct kv_entry *gone = *link;
        *link = e;
        free_entry(s, gone);
    } else {
        e->next = NULL;
        *link = e;
        if (s->count > s->mask + 1)
            grow(s);
    }
    return 0;
}

int kv_del(struct kv_store *s, const char *k, uint32_t kl, int64_t now)
{
    struct kv_entry **link = find(s, k, kl, hash_key(k, kl));
    if (!*link)
        return 0;
    int live = !expired(*link, now);
    unlink_free(s, link);
    return live;
}

uint32_t kv_expire_some(struct kv_store *s, int64_t now, uint32_t budget)
{
    uint32_t removed = 0;
    for (uint32_t seen = 0; seen < budget && seen <= s->mask; seen++) {
        uint32_t b = s->sweep++ & s->mask;
        for (struct kv_entry **link = &s->buckets[b]; *link;) {
            if (expired(*link, now)) {
                unlink_free(s, link);
                s->expired++;
                removed++;
            } else {
                link = &(*link)->next;
            }
        }
    }
    return removed;
}

int kv_each(struct kv_store *s, int64_t now, int (*fn)(void *ctx, const struct kv_entry *e), void *ctx)
{
    for (uint32_t b = 0; b <= s->mask; b++)
        for (const struct kv_entry *e = s->buckets[b]; e; e = e->next)
            if (!expired(e, now) && fn(ctx, e))
                return 1;
    return 0;
}
