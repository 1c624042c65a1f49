"""Clients for the static service's tests, run inside the test namespace (see Netns.python / Netns.cmd).

SESSION is interactive: one JSON command per stdin line, one JSON answer per stdout line, over one
keep-alive connection that it reopens when the server closed it. DOWNLOADS fetches one path on N
connections at once.
"""

SESSION = r'''
import hashlib, json, socket, sys
ip, port = sys.argv[1], int(sys.argv[2])
sock, buf = None, b""

def recv_more():
    global buf
    chunk = sock.recv(65536)
    if not chunk:
        raise EOFError("server closed")
    buf += chunk

def take_until(sep):
    global buf
    while sep not in buf:
        recv_more()
    i = buf.index(sep) + len(sep)
    out, buf = buf[:i], buf[i:]
    return out

def take(n):
    global buf
    while len(buf) < n:
        recv_more()
    out, buf = buf[:n], buf[n:]
    return out

def response(method):
    head = take_until(b"\r\n\r\n").decode("latin-1")
    lines = head.split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        if line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    no_body = method == "HEAD" or status in (204, 304)
    body = b"" if no_body else take(int(headers.get("content-length", "0")))
    return {"status": status, "headers": headers, "len": len(body), "sha256": hashlib.sha256(body).hexdigest(),
            "body": body[:4096].decode("latin-1")}

for line in sys.stdin:
    cmd = json.loads(line)
    reused = sock is not None
    if sock is None:
        sock, buf = socket.create_connection((ip, port), timeout=30), b""
    answer = {"reused": reused, "responses": [], "closed": False}
    try:
        sock.sendall(bytes.fromhex(cmd["send"]))
        for method in cmd["methods"]:
            answer["responses"].append(response(method))
        last = answer["responses"][-1]["headers"] if answer["responses"] else {}
        if last.get("connection") == "close":
            sock.settimeout(10)
            while sock.recv(65536):
                pass
            answer["closed"] = True
    except (EOFError, OSError) as e:
        answer["error"] = repr(e)
        answer["closed"] = True
    if answer["closed"]:
        sock.close()
        sock = None
    print(json.dumps(answer), flush=True)
'''

DOWNLOADS = r'''
import asyncio, hashlib, json, sys, time
ip, port, n, path, bound = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], float(sys.argv[5])

async def one():
    started = time.monotonic()
    reader, writer = await asyncio.open_connection(ip, port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: vm\r\nConnection: close\r\n\r\n".encode())
    data = await reader.read()   # until the server closes
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return {"status": int(head.split(b" ")[1]), "sha256": hashlib.sha256(body).hexdigest(),
            "s": time.monotonic() - started}

async def bounded():
    try:
        return await asyncio.wait_for(one(), bound)
    except Exception as e:
        return {"error": repr(e)}

async def main():
    results = await asyncio.gather(*(bounded() for _ in range(n)))
    ok = [r for r in results if "error" not in r]
    times = sorted(r["s"] for r in ok)
    print(json.dumps({
        "errors": [r["error"] for r in results if "error" in r],
        "statuses": sorted({r["status"] for r in ok}),
        "sha256": sorted({r["sha256"] for r in ok}),
        "median_s": times[len(times) // 2] if times else None,
        "max_s": times[-1] if times else None,
    }))

asyncio.run(main())
'''

# N clients ask for a large file and stop reading once it starts; then a fresh client downloads a 64 KiB
# file (bounded by `bound` seconds). Reports its answer.
SLOW_READERS = r'''
import json, socket, sys, time
ip, port, n, bound = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
slow = []
for _ in range(n):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)   # a small window that fills at once
    s.settimeout(bound)
    s.connect((ip, port))
    s.sendall(b"GET /big.bin HTTP/1.1\r\nHost: vm\r\n\r\n")
    slow.append(s)
for s in slow:
    s.recv(1)   # its answer has started; it reads nothing more
started = time.monotonic()
fresh = socket.create_connection((ip, port), timeout=bound)
fresh.sendall(b"GET /f64k.bin HTTP/1.1\r\nHost: vm\r\nConnection: close\r\n\r\n")
data, done = b"", True
try:
    while chunk := fresh.recv(65536):
        data += chunk
except OSError:
    done = False
took = time.monotonic() - started
for s in slow:
    s.close()
head, _, body = data.partition(b"\r\n\r\n")
print(json.dumps({"done": done, "status": head.split(b" ")[1].decode() if head else None, "len": len(body),
                  "took": took}))
'''

# Random request heads built from hostile pieces (odd methods and targets, repeated and malformed
# conditional and range fields, bare CR/LF, NULs, oversized fields), `n` of them on `workers` threads;
# each connection sends 1-3 of them pipelined, maybe half-closes, and reads until the server closes or
# goes quiet. Reports every status line seen and whether any body held `secret`.
FUZZ = r'''
import json, random, socket, sys, threading
ip, port, n, workers, seed, secret = (sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]),
                                      int(sys.argv[5]), sys.argv[6].encode())
METHODS = [b"GET", b"HEAD", b"POST", b"PUT", b"OPTIONS", b"G\x00T", b"", b"GET GET", b"get", b"DELETE"]
PIECES = [b"/", b"..", b".", b"%2e", b"%2f", b"%5c", b"%00", b"%", b"%zz", b"%c0%ae", b"a", b"docs", b"small.txt",
          b"f64k.bin", b"index.html", b"escape", b"linkdir", b"fifo", b"outside", b"secret.txt", b"?", b"#", b"\\",
          b"%ff", b"\xff", b" ", b"~", b"//", b"%25", b";", b"*"]
FIELDS = [b"Host: vm", b"Host: vm", b"Range: bytes=", b"Range: bytes=-", b"Range: bytes=0-", b"If-None-Match: ",
          b"If-Modified-Since: ", b"If-Range: ", b"Connection: close", b"Connection: keep-alive",
          b"Content-Length: ", b"Transfer-Encoding: chunked", b"X-Pad: ", b" folded", b"NoColon", b": empty"]
VALUES = [b"", b"0", b"1", b"-1", b"99999999999999999999999", b"*", b'"x"', b'W/"x"', b"Sun, 06 Nov 1994 08:49:37 GMT",
          b"garbage", b"0-1,2-3", b"\r", b"\x00", b"a" * 3000, b"bytes=0-0"]
VERSIONS = [b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.x", b"", b"http/1.1"]
lock = threading.Lock()
statuses, leaked, errors = {}, [], []

def head(rng):
    target = b"/" + b"".join(rng.choice(PIECES) for _ in range(rng.randrange(0, 8)))
    if rng.random() < 0.3:
        target = rng.choice([b"/", b"/small.txt", b"/docs/", b"/docs", b"/f64k.bin", b"/data.json?x=1"])
    elif rng.random() < 0.05:
        target = b"/" + b"a" * rng.choice([2040, 2049, 5000, 9000])
    lines = [rng.choice(METHODS) + b" " + target + b" " + rng.choice(VERSIONS)]
    for _ in range(rng.randrange(0, 6)):
        f = rng.choice(FIELDS)
        lines.append(f + rng.choice(VALUES) if f.endswith((b": ", b"=", b"-")) else f)
    sep = rng.choice([b"\r\n", b"\r\n", b"\r\n", b"\n", b"\r"])
    return sep.join(lines) + b"\r\n\r\n"

def run(wid):
    rng = random.Random(seed * 1000 + wid)
    for _ in range(n // workers):
        payload = b"".join(head(rng) for _ in range(rng.randrange(1, 4)))
        try:
            s = socket.create_connection((ip, port), timeout=10)
            s.settimeout(3)
            s.sendall(payload)
            if rng.random() < 0.5:
                try:
                    s.shutdown(socket.SHUT_WR)
                except OSError:
                    pass   # the server answered and closed (a reset, with our unread requests) first
            data = b""
            try:
                while chunk := s.recv(65536):
                    data += chunk
            except (socket.timeout, ConnectionResetError):
                pass
            s.close()
        except OSError as e:
            with lock:
                errors.append(repr(e))
            continue
        with lock:
            for line in data.split(b"\r\n"):
                if line.startswith(b"HTTP/"):
                    key = line[:12].decode("latin-1")
                    statuses[key] = statuses.get(key, 0) + 1
            if secret in data:
                leaked.append(payload.decode("latin-1"))

threads = [threading.Thread(target=run, args=(w,)) for w in range(workers)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(json.dumps({"statuses": statuses, "leaked": leaked[:3], "errors": errors[:5], "n_errors": len(errors)}))
'''
