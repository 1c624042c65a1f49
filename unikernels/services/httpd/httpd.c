#include "services.h"
int httpd_start(const struct boot_args *a) { (void)a; return -1; }
