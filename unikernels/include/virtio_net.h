/* Legacy virtio-net over PCI: frames in, frames out, no lwIP knowledge. */
#ifndef UK_VIRTIO_NET_H
#define UK_VIRTIO_NET_H
#include <stdint.h>
#include <stddef.h>

int vnet_init(uint8_t mac[6]);
/* Hands each received frame to `deliver`, then recycles its buffer. */
int vnet_poll_rx(void (*deliver)(const void *frame, size_t len));
/* Zero-copy-ish transmit: borrow a buffer, fill it, commit it (or not). */
void *vnet_tx_begin(size_t *cap);
void vnet_tx_commit(size_t len);
/* 1 once after a full ring has slots again: time to retry what failed. */
int vnet_tx_unblocked(void);
extern uint32_t vnet_tx_full_count;   /* sends refused on a full ring (for /api/info) */
/* Received frames not yet handled (checked with interrupts off before hlt). */
int vnet_rx_pending(void);
#endif
