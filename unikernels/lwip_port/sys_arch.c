/* The two things NO_SYS lwIP asks of the platform: a clock and randomness. */
#include "kernel.h"
#include "lwip/sys.h"
#include "arch/cc.h"

u32_t sys_now(void)
{
    return uptime_ms();
}

/* xorshift seeded from the TSC: good enough for ISNs and ephemeral ports. */
unsigned int uk_rand(void)
{
    static uint32_t s;
    if (!s)
        s = (uint32_t)rdtsc() | 1;
    s ^= s << 13;
    s ^= s >> 17;
    s ^= s << 5;
    return s;
}
