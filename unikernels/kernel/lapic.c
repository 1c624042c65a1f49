/* The local APIC, for its timer: a down-counter that interrupts once when it
 * reaches zero (one-shot), so the idle loop can sleep exactly until lwIP's next
 * timeout. The PIT cannot: its 16-bit counter runs out after 55 ms. The 8259 PIC
 * keeps delivering the devices' interrupts through LINT0 (ExtINT). */
#include <stdint.h>
#include "kernel.h"

#define APIC_BASE_MSR 0x1Bu
#define APIC_ENABLE   (1u << 11)
#define REG_EOI       0x0B0
#define REG_SVR       0x0F0
#define REG_LVT_TIMER 0x320
#define REG_LVT_LINT0 0x350
#define REG_LVT_LINT1 0x360
#define REG_INIT      0x380
#define REG_CURRENT   0x390
#define REG_DIVIDE    0x3E0
#define LVT_MASKED    (1u << 16)
#define DIVIDE_16     0x3   /* QEMU's 1 GHz APIC clock / 16: a 32-bit count lasts 68 s */

static volatile uint32_t *apic;

static inline void reg_write(uint32_t reg, uint32_t v) { apic[reg / 4] = v; }
static inline uint32_t reg_read(uint32_t reg) { return apic[reg / 4]; }

int lapic_init(void)
{
    uint32_t a, b, c, d, lo, hi;
    __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(1));
    if (!(d & (1u << 9)))
        return -1;
    __asm__ volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(APIC_BASE_MSR));
    if (!(lo & APIC_ENABLE))
        return -1;
    apic = (volatile uint32_t *)(uintptr_t)(lo & 0xFFFFF000u);
    reg_write(REG_LVT_LINT0, 0x700);                 /* ExtINT: the 8259's interrupts */
    reg_write(REG_LVT_LINT1, 0x400);                 /* NMI (QMP inject-nmi) */
    reg_write(REG_SVR, 0x100 | LAPIC_SPURIOUS_VECTOR);   /* software-enable */
    reg_write(REG_DIVIDE, DIVIDE_16);
    reg_write(REG_LVT_TIMER, LVT_MASKED | LAPIC_TIMER_VECTOR);   /* one-shot */
    return 0;
}

void lapic_count_from(uint32_t count)
{
    reg_write(REG_INIT, count);   /* 0 stops the timer */
}

uint32_t lapic_count(void)
{
    return reg_read(REG_CURRENT);
}

void lapic_timer_unmask(int on)
{
    reg_write(REG_LVT_TIMER, (on ? 0 : LVT_MASKED) | LAPIC_TIMER_VECTOR);
}

uint32_t lapic_id(void)
{
    return apic ? reg_read(0x020) >> 24 : 0;
}

void lapic_eoi(void)
{
    reg_write(REG_EOI, 0);
}
