/* The tcp proxy's relay in C: one engine per worker owns its client and upstream sockets from accept
 * to close and moves their bytes without Python. docs/architecture.md, "Native paths".
 *
 * The engine is an epoll instance of its own; the worker's event loop watches its fd and calls
 * Engine.poll once per wake-up, which serves every ready socket here (nested epoll: one Python-level
 * call per wake-up, not per socket or per chunk). Sockets are registered once, edge-triggered, and
 * each side remembers whether it is readable/writable until a read or write says otherwise, as
 * nginx's event flags do: no epoll_ctl after the first, and a close is the only deregistration.
 *
 * Python keeps every decision: a listener's callback gets each accepted connection (worker
 * connections, the balancer, VM pools) and calls Conn.connect for a server; the session object it
 * returns hears Session.connect_failed(errno) (to try the next server) and, once, Session.closed(...)
 * for metrics, passive health and the connection counts (ukproxy/proxy/tcp_native.py).
 *
 * Bytes are read into one scratch buffer per engine and written straight on; only what the other
 * side could not take is kept, at most one read's worth per direction, and its source is not read
 * again until it is gone (backpressure, bounded memory).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define SCRATCH_SIZE 65536
#define EVENTS_PER_POLL 256
#define ACCEPTS_PER_EVENT 64
#define TICK_NS 100000000L /* timeouts are checked every 100 ms while connections are open */

enum kind { K_LISTENER, K_SIDE, K_TIMER };
enum state { S_WAITING, S_CONNECTING, S_RELAYING, S_CLOSED };
/* why a connection ended, for Session.closed */
static const char *const REASONS[] = {"done", "idle", "error", "client_gone", "aborted"};
enum reason { R_DONE, R_IDLE, R_ERROR, R_CLIENT_GONE, R_ABORTED };

typedef struct Engine Engine;
typedef struct Conn Conn;

typedef struct {
    int kind; /* K_SIDE: first, as in every struct the epoll data points to */
    int fd;
    Conn *conn;
    unsigned readable : 1, writable : 1, hangup : 1;
} Side;

/* One direction's bytes the destination could not take yet. */
typedef struct {
    char *data;
    size_t len, off;
    unsigned eof : 1;  /* its source said EOF */
    unsigned done : 1; /* EOF passed on (or the pair ends with it) */
    unsigned long long bytes;
} Flow;

struct Conn {
    PyObject_HEAD
    Engine *engine; /* strong reference while open */
    PyObject *session;
    Side client, upstream;
    Flow up, down; /* client → upstream, upstream → client */
    int state;
    int half_close;
    double started, connect_started, connect_deadline, connect_time, idle_timeout, last_activity;
    Conn *prev, *next; /* the engine's open connections, for timeouts */
};

typedef struct {
    PyObject_HEAD
    int kind; /* K_LISTENER */
    int fd;
    int batch; /* accepts per wake-up: 1, or up to ACCEPTS_PER_EVENT with multi_accept */
    Engine *engine;
    PyObject *callback;
} Listening;

struct Engine {
    PyObject_HEAD
    int epfd;
    int timer_kind; /* K_TIMER: the timerfd's epoll data points here */
    int timerfd;
    int timer_armed;
    int in_poll;
    Py_ssize_t open;
    Conn head; /* sentinel of the open list (only prev/next used) */
    PyObject *graveyard; /* closed connections freed after the poll that closed them */
    char *scratch;
};

static PyTypeObject EngineType, ConnType, ListeningType;
static PyObject *str_connect_failed, *str_closed;
static PyObject *reason_names[5]; /* REASONS as interned str */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void report(void) { PyErr_WriteUnraisable(NULL); }

/* ---------------------------------------------------------------- timeouts */

static void arm_timer(Engine *e, int on) {
    if (on == e->timer_armed)
        return;
    struct itimerspec spec = {{0, on ? TICK_NS : 0}, {0, on ? TICK_NS : 0}};
    timerfd_settime(e->timerfd, 0, &spec, NULL);
    e->timer_armed = on;
}

/* ---------------------------------------------------------------- closing */

static void flow_clear(Flow *f) {
    PyMem_RawFree(f->data);
    f->data = NULL;
    f->len = f->off = 0;
}

static void close_side(Side *s) {
    if (s->fd >= 0) {
        close(s->fd); /* also leaves the epoll set: no one else holds the descriptor */
        s->fd = -1;
    }
    s->readable = s->writable = s->hangup = 0;
}

/* End the connection: both sockets closed, the session told once. Freed after the current poll. */
static void conn_close(Conn *c, int reason) {
    if (c->state == S_CLOSED)
        return;
    Engine *e = c->engine;
    if (c->state != S_RELAYING && c->client.fd >= 0) {
        /* Never relayed (no server could be reached): what the client sent is still unread, and a close
           with unread bytes is a reset. Read it away first (a bounded amount) so the client sees an
           orderly end, as on the Python path, which reads while it connects. */
        for (int i = 0; i < 16 && recv(c->client.fd, e->scratch, SCRATCH_SIZE, MSG_DONTWAIT) > 0; i++) {
        }
    }
    c->state = S_CLOSED;
    close_side(&c->client);
    close_side(&c->upstream);
    flow_clear(&c->up);
    flow_clear(&c->down);
    c->prev->next = c->next;
    c->next->prev = c->prev;
    c->prev = c->next = NULL;
    e->open--;
    if (e->open == 0)
        arm_timer(e, 0);
    PyObject *session = c->session;
    c->session = NULL;
    if (session != NULL) {
        PyObject *r = PyObject_CallMethodObjArgs(session, str_closed, reason_names[reason], NULL);
        if (r == NULL)
            report();
        Py_XDECREF(r);
        Py_DECREF(session);
    }
    /* The engine's reference, dropped after the poll in which it closed (events for it may follow). */
    if (e->in_poll) {
        if (PyList_Append(e->graveyard, (PyObject *)c) < 0)
            report();
    }
    Py_DECREF(c);
}

/* ---------------------------------------------------------------- relaying */

/* Move bytes src → dst as far as the sockets allow. Returns -1 when the pair must end (an error). */
static int pump(Conn *c, Side *src, Side *dst, Flow *f, double now) {
    Engine *e = c->engine;
    for (;;) {
        if (f->len) {
            if (!dst->writable)
                return 0;
            ssize_t w = send(dst->fd, f->data + f->off, f->len - f->off, MSG_NOSIGNAL);
            if (w < 0) {
                if (errno == EAGAIN || errno == EINTR) {
                    dst->writable = 0;
                    return 0;
                }
                return -1;
            }
            f->off += (size_t)w;
            if (f->off < f->len) {
                dst->writable = 0;
                return 0;
            }
            flow_clear(f);
        }
        if (f->eof) {
            if (!f->done) {
                f->done = 1;
                /* toward the upstream always; toward the client only when half_close says so (else
                   the pair ends, see conn_run) */
                if (dst == &c->upstream || c->half_close)
                    shutdown(dst->fd, SHUT_WR);
            }
            return 0;
        }
        if (!src->readable)
            return 0;
        ssize_t n = read(src->fd, e->scratch, SCRATCH_SIZE);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR) {
                src->readable = 0;
                return 0;
            }
            return -1;
        }
        if (n == 0) {
            f->eof = 1;
            src->readable = 0;
            continue;
        }
        f->bytes += (size_t)n;
        c->last_activity = now;
        /* A short read emptied the socket: wait for the next edge (unless a FIN is known to follow). */
        if (n < SCRATCH_SIZE && !src->hangup)
            src->readable = 0;
        ssize_t w = 0;
        if (dst->writable) {
            w = send(dst->fd, e->scratch, (size_t)n, MSG_NOSIGNAL);
            if (w < 0) {
                if (errno != EAGAIN && errno != EINTR)
                    return -1;
                w = 0;
            }
        }
        if (w < n) {
            dst->writable = 0;
            f->len = (size_t)(n - w);
            f->off = 0;
            f->data = PyMem_RawMalloc(f->len);
            if (f->data == NULL)
                return -1;
            memcpy(f->data, e->scratch + w, f->len);
            return 0;
        }
    }
}

static void conn_run(Conn *c, double now) {
    if (c->state != S_RELAYING)
        return;
    if (pump(c, &c->client, &c->upstream, &c->up, now) < 0 ||
        pump(c, &c->upstream, &c->client, &c->down, now) < 0) {
        conn_close(c, R_ERROR);
        return;
    }
    if (c->down.done && !c->down.len && (!c->half_close || c->up.done)) {
        conn_close(c, R_DONE); /* the upstream is done and so is the pair, or both ways are */
        return;
    }
    if (c->up.done && c->down.done && !c->up.len && !c->down.len)
        conn_close(c, R_DONE);
}

/* ---------------------------------------------------------------- connecting */

static void connect_failed(Conn *c, int err) {
    close_side(&c->upstream);
    c->state = S_WAITING;
    if (c->session == NULL) {
        conn_close(c, R_ERROR);
        return;
    }
    Py_INCREF(c); /* the session may close us */
    PyObject *code = PyLong_FromLong(err);
    PyObject *r = code == NULL ? NULL : PyObject_CallMethodObjArgs(c->session, str_connect_failed, code, NULL);
    Py_XDECREF(code);
    if (r == NULL) {
        report();
        conn_close(c, R_ERROR);
    }
    Py_XDECREF(r);
    Py_DECREF(c);
}

static void connect_finished(Conn *c, uint32_t ev, double now) {
    int err = 0;
    socklen_t len = sizeof(err);
    /* Writable without an error or hang-up is a connect that succeeded: SO_ERROR only for the reason. */
    if (ev & (EPOLLERR | EPOLLHUP)) {
        if (getsockopt(c->upstream.fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
            err = errno;
        if (!err)
            err = ECONNREFUSED;
    }
    if (err) {
        connect_failed(c, err);
        return;
    }
    c->state = S_RELAYING;
    c->connect_time = now - c->connect_started;
    c->last_activity = now;
    conn_run(c, now);
}

/* ---------------------------------------------------------------- events */

static void side_event(Side *s, uint32_t ev, double now) {
    Conn *c = s->conn;
    if (c->state == S_CLOSED || s->fd < 0)
        return;
    if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
        s->readable = 1;
    if (ev & (EPOLLRDHUP | EPOLLHUP))
        s->hangup = 1;
    if (ev & (EPOLLOUT | EPOLLERR | EPOLLHUP))
        s->writable = 1;
    if (s == &c->upstream && c->state == S_CONNECTING) {
        if (ev & (EPOLLOUT | EPOLLERR | EPOLLHUP))
            connect_finished(c, ev, now);
        return;
    }
    if (s == &c->client && c->state != S_RELAYING) {
        /* Not read before the upstream exists: the kernel holds its bytes. A reset client ends it now. */
        if (ev & (EPOLLERR | EPOLLHUP))
            conn_close(c, R_CLIENT_GONE);
        return;
    }
    conn_run(c, now);
}

static void check_timeouts(Engine *e, double now) {
    Conn *c = e->head.next;
    while (c != &e->head) {
        Conn *next = c->next; /* kept alive by the graveyard if a callback closes it too (we are in a poll) */
        if (c->state == S_CONNECTING && c->connect_deadline > 0 && now >= c->connect_deadline)
            connect_failed(c, ETIMEDOUT);
        else if (c->state == S_RELAYING && c->idle_timeout > 0 && now - c->last_activity >= c->idle_timeout)
            conn_close(c, R_IDLE);
        if (next != &e->head && next->state == S_CLOSED) /* closed meanwhile: start over (rare) */
            next = e->head.next;
        c = next;
    }
}

static Conn *conn_new(Engine *e, int fd, double now) {
    Conn *c = PyObject_New(Conn, &ConnType);
    if (c == NULL)
        return NULL;
    Py_INCREF(e);
    c->engine = e;
    c->session = NULL;
    c->client = (Side){K_SIDE, fd, c, 0, 0, 0};
    c->upstream = (Side){K_SIDE, -1, c, 0, 0, 0};
    memset(&c->up, 0, sizeof(Flow));
    memset(&c->down, 0, sizeof(Flow));
    c->state = S_WAITING;
    c->half_close = 1;
    c->started = c->last_activity = now;
    c->connect_started = c->connect_deadline = c->idle_timeout = 0;
    c->connect_time = -1;
    /* open: linked into the engine's list, the engine holding the reference made here */
    c->next = &e->head;
    c->prev = e->head.prev;
    e->head.prev->next = c;
    e->head.prev = c;
    e->open++;
    arm_timer(e, 1);
    return c;
}

/* A new client socket: registered, then handed to the listener's callback for its session. */
static void adopt_fd(Engine *e, int fd, PyObject *callback, double now) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    Conn *c = conn_new(e, fd, now);
    if (c == NULL) {
        close(fd);
        report();
        return;
    }
    struct epoll_event ev = {EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, {.ptr = &c->client}};
    if (epoll_ctl(e->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        report();
        conn_close(c, R_ERROR);
        return;
    }
    Py_INCREF(c);
    PyObject *session = PyObject_CallOneArg(callback, (PyObject *)c);
    if (session == NULL) {
        report();
        conn_close(c, R_ERROR);
    } else if (session == Py_None || c->state == S_CLOSED) {
        Py_DECREF(session);
        conn_close(c, R_ABORTED); /* refused (worker_connections), or closed by its own callback */
    } else if (c->session == NULL) {
        c->session = session; /* normally bound already, by the session itself (Conn.bind) */
    } else {
        Py_DECREF(session);
    }
    Py_DECREF(c);
}

static void accept_ready(Listening *l, double now) {
    Py_INCREF(l); /* a callback may drop the last reference */
    /* One by default, as nginx without multi_accept: the listener is level-triggered, so more pending
       come back at the next wake-up, and no accept4 is spent on finding the queue empty. */
    for (int i = 0; i < l->batch && l->fd >= 0; i++) {
        int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED) {
                PyErr_SetFromErrno(PyExc_OSError);
                report(); /* EMFILE and friends: the next wake-up tries again */
            }
            break;
        }
        adopt_fd(l->engine, fd, l->callback, now);
    }
    Py_DECREF(l);
}

/* ---------------------------------------------------------------- Engine */

static PyObject *Engine_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    if (!PyArg_ParseTuple(args, ":Engine"))
        return NULL;
    Engine *e = (Engine *)type->tp_alloc(type, 0);
    if (e == NULL)
        return NULL;
    e->epfd = e->timerfd = -1;
    e->timer_kind = K_TIMER;
    e->head.prev = e->head.next = &e->head;
    e->head.state = S_WAITING;
    e->graveyard = PyList_New(0);
    e->scratch = PyMem_RawMalloc(SCRATCH_SIZE);
    e->epfd = epoll_create1(EPOLL_CLOEXEC);
    e->timerfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (e->graveyard == NULL || e->scratch == NULL || e->epfd < 0 || e->timerfd < 0) {
        if (!PyErr_Occurred())
            PyErr_SetFromErrno(PyExc_OSError);
        Py_DECREF(e);
        return NULL;
    }
    struct epoll_event ev = {EPOLLIN, {.ptr = &e->timer_kind}};
    if (epoll_ctl(e->epfd, EPOLL_CTL_ADD, e->timerfd, &ev) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        Py_DECREF(e);
        return NULL;
    }
    return (PyObject *)e;
}

static void Engine_dealloc(Engine *e) {
    /* open connections hold the engine, so none is left here */
    if (e->epfd >= 0)
        close(e->epfd);
    if (e->timerfd >= 0)
        close(e->timerfd);
    Py_XDECREF(e->graveyard);
    PyMem_RawFree(e->scratch);
    Py_TYPE(e)->tp_free((PyObject *)e);
}

static PyObject *Engine_fileno(Engine *e, PyObject *unused) { return PyLong_FromLong(e->epfd); }

static PyObject *Engine_poll(Engine *e, PyObject *unused) {
    struct epoll_event events[EVENTS_PER_POLL];
    int n = epoll_wait(e->epfd, events, EVENTS_PER_POLL, 0);
    if (n < 0) {
        if (errno == EINTR)
            Py_RETURN_NONE;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    double now = now_s();
    e->in_poll = 1;
    for (int i = 0; i < n; i++) {
        int kind = *(int *)events[i].data.ptr;
        if (kind == K_SIDE) {
            side_event((Side *)events[i].data.ptr, events[i].events, now);
        } else if (kind == K_LISTENER) {
            Listening *l = (Listening *)((char *)events[i].data.ptr - offsetof(Listening, kind));
            accept_ready(l, now);
        } else {
            uint64_t ticks;
            if (read(e->timerfd, &ticks, sizeof(ticks)) < 0) { /* EAGAIN: nothing to do */
            }
            check_timeouts(e, now);
        }
    }
    e->in_poll = 0;
    if (PyList_GET_SIZE(e->graveyard)) {
        PyObject *dead = e->graveyard;
        e->graveyard = PyList_New(0);
        Py_DECREF(dead);
        if (e->graveyard == NULL)
            return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *Engine_listen(Engine *e, PyObject *args) {
    int fd, multi_accept = 0;
    PyObject *callback;
    if (!PyArg_ParseTuple(args, "iO|p:listen", &fd, &callback, &multi_accept))
        return NULL;
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    Listening *l = PyObject_New(Listening, &ListeningType);
    if (l == NULL)
        return NULL;
    l->kind = K_LISTENER;
    l->fd = fd;
    l->batch = multi_accept ? ACCEPTS_PER_EVENT : 1;
    Py_INCREF(e);
    l->engine = e;
    Py_INCREF(callback);
    l->callback = callback;
    struct epoll_event ev = {EPOLLIN, {.ptr = &l->kind}};
    if (epoll_ctl(e->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        l->fd = -1;
        Py_DECREF(l);
        return NULL;
    }
    return (PyObject *)l;
}

static PyObject *Engine_adopt(Engine *e, PyObject *args) {
    int fd;
    PyObject *callback;
    if (!PyArg_ParseTuple(args, "iO:adopt", &fd, &callback))
        return NULL;
    int flags = fcntl(fd, F_GETFL);
    if (flags >= 0)
        fcntl(fd, F_SETFL, flags | O_NONBLOCK);
    adopt_fd(e, fd, callback, now_s());
    Py_RETURN_NONE;
}

static PyObject *Engine_get_open(Engine *e, void *unused) { return PyLong_FromSsize_t(e->open); }

static PyMethodDef Engine_methods[] = {
    {"fileno", (PyCFunction)Engine_fileno, METH_NOARGS, "The engine's epoll fd, for loop.add_reader."},
    {"poll", (PyCFunction)Engine_poll, METH_NOARGS, "Serve every ready socket (epoll_wait with no wait)."},
    {"listen", (PyCFunction)Engine_listen, METH_VARARGS,
     "listen(fd, callback, multi_accept=False) -> Listening: accept on fd (owned from now on); "
     "callback(conn) -> session or None."},
    {"adopt", (PyCFunction)Engine_adopt, METH_VARARGS,
     "adopt(fd, callback): a client socket accepted elsewhere (owned from now on), as if accepted here."},
    {NULL}};

static PyGetSetDef Engine_getset[] = {
    {"open", (getter)Engine_get_open, NULL, "connections open now", NULL}, {NULL}};

static PyTypeObject EngineType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "ukproxy.native.tcp_relay.Engine",
    .tp_basicsize = sizeof(Engine),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "One worker's relay: an epoll set of its own, served by poll().",
    .tp_new = Engine_new,
    .tp_dealloc = (destructor)Engine_dealloc,
    .tp_methods = Engine_methods,
    .tp_getset = Engine_getset,
};

/* ---------------------------------------------------------------- Listening */

static PyObject *Listening_close(Listening *l, PyObject *unused) {
    if (l->fd >= 0) {
        close(l->fd);
        l->fd = -1;
    }
    Py_RETURN_NONE;
}

static void Listening_dealloc(Listening *l) {
    if (l->fd >= 0)
        close(l->fd);
    Py_XDECREF(l->engine);
    Py_XDECREF(l->callback);
    PyObject_Free(l);
}

static PyMethodDef Listening_methods[] = {
    {"close", (PyCFunction)Listening_close, METH_NOARGS, "Stop accepting: the listening fd is closed."}, {NULL}};

static PyTypeObject ListeningType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "ukproxy.native.tcp_relay.Listening",
    .tp_basicsize = sizeof(Listening),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A listening socket the engine accepts on.",
    .tp_dealloc = (destructor)Listening_dealloc,
    .tp_methods = Listening_methods,
};

/* ---------------------------------------------------------------- Conn */

static PyObject *Conn_bind(Conn *c, PyObject *session) {
    if (c->state == S_CLOSED) {
        PyErr_SetString(PyExc_RuntimeError, "connection closed");
        return NULL;
    }
    Py_INCREF(session);
    Py_XSETREF(c->session, session);
    Py_RETURN_NONE;
}

static PyObject *Conn_connect(Conn *c, PyObject *args) {
    const char *host;
    int port, half_close;
    double connect_timeout, idle_timeout;
    if (!PyArg_ParseTuple(args, "siddp:connect", &host, &port, &connect_timeout, &idle_timeout, &half_close))
        return NULL;
    if (c->state != S_WAITING) {
        PyErr_SetString(PyExc_RuntimeError, c->state == S_CLOSED ? "connection closed" : "already connected");
        return NULL;
    }
    struct sockaddr_storage addr;
    socklen_t len;
    memset(&addr, 0, sizeof(addr));
    struct sockaddr_in *a4 = (struct sockaddr_in *)&addr;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&addr;
    if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)port);
        len = sizeof(*a4);
    } else if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)port);
        len = sizeof(*a6);
    } else {
        return PyLong_FromLong(EDESTADDRREQ); /* not an address (tcp_native keeps names on tcp.py): a failed connect */
    }
    int fd = socket(addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return PyLong_FromLong(errno);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    c->half_close = half_close;
    c->idle_timeout = idle_timeout;
    c->connect_started = now_s();
    c->connect_deadline = connect_timeout > 0 ? c->connect_started + connect_timeout : 0;
    if (connect(fd, (struct sockaddr *)&addr, len) < 0 && errno != EINPROGRESS) {
        int err = errno;
        close(fd);
        return PyLong_FromLong(err);
    }
    c->upstream = (Side){K_SIDE, fd, c, 0, 0, 0};
    struct epoll_event ev = {EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, {.ptr = &c->upstream}};
    if (epoll_ctl(c->engine->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
        int err = errno;
        close_side(&c->upstream);
        return PyLong_FromLong(err);
    }
    c->state = S_CONNECTING; /* done (even at once, on loopback) when the socket says writable */
    return PyLong_FromLong(0);
}

static PyObject *Conn_cancel_connect(Conn *c, PyObject *unused) {
    if (c->state != S_CONNECTING)
        Py_RETURN_FALSE;
    close_side(&c->upstream);
    c->state = S_WAITING;
    Py_RETURN_TRUE;
}

static PyObject *Conn_close(Conn *c, PyObject *unused) {
    conn_close(c, R_ABORTED);
    Py_RETURN_NONE;
}

static PyObject *Conn_peername(Conn *c, PyObject *unused) {
    struct sockaddr_storage addr;
    socklen_t len = sizeof(addr);
    char text[INET6_ADDRSTRLEN];
    if (c->client.fd < 0 || getpeername(c->client.fd, (struct sockaddr *)&addr, &len) < 0)
        Py_RETURN_NONE;
    if (addr.ss_family == AF_INET) {
        struct sockaddr_in *a = (struct sockaddr_in *)&addr;
        inet_ntop(AF_INET, &a->sin_addr, text, sizeof(text));
        return Py_BuildValue("(si)", text, ntohs(a->sin_port));
    }
    if (addr.ss_family == AF_INET6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&addr;
        inet_ntop(AF_INET6, &a->sin6_addr, text, sizeof(text));
        return Py_BuildValue("(si)", text, ntohs(a->sin6_port));
    }
    Py_RETURN_NONE;
}

static void Conn_dealloc(Conn *c) {
    /* only closed connections get here: the engine holds open ones */
    Py_XDECREF(c->session);
    Py_XDECREF(c->engine);
    PyObject_Free(c);
}

static PyObject *Conn_get_bytes_in(Conn *c, void *u) { return PyLong_FromUnsignedLongLong(c->up.bytes); }
static PyObject *Conn_get_bytes_out(Conn *c, void *u) { return PyLong_FromUnsignedLongLong(c->down.bytes); }
static PyObject *Conn_get_connect_time(Conn *c, void *u) {
    if (c->connect_time < 0)
        Py_RETURN_NONE;
    return PyFloat_FromDouble(c->connect_time);
}
static PyObject *Conn_get_age(Conn *c, void *u) { return PyFloat_FromDouble(now_s() - c->started); }
static PyObject *Conn_get_closed(Conn *c, void *u) { return PyBool_FromLong(c->state == S_CLOSED); }

static PyMethodDef Conn_methods[] = {
    {"bind", (PyCFunction)Conn_bind, METH_O, "bind(session): who hears connect_failed and closed."},
    {"connect", (PyCFunction)Conn_connect, METH_VARARGS,
     "connect(host, port, connect_timeout, idle_timeout, half_close) -> 0 (under way) or an errno."},
    {"cancel_connect", (PyCFunction)Conn_cancel_connect, METH_NOARGS,
     "Abandon a connect under way (its server is gone): True if there was one."},
    {"close", (PyCFunction)Conn_close, METH_NOARGS, "End the connection now (Session.closed follows)."},
    {"peername", (PyCFunction)Conn_peername, METH_NOARGS, "The client's (host, port), or None."},
    {NULL}};

static PyGetSetDef Conn_getset[] = {
    {"bytes_received", (getter)Conn_get_bytes_in, NULL, "bytes from the client", NULL},
    {"bytes_sent", (getter)Conn_get_bytes_out, NULL, "bytes to the client", NULL},
    {"connect_time", (getter)Conn_get_connect_time, NULL, "seconds the upstream connect took, or None", NULL},
    {"age", (getter)Conn_get_age, NULL, "seconds since accept", NULL},
    {"closed", (getter)Conn_get_closed, NULL, "whether the connection has ended", NULL},
    {NULL}};

static PyTypeObject ConnType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "ukproxy.native.tcp_relay.Conn",
    .tp_basicsize = sizeof(Conn),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "One client connection and its upstream connection, relayed by the engine.",
    .tp_dealloc = (destructor)Conn_dealloc,
    .tp_methods = Conn_methods,
    .tp_getset = Conn_getset,
};

/* ---------------------------------------------------------------- module */

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "tcp_relay",
                                    "The tcp proxy's relay in C (docs/architecture.md, \"Native paths\").", -1};

PyMODINIT_FUNC PyInit_tcp_relay(void) {
    if (PyType_Ready(&EngineType) < 0 || PyType_Ready(&ConnType) < 0 || PyType_Ready(&ListeningType) < 0)
        return NULL;
    str_connect_failed = PyUnicode_InternFromString("connect_failed");
    str_closed = PyUnicode_InternFromString("closed");
    for (int i = 0; i < 5; i++)
        if ((reason_names[i] = PyUnicode_InternFromString(REASONS[i])) == NULL)
            return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&EngineType);
    if (PyModule_AddObject(m, "Engine", (PyObject *)&EngineType) < 0)
        return NULL;
    PyModule_AddIntConstant(m, "ETIMEDOUT", ETIMEDOUT);
    return m;
}
