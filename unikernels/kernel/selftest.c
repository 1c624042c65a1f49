/* Proof that memory protection is on: the hidden boot argument
 * selftest=write-code|exec-data|stack|null makes the kernel commit that fault
 * right after paging_init. Each must end in a panic (QEMU exit status 7); one
 * that does not fault prints "selftest: ... did not fault" and exits with 3.
 * It runs before the command line is parsed, so no service ever sees the key. */
#include <string.h>
#include "kernel.h"

enum test { NONE, WRITE_CODE, EXEC_DATA, STACK, NULL_READ };
static enum test picked;
static const char *const names[] = { "", "write-code", "exec-data", "stack", "null" };

void selftest_pick(const char *cmdline)
{
    for (const char *w = cmdline; *w; ) {
        size_t n = 0;
        while (w[n] && w[n] != ' ')
            n++;
        if (n > 9 && !strncmp(w, "selftest=", 9))
            for (int t = WRITE_CODE; t <= NULL_READ; t++)
                if (strlen(names[t]) == n - 9 && !memcmp(w + 9, names[t], n - 9))
                    picked = (enum test)t;
        w += n;
        while (*w == ' ')
            w++;
    }
}

static unsigned __attribute__((noinline)) recurse(unsigned depth)
{
    volatile char frame[1024];
    frame[0] = (char)depth;
    if (depth == 0)
        return frame[0];
    return recurse(depth - 1) + frame[0];   /* not a tail call: every frame stays */
}

static uint8_t data_ret[16] = { 0xC3 };   /* `ret`, in a writable data page */

void selftest_run(void)
{
    if (picked == NONE)
        return;
    printf("selftest: %s\n", names[picked]);
    switch (picked) {
    case WRITE_CODE:
        *(volatile uint8_t *)(uintptr_t)selftest_pick = 0xC3;   /* any code will do */
        break;
    case EXEC_DATA:
        ((void (*)(void))(uintptr_t)data_ret)();
        break;
    case STACK:
        recurse(1024);   /* 1 MiB of frames on a 64 KiB stack */
        break;
    case NULL_READ:
        (void)*(volatile uint32_t *)(uintptr_t)0;
        break;
    default:
        break;
    }
    printf("selftest: %s did not fault\n", names[picked]);
    fatal_exit(1);
}
