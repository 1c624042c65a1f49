/* Legacy (virtio 0.9.5 / "transitional") virtio over PCI, driven by the I/O BAR,
 * and split virtqueues in the legacy layout. Shared by every virtio driver.
 * The same calls also drive legacy virtio-mmio devices (drivers/virtio_mmio.c),
 * which is how QEMU's microvm machine attaches them: virtio_find() returns
 * whichever transport the machine has.
 * Everything the device writes into a used ring is checked before use: an id
 * that was not posted, or a length beyond the posted buffer, is counted in
 * `bad` and dropped, never used to index memory. */
#ifndef UK_VIRTIO_PCI_H
#define UK_VIRTIO_PCI_H
#include <stdint.h>
#include <stddef.h>
#include "pci.h"

/* Transitional PCI device ids. */
#define VIRTIO_PCI_VENDOR 0x1AF4
#define VIRTIO_ID_NET 0x1000
#define VIRTIO_ID_9P 0x1009

/* Device status bits. */
#define VIRTIO_ST_ACK 1
#define VIRTIO_ST_DRIVER 2
#define VIRTIO_ST_DRIVER_OK 4
#define VIRTIO_ST_FAILED 128

#define VIRTQ_DESC_F_NEXT 1
#define VIRTQ_DESC_F_WRITE 2
#define VIRTQ_AVAIL_F_NO_INTERRUPT 1
#define VIRTQ_USED_F_NO_NOTIFY 1

struct virtq_desc { uint64_t addr; uint32_t len; uint16_t flags, next; };
struct virtq_avail { uint16_t flags, idx, ring[]; };
struct virtq_used_elem { uint32_t id, len; };
struct virtq_used { uint16_t flags, idx; struct virtq_used_elem ring[]; };

/* Virtio device types (the virtio-mmio DeviceID). */
#define VIRTIO_TYPE_NET 1
#define VIRTIO_TYPE_9P 9

struct virtio_dev {
    struct pci_dev pci;
    uint16_t iobase;          /* PCI: the legacy I/O BAR */
    volatile uint8_t *mmio;   /* virtio-mmio: the register window (NULL on PCI) */
    uint8_t irq;              /* the 8259 line it interrupts on */
};

struct virtq {
    const struct virtio_dev *dev;
    uint16_t index, size, last_used;
    struct virtq_desc *desc;
    volatile struct virtq_avail *avail;
    volatile struct virtq_used *used;
    uint8_t *posted;  /* per descriptor head: 1 while the device owns it */
    uint32_t kicks;   /* notifications sent to the device */
    uint32_t bad;     /* used elements dropped: id not posted or length beyond the buffer */
};

/* The nth (0-based) function with this transitional device id, its I/O BAR
 * enabled with bus mastering; 0 if found, -1 if not, -2 if its BAR0 is not
 * I/O (the device was not started with disable-modern=on). */
int virtio_pci_find(uint16_t device_id, unsigned nth, struct virtio_dev *out);
/* The nth device of this type on PCI, or failing that on virtio-mmio; the
 * same return values. */
int virtio_find(unsigned type, unsigned nth, struct virtio_dev *out);
/* Reset, then ACK|DRIVER; returns the device's feature bits. */
uint32_t virtio_begin(const struct virtio_dev *d);
/* Accepts `features` (a subset of what the device offered). */
void virtio_set_features(const struct virtio_dev *d, uint32_t features);
/* Adds DRIVER_OK: the device may start using the queues. */
void virtio_driver_ok(const struct virtio_dev *d);
/* Marks the device FAILED (it stops; we stop using it). */
void virtio_fail(const struct virtio_dev *d);
/* Reading the ISR acknowledges the interrupt; bit 0: a queue was used. */
uint8_t virtio_isr(const struct virtio_dev *d);
uint8_t virtio_config8(const struct virtio_dev *d, unsigned off);

/* Allocates queue `index` at the size the device dictates (legacy devices
 * cannot be told another) and gives it to the device; 0, or -1 when the
 * device has no such queue or reports a size that is not a power of two. */
int virtq_setup(const struct virtio_dev *d, struct virtq *q, uint16_t index);
/* Makes `head` available (the caller filled its descriptors). */
void virtq_post(struct virtq *q, uint16_t head);
/* Tells the device about new buffers unless it asked not to be told. */
void virtq_kick(struct virtq *q);
/* The virtio-mmio transport (drivers/virtio_mmio.c), used by the calls above
 * for a device whose `mmio` is set. */
int virtio_mmio_find(unsigned type, unsigned nth, struct virtio_dev *out);
uint8_t virtio_mmio_status(const struct virtio_dev *d);
void virtio_mmio_set_status(const struct virtio_dev *d, uint8_t status);
uint32_t virtio_mmio_features(const struct virtio_dev *d);
void virtio_mmio_set_features(const struct virtio_dev *d, uint32_t features);
uint16_t virtio_mmio_queue_select(const struct virtio_dev *d, uint16_t index, uint16_t max);   /* its size, 0: none */
void virtio_mmio_queue_pfn(const struct virtio_dev *d, uint32_t pfn);
void virtio_mmio_notify(const struct virtio_dev *d, uint16_t index);
uint8_t virtio_mmio_isr(const struct virtio_dev *d);   /* read and acknowledged */
uint8_t virtio_mmio_config8(const struct virtio_dev *d, unsigned off);

static inline int virtq_has_used(const struct virtq *q) { return q->used->idx != q->last_used; }
/* Takes the next used element: 1 with *id a head we posted (and have not had
 * back since) and *len <= max_len, 0 when none is left. Elements failing those
 * checks are counted in q->bad and skipped; a head with a bad length is still
 * handed back to us (1 with *len = VIRTQ_BAD_LEN) so its buffer can be reposted. */
#define VIRTQ_BAD_LEN 0xFFFFFFFFu
int virtq_next_used(struct virtq *q, uint32_t max_len, uint16_t *id, uint32_t *len);
#endif
