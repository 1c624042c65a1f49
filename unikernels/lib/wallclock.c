/* Wall-clock time: the CMOS real-time clock read once, at the first call, then
 * carried forward by the kernel's monotonic uptime. QEMU sets the RTC from the
 * host's clock (UTC by default), so a VM knows the date without a network
 * time source; services need it for what outlives the VM (expiry times in
 * kv's log, creation times of records). */
#include <stdint.h>
#include "kernel.h"
#include "wallclock.h"

static uint8_t cmos(uint8_t reg)
{
    outb(0x70, reg);
    return inb(0x71);
}

static int updating(void) { return cmos(0x0A) & 0x80; }

static uint8_t from_bcd(uint8_t v, int bcd) { return bcd ? (uint8_t)((v & 0x0F) + (v >> 4) * 10) : v; }

/* Days from 1970-01-01 to y-m-d (proleptic Gregorian; Howard Hinnant's method). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

static int64_t rtc_seconds(void)
{
    uint8_t r[6], again[6];
    static const uint8_t regs[6] = {0x00, 0x02, 0x04, 0x07, 0x08, 0x09};
    /* Read twice outside an update until both agree (the RTC ticks once a
     * second, an update lasts ~2 ms); every wait is bounded. */
    for (int tries = 0; tries < 100; tries++) {
        for (int spin = 0; spin < 100000 && updating(); spin++)
            ;
        for (int i = 0; i < 6; i++)
            r[i] = cmos(regs[i]);
        for (int spin = 0; spin < 100000 && updating(); spin++)
            ;
        for (int i = 0; i < 6; i++)
            again[i] = cmos(regs[i]);
        if (!__builtin_memcmp(r, again, sizeof r))
            break;
    }
    uint8_t b = cmos(0x0B);
    int bcd = !(b & 0x04);
    int pm = !(b & 0x02) && (r[2] & 0x80);
    unsigned sec = from_bcd(r[0], bcd), min = from_bcd(r[1], bcd), hour = from_bcd(r[2] & 0x7F, bcd);
    unsigned day = from_bcd(r[3], bcd), mon = from_bcd(r[4], bcd), year = from_bcd(r[5], bcd);
    if (!(b & 0x02))
        hour = hour % 12 + (pm ? 12 : 0);
    return days_from_civil(2000 + year, mon, day) * 86400 + hour * 3600 + min * 60 + sec;
}

static int64_t boot_ms;
static int known;

int64_t wallclock_ms(void)
{
    if (!known) {
        int64_t up = uptime_ms();
        boot_ms = rtc_seconds() * 1000 - up;
        known = 1;
    }
    return boot_ms + uptime_ms();
}
