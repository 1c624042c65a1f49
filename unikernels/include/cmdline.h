/* Boot arguments: key=value words from the multiboot command line. The kernel
 * parses the common keys into struct boot_args; a service reads the extra keys
 * it declares (struct service.keys) with cmdline_value() / cmdline_uint(). */
#ifndef UK_CMDLINE_H
#define UK_CMDLINE_H
#include <stdint.h>

struct service;

struct boot_args {
    uint32_t ip, netmask, gw;   /* network byte order */
    int prefix;
    uint16_t port;
    char name[64];
    char ip_str[16];
};

void cmdline_copy(const char *src);
/* Parses the copied line for the image's service `svc`: ip, gw, port, name are
 * required, service= is optional but must name `svc`, and any other key must be
 * one `svc` declares. On error prints one line and exits non-zero. */
void cmdline_parse(struct boot_args *out, const struct service *svc);
/* The value of an extra key, or NULL when it was not given. */
const char *cmdline_value(const char *key);
/* An extra key as a number in [min, max], or `def` when it was not given;
 * anything else is a bad command line (one error line, non-zero exit). */
uint32_t cmdline_uint(const char *key, uint32_t min, uint32_t max, uint32_t def);
/* Prints `error: bad command line: WHAT[: VAL]` and exits non-zero. */
void cmdline_die(const char *what, const char *val) __attribute__((noreturn));
#endif
