/* IDT and the legacy 8259 PICs. Exceptions are fatal; IRQs go to registered
 * handlers that only ack the device and raise work_pending: the real work
 * (lwIP) runs in the main loop, never in interrupt context. */
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

static struct idt_entry idt[48];
/* PCI INTx lines may be shared (e.g. a NIC with the ACPI SCI): chain a few. */
#define IRQ_SHARE 4
static irq_handler_t handlers[16][IRQ_SHARE];
extern const uint32_t isr_table[48];
volatile int work_pending;
void (*nmi_hook)(void);

#define PIC1 0x20
#define PIC2 0xA0
#define IRQ_BASE 32

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
        panic("exception %u err=%x eip=%x cr2=%x", f->vector, f->err, f->eip, cr2);
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

void irq_register(int irq, irq_handler_t h)
{
    if (irq < 0 || irq > 15)
        panic("irq %d out of range", irq);
    for (int i = 0; i < IRQ_SHARE; i++) {
        if (!handlers[irq][i]) {
            handlers[irq][i] = h;
            return;
        }
    }
    panic("too many handlers on irq %d", irq);
}

void irq_unmask(int irq)
{
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

void idt_init(void)
{
    for (int i = 0; i < 48; i++) {
        idt[i].off_lo = isr_table[i] & 0xFFFF;
        idt[i].off_hi = isr_table[i] >> 16;
        idt[i].sel = 0x08;
        idt[i].zero = 0;
        idt[i].type = 0x8E;   /* present, ring 0, 32-bit interrupt gate */
    }
    struct { uint16_t limit; uint32_t base; } __attribute__((packed)) ptr = {
        sizeof(idt) - 1, (uint32_t)idt };
    __asm__ volatile("lidt %0" :: "m"(ptr));
    pic_init();
}
