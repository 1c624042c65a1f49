"""Hostile clients and the probe that checks a VM still answers, run inside the test namespace.

Each attack runs for at most `seconds` (argv), prints "started" once it is in full swing, and finally one
JSON document with what it saw. The probe is a separate process so the attack's own CPU use cannot delay it.
"""

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
ONE_BYTE = r'''
import json, socket, sys, time
ip, port, seconds, conns = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
gap = float(sys.argv[5]) / 1000
head = b"GET / HTTP/1.1\r\nHost: vm\r\nX-Pad: " + b"a" * 100000
socks = []
for _ in range(conns):
    s = socket.create_connection((ip, port), timeout=5)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    socks.append(s)
end = time.monotonic() + seconds
sent, closed, i = 0, 0, 0
while time.monotonic() < end and socks:
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
SLOW_HEADERS = r'''
import asyncio, json, sys, time
ip, port, seconds, conns, gap = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])

async def slow(i, end, ready):
    try:
        r, w = await asyncio.wait_for(asyncio.open_connection(ip, port), 10)
    except (OSError, asyncio.TimeoutError):
        ready.append(False)
        return False
    ready.append(True)
    try:
        w.write(b"GET / HTTP/1.1\r\nHost: vm\r\n")
        n = 0
        while time.monotonic() < end:
            await asyncio.sleep(gap)
            w.write(b"X-Slow-%d: %d\r\n" % (n, i))
            await w.drain()
            n += 1
        w.close()
        return True
    except OSError:
        return False

async def main():
    end = time.monotonic() + seconds
    ready = []
    tasks = [asyncio.create_task(slow(i, end, ready)) for i in range(conns)]
    while len(ready) < conns and time.monotonic() < end:
        await asyncio.sleep(0.05)
    await asyncio.sleep(6 * gap)   # a few lines on every connection: each one a segment the VM must hold
    print("started", flush=True)
    alive = await asyncio.gather(*tasks)
    print(json.dumps({"connected": sum(ready), "alive_to_the_end": sum(alive)}))

asyncio.run(main())
'''

# `conns` connections, each pipelining `n` requests for `/api/work?ms=10000`, read for `seconds`, then closed.
PIPELINED_WORK = r'''
import json, selectors, socket, sys, time
ip, port, seconds, conns, n = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
sel = selectors.DefaultSelector()
for _ in range(conns):
    s = socket.create_connection((ip, port), timeout=5)
    s.sendall(b"GET /api/work?ms=10000 HTTP/1.1\r\nHost: vm\r\n\r\n" * n)
    s.setblocking(False)
    sel.register(s, selectors.EVENT_READ)
print("started", flush=True)
end = time.monotonic() + seconds
data = b""
while time.monotonic() < end:
    for key, _ in sel.select(max(0.01, end - time.monotonic())):
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
# against `size` and the sha256 of the first one.
DOWNLOADS = r'''
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
    while time.monotonic() < end:
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
    end = time.monotonic() + seconds
    counts = {"ok": 0, "bad": 0, "errors": 0}
    digests, started = set(), []
    tasks = [asyncio.create_task(client(end, counts, digests, started)) for _ in range(conns)]
    while not started and time.monotonic() < end:
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
PIPELINE_NO_READ = r'''
import json, socket, sys, time
ip, port, seconds, conns, n, path = (sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]),
                                     int(sys.argv[5]), sys.argv[6])
end = time.monotonic() + seconds
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
time.sleep(max(0.0, end - time.monotonic()))
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
