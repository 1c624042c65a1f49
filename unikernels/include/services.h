/* The service table: each image holds exactly one service, defined with
 * SERVICE_DEFINE in its own .c file; the kernel finds it in the .services
 * section (kernel/linker.ld keeps it and brackets it with __services_start/end). */
#ifndef UK_SERVICES_H
#define UK_SERVICES_H
#include "cmdline.h"

struct boot_args;
struct service {
    const char *name;                 /* "static", "echo", "httpd", ... */
    const char *const *keys;          /* extra key=value boot arguments it accepts, NULL-terminated, or NULL */
    int (*start)(const struct boot_args *args);   /* listen on args->port; 0 on success */
};

/* One per service, in its own .c file; the kernel finds it in the .services section. */
#define SERVICE_DEFINE(var, ...) \
    static const struct service var __attribute__((used, section(".services"), aligned(4))) = { __VA_ARGS__ }

extern const struct service __services_start[], __services_end[];
#endif
