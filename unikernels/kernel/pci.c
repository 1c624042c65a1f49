/* PCI configuration space through the legacy 0xCF8/0xCFC mechanism. */
#include "kernel.h"
#include "pci.h"

static uint32_t addr(uint8_t bus, uint8_t slot, uint8_t fn, uint8_t off)
{
    return 0x80000000u | (uint32_t)bus << 16 | (uint32_t)slot << 11 | (uint32_t)fn << 8 | (off & 0xFC);
}

static uint32_t read32(uint8_t bus, uint8_t slot, uint8_t fn, uint8_t off)
{
    outl(0xCF8, addr(bus, slot, fn, off));
    return inl(0xCFC);
}

uint32_t pci_read32(const struct pci_dev *d, uint8_t off)
{
    return read32(d->bus, d->slot, d->fn, off);
}

void pci_write16(const struct pci_dev *d, uint8_t off, uint16_t v)
{
    outl(0xCF8, addr(d->bus, d->slot, d->fn, off));
    outw(0xCFC + (off & 2), v);
}

int pci_find(uint16_t vendor, uint16_t device, struct pci_dev *out)
{
    for (int bus = 0; bus < 256; bus++) {
        for (int slot = 0; slot < 32; slot++) {
            uint32_t id = read32(bus, slot, 0, 0);
            if ((id & 0xFFFF) == 0xFFFF)
                continue;
            int nfn = (read32(bus, slot, 0, 0x0C) >> 16) & 0x80 ? 8 : 1;
            for (int fn = 0; fn < nfn; fn++) {
                id = read32(bus, slot, fn, 0);
                if ((id & 0xFFFF) != vendor || (id >> 16) != device)
                    continue;
                out->bus = bus;
                out->slot = slot;
                out->fn = fn;
                out->vendor = vendor;
                out->device = device;
                out->irq = read32(bus, slot, fn, 0x3C) & 0xFF;
                return 0;
            }
        }
        if (bus == 0)
            break;   /* i440fx: everything we need sits on bus 0, no bridges */
    }
    return -1;
}
