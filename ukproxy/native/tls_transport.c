/* TLS connections in C, from accept to close, for the asyncio protocols of ukproxy's http listeners.

   One Engine per worker loop owns an epoll fd that the loop watches with one add_reader: its poll()
   serves every ready socket of every TLS connection in C (nested epoll: one Python call per wake-up,
   not per fd). A Listener is one TLS listener: the SSL_CTX* of its Python ssl.SSLContexts (made by
   tls/context.py, so certificates, versions, ciphers, ALPN and the shared ticket keys stay as built),
   its SNI table, its handshake deadline and its Python hooks (admit, established, failed). It accepts
   itself on the listening socket (the accept cycle without the mutex) or adopts an fd Python accepted
   (with the mutex). Each connection reads its first bytes (a TLS record: the handshake; an HTTP request:
   nginx's 400; anything else: closed), does the handshake on the socket (no memory BIOs), then is the
   asyncio transport of the listener's protocol. docs/architecture.md, "Native paths".
*/
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define READ_CHUNK (64 * 1024)  /* decrypted bytes handed to data_received at most at once */
#define MAX_EVENTS 256
#define MAX_ACCEPTS 64          /* per wake-up of a listening socket, so one listener cannot starve the rest */
#define TLS_HANDSHAKE_RECORD 0x16
#define HTTP_METHOD_LETTERS "GPHDOCT"

/* tags in the low bits of epoll's data pointer: which kind of object is ready */
#define TAG_CONN 0
#define TAG_LISTENER 1
#define TAG_TIMER 2

enum { ST_FIRST, ST_HANDSHAKE, ST_OPEN, ST_CLOSING, ST_CLOSED };

typedef struct Engine Engine;
typedef struct Listener Listener;
typedef struct Conn Conn;

struct Engine {
    PyObject_HEAD
    int epfd;
    int timerfd;
    double timer_at;            /* the armed deadline (monotonic seconds), 0: disarmed */
    PyObject *call_soon;        /* loop.call_soon */
    PyObject *exception_handler;/* loop.call_exception_handler */
    PyObject *dead;             /* list: closed connections, released after the current poll */
    Listener **listeners;       /* borrowed: a listener removes itself when freed */
    int nlisteners;
    int polling;
    char rbuf[READ_CHUNK];
};

typedef struct {
    char *name;                 /* lower case; a wildcard without its "*." */
    SSL_CTX *ctx;
} SniEntry;

struct Listener {
    PyObject_HEAD
    Engine *engine;
    SSL_CTX *ctx;               /* the default context's */
    PyObject *contexts;         /* the Python SSLContexts, held while any SSL may use their SSL_CTX */
    SniEntry *exact, *wildcard;
    int nexact, nwildcard;
    double timeout;
    PyObject *established;      /* (transport) -> protocol */
    PyObject *failed;           /* (reason, detail or None) */
    PyObject *admit;            /* (transport) -> None to refuse, while accepting itself */
    PyObject *plain_answer;     /* bytes: the answer to plain HTTP on the TLS port */
    int listen_fd;              /* -1: not accepting itself */
    double resume_at;           /* accepting again then, after an accept error; 0: not resting */
    int nodelay;                /* the listening socket has TCP_NODELAY, which accepted sockets inherit */
    Conn *hs_head, *hs_tail;    /* connections before the end of their handshake, oldest first */
};

struct Conn {
    PyObject_HEAD
    int fd;
    int state;
    SSL *ssl;
    Listener *listener;
    PyObject *protocol;
    uint32_t events;            /* the epoll mask now registered */
    int reading_paused;
    int writing_paused;         /* the protocol was told pause_writing */
    int fatal;                  /* no close_notify: the connection broke */
    int eof;                    /* the client ended its side */
    int want_write_to_read;     /* SSL_read wants the socket writable (a key update's answer) */
    char *wbuf;                 /* plaintext the socket did not take yet */
    size_t woff, wlen, wcap;
    size_t high, low;
    double deadline;
    Conn *prev, *next;          /* in the listener's handshake list */
    PyObject *weakrefs;
    struct sockaddr_storage peer;  /* from accept4; peer_len 0: ask getpeername */
    socklen_t peer_len;
};

static PyTypeObject EngineType, ListenerType, ConnType;

/* method names, made once: the protocol's callbacks are called several times per connection */
static PyObject *str_connection_made, *str_data_received, *str_eof_received, *str_connection_lost,
    *str_pause_writing, *str_resume_writing, *str_connection_lost_hook, *str_read_buffered_hook;

static double now_monotonic(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* ---- epoll ---- */

static int engine_ctl(Engine *e, int op, int fd, uint32_t events, void *owner, int tag) {
    struct epoll_event ev;
    ev.events = events;
    ev.data.u64 = (uint64_t)(uintptr_t)owner | (uint64_t)tag;
    return epoll_ctl(e->epfd, op, fd, &ev);
}

static void conn_set_events(Conn *c, uint32_t events) {
    if (c->fd < 0 || events == c->events)
        return;
    engine_ctl(c->listener->engine, EPOLL_CTL_MOD, c->fd, events, c, TAG_CONN);
    c->events = events;
}

static void arm_timer(Engine *e, double at) {
    struct itimerspec its;
    memset(&its, 0, sizeof(its));
    if (at > 0) {
        its.it_value.tv_sec = (time_t)at;
        its.it_value.tv_nsec = (long)((at - (double)(time_t)at) * 1e9);
        if (its.it_value.tv_sec == 0 && its.it_value.tv_nsec == 0)
            its.it_value.tv_nsec = 1;
    }
    timerfd_settime(e->timerfd, TFD_TIMER_ABSTIME, &its, NULL);
    e->timer_at = at;
}

/* ---- reporting to Python ---- */

/* An exception from a Python hook or protocol: to the loop's exception handler, as uvloop does. */
static void report_error(Engine *e, const char *message, Conn *c) {
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb && value)
        PyException_SetTraceback(value, tb);
    PyObject *context = PyDict_New();
    if (context) {
        PyObject *msg = PyUnicode_FromString(message);
        if (msg) {
            PyDict_SetItemString(context, "message", msg);
            Py_DECREF(msg);
        }
        if (value)
            PyDict_SetItemString(context, "exception", value);
        if (c) {
            PyDict_SetItemString(context, "transport", (PyObject *)c);
            if (c->protocol)
                PyDict_SetItemString(context, "protocol", c->protocol);
        }
        PyObject *r = PyObject_CallOneArg(e->exception_handler, context);
        if (r == NULL)
            PyErr_WriteUnraisable(e->exception_handler);
        Py_XDECREF(r);
        Py_DECREF(context);
    } else {
        PyErr_WriteUnraisable(NULL);
    }
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
}

/* ---- handshake list and deadline ---- */

static void hs_unlink(Conn *c) {
    Listener *l = c->listener;
    if (c->prev)
        c->prev->next = c->next;
    else if (l->hs_head == c)
        l->hs_head = c->next;
    else
        return;  /* not in the list */
    if (c->next)
        c->next->prev = c->prev;
    else
        l->hs_tail = c->prev;
    c->prev = c->next = NULL;
}

static void hs_append(Conn *c) {
    Listener *l = c->listener;
    c->prev = l->hs_tail;
    c->next = NULL;
    if (l->hs_tail)
        l->hs_tail->next = c;
    else
        l->hs_head = c;
    l->hs_tail = c;
    Engine *e = l->engine;
    if (e->timer_at == 0 || c->deadline < e->timer_at)
        arm_timer(e, c->deadline);
}

/* ---- closing ---- */

/* Read what the client sent and nobody will read, so that the close is a FIN and not a reset. */
static void drain_socket(int fd) {
    char scratch[4096];
    for (int i = 0; i < 16; i++) {
        ssize_t n = recv(fd, scratch, sizeof(scratch), MSG_DONTWAIT);
        if (n <= 0)
            break;
    }
}

/* The socket and the SSL go; the engine's reference moves to its dead list (freed after this poll,
   so an event already fetched for this connection finds it closed rather than freed). */
static void conn_release(Conn *c, int send_close_notify) {
    Engine *e = c->listener->engine;
    hs_unlink(c);
    if (c->ssl) {
        if (send_close_notify && !c->fatal) {
            ERR_clear_error();
            SSL_shutdown(c->ssl);  /* our close_notify; we do not wait for the client's */
            ERR_clear_error();
        }
        SSL_free(c->ssl);
        c->ssl = NULL;
    }
    if (c->fd >= 0) {
        close(c->fd);  /* also leaves the epoll set: nobody else has this fd */
        c->fd = -1;
    }
    c->state = ST_CLOSED;
    if (PyList_Append(e->dead, (PyObject *)c) == 0)
        Py_DECREF(c);  /* the engine's own reference, now held by the list */
    else
        PyErr_Clear();  /* keeps the reference: a leak, never a crash */
}

/* A handshake that did not end in a session: counted by the listener's `failed`. */
static void conn_fail(Conn *c, const char *reason, const char *detail) {
    Listener *l = c->listener;
    if (c->fd >= 0)
        drain_socket(c->fd);
    c->fatal = 1;
    Py_INCREF(c);
    conn_release(c, 0);
    PyObject *r = PyObject_CallFunction(l->failed, "ss", reason, detail);
    if (r == NULL)
        report_error(l->engine, "tls: the handshake failure hook failed", NULL);
    Py_XDECREF(r);
    Py_DECREF(c);
}

/* connection_lost, soon (never inside the caller's own call), exactly once. */
static void conn_lost(Conn *c, PyObject *exc, int send_close_notify) {
    if (c->state == ST_CLOSED)
        return;
    Engine *e = c->listener->engine;
    Py_INCREF(c);
    conn_release(c, send_close_notify);
    PyObject *lost = PyObject_GetAttr((PyObject *)c, str_connection_lost_hook);
    if (lost) {
        PyObject *r = PyObject_CallFunctionObjArgs(e->call_soon, lost, exc ? exc : Py_None, NULL);
        if (r == NULL)
            report_error(e, "tls: could not schedule connection_lost", c);
        Py_XDECREF(r);
        Py_DECREF(lost);
    } else {
        report_error(e, "tls: could not schedule connection_lost", c);
    }
    Py_DECREF(c);
}

static PyObject *os_error(int err) {
    if (err == 0)
        err = ECONNRESET;
    return PyObject_CallFunction(PyExc_OSError, "is", err, strerror(err));
}

/* The connection broke (a reset, a TLS error): no close_notify, connection_lost(exc). */
static void conn_broken(Conn *c, int err, const char *tls_reason) {
    PyObject *exc;
    if (tls_reason)
        exc = PyObject_CallFunction(PyExc_ConnectionError, "s", tls_reason);
    else
        exc = os_error(err);
    if (exc == NULL)
        PyErr_Clear();
    c->fatal = 1;
    conn_lost(c, exc, 0);
    Py_XDECREF(exc);
}

/* ---- writing ---- */

static void conn_update_events(Conn *c);
static void conn_finish_close(Conn *c);

static int wbuf_append(Conn *c, const char *data, size_t n) {
    if (c->woff > 0 && c->woff == c->wlen) {
        c->woff = c->wlen = 0;
    }
    if (c->wlen + n > c->wcap) {
        if (c->woff > 0) {  /* move the unsent bytes to the front first */
            memmove(c->wbuf, c->wbuf + c->woff, c->wlen - c->woff);
            c->wlen -= c->woff;
            c->woff = 0;
        }
        if (c->wlen + n > c->wcap) {
            size_t cap = c->wcap ? c->wcap : 16384;
            while (cap < c->wlen + n)
                cap *= 2;
            char *b = realloc(c->wbuf, cap);
            if (b == NULL) {
                PyErr_NoMemory();
                return -1;
            }
            c->wbuf = b;
            c->wcap = cap;
        }
    }
    memcpy(c->wbuf + c->wlen, data, n);
    c->wlen += n;
    return 0;
}

/* SSL_write as much as the socket takes. 1: all sent; 0: the rest waits for EPOLLOUT; -1: broken. */
static int ssl_write_all(Conn *c, const char *data, size_t n, size_t *sent) {
    *sent = 0;
    while (*sent < n) {
        ERR_clear_error();
        size_t chunk = n - *sent;
        if (chunk > INT_MAX)
            chunk = INT_MAX;
        int r = SSL_write(c->ssl, data + *sent, (int)chunk);
        if (r > 0) {
            *sent += (size_t)r;
            continue;
        }
        int err = SSL_get_error(c->ssl, r);
        if (err == SSL_ERROR_WANT_WRITE || err == SSL_ERROR_WANT_READ)
            return 0;
        int saved = errno;
        ERR_clear_error();
        conn_broken(c, err == SSL_ERROR_SYSCALL ? saved : 0, err == SSL_ERROR_SYSCALL ? NULL : "TLS write failed");
        return -1;
    }
    return 1;
}

static size_t conn_buffered(Conn *c) { return c->wlen - c->woff; }

static void conn_maybe_resume_writing(Conn *c) {
    if (c->writing_paused && conn_buffered(c) <= c->low && c->protocol) {
        c->writing_paused = 0;
        PyObject *r = PyObject_CallMethodNoArgs(c->protocol, str_resume_writing);
        if (r == NULL)
            report_error(c->listener->engine, "protocol.resume_writing() failed", c);
        Py_XDECREF(r);
    }
}

/* The socket is writable: send what waits. */
static void conn_flush(Conn *c) {
    size_t sent;
    int r = ssl_write_all(c, c->wbuf + c->woff, conn_buffered(c), &sent);
    if (r < 0)
        return;
    c->woff += sent;
    if (c->woff == c->wlen)
        c->woff = c->wlen = 0;
    if (c->state == ST_CLOSING && conn_buffered(c) == 0) {
        conn_finish_close(c);
        return;
    }
    conn_update_events(c);
    conn_maybe_resume_writing(c);
}

static void conn_update_events(Conn *c) {
    uint32_t ev = 0;
    if (c->state == ST_OPEN && !c->reading_paused && !c->eof)
        ev |= EPOLLIN;
    if (conn_buffered(c) > 0 || c->want_write_to_read)
        ev |= EPOLLOUT;
    conn_set_events(c, ev);
}

static void conn_finish_close(Conn *c) { conn_lost(c, NULL, 1); }

/* ---- reading ---- */

static void conn_close(Conn *c);

static void conn_eof(Conn *c) {
    c->eof = 1;
    conn_update_events(c);
    PyObject *r = PyObject_CallMethodNoArgs(c->protocol, str_eof_received);
    if (r == NULL) {
        report_error(c->listener->engine, "protocol.eof_received() failed", c);
        conn_lost(c, NULL, 0);
        return;
    }
    int keep = PyObject_IsTrue(r);
    Py_DECREF(r);
    if (keep <= 0 && c->state == ST_OPEN)
        conn_close(c);
}

/* Decrypted bytes to data_received, a chunk at a time, until the socket is empty or reading pauses. */
static void conn_read(Conn *c) {
    Engine *e = c->listener->engine;
    Py_INCREF(c);
    c->want_write_to_read = 0;
    while (c->state == ST_OPEN && !c->reading_paused && !c->eof) {
        size_t filled = 0;
        int err = SSL_ERROR_NONE, saved = 0, drained = 0;
        while (filled < READ_CHUNK) {
            ERR_clear_error();
            int r = SSL_read(c->ssl, e->rbuf + filled, (int)(READ_CHUNK - filled));
            if (r > 0) {
                filled += (size_t)r;
                /* Nothing more in OpenSSL's buffer (read ahead): stop without the read() that would say
                   EAGAIN; the level-triggered epoll tells us of what the socket still holds. */
                if (!SSL_has_pending(c->ssl)) {
                    drained = 1;
                    break;
                }
                continue;
            }
            err = SSL_get_error(c->ssl, r);
            saved = errno;
            break;
        }
        if (filled > 0) {
            PyObject *data = PyBytes_FromStringAndSize(e->rbuf, (Py_ssize_t)filled);
            PyObject *r = data ? PyObject_CallMethodOneArg(c->protocol, str_data_received, data) : NULL;
            Py_XDECREF(data);
            if (r == NULL) {
                report_error(e, "protocol.data_received() failed", c);
                conn_lost(c, NULL, 0);
                break;
            }
            Py_DECREF(r);
            if (c->state != ST_OPEN)
                break;
        }
        if (err == SSL_ERROR_NONE && drained)
            break;
        if (err == SSL_ERROR_NONE)
            continue;  /* the chunk filled up: there may be more */
        if (err == SSL_ERROR_WANT_READ)
            break;
        if (err == SSL_ERROR_WANT_WRITE) {
            c->want_write_to_read = 1;
            conn_update_events(c);
            break;
        }
        if (err == SSL_ERROR_ZERO_RETURN) {  /* close_notify */
            conn_eof(c);
            break;
        }
        if (err == SSL_ERROR_SYSCALL && saved == 0) {  /* EOF without close_notify */
            ERR_clear_error();
            conn_eof(c);
            break;
        }
        if (err == SSL_ERROR_SSL && ERR_GET_REASON(ERR_peek_last_error()) == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
            ERR_clear_error();
            conn_eof(c);
            break;
        }
        char reason[160];
        ERR_error_string_n(ERR_peek_last_error(), reason, sizeof(reason));
        ERR_clear_error();
        conn_broken(c, saved, err == SSL_ERROR_SYSCALL ? NULL : reason);
        break;
    }
    Py_DECREF(c);
}

/* ---- the handshake ---- */

static const char *failure_reason(int ssl_err, unsigned long e) {
    if (ssl_err == SSL_ERROR_SYSCALL || ssl_err == SSL_ERROR_ZERO_RETURN)
        return "client_closed";
    int reason = ERR_GET_REASON(e);
    switch (reason) {
    case SSL_R_NO_SHARED_CIPHER:
    case SSL_R_NO_SHARED_GROUPS:
    case SSL_R_NO_SUITABLE_KEY_SHARE:
    case SSL_R_NO_SUITABLE_SIGNATURE_ALGORITHM:
    case SSL_R_NO_SHARED_SIGNATURE_ALGORITHMS:
        return "no_shared_cipher";
    case SSL_R_UNSUPPORTED_PROTOCOL:
    case SSL_R_VERSION_TOO_LOW:
    case SSL_R_VERSION_TOO_HIGH:
    case SSL_R_WRONG_VERSION_NUMBER:
    case SSL_R_TLSV1_ALERT_PROTOCOL_VERSION:
        return "protocol_version";
    case SSL_R_HTTP_REQUEST:
    case SSL_R_HTTPS_PROXY_REQUEST:
        return "plain_http";
    case SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE:
    case SSL_R_CERTIFICATE_VERIFY_FAILED:
        return "client_certificate";  /* ssl_verify_client: none given, or one that does not verify */
    case SSL_R_UNEXPECTED_EOF_WHILE_READING:
        return "client_closed";
    }
    if (reason >= SSL_AD_REASON_OFFSET)
        return "client_alert";  /* the client sent an alert */
    return "tls_error";
}

static void conn_established(Conn *c) {
    Listener *l = c->listener;
    hs_unlink(c);
    c->state = ST_OPEN;
    PyObject *protocol = PyObject_CallOneArg(l->established, (PyObject *)c);
    if (protocol == NULL) {
        report_error(l->engine, "tls: choosing the connection's protocol failed", c);
        conn_fail(c, "tls_error", "no protocol for the connection");
        return;
    }
    Py_XSETREF(c->protocol, protocol);
    PyObject *r = PyObject_CallMethodOneArg(protocol, str_connection_made, (PyObject *)c);
    if (r == NULL) {
        report_error(l->engine, "protocol.connection_made() failed", c);
        conn_lost(c, NULL, 0);
        return;
    }
    Py_DECREF(r);
    if (c->state != ST_OPEN)
        return;
    conn_update_events(c);
    if (SSL_pending(c->ssl) > 0 || SSL_has_pending(c->ssl))
        conn_read(c);  /* the client's first request came with its Finished */
}

static void conn_handshake(Conn *c) {
    ERR_clear_error();
    int r = SSL_do_handshake(c->ssl);
    if (r == 1) {
        conn_established(c);
        return;
    }
    int err = SSL_get_error(c->ssl, r);
    if (err == SSL_ERROR_WANT_READ) {
        conn_set_events(c, EPOLLIN);
        return;
    }
    if (err == SSL_ERROR_WANT_WRITE) {
        conn_set_events(c, EPOLLOUT);
        return;
    }
    unsigned long e = ERR_peek_last_error();
    char detail[160];
    detail[0] = 0;
    if (e)
        ERR_error_string_n(e, detail, sizeof(detail));
    ERR_clear_error();
    conn_fail(c, failure_reason(err, e), detail[0] ? detail : NULL);
}

static int servername_cb(SSL *ssl, int *alert, void *arg);

/* The client's first bytes: a TLS record, a plain HTTP request, or anything else. */
static void conn_first_bytes(Conn *c) {
    unsigned char first;
    ssize_t n = recv(c->fd, &first, 1, MSG_PEEK);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    if (n <= 0) {
        conn_fail(c, "client_closed", NULL);
        return;
    }
    if (first == TLS_HANDSHAKE_RECORD) {
        SSL *ssl = SSL_new(c->listener->ctx);
        if (ssl == NULL || SSL_set_fd(ssl, c->fd) != 1) {
            SSL_free(ssl);
            ERR_clear_error();
            conn_fail(c, "tls_error", "SSL_new failed");
            return;
        }
        SSL_set_mode(ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                              SSL_MODE_RELEASE_BUFFERS);
        /* One read() for what the socket holds, not one for each record's header and one for its body. */
        SSL_set_read_ahead(ssl, 1);
        SSL_set_accept_state(ssl);
        c->ssl = ssl;
        c->state = ST_HANDSHAKE;
        conn_handshake(c);
        return;
    }
    if (memchr(HTTP_METHOD_LETTERS, first, sizeof(HTTP_METHOD_LETTERS) - 1)) {
        /* nginx's answer: "The plain HTTP request was sent to HTTPS port" */
        drain_socket(c->fd);
        char *answer;
        Py_ssize_t len;
        if (PyBytes_AsStringAndSize(c->listener->plain_answer, &answer, &len) == 0)
            (void)!send(c->fd, answer, (size_t)len, MSG_NOSIGNAL | MSG_DONTWAIT);
        else
            PyErr_Clear();
        shutdown(c->fd, SHUT_WR);
        conn_fail(c, "plain_http", NULL);
        return;
    }
    conn_fail(c, "not_tls", NULL);
}

/* ---- events ---- */

static void conn_event(Conn *c, uint32_t ev) {
    if (c->state == ST_CLOSED)
        return;
    Py_INCREF(c);
    switch (c->state) {
    case ST_FIRST:
        conn_first_bytes(c);
        break;
    case ST_HANDSHAKE:
        conn_handshake(c);
        break;
    default: {
        int handled = 0;
        if ((ev & (EPOLLOUT | EPOLLERR | EPOLLHUP)) && conn_buffered(c) > 0) {
            conn_flush(c);
            handled = 1;
        }
        if (c->state == ST_OPEN && !c->reading_paused && !c->eof &&
            ((ev & (EPOLLIN | EPOLLERR | EPOLLHUP)) || (c->want_write_to_read && (ev & EPOLLOUT)))) {
            conn_read(c);
            handled = 1;
        }
        /* epoll reports a reset or a dead socket whatever the mask: one nobody reads or writes now is lost */
        if (!handled && (ev & (EPOLLERR | EPOLLHUP)) && c->state != ST_CLOSED) {
            int err = 0;
            socklen_t len = sizeof(err);
            getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
            conn_broken(c, err ? err : ECONNRESET, NULL);
        }
        break;
    }
    }
    Py_DECREF(c);
}

/* A connection object for a new fd, not yet watched: the caller holds the one reference. */
static Conn *conn_new(Listener *l, int fd) {
    Conn *c = PyObject_GC_New(Conn, &ConnType);
    if (c == NULL) {
        close(fd);
        return NULL;
    }
    c->fd = fd;
    c->state = ST_FIRST;
    c->ssl = NULL;
    Py_INCREF(l);
    c->listener = l;
    c->protocol = NULL;
    c->events = EPOLLIN;
    c->reading_paused = c->writing_paused = c->fatal = c->eof = c->want_write_to_read = 0;
    c->wbuf = NULL;
    c->woff = c->wlen = c->wcap = 0;
    c->high = 64 * 1024;
    c->low = 16 * 1024;
    c->prev = c->next = NULL;
    c->weakrefs = NULL;
    c->peer_len = 0;
    c->deadline = now_monotonic() + l->timeout;
    PyObject_GC_Track((PyObject *)c);
    return c;
}

/* Watch a new connection; the reference `c` came with is the engine's from now until conn_release. */
static void conn_start(Conn *c, int nodelay_inherited) {
    int one = 1;
    if (!nodelay_inherited)  /* records go out as written; Linux gives accepted sockets the listener's */
        setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (engine_ctl(c->listener->engine, EPOLL_CTL_ADD, c->fd, EPOLLIN, c, TAG_CONN) != 0) {
        conn_fail(c, "tls_error", "epoll_ctl failed");
        return;
    }
    hs_append(c);
    conn_first_bytes(c);  /* the client hello is often there already */
}

static void listener_pause_accepting(Listener *l, double seconds);

static void listener_accept(Listener *l) {
    for (int i = 0; i < MAX_ACCEPTS && l->listen_fd >= 0; i++) {
        struct sockaddr_storage peer;
        socklen_t peer_len = sizeof(peer);
        int fd = accept4(l->listen_fd, (struct sockaddr *)&peer, &peer_len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR || errno == ECONNABORTED)
                return;
            /* EMFILE and friends: told to the loop's handler, and a rest before accepting again */
            PyErr_SetFromErrno(PyExc_OSError);
            report_error(l->engine, "tls: accept failed", NULL);
            listener_pause_accepting(l, 0.5);
            return;
        }
        Conn *c = conn_new(l, fd);
        if (c == NULL) {
            report_error(l->engine, "tls: no memory for a connection", NULL);
            return;
        }
        if (peer_len <= sizeof(peer)) {  /* the client's address, without a getpeername later */
            memcpy(&c->peer, &peer, peer_len);
            c->peer_len = peer_len;
        }
        /* the accept cycle's count (worker_connections): None refuses */
        PyObject *r = PyObject_CallOneArg(l->admit, (PyObject *)c);
        if (r == NULL)
            report_error(l->engine, "tls: the accept hook failed", NULL);
        if (r == NULL || r == Py_None) {
            close(c->fd);  /* over worker_connections: closed at once, so the limit holds */
            c->fd = -1;
            c->state = ST_CLOSED;
            Py_XDECREF(r);
            Py_DECREF(c);
            continue;
        }
        Py_DECREF(r);
        conn_start(c, l->nodelay);
    }
}

static void engine_expire(Engine *e) {
    uint64_t ticks;
    (void)!read(e->timerfd, &ticks, sizeof(ticks));
    double now = now_monotonic(), next = 0;
    for (int i = 0; i < e->nlisteners; i++) {
        Listener *l = e->listeners[i];
        Py_INCREF(l);
        if (l->resume_at > 0 && l->resume_at <= now) {
            l->resume_at = 0;
            if (l->listen_fd >= 0)
                engine_ctl(e, EPOLL_CTL_ADD, l->listen_fd, EPOLLIN, l, TAG_LISTENER);
        }
        if (l->resume_at > 0 && (next == 0 || l->resume_at < next))
            next = l->resume_at;
        while (l->hs_head && l->hs_head->deadline <= now)
            conn_fail(l->hs_head, "timeout", NULL);
        if (l->hs_head && (next == 0 || l->hs_head->deadline < next))
            next = l->hs_head->deadline;
        Py_DECREF(l);
    }
    arm_timer(e, next);
}

/* ---- Engine ---- */

static PyObject *Engine_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    PyObject *loop;
    if (!PyArg_ParseTuple(args, "O", &loop))
        return NULL;
    Engine *e = (Engine *)type->tp_alloc(type, 0);
    if (e == NULL)
        return NULL;
    e->epfd = e->timerfd = -1;
    e->call_soon = PyObject_GetAttrString(loop, "call_soon");
    e->exception_handler = PyObject_GetAttrString(loop, "call_exception_handler");
    e->dead = PyList_New(0);
    if (!e->call_soon || !e->exception_handler || !e->dead) {
        Py_DECREF(e);
        return NULL;
    }
    e->epfd = epoll_create1(EPOLL_CLOEXEC);
    e->timerfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (e->epfd < 0 || e->timerfd < 0 || engine_ctl(e, EPOLL_CTL_ADD, e->timerfd, EPOLLIN, e, TAG_TIMER) != 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        Py_DECREF(e);
        return NULL;
    }
    return (PyObject *)e;
}

static void Engine_dealloc(Engine *e) {
    if (e->epfd >= 0)
        close(e->epfd);
    if (e->timerfd >= 0)
        close(e->timerfd);
    Py_XDECREF(e->call_soon);
    Py_XDECREF(e->exception_handler);
    Py_XDECREF(e->dead);
    PyMem_Free(e->listeners);
    Py_TYPE(e)->tp_free((PyObject *)e);
}

static PyObject *Engine_fileno(Engine *e, PyObject *unused) { return PyLong_FromLong(e->epfd); }

static PyObject *Engine_poll(Engine *e, PyObject *unused) {
    struct epoll_event events[MAX_EVENTS];
    if (e->polling)
        Py_RETURN_NONE;
    e->polling = 1;
    Py_INCREF(e);
    int n = epoll_wait(e->epfd, events, MAX_EVENTS, 0);
    for (int i = 0; i < n; i++) {
        uint64_t data = events[i].data.u64;
        void *owner = (void *)(uintptr_t)(data & ~(uint64_t)3);
        switch (data & 3) {
        case TAG_CONN:
            conn_event((Conn *)owner, events[i].events);
            break;
        case TAG_LISTENER:
            Py_INCREF((PyObject *)owner);
            listener_accept((Listener *)owner);
            Py_DECREF((PyObject *)owner);
            break;
        case TAG_TIMER:
            engine_expire(e);
            break;
        }
    }
    if (PyList_GET_SIZE(e->dead) > 0) {
        PyObject *dead = e->dead;
        e->dead = PyList_New(0);
        if (e->dead == NULL) {
            e->dead = dead;
            e->polling = 0;
            Py_DECREF(e);
            return NULL;
        }
        Py_DECREF(dead);
    }
    e->polling = 0;
    Py_DECREF(e);
    Py_RETURN_NONE;
}

static PyObject *Engine_listener(Engine *e, PyObject *args, PyObject *kw) {
    static char *names[] = {"context", "sni", "timeout", "established", "failed", "plain_answer", "tickets", NULL};
    PyObject *context, *sni, *established, *failed, *plain;
    double timeout;
    int tickets = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO!dOOS|p", names, &context, &PyDict_Type, &sni, &timeout,
                                     &established, &failed, &plain, &tickets))
        return NULL;
    PyObject *largs = Py_BuildValue("(OOOdOOOi)", e, context, sni, timeout, established, failed, plain, tickets);
    if (largs == NULL)
        return NULL;
    PyObject *l = PyObject_Call((PyObject *)&ListenerType, largs, NULL);
    Py_DECREF(largs);
    return l;
}

static PyMethodDef Engine_methods[] = {
    {"fileno", (PyCFunction)Engine_fileno, METH_NOARGS, "The epoll fd the loop watches."},
    {"poll", (PyCFunction)Engine_poll, METH_NOARGS, "Serve every ready connection (the loop's reader callback)."},
    {"listener", (PyCFunction)Engine_listener, METH_VARARGS | METH_KEYWORDS,
     "listener(context, sni, timeout, established, failed, plain_answer, tickets=False): a TLS listener on this "
     "engine; tickets: its contexts issue and read tickets with the keys of set_ticket_keys."},
    {NULL}};

static PyTypeObject EngineType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "ukproxy.native.tls_transport.Engine",
    .tp_basicsize = sizeof(Engine),
    .tp_dealloc = (destructor)Engine_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "One worker loop's TLS connections, on their own epoll fd.",
    .tp_methods = Engine_methods,
    .tp_new = Engine_new,
};

/* ---- session tickets: the workers' shared keys (tls/tickets.py), without a Python call per ticket ---- */

#define TICKET_KEY_BYTES 80  /* 16 name + 32 HMAC-SHA256 secret + 32 AES-256 key, as tls/tickets.py */
#define MAX_TICKET_KEYS 4
static unsigned char ticket_keys[MAX_TICKET_KEYS][TICKET_KEY_BYTES];  /* the current one first */
static int nticket_keys;
static EVP_CIPHER *ticket_cipher;  /* fetched once: OpenSSL 3 would look it up by name for every ticket */

/* OpenSSL's ticket key callback, as tls/tickets.py's: enc=1, a new ticket under the current key (1: done);
   enc=0, the key of the ticket's name (0: unknown, a full handshake; 1: good; 2: good, but issue a new
   ticket under the current key). Tickets are the same bytes either way, so both paths read each other's. */
static int ticket_key_cb(SSL *s, unsigned char *key_name, unsigned char *iv, EVP_CIPHER_CTX *cctx,
                         EVP_MAC_CTX *hctx, int enc) {
    OSSL_PARAM params[2];
    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, "SHA256", 0);
    params[1] = OSSL_PARAM_construct_end();
    if (enc) {
        if (nticket_keys == 0)
            return 0;
        const unsigned char *key = ticket_keys[0];
        if (RAND_bytes(iv, 16) != 1)
            return -1;
        memcpy(key_name, key, 16);
        if (EVP_EncryptInit_ex(cctx, ticket_cipher, NULL, key + 48, iv) != 1 ||
            EVP_MAC_init(hctx, key + 16, 32, params) != 1)
            return -1;
        return 1;
    }
    for (int i = 0; i < nticket_keys; i++) {
        const unsigned char *key = ticket_keys[i];
        if (memcmp(key_name, key, 16) != 0)
            continue;
        if (EVP_MAC_init(hctx, key + 16, 32, params) != 1 ||
            EVP_DecryptInit_ex(cctx, ticket_cipher, NULL, key + 48, iv) != 1)
            return -1;
        return i == 0 ? 1 : 2;
    }
    return 0;
}

static PyObject *set_ticket_keys(PyObject *module, PyObject *keys) {
    PyObject *seq = PySequence_Fast(keys, "expected a list of ticket keys");
    if (seq == NULL)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if (n > MAX_TICKET_KEYS)
        n = MAX_TICKET_KEYS;  /* the oldest beyond these no longer decrypt */
    unsigned char staged[MAX_TICKET_KEYS][TICKET_KEY_BYTES];
    for (Py_ssize_t i = 0; i < n; i++) {
        char *raw;
        Py_ssize_t len;
        if (PyBytes_AsStringAndSize(PySequence_Fast_GET_ITEM(seq, i), &raw, &len) != 0) {
            Py_DECREF(seq);
            return NULL;
        }
        if (len != TICKET_KEY_BYTES) {
            Py_DECREF(seq);
            return PyErr_Format(PyExc_ValueError, "a ticket key is %d bytes, got %zd", TICKET_KEY_BYTES, len);
        }
        memcpy(staged[i], raw, TICKET_KEY_BYTES);
    }
    Py_DECREF(seq);
    memcpy(ticket_keys, staged, sizeof(staged));
    nticket_keys = (int)n;
    Py_RETURN_NONE;
}

/* ---- Listener ---- */

/* The SSL_CTX* inside a Python SSLContext: CPython's PySSLContext keeps it right after the object header
   (as tls/tickets.py reads it); checked against the options Python reads from the same SSL_CTX. */
static SSL_CTX *context_pointer(PyObject *context) {
    SSL_CTX *ctx = *(SSL_CTX **)((char *)context + sizeof(PyObject));
    PyObject *options = PyObject_GetAttrString(context, "options");
    if (options == NULL)
        return NULL;
    unsigned long long expected = PyLong_AsUnsignedLongLongMask(options);
    Py_DECREF(options);
    if (ctx == NULL || (unsigned long long)SSL_CTX_get_options(ctx) != expected) {
        PyErr_SetString(PyExc_OSError, "cannot find the SSL_CTX of an SSLContext in this Python");
        return NULL;
    }
    return ctx;
}

static int servername_cb(SSL *ssl, int *alert, void *arg) {
    Listener *l = (Listener *)arg;
    const char *given = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    if (given == NULL || given[0] == 0)
        return SSL_TLSEXT_ERR_OK;
    char name[256];
    size_t n = strlen(given);
    if (n >= sizeof(name))
        return SSL_TLSEXT_ERR_OK;
    for (size_t i = 0; i < n; i++)
        name[i] = (given[i] >= 'A' && given[i] <= 'Z') ? given[i] + 32 : given[i];
    name[n] = 0;
    if (n > 0 && name[n - 1] == '.')
        name[--n] = 0;
    SSL_CTX *found = NULL;
    for (int i = 0; i < l->nexact && !found; i++)
        if (strcmp(l->exact[i].name, name) == 0)
            found = l->exact[i].ctx;
    if (!found) {
        const char *dot = strchr(name, '.');
        if (dot)  /* one leftmost label: "*.example.com" is "api.example.com", not "a.b.example.com" */
            for (int i = 0; i < l->nwildcard && !found; i++)
                if (strcmp(l->wildcard[i].name, dot + 1) == 0)
                    found = l->wildcard[i].ctx;
    }
    if (found && found != SSL_get_SSL_CTX(ssl))
        SSL_set_SSL_CTX(ssl, found);
    return SSL_TLSEXT_ERR_OK;  /* a name we do not know gets the default certificate */
}

static int Listener_traverse(Listener *l, visitproc visit, void *arg) {
    Py_VISIT(l->engine);
    Py_VISIT(l->contexts);
    Py_VISIT(l->established);
    Py_VISIT(l->failed);
    Py_VISIT(l->admit);
    return 0;
}

static int Listener_clear(Listener *l) {
    Py_CLEAR(l->established);
    Py_CLEAR(l->failed);
    Py_CLEAR(l->admit);
    return 0;
}

static void free_sni(SniEntry *entries, int n) {
    for (int i = 0; i < n; i++)
        PyMem_Free(entries[i].name);
    PyMem_Free(entries);
}

static void Listener_dealloc(Listener *l) {
    PyObject_GC_UnTrack(l);
    Engine *e = l->engine;
    if (e) {
        if (l->listen_fd >= 0) {
            epoll_ctl(e->epfd, EPOLL_CTL_DEL, l->listen_fd, NULL);
            close(l->listen_fd);
            l->listen_fd = -1;
        }
        for (int i = 0; i < e->nlisteners; i++)
            if (e->listeners[i] == l) {
                e->listeners[i] = e->listeners[--e->nlisteners];
                break;
            }
    }
    Listener_clear(l);
    free_sni(l->exact, l->nexact);
    free_sni(l->wildcard, l->nwildcard);
    Py_XDECREF(l->contexts);
    Py_XDECREF(l->plain_answer);
    Py_XDECREF(l->engine);
    Py_TYPE(l)->tp_free((PyObject *)l);
}

static PyObject *Listener_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    Engine *e;
    PyObject *context, *sni, *established, *failed, *plain;
    double timeout;
    int tickets = 0;
    if (!PyArg_ParseTuple(args, "O!OO!dOOS|p", &EngineType, &e, &context, &PyDict_Type, &sni, &timeout,
                          &established, &failed, &plain, &tickets))
        return NULL;
    Listener *l = (Listener *)type->tp_alloc(type, 0);
    if (l == NULL)
        return NULL;
    l->listen_fd = -1;
    Py_INCREF(e);
    l->engine = e;
    l->timeout = timeout;
    Py_INCREF(established);
    l->established = established;
    Py_INCREF(failed);
    l->failed = failed;
    Py_INCREF(plain);
    l->plain_answer = plain;
    l->contexts = PyList_New(0);
    if (l->contexts == NULL || PyList_Append(l->contexts, context) != 0)
        goto fail;
    l->ctx = context_pointer(context);
    if (l->ctx == NULL)
        goto fail;
    Py_ssize_t n = PyDict_Size(sni);
    l->exact = PyMem_Calloc(n + 1, sizeof(SniEntry));
    l->wildcard = PyMem_Calloc(n + 1, sizeof(SniEntry));
    if (!l->exact || !l->wildcard) {
        PyErr_NoMemory();
        goto fail;
    }
    PyObject *key, *value;
    Py_ssize_t pos = 0;
    while (PyDict_Next(sni, &pos, &key, &value)) {
        const char *name = PyUnicode_AsUTF8(key);
        if (name == NULL)
            goto fail;
        SSL_CTX *ctx = context_pointer(value);
        if (ctx == NULL || PyList_Append(l->contexts, value) != 0)
            goto fail;
        int wild = strncmp(name, "*.", 2) == 0;
        SniEntry *entry = wild ? &l->wildcard[l->nwildcard++] : &l->exact[l->nexact++];
        const char *stored = wild ? name + 2 : name;
        entry->name = PyMem_Malloc(strlen(stored) + 1);
        if (entry->name == NULL) {
            PyErr_NoMemory();
            goto fail;
        }
        for (size_t i = 0; i <= strlen(stored); i++)
            entry->name[i] = (stored[i] >= 'A' && stored[i] <= 'Z') ? stored[i] + 32 : stored[i];
        entry->ctx = ctx;
    }
    if (tickets)  /* in C, in place of tls/tickets.py's ctypes callback: the same keys (set_ticket_keys) */
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(l->contexts); i++)
            SSL_CTX_set_tlsext_ticket_key_evp_cb(context_pointer(PyList_GET_ITEM(l->contexts, i)), ticket_key_cb);
    if (n > 0) {  /* ours replaces Python's callback, which expects an SSLSocket as the SSL's app data */
        SSL_CTX_set_tlsext_servername_callback(l->ctx, servername_cb);
        SSL_CTX_set_tlsext_servername_arg(l->ctx, l);
    }
    Listener **grown = PyMem_Realloc(e->listeners, sizeof(Listener *) * (e->nlisteners + 1));
    if (grown == NULL) {
        PyErr_NoMemory();
        goto fail;
    }
    e->listeners = grown;
    e->listeners[e->nlisteners++] = l;
    return (PyObject *)l;  /* tp_alloc tracked it already */
fail:
    Py_DECREF(l);
    return NULL;
}

static PyObject *Listener_accept_on(Listener *l, PyObject *args) {
    int fd;
    PyObject *admit;
    if (!PyArg_ParseTuple(args, "iO", &fd, &admit))
        return NULL;
    if (l->listen_fd >= 0) {
        PyErr_SetString(PyExc_RuntimeError, "already accepting");
        return NULL;
    }
    if (engine_ctl(l->engine, EPOLL_CTL_ADD, fd, EPOLLIN, l, TAG_LISTENER) != 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    Py_INCREF(admit);
    Py_XSETREF(l->admit, admit);
    l->listen_fd = fd;
    int one = 1;  /* on the listening socket once, rather than on each connection accepted from it */
    l->nodelay = setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) == 0;
    Py_RETURN_NONE;
}

static void listener_pause_accepting(Listener *l, double seconds) {
    Engine *e = l->engine;
    epoll_ctl(e->epfd, EPOLL_CTL_DEL, l->listen_fd, NULL);
    l->resume_at = now_monotonic() + seconds;
    if (e->timer_at == 0 || l->resume_at < e->timer_at)
        arm_timer(e, l->resume_at);
}

static PyObject *Listener_stop_accepting(Listener *l, PyObject *unused) {
    if (l->listen_fd >= 0) {
        epoll_ctl(l->engine->epfd, EPOLL_CTL_DEL, l->listen_fd, NULL);
        close(l->listen_fd);  /* the engine's own duplicate of the listening socket */
        l->listen_fd = -1;
        l->resume_at = 0;
    }
    Py_RETURN_NONE;
}

static PyObject *Listener_adopt(Listener *l, PyObject *arg) {
    int fd = PyLong_AsLong(arg);
    if (fd < 0 && PyErr_Occurred())
        return NULL;
    int flags = fcntl(fd, F_GETFL);  /* Python's accept gives a blocking socket */
    if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        close(fd);
        return NULL;
    }
    Conn *c = conn_new(l, fd);
    if (c == NULL)
        return NULL;
    conn_start(c, 0);
    Py_RETURN_NONE;
}

static PyObject *Listener_handshaking(Listener *l, void *closure) {
    long n = 0;
    for (Conn *c = l->hs_head; c; c = c->next)
        n++;
    return PyLong_FromLong(n);
}

static PyMethodDef Listener_methods[] = {
    {"accept_on", (PyCFunction)Listener_accept_on, METH_VARARGS,
     "accept_on(fd, admit): accept on this listening socket (a duplicate, the engine's from now on); "
     "admit(transport) for each new connection, None refuses it."},
    {"stop_accepting", (PyCFunction)Listener_stop_accepting, METH_NOARGS,
     "Stop accepting and close the duplicate given to accept_on."},
    {"adopt", (PyCFunction)Listener_adopt, METH_O, "adopt(fd): a connection accepted elsewhere, ours from now."},
    {NULL}};

static PyGetSetDef Listener_getset[] = {
    {"handshaking", (getter)Listener_handshaking, NULL, "Connections before the end of their handshake.", NULL},
    {NULL}};

static PyTypeObject ListenerType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "ukproxy.native.tls_transport.Listener",
    .tp_basicsize = sizeof(Listener),
    .tp_dealloc = (destructor)Listener_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "One TLS listener of an engine: its contexts, SNI names, deadline and hooks.",
    .tp_traverse = (traverseproc)Listener_traverse,
    .tp_clear = (inquiry)Listener_clear,
    .tp_methods = Listener_methods,
    .tp_getset = Listener_getset,
    .tp_new = Listener_new,
};

/* ---- Conn: the asyncio transport (and the answers an ssl_object gives) ---- */

static int Conn_traverse(Conn *c, visitproc visit, void *arg) {
    Py_VISIT(c->protocol);
    Py_VISIT(c->listener);
    return 0;
}

static int Conn_clear(Conn *c) {
    Py_CLEAR(c->protocol);
    return 0;
}

static void Conn_dealloc(Conn *c) {
    PyObject_GC_UnTrack(c);
    if (c->weakrefs)
        PyObject_ClearWeakRefs((PyObject *)c);
    if (c->ssl)
        SSL_free(c->ssl);
    if (c->fd >= 0)
        close(c->fd);
    free(c->wbuf);
    Conn_clear(c);
    Py_XDECREF(c->listener);
    PyObject_GC_Del(c);
}

static void conn_close(Conn *c) {
    if (c->state != ST_OPEN)
        return;
    c->state = ST_CLOSING;
    if (conn_buffered(c) == 0)
        conn_finish_close(c);
    else
        conn_update_events(c);
}

static PyObject *Conn_write(Conn *c, PyObject *arg) {
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) != 0)
        return NULL;
    if (c->state != ST_OPEN || view.len == 0) {
        PyBuffer_Release(&view);
        Py_RETURN_NONE;  /* as asyncio: a write after close goes nowhere */
    }
    size_t sent = 0;
    int r = 0;
    if (conn_buffered(c) == 0)
        r = ssl_write_all(c, view.buf, (size_t)view.len, &sent);
    if (r == 0) {
        if (wbuf_append(c, (const char *)view.buf + sent, (size_t)view.len - sent) != 0) {
            PyBuffer_Release(&view);
            return NULL;
        }
        conn_update_events(c);
    }
    PyBuffer_Release(&view);
    if (c->state == ST_OPEN && !c->writing_paused && conn_buffered(c) > c->high && c->protocol) {
        c->writing_paused = 1;
        PyObject *res = PyObject_CallMethodNoArgs(c->protocol, str_pause_writing);
        if (res == NULL)
            report_error(c->listener->engine, "protocol.pause_writing() failed", c);
        Py_XDECREF(res);
    }
    Py_RETURN_NONE;
}

static PyObject *Conn_writelines(Conn *c, PyObject *arg) {
    PyObject *it = PyObject_GetIter(arg), *item;
    if (it == NULL)
        return NULL;
    while ((item = PyIter_Next(it))) {
        PyObject *r = Conn_write(c, item);
        Py_DECREF(item);
        if (r == NULL) {
            Py_DECREF(it);
            return NULL;
        }
        Py_DECREF(r);
    }
    Py_DECREF(it);
    if (PyErr_Occurred())
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *Conn_close(Conn *c, PyObject *unused) {
    conn_close(c);
    Py_RETURN_NONE;
}

static PyObject *Conn_abort(Conn *c, PyObject *unused) {
    if (c->state == ST_OPEN || c->state == ST_CLOSING) {
        c->fatal = 1;
        conn_lost(c, NULL, 0);
    }
    Py_RETURN_NONE;
}

static PyObject *Conn_is_closing(Conn *c, PyObject *unused) { return PyBool_FromLong(c->state != ST_OPEN); }

static PyObject *Conn_pause_reading(Conn *c, PyObject *unused) {
    if (c->state == ST_OPEN && !c->reading_paused) {
        c->reading_paused = 1;
        conn_update_events(c);
    }
    Py_RETURN_NONE;
}

static PyObject *Conn_resume_reading(Conn *c, PyObject *unused) {
    if (c->state == ST_OPEN && c->reading_paused) {
        c->reading_paused = 0;
        conn_update_events(c);
        if (c->ssl && (SSL_pending(c->ssl) > 0 || SSL_has_pending(c->ssl))) {
            /* bytes OpenSSL holds already: epoll will not tell us of them */
            PyObject *read = PyObject_GetAttr((PyObject *)c, str_read_buffered_hook);
            PyObject *r = read ? PyObject_CallOneArg(c->listener->engine->call_soon, read) : NULL;
            Py_XDECREF(read);
            if (r == NULL)
                return NULL;
            Py_DECREF(r);
        }
    }
    Py_RETURN_NONE;
}

static PyObject *Conn_read_buffered(Conn *c, PyObject *unused) {
    if (c->state == ST_OPEN && !c->reading_paused)
        conn_read(c);
    Py_RETURN_NONE;
}

static PyObject *Conn_connection_lost(Conn *c, PyObject *exc) {
    PyObject *protocol = c->protocol;
    c->protocol = NULL;  /* the transport lets go of its protocol, as asyncio's do */
    if (protocol == NULL)
        Py_RETURN_NONE;
    PyObject *r = PyObject_CallMethodOneArg(protocol, str_connection_lost, exc);
    Py_DECREF(protocol);
    return r;
}

static PyObject *Conn_is_reading(Conn *c, PyObject *unused) {
    return PyBool_FromLong(c->state == ST_OPEN && !c->reading_paused);
}

static PyObject *Conn_can_write_eof(Conn *c, PyObject *unused) { Py_RETURN_FALSE; }

static PyObject *Conn_write_eof(Conn *c, PyObject *unused) {
    PyErr_SetString(PyExc_NotImplementedError, "TLS has no half-close: close() sends close_notify");
    return NULL;
}

static PyObject *Conn_set_protocol(Conn *c, PyObject *protocol) {
    Py_INCREF(protocol);
    Py_XSETREF(c->protocol, protocol);
    Py_RETURN_NONE;
}

static PyObject *Conn_get_protocol(Conn *c, PyObject *unused) {
    PyObject *p = c->protocol ? c->protocol : Py_None;
    Py_INCREF(p);
    return p;
}

static PyObject *Conn_get_write_buffer_size(Conn *c, PyObject *unused) { return PyLong_FromSize_t(conn_buffered(c)); }

static PyObject *Conn_get_write_buffer_limits(Conn *c, PyObject *unused) {
    return Py_BuildValue("(nn)", (Py_ssize_t)c->low, (Py_ssize_t)c->high);
}

static PyObject *Conn_set_write_buffer_limits(Conn *c, PyObject *args, PyObject *kw) {
    static char *names[] = {"high", "low", NULL};
    PyObject *high = Py_None, *low = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|OO", names, &high, &low))
        return NULL;
    Py_ssize_t h, lo;
    if (high == Py_None) {
        h = low == Py_None ? 64 * 1024 : 4 * PyLong_AsSsize_t(low);
    } else {
        h = PyLong_AsSsize_t(high);
    }
    lo = low == Py_None ? h / 4 : PyLong_AsSsize_t(low);
    if (PyErr_Occurred())
        return NULL;
    if (!(h >= lo && lo >= 0)) {
        PyErr_Format(PyExc_ValueError, "high (%zd) must be >= low (%zd) must be >= 0", h, lo);
        return NULL;
    }
    c->high = (size_t)h;
    c->low = (size_t)lo;
    if (c->state == ST_OPEN && !c->writing_paused && conn_buffered(c) > c->high && c->protocol) {
        c->writing_paused = 1;
        PyObject *r = PyObject_CallMethodNoArgs(c->protocol, str_pause_writing);
        if (r == NULL)
            return NULL;
        Py_DECREF(r);
    } else {
        conn_maybe_resume_writing(c);
    }
    Py_RETURN_NONE;
}

/* An IPv4 address as text, new reference. Every new connection's peername is asked for (the access log's
   client): the last address's text is kept, since clients come back, and others are written without
   inet_ntop's sprintf. */
static PyObject *ipv4_text(in_addr_t addr) {
    static in_addr_t last_addr;
    static PyObject *last_text;
    if (last_text != NULL && addr == last_addr) {
        Py_INCREF(last_text);
        return last_text;
    }
    const unsigned char *b = (const unsigned char *)&addr;  /* network order: the first octet first */
    char text[16], *p = text;
    for (int i = 0; i < 4; i++) {
        unsigned v = b[i];
        if (v >= 100)
            *p++ = (char)('0' + v / 100);
        if (v >= 10)
            *p++ = (char)('0' + v / 10 % 10);
        *p++ = (char)('0' + v % 10);
        *p++ = '.';
    }
    PyObject *made = PyUnicode_FromStringAndSize(text, p - text - 1);
    if (made == NULL)
        return NULL;
    Py_XSETREF(last_text, made);
    last_addr = addr;
    Py_INCREF(made);
    return made;
}

static PyObject *address(Conn *c, int peer) {
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    if (peer && c->peer_len > 0) {
        memcpy(&ss, &c->peer, c->peer_len);
    } else if (c->fd < 0 || (peer ? getpeername(c->fd, (struct sockaddr *)&ss, &len)
                                  : getsockname(c->fd, (struct sockaddr *)&ss, &len)) != 0) {
        Py_RETURN_NONE;
    }
    char host[INET6_ADDRSTRLEN];
    if (ss.ss_family == AF_INET) {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        PyObject *text = ipv4_text(a->sin_addr.s_addr);
        PyObject *port = text ? PyLong_FromLong(ntohs(a->sin_port)) : NULL;
        PyObject *pair = port ? PyTuple_New(2) : NULL;
        if (pair == NULL) {
            Py_XDECREF(text);
            Py_XDECREF(port);
            return NULL;
        }
        PyTuple_SET_ITEM(pair, 0, text);
        PyTuple_SET_ITEM(pair, 1, port);
        return pair;
    }
    if (ss.ss_family == AF_INET6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host));
        return Py_BuildValue("(siII)", host, ntohs(a->sin6_port), ntohl(a->sin6_flowinfo), a->sin6_scope_id);
    }
    Py_RETURN_NONE;
}

static PyObject *extra_info(Conn *c, const char *name, PyObject *dflt);

/* get_extra_info(name, default=None), asked twice per new connection: its arguments read without the
   argument parser's format string */
static PyObject *Conn_get_extra_info(Conn *c, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    PyObject *name = nargs > 0 ? args[0] : NULL, *dflt = nargs > 1 ? args[1] : Py_None;
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    if (nargs > 2 || nargs + nkw > 2) {
        PyErr_SetString(PyExc_TypeError, "get_extra_info() takes at most 2 arguments");
        return NULL;
    }
    for (Py_ssize_t i = 0; i < nkw; i++) {
        PyObject *key = PyTuple_GET_ITEM(kwnames, i);
        if (PyUnicode_CompareWithASCIIString(key, "name") == 0 && name == NULL) {
            name = args[nargs + i];
        } else if (PyUnicode_CompareWithASCIIString(key, "default") == 0 && nargs < 2) {
            dflt = args[nargs + i];
        } else {
            PyErr_Format(PyExc_TypeError, "get_extra_info() got an unexpected keyword argument %R", key);
            return NULL;
        }
    }
    if (name == NULL || !PyUnicode_Check(name)) {
        PyErr_SetString(PyExc_TypeError, "get_extra_info() needs a name (str)");
        return NULL;
    }
    const char *text = PyUnicode_AsUTF8(name);
    return text ? extra_info(c, text, dflt) : NULL;
}

static PyObject *extra_info(Conn *c, const char *name, PyObject *dflt) {
    if (strcmp(name, "peername") == 0)
        return address(c, 1);
    if (strcmp(name, "sockname") == 0)
        return address(c, 0);
    if (strcmp(name, "ssl_object") == 0 && c->ssl) {  /* the transport answers an SSLObject's questions */
        Py_INCREF(c);
        return (PyObject *)c;
    }
    if (strcmp(name, "sslcontext") == 0 && c->listener->contexts) {
        PyObject *ctx = PyList_GET_ITEM(c->listener->contexts, 0);
        Py_INCREF(ctx);
        return ctx;
    }
    if (strcmp(name, "cipher") == 0 && c->ssl) {
        const SSL_CIPHER *cipher = SSL_get_current_cipher(c->ssl);
        if (cipher)
            return Py_BuildValue("(ssi)", SSL_CIPHER_get_name(cipher), SSL_CIPHER_get_version(cipher),
                                 SSL_CIPHER_get_bits(cipher, NULL));
    }
    Py_INCREF(dflt);
    return dflt;
}

/* ssl.SSLObject's answers that the protocols and the acceptor ask for */

static PyObject *Conn_version(Conn *c, PyObject *unused) {
    if (c->ssl == NULL || !SSL_is_init_finished(c->ssl))
        Py_RETURN_NONE;
    /* OpenSSL names the version with a static string: its text made once per name, not per connection */
    static const char *last_name;
    static PyObject *last_text;
    const char *name = SSL_get_version(c->ssl);
    if (last_text == NULL || name != last_name) {
        PyObject *made = PyUnicode_FromString(name);
        if (made == NULL)
            return NULL;
        Py_XSETREF(last_text, made);
        last_name = name;
    }
    Py_INCREF(last_text);
    return last_text;
}

static PyObject *Conn_selected_alpn_protocol(Conn *c, PyObject *unused) {
    const unsigned char *proto = NULL;
    unsigned int len = 0;
    if (c->ssl)
        SSL_get0_alpn_selected(c->ssl, &proto, &len);
    if (proto == NULL || len == 0)
        Py_RETURN_NONE;
    return PyUnicode_FromStringAndSize((const char *)proto, len);
}

static PyObject *Conn_cipher(Conn *c, PyObject *unused) {
    return extra_info(c, "cipher", Py_None);
}

static PyObject *Conn_session_reused(Conn *c, void *closure) {
    return PyBool_FromLong(c->ssl != NULL && SSL_session_reused(c->ssl));
}

static PyObject *Conn_server_hostname(Conn *c, void *closure) {
    const char *name = c->ssl ? SSL_get_servername(c->ssl, TLSEXT_NAMETYPE_host_name) : NULL;
    if (name == NULL)
        Py_RETURN_NONE;
    return PyUnicode_FromString(name);
}

/* As ssl.SSLObject.getpeercert(binary_form=True): the client's certificate in DER, None without one
   (ssl_verify_client; tls/client_certs.py reads the $ssl_client_* variables from it). */
static PyObject *Conn_getpeercert(Conn *c, PyObject *args) {
    int binary = 0;
    if (!PyArg_ParseTuple(args, "|p", &binary))
        return NULL;
    if (!binary) {
        PyErr_SetString(PyExc_ValueError, "only getpeercert(binary_form=True) is served");
        return NULL;
    }
    X509 *cert = c->ssl ? SSL_get0_peer_certificate(c->ssl) : NULL;
    unsigned char *der = NULL;
    int len = cert ? i2d_X509(cert, &der) : -1;
    if (len < 0)
        Py_RETURN_NONE;
    PyObject *r = PyBytes_FromStringAndSize((const char *)der, len);
    OPENSSL_free(der);
    return r;
}

static PyObject *Conn_fileno(Conn *c, PyObject *unused) { return PyLong_FromLong(c->fd); }

static PyObject *Conn_repr(Conn *c) {
    static const char *states[] = {"first bytes", "handshake", "open", "closing", "closed"};
    return PyUnicode_FromFormat("<TlsTransport fd=%d %s>", c->fd, states[c->state]);
}

static PyMethodDef Conn_methods[] = {
    {"write", (PyCFunction)Conn_write, METH_O, NULL},
    {"writelines", (PyCFunction)Conn_writelines, METH_O, NULL},
    {"close", (PyCFunction)Conn_close, METH_NOARGS, "Write out what is buffered, send close_notify, close."},
    {"abort", (PyCFunction)Conn_abort, METH_NOARGS, "Close now: what is buffered is lost."},
    {"is_closing", (PyCFunction)Conn_is_closing, METH_NOARGS, NULL},
    {"pause_reading", (PyCFunction)Conn_pause_reading, METH_NOARGS, NULL},
    {"resume_reading", (PyCFunction)Conn_resume_reading, METH_NOARGS, NULL},
    {"is_reading", (PyCFunction)Conn_is_reading, METH_NOARGS, NULL},
    {"can_write_eof", (PyCFunction)Conn_can_write_eof, METH_NOARGS, NULL},
    {"write_eof", (PyCFunction)Conn_write_eof, METH_NOARGS, NULL},
    {"set_protocol", (PyCFunction)Conn_set_protocol, METH_O, NULL},
    {"get_protocol", (PyCFunction)Conn_get_protocol, METH_NOARGS, NULL},
    {"get_write_buffer_size", (PyCFunction)Conn_get_write_buffer_size, METH_NOARGS, NULL},
    {"get_write_buffer_limits", (PyCFunction)Conn_get_write_buffer_limits, METH_NOARGS, NULL},
    {"set_write_buffer_limits", (PyCFunction)Conn_set_write_buffer_limits, METH_VARARGS | METH_KEYWORDS, NULL},
    {"get_extra_info", (PyCFunction)(void (*)(void))Conn_get_extra_info, METH_FASTCALL | METH_KEYWORDS, NULL},
    {"version", (PyCFunction)Conn_version, METH_NOARGS, "As ssl.SSLObject.version()."},
    {"selected_alpn_protocol", (PyCFunction)Conn_selected_alpn_protocol, METH_NOARGS,
     "As ssl.SSLObject.selected_alpn_protocol()."},
    {"cipher", (PyCFunction)Conn_cipher, METH_NOARGS, "As ssl.SSLObject.cipher()."},
    {"getpeercert", (PyCFunction)Conn_getpeercert, METH_VARARGS, "As ssl.SSLObject.getpeercert(True)."},
    {"fileno", (PyCFunction)Conn_fileno, METH_NOARGS, NULL},
    {"_connection_lost", (PyCFunction)Conn_connection_lost, METH_O, NULL},
    {"_read_buffered", (PyCFunction)Conn_read_buffered, METH_NOARGS, NULL},
    {NULL}};

static PyGetSetDef Conn_getset[] = {
    {"session_reused", (getter)Conn_session_reused, NULL, "As ssl.SSLObject.session_reused.", NULL},
    {"server_hostname", (getter)Conn_server_hostname, NULL, "The SNI name the client sent.", NULL},
    {NULL}};

static PyTypeObject ConnType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "ukproxy.native.tls_transport.TlsTransport",
    .tp_basicsize = sizeof(Conn),
    .tp_dealloc = (destructor)Conn_dealloc,
    .tp_repr = (reprfunc)Conn_repr,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "A TLS connection's asyncio transport, served by its engine.",
    .tp_traverse = (traverseproc)Conn_traverse,
    .tp_clear = (inquiry)Conn_clear,
    .tp_weaklistoffset = offsetof(Conn, weakrefs),
    .tp_methods = Conn_methods,
    .tp_getset = Conn_getset,
};

static PyMethodDef module_methods[] = {
    {"set_ticket_keys", (PyCFunction)set_ticket_keys, METH_O,
     "set_ticket_keys([key, ...]): the session ticket keys (80 bytes each, the current first) for listeners "
     "made with tickets=True."},
    {NULL}};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "tls_transport",
    "TLS connections in C: handshake and asyncio transport on OpenSSL's socket BIO (docs/architecture.md, "
    "\"Native paths\").",
    -1, module_methods};

PyMODINIT_FUNC PyInit_tls_transport(void) {
    struct { PyObject **slot; const char *name; } names[] = {
        {&str_connection_made, "connection_made"}, {&str_data_received, "data_received"},
        {&str_eof_received, "eof_received"}, {&str_connection_lost, "connection_lost"},
        {&str_pause_writing, "pause_writing"}, {&str_resume_writing, "resume_writing"},
        {&str_connection_lost_hook, "_connection_lost"}, {&str_read_buffered_hook, "_read_buffered"}};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if ((*names[i].slot = PyUnicode_InternFromString(names[i].name)) == NULL)
            return NULL;
    ticket_cipher = EVP_CIPHER_fetch(NULL, "AES-256-CBC", NULL);
    if (ticket_cipher == NULL) {
        PyErr_SetString(PyExc_ImportError, "OpenSSL has no AES-256-CBC");
        return NULL;
    }
    if (PyType_Ready(&EngineType) < 0 || PyType_Ready(&ListenerType) < 0 || PyType_Ready(&ConnType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&EngineType);
    Py_INCREF(&ListenerType);
    Py_INCREF(&ConnType);
    if (PyModule_AddObject(m, "Engine", (PyObject *)&EngineType) < 0 ||
        PyModule_AddObject(m, "Listener", (PyObject *)&ListenerType) < 0 ||
        PyModule_AddObject(m, "TlsTransport", (PyObject *)&ConnType) < 0 ||
        PyModule_AddStringConstant(m, "OPENSSL_VERSION", OpenSSL_version(OPENSSL_VERSION)) < 0)
        return NULL;
    return m;
}
