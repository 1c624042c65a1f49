/* Legacy virtio-net over the shared virtio layer (virtio_pci.c: PCI, or
 * virtio-mmio on microvm).
 * Receive buffers are fixed 2 KiB slots, each one descriptor holding the
 * 10-byte header plus a full frame (no mergeable buffers). Transmit copies a
 * frame into a fixed slot per descriptor, so completion is just returning the
 * slot. The interrupt only acks (reading ISR) and wakes the loop. What the
 * device returns is checked by virtq_next_used(): a slot id we did not post or
 * a length beyond the slot is counted and dropped. */
#include <string.h>
#include "kernel.h"
#include "virtio_pci.h"
#include "virtio_net.h"

#define F_MAC (1u << 5)
#define CONFIG_MAC 0

#define HDR_LEN 10
#define SLOT 2048
#define MAX_SLOTS 256

static struct virtio_dev dev;
static struct virtq rxq, txq;
static uint8_t *rx_bufs, *tx_bufs;   /* SLOT bytes per descriptor */
static uint16_t tx_free[MAX_SLOTS], tx_nfree;
static int tx_blocked;              /* a send failed on a full ring */
uint32_t vnet_tx_full_count;
struct vnet_stats vnet_stats;

static void irq(void)
{
    vnet_stats.irqs++;
    if (virtio_isr(&dev) & 1)   /* reading ISR acks the interrupt */
        work_pending = 1;
}

void vnet_snapshot(struct vnet_stats *s)
{
    *s = vnet_stats;
    s->rx_kicks = rxq.kicks;
    s->tx_kicks = txq.kicks;
    s->rx_bad = rxq.bad;
    s->tx_bad = txq.bad;
    s->tx_ring_full = vnet_tx_full_count;
    s->tx_free = tx_nfree;
    s->tx_blocked = (uint32_t)tx_blocked;
    s->rx_avail = rxq.avail->idx;
    s->rx_used = rxq.used->idx;
    s->rx_last_used = rxq.last_used;
    s->tx_avail = txq.avail->idx;
    s->tx_used = txq.used->idx;
    s->tx_last_used = txq.last_used;
    s->rx_used_flags = rxq.used->flags;
    s->tx_used_flags = txq.used->flags;
}

static uint8_t *slots_setup(struct virtq *q)
{
    unsigned slots = q->size < MAX_SLOTS ? q->size : MAX_SLOTS;
    uint8_t *bufs = page_alloc(slots * SLOT);
    for (unsigned i = 0; i < slots; i++) {
        q->desc[i].addr = (uintptr_t)(bufs + i * SLOT);
        q->desc[i].len = SLOT;
    }
    return bufs;
}

int vnet_init(uint8_t mac[6])
{
    int rc = virtio_find(VIRTIO_TYPE_NET, 0, &dev);
    if (rc == -2)
        panic("virtio-net: BAR0 is not I/O (is disable-modern=on set?)");
    if (rc)
        return -1;
    uint32_t features = virtio_begin(&dev);
    virtio_set_features(&dev, features & F_MAC);
    if (virtq_setup(&dev, &rxq, 0) || virtq_setup(&dev, &txq, 1))
        panic("virtio-net: bad queue sizes");
    rx_bufs = slots_setup(&rxq);
    tx_bufs = slots_setup(&txq);

    unsigned rx_slots = rxq.size < MAX_SLOTS ? rxq.size : MAX_SLOTS;
    for (unsigned i = 0; i < rx_slots; i++) {
        rxq.desc[i].flags = VIRTQ_DESC_F_WRITE;
        virtq_post(&rxq, (uint16_t)i);
    }
    unsigned tx_slots = txq.size < MAX_SLOTS ? txq.size : MAX_SLOTS;
    for (unsigned i = 0; i < tx_slots; i++)
        tx_free[tx_nfree++] = (uint16_t)(tx_slots - 1 - i);

    for (int i = 0; i < 6; i++)
        mac[i] = (features & F_MAC) ? virtio_config8(&dev, CONFIG_MAC + i) : (uint8_t)(i ? 0x10 * i : 0x52);
    irq_register(dev.irq, irq);
    irq_unmask(dev.irq);
    virtio_driver_ok(&dev);
    virtq_kick(&rxq);
    return 0;
}

int vnet_rx_pending(void)
{
    return virtq_has_used(&rxq);
}

int vnet_poll_rx(void (*deliver)(const void *frame, size_t len))
{
    int n = 0;
    uint16_t id;
    uint32_t len;
    while (virtq_next_used(&rxq, SLOT, &id, &len)) {
        vnet_stats.rx_frames++;
        if (len > HDR_LEN && len != VIRTQ_BAD_LEN)
            deliver(rx_bufs + id * SLOT + HDR_LEN, len - HDR_LEN);
        virtq_post(&rxq, id);
        n++;
    }
    if (n)
        virtq_kick(&rxq);
    return n;
}

void vnet_tx_reclaim(void)
{
    uint16_t id;
    uint32_t len;
    /* The device writes nothing into a transmit buffer: any length will do. */
    while (virtq_next_used(&txq, VIRTQ_BAD_LEN - 1, &id, &len))
        tx_free[tx_nfree++] = id;
}

static int tx_slot = -1;

void *vnet_tx_begin(size_t *cap)
{
    vnet_tx_reclaim();
    if (!tx_nfree) {
        /* Ring full: the caller drops the frame; vnet_tx_unblocked() tells the
         * loop when to retry, as soon as the device hands slots back. */
        tx_blocked = 1;
        vnet_tx_full_count++;
        return NULL;
    }
    tx_slot = tx_free[--tx_nfree];
    uint8_t *buf = tx_bufs + tx_slot * SLOT;
    memset(buf, 0, HDR_LEN);   /* no offloads requested: an all-zero header */
    *cap = SLOT - HDR_LEN;   /* == VNET_TX_MAX */
    return buf + HDR_LEN;
}

int vnet_tx_unblocked(void)
{
    if (!tx_blocked)
        return 0;
    vnet_tx_reclaim();
    if (!tx_nfree)
        return 0;
    tx_blocked = 0;
    return 1;
}

void vnet_tx_commit(size_t len)
{
    txq.desc[tx_slot].len = (uint32_t)(HDR_LEN + len);
    txq.desc[tx_slot].flags = 0;
    virtq_post(&txq, (uint16_t)tx_slot);
    tx_slot = -1;
    vnet_stats.tx_frames++;
    virtq_kick(&txq);
}
