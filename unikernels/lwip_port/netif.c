/* The lwIP network interface over the virtio-net driver. Frames are copied
 * between the driver's fixed slots and pbufs: simple, and a 1.5 KiB copy is
 * cheap next to a virtqueue notification under TCG. */
#include <string.h>
#include "kernel.h"
#include "net.h"
#include "virtio_net.h"
#include "lwip/init.h"
#include "lwip/netif.h"
#include "lwip/etharp.h"
#include "lwip/pbuf.h"
#include "netif/ethernet.h"
#include "lwip/priv/tcp_priv.h"
#include "lwip/stats.h"
#include "lwip/memp.h"

static struct netif nif;
static uint32_t rx_nomem;   /* frames dropped: no pool pbuf */

static err_t linkoutput(struct netif *n, struct pbuf *p)
{
    (void)n;
    size_t cap;
    if (p->tot_len > VNET_TX_MAX)
        return ERR_BUF;   /* checked first: a borrowed slot must always be committed */
    void *buf = vnet_tx_begin(&cap);
    if (!buf)
        return ERR_MEM;
    pbuf_copy_partial(p, buf, p->tot_len, 0);
    vnet_tx_commit(p->tot_len);
    return ERR_OK;
}

static err_t nif_init(struct netif *n)
{
    n->name[0] = 'e';
    n->name[1] = 'n';
    n->output = etharp_output;
    n->linkoutput = linkoutput;
    n->mtu = 1500;
    n->hwaddr_len = ETH_HWADDR_LEN;
    n->flags = NETIF_FLAG_BROADCAST | NETIF_FLAG_ETHARP | NETIF_FLAG_ETHERNET;
    return ERR_OK;
}

static uint32_t tw_recycled;   /* TIME-WAIT pcbs given up for a new SYN on their 4-tuple */

static uint32_t be32(const uint8_t *b)
{
    return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

/* One's-complement sum of big-endian 16-bit words (RFC 1071), not yet folded. */
static uint32_t sum16(const uint8_t *b, size_t n, uint32_t sum)
{
    for (; n > 1; n -= 2, b += 2)
        sum += (uint32_t)b[0] << 8 | b[1];
    if (n)
        sum += (uint32_t)b[0] << 8;
    return sum;
}

static int sum_ok(uint32_t sum)
{
    while (sum >> 16)
        sum = (sum & 0xFFFF) + (sum >> 16);
    return sum == 0xFFFF;
}

/* The checks lwIP makes before a segment reaches a pcb (IP header checksum,
 * lengths, TCP checksum over the pseudo-header): a corrupted or forged SYN must
 * not end a TIME-WAIT that lwIP itself would never have let it touch. */
static int tcp_segment_valid(const uint8_t *ip, size_t ihl, size_t avail)
{
    size_t total = (size_t)(ip[2] << 8 | ip[3]);
    if (total > avail || total < ihl + 20 || !sum_ok(sum16(ip, ihl, 0)))
        return 0;
    const uint8_t *th = ip + ihl;
    size_t tcp_len = total - ihl;
    if ((size_t)(th[12] >> 4) * 4 < 20 || (size_t)(th[12] >> 4) * 4 > tcp_len)
        return 0;
    uint32_t sum = sum16(ip + 12, 8, 6 + (uint32_t)tcp_len);   /* pseudo-header: addresses, proto, length */
    return sum_ok(sum16(th, tcp_len, sum));
}

/* A SYN for a 4-tuple we hold in TIME-WAIT (we closed first: Connection: close,
 * HTTP/1.0, errors, idle timeouts) opens a new connection, as on Linux and the
 * BSDs (RFC 6191 without timestamps): if its sequence number lies beyond what
 * the old connection used, the TIME-WAIT pcb is dropped before lwIP sees the
 * SYN. Stock lwIP answers such a SYN with an ACK (or a RST) and keeps the pcb
 * for 2 MSL, so a client that reuses the port - every Linux client does once
 * it has cycled through its ephemeral ports, and a busy proxy does so quickly -
 * cannot connect for minutes: the VM looks dead to it. Only a segment that
 * passes lwIP's own checksum checks may do this. */
static void tw_recycle(const uint8_t *f, size_t len)
{
    if (len < 14 + 20 + 20 || f[12] != 0x08 || f[13] != 0x00)
        return;
    const uint8_t *ip = f + 14;
    size_t ihl = (size_t)(ip[0] & 0x0F) * 4;
    if ((ip[0] >> 4) != 4 || ip[9] != 6 || ihl < 20 || len < 14 + ihl + 20 || ((ip[6] & 0x1F) | ip[7]))
        return;
    const uint8_t *th = ip + ihl;
    if ((th[13] & (TCP_SYN | TCP_ACK | TCP_RST)) != TCP_SYN)
        return;
    uint16_t sport = (uint16_t)(th[0] << 8 | th[1]), dport = (uint16_t)(th[2] << 8 | th[3]);
    uint32_t seq = be32(th + 4), src, dst;
    memcpy(&src, ip + 12, 4);   /* network order, like ip4_addr_t */
    memcpy(&dst, ip + 16, 4);
    for (struct tcp_pcb *pcb = tcp_tw_pcbs; pcb; pcb = pcb->next) {
        if (pcb->local_port == dport && pcb->remote_port == sport && ip_2_ip4(&pcb->remote_ip)->addr == src &&
            ip_2_ip4(&pcb->local_ip)->addr == dst) {
            if (TCP_SEQ_GT(seq, pcb->rcv_nxt) && tcp_segment_valid(ip, ihl, len - 14)) {
                tcp_pcb_remove(&tcp_tw_pcbs, pcb);
                tcp_free(pcb);
                tw_recycled++;
            }
            return;
        }
    }
}

static void deliver(const void *frame, size_t len)
{
    if (tcp_tw_pcbs)
        tw_recycle(frame, len);
    struct pbuf *p = pbuf_alloc(PBUF_RAW, (u16_t)len, PBUF_POOL);
    if (!p) {
        rx_nomem++;
        return;   /* pool exhausted: drop, TCP recovers */
    }
    pbuf_take(p, frame, (u16_t)len);
    if (nif.input(p, &nif) != ERR_OK)
        pbuf_free(p);
}

int net_listen(uint16_t port, tcp_accept_fn on_accept, void *arg)
{
    struct tcp_pcb *pcb = tcp_new();
    if (!pcb || tcp_bind(pcb, IP_ANY_TYPE, port) != ERR_OK)
        return -1;
    pcb = tcp_listen(pcb);
    if (!pcb)
        return -1;
    tcp_arg(pcb, arg);
    tcp_accept(pcb, on_accept);
    return 0;
}

int net_poll(void)
{
    int n = vnet_poll_rx(deliver);
    /* Segments refused by a full TX ring are flagged TF_NAGLEMEMERR; resend them
     * now rather than at lwIP's next 250 ms timer. */
    if (vnet_tx_unblocked())
        tcp_txnow();
    return n;
}

int net_rx_pending(void)
{
    return vnet_rx_pending();
}

void net_init(const struct boot_args *a)
{
    ip4_addr_t ip, mask, gw;
    uint8_t mac[6];

    if (vnet_init(mac)) {
        printf("error: no virtio-net device (use -device virtio-net-pci,disable-modern=on)\n");
        fatal_exit(4);
    }
    ip.addr = a->ip;
    mask.addr = a->netmask;
    gw.addr = a->gw;
    lwip_init();
    netif_add(&nif, &ip, &mask, &gw, NULL, nif_init, ethernet_input);
    memcpy(nif.hwaddr, mac, 6);
    netif_set_default(&nif);
    netif_set_up(&nif);
    netif_set_link_up(&nif);   /* link up on an up netif sends the gratuitous ARP */
}

static unsigned memp_left(memp_t t)
{
    return (unsigned)(lwip_stats.memp[t]->avail - lwip_stats.memp[t]->used);
}

int net_info_json(char *buf, size_t n)
{
    struct vnet_stats v;
    vnet_tx_reclaim();
    vnet_snapshot(&v);
    return snprintf(buf, n,
                    "\"rx_frames\":%u,\"rx_nomem\":%u,\"tx_frames\":%u,\"tx_free\":%u,\"irqs\":%u,"
                    "\"pcb_free\":%u,\"seg_free\":%u,\"pbuf_ref_free\":%u,\"mem_err\":%u,"
                    "\"tw_recycled\":%u,\"loops\":%u,\"ticks\":%u,\"rx_bad\":%u,\"tx_bad\":%u",
                    (unsigned)v.rx_frames, (unsigned)rx_nomem, (unsigned)v.tx_frames, (unsigned)v.tx_free,
                    (unsigned)v.irqs, memp_left(MEMP_TCP_PCB), memp_left(MEMP_TCP_SEG), memp_left(MEMP_PBUF),
                    (unsigned)lwip_stats.mem.err, (unsigned)tw_recycled, (unsigned)loop_count, (unsigned)timer_ticks(),
                    (unsigned)v.rx_bad, (unsigned)v.tx_bad);
}

/* Everything at once on the console (QMP inject-nmi): for a VM that no longer answers. */
void net_dump(void)
{
    struct vnet_stats v;
    vnet_snapshot(&v);
    printf("nmi: uptime_ms=%u ticks=%u loops=%u work_pending=%d\n", (unsigned)uptime_ms(),
           (unsigned)timer_ticks(), (unsigned)loop_count, work_pending);
    printf("nmi: rx frames=%u nomem=%u kicks=%u avail=%u used=%u last_used=%u used_flags=%u bad=%u\n",
           (unsigned)v.rx_frames, (unsigned)rx_nomem, (unsigned)v.rx_kicks, v.rx_avail, v.rx_used,
           v.rx_last_used, v.rx_used_flags, (unsigned)v.rx_bad);
    printf("nmi: tx frames=%u kicks=%u ring_full=%u free=%u blocked=%u avail=%u used=%u last_used=%u "
           "used_flags=%u irqs=%u bad=%u\n",
           (unsigned)v.tx_frames, (unsigned)v.tx_kicks, (unsigned)v.tx_ring_full, (unsigned)v.tx_free,
           (unsigned)v.tx_blocked, v.tx_avail, v.tx_used, v.tx_last_used, v.tx_used_flags, (unsigned)v.irqs,
           (unsigned)v.tx_bad);
    printf("nmi: mem used=%u avail=%u err=%u pcb_free=%u seg_free=%u pbuf_ref_free=%u pool_free=%u "
           "pool_err=%u seg_err=%u pbuf_ref_err=%u pcb_err=%u\n",
           (unsigned)lwip_stats.mem.used, (unsigned)lwip_stats.mem.avail, (unsigned)lwip_stats.mem.err,
           memp_left(MEMP_TCP_PCB), memp_left(MEMP_TCP_SEG), memp_left(MEMP_PBUF), memp_left(MEMP_PBUF_POOL),
           (unsigned)lwip_stats.memp[MEMP_PBUF_POOL]->err, (unsigned)lwip_stats.memp[MEMP_TCP_SEG]->err,
           (unsigned)lwip_stats.memp[MEMP_PBUF]->err, (unsigned)lwip_stats.memp[MEMP_TCP_PCB]->err);
}
