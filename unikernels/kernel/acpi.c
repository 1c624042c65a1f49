/* Just enough ACPI for a clean stop: find the FADT, switch the chipset into
 * ACPI mode, enable the power-button event and take its SCI; soft-off is a
 * write of SLP_TYP|SLP_EN to PM1a_CNT (SLP_TYP from the DSDT's \_S5). */
#include <string.h>
#include "kernel.h"

struct sdt {
    char sig[4];
    uint32_t len;
    uint8_t rev, sum;
    char oem[6], table[8];
    uint32_t oem_rev, creator, creator_rev;
} __attribute__((packed));

#define PWRBTN 0x0100
#define SCI_EN 0x0001
#define SLP_EN 0x2000

static uint16_t pm1a_evt, pm1a_cnt, pm1b_cnt, pm1_evt_len;
static uint16_t slp_typa, slp_typb;
static volatile int poweroff_requested;

static const uint8_t *find_rsdp(void)
{
    uintptr_t ebda = bios_ebda();
    uintptr_t ranges[2][2] = { { ebda, ebda + 1024 }, { 0xE0000, 0x100000 } };
    for (int r = 0; r < 2; r++) {
        if (!ranges[r][0])
            continue;
        for (uintptr_t p = ranges[r][0]; p < ranges[r][1]; p += 16)
            if (!memcmp((const void *)p, "RSD PTR ", 8))
                return (const uint8_t *)p;
    }
    return NULL;
}

/* \_S5 is `NameOp "_S5_" PackageOp PkgLength NumElements <SLP_TYPa> <SLP_TYPb>`. */
static void parse_s5(const struct sdt *dsdt)
{
    const uint8_t *p = (const uint8_t *)(dsdt + 1);
    const uint8_t *end = (const uint8_t *)dsdt + dsdt->len;
    for (; p + 8 < end; p++) {
        if (memcmp(p, "_S5_", 4) || p[4] != 0x12)
            continue;
        p += 5;
        p += ((*p & 0xC0) >> 6) + 2;   /* PkgLength bytes, then NumElements */
        if (*p == 0x0A) p++;            /* BytePrefix */
        slp_typa = *p++;
        if (*p == 0x0A) p++;
        slp_typb = *p;
        return;
    }
}

/* The MADT's I/O APIC entries (type 1: id, reserved, address, first GSI), after
 * the header and the local APIC's address and flags. */
static void parse_madt(const struct sdt *madt)
{
    const uint8_t *p = (const uint8_t *)(madt + 1) + 8, *end = (const uint8_t *)madt + madt->len;
    for (; p + 2 <= end && p[1] >= 2 && p + p[1] <= end; p += p[1])
        if (p[0] == 1 && p[1] >= 12)
            ioapic_add(*(const uint32_t *)(p + 4), *(const uint32_t *)(p + 8));
}

static void sci_irq(void)
{
    uint16_t sts = inw(pm1a_evt);
    outw(pm1a_evt, sts);   /* write-1-to-clear everything we saw */
    if (sts & PWRBTN) {
        poweroff_requested = 1;
        work_pending = 1;
    }
}

void acpi_init(void)
{
    const uint8_t *rsdp = find_rsdp();
    if (!rsdp) {
        printf("acpi: no RSDP, power button disabled\n");
        return;
    }
    /* ACPI 2+ may give only the XSDT (64-bit entries; microvm does): use it when present. */
    uint32_t xsdt = rsdp[15] >= 2 && !*(const uint32_t *)(rsdp + 28) ? *(const uint32_t *)(rsdp + 24) : 0;
    uint32_t root = xsdt ? xsdt : *(const uint32_t *)(rsdp + 16);
    const uint8_t *fadt = NULL, *madt = NULL;
    if (root) {
        const struct sdt *t = (const struct sdt *)root;
        uint32_t step = xsdt ? 8 : 4, n = t->len > sizeof(*t) ? (t->len - sizeof(*t)) / step : 0;
        for (uint32_t i = 0; i < n; i++) {
            uint32_t e = *(const uint32_t *)((const uint8_t *)(t + 1) + i * step);   /* low half of a 64-bit entry */
            if (e && !memcmp((const void *)e, "FACP", 4))
                fadt = (const uint8_t *)e;
            if (e && !memcmp((const void *)e, "APIC", 4))
                madt = (const uint8_t *)e;
        }
    }
    if (madt)
        parse_madt((const struct sdt *)madt);
    if (!fadt) {
        printf("acpi: no FADT, power button disabled\n");
        return;
    }
    uint32_t dsdt = *(const uint32_t *)(fadt + 40);
    uint16_t sci = *(const uint16_t *)(fadt + 46);
    uint32_t smi_cmd = *(const uint32_t *)(fadt + 48);
    uint8_t enable = fadt[52];
    pm1a_evt = (uint16_t)*(const uint32_t *)(fadt + 56);
    pm1a_cnt = (uint16_t)*(const uint32_t *)(fadt + 64);
    pm1b_cnt = (uint16_t)*(const uint32_t *)(fadt + 68);
    pm1_evt_len = fadt[88];
    timer_use_pm((uint16_t)*(const uint32_t *)(fadt + 76));   /* PM_TMR_BLK */
    if (dsdt)
        parse_s5((const struct sdt *)dsdt);
    if (!pm1a_evt || !pm1a_cnt) {   /* hardware-reduced ACPI (microvm): no fixed power button */
        printf("acpi: no PM1 registers, power button disabled\n");
        return;
    }

    if (smi_cmd && enable && !(inw(pm1a_cnt) & SCI_EN)) {
        outb((uint16_t)smi_cmd, enable);
        for (int i = 0; i < 1000000 && !(inw(pm1a_cnt) & SCI_EN); i++)
            __asm__ volatile("pause");
    }
    outw(pm1a_evt, PWRBTN);                           /* clear stale status */
    outw(pm1a_evt + pm1_evt_len / 2, PWRBTN);         /* PM1a_EN: power button only */
    irq_register(sci, sci_irq);
    irq_unmask(sci);
}

int acpi_poweroff_requested(void)
{
    return poweroff_requested;
}

void acpi_sleep_s5(void)
{
    if (!pm1a_cnt)
        return;
    outw(pm1a_cnt, (uint16_t)(slp_typa << 10) | SLP_EN);
    if (pm1b_cnt)
        outw(pm1b_cnt, (uint16_t)(slp_typb << 10) | SLP_EN);
    for (int i = 0; i < 1000000; i++)
        __asm__ volatile("pause");
}
