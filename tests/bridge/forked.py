"""Run a function in a forked child (to change its namespace or uid without touching the test process)."""

import os
import pickle
import select
import signal
import time
import traceback
from collections.abc import Callable
from typing import Any


class ChildFailed(Exception):
    pass


def call_in_fork(fn: Callable[..., Any], *args: Any, timeout: float = 30.0) -> Any:
    """fn(*args) in a child process; returns its (picklable) result or raises ChildFailed with its traceback."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        os.close(read_end)
        try:
            payload = pickle.dumps(("ok", fn(*args)))
        except BaseException:
            payload = pickle.dumps(("error", traceback.format_exc()))
        with os.fdopen(write_end, "wb") as out:
            out.write(payload)
        os._exit(0)
    os.close(write_end)
    chunks = []
    deadline = time.monotonic() + timeout
    try:
        with os.fdopen(read_end, "rb") as source:
            while True:
                ready, _, _ = select.select([source], [], [], max(0.0, deadline - time.monotonic()))
                if not ready:
                    raise ChildFailed(f"child did not finish within {timeout}s")
                chunk = os.read(source.fileno(), 65536)
                if not chunk:
                    break
                chunks.append(chunk)
    except BaseException:
        os.kill(pid, signal.SIGKILL)
        raise
    finally:
        os.waitpid(pid, 0)
    if not chunks:
        raise ChildFailed("child exited without a result")
    status, value = pickle.loads(b"".join(chunks))
    if status == "error":
        raise ChildFailed(value)
    return value
