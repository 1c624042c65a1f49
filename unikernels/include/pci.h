#ifndef UK_PCI_H
#define UK_PCI_H
#include <stdint.h>
struct pci_dev {
    uint8_t bus, slot, fn, irq;
    uint16_t vendor, device;
};
uint32_t pci_read32(const struct pci_dev *d, uint8_t off);
void pci_write16(const struct pci_dev *d, uint8_t off, uint16_t v);
/* First function matching vendor/device; 0 if found. */
int pci_find(uint16_t vendor, uint16_t device, struct pci_dev *out);
#endif
