"""HTTP basic auth from an htpasswd file (nginx's auth_basic and auth_basic_user_file).

Hashes: bcrypt ("$2y$", `htpasswd -B`, checked with the `bcrypt` package), apr1 ("$apr1$", `htpasswd -m`,
edge/apr1.py) and "{SHA}" (`htpasswd -s`, for old files). A line with any other hash is refused by
`ukproxy check` with its line number. nginx reads the file on every request; here it is read again when
its modification time changes, looked at most once a second. A bcrypt check costs milliseconds of the
worker's CPU (its cost factor), so credentials that passed are remembered (a digest of the header and
the stored hash, bounded): a client's next requests cost a dict lookup. A wrong password is checked
every time, as in nginx; limit_req runs before auth (docs/architecture.md, "The edge"), so a rate
limit bounds what guessing costs.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import importlib.util
import logging
import os
import time
from typing import Final

from ukproxy.edge.apr1 import MAGIC as APR1
from ukproxy.edge.apr1 import apr1_verify

log = logging.getLogger("ukproxy.edge")

# A venv made before bcrypt was a dependency lacks it: its lines are then refused by ukproxy check.
HAVE_BCRYPT: Final = importlib.util.find_spec("bcrypt") is not None

_REMEMBERED: Final = 4096  # credentials that passed, per worker and file
_RECHECK_EVERY: Final = 1.0  # seconds between two looks at the file's modification time
_BCRYPT = (b"$2y$", b"$2b$", b"$2a$")
_BCRYPT_MAX = 72  # bytes of a password bcrypt uses; the rest is ignored, as htpasswd does


class HtpasswdError(Exception):
    """An htpasswd file that cannot be used: the message names the line."""


def read_htpasswd(path: str) -> dict[bytes, bytes]:
    """user → stored hash. Blank lines and lines starting with '#' are skipped."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise HtpasswdError(f"cannot read {path}: {e.strerror}") from None
    users: dict[bytes, bytes] = {}
    for number, raw in enumerate(data.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(b"#"):
            continue
        user, sep, stored = line.partition(b":")
        stored = stored.split(b":", 1)[0]  # htdigest-style trailing fields are not ours; a comment field is
        if not sep or not user or not stored:
            raise HtpasswdError(f"{path} line {number}: expected user:hash")
        if not _known(stored):
            raise HtpasswdError(f"{path} line {number}: user {user.decode('latin-1')!r} has a hash ukproxy "
                                "cannot check (use bcrypt, htpasswd -B; or apr1, htpasswd -m)")
        if stored.startswith(_BCRYPT) and not HAVE_BCRYPT:
            raise HtpasswdError(f"{path} line {number}: a bcrypt hash, and the bcrypt package is not installed "
                                "(pip install bcrypt)")
        users[user] = stored
    if not users:
        raise HtpasswdError(f"{path} has no users")
    return users


def _known(stored: bytes) -> bool:
    if stored.startswith(_BCRYPT):
        return len(stored) == 60
    if stored.startswith(APR1):
        return stored.count(b"$") == 3
    return stored.startswith(b"{SHA}")


def verify(password: bytes, stored: bytes) -> bool:
    if stored.startswith(_BCRYPT) and HAVE_BCRYPT:
        import bcrypt  # here: a worker without auth_basic never loads it

        try:
            return bcrypt.checkpw(password[:_BCRYPT_MAX], stored)
        except ValueError:
            return False
    if stored.startswith(APR1):
        return apr1_verify(password, stored)
    if stored.startswith(b"{SHA}"):
        return hmac.compare_digest(b"{SHA}" + base64.b64encode(hashlib.sha1(password).digest()), stored)
    return False


class BasicAuth:
    """One realm and its users. `check(header)`: whether an Authorization header value lets the request in."""

    def __init__(self, realm: str, path: str):
        self.realm = realm
        self.path = path
        self.challenge = b'WWW-Authenticate: Basic realm="%s"\r\n' % realm.encode()
        self.users: dict[bytes, bytes] = {}
        self.passed: set[bytes] = set()
        self._mtime = -1.0
        self._looked_at = -_RECHECK_EVERY
        self._reload(time.monotonic())

    def check(self, authorization: bytes | None, now: float) -> bool:
        if authorization is None:
            return False
        if now - self._looked_at >= _RECHECK_EVERY:
            self._reload(now)
        remembered = hashlib.blake2b(authorization, digest_size=16).digest()
        if remembered in self.passed:
            return True
        scheme, _, token = authorization.strip().partition(b" ")
        if scheme.lower() != b"basic":
            return False
        try:
            user, sep, password = base64.b64decode(token.strip(), validate=True).partition(b":")
        except (binascii.Error, ValueError):
            return False
        stored = self.users.get(user)
        if not sep or stored is None or not verify(password, stored):
            return False
        if len(self.passed) >= _REMEMBERED:
            self.passed.clear()
        self.passed.add(remembered)
        return True

    def _reload(self, now: float) -> None:
        """Read the file again if it changed; a file that went bad keeps the users it had (and says so)."""
        self._looked_at = now
        try:
            mtime = os.stat(self.path).st_mtime
        except OSError as e:
            if self._mtime != -2.0:  # said once: the workers' user must be able to read the file to follow it
                log.warning("auth_basic: cannot look at %s (%s); keeping the users read before", self.path, e.strerror)
                self._mtime = -2.0
            return
        if mtime == self._mtime:
            return
        self._mtime = mtime
        try:
            self.users = read_htpasswd(self.path)
        except HtpasswdError as e:
            log.error("auth_basic: keeping the users read before: %s", e)
            return
        self.passed = set()  # a changed or removed password must not stay remembered
