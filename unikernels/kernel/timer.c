/* A slow PIT tick (TIMER_HZ) wakes the idle loop for lwIP's timeouts; every
 * wake-up costs host CPU, so it is kept rare. Time itself comes from the TSC,
 * whose rate is unknown under TCG (it follows the host): the tick handler
 * calibrates it in the background, so boot does not wait. It measures against
 * the ACPI PM timer (3.579545 MHz, a counter that QEMU derives from the host
 * clock): counting ticks instead goes wrong on a busy host, where QEMU delivers
 * late PIT interrupts and merges them, so the clock ran 30-40 % slow and every
 * lwIP timer (retransmission, TIME-WAIT, idle close) with it. Without a PM
 * timer, ticks are counted. */
#include "kernel.h"

#define PIT_HZ 1193182
#define CAL_TICKS (TIMER_HZ / 2)   /* calibrate over 500 ms */

static volatile uint32_t ticks;
static volatile uint64_t tsc_per_ms;
static uint64_t tsc_boot, cal_start;
static uint32_t cal_start_ticks_ms, last_ms;
static uint16_t pm_port;
static uint32_t pm_last;
static uint64_t pm_elapsed;   /* PM timer counts since tick 1 */

#define PM_HZ 3579545u
#define PM_MASK 0xFFFFFFu     /* 24 bits: wraps every 4.7 s, far beyond a tick */

void timer_use_pm(uint16_t port)
{
    pm_port = port;
}

static void calibrated(uint64_t per_ms)
{
    /* TSC time continues from tick time at tick 1, so the clock never jumps. */
    tsc_boot = cal_start - (uint64_t)cal_start_ticks_ms * per_ms;
    tsc_per_ms = per_ms;
}

static void timer_irq(void)
{
    uint32_t t = ++ticks;
    if (t == 1) {
        cal_start = rdtsc();
        if (pm_port)
            pm_last = inl(pm_port) & PM_MASK;
    } else if (!tsc_per_ms && pm_port) {
        uint64_t tsc = rdtsc();
        uint32_t pm = inl(pm_port) & PM_MASK;
        pm_elapsed += (pm - pm_last) & PM_MASK;
        pm_last = pm;
        if (pm_elapsed >= PM_HZ / 2)   /* 500 ms of host time, however many ticks arrived */
            calibrated((tsc - cal_start) * PM_HZ / (pm_elapsed * 1000));
    } else if (!tsc_per_ms && t == 1 + CAL_TICKS) {
        calibrated((rdtsc() - cal_start) / (CAL_TICKS * 1000 / TIMER_HZ));
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
