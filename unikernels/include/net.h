#ifndef UK_NET_H
#define UK_NET_H
#include "cmdline.h"
/* Brings up virtio-net and the lwIP interface with the boot addresses. */
void net_init(const struct boot_args *a);
/* Moves received frames into lwIP; returns how many. */
int net_poll(void);
int net_rx_pending(void);
/* Driver and lwIP counters as JSON members (no braces), for /api/info. */
int net_info_json(char *buf, size_t n);
/* The same and the ring indexes on the console (from the NMI handler). */
void net_dump(void);
#endif
