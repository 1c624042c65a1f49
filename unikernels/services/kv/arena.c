/* kv's memory in the VM: one arena taken at boot, carved into power-of-two
 * size classes with a free list each. O(1), no fragmentation across classes
 * to chase, at most half of a block wasted; the store charges exact sizes
 * against maxmemory itself, and an arena that runs out answers NULL, which
 * the store turns into an OOM error reply. */
#include <stdint.h>
#include <string.h>
#include "kernel.h"
#include "arena.h"

#define MIN_SHIFT 4                      /* 16-byte blocks */
#define MAX_SHIFT 20                     /* 1 MiB: the largest block (a bucket array) */
#define CLASSES (MAX_SHIFT - MIN_SHIFT + 1)

struct free_block { struct free_block *next; };

static struct {
    uint8_t *next, *end;
    struct free_block *free[CLASSES];
    size_t in_use, size;
} arena;

void arena_init(size_t bytes)
{
    arena.next = page_alloc(bytes);
    arena.end = arena.next + bytes;
    arena.size = bytes;
}

static int class_of(size_t n)
{
    int c = 0;
    while (((size_t)1 << (c + MIN_SHIFT)) < n)
        c++;
    return c;
}

void *kv_mem_alloc(size_t n)
{
    if (n == 0 || n > ((size_t)1 << MAX_SHIFT))
        return NULL;
    int c = class_of(n);
    size_t block = (size_t)1 << (c + MIN_SHIFT);
    void *p = arena.free[c];
    if (p) {
        arena.free[c] = arena.free[c]->next;
    } else {
        if ((size_t)(arena.end - arena.next) < block)
            return NULL;
        p = arena.next;
        arena.next += block;
    }
    arena.in_use += block;
    return p;
}

void kv_mem_free(void *p, size_t n)
{
    if (!p)
        return;
    int c = class_of(n);
    struct free_block *b = p;
    b->next = arena.free[c];
    arena.free[c] = b;
    arena.in_use -= (size_t)1 << (c + MIN_SHIFT);
}

size_t arena_in_use(void) { return arena.in_use; }
size_t arena_size(void) { return arena.size; }
