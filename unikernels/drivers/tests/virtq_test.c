/* Host test of the device-trust checks in unikernels/drivers/virtio_pci.c
 * (included whole): a used ring written as a hostile or broken device might
 * write it. An id never posted, posted twice, or beyond the ring, and a length
 * beyond the posted buffer must be counted and never handed to the driver as
 * a buffer to use; good elements around them must still come through.
 * Port I/O is never reached here: every call used works on memory only.
 *   virtq_test SEED ITERATIONS */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../virtio_pci.c"

/* What virtio_pci.c links against in the kernel, for memory-only use. */
uint32_t pci_read32(const struct pci_dev *d, uint8_t off) { return 0xFFFFFFFFu; }
void pci_write16(const struct pci_dev *d, uint8_t off, uint16_t v) {}
void *page_alloc(size_t bytes) { return calloc(1, bytes); }
int virtio_mmio_find(unsigned type, unsigned nth, struct virtio_dev *out) { return -1; }
uint8_t virtio_mmio_status(const struct virtio_dev *d) { return 0; }
void virtio_mmio_set_status(const struct virtio_dev *d, uint8_t s) {}
uint32_t virtio_mmio_features(const struct virtio_dev *d) { return 0; }
void virtio_mmio_set_features(const struct virtio_dev *d, uint32_t f) {}
uint16_t virtio_mmio_queue_select(const struct virtio_dev *d, uint16_t i, uint16_t m) { return 0; }
void virtio_mmio_queue_pfn(const struct virtio_dev *d, uint32_t pfn) {}
void virtio_mmio_notify(const struct virtio_dev *d, uint16_t i) {}
uint8_t virtio_mmio_isr(const struct virtio_dev *d) { return 0; }
uint8_t virtio_mmio_config8(const struct virtio_dev *d, unsigned off) { return 0; }

#define FAIL(...) do { fprintf(stderr, "FAIL: " __VA_ARGS__); fprintf(stderr, "\n"); exit(1); } while (0)

static uint64_t rng;
static uint32_t rnd(void) { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; return (uint32_t)(rng >> 16); }

/* A queue of `size` entries laid out by hand (virtq_setup would talk to a device). */
static void make_queue(struct virtq *q, uint16_t size)
{
    memset(q, 0, sizeof(*q));
    q->size = size;
    q->desc = calloc(size, sizeof(struct virtq_desc));
    q->avail = calloc(1, sizeof(struct virtq_avail) + 2u * size);
    q->used = calloc(1, sizeof(struct virtq_used) + 8u * size);
    q->posted = calloc(size, 1);
}

static void device_uses(struct virtq *q, uint32_t id, uint32_t len)
{
    volatile struct virtq_used_elem *e = &q->used->ring[q->used->idx & (q->size - 1)];
    e->id = id;
    e->len = len;
    q->used->idx++;
}

int main(int argc, char **argv)
{
    rng = argc > 1 ? strtoull(argv[1], NULL, 0) * 2654435761u + 1 : 1;
    long iterations = argc > 2 ? strtol(argv[2], NULL, 0) : 20000;
    long good = 0, bad = 0;
    for (long it = 0; it < iterations; it++) {
        struct virtq q;
        uint16_t size = (uint16_t)(1u << (1 + rnd() % 8));
        const uint32_t max_len = 2048;
        make_queue(&q, size);
        uint8_t owned[256] = { 0 };   /* the model: heads the device holds */
        uint32_t expect_bad = 0;
        for (int step = 0; step < 64; step++) {
            uint16_t head = (uint16_t)(rnd() % size);
            if (!owned[head] && rnd() % 2) {
                virtq_post(&q, head);
                owned[head] = 1;
            }
            /* The device returns up to a few elements, some of them wrong. */
            unsigned n = rnd() % 4, pushed = 0;
            uint32_t ids[4], lens[4];
            for (unsigned i = 0; i < n && pushed < size; i++, pushed++) {
                uint32_t id, len = rnd() % (max_len + 1);
                switch (rnd() % 6) {
                case 0: id = size + rnd() % 70000; break;         /* beyond the ring */
                case 1: id = rnd() % size; break;                 /* maybe never posted */
                case 2: id = rnd() % size; len = max_len + 1 + rnd() % 100000; break;   /* too long */
                default: {                                        /* a head it holds */
                    id = rnd() % size;
                    for (unsigned k = 0; k < size && !owned[id]; k++)
                        id = (id + 1) % size;
                }
                }
                ids[i] = id;
                lens[i] = len;
                device_uses(&q, id, len);
            }
            /* What the driver must see, from the model. */
            for (unsigned i = 0; i < pushed; i++) {
                int valid = ids[i] < size && owned[ids[i]];
                uint16_t id;
                uint32_t len;
                if (!valid) {
                    expect_bad++;
                    continue;
                }
                if (!virtq_next_used(&q, max_len, &id, &len))
                    FAIL("a valid used element (id %u) was not handed back", ids[i]);
                if (id != ids[i])
                    FAIL("handed back id %u, expected %u", id, ids[i]);
                owned[id] = 0;
                if (lens[i] > max_len) {
                    expect_bad++;
                    if (len != VIRTQ_BAD_LEN)
                        FAIL("a length of %u beyond the buffer came through", lens[i]);
                } else if (len != lens[i]) {
                    FAIL("length %u became %u", lens[i], len);
                }
                good++;
            }
            uint16_t id;
            uint32_t len;
            if (virtq_next_used(&q, max_len, &id, &len))
                FAIL("an element (id %u) came through that the model refused", id);
            if (q.bad != expect_bad)
                FAIL("bad counter %u, expected %u", q.bad, expect_bad);
            for (unsigned h = 0; h < size; h++)
                if (q.posted[h] != owned[h])
                    FAIL("head %u posted=%u, model %u", h, q.posted[h], owned[h]);
        }
        bad += q.bad;
        free(q.desc);
        free((void *)q.avail);
        free((void *)q.used);
        free(q.posted);
    }
    printf("ok queues=%ld good=%ld bad=%ld\n", iterations, good, bad);
    return 0;
}
