/* IDT and the legacy 8259 PICs. Exceptions are fatal; IRQs go to registered
 * handlers that only ack the device and raise work_pending: the real work
 * (lwIP) runs in the main loop, never in interrupt context.
 * A double fault switches to a task of its own (a TSS with its own stack): a
 * stack overflow hits the unmapped page under the stack, and the CPU cannot
 * push the page fault's frame there, so only a task switch can still report it. */
#include <stdint.h>
#include "kernel.h"

struct isr_frame {
    uint32_t edi, esi, ebp, esp, ebx, edx, ecx, eax;
    uint32_t vector, err, eip, cs, eflags;
};

struct idt_entry {
    uint16_t off_lo, sel;
    uint8_t zero, type;
    uint16_t off_hi;
} __attribute__((packed));

#define VECTORS 64
static struct idt_entry idt[VECTORS];
/* PCI INTx lines may be shared (e.g. a NIC with the ACPI SCI): chain a few. */
#define IRQ_SHARE 4
static irq_handler_t handlers[16][IRQ_SHARE];
/* Lines 16 and up (no PIC has them) go through an I/O APIC, each to a vector of its own. */
#define LINE_VECTOR 49
#define LINES (LAPIC_SPURIOUS_VECTOR - LINE_VECTOR)
static struct { int irq; irq_handler_t h[IRQ_SHARE]; } lines[LINES];
static int line_count;
extern const uint32_t isr_table[VECTORS];
static irq_handler_t vector_handlers[VECTORS - 48];   /* local APIC vectors 48-63 */
volatile int work_pending;
void (*nmi_hook)(void);

#define PIC1 0x20
#define PIC2 0xA0
#define IRQ_BASE 32

/* Error code bits: P (the page was present), W (a write), I (an instruction fetch). */
static void __attribute__((noreturn)) page_fault(const struct isr_frame *f, uint32_t cr2)
{
    const char *what;
    if (f->err & 0x10)
        what = "instruction fetch from a no-execute page";
    else if ((f->err & 0x3) == 0x3)
        what = "write to a read-only page";
    else if (cr2 < 4096)
        what = "NULL pointer dereference";
    else if (cr2 >= (uintptr_t)stack_guard && cr2 < (uintptr_t)stack_guard + 4096)
        what = "stack overflow";
    else
        what = f->err & 0x2 ? "write to an unmapped page" : "read of an unmapped page";
    panic("page fault: %s: cr2=%x eip=%x err=%x", what, cr2, f->eip, f->err);
}

void isr_dispatch(struct isr_frame *f);
void isr_dispatch(struct isr_frame *f)
{
    if (f->vector == 2) {   /* NMI (QMP inject-nmi): a state dump, then carry on */
        if (nmi_hook)
            nmi_hook();
        return;
    }
    if (f->vector < IRQ_BASE) {
        uint32_t cr2;
        __asm__ volatile("mov %%cr2, %0" : "=r"(cr2));
        if (f->vector == 14)
            page_fault(f, cr2);
        panic("exception %u err=%x eip=%x cr2=%x", f->vector, f->err, f->eip, cr2);
    }
    if (f->vector >= LINE_VECTOR && f->vector < LINE_VECTOR + (uint32_t)line_count) {
        for (int i = 0; i < IRQ_SHARE && lines[f->vector - LINE_VECTOR].h[i]; i++)
            lines[f->vector - LINE_VECTOR].h[i]();
        lapic_eoi();   /* after the handlers acknowledged their device: re-arms the level-triggered line */
        return;
    }
    if (f->vector >= 48) {
        if (vector_handlers[f->vector - 48])
            vector_handlers[f->vector - 48]();
        return;
    }
    int irq = (int)f->vector - IRQ_BASE;
    /* Spurious IRQ 7/15: the PIC's in-service bit is clear; no EOI for it. */
    if (irq == 7 || irq == 15) {
        outb(irq == 7 ? PIC1 : PIC2, 0x0B);
        if (!(inb(irq == 7 ? PIC1 : PIC2) & 0x80)) {
            if (irq == 15)
                outb(PIC1, 0x20);
            return;
        }
    }
    for (int i = 0; i < IRQ_SHARE && handlers[irq][i]; i++)
        handlers[irq][i]();
    if (irq >= 8)
        outb(PIC2, 0x20);
    outb(PIC1, 0x20);
}

static irq_handler_t *line_handlers(int irq)
{
    for (int i = 0; i < line_count; i++)
        if (lines[i].irq == irq)
            return lines[i].h;
    if (line_count == LINES || ioapic_route((uint32_t)irq, (uint8_t)(LINE_VECTOR + line_count)))
        panic("irq %d: no I/O APIC line for it", irq);
    lines[line_count].irq = irq;
    return lines[line_count++].h;
}

void irq_register(int irq, irq_handler_t h)
{
    if (irq < 0 || irq > 255)
        panic("irq %d out of range", irq);
    irq_handler_t *chain = irq < 16 ? handlers[irq] : line_handlers(irq);
    for (int i = 0; i < IRQ_SHARE; i++) {
        if (!chain[i]) {
            chain[i] = h;
            return;
        }
    }
    panic("too many handlers on irq %d", irq);
}

void vector_register(int vector, irq_handler_t h)
{
    if (vector < 48 || vector >= VECTORS)
        panic("vector %d is not a local APIC vector", vector);
    vector_handlers[vector - 48] = h;
}

void irq_mask(int irq)
{
    if (irq >= 16)
        ioapic_mask((uint32_t)irq, 1);
    else if (irq >= 8)
        outb(PIC2 + 1, inb(PIC2 + 1) | (1 << (irq - 8)));
    else
        outb(PIC1 + 1, inb(PIC1 + 1) | (1 << irq));
}

void irq_unmask(int irq)
{
    if (irq >= 16) {
        ioapic_mask((uint32_t)irq, 0);
        return;
    }
    if (irq >= 8) {
        outb(PIC2 + 1, inb(PIC2 + 1) & ~(1 << (irq - 8)));
        irq = 2;   /* cascade */
    }
    outb(PIC1 + 1, inb(PIC1 + 1) & ~(1 << irq));
}

static void pic_init(void)
{
    outb(PIC1, 0x11); outb(PIC2, 0x11);           /* ICW1: init, ICW4 follows */
    outb(PIC1 + 1, IRQ_BASE); outb(PIC2 + 1, IRQ_BASE + 8);
    outb(PIC1 + 1, 4); outb(PIC2 + 1, 2);         /* cascade on IRQ2 */
    outb(PIC1 + 1, 1); outb(PIC2 + 1, 1);         /* 8086 mode */
    outb(PIC1 + 1, 0xFF); outb(PIC2 + 1, 0xFF);   /* all masked until asked */
}

struct tss {
    uint32_t link, esp0, ss0, esp1, ss1, esp2, ss2, cr3, eip, eflags;
    uint32_t eax, ecx, edx, ebx, esp, ebp, esi, edi, es, cs, ss, ds, fs, gs, ldt;
    uint16_t trap, iomap;
} __attribute__((packed));

static struct tss main_tss, df_tss;   /* the CPU saves the faulting state in main_tss */
static uint8_t df_stack[8192] __attribute__((aligned(16)));
/* null, code, data (accessed bits set: the CPU never writes them), main task, double-fault task */
static uint64_t gdt[5] = { 0, 0x00CF9B000000FFFFull, 0x00CF93000000FFFFull, 0, 0 };
#define SEL_CODE 0x08
#define SEL_DATA 0x10
#define SEL_MAIN_TSS 0x18
#define SEL_DF_TSS 0x20

static uint64_t tss_descriptor(const struct tss *t)
{
    uint64_t base = (uintptr_t)t, limit = sizeof(*t) - 1;
    return (limit & 0xFFFF) | (base & 0xFFFFFF) << 16 | 0x89ull << 40 | (base >> 24) << 56;
}

static void __attribute__((noreturn)) double_fault_task(void)
{
    uint32_t cr2;
    __asm__ volatile("mov %%cr2, %0" : "=r"(cr2));
    int overflow = cr2 >= (uintptr_t)stack_guard && cr2 < (uintptr_t)stack_guard + 4096;
    panic("double fault%s: cr2=%x eip=%x esp=%x", overflow ? " (stack overflow)" : "", cr2, main_tss.eip,
          main_tss.esp);
}

void idt_set_fault_cr3(uint32_t cr3)
{
    df_tss.cr3 = cr3;
}

static void gdt_init(void)
{
    df_tss.eip = (uintptr_t)double_fault_task;
    df_tss.esp = (uintptr_t)(df_stack + sizeof(df_stack));
    df_tss.eflags = 0x2;   /* interrupts off */
    df_tss.cs = SEL_CODE;
    df_tss.ss = df_tss.ds = df_tss.es = df_tss.fs = df_tss.gs = SEL_DATA;
    df_tss.iomap = main_tss.iomap = sizeof(struct tss);   /* no I/O bitmap */
    gdt[3] = tss_descriptor(&main_tss);
    gdt[4] = tss_descriptor(&df_tss);
    struct { uint16_t limit; uint32_t base; } __attribute__((packed)) ptr = {
        sizeof(gdt) - 1, (uint32_t)gdt };
    /* Same selectors as boot.S's GDT, so the loaded segment registers stay valid. */
    __asm__ volatile("lgdt %0" :: "m"(ptr));
    __asm__ volatile("ltr %w0" :: "r"(SEL_MAIN_TSS));
}

void idt_init(void)
{
    gdt_init();
    for (int i = 0; i < VECTORS; i++) {
        idt[i].off_lo = isr_table[i] & 0xFFFF;
        idt[i].off_hi = isr_table[i] >> 16;
        idt[i].sel = 0x08;
        idt[i].zero = 0;
        idt[i].type = 0x8E;   /* present, ring 0, 32-bit interrupt gate */
    }
    idt[8] = (struct idt_entry){ 0, SEL_DF_TSS, 0, 0x85, 0 };   /* task gate */
    struct { uint16_t limit; uint32_t base; } __attribute__((packed)) ptr = {
        sizeof(idt) - 1, (uint32_t)idt };
    __asm__ volatile("lidt %0" :: "m"(ptr));
    pic_init();
}
