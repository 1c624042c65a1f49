/* lwIP configuration: NO_SYS raw API, IPv4 + TCP + ARP + ICMP only.
 * Sized for >= 256 concurrent HTTP connections in ~8 MiB of the guest's RAM. */
#ifndef UK_LWIPOPTS_H
#define UK_LWIPOPTS_H

#define NO_SYS                     1
#define SYS_LIGHTWEIGHT_PROT       0   /* lwIP only ever runs in the main loop */
#define LWIP_SOCKET                0
#define LWIP_NETCONN               0
#define LWIP_IPV4                  1
#define LWIP_IPV6                  0
#define LWIP_ARP                   1
#define LWIP_ETHERNET              1
#define LWIP_ICMP                  1
#define LWIP_RAW                   0
#define LWIP_UDP                   0
#define LWIP_DHCP                  0
#define LWIP_DNS                   0
#define LWIP_IGMP                  0
#define LWIP_TCP                   1
#define IP_REASSEMBLY              0
#define IP_FRAG                    0
#define LWIP_HAVE_LOOPIF           0
#define LWIP_NETIF_LOOPBACK        0
#define LWIP_TCP_KEEPALIVE         0
#define LWIP_TCP_TIMESTAMPS        0
#define ETHARP_TABLE_MATCH_NETIF   0
#define ARP_TABLE_SIZE             32
#define ARP_QUEUEING               1

/* Memory: the heap holds PBUF_RAM (copied tcp_write data, ARP queues) and
 * per-connection state; pools hold pcbs, segments and received frames. */
#define MEM_LIBC_MALLOC            0
/* The heap and every pool live in linker.ld's .lazy section: not loaded, so QEMU
 * keeps no copy of their 5 MiB and a page costs host memory only once lwIP uses
 * it. mem_init and memp_init write what they need; neither reads before writing. */
#define LWIP_DECLARE_MEMORY_ALIGNED(variable_name, size) \
    u8_t variable_name[LWIP_MEM_ALIGN_BUFFER(size)] __attribute__((section(".lazy." #variable_name)))
#define MEMP_MEM_MALLOC            0
#define MEM_ALIGNMENT              4
#define MEM_SIZE                   (3 * 1024 * 1024)
#define MEMP_NUM_PBUF              8192   /* PBUF_ROM refs to embedded files: 256 senders at MSS 536 */
/* lwIP's own timers plus the services' (conn_defer, kv's housekeeping, ...). */
#define MEMP_NUM_SYS_TIMEOUT       (LWIP_NUM_SYS_TIMEOUT_INTERNAL + 8)
#define MEMP_NUM_TCP_PCB           600
#define MEMP_NUM_TCP_PCB_LISTEN    2
#define MEMP_NUM_TCP_SEG           8192
#define MEMP_NUM_ARP_QUEUE         64
#define PBUF_POOL_SIZE             1024
#define PBUF_POOL_BUFSIZE          1536

#define TCP_MSS                    1460
#define TCP_WND                    (8 * TCP_MSS)
#define TCP_SND_BUF                (16 * TCP_MSS)
/* pbufs queued per connection: enough for a whole send buffer of by-reference
 * segments (two pbufs each) at the smallest MSS, 536 (a SYN without an MSS option) */
#define TCP_SND_QUEUELEN           (2 * TCP_SND_BUF / 536 + 8)
#define TCP_SNDLOWAT               (TCP_SND_BUF / 2)
#define TCP_OVERSIZE               TCP_MSS
#define TCP_LISTEN_BACKLOG         0
#define LWIP_TCP_SACK_OUT          0
/* Out-of-order segments are held as whole pool pbufs: a few per connection, so
 * a client sending tiny segments out of order cannot drain the pool. */
#define TCP_OOSEQ_MAX_PBUFS        4
/* TIME-WAIT lasts 2 MSL: 30 s, not lwIP's 2 min. The peer is a host on the same
 * bridge, and every VM-closed connection holds a pcb that long (600 in all). */
#define TCP_MSL                    15000UL

#define LWIP_NETIF_STATUS_CALLBACK 0
#define LWIP_NETIF_LINK_CALLBACK   0
#define LWIP_SINGLE_NETIF          1

/* Free heap for /api/info comes from the mem stats; the rest stay off. */
#define LWIP_STATS                 1
#define MEM_STATS                  1
#define MEMP_STATS                 1
#define LINK_STATS                 0
#define ETHARP_STATS               0
#define IP_STATS                   0
#define ICMP_STATS                 0
#define TCP_STATS                  0
#define SYS_STATS                  0
#define LWIP_STATS_DISPLAY         0

#define CHECKSUM_GEN_IP            1
#define CHECKSUM_GEN_TCP           1
#define CHECKSUM_CHECK_IP          1
#define CHECKSUM_CHECK_TCP         1
#endif
