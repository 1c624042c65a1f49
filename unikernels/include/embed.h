/* Files from services/httpd/static/, embedded at build time (scripts/embed-static.sh). */
#ifndef UK_HTTPD_STATIC_H
#define UK_HTTPD_STATIC_H
#include <stdint.h>
struct static_file {
    const char *name;
    const uint8_t *data;
    uint32_t size;
};
extern const struct static_file static_files[];   /* ends with name == NULL */
#endif
