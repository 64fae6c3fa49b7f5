"""Ctrl-C while the main thread waits in a database driver's C code.

Python runs its SIGINT handler only between bytecodes of the main thread, so a query running
inside C (DuckDB's execute) does not see Ctrl-C until it ends, which may be minutes later.
``on_ctrl_c`` has the signal wake a watcher thread through ``signal.set_wakeup_fd``: the watcher
cancels the query at once (DuckDB's ``interrupt``), and the main thread raises
KeyboardInterrupt as usual when the driver returns.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
from typing import Callable, Iterator


@contextlib.contextmanager
def on_ctrl_c(cancel: Callable[[], None]) -> Iterator[threading.Event]:
    """Call ``cancel()`` from another thread as soon as SIGINT arrives during the block; the
    event tells whether it did. Outside the main thread, or when SIGINT is ignored or left to
    the system, it does nothing (Python sees no signal there)."""
    interrupted = threading.Event()
    handler = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or not callable(handler):
        yield interrupted
        return
    reader, writer = socket.socketpair()
    writer.setblocking(False)
    try:
        previous = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    except (ValueError, OSError):  # e.g. an embedding that forbids it: Ctrl-C waits for the driver
        reader.close()
        writer.close()
        yield interrupted
        return

    def watch() -> None:
        while True:
            try:
                received = reader.recv(64)
            except OSError:
                return
            if not received:  # the block ended and closed the other end
                return
            if previous != -1:  # someone else (an asyncio loop) waits on signals too: pass them on
                with contextlib.suppress(OSError):
                    os.write(previous, received)
            if signal.SIGINT in received and not interrupted.is_set():
                interrupted.set()
                with contextlib.suppress(Exception):  # the query may have ended meanwhile
                    cancel()

    watcher = threading.Thread(target=watch, name="kpi-engine-ctrl-c", daemon=True)
    watcher.start()
    try:
        yield interrupted
    finally:
        signal.set_wakeup_fd(previous)
        writer.close()
        watcher.join(5)
        reader.close()
