/* Leaving the VM: ACPI soft-off for a clean stop, isa-debug-exit for errors. */
#include <stdarg.h>
#include "kernel.h"

#define DEBUG_EXIT_PORT 0xf4

void acpi_sleep_s5(void);   /* acpi.c; returns only if ACPI is unusable */

void fatal_exit(int code)
{
    cli();
    /* QEMU exits with status (code << 1) | 1, so any code gives non-zero. */
    outl(DEBUG_EXIT_PORT, (uint32_t)code);
    for (;;)
        __asm__ volatile("hlt");
}

void power_off(void)
{
    cli();
    acpi_sleep_s5();
    printf("power-off via ACPI failed\n");
    fatal_exit(2);
}

void panic(const char *fmt, ...)
{
    char buf[256];
    va_list ap;
    cli();
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    printf("panic: %s\n", buf);
    fatal_exit(3);
}
