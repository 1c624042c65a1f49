"""Client programs run inside the test namespace with `ip netns exec` (see Netns.python).

Each is a self-contained script: argv in, one JSON document out on stdout.
"""

RAW = r'''
import json, socket, sys
ip, port, payload = sys.argv[1], int(sys.argv[2]), bytes.fromhex(sys.argv[3])
s = socket.create_connection((ip, port), timeout=20)
s.sendall(payload)
if len(sys.argv) > 4 and sys.argv[4] == "shut":
    s.shutdown(socket.SHUT_WR)
data = b""
try:
    while chunk := s.recv(65536):
        data += chunk
    closed = True
except socket.timeout:
    closed = False
print(json.dumps({"data": data.decode("latin-1"), "closed": closed}))
'''

# Opens N connections first, checks the server counts them all, then uses each one.
CONCURRENT = r'''
import asyncio, json, sys
ip, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])

async def get(reader, writer, path):
    writer.write(f"GET {path} HTTP/1.1\r\nHost: vm\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    body = await reader.readexactly(length)
    return head.split(b" ")[1].decode(), body

async def main():
    conns = await asyncio.wait_for(
        asyncio.gather(*(asyncio.open_connection(ip, port) for _ in range(n))), 60)
    info_status, info = await get(*conns[0], "/api/info")
    results = await asyncio.wait_for(asyncio.gather(*(get(r, w, "/static/small.txt") for r, w in conns)), 60)
    for _, w in conns:
        w.close()
    print(json.dumps({"info": json.loads(info), "statuses": [s for s, _ in results],
                      "sizes": [len(b) for _, b in results]}))

asyncio.run(main())
'''

# N sequential requests over keep-alive sessions that are renewed every `per_conn`
# requests, so the server sees both reuse and churn; free heap read before and after.
SEQUENTIAL = r'''
import asyncio, json, sys
import aiohttp
ip, port, n, per_conn = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
base = f"http://{ip}:{port}"

async def info():
    async with aiohttp.ClientSession() as s, s.get(base + "/api/info") as r:
        return await r.json()

async def main():
    before = await info()
    done = bad = 0
    paths = ["/", "/health", "/static/index.html", "/static/small.txt", "/api/info"]
    while done < n:
        conn = aiohttp.TCPConnector(limit=1)
        async with aiohttp.ClientSession(connector=conn) as s:
            for _ in range(min(per_conn, n - done)):
                async with s.get(base + paths[done % len(paths)]) as r:
                    await r.read()
                    bad += r.status != 200
                done += 1
    # Closing connections may hold a segment until their last ACK: settle, bounded.
    for _ in range(20):
        await asyncio.sleep(0.5)
        after = await info()
        if after["free_heap"] == before["free_heap"] and after["connections"] == 1:
            break
    print(json.dumps({"before": before, "after": after, "done": done, "bad": bad}))

asyncio.run(main())
'''

ECHO = r'''
import asyncio, hashlib, json, os, sys
ip, port, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
pause = float(sys.argv[4]) if len(sys.argv) > 4 else 0.0   # seconds before reading starts

async def main():
    payload = os.urandom(size)
    reader, writer = await asyncio.open_connection(ip, port)
    async def send():
        for i in range(0, size, 65536):
            writer.write(payload[i:i + 65536])
            await writer.drain()
        writer.write_eof()
    sender = asyncio.create_task(send())
    await asyncio.sleep(pause)
    got = await asyncio.wait_for(reader.read(-1), 60)   # until the server closes after our EOF
    await sender
    writer.close()
    print(json.dumps({"sent": hashlib.sha256(payload).hexdigest(), "got": hashlib.sha256(got).hexdigest(),
                      "len": len(got)}))

asyncio.run(main())
'''

# Prints "listening", then waits for a gratuitous ARP (sender IP == target IP == argv[1]) on br0.
GARP = r'''
import json, socket, struct, sys, time
ip = socket.inet_aton(sys.argv[1])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0806))
s.bind(("br0", 0))
s.settimeout(20)
print("listening", flush=True)
try:
    while True:
        frame = s.recv(2048)
        arp = frame[14:42]
        sender_mac, sender_ip, target_ip = arp[8:14], arp[14:18], arp[24:28]
        if sender_ip == ip and target_ip == ip:
            print(json.dumps({"mac": sender_mac.hex(":"), "op": struct.unpack("!H", arp[6:8])[0]}))
            break
except socket.timeout:
    print(json.dumps({"mac": None}))
'''

# One ICMP echo request, raw socket (no ping binary needed); prints whether the reply came back.
PING = r'''
import json, os, socket, struct, sys
ip = sys.argv[1]

def csum(b):
    b += b"\0" * (len(b) % 2)
    s = sum(struct.unpack(f"!{len(b) // 2}H", b))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF

s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
s.settimeout(5)
ident, payload = os.getpid() & 0xFFFF, b"ukproxy-ping"
hdr = struct.pack("!BBHHH", 8, 0, 0, ident, 1)
s.sendto(struct.pack("!BBHHH", 8, 0, csum(hdr + payload), ident, 1) + payload, (ip, 0))
ok = False
try:
    while not ok:
        data, addr = s.recvfrom(2048)
        icmp = data[(data[0] & 0x0F) * 4:]
        ok = addr[0] == ip and icmp[0] == 0 and icmp[4:6] == struct.pack("!H", ident) and icmp[8:] == payload
except socket.timeout:
    pass
print(json.dumps({"reply": ok}))
'''

# Connects N times from one fixed source port, each time asking the server to close
# first (so the server holds the 4-tuple in TIME-WAIT when the next SYN comes).
SAME_PORT = r'''
import json, socket, sys, time
ip, port, src, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
out = []
for _ in range(n):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", src))
    s.settimeout(5)
    started = time.monotonic()
    try:
        s.connect((ip, port))
        s.sendall(b"GET /health HTTP/1.1\r\nHost: vm\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(4096):
            data += chunk
        out.append({"ok": data.startswith(b"HTTP/1.1 200"), "s": round(time.monotonic() - started, 3)})
    except OSError as e:
        out.append({"ok": False, "error": repr(e), "s": round(time.monotonic() - started, 3)})
    finally:
        s.close()
    time.sleep(0.1)
print(json.dumps(out))
'''
