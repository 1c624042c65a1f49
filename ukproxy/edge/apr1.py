"""Apache's "$apr1$" password hash (MD5-crypt with Apache's magic), as `htpasswd -m` writes it.

No well-kept package does it (passlib, the usual one, is unmaintained), and the algorithm is short and
fixed: Poul-Henning Kamp's md5crypt, 1000 rounds, with "$apr1$" in place of "$1$". Only for old
htpasswd files: bcrypt is what new ones should use.
"""

from __future__ import annotations

import hashlib
import hmac

MAGIC = b"$apr1$"
_ITOA64 = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
# The digest's bytes in the order the encoding takes them, three at a time (the last alone).
_GROUPS = ((0, 6, 12), (1, 7, 13), (2, 8, 14), (3, 9, 15), (4, 10, 5))


def apr1_hash(password: bytes, salt: bytes) -> bytes:
    """The full "$apr1$salt$digest" string for `password` (salt: at most 8 characters are used)."""
    salt = salt[:8]
    alternate = hashlib.md5(password + salt + password).digest()
    ctx = hashlib.md5(password + MAGIC + salt)
    n = len(password)
    while n > 0:
        ctx.update(alternate[: min(n, 16)])
        n -= 16
    n = len(password)
    while n:
        ctx.update(b"\0" if n & 1 else password[:1])
        n >>= 1
    digest = ctx.digest()
    for i in range(1000):  # the rounds that make it slow (by 1990s standards)
        step = hashlib.md5(password if i & 1 else digest)
        if i % 3:
            step.update(salt)
        if i % 7:
            step.update(password)
        step.update(digest if i & 1 else password)
        digest = step.digest()
    return MAGIC + salt + b"$" + _encode(digest)


def _encode(digest: bytes) -> bytes:
    out = bytearray()
    for a, b, c in _GROUPS:
        value = digest[a] << 16 | digest[b] << 8 | digest[c]
        for _ in range(4):
            out.append(_ITOA64[value & 0x3F])
            value >>= 6
    value = digest[11]
    for _ in range(2):
        out.append(_ITOA64[value & 0x3F])
        value >>= 6
    return bytes(out)


def apr1_verify(password: bytes, stored: bytes) -> bool:
    if not stored.startswith(MAGIC):
        return False
    salt = stored[len(MAGIC):].split(b"$", 1)[0]
    return hmac.compare_digest(apr1_hash(password, salt), stored)
