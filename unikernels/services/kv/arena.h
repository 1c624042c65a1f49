/* kv's allocator in the VM (arena.c); kv_mem_alloc/kv_mem_free come from it. */
#ifndef KV_ARENA_H
#define KV_ARENA_H
#include <stddef.h>
void arena_init(size_t bytes);
size_t arena_in_use(void);
size_t arena_size(void);
#endif
