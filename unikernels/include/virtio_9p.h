/* The virtio-9p transport (drivers/virtio_9p.c) under the 9P client (fs/9p.c):
 * one request at a time, in one buffer out and one buffer back. */
#ifndef UK_VIRTIO_9P_H
#define UK_VIRTIO_9P_H
#include <stdint.h>

/* Sets up the virtio-9p-pci device whose mount tag is `tag`: 0 with the size
 * of both message buffers in *buf_size (the most msize can be), or -ENODEV. */
int v9p_open(const char *tag, uint32_t *buf_size);
/* The buffer a request is written into (buf_size bytes). */
uint8_t *v9p_request_buf(void);
/* Sends the request's first req_len bytes and waits up to timeout_ms for the
 * reply: 0 with *reply and *reply_len (reply_len <= buf_size, checked) set;
 * -ETIMEDOUT, or -EPROTO when the device returned a bad length. A request that
 * timed out still owns the buffers: until the host answers it, calls return
 * -ETIMEDOUT at once. */
int v9p_rpc(uint32_t req_len, const uint8_t **reply, uint32_t *reply_len, uint32_t timeout_ms);
#endif
