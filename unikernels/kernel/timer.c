/* PIT tick at TIMER_HZ for lwIP's timeouts, plus the TSC for fine delays.
 * The TSC rate is unknown under TCG (it follows the host), so the tick
 * handler calibrates it against the PIT in the background: no boot delay. */
#include "kernel.h"

#define PIT_HZ 1193182
#define CAL_TICKS (TIMER_HZ / 4)   /* calibrate over 250 ms */

static volatile uint32_t ticks;
static volatile uint64_t tsc_per_ms;
static uint64_t cal_start;

static void timer_irq(void)
{
    uint32_t t = ++ticks;
    if (t == 2)
        cal_start = rdtsc();
    else if (t == 2 + CAL_TICKS)
        tsc_per_ms = (rdtsc() - cal_start) / (CAL_TICKS * 1000 / TIMER_HZ);
    work_pending = 1;
}

void timer_init(void)
{
    uint16_t div = PIT_HZ / TIMER_HZ;
    outb(0x43, 0x34);           /* channel 0, lo/hi, mode 2 (rate generator) */
    outb(0x40, div & 0xFF);
    outb(0x40, div >> 8);
    irq_register(0, timer_irq);
    irq_unmask(0);
}

uint32_t uptime_ms(void)
{
    return ticks * (1000 / TIMER_HZ);
}

void busy_wait_ms(uint32_t ms)
{
    if (tsc_per_ms) {
        uint64_t end = rdtsc() + ms * tsc_per_ms;
        while (rdtsc() < end)
            __asm__ volatile("pause");
        return;
    }
    uint32_t end = ticks + (ms * TIMER_HZ + 999) / 1000;
    while ((int32_t)(ticks - end) < 0)
        __asm__ volatile("pause");
}
