/* Boot arguments: key=value words from the multiboot command line. */
#ifndef UK_CMDLINE_H
#define UK_CMDLINE_H
#include <stdint.h>

enum service { SERVICE_HTTPD, SERVICE_ECHO };

struct boot_args {
    uint32_t ip, netmask, gw;   /* network byte order */
    int prefix;
    uint16_t port;
    char name[64];
    enum service service;
    char ip_str[16];
    uint32_t idle_timeout_s;    /* httpd: close keep-alive connections idle this long */
};

void cmdline_copy(const char *src);
/* Parses the copied line; on error prints one line and exits non-zero. */
void cmdline_parse(struct boot_args *out);
#endif
