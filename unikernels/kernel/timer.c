/* A slow PIT tick (TIMER_HZ) wakes the idle loop for lwIP's timeouts; every
 * wake-up costs host CPU, so it is kept rare. Time itself comes from the TSC,
 * whose rate is unknown under TCG (it follows the host): the tick handler
 * calibrates it against the PIT in the background, so boot does not wait. */
#include "kernel.h"

#define PIT_HZ 1193182
#define CAL_TICKS (TIMER_HZ / 2)   /* calibrate over 500 ms */

static volatile uint32_t ticks;
static volatile uint64_t tsc_per_ms;
static uint64_t tsc_boot, cal_start;
static uint32_t cal_start_ticks_ms, last_ms;

static void timer_irq(void)
{
    uint32_t t = ++ticks;
    if (t == 1) {
        cal_start = rdtsc();
    } else if (t == 1 + CAL_TICKS) {
        uint64_t per_ms = (rdtsc() - cal_start) / (CAL_TICKS * 1000 / TIMER_HZ);
        /* TSC time continues from tick time at tick 1, so the clock never jumps. */
        tsc_boot = cal_start - (uint64_t)cal_start_ticks_ms * per_ms;
        tsc_per_ms = per_ms;
    }
    work_pending = 1;
}

void timer_init(void)
{
    cal_start_ticks_ms = 1000 / TIMER_HZ;
    uint16_t div = PIT_HZ / TIMER_HZ;
    outb(0x43, 0x34);           /* channel 0, lo/hi, mode 2 (rate generator) */
    outb(0x40, div & 0xFF);
    outb(0x40, div >> 8);
    irq_register(0, timer_irq);
    irq_unmask(0);
}

/* Milliseconds since the timer started; monotonic (interrupt and main loop
 * may both ask, but only the main loop calls this). */
uint32_t uptime_ms(void)
{
    uint32_t ms = tsc_per_ms ? (uint32_t)((rdtsc() - tsc_boot) / tsc_per_ms) : ticks * (1000 / TIMER_HZ);
    if ((int32_t)(ms - last_ms) > 0)
        last_ms = ms;
    return last_ms;
}

uint32_t timer_ticks(void)
{
    return ticks;
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
