#ifndef UK_NET_H
#define UK_NET_H
#include "cmdline.h"
#include "lwip/tcp.h"
/* Brings up virtio-net and the lwIP interface with the boot addresses. */
void net_init(const struct boot_args *a);
/* Listens on `port` for a service, each accepted pcb going to `on_accept`
 * with `arg` (lwIP's tcp_arg); 0 on success. */
int net_listen(uint16_t port, tcp_accept_fn on_accept, void *arg);
/* Moves received frames into lwIP; returns how many. */
int net_poll(void);
int net_rx_pending(void);
/* Driver and lwIP counters as JSON members (no braces), for /api/info. */
int net_info_json(char *buf, size_t n);
/* The same and the ring indexes on the console (from the NMI handler). */
void net_dump(void);
#endif
