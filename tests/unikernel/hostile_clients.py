"""Hostile clients and the probe that checks a VM still answers, run inside the test namespace, and
`under_attack`, the one way the tests run them.

Each attack runs for at most `seconds` (argv), prints "started" once it is in full swing, and finally one
JSON document with what it saw. SIGUSR1 ends it early, winding down as at its deadline: the tests send it
once their probes are in, so an attack lasts as long as the probes need, and `seconds` is only a bound.
The probe is a separate process so the attack's own CPU use cannot delay it.
"""

from __future__ import annotations

import json
import select
import signal
import subprocess
from collections.abc import Callable

# The attacks' clock: `running()` until `seconds` after `start_clock`, or until SIGUSR1 arrives.
_CLOCK = r'''
import signal as _signal, time as _time
_end = [0.0]
def start_clock(seconds):
    _end[0] = _time.monotonic() + seconds
def running():
    return _time.monotonic() < _end[0]
def left():
    return max(0.0, _end[0] - _time.monotonic())
_signal.signal(_signal.SIGUSR1, lambda *_: _end.__setitem__(0, 0.0))
'''

# Fresh connections, one at a time: each must get `GET /health` answered with a 200 within `limit` seconds.
PROBE = r'''
import json, socket, sys, time
ip, port, n, gap, limit = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
out = []
for i in range(n):
    started = time.monotonic()
    try:
        s = socket.create_connection((ip, port), timeout=limit)
        s.settimeout(max(0.01, limit - (time.monotonic() - started)))
        s.sendall(b"GET /health HTTP/1.1\r\nHost: vm\r\nConnection: close\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data:
            s.settimeout(max(0.01, limit - (time.monotonic() - started)))
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        s.close()
        out.append({"status": data[9:12].decode("latin-1"), "s": round(time.monotonic() - started, 3)})
    except OSError as e:
        out.append({"status": None, "error": repr(e), "s": round(time.monotonic() - started, 3)})
    time.sleep(gap)
print(json.dumps(out))
'''

# One connection (or `conns`) sending a request head that never ends, one byte per segment
# (TCP_NODELAY), `gap_ms` apart.
ONE_BYTE = _CLOCK + r'''
import json, socket, sys, time
ip, port, seconds, conns = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
gap = float(sys.argv[5]) / 1000
head = b"GET / HTTP/1.1\r\nHost: vm\r\nX-Pad: " + b"a" * 100000
socks = []
for _ in range(conns):
    s = socket.create_connection((ip, port), timeout=5)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    socks.append(s)
start_clock(seconds)
sent, closed, i = 0, 0, 0
while running() and socks:
    for s in list(socks):
        try:
            s.send(head[i:i + 1])
            sent += 1
        except OSError:
            socks.remove(s)
            closed += 1
    i += 1
    if i == 200:
        print("started", flush=True)
    time.sleep(gap)
for s in socks:
    s.close()
print(json.dumps({"bytes": sent, "closed_by_vm": closed}))
'''

# `conns` connections that each send a request line and then one header line every `gap` seconds;
# "started" once every connection has sent a few.
SLOW_HEADERS = _CLOCK + r'''
import asyncio, json, sys, time
ip, port, seconds, conns, gap = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])

async def slow(i, ready):
    try:
        r, w = await asyncio.wait_for(asyncio.open_connection(ip, port), 10)
    except (OSError, asyncio.TimeoutError):
        ready.append(False)
        return False
    ready.append(True)
    try:
        w.write(b"GET / HTTP/1.1\r\nHost: vm\r\n")
        n = 0
        while running():
            await asyncio.sleep(gap)
            w.write(b"X-Slow-%d: %d\r\n" % (n, i))
            await w.drain()
            n += 1
        w.close()
        return True
    except OSError:
        return False

async def main():
    start_clock(seconds)
    ready = []
    tasks = [asyncio.create_task(slow(i, ready)) for i in range(conns)]
    while len(ready) < conns and running():
        await asyncio.sleep(0.05)
    await asyncio.sleep(6 * gap)   # a few lines on every connection: each one a segment the VM must hold
    print("started", flush=True)
    alive = await asyncio.gather(*tasks)
    print(json.dumps({"connected": sum(ready), "alive_to_the_end": sum(alive)}))

asyncio.run(main())
'''

# `conns` connections, each pipelining `n` requests for `/api/work?ms=10000`, read for `seconds`, then closed.
PIPELINED_WORK = _CLOCK + r'''
import json, selectors, socket, sys, time
ip, port, seconds, conns, n = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
sel = selectors.DefaultSelector()
for _ in range(conns):
    s = socket.create_connection((ip, port), timeout=5)
    s.sendall(b"GET /api/work?ms=10000 HTTP/1.1\r\nHost: vm\r\n\r\n" * n)
    s.setblocking(False)
    sel.register(s, selectors.EVENT_READ)
start_clock(seconds)
print("started", flush=True)
data = b""
while running():
    for key, _ in sel.select(max(0.01, min(0.1, left()))):
        try:
            chunk = key.fileobj.recv(65536)
        except OSError:
            chunk = b""
        if not chunk:
            sel.unregister(key.fileobj)
        data += chunk
for key in list(sel.get_map().values()):
    key.fileobj.close()
print(json.dumps({"answers": data.count(b"HTTP/1.1 200")}))
'''

# `conns` clients, each downloading `path` over and over on a fresh connection for `seconds`;
# mss > 0 sets TCP_MAXSEG before connecting, so the SYN offers that MSS. Every body is checked
# against `size` and the sha256 of the first one. Stopped early, a client that has no whole download
# yet goes on until it has one (or `seconds` pass): each client still counts.
DOWNLOADS = _CLOCK + r'''
import asyncio, hashlib, json, socket, sys, time
ip, port, seconds, conns, path, size, mss = (sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]),
                                            sys.argv[5], int(sys.argv[6]), int(sys.argv[7]))

async def fetch():
    s = socket.socket()
    if mss:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, mss)
    s.setblocking(False)
    await asyncio.get_running_loop().sock_connect(s, (ip, port))
    r, w = await asyncio.open_connection(sock=s)
    w.write(f"GET {path} HTTP/1.1\r\nHost: vm\r\nConnection: close\r\n\r\n".encode())
    data = await r.read()
    w.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return head[9:12], body

async def client(end, counts, digests, started):
    first = True
    while running() or (first and time.monotonic() < end):
        try:
            status, body = await asyncio.wait_for(fetch(), 30)
        except (OSError, asyncio.TimeoutError):
            counts["errors"] += 1
            continue
        ok = status == b"200" and len(body) == size
        counts["ok" if ok else "bad"] += 1
        digests.add(hashlib.sha256(body).hexdigest())
        if first:
            first = False
            started.append(1)

async def main():
    start_clock(seconds)
    end = time.monotonic() + seconds
    counts = {"ok": 0, "bad": 0, "errors": 0}
    digests, started = set(), []
    tasks = [asyncio.create_task(client(end, counts, digests, started)) for _ in range(conns)]
    while not started and running():
        await asyncio.sleep(0.05)
    print("started", flush=True)
    await asyncio.gather(*tasks)
    print(json.dumps({**counts, "digests": sorted(digests)}))

asyncio.run(main())
'''

# Connects, sends `payload` (hex), reads until the VM closes or `limit` seconds pass.
WAIT_CLOSE = r'''
import json, socket, sys, time
ip, port, payload, limit = sys.argv[1], int(sys.argv[2]), bytes.fromhex(sys.argv[3]), float(sys.argv[4])
s = socket.create_connection((ip, port), timeout=5)
s.sendall(payload)
started = time.monotonic()
data, how = b"", "open"
while time.monotonic() - started < limit:
    s.settimeout(max(0.01, limit - (time.monotonic() - started)))
    try:
        chunk = s.recv(65536)
    except socket.timeout:
        break
    except ConnectionResetError:
        how = "reset"
        break
    if not chunk:
        how = "fin"
        break
    data += chunk
print(json.dumps({"data": data.decode("latin-1"), "closed": how, "s": round(time.monotonic() - started, 3)}))
'''

# Opens `n` idle connections one by one (0.1 s apart), then checks which of them the VM has closed
# after one more connection was served.
IDLE_THEN_ONE_MORE = r'''
import json, socket, sys, time
ip, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
idle = []
for _ in range(n):
    idle.append(socket.create_connection((ip, port), timeout=5))
    time.sleep(0.1)
s = socket.create_connection((ip, port), timeout=5)
s.sendall(b"GET /health HTTP/1.1\r\nHost: vm\r\nConnection: close\r\n\r\n")
answer = b""
while chunk := s.recv(4096):
    answer += chunk
closed = []
for i, c in enumerate(idle):
    c.settimeout(5 if i == 0 else 0.2)   # the oldest is the one to go; the others stay open
    try:
        closed.append(c.recv(1) == b"")
    except socket.timeout:
        closed.append(False)
    except ConnectionResetError:
        closed.append(True)
print(json.dumps({"answer": answer[:12].decode("latin-1"), "closed": closed}))
'''

# `conns` connections that each pipeline `n` requests for `path` and never read a byte of the answers.
PIPELINE_NO_READ = _CLOCK + r'''
import json, socket, sys, time
ip, port, seconds, conns, n, path = (sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]),
                                     int(sys.argv[5]), sys.argv[6])
start_clock(seconds)
req = f"GET {path} HTTP/1.1\r\nHost: vm\r\n\r\n".encode() * n
socks, queued = [], 0
for _ in range(conns):
    s = socket.create_connection((ip, port), timeout=5)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.setblocking(False)
    try:
        queued += s.send(req)
    except BlockingIOError:
        pass
    socks.append(s)
print("started", flush=True)
while running():
    time.sleep(0.05)
for s in socks:
    s.close()
print(json.dumps({"conns": len(socks), "bytes_sent": queued}))
'''

# Keeps `n` connections busy with /api/work, then tries one more connection and reports how it ended.
FULL_OF_BUSY = r'''
import json, socket, sys, time
ip, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
busy = []
for _ in range(n):
    s = socket.create_connection((ip, port), timeout=5)
    s.sendall(b"GET /api/work?ms=4000 HTTP/1.1\r\nHost: vm\r\n\r\n")
    busy.append(s)
time.sleep(0.5)
s = socket.create_connection((ip, port), timeout=5)
how, data = "open", b""
try:
    s.sendall(b"GET /health HTTP/1.1\r\nHost: vm\r\n\r\n")
    data = s.recv(4096)
    how = "fin" if not data else "answered"
except ConnectionResetError:
    how = "reset"
except socket.timeout:
    how = "timeout"
answers = []
for b in busy:
    b.settimeout(20)
    answers.append(b.recv(4096)[:12].decode("latin-1"))
print(json.dumps({"extra": how, "busy_answers": answers}))
'''


def under_attack(attack_argv: list[str], probe: Callable[[], list[dict]], seconds: float) -> tuple[list[dict], dict]:
    """Starts the attack (`attack_argv`, bounded by `seconds`), calls `probe` once it is in full swing, then
    stops it (SIGUSR1) and returns the probes and the attack's report. The attack must still have been
    running when the probes were done, unless they already failed (then that is what the test reports)."""
    attack = subprocess.Popen(attack_argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert attack.stdout
        ready, _, _ = select.select([attack.stdout], [], [], seconds + 10)
        assert ready, "the attack never got going"
        assert attack.stdout.readline().strip() == "started", attack.stderr.read() if attack.stderr else ""
        probes = probe()
        still_running = attack.poll() is None
        if still_running:
            attack.send_signal(signal.SIGUSR1)
        out, err = attack.communicate(timeout=seconds + 60)
    finally:
        if attack.poll() is None:
            attack.kill()
            attack.wait()
    answered = all(p["status"] == "200" for p in probes)
    assert still_running or not answered, f"the attack ended before the probes did: lengthen its {seconds} s"
    assert attack.returncode == 0, err
    return probes, json.loads(out.strip().splitlines()[-1])
