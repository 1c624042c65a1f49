/* I/O APICs, for the interrupt lines the 8259 PICs do not have: GSI 16 and up,
 * where QEMU's microvm wires its virtio-mmio devices. A line is routed
 * level-triggered (a virtio line stays up until the driver acknowledges it) to a
 * vector on the boot CPU; idt.c runs its handlers and then sends the local APIC
 * its EOI, which also re-arms the line. The I/O APICs come from the ACPI MADT
 * (acpi.c); without one, the usual single I/O APIC at 0xFEC00000 is assumed. */
#include <stdint.h>
#include "kernel.h"

#define MAX_IOAPICS 4
#define REG_VER 0x01
#define REG_REDIR 0x10
#define REDIR_MASKED (1u << 16)
#define REDIR_LEVEL (1u << 15)

static struct {
    volatile uint32_t *regs;   /* IOREGSEL at +0x00, IOWIN at +0x10 */
    uint32_t gsi_base, pins;
} ioapics[MAX_IOAPICS];
static int count;

static uint32_t rd(int i, uint32_t reg)
{
    ioapics[i].regs[0] = reg;
    return ioapics[i].regs[4];
}

static void wr(int i, uint32_t reg, uint32_t v)
{
    ioapics[i].regs[0] = reg;
    ioapics[i].regs[4] = v;
}

void ioapic_add(uint32_t addr, uint32_t gsi_base)
{
    if (count == MAX_IOAPICS)
        return;
    ioapics[count].regs = (volatile uint32_t *)(uintptr_t)addr;
    ioapics[count].gsi_base = gsi_base;
    ioapics[count].pins = ((rd(count, REG_VER) >> 16) & 0xFF) + 1;
    count++;
}

uint32_t ioapic_gsi_end(void)
{
    uint32_t end = 0;
    for (int i = 0; i < count; i++)
        if (ioapics[i].gsi_base + ioapics[i].pins > end)
            end = ioapics[i].gsi_base + ioapics[i].pins;
    return end;
}

/* The I/O APIC holding `gsi`, and the pin's redirection register. */
static int find(uint32_t gsi, uint32_t *reg)
{
    if (!count)
        ioapic_add(0xFEC00000u, 0);
    for (int i = 0; i < count; i++) {
        if (gsi >= ioapics[i].gsi_base && gsi - ioapics[i].gsi_base < ioapics[i].pins) {
            *reg = REG_REDIR + 2 * (gsi - ioapics[i].gsi_base);
            return i;
        }
    }
    return -1;
}

int ioapic_route(uint32_t gsi, uint8_t vector)
{
    uint32_t reg;
    int i = find(gsi, &reg);
    if (i < 0)
        return -1;
    wr(i, reg + 1, lapic_id() << 24);                     /* physical destination: this CPU */
    wr(i, reg, REDIR_MASKED | REDIR_LEVEL | vector);     /* fixed delivery, active high */
    return 0;
}

void ioapic_mask(uint32_t gsi, int masked)
{
    uint32_t reg;
    int i = find(gsi, &reg);
    if (i >= 0)
        wr(i, reg, (rd(i, reg) & ~REDIR_MASKED) | (masked ? REDIR_MASKED : 0));
}
