/* Serial console on COM1 (ttyS0). Output is polled: logs are short and rare,
 * and polling keeps the console usable from panic and interrupt context. */
#include "kernel.h"

#define COM1 0x3F8

void console_init(void)
{
    outb(COM1 + 1, 0x00);   /* no UART interrupts */
    outb(COM1 + 3, 0x80);   /* DLAB on */
    outb(COM1 + 0, 0x01);   /* 115200 baud */
    outb(COM1 + 1, 0x00);
    outb(COM1 + 3, 0x03);   /* 8N1 */
    outb(COM1 + 2, 0x07);   /* FIFO on, cleared */
    outb(COM1 + 4, 0x03);   /* DTR + RTS */
    console_write("\n", 1); /* end the firmware's unterminated "Booting from ROM.." line */
}

static void putc_raw(char c)
{
    /* QEMU's UART is always ready; the bound keeps a real one from hanging us. */
    for (int i = 0; i < 100000 && !(inb(COM1 + 5) & 0x20); i++)
        ;
    outb(COM1, (uint8_t)c);
}

void console_write(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\n')
            putc_raw('\r');
        putc_raw(s[i]);
    }
}
