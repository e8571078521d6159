"""Keep Ray's known, harmless native log lines off the user's console (``-v`` shows
everything).

Ray's C++ core worker writes every ERROR-level log line straight to the process's
stderr (file descriptor 2), below Python's logging, so ``logging`` levels cannot hide
it. Ray Data (2.60) passes every actor pool's constructor arguments through the object
store, and the core worker then logs, once per actor, at ERROR level, that restarting
such an actor could fail if those objects were lost: a note about Ray's own design, not
about the user's run, which reads as a failure. ``filtered_native_stderr`` routes fd 2
through a pipe and a thread that drops the lines matching ``KNOWN_NOISE`` and passes
every other byte on unchanged, line by line, as soon as it arrives.

The cost: while the filter is on, what the process writes to fd 2 in the instant before
a hard crash (``abort``) may not reach the terminal. ``-v`` runs without the filter.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import threading
from collections.abc import Iterator

KNOWN_NOISE = re.compile(
    rb"core_worker\.cc:\d+: Actor with class name: .* has constructor arguments in the "
    rb"object store and max_restarts > 0"
)


def _pump(read_fd: int, write_fd: int, drop: re.Pattern[bytes]) -> None:
    with os.fdopen(read_fd, "rb", buffering=0) as source:
        pending = b""
        while chunk := source.read(65536):
            pending += chunk
            *lines, pending = pending.split(b"\n")
            kept = b"".join(line + b"\n" for line in lines if not drop.search(line))
            if kept and not _write(write_fd, kept):
                return
        if pending and not drop.search(pending):
            _write(write_fd, pending)


def _write(fd: int, data: bytes) -> bool:
    """Write all of ``data``; False once the real stderr is gone (the process exits)."""
    try:
        while data:
            data = data[os.write(fd, data) :]
    except OSError:
        return False
    return True


@contextlib.contextmanager
def filtered_native_stderr(drop: re.Pattern[bytes] = KNOWN_NOISE) -> Iterator[None]:
    """Within the block, lines written to fd 2 (by Python or native code) that match
    ``drop`` are discarded; everything else reaches the real stderr unchanged."""
    sys.stderr.flush()
    real_stderr = os.dup(2)
    read_fd, write_fd = os.pipe()
    os.dup2(write_fd, 2)
    os.close(write_fd)
    pump = threading.Thread(target=_pump, args=(read_fd, real_stderr, drop), daemon=True)
    pump.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(real_stderr, 2)  # closes this process's last write end: the pump drains
        pump.join(timeout=5)
        os.close(real_stderr)
