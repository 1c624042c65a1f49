/* Unix time in milliseconds (lib/wallclock.c: the CMOS RTC, then the uptime clock). */
#ifndef UK_WALLCLOCK_H
#define UK_WALLCLOCK_H
#include <stdint.h>
int64_t wallclock_ms(void);
#endif
