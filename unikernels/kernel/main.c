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

/* The image's one service (SERVICE_DEFINE puts it in the .services section). */
static const struct service *image_service(void)
{
    if (__services_end - __services_start != 1)
        panic("this image holds %d services, not one", (int)(__services_end - __services_start));
    return __services_start;
}

void kmain(uint32_t magic, uint32_t mbi)
{
    struct boot_args args;
    const struct service *svc;

    console_init();
    if (magic != MB_BOOT_MAGIC)
        panic("not booted by a multiboot loader (magic %x)", magic);
    page_init(mbi);
    idt_init();
    paging_init();
    svc = image_service();
    cmdline_parse(&args, svc);
    timer_init();
    acpi_init();
    sti();
    net_init(&args);

    if (svc->start(&args)) {
        printf("error: cannot listen on port %u\n", args.port);
        fatal_exit(5);
    }
    printf("ready name=%s ip=%s port=%u service=%s\n", args.name, args.ip_str, args.port, svc->name);

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
        /* Sleep only if nothing arrived meanwhile, and only until lwIP's next
         * timeout; with interrupts off the check and the hlt cannot miss a
         * wake-up (sti takes effect after hlt). */
        uint32_t sleep_ms = sys_timeouts_sleeptime();
        cli();
        if (sleep_ms && !work_pending && !net_rx_pending()) {
            timer_arm(sleep_ms);
            sti_hlt();
        } else {
            sti();
        }
    }
}
