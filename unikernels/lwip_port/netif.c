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

static struct netif nif;

static err_t linkoutput(struct netif *n, struct pbuf *p)
{
    (void)n;
    size_t cap;
    void *buf = vnet_tx_begin(&cap);
    if (!buf)
        return ERR_MEM;
    if (p->tot_len > cap)
        return ERR_BUF;
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

static void deliver(const void *frame, size_t len)
{
    struct pbuf *p = pbuf_alloc(PBUF_RAW, (u16_t)len, PBUF_POOL);
    if (!p)
        return;   /* pool exhausted: drop, TCP recovers */
    pbuf_take(p, frame, (u16_t)len);
    if (nif.input(p, &nif) != ERR_OK)
        pbuf_free(p);
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
