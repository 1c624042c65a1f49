"""Session tickets whose keys every worker shares and the master rotates.

Python's ssl module has no ticket-key API, so the worker installs OpenSSL's ticket key callback
(SSL_CTX_set_tlsext_ticket_key_cb) with ctypes on each context's SSL_CTX. The master makes the keys
(`TicketKeyRing`) and hands them to workers over the control channel, at start (`Init.ticket_keys`)
and at each rotation (`TicketKeys`): so a ticket from one worker resumes on any other, and across a
reload. A rotation keeps the previous key for decryption only: a ticket stays good for one to two
rotation periods (and never past its own `ssl_session_timeout`); one under the previous key is
accepted and replaced by a fresh one. docs/architecture.md, "TLS".
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import ssl
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("ukproxy.tls")

KEY_BYTES = 80  # 16 name + 32 HMAC-SHA256 secret + 32 AES-256 key, OpenSSL's own layout


@dataclass(frozen=True)
class TicketKey:
    name: bytes  # 16 bytes, sent in the clear in the ticket: which key encrypted it
    hmac_secret: bytes  # 32
    aes_key: bytes  # 32

    @classmethod
    def new(cls) -> TicketKey:
        return cls.from_bytes(os.urandom(KEY_BYTES))

    @classmethod
    def from_bytes(cls, raw: bytes) -> TicketKey:
        if len(raw) != KEY_BYTES:
            raise ValueError(f"a ticket key is {KEY_BYTES} bytes, got {len(raw)}")
        return cls(raw[:16], raw[16:48], raw[48:])

    def to_bytes(self) -> bytes:
        return self.name + self.hmac_secret + self.aes_key


class TicketKeyRing:
    """The master's keys: the current one encrypts, the previous one still decrypts."""

    def __init__(self) -> None:
        self.current = TicketKey.new()
        self.previous: TicketKey | None = None

    def rotate(self) -> None:
        self.previous, self.current = self.current, TicketKey.new()

    def wire(self) -> list[str]:
        """For the control channel (JSON): hex, current first."""
        return [k.to_bytes().hex() for k in (self.current, self.previous) if k is not None]


def keys_from_wire(wire: list[str]) -> list[TicketKey]:
    return [TicketKey.from_bytes(bytes.fromhex(text)) for text in wire]


# OpenSSL, through ctypes

_SSL_CTRL_SET_TLSEXT_TICKET_KEY_CB = 72
_CB_TYPE = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                            ctypes.c_void_p, ctypes.c_int)
_IV_BYTES = 16  # AES-256-CBC, as OpenSSL's own ticket keys use


def _loaded_library(stem: str) -> str:
    """The path of the libssl/libcrypto that Python's _ssl runs on: the same copy, so the SSL_CTX fits."""
    with open("/proc/self/maps") as maps:
        for line in maps:
            path = line.rsplit(" ", 1)[-1].strip()
            if os.path.basename(path).startswith(stem + ".so"):
                return path
    raise OSError(f"{stem} is not loaded")


class _OpenSsl:
    def __init__(self) -> None:
        ssl_lib = ctypes.CDLL(_loaded_library("libssl"))
        crypto = ctypes.CDLL(_loaded_library("libcrypto"))
        self.callback_ctrl = ssl_lib.SSL_CTX_callback_ctrl
        self.callback_ctrl.argtypes = [ctypes.c_void_p, ctypes.c_int, _CB_TYPE]
        self.callback_ctrl.restype = ctypes.c_long
        self.set_timeout = ssl_lib.SSL_CTX_set_timeout
        self.set_timeout.argtypes = [ctypes.c_void_p, ctypes.c_long]
        self.set_timeout.restype = ctypes.c_long
        self.set_sid_ctx = ssl_lib.SSL_CTX_set_session_id_context
        self.set_sid_ctx.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_uint]
        self.get_options = ssl_lib.SSL_CTX_get_options
        self.get_options.argtypes = [ctypes.c_void_p]
        self.get_options.restype = ctypes.c_uint64
        self.rand_bytes = crypto.RAND_bytes
        self.rand_bytes.argtypes = [ctypes.c_void_p, ctypes.c_int]
        for name in ("EVP_EncryptInit_ex", "EVP_DecryptInit_ex"):
            fn = getattr(crypto, name)
            fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
        self.encrypt_init = crypto.EVP_EncryptInit_ex
        self.decrypt_init = crypto.EVP_DecryptInit_ex
        self.hmac_init = crypto.HMAC_Init_ex
        self.hmac_init.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
        crypto.EVP_aes_256_cbc.restype = ctypes.c_void_p
        crypto.EVP_sha256.restype = ctypes.c_void_p
        self.aes_256_cbc = crypto.EVP_aes_256_cbc()
        self.sha256 = crypto.EVP_sha256()


def ssl_ctx_pointer(context: ssl.SSLContext, openssl: _OpenSsl) -> int:
    """The SSL_CTX* inside a Python SSLContext: CPython's PySSLContext holds it right after the object
    header. Checked against the options Python reads from the same SSL_CTX, so a different layout is
    caught (and tickets stay off) rather than written through."""
    pointer = ctypes.c_void_p.from_address(id(context) + object.__basicsize__).value
    if not pointer or openssl.get_options(pointer) != context.options:
        raise OSError("cannot find the SSL_CTX of an SSLContext in this Python")
    return pointer


class SharedTicketKeys:
    """A worker's ticket keys, and OpenSSL's ticket key callback on every context that issues tickets."""

    def __init__(self, keys: list[TicketKey]) -> None:
        self.keys = keys  # current first
        self.by_name = {k.name: k for k in keys}
        self.failed = False
        try:
            self.openssl: _OpenSsl | None = _OpenSsl()
        except (OSError, AttributeError) as e:
            log.warning("session tickets shared between workers are off (each worker keeps its own): %s", e)
            self.openssl = None
        self._callback = _CB_TYPE(self._ticket_key)  # kept: OpenSSL holds only the C pointer
        # Others that issue tickets with these keys (the C TLS engine, tls/native.py), told of each rotation.
        self.followers: list[Callable[[list[TicketKey]], None]] = []

    def update(self, keys: list[TicketKey]) -> None:
        """A rotation from the master: new tickets under keys[0], older ones still read with the rest."""
        if keys:
            self.keys = keys
            self.by_name = {k.name: k for k in keys}
            for follow in self.followers:
                follow(keys)

    def follow(self, follower: Callable[[list[TicketKey]], None]) -> None:
        """Give `follower` the keys now and at each rotation."""
        self.followers.append(follower)
        follower(self.keys)

    def install(self, context: ssl.SSLContext, session_id_context: bytes, timeout: float) -> bool:
        """Issue and read tickets on `context` with the shared keys. `session_id_context` keeps one
        listener's sessions from resuming on another; `timeout` is a session's lifetime."""
        if self.openssl is None:
            return False
        try:
            pointer = ssl_ctx_pointer(context, self.openssl)
        except OSError as e:
            log.warning("session tickets shared between workers are off: %s", e)
            self.openssl = None
            return False
        sid = session_id_context[:32]  # SSL_MAX_SID_CTX_LENGTH
        self.openssl.set_sid_ctx(pointer, sid, len(sid))
        self.openssl.set_timeout(pointer, max(1, int(timeout)))
        self.openssl.callback_ctrl(pointer, _SSL_CTRL_SET_TLSEXT_TICKET_KEY_CB, self._callback)
        return True

    def _ticket_key(self, ssl_: int, key_name: int, iv: int, cipher_ctx: int, hmac_ctx: int, enc: int) -> int:
        """OpenSSL's callback. enc=1: choose the current key and a fresh IV for a new ticket (1 = done).
        enc=0: find the ticket's key by name (0 = unknown: a full handshake; 1 = good; 2 = good, but
        issue a new ticket under the current key)."""
        openssl = self.openssl
        if openssl is None:
            return 0
        try:
            if enc:
                key = self.keys[0]
                if openssl.rand_bytes(iv, _IV_BYTES) != 1:
                    return -1
                ctypes.memmove(key_name, key.name, 16)
                openssl.encrypt_init(cipher_ctx, openssl.aes_256_cbc, None, key.aes_key, iv)
                openssl.hmac_init(hmac_ctx, key.hmac_secret, 32, openssl.sha256, None)
                return 1
            found = self.by_name.get(ctypes.string_at(key_name, 16))
            if found is None:
                return 0
            openssl.hmac_init(hmac_ctx, found.hmac_secret, 32, openssl.sha256, None)
            openssl.decrypt_init(cipher_ctx, openssl.aes_256_cbc, None, found.aes_key, iv)
            return 1 if found is self.keys[0] else 2
        except Exception:  # never raise into OpenSSL: no ticket is better than a dead handshake
            if not self.failed:
                self.failed = True
                log.exception("session ticket key callback failed")
            return 0


def rotation_period(session_timeouts: list[float]) -> float:
    """How often the master rotates: the longest ssl_session_timeout of the TLS listeners (a ticket then
    outlives its own timeout, which OpenSSL enforces per listener); at least a second."""
    return max([1.0, *session_timeouts]) if session_timeouts else 300.0


class TicketKeyRotation:
    """The master's side: a ring rotated every `period()` seconds, each rotation told to every worker."""

    def __init__(self, period: Callable[[], float], tell: Callable[[list[str]], None]) -> None:
        self.ring = TicketKeyRing()
        self.period = period  # asked again each time: a reload may change it
        self.tell = tell
        self.rotations = 0
        self._timer: asyncio.TimerHandle | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._arm()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _arm(self) -> None:
        self._timer = self._loop.call_later(self.period(), self._rotate)

    def _rotate(self) -> None:
        self.ring.rotate()
        self.rotations += 1
        log.info("tls: session ticket keys rotated (%d), the previous key still reads older tickets", self.rotations)
        self.tell(self.ring.wire())
        self._arm()
