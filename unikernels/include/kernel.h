/* Kernel-wide helpers: port I/O, console, panic, clocks. */
#ifndef UK_KERNEL_H
#define UK_KERNEL_H
#include <stdint.h>
#include <stddef.h>
#include <stdio.h>

static inline void outb(uint16_t p, uint8_t v) { __asm__ volatile("outb %0,%1" :: "a"(v), "Nd"(p)); }
static inline void outw(uint16_t p, uint16_t v) { __asm__ volatile("outw %0,%1" :: "a"(v), "Nd"(p)); }
static inline void outl(uint16_t p, uint32_t v) { __asm__ volatile("outl %0,%1" :: "a"(v), "Nd"(p)); }
static inline uint8_t inb(uint16_t p) { uint8_t v; __asm__ volatile("inb %1,%0" : "=a"(v) : "Nd"(p)); return v; }
static inline uint16_t inw(uint16_t p) { uint16_t v; __asm__ volatile("inw %1,%0" : "=a"(v) : "Nd"(p)); return v; }
static inline uint32_t inl(uint16_t p) { uint32_t v; __asm__ volatile("inl %1,%0" : "=a"(v) : "Nd"(p)); return v; }
static inline uint64_t rdtsc(void) { uint32_t lo, hi; __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi)); return ((uint64_t)hi << 32) | lo; }
static inline void cli(void) { __asm__ volatile("cli" ::: "memory"); }
static inline void sti(void) { __asm__ volatile("sti" ::: "memory"); }
/* sti;hlt is atomic: an interrupt raised after cli wakes the hlt, never lost. */
static inline void sti_hlt(void) { __asm__ volatile("sti; hlt" ::: "memory"); }
#define barrier() __asm__ volatile("" ::: "memory")

/* console.c */
void console_init(void);
void console_write(const char *s, size_t n);

/* power.c: exit codes go through isa-debug-exit (QEMU exits with code*2+1). */
void power_off(void) __attribute__((noreturn));
void fatal_exit(int code) __attribute__((noreturn));
void panic(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));

/* idt.c: also the GDT with a task for double faults, which runs on a stack of its own
 * (a stack overflow cannot push an exception frame; the CPU switches tasks instead). */
typedef void (*irq_handler_t)(void);
void idt_init(void);
void irq_register(int irq, irq_handler_t h);
void irq_unmask(int irq);
void irq_mask(int irq);
/* Vectors 48-63 come from the local APIC, not the PIC; their handler sends the EOI. */
#define LAPIC_TIMER_VECTOR 48
#define LAPIC_SPURIOUS_VECTOR 63
void vector_register(int vector, irq_handler_t h);
void idt_set_fault_cr3(uint32_t cr3);   /* page tables for the double-fault task */

/* timer.c */
#define TIMER_HZ 20   /* the PIT tick, only while the clock calibrates (first 500 ms) */
void timer_init(void);
uint32_t uptime_ms(void);
uint32_t timer_ticks(void);   /* timer interrupts so far (PIT ticks, then one-shot wake-ups) */
/* The idle loop, interrupts off, before it halts: wake in `ms` (0xFFFFFFFF: only for an interrupt). */
void timer_arm(uint32_t ms);
/* lapic.c: the local APIC's one-shot timer (counts at an unknown rate, measured by timer.c) */
int lapic_init(void);                 /* 0: usable; -1: no local APIC */
void lapic_count_from(uint32_t count); /* start counting down, interrupt on zero unless masked */
uint32_t lapic_count(void);           /* current count */
void lapic_timer_unmask(int on);
void lapic_eoi(void);
uint32_t lapic_id(void);
/* ioapic.c: lines beyond the PIC's 16 (irq_register/irq_unmask route them here) */
void ioapic_add(uint32_t addr, uint32_t gsi_base);   /* acpi.c, from the MADT */
uint32_t ioapic_gsi_end(void);                       /* 1 + the highest GSI the I/O APICs have */
int ioapic_route(uint32_t gsi, uint8_t vector);      /* masked until ioapic_mask(gsi, 0) */
void ioapic_mask(uint32_t gsi, int masked);
/* acpi.c hands over the ACPI PM timer's port (0: none) to calibrate the TSC with. */
void timer_use_pm(uint16_t port);
void busy_wait_ms(uint32_t ms);

/* mem.c: page allocator over the multiboot memory map (never freed). page_alloc's
 * memory is zeroed, writing only pages that are not zero already, so memory a
 * VM never uses costs the host nothing. */
void page_init(uint32_t mbi_addr);
void *page_alloc(size_t bytes);
/* A static buffer the loader never writes (linker.ld's .lazy): its pages cost host
 * memory only once used. NOT zero at boot: only for memory written before it is read. */
#define LAZY __attribute__((section(".lazy")))
size_t pages_total(void);
size_t pages_free(void);
uintptr_t bios_ebda(void);   /* the EBDA's address, read before page 0 was unmapped (0: none) */

/* paging.c: PAE identity map, code read-only, data no-execute, page 0 and the page
 * under the stack unmapped. After idt_init, before anything else can fault. */
void paging_init(void);
extern char stack_guard[];   /* boot.S: the unmapped page under the stack */

/* selftest.c: a hidden boot argument selftest=write-code|exec-data|stack|null makes the
 * kernel do that right after paging is on; each must end in a panic (exit status 7). */
void selftest_pick(const char *cmdline);
void selftest_run(void);

/* acpi.c */
void acpi_init(void);
int acpi_poweroff_requested(void);

/* event flag raised by interrupt handlers so the idle loop knows to look. */
extern volatile int work_pending;
/* main.c: event-loop iterations (a loop that stopped turning shows here) */
extern volatile uint32_t loop_count;
/* idt.c: called on an NMI (QMP inject-nmi) to print state; NULL: ignored */
extern void (*nmi_hook)(void);
#endif
