/* virtio-9p over legacy virtio-PCI (or virtio-mmio on microvm): one queue; a request is a chain of two
 * descriptors, the message out and a buffer for the reply. One request is in
 * flight at a time and the caller polls for its completion with a bound (no
 * interrupt: the device is told not to send one), so a file call is a plain
 * synchronous function. The mount tag is in the device configuration. */
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

/* Completions are polled, but a line shared with other devices must never stay
 * raised: any interrupt this device does send (a configuration change) is acked. */
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
        if (virtq_setup(&dev, &vq, 0)) {
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
        vq.avail->flags = VIRTQ_AVAIL_F_NO_INTERRUPT;
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

/* 1 once the device has handed the chain back (done_len set), 0 on timeout. The
 * TSC bound is a backstop in case the clock does not advance (interrupts off). */
static int wait_done(uint32_t timeout_ms)
{
    uint32_t start = uptime_ms();
    uint64_t tsc_end = rdtsc() + (uint64_t)timeout_ms * 4000000u;
    uint16_t id;
    uint32_t len;
    for (;;) {
        if (virtq_next_used(&vq, BUF_SIZE, &id, &len)) {
            in_flight = 0;
            done_len = len;
            (void)virtio_isr(&dev);   /* clear any interrupt status all the same */
            return 1;
        }
        if (uptime_ms() - start >= timeout_ms || rdtsc() > tsc_end)
            return 0;
        __asm__ volatile("pause");
    }
}

int v9p_rpc(uint32_t req_len, const uint8_t **reply, uint32_t *reply_len, uint32_t timeout_ms)
{
    if (!req_buf || req_len > BUF_SIZE)
        return -EINVAL;
    if (in_flight && !wait_done(timeout_ms))
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
