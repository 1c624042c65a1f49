/* The kv store: string keys to string values with optional expiry, in a
 * chained hash table, inside a byte budget (maxmemory) that it enforces itself.
 * Time is passed in (milliseconds on whatever clock the caller keeps), so the
 * store has no clock of its own and runs the same on the host and in a VM. */
#ifndef KV_STORE_H
#define KV_STORE_H
#include <stddef.h>
#include <stdint.h>

/* Memory comes from the platform: libc on the host, an arena in the VM. */
void *kv_mem_alloc(size_t n);
void kv_mem_free(void *p, size_t n);

struct kv_entry {
    struct kv_entry *next;
    uint32_t hash, klen, vlen;
    int64_t expire_ms;   /* absolute; 0: none */
    char data[];         /* key, then value */
};

struct kv_store {
    struct kv_entry **buckets;
    uint32_t mask;        /* buckets - 1 */
    uint32_t count;
    size_t used;          /* bytes of entries and buckets, as charged against max */
    size_t max;           /* 0: no limit */
    uint64_t expired, refused;   /* removed on expiry; writes refused for want of room */
    uint32_t sweep;              /* kv_expire_some's next bucket */
};

int kv_store_init(struct kv_store *s, size_t max_bytes);
void kv_store_clear(struct kv_store *s);

/* The live entry for a key, or NULL (an expired one is removed on the way). */
struct kv_entry *kv_get(struct kv_store *s, const char *k, uint32_t kl, int64_t now);
/* Stores value under key with an absolute expiry (0: none). Returns 0, or -1
 * when the budget (or the platform) has no room; the old value is then kept. */
int kv_set(struct kv_store *s, const char *k, uint32_t kl, const char *v, uint32_t vl, int64_t expire_ms);
/* Removes a key; 1 if it existed (live), else 0. */
int kv_del(struct kv_store *s, const char *k, uint32_t kl, int64_t now);
/* Removes up to `budget` expired entries, resuming where the last call stopped. */
uint32_t kv_expire_some(struct kv_store *s, int64_t now, uint32_t budget);

/* Visits every live entry (for compaction); stops early when fn returns non-zero. */
int kv_each(struct kv_store *s, int64_t now, int (*fn)(void *ctx, const struct kv_entry *e), void *ctx);

static inline const char *kv_key(const struct kv_entry *e) { return e->data; }
static inline const char *kv_value(const struct kv_entry *e) { return e->data + e->klen; }
#endif
