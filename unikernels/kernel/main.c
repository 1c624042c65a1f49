/* Boot straight into the service: console, memory, interrupts, arguments,
 * ACPI, network, service, `ready`, then an event loop that halts when idle. */
#include "kernel.h"
#include "cmdline.h"
#include "net.h"
#include "services.h"
#include "lwip/timeouts.h"

#define MB_BOOT_MAGIC 0x2BADB002

void kmain(uint32_t magic, uint32_t mbi);
volatile uint32_t loop_count;

void kmain(uint32_t magic, uint32_t mbi)
{
    struct boot_args args;

    console_init();
    if (magic != MB_BOOT_MAGIC)
        panic("not booted by a multiboot loader (magic %x)", magic);
    page_init(mbi);
    idt_init();
    cmdline_parse(&args);
    timer_init();
    acpi_init();
    sti();
    net_init(&args);

    int rc = args.service == SERVICE_HTTPD ? httpd_start(&args) : echo_start(&args);
    if (rc) {
        printf("error: cannot listen on port %u\n", args.port);
        fatal_exit(5);
    }
    printf("ready name=%s ip=%s port=%u service=%s\n", args.name, args.ip_str, args.port,
           args.service == SERVICE_HTTPD ? "httpd" : "echo");

    nmi_hook = net_dump;
    for (;;) {
        loop_count++;
        work_pending = 0;
        net_poll();
        sys_check_timeouts();
        if (acpi_poweroff_requested()) {
            printf("power button: shutting down\n");
            power_off();
        }
        /* Sleep only if nothing arrived meanwhile; with interrupts off the
         * check and the hlt cannot miss a wake-up (sti takes effect after hlt). */
        cli();
        if (!work_pending && !net_rx_pending())
            sti_hlt();
        else
            sti();
    }
}
