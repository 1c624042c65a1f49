/* fs_selftest: exercises fs.h against a real virtio-9p share at boot and
 * prints what it found as `fs: ...` console lines, for
 * tests/unikernel/test_virtio_9p.py to check against the host's view:
 *   tag=T    the mount tag (required); rw=1 mounts it writable
 *   file=P   a file to read whole: its size and sha256
 *   link=P   a symlink: fs_stat must report it, fs_open must refuse it
 *   through=P a path through a symlinked directory: stat and open must fail
 *   out=P    (rw=1) write P.tmp in chunks, fsync, rename it to P, read it back
 *   bench=N  (with file=P) time N fs_stat calls, N open + 4 KiB read + close, N 64 KiB reads
 *   recover=P after the rest, fs_stat(P) every 200 ms (up to 60 s) until it succeeds: a share
 *            whose host stalled (a timed-out call) comes back once the host answers
 * Then it listens on the boot port (connections are closed at once) so the VM
 * reports `ready` as every service does. */
#include <string.h>
#include "kernel.h"
#include "services.h"
#include "net.h"
#include "fs.h"
#include "lwip/tcp.h"

/* ---- SHA-256 (FIPS 180-4), enough to fingerprint what was read ---- */

struct sha256 { uint32_t h[8]; uint8_t block[64]; uint32_t used; uint64_t total; };

static const uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

static uint32_t ror(uint32_t x, int n) { return x >> n | x << (32 - n); }

static void sha256_block(struct sha256 *s, const uint8_t *p)
{
    uint32_t w[64], v[8];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = ror(w[i - 15], 7) ^ ror(w[i - 15], 18) ^ w[i - 15] >> 3;
        uint32_t s1 = ror(w[i - 2], 17) ^ ror(w[i - 2], 19) ^ w[i - 2] >> 10;
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    memcpy(v, s->h, sizeof(v));
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = v[7] + (ror(v[4], 6) ^ ror(v[4], 11) ^ ror(v[4], 25)) + ((v[4] & v[5]) ^ (~v[4] & v[6])) + K[i] + w[i];
        uint32_t t2 = (ror(v[0], 2) ^ ror(v[0], 13) ^ ror(v[0], 22)) + ((v[0] & v[1]) ^ (v[0] & v[2]) ^ (v[1] & v[2]));
        memmove(v + 1, v, 7 * sizeof(uint32_t));
        v[4] += t1;
        v[0] = t1 + t2;
    }
    for (int i = 0; i < 8; i++)
        s->h[i] += v[i];
}

static void sha256_init(struct sha256 *s)
{
    static const uint32_t h0[8] = { 0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                    0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19 };
    memcpy(s->h, h0, sizeof(h0));
    s->used = 0;
    s->total = 0;
}

static void sha256_add(struct sha256 *s, const uint8_t *p, uint32_t n)
{
    s->total += n;
    while (n) {
        uint32_t k = 64 - s->used < n ? 64 - s->used : n;
        memcpy(s->block + s->used, p, k);
        s->used += k;
        p += k;
        n -= k;
        if (s->used == 64) {
            sha256_block(s, s->block);
            s->used = 0;
        }
    }
}

static void sha256_hex(struct sha256 *s, char out[65])
{
    uint64_t bits = s->total * 8;
    uint8_t pad = 0x80, zero = 0, len[8];
    sha256_add(s, &pad, 1);
    while (s->used != 56)
        sha256_add(s, &zero, 1);
    for (int i = 0; i < 8; i++)
        len[i] = (uint8_t)(bits >> (56 - 8 * i));
    sha256_add(s, len, 8);
    for (int i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", (unsigned)(s->h[i / 4] >> (24 - 8 * (i % 4)) & 0xFF));
}

/* ---- the checks ---- */

static uint8_t buf[80 * 1024];

static void list_root(void)
{
    fs_file d;
    int rc = fs_open("", FS_RDONLY, &d);
    if (rc) {
        printf("fs: readdir open rc=%d\n", rc);
        return;
    }
    uint64_t cookie = 0;
    char name[256];
    uint8_t type;
    while ((rc = fs_readdir(d, &cookie, name, sizeof(name), &type)) == 1)
        printf("fs: entry %s type=%u\n", name, type);
    printf("fs: readdir end rc=%d\n", rc);
    fs_close(d);
}

/* Reads path whole in chunks of `chunk` bytes: its size and sha256. */
static void hash_file(const char *path, uint32_t chunk)
{
    struct fs_stat st;
    int rc = fs_stat(path, &st);
    printf("fs: stat %s rc=%d size=%u mode=0x%x\n", path, rc, rc ? 0 : (unsigned)st.size, rc ? 0 : (unsigned)st.mode);
    fs_file f;
    if ((rc = fs_open(path, FS_RDONLY, &f))) {
        printf("fs: open %s rc=%d\n", path, rc);
        return;
    }
    struct fs_stat fst;
    rc = fs_fstat(f, &fst);
    printf("fs: fstat %s rc=%d size=%u\n", path, rc, rc ? 0 : (unsigned)fst.size);
    struct sha256 s;
    char hex[65];
    uint64_t off = 0;
    sha256_init(&s);
    uint32_t t0 = uptime_ms();
    if (chunk > sizeof(buf))
        chunk = sizeof(buf);
    while ((rc = fs_read(f, off, buf, chunk)) > 0) {
        sha256_add(&s, buf, (uint32_t)rc);
        off += (uint32_t)rc;
    }
    fs_close(f);
    sha256_hex(&s, hex);
    printf("fs: read %s rc=%d bytes=%u sha256=%s ms=%u\n", path, rc, (unsigned)off, hex,
           (unsigned)(uptime_ms() - t0));
}

static void check_link(const char *path)
{
    struct fs_stat st;
    fs_file f;
    int rc = fs_stat(path, &st);
    printf("fs: lstat %s rc=%d mode=0x%x\n", path, rc, rc ? 0 : (unsigned)st.mode);
    rc = fs_open(path, FS_RDONLY, &f);
    printf("fs: open-link %s rc=%d\n", path, rc);
    if (!rc)
        fs_close(f);
}

static void check_through(const char *path)
{
    struct fs_stat st;
    fs_file f;
    int stat_rc = fs_stat(path, &st), open_rc = fs_open(path, FS_RDONLY, &f);
    printf("fs: through %s stat=%d open=%d\n", path, stat_rc, open_rc);
    if (!open_rc)
        fs_close(f);
}

/* The writable share: P.tmp written in pieces, synced, renamed to P, read back. */
static void write_file(const char *path)
{
    char tmp[200];
    fs_file f;
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    int rc = fs_open(tmp, FS_WRONLY | FS_CREAT | FS_TRUNC, &f);
    if (rc) {
        printf("fs: create %s rc=%d\n", tmp, rc);
        return;
    }
    struct sha256 s;
    char hex[65];
    sha256_init(&s);
    uint64_t off = 0;
    const uint32_t total = 200000;
    for (uint32_t i = 0; i < sizeof(buf); i++)
        buf[i] = (uint8_t)(i * 7 + i / 251);
    while (off < total && rc >= 0) {
        uint32_t n = total - off < 30000 ? (uint32_t)(total - off) : 30000;
        rc = fs_write(f, off, buf + off % 1000, n);
        if (rc > 0) {
            sha256_add(&s, buf + off % 1000, (uint32_t)rc);
            off += (uint32_t)rc;
        }
    }
    int sync_rc = fs_fsync(f);
    fs_close(f);
    sha256_hex(&s, hex);
    printf("fs: wrote %s rc=%d bytes=%u sha256=%s fsync=%d\n", tmp, rc < 0 ? rc : 0, (unsigned)off, hex, sync_rc);
    printf("fs: rename %s %s rc=%d\n", tmp, path, fs_rename(tmp, path));
    hash_file(path, 4096);
}

/* Round-trip costs, for what a static file server can expect per request. */
static void bench(const char *path, uint32_t n)
{
    struct fs_stat st;
    fs_file f;
    uint32_t t0 = uptime_ms();
    for (uint32_t i = 0; i < n; i++)
        fs_stat(path, &st);
    uint32_t t1 = uptime_ms();
    for (uint32_t i = 0; i < n; i++) {
        if (fs_open(path, FS_RDONLY, &f) == 0) {
            fs_read(f, 0, buf, 4096);
            fs_close(f);
        }
    }
    uint32_t t2 = uptime_ms();
    if (fs_open(path, FS_RDONLY, &f) == 0) {
        for (uint32_t i = 0; i < n; i++)
            fs_read(f, 0, buf, 64 * 1024);
        fs_close(f);
    }
    uint32_t t3 = uptime_ms();
    printf("fs: bench n=%u stat_us=%u open_read_close_us=%u read64k_us=%u\n", (unsigned)n,
           (unsigned)((t1 - t0) * 1000 / n), (unsigned)((t2 - t1) * 1000 / n), (unsigned)((t3 - t2) * 1000 / n));
}

static err_t on_accept(void *arg, struct tcp_pcb *pcb, err_t err)
{
    if (err != ERR_OK || !pcb)
        return ERR_VAL;
    tcp_abort(pcb);
    return ERR_ABRT;
}

static int selftest_start(const struct boot_args *args)
{
    const char *tag = cmdline_value("tag"), *file = cmdline_value("file");
    const char *link = cmdline_value("link"), *out = cmdline_value("out"), *through = cmdline_value("through");
    int rw = (int)cmdline_uint("rw", 0, 1, 0);
    int rc = fs_mount(tag ? tag : "", rw);
    printf("fs: mount %s rw=%d rc=%d max_io=%u\n", tag ? tag : "", rw, rc, (unsigned)fs_max_io());
    if (!rc) {
        list_root();
        if (file)
            hash_file(file, fs_max_io());
        uint32_t n = cmdline_uint("bench", 0, 100000, 0);
        if (file && n)
            bench(file, n);
        if (link)
            check_link(link);
        if (through)
            check_through(through);
        fs_file f;
        if (!rw) {   /* refused before the host is asked */
            printf("fs: open-write-probe rc=%d\n", rc = fs_open("probe.tmp", FS_WRONLY | FS_CREAT, &f));
            if (!rc)
                fs_close(f);
        }
        if (out && rw)
            write_file(out);
        const char *recover = cmdline_value("recover");
        if (recover) {
            struct fs_stat st;
            uint32_t t0 = uptime_ms();
            while ((rc = fs_stat(recover, &st)) != 0 && uptime_ms() - t0 < 60000)
                busy_wait_ms(200);
            printf("fs: recover %s rc=%d ms=%u\n", recover, rc, (unsigned)(uptime_ms() - t0));
        }
        struct fs_counters c;
        fs_counters(&c);
        printf("fs: counters requests=%u bad_replies=%u timeouts=%u\n", (unsigned)c.requests,
               (unsigned)c.bad_replies, (unsigned)c.timeouts);
    }
    printf("fs: done\n");
    return net_listen(args->port, on_accept, NULL);
}

static const char *const selftest_keys[] = { "tag", "rw", "file", "link", "through", "out", "bench", "recover", NULL };
SERVICE_DEFINE(fs_selftest_service, .name = "fs_selftest", .keys = selftest_keys, .start = selftest_start);
