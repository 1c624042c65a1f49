/* Legacy (version 1) virtio-mmio, the transport of QEMU's microvm machine: a
 * 512-byte register window per device. microvm puts its transports at
 * 0xFEB00000 + 512 * i, interrupting on an I/O APIC line (the addresses and lines it
 * hands Linux as virtio_mmio.device=512@ADDR:IRQ); a window whose magic is not
 * "virt" or whose DeviceID is 0 holds no device. Unlike PCI, the driver picks
 * the queue size (up to QueueNumMax) and acknowledges interrupts explicitly. */
#include "kernel.h"
#include "virtio_pci.h"

#define MMIO_BASE 0xFEB00000u
#define MMIO_SLOT 0x200u
#define MMIO_SLOTS 24

#define REG_MAGIC 0x000
#define REG_VERSION 0x004
#define REG_DEVICE_ID 0x008
#define REG_HOST_FEATURES 0x010
#define REG_HOST_FEATURES_SEL 0x014
#define REG_GUEST_FEATURES 0x020
#define REG_GUEST_FEATURES_SEL 0x024
#define REG_GUEST_PAGE_SIZE 0x028
#define REG_QUEUE_SEL 0x030
#define REG_QUEUE_NUM_MAX 0x034
#define REG_QUEUE_NUM 0x038
#define REG_QUEUE_ALIGN 0x03C
#define REG_QUEUE_PFN 0x040
#define REG_QUEUE_NOTIFY 0x050
#define REG_INTERRUPT_STATUS 0x060
#define REG_INTERRUPT_ACK 0x064
#define REG_STATUS 0x070
#define REG_CONFIG 0x100

#define MAGIC 0x74726976u   /* "virt" */

static uint32_t rd(const struct virtio_dev *d, unsigned reg)
{
    return *(volatile uint32_t *)(d->mmio + reg);
}

static void wr(const struct virtio_dev *d, unsigned reg, uint32_t v)
{
    *(volatile uint32_t *)(d->mmio + reg) = v;
}

int virtio_mmio_find(unsigned type, unsigned nth, struct virtio_dev *out)
{
    for (unsigned i = 0; i < MMIO_SLOTS; i++) {
        struct virtio_dev d = { .mmio = (volatile uint8_t *)(uintptr_t)(MMIO_BASE + i * MMIO_SLOT) };
        if (rd(&d, REG_MAGIC) != MAGIC || rd(&d, REG_DEVICE_ID) != type || nth-- > 0)
            continue;
        if (rd(&d, REG_VERSION) != 1)
            return -2;   /* a modern-only transport (QEMU: -global virtio-mmio.force-legacy=off) */
        /* QEMU 7.2 wires transport i to ISA line 5 + i without ACPI (acpi=off: no MADT
         * lists an I/O APIC), else to GSI 16 + i (one I/O APIC), or 24 + i with its second
         * I/O APIC (ioapic2, the default): past the PICs, routed by ioapic.c. */
        uint32_t gsis = ioapic_gsi_end();
        d.irq = (uint8_t)((gsis == 0 ? 5 : gsis > 24 ? 24 : 16) + i);
        *out = d;
        return 0;
    }
    return -1;
}

uint8_t virtio_mmio_status(const struct virtio_dev *d) { return (uint8_t)rd(d, REG_STATUS); }

void virtio_mmio_set_status(const struct virtio_dev *d, uint8_t status)
{
    wr(d, REG_STATUS, status);
    if (status == 0)
        wr(d, REG_GUEST_PAGE_SIZE, 4096);   /* the unit of QueuePFN, set once after a reset */
}

uint32_t virtio_mmio_features(const struct virtio_dev *d)
{
    wr(d, REG_HOST_FEATURES_SEL, 0);
    return rd(d, REG_HOST_FEATURES);
}

void virtio_mmio_set_features(const struct virtio_dev *d, uint32_t features)
{
    wr(d, REG_GUEST_FEATURES_SEL, 0);
    wr(d, REG_GUEST_FEATURES, features);
}

uint16_t virtio_mmio_queue_select(const struct virtio_dev *d, uint16_t index, uint16_t max)
{
    wr(d, REG_QUEUE_SEL, index);
    if (rd(d, REG_QUEUE_PFN))
        return 0;   /* already in use */
    uint32_t most = rd(d, REG_QUEUE_NUM_MAX);
    if (most == 0)
        return 0;
    uint16_t size = 1;
    while (size * 2u <= most && size * 2u <= max)
        size = (uint16_t)(size * 2);
    wr(d, REG_QUEUE_NUM, size);
    wr(d, REG_QUEUE_ALIGN, 4096);
    return size;
}

void virtio_mmio_queue_pfn(const struct virtio_dev *d, uint32_t pfn) { wr(d, REG_QUEUE_PFN, pfn); }

void virtio_mmio_notify(const struct virtio_dev *d, uint16_t index) { wr(d, REG_QUEUE_NOTIFY, index); }

uint8_t virtio_mmio_isr(const struct virtio_dev *d)
{
    uint32_t s = rd(d, REG_INTERRUPT_STATUS);
    if (s)
        wr(d, REG_INTERRUPT_ACK, s);
    return (uint8_t)s;
}

uint8_t virtio_mmio_config8(const struct virtio_dev *d, unsigned off)
{
    return d->mmio[REG_CONFIG + off];
}
