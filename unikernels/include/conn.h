/* The connection layer: every service's TCP connections go through it, so the
 * protections against hostile clients live in one place (lib/conn.c).
 *
 * - Receive: bytes are copied out of lwIP's pbufs as they arrive, into a
 *   per-connection buffer of at most `rx_max` bytes, so one-byte segments
 *   never pile up in the pbuf pool. The TCP window is reopened only for room
 *   in that buffer: a client that sends faster than the service consumes is
 *   held back by its window. The service reads with conn_rx() and conn_consume().
 * - Deadlines: a request head must arrive within `head_timeout_ms` (from the
 *   accept, and from the first byte of each later request); a connection with
 *   no progress either way for `idle_timeout_ms` is closed.
 * - Send: conn_send() sizes each write to what lwIP can take at the
 *   connection's MSS (down to 536) and returns how much it queued; when room
 *   appears again the service's on_writable is called, so large bodies stream.
 * - Close: conn_close()/conn_abort() may be called anywhere, also from inside
 *   a handler; the connection's memory is released after the handler returns,
 *   and on_close is the last call the service gets for it.
 * - At most `max_conns` connections: when full, the least recently active one
 *   that is waiting for a request (not sending, not deferred) is closed to
 *   make room; if every connection is busy, the new one is reset.
 *
 * Call conn_* functions from the handlers below: inside one, a connection stays
 * valid until the handler returns, even if closed meanwhile. */
#ifndef UK_CONN_H
#define UK_CONN_H
#include <stddef.h>
#include <stdint.h>

struct conn;

struct conn_handlers {
    /* New bytes in the receive buffer, or the peer finished sending
     * (conn_peer_closed). Required. */
    void (*on_data)(struct conn *c);
    /* After a conn_send() took less than offered: room may have appeared (the
     * peer acknowledged data, or the once-a-second retry). Optional. */
    void (*on_writable)(struct conn *c);
    /* The turn a conn_defer() asked for; optional. */
    void (*on_resume)(struct conn *c);
    /* Last call for this connection (closed by anyone, reset, timed out,
     * evicted): release what the service holds for it. Optional. */
    void (*on_close)(struct conn *c);
};

struct conn_limits {
    uint32_t rx_max;            /* receive buffer per connection, bytes; raised to one TCP
                                 * window (TCP_WND) if smaller, so all the window lets in fits */
    uint32_t head_timeout_ms;   /* request-head deadline; 0: none (not a request protocol) */
    uint32_t idle_timeout_ms;   /* no bytes either way for this long: closed; 0: never */
    uint32_t max_conns;         /* open connections at most */
    size_t state_size;          /* service state per connection, zeroed at accept: conn_state() */
};

/* Boot arguments every service using the layer should declare in its keys, and
 * their defaults (a service may pick other defaults before conn_limits_from_args). */
#define CONN_KEYS "head_timeout", "idle_timeout", "max_conns"
#define CONN_HEAD_TIMEOUT_S 10  /* like nginx's client_header_timeout (60 s there) */
#define CONN_IDLE_TIMEOUT_S 75  /* like nginx's keepalive_timeout */
#define CONN_MAX_CONNS 512

/* Overrides l's timeouts and connection count from head_timeout=S,
 * idle_timeout=S and max_conns=N when given (a bad value: bad command line). */
void conn_limits_from_args(struct conn_limits *l);

/* Listens on `port`; `h` and `l` must stay valid for good. 0 on success. */
int conn_listen(uint16_t port, const struct conn_handlers *h, const struct conn_limits *l);

/* ---- receiving ---- */
/* The buffered bytes, contiguous; *len gets their count (0: none). */
const uint8_t *conn_rx(struct conn *c, uint32_t *len);
/* The service is done with the first n buffered bytes. */
void conn_consume(struct conn *c, uint32_t n);
/* The buffer holds rx_max bytes: nothing more arrives until the service consumes. */
int conn_rx_full(const struct conn *c);
/* The peer sent FIN: what is buffered is all there will be. */
int conn_peer_closed(const struct conn *c);

/* ---- request deadlines (services with head_timeout_ms) ---- */
/* The request head is complete: its deadline is off until conn_request_done(). */
void conn_head_done(struct conn *c);
/* The response is fully queued: the next head's deadline starts with its first
 * byte (at once if bytes are already buffered). */
void conn_request_done(struct conn *c);

/* ---- sending ---- */
#define CONN_COPY 1   /* copy the bytes (else they must stay valid until acknowledged: embedded files) */
#define CONN_MORE 2   /* more follows at once: no PSH yet */
/* Queues up to n bytes, as many as lwIP takes now; returns that count (0 when
 * full, or when the connection is closed). Output is flushed when the handler
 * returns. on_writable follows when room appears. */
uint32_t conn_send(struct conn *c, const void *data, uint32_t n, unsigned flags);
/* Bytes sent or queued and not yet acknowledged by the peer. */
uint32_t conn_unacked(const struct conn *c);
/* Asks for on_writable at the next acknowledgement (or the once-a-second
 * check) although the last conn_send took everything: a service that waits
 * for its client to read what it was sent. */
void conn_want_writable(struct conn *c);

/* ---- long work ---- */
/* Calls on_resume on a later turn of the main loop, after the network has been
 * served: a handler that works in slices yields this way. */
void conn_defer(struct conn *c);
/* For work done in slices: whether anything else is waiting for the CPU
 * (network input, an interrupt, other deferred connections). */
int conn_should_yield(void);

/* ---- ending ---- */
/* Graceful: queued bytes still go out, then FIN; unread input is discarded. */
void conn_close(struct conn *c);
/* Now, with a RST. */
void conn_abort(struct conn *c);
/* The connection was closed or reset: stop using it (only its state remains
 * valid until the handler returns). */
int conn_closed(const struct conn *c);

/* ---- state and counters ---- */
void *conn_state(struct conn *c);
/* The peer's address (network byte order) and port. */
uint32_t conn_peer_ip(const struct conn *c);
uint16_t conn_peer_port(const struct conn *c);

struct conn_stats {
    uint32_t open;            /* connections now */
    uint32_t accepted;        /* since boot */
    uint32_t head_timeouts;   /* closed: request head not complete in time */
    uint32_t idle_timeouts;   /* closed: no progress for idle_timeout */
    uint32_t evicted;         /* closed to make room for a new connection */
    uint32_t refused;         /* new connections reset: full of busy ones */
    uint32_t rx_bytes;        /* receive-buffer bytes allocated now, all connections */
};
void conn_get_stats(struct conn_stats *s);
/* The same as JSON members (no braces), for /api/info; returns the length. */
int conn_stats_json(char *buf, size_t n);
#endif
