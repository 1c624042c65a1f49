"""Request ids: an X-Request-ID per request, made when absent (or kept from a trusted peer).

Made as nginx's $request_id is: 32 hex digits of randomness. Python's Mersenne Twister, seeded
from the system's randomness in each worker (a fresh interpreter), is random enough to tell
requests apart and costs no system call per request (os.urandom would). An id kept from a peer
must look like one (bounded, no spaces or quotes), so it cannot forge a line of the access log.
"""

from __future__ import annotations

import random
import re
from typing import Final

_random = random.Random()
_ACCEPTABLE = re.compile(rb"[A-Za-z0-9._:/+=@-]{1,200}")
HEADER: Final = "X-Request-ID"


def new_request_id() -> bytes:
    return b"%032x" % _random.getrandbits(128)


def acceptable(value: bytes | None) -> bool:
    """Whether an incoming id may be kept as it is."""
    return value is not None and _ACCEPTABLE.fullmatch(value) is not None
