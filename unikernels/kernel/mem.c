/* Memory: a bump allocator over the multiboot memory map's region above the
 * kernel. Everything allocated here (virtqueues, DMA buffers) lives for the
 * VM's lifetime; lwIP keeps its own heap and pools for what comes and goes.
 * Guest RAM no one has written costs the host nothing (QEMU's RAM is anonymous
 * memory), and a page that is only read maps the host's shared zero page; so
 * page_alloc zeroes only pages that are not zero already, and a large
 * allocation (kv's arena) costs the host what the service fills, not its size.
 * QEMU puts the multiboot info and command line right after the kernel, so
 * page_init copies the command line out before the allocator can reuse it.
 * Everything is identity-mapped (paging.c), so a page's address is what a
 * device is given for DMA. */
#include <stdint.h>
#include <string.h>
#include "kernel.h"
#include "cmdline.h"

extern char __kernel_end[];

struct mb_info {
    uint32_t flags, mem_lower, mem_upper, boot_device, cmdline;
    uint32_t mods_count, mods_addr, syms[4], mmap_length, mmap_addr;
} __attribute__((packed));

struct mb_mmap {
    uint32_t size;
    uint64_t base, len;
    uint32_t type;
} __attribute__((packed));

static uintptr_t heap_next, heap_end, heap_start;
static uintptr_t ebda;

uintptr_t bios_ebda(void)
{
    return ebda;
}

void page_init(uint32_t mbi_addr)
{
    const struct mb_info *mbi = (const struct mb_info *)mbi_addr;
    uint64_t top = 0;

    if (mbi->flags & (1u << 2)) {
        cmdline_copy((const char *)mbi->cmdline);
        selftest_pick((const char *)mbi->cmdline);
    }
    /* The BIOS data area's EBDA segment lives in page 0, which paging unmaps. */
    ebda = (uintptr_t)(*(const volatile uint16_t *)0x40E) << 4;
    if (mbi->flags & (1u << 6)) {
        uintptr_t p = mbi->mmap_addr, end = p + mbi->mmap_length;
        for (; p < end; p += ((const struct mb_mmap *)p)->size + 4) {
            const struct mb_mmap *m = (const struct mb_mmap *)p;
            if (m->type == 1 && m->base <= 0x100000 && m->base + m->len > 0x100000)
                top = m->base + m->len;
        }
    } else if (mbi->flags & 1u) {
        top = 0x100000 + (uint64_t)mbi->mem_upper * 1024;
    }
    if (top == 0)
        panic("no usable memory in the multiboot map");
    if (top > 0xFFFFF000u)
        top = 0xFFFFF000u;
    heap_start = heap_next = ((uintptr_t)__kernel_end + 4095) & ~4095u;
    heap_end = (uintptr_t)top & ~4095u;
    if (heap_next >= heap_end)
        panic("kernel does not fit in memory");
}

/* Clear [p, p + bytes) a page at a time, writing a page only if it holds a
 * non-zero word (the firmware's or the loader's leftovers). */
static void zero_unless_zero(uint8_t *p, size_t bytes)
{
    uint8_t *end = p + bytes;
    while (p < end) {
        uint8_t *page_end = (uint8_t *)(((uintptr_t)p + 4096) & ~4095u);
        if (page_end > end)
            page_end = end;
        size_t n = (size_t)(page_end - p), i = 0;
        int dirty = 0;
        for (; i + 4 <= n && !dirty; i += 4)     /* p is 16-byte aligned */
            dirty = *(const uint32_t *)(const void *)(p + i) != 0;
        for (; i < n && !dirty; i++)
            dirty = p[i] != 0;
        if (dirty)
            memset(p, 0, n);
        p = page_end;
    }
}

void *page_alloc(size_t bytes)
{
    uintptr_t align = bytes >= 4096 ? 4096 : 16;
    uintptr_t p = (heap_next + align - 1) & ~(align - 1);
    if (p + bytes > heap_end || p + bytes < p)
        panic("out of memory allocating %u bytes", (unsigned)bytes);
    heap_next = p + bytes;
    zero_unless_zero((uint8_t *)p, bytes);
    return (void *)p;
}

size_t pages_total(void) { return heap_end - heap_start; }
size_t pages_free(void) { return heap_end - heap_next; }
