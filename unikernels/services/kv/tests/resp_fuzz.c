/* Host fuzz of kv's request path: seeded random mutations of valid command
 * streams go through kv_session_feed (parser, commands, store, replies) under
 * ASan/UBSan, split at random points as TCP would split them. Checks: no
 * crash, input consumed never exceeds what was given, replies never exceed
 * their buffer, and the store's byte budget holds. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../resp.c"
#include "../store.c"
#include "../commands.c"
#include "../session.c"

void *kv_mem_alloc(size_t n) { return malloc(n); }
void kv_mem_free(void *p, size_t n) { (void)n; free(p); }

static const char *const seeds[] = {
    "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n",
    "*5\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n$2\r\nPX\r\n$3\r\n100\r\n",
    "*2\r\n$4\r\nINCR\r\n$1\r\nn\r\n",
    "*3\r\n$6\r\nINCRBY\r\n$1\r\nn\r\n$2\r\n-7\r\n",
    "*4\r\n$4\r\nMGET\r\n$1\r\nk\r\n$1\r\nn\r\n$1\r\nz\r\n",
    "*3\r\n$6\r\nEXPIRE\r\n$1\r\nk\r\n$2\r\n10\r\n",
    "*2\r\n$3\r\nTTL\r\n$1\r\nk\r\n",
    "*2\r\n$3\r\nDEL\r\n$1\r\nk\r\n",
    "*1\r\n$4\r\nINFO\r\n",
    "PING\r\n",
    "ECHO hello\r\n",
};

static uint32_t rng = 12345;
static uint32_t next(void) { rng ^= rng << 13; rng ^= rng >> 17; rng ^= rng << 5; return rng; }

int main(void)
{
    static struct kv_server kv = {.name = "fuzz"};
    static char in[8192], out[KV_REPLY_ROOM * 8], logb[KV_MAX_COMMAND + 256];
    if (kv_store_init(&kv.store, 64 * 1024))
        return 1;
    for (int round = 0; round < 20000; round++) {
        size_t len = 0;
        int n = 1 + (int)(next() % 6);
        for (int i = 0; i < n; i++) {
            const char *s = seeds[next() % (sizeof seeds / sizeof seeds[0])];
            size_t l = strlen(s);
            if (len + l < sizeof in)
                memcpy(in + len, s, l), len += l;
        }
        int flips = (int)(next() % 4);
        for (int i = 0; i < flips && len; i++) {
            size_t at = next() % len;
            switch (next() % 3) {
            case 0: in[at] = (char)next(); break;
            case 1: in[at] = "0123456789*$\r\n-"[next() % 15]; break;
            default: len = at; break;   /* truncated */
            }
        }
        size_t pos = 0;
        while (pos < len) {
            size_t avail = len - pos;
            size_t cut = 1 + next() % avail;   /* what one read brought */
            struct resp_out o = {out, 0, sizeof out, 0}, lg = {logb, 0, sizeof logb, 0};
            int close = 0;
            size_t used = kv_session_feed(&kv, in + pos, cut, &o, &lg, 1000 + round, &close);
            if (used > cut || o.len > o.cap || lg.len > lg.cap || (kv.store.max && kv.store.used > kv.store.max)) {
                fprintf(stderr, "invariant broken in round %d\n", round);
                return 1;
            }
            if (close)
                break;
            if (used == 0) {
                if (cut == avail)
                    break;   /* incomplete at the end: the connection would wait */
                continue;
            }
            pos += used;
        }
        kv_expire_some(&kv.store, 1000 + round, 8);
    }
    kv_store_clear(&kv.store);
    printf("resp_fuzz: 20000 rounds, %u keys left, %llu commands\n", kv.store.count, (unsigned long long)kv.commands);
    return 0;
}
