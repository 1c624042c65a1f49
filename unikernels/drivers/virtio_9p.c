/* virtio-9p over legacy virtio-PCI (or virtio-mmio on microvm): one queue; a request is a chain of two
 * descriptors, the message out and a buffer for the reply. One request is in
 * flight at a time and the caller waits for its completion with a bound, so a
 * file call is a plain synchronous function. It waits halted, woken by the
 * device's interrupt (or the timer, for the bound): spinning would take the
 * CPU from QEMU's own threads, which serve the request, and under TCG on a
 * busy host that made every call several times slower. The mount tag is in
 * the device configuration. */
#include <string.h>
#include "kernel.h"
#include "errno.h"
#include "virtio_pci.h"
#include "virtio_9p.h"

#define F_MOUNT_TAG 1u
#define CONFIG_TAG_LEN 0   /* u16, then the tag's bytes (not NUL-terminated) */
#define CONFIG_TAG 2
#define BUF_SIZE (64 * 1024 + 4096)   /* a 64 KiB read plus headers in one message */

static struct virtio_dev dev;
static struct virtq vq;
static uint8_t *req_buf, *rep_buf;
static int in_flight;        /* the device still owns the buffers (a request timed out) */
static uint32_t done_len;

static int tag_matches(const struct virtio_dev *d, const char *tag)
{
    size_t n = strlen(tag);
    unsigned len = virtio_config8(d, CONFIG_TAG_LEN) | (unsigned)virtio_config8(d, CONFIG_TAG_LEN + 1) << 8;
    if (len != n)
        return 0;
    for (unsigned i = 0; i < len; i++)
        if (virtio_config8(d, CONFIG_TAG + i) != (uint8_t)tag[i])
            return 0;
    return 1;
}

/* Only acknowledges: the waiter looks at the used ring itself once woken. */
static void irq(void)
{
    (void)virtio_isr(&dev);
}

int v9p_open(const char *tag, uint32_t *buf_size)
{
    for (unsigned nth = 0;; nth++) {
        struct virtio_dev d;
        int rc = virtio_find(VIRTIO_TYPE_9P, nth, &d);
        if (rc == -1)
            return -ENODEV;
        if (rc)
            continue;   /* modern-only device: not ours to drive */
        uint32_t features = virtio_begin(&d);
        if (!(features & F_MOUNT_TAG) || !tag_matches(&d, tag)) {
            virtio_fail(&d);
            continue;
        }
        virtio_set_features(&d, F_MOUNT_TAG);
        dev = d;
        if (virtq_setup(&dev, &vq, 0) || vq.size < 2) {   /* a request takes two descriptors */
            virtio_fail(&dev);
            return -ENODEV;
        }
        req_buf = page_alloc(BUF_SIZE);
        rep_buf = page_alloc(BUF_SIZE);
        vq.desc[0].addr = (uintptr_t)req_buf;
        vq.desc[0].flags = VIRTQ_DESC_F_NEXT;
        vq.desc[0].next = 1;
        vq.desc[1].addr = (uintptr_t)rep_buf;
        vq.desc[1].len = BUF_SIZE;
        vq.desc[1].flags = VIRTQ_DESC_F_WRITE;
        irq_register(dev.irq, irq);
        irq_unmask(dev.irq);
        virtio_driver_ok(&dev);
        *buf_size = BUF_SIZE;
        return 0;
    }
}

uint8_t *v9p_request_buf(void)
{
    return req_buf;
}

static int interrupts_on(void)
{
    uint32_t flags;
    __asm__ volatile("pushf; pop %0" : "=r"(flags));
    return flags & (1u << 9);
}

/* 1 once the device has handed the chain back (done_len set), 0 on timeout.
 * With interrupts off (never the case from the main loop) it spins instead of
 * halting. The TSC bound is a backstop in case the clock does not advance. */
static int wait_done(uint32_t timeout_ms)
{
    uint32_t start = uptime_ms();
    uint64_t tsc_end = rdtsc() + (uint64_t)timeout_ms * 4000000u;
    int can_halt = interrupts_on();
    uint16_t id;
    uint32_t len;
    for (;;) {
        if (virtq_next_used(&vq, BUF_SIZE, &id, &len)) {
            in_flight = 0;
            done_len = len;
            return 1;
        }
        uint32_t elapsed = uptime_ms() - start;
        if (elapsed >= timeout_ms || rdtsc() > tsc_end)
            return 0;
        if (!can_halt) {
            __asm__ volatile("pause");
            continue;
        }
        /* As the idle loop does: the check and the hlt cannot miss the interrupt. */
        cli();
        if (!virtq_has_used(&vq)) {
            timer_arm(timeout_ms - elapsed);
            sti_hlt();
        } else {
            sti();
        }
    }
}

int v9p_rpc(uint32_t req_len, const uint8_t **reply, uint32_t *reply_len, uint32_t timeout_ms)
{
    if (!req_buf || req_len > BUF_SIZE)
        return -EINVAL;
    /* A request that timed out still owns the buffers. Calls fail at once until
     * the host answers it, rather than each stalling the VM for another bound. */
    if (in_flight && !wait_done(0))
        return -ETIMEDOUT;
    vq.desc[0].len = req_len;
    vq.desc[1].len = BUF_SIZE;
    virtq_post(&vq, 0);
    in_flight = 1;
    virtq_kick(&vq);
    if (!wait_done(timeout_ms))
        return -ETIMEDOUT;
    if (done_len == VIRTQ_BAD_LEN)
        return -EPROTO;
    *reply = rep_buf;
    *reply_len = done_len;
    return 0;
}
