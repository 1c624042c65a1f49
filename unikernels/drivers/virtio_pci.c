/* Legacy virtio-PCI: the I/O BAR registers and split virtqueues in the legacy
 * layout (descriptors, then the available ring, then the used ring on the next
 * 4096 boundary; the device is told the page frame number). A device found on
 * virtio-mmio instead (microvm) goes through the same calls to virtio_mmio.c. */
#include <string.h>
#include "kernel.h"
#include "virtio_pci.h"

#define REG_DEV_FEATURES 0
#define REG_GUEST_FEATURES 4
#define REG_QUEUE_PFN 8
#define REG_QUEUE_SIZE 12
#define REG_QUEUE_SEL 14
#define REG_QUEUE_NOTIFY 16
#define REG_STATUS 18
#define REG_ISR 19
#define REG_CONFIG 20   /* device-specific configuration (no MSI-X: it starts here) */

int virtio_pci_find(uint16_t device_id, unsigned nth, struct virtio_dev *out)
{
    /* Bus 0 only: QEMU's i440fx puts every device there, with no bridges. */
    struct pci_dev d = { 0 };
    for (unsigned slot = 0; slot < 32; slot++) {
        d.slot = (uint8_t)slot;
        d.fn = 0;
        uint32_t id = pci_read32(&d, 0);
        if ((id & 0xFFFF) == 0xFFFF)
            continue;
        unsigned nfn = (pci_read32(&d, 0x0C) >> 16) & 0x80 ? 8 : 1;
        for (unsigned fn = 0; fn < nfn; fn++) {
            d.fn = (uint8_t)fn;
            id = pci_read32(&d, 0);
            if ((id & 0xFFFF) != VIRTIO_PCI_VENDOR || (id >> 16) != device_id || nth-- > 0)
                continue;
            d.vendor = VIRTIO_PCI_VENDOR;
            d.device = device_id;
            d.irq = pci_read32(&d, 0x3C) & 0xFF;
            uint32_t bar0 = pci_read32(&d, 0x10);
            if (!(bar0 & 1))
                return -2;
            *out = (struct virtio_dev){ .pci = d, .iobase = (uint16_t)(bar0 & 0xFFFC), .irq = d.irq };
            pci_write16(&d, 0x04, (uint16_t)(pci_read32(&d, 0x04) | 0x5));   /* I/O + bus master */
            return 0;
        }
    }
    return -1;
}

int virtio_find(unsigned type, unsigned nth, struct virtio_dev *out)
{
    /* Transitional PCI ids are listed per type by the spec (not a formula). */
    uint16_t pci_id = type == VIRTIO_TYPE_NET ? VIRTIO_ID_NET : type == VIRTIO_TYPE_9P ? VIRTIO_ID_9P : 0;
    int rc = pci_id ? virtio_pci_find(pci_id, nth, out) : -1;
    if (rc != -1)
        return rc;
    /* Probe virtio-mmio windows only on a machine without PCI: on a PC the
     * same addresses may hold some PCI device's registers. */
    struct pci_dev host = { 0 };
    if ((pci_read32(&host, 0) & 0xFFFF) != 0xFFFF)
        return -1;
    return virtio_mmio_find(type, nth, out);
}

static void set_status(const struct virtio_dev *d, uint8_t status)
{
    if (d->mmio)
        virtio_mmio_set_status(d, status);
    else
        outb(d->iobase + REG_STATUS, status);
}

static uint8_t status(const struct virtio_dev *d)
{
    return d->mmio ? virtio_mmio_status(d) : inb(d->iobase + REG_STATUS);
}

uint32_t virtio_begin(const struct virtio_dev *d)
{
    set_status(d, 0);   /* reset */
    set_status(d, VIRTIO_ST_ACK);
    set_status(d, VIRTIO_ST_ACK | VIRTIO_ST_DRIVER);
    if (d->mmio)
        return virtio_mmio_features(d);
    return inl(d->iobase + REG_DEV_FEATURES);
}

void virtio_set_features(const struct virtio_dev *d, uint32_t features)
{
    if (d->mmio)
        virtio_mmio_set_features(d, features);
    else
        outl(d->iobase + REG_GUEST_FEATURES, features);
}

void virtio_driver_ok(const struct virtio_dev *d)
{
    set_status(d, VIRTIO_ST_ACK | VIRTIO_ST_DRIVER | VIRTIO_ST_DRIVER_OK);
}

void virtio_fail(const struct virtio_dev *d)
{
    set_status(d, status(d) | VIRTIO_ST_FAILED);
}

uint8_t virtio_isr(const struct virtio_dev *d)
{
    if (d->mmio)
        return virtio_mmio_isr(d);
    return inb(d->iobase + REG_ISR);
}

uint8_t virtio_config8(const struct virtio_dev *d, unsigned off)
{
    if (d->mmio)
        return virtio_mmio_config8(d, off);
    return inb((uint16_t)(d->iobase + REG_CONFIG + off));
}

int virtq_setup(const struct virtio_dev *d, struct virtq *q, uint16_t index)
{
    uint16_t size;
    if (d->mmio) {
        size = virtio_mmio_queue_select(d, index, 256);   /* ours to choose: what the PCI devices use */
    } else {
        outw(d->iobase + REG_QUEUE_SEL, index);
        size = inw(d->iobase + REG_QUEUE_SIZE);
    }
    if (!size || (size & (size - 1)) || size > 32768)
        return -1;
    size_t ring1 = (16u * size + 6 + 2u * size + 4095) & ~4095u;
    size_t ring2 = (6 + 8u * size + 4095) & ~4095u;
    uint8_t *mem = page_alloc(ring1 + ring2);
    q->dev = d;
    q->index = index;
    q->size = size;
    q->last_used = 0;
    q->desc = (struct virtq_desc *)mem;
    q->avail = (struct virtq_avail *)(mem + 16u * size);
    q->used = (struct virtq_used *)(mem + ring1);
    q->posted = page_alloc(size);
    if (d->mmio)
        virtio_mmio_queue_pfn(d, (uintptr_t)mem >> 12);
    else
        outl(d->iobase + REG_QUEUE_PFN, (uintptr_t)mem >> 12);
    return 0;
}

void virtq_post(struct virtq *q, uint16_t head)
{
    q->posted[head] = 1;
    q->avail->ring[q->avail->idx & (q->size - 1)] = head;
    __sync_synchronize();   /* the entry before the index that publishes it */
    q->avail->idx++;
}

void virtq_kick(struct virtq *q)
{
    __sync_synchronize();
    if (!(q->used->flags & VIRTQ_USED_F_NO_NOTIFY)) {
        if (q->dev->mmio)
            virtio_mmio_notify(q->dev, q->index);
        else
            outw(q->dev->iobase + REG_QUEUE_NOTIFY, q->index);
        q->kicks++;
    }
}

int virtq_next_used(struct virtq *q, uint32_t max_len, uint16_t *id, uint32_t *len)
{
    while (q->used->idx != q->last_used) {
        __sync_synchronize();   /* the index before the element it covers */
        volatile struct virtq_used_elem *e = &q->used->ring[q->last_used & (q->size - 1)];
        uint32_t i = e->id, l = e->len;
        q->last_used++;
        if (i >= q->size || !q->posted[i]) {
            q->bad++;   /* not ours to take back: touching it could corrupt a live buffer */
            continue;
        }
        q->posted[i] = 0;
        if (l > max_len) {
            q->bad++;
            l = VIRTQ_BAD_LEN;
        }
        *id = (uint16_t)i;
        *len = l;
        return 1;
    }
    return 0;
}
