#ifndef UK_NET_H
#define UK_NET_H
#include "cmdline.h"
/* Brings up virtio-net and the lwIP interface with the boot addresses. */
void net_init(const struct boot_args *a);
/* Moves received frames into lwIP; returns how many. */
int net_poll(void);
int net_rx_pending(void);
#endif
