/* Paging, so that a stray pointer faults instead of silently corrupting memory:
 * the kernel's code is read-only, everything else is no-execute, page 0 (NULL)
 * and the page under the stack are unmapped. PAE page tables, because 32-bit
 * paging has no no-execute bit; PAE keeps the kernel, lwIP and every driver
 * 32-bit (long mode would mean a 64-bit build of all of it for one bit).
 *
 * The whole 4 GiB is identity-mapped, so a physical address is its own
 * pointer (DMA buffers from page_alloc, device MMIO such as the local APIC):
 * 2 MiB pages, except where the permissions change within one (page 0, the
 * code and constants, the stack guard), which get 4 KiB pages. Few page
 * tables to fill keeps boot as fast as before. */
#include <stdint.h>
#include <string.h>
#include "kernel.h"

#define PTE_P   (1ull << 0)
#define PTE_RW  (1ull << 1)
#define PTE_PS  (1ull << 7)      /* in a directory entry: a 2 MiB page */
#define PTE_NX  (1ull << 63)
#define MIB2    0x200000u
#define EFER    0xC0000080u
#define EFER_NXE (1u << 11)
#define CR0_PG  (1u << 31)
#define CR0_WP  (1u << 16)       /* the kernel too faults on writes to read-only pages */
#define CR4_PAE (1u << 5)

extern char __text_start[], __rodata_start[], __data_start[];

static uint64_t pdpt[4] __attribute__((aligned(32)));
static uint64_t nx;   /* PTE_NX when the CPU has it, else 0 (the bit would be reserved) */

static int cpu_has_nx(void)
{
    uint32_t a, b, c, d;
    __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(0x80000000u));
    if (a < 0x80000001u)
        return 0;
    __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(0x80000001u));
    return (d >> 20) & 1;
}

static uint64_t low_page(uintptr_t addr)
{
    uintptr_t guard = (uintptr_t)stack_guard;
    if (addr == 0 || addr == guard)
        return 0;                                   /* NULL page, stack guard: not present */
    if (addr < 0x100000)
        return addr | PTE_P | nx;                   /* BIOS area: read-only */
    if (addr >= (uintptr_t)__text_start && addr < (uintptr_t)__rodata_start)
        return addr | PTE_P;                        /* code: read-only, executable */
    if (addr >= (uintptr_t)__rodata_start && addr < (uintptr_t)__data_start)
        return addr | PTE_P | nx;                   /* constants */
    return addr | PTE_P | PTE_RW | nx;              /* data, bss, stack, heap */
}

void paging_init(void)
{
    if (cpu_has_nx())
        nx = PTE_NX;
    uint64_t *pd = page_alloc(4 * 4096);             /* 4 directories x 512 x 2 MiB */
    uintptr_t guard = (uintptr_t)stack_guard;
    for (uint32_t i = 0; i < 4 * 512; i++) {
        uintptr_t base = (uintptr_t)i * MIB2;
        if (base < (uintptr_t)__data_start || (guard >= base && guard - base < MIB2)) {
            uint64_t *pt = page_alloc(4096);
            for (uint32_t j = 0; j < 512; j++)
                pt[j] = low_page(base + j * 4096);
            pd[i] = (uintptr_t)pt | PTE_P | PTE_RW;     /* the table's entries decide */
        } else {
            pd[i] = base | PTE_P | PTE_RW | PTE_PS | nx;
        }
    }
    for (int i = 0; i < 4; i++)
        pdpt[i] = ((uintptr_t)pd + (uintptr_t)i * 4096) | PTE_P;

    uint32_t cr0, cr4;
    __asm__ volatile("mov %%cr4, %0" : "=r"(cr4));
    __asm__ volatile("mov %0, %%cr4" :: "r"(cr4 | CR4_PAE));
    if (nx) {
        uint32_t lo, hi;
        __asm__ volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(EFER));
        __asm__ volatile("wrmsr" :: "a"(lo | EFER_NXE), "d"(hi), "c"(EFER));
    }
    __asm__ volatile("mov %0, %%cr3" :: "r"((uint32_t)pdpt) : "memory");
    __asm__ volatile("mov %%cr0, %0" : "=r"(cr0));
    __asm__ volatile("mov %0, %%cr0" :: "r"(cr0 | CR0_PG | CR0_WP) : "memory");
    idt_set_fault_cr3((uint32_t)pdpt);
    if (!nx)
        printf("paging: this CPU has no NX bit: data stays executable\n");
    selftest_run();
}
