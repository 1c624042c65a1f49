/* Time comes from the TSC, whose rate is unknown under TCG (it follows the
 * host): for the first 500 ms a PIT tick (TIMER_HZ) wakes the idle loop and
 * calibrates it in the background, so boot does not wait. It measures against
 * the ACPI PM timer (3.579545 MHz, a counter that QEMU derives from the host
 * clock): counting ticks instead goes wrong on a busy host, where QEMU delivers
 * late PIT interrupts and merges them, so the clock ran 30-40 % slow and every
 * lwIP timer (retransmission, TIME-WAIT, idle close) with it. Until then the
 * PM timer itself is the clock, and TSC time takes over where it stands. Without a PM
 * timer (microvm), ticks are counted, each weighed by the PIT counter's phase
 * (latched: the exact time since its last reload), so late and merged ticks
 * still add up to the right time.
 * The local APIC timer's rate is measured over the same interval; then the PIT
 * stops and the idle loop arms the APIC timer (one-shot) for lwIP's next
 * timeout: an idle VM wakes only when lwIP has work (its ARP timer, once a
 * second), not 20 times a second. Without a local APIC the PIT keeps ticking. */
#include "kernel.h"

#define PIT_HZ 1193182
#define CAL_TICKS (TIMER_HZ / 2)   /* calibrate over 500 ms */

static volatile uint32_t ticks;
static volatile uint64_t tsc_per_ms;
static uint64_t tsc_boot, cal_start;
static uint32_t cal_start_ticks_ms, last_ms;
static uint16_t pm_port;
static uint32_t pm_last;
static uint64_t pm_elapsed;   /* PM timer counts since timer_use_pm: the clock until calibrated */
static uint64_t pm_cal_start; /* ... at tick 1 */
static int have_lapic;
static uint32_t lapic_per_ms;  /* 0: not measured yet (or no local APIC): the PIT ticks */
static volatile int armed;     /* a one-shot is counting down */
static uint32_t armed_due;     /* ... for this uptime_ms */
#define LAPIC_FULL 0xFFFFFFFFu

#define PM_HZ 3579545u
#define PM_MASK 0xFFFFFFu     /* 24 bits: wraps every 4.7 s, far beyond a tick */
#define PIT_DIV (PIT_HZ / TIMER_HZ)

static uint64_t tick_tsc[CAL_TICKS + 1];     /* without a PM timer: the TSC at ticks 1.. */
static uint16_t tick_phase[CAL_TICKS + 1];   /* ... and the PIT's phase then */

/* PIT counts since channel 0's last reload (mode 2 counts PIT_DIV down to 1). */
static uint16_t pit_phase(void)
{
    outb(0x43, 0x00);   /* latch channel 0 */
    uint16_t c = inb(0x40);
    c |= (uint16_t)(inb(0x40) << 8);
    return (uint16_t)(PIT_DIV - c);
}

void timer_use_pm(uint16_t port)
{
    pm_port = port;
    if (port)
        pm_last = inl(port) & PM_MASK;
}

/* PM counts since timer_use_pm; interrupts off (the tick handler advances it too). */
static uint64_t pm_now(void)
{
    uint32_t pm = inl(pm_port) & PM_MASK;
    pm_elapsed += (pm - pm_last) & PM_MASK;
    pm_last = pm;
    return pm_elapsed;
}

/* PIT channel 0 to mode 0 (one interrupt at terminal count, then silence), IRQ 0 masked:
 * QEMU stops its PIT timer instead of firing it 20 times a second for nothing. */
static void pit_stop(void)
{
    outb(0x43, 0x30);
    outb(0x40, 1);
    outb(0x40, 0);
    irq_mask(0);
}

/* elapsed_us: how long the calibration ran. TSC time continues from the clock
 * used so far (ms_at_ref when the TSC read tsc_ref), so uptime never jumps: a
 * jump forward would cut short whatever is timed across it. */
static void calibrated(uint64_t per_ms, uint64_t elapsed_us, uint64_t tsc_ref, uint64_t ms_at_ref)
{
    tsc_boot = tsc_ref - ms_at_ref * per_ms;
    barrier();
    tsc_per_ms = per_ms;
    if (have_lapic) {
        uint64_t per = (uint64_t)(LAPIC_FULL - lapic_count()) * 1000 / elapsed_us;
        if (per) {
            lapic_count_from(0);
            lapic_timer_unmask(1);
            lapic_per_ms = (uint32_t)per;
            pit_stop();
        }
    }
}

/* The median tick interval is about one period; each interval, less its phase
 * difference, is then a whole number of periods. Elapsed time = periods + phase. */
static void calibrate_by_ticks(void)
{
    uint64_t sorted[CAL_TICKS];
    for (int i = 0; i < CAL_TICKS; i++) {
        uint64_t d = tick_tsc[i + 1] - tick_tsc[i];
        int j = i;
        for (; j > 0 && sorted[j - 1] > d; j--)
            sorted[j] = sorted[j - 1];
        sorted[j] = d;
    }
    /* unsigned divisions only: the kernel's libc has no signed 64-bit division */
    uint64_t period = sorted[CAL_TICKS / 2];
    uint64_t periods = 0;
    for (int i = 0; i < CAL_TICKS; i++) {
        uint64_t d = tick_tsc[i + 1] - tick_tsc[i] + period / 2;
        uint16_t a = tick_phase[i], b = tick_phase[i + 1];
        uint64_t shift = (uint64_t)(b > a ? b - a : a - b) * period / PIT_DIV;
        if (b > a)
            d = d > shift ? d - shift : 0;
        else
            d += shift;
        periods += d / period;
    }
    uint64_t pit = periods * PIT_DIV + tick_phase[CAL_TICKS];
    pit = pit > tick_phase[0] ? pit - tick_phase[0] : 0;
    uint64_t elapsed_us = pit * 1000000 / PIT_HZ;
    if (elapsed_us)
        calibrated((tick_tsc[CAL_TICKS] - tick_tsc[0]) * 1000 / elapsed_us, elapsed_us, tick_tsc[0],
                   cal_start_ticks_ms);
    else   /* cannot happen with a working PIT; count ticks as before */
        calibrated((tick_tsc[CAL_TICKS] - tick_tsc[0]) / (CAL_TICKS * 1000 / TIMER_HZ),
                   CAL_TICKS * 1000000ull / TIMER_HZ, tick_tsc[0], cal_start_ticks_ms);
}

static void lapic_timer_irq(void)
{
    ticks++;
    armed = 0;
    work_pending = 1;
    lapic_eoi();
}

void timer_arm(uint32_t ms)
{
    if (!lapic_per_ms)
        return;   /* the PIT still ticks */
    if (ms == LAPIC_FULL) {
        if (armed)
            lapic_count_from(0);
        armed = 0;
        return;
    }
    uint32_t due = uptime_ms() + ms;
    if (armed && due == armed_due)
        return;   /* already counting down to it: no APIC write on every loop turn */
    /* A little late rather than early: waking before lwIP's timeout is due
     * would only mean a second wake-up for it. */
    uint64_t n = ((uint64_t)ms + ms / 64 + 1) * lapic_per_ms;
    lapic_count_from(n > LAPIC_FULL ? LAPIC_FULL : (uint32_t)n);
    armed = 1;
    armed_due = due;
}

static void timer_irq(void)
{
    uint32_t t = ++ticks;
    if (t == 1) {
        cal_start = rdtsc();
        if (have_lapic)
            lapic_count_from(LAPIC_FULL);   /* masked: counted, not delivered */
        if (pm_port)
            pm_cal_start = pm_now();
        else
            tick_tsc[0] = cal_start, tick_phase[0] = pit_phase();
    } else if (!tsc_per_ms && pm_port) {
        uint64_t tsc = rdtsc(), pm = pm_now(), span = pm - pm_cal_start;
        if (span >= PM_HZ / 2)   /* 500 ms of host time, however many ticks arrived */
            calibrated((tsc - cal_start) * PM_HZ / (span * 1000), span * 1000000 / PM_HZ, tsc, pm * 1000 / PM_HZ);
    } else if (!tsc_per_ms && t <= 1 + CAL_TICKS) {
        tick_tsc[t - 1] = rdtsc();
        tick_phase[t - 1] = pit_phase();
        if (t == 1 + CAL_TICKS)
            calibrate_by_ticks();
    }
    work_pending = 1;
}

void timer_init(void)
{
    cal_start_ticks_ms = 1000 / TIMER_HZ;
    outb(0x43, 0x34);           /* channel 0, lo/hi, mode 2 (rate generator) */
    outb(0x40, PIT_DIV & 0xFF);
    outb(0x40, PIT_DIV >> 8);
    irq_register(0, timer_irq);
    irq_unmask(0);
    if (lapic_init() == 0) {
        have_lapic = 1;
        vector_register(LAPIC_TIMER_VECTOR, lapic_timer_irq);
    }
}

/* Milliseconds since the timer started; monotonic (interrupt and main loop
 * may both ask, but only the main loop calls this). */
uint32_t uptime_ms(void)
{
    uint32_t ms;
    if (tsc_per_ms) {
        ms = (uint32_t)((rdtsc() - tsc_boot) / tsc_per_ms);
    } else if (pm_port) {   /* calibrating: the PM timer is the clock */
        uint32_t flags;
        __asm__ volatile("pushf; pop %0; cli" : "=r"(flags) :: "memory");
        uint64_t pm = pm_now();
        if (flags & 0x200)
            sti();
        ms = (uint32_t)(pm * 1000 / PM_HZ);
    } else {
        ms = ticks * (1000 / TIMER_HZ);
    }
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
    /* Calibrating: PM (or tick) time, which becomes TSC time on the way without
     * a jump; never a count of ticks, which stop once calibrated. */
    uint32_t end = uptime_ms() + ms;
    while ((int32_t)(uptime_ms() - end) < 0)
        __asm__ volatile("pause");
}
