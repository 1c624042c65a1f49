#ifndef UK_SERVICES_H
#define UK_SERVICES_H
#include "cmdline.h"
/* Each service listens on the boot port; 0 on success. */
int httpd_start(const struct boot_args *a);
int echo_start(const struct boot_args *a);
#endif
