/* Legacy virtio-net over PCI (virtio_pci.h): frames in, frames out, no lwIP knowledge. */
#ifndef UK_VIRTIO_NET_H
#define UK_VIRTIO_NET_H
#include <stdint.h>
#include <stddef.h>

int vnet_init(uint8_t mac[6]);
/* Hands each received frame to `deliver`, then recycles its buffer. */
int vnet_poll_rx(void (*deliver)(const void *frame, size_t len));
/* Zero-copy-ish transmit: borrow a buffer, fill it, commit it (or not). */
void *vnet_tx_begin(size_t *cap);   /* cap is always VNET_TX_MAX */
#define VNET_TX_MAX (2048 - 10)
void vnet_tx_commit(size_t len);
/* 1 once after a full ring has slots again: time to retry what failed. */
int vnet_tx_unblocked(void);
extern uint32_t vnet_tx_full_count;   /* sends refused on a full ring (for /api/info) */
/* Received frames not yet handled (checked with interrupts off before hlt). */
int vnet_rx_pending(void);
/* Counters and ring indexes, for /api/info and the NMI console dump. */
struct vnet_stats {
    uint32_t rx_frames, tx_frames, rx_kicks, tx_kicks, irqs;
    uint32_t tx_ring_full, tx_free, tx_blocked;
    uint16_t rx_avail, rx_used, rx_last_used, tx_avail, tx_used, tx_last_used;
    uint16_t rx_used_flags, tx_used_flags;
    uint32_t rx_bad, tx_bad;   /* used elements dropped: id not posted or length beyond the slot */
};
extern struct vnet_stats vnet_stats;
void vnet_snapshot(struct vnet_stats *s);   /* safe from the NMI handler */
void vnet_tx_reclaim(void);                  /* main loop only: take back sent slots */
#endif
