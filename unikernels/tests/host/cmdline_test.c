/* Host test for the boot-argument parser (kernel/cmdline.c): the common keys,
 * the image's service and its declared keys, every error path, and random
 * lines under ASan/UBSan. A bad line must end in exactly one fatal_exit(1). */
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../../kernel/cmdline.c"

static jmp_buf died;
static int exits;

void fatal_exit(int code)
{
    exits++;
    longjmp(died, code);
}

static const char *const keys[] = {"head_timeout", "idle_timeout", "max_conns", NULL};
static const struct service svc = {.name = "httpd", .keys = keys, .start = NULL};

/* 0 when the line parses, else the exit code. */
static int parse(const char *text, struct boot_args *a)
{
    cmdline_copy(text);
    int code = setjmp(died);
    if (code)
        return code;
    cmdline_parse(a, &svc);
    return 0;
}

#define CHECK(cond) do { if (!(cond)) { fprintf(stderr, "%s:%d: %s\n", __FILE__, __LINE__, #cond); exit(1); } } while (0)

static void good_lines(void)
{
    struct boot_args a;
    CHECK(parse("/k.elf ip=10.0.0.5/24 gw=10.0.0.1 port=80 name=web-0", &a) == 0);
    CHECK(a.ip == 0x0500000a && a.gw == 0x0100000a && a.netmask == 0x00ffffff && a.prefix == 24);
    CHECK(a.port == 80 && !strcmp(a.name, "web-0") && !strcmp(a.ip_str, "10.0.0.5"));
    CHECK(cmdline_value("idle_timeout") == NULL);
    CHECK(cmdline_uint("idle_timeout", 1, 100, 75) == 75);

    CHECK(parse("ip=10.0.0.5/32 gw=10.0.0.1 port=1 name=a service=httpd idle_timeout=5 max_conns=9", &a) == 0);
    CHECK(a.netmask == 0xffffffff);
    CHECK(!strcmp(cmdline_value("idle_timeout"), "5"));
    CHECK(cmdline_uint("idle_timeout", 1, 100, 75) == 5 && cmdline_uint("max_conns", 1, 600, 512) == 9);
    CHECK(cmdline_value("head_timeout") == NULL);
}

static void bad_lines(void)
{
    static const char *const lines[] = {
        "gw=10.0.0.1 port=80 name=x",                                        /* missing ip */
        "ip=10.0.0.5/24 port=80 name=x",                                     /* missing gw */
        "ip=10.0.0.5/24 gw=10.0.0.1 name=x",                                 /* missing port */
        "ip=10.0.0.5/24 gw=10.0.0.1 port=80",                                /* missing name */
        "ip=10.0.0.5 gw=10.0.0.1 port=80 name=x",                            /* no prefix */
        "ip=10.0.0.5/0 gw=10.0.0.1 port=80 name=x",
        "ip=10.0.0.5/33 gw=10.0.0.1 port=80 name=x",
        "ip=10.0.0.256/24 gw=10.0.0.1 port=80 name=x",
        "ip=10.0.0/24 gw=10.0.0.1 port=80 name=x",
        "ip=10.0.0.5/24 gw=10.0.0.1.1 port=80 name=x",
        "ip=10.0.0.5/24 gw=10.0.0.1 port=0 name=x",
        "ip=10.0.0.5/24 gw=10.0.0.1 port=65536 name=x",
        "ip=10.0.0.5/24 gw=10.0.0.1 port=8o name=x",
        "ip=10.0.0.5/24 gw=10.0.0.1 port=80 name=",
        "ip=10.0.0.5/24 gw=10.0.0.1 port=80 name=a/b",
        "ip=10.0.0.5/24 gw=10.0.0.1 port=80 name=x service=echo",            /* not this image's */
        "ip=10.0.0.5/24 gw=10.0.0.1 port=80 name=x color=red",               /* nobody's key */
        "ip=10.0.0.5/24 gw=10.0.0.1 port=80 name=x idle_timeout=1 idle_timeout=2",
    };
    struct boot_args a;
    for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++) {
        exits = 0;
        CHECK(parse(lines[i], &a) == 1);
        CHECK(exits == 1);
    }
    /* A declared key with a bad value fails when the service reads it. */
    CHECK(parse("ip=10.0.0.5/24 gw=10.0.0.1 port=80 name=x idle_timeout=0", &a) == 0);
    if (!setjmp(died)) {
        cmdline_uint("idle_timeout", 1, 100, 75);
        CHECK(!"idle_timeout=0 accepted");
    }
    CHECK(parse("ip=10.0.0.5/24 gw=10.0.0.1 port=80 name=x max_conns=99999999999", &a) == 0);
    if (!setjmp(died)) {
        cmdline_uint("max_conns", 1, 600, 512);
        CHECK(!"max_conns overflow accepted");
    }
}

static void random_lines(void)
{
    static const char alphabet[] = "ip=gw/port.name0123456789 service=httpd_idle-timeoutmax_conns\xff";
    char line[2048];
    struct boot_args a;
    srand(12);
    for (int round = 0; round < 30000; round++) {
        size_t n = (size_t)rand() % sizeof(line);
        for (size_t i = 0; i < n; i++)
            line[i] = alphabet[rand() % (int)(sizeof(alphabet) - 1)];
        line[n] = 0;
        if (parse(line, &a) == 0) {
            CHECK(a.port != 0 && a.name[0] && a.prefix >= 1 && a.prefix <= 32);
            CHECK(strlen(a.name) < sizeof(a.name) && strlen(a.ip_str) < sizeof(a.ip_str));
        }
    }
}

int main(void)
{
    if (!freopen("/dev/null", "w", stdout))   /* the parser's error lines: expected, thousands */
        return 1;
    good_lines();
    bad_lines();
    random_lines();
    fprintf(stderr, "cmdline: ok\n");
    return 0;
}
