/* Legacy (virtio 0.9.5) virtio-net over PCI, driven by the I/O BAR.
 * Split virtqueues in the legacy layout: descriptors, then the available ring,
 * then the used ring on the next 4096 boundary; the device is told the page
 * frame number. Receive buffers are fixed 2 KiB slots, each one descriptor
 * holding the 10-byte header plus a full frame (no mergeable buffers). Transmit
 * copies a frame into a fixed slot per descriptor, so completion is just
 * returning the slot. The interrupt only acks (reading ISR) and wakes the loop. */
#include <string.h>
#include "kernel.h"
#include "pci.h"
#include "virtio_net.h"

#define REG_DEV_FEATURES 0
#define REG_GUEST_FEATURES 4
#define REG_QUEUE_PFN 8
#define REG_QUEUE_SIZE 12
#define REG_QUEUE_SEL 14
#define REG_QUEUE_NOTIFY 16
#define REG_STATUS 18
#define REG_ISR 19
#define REG_MAC 20

#define ST_ACK 1
#define ST_DRIVER 2
#define ST_DRIVER_OK 4
#define ST_FAILED 128

#define F_MAC (1u << 5)

#define DESC_F_WRITE 2
#define USED_F_NO_NOTIFY 1

#define HDR_LEN 10
#define SLOT 2048
#define MAX_SLOTS 256

struct vq_desc { uint64_t addr; uint32_t len; uint16_t flags, next; };
struct vq_avail { uint16_t flags, idx, ring[]; };
struct vq_used_elem { uint32_t id, len; };
struct vq_used { uint16_t flags, idx; struct vq_used_elem ring[]; };

struct vq {
    uint16_t index, size, last_used;
    struct vq_desc *desc;
    volatile struct vq_avail *avail;
    volatile struct vq_used *used;
    uint8_t *bufs;                 /* SLOT bytes per descriptor */
};

static uint16_t iobase;
static struct vq rxq, txq;
static uint16_t tx_free[MAX_SLOTS], tx_nfree;
static int tx_blocked;              /* a send failed on a full ring */
uint32_t vnet_tx_full_count;
struct vnet_stats vnet_stats;

static void vq_setup(struct vq *q, uint16_t index)
{
    outw(iobase + REG_QUEUE_SEL, index);
    uint16_t size = inw(iobase + REG_QUEUE_SIZE);
    if (!size || (size & (size - 1)))
        panic("virtio-net: bad queue %u size %u", index, size);
    size_t ring1 = (16u * size + 6 + 2u * size + 4095) & ~4095u;
    size_t ring2 = (6 + 8u * size + 4095) & ~4095u;
    uint8_t *mem = page_alloc(ring1 + ring2);
    q->index = index;
    q->size = size;
    q->desc = (struct vq_desc *)mem;
    q->avail = (struct vq_avail *)(mem + 16u * size);
    q->used = (struct vq_used *)(mem + ring1);
    unsigned slots = size < MAX_SLOTS ? size : MAX_SLOTS;
    q->bufs = page_alloc(slots * SLOT);
    for (unsigned i = 0; i < slots; i++) {
        q->desc[i].addr = (uintptr_t)(q->bufs + i * SLOT);
        q->desc[i].len = SLOT;
    }
    outl(iobase + REG_QUEUE_PFN, (uintptr_t)mem >> 12);
}

static void notify(struct vq *q)
{
    __sync_synchronize();
    if (!(q->used->flags & USED_F_NO_NOTIFY)) {
        outw(iobase + REG_QUEUE_NOTIFY, q->index);
        if (q == &txq)
            vnet_stats.tx_kicks++;
        else
            vnet_stats.rx_kicks++;
    }
}

static void irq(void)
{
    vnet_stats.irqs++;
    if (inb(iobase + REG_ISR) & 1)   /* reading ISR acks the interrupt */
        work_pending = 1;
}

void vnet_snapshot(struct vnet_stats *s)
{
    *s = vnet_stats;
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

int vnet_init(uint8_t mac[6])
{
    struct pci_dev d;
    /* 0x1000 is the transitional (legacy-capable) virtio-net device id. */
    if (pci_find(0x1AF4, 0x1000, &d))
        return -1;
    uint32_t bar0 = pci_read32(&d, 0x10);
    if (!(bar0 & 1))
        panic("virtio-net: BAR0 is not I/O (is disable-modern=on set?)");
    iobase = bar0 & 0xFFFC;
    pci_write16(&d, 0x04, (uint16_t)(pci_read32(&d, 0x04) | 0x5));   /* I/O + bus master */

    outb(iobase + REG_STATUS, 0);
    outb(iobase + REG_STATUS, ST_ACK);
    outb(iobase + REG_STATUS, ST_ACK | ST_DRIVER);
    uint32_t features = inl(iobase + REG_DEV_FEATURES);
    outl(iobase + REG_GUEST_FEATURES, features & F_MAC);
    vq_setup(&rxq, 0);
    vq_setup(&txq, 1);

    unsigned rx_slots = rxq.size < MAX_SLOTS ? rxq.size : MAX_SLOTS;
    for (unsigned i = 0; i < rx_slots; i++) {
        rxq.desc[i].flags = DESC_F_WRITE;
        rxq.avail->ring[i] = (uint16_t)i;
    }
    rxq.avail->idx = (uint16_t)rx_slots;
    unsigned tx_slots = txq.size < MAX_SLOTS ? txq.size : MAX_SLOTS;
    for (unsigned i = 0; i < tx_slots; i++)
        tx_free[tx_nfree++] = (uint16_t)(tx_slots - 1 - i);

    for (int i = 0; i < 6; i++)
        mac[i] = (features & F_MAC) ? inb(iobase + REG_MAC + i) : (uint8_t)(i ? 0x10 * i : 0x52);
    irq_register(d.irq, irq);
    irq_unmask(d.irq);
    outb(iobase + REG_STATUS, ST_ACK | ST_DRIVER | ST_DRIVER_OK);
    notify(&rxq);
    return 0;
}

int vnet_rx_pending(void)
{
    return rxq.used->idx != rxq.last_used;
}

int vnet_poll_rx(void (*deliver)(const void *frame, size_t len))
{
    int n = 0;
    while (rxq.used->idx != rxq.last_used) {
        __sync_synchronize();
        volatile struct vq_used_elem *e = &rxq.used->ring[rxq.last_used % rxq.size];
        uint16_t id = (uint16_t)e->id;
        uint32_t len = e->len;
        vnet_stats.rx_frames++;
        if (len > HDR_LEN)
            deliver(rxq.bufs + id * SLOT + HDR_LEN, len - HDR_LEN);
        rxq.last_used++;
        rxq.avail->ring[rxq.avail->idx % rxq.size] = id;
        __sync_synchronize();
        rxq.avail->idx++;
        n++;
    }
    if (n)
        notify(&rxq);
    return n;
}

void vnet_tx_reclaim(void)
{
    while (txq.used->idx != txq.last_used) {
        __sync_synchronize();
        tx_free[tx_nfree++] = (uint16_t)txq.used->ring[txq.last_used % txq.size].id;
        txq.last_used++;
    }
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
    uint8_t *buf = txq.bufs + tx_slot * SLOT;
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
    txq.avail->ring[txq.avail->idx % txq.size] = (uint16_t)tx_slot;
    __sync_synchronize();
    txq.avail->idx++;
    tx_slot = -1;
    vnet_stats.tx_frames++;
    notify(&txq);
}
