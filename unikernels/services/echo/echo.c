/* TCP echo, for stream tests. Flow control comes from the connection layer:
 * input is consumed only once it has been queued back, so a slow reader
 * closes our receive window instead of filling our memory. A connection with
 * no bytes either way for idle_timeout seconds (default 75) is closed. */
#include "conn.h"
#include "services.h"

#define RX_MAX (16 * 1024)

static struct conn_limits limits = {
    .rx_max = RX_MAX,
    .head_timeout_ms = 0,   /* a byte stream has no request heads */
    .idle_timeout_ms = CONN_IDLE_TIMEOUT_S * 1000,
    .max_conns = CONN_MAX_CONNS,
};

/* Sends back what the send buffer takes; closes once the peer is done and all is queued. */
static void echo_flush(struct conn *c)
{
    uint32_t len;
    const uint8_t *data = conn_rx(c, &len);
    if (len)
        conn_consume(c, conn_send(c, data, len, CONN_COPY));
    if (!conn_closed(c) && conn_peer_closed(c) && !conn_rx(c, &len))
        conn_close(c);
}

static const struct conn_handlers handlers = {
    .on_data = echo_flush,
    .on_writable = echo_flush,
};

static int echo_start(const struct boot_args *a)
{
    conn_limits_from_args(&limits);
    return conn_listen(a->port, &handlers, &limits);
}

static const char *const echo_keys[] = {"idle_timeout", "max_conns", NULL};
SERVICE_DEFINE(echo_service, .name = "echo", .keys = echo_keys, .start = echo_start);
