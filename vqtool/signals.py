"""A stop request (SIGTERM, as a scheduler sends it) that cannot be lost.

The CLI's SIGTERM handler raises KeyboardInterrupt where the main thread happens to be;
raised inside a fork hook or a finalizer that swallows it, the run would go on. So the
handler also records the request here, long loops check it at their boundaries (a batch,
a task, a step), and the CLI turns a recorded request into exit status 130 even when
the exception itself was swallowed. Standard library only."""

from __future__ import annotations

import threading

_STOP = threading.Event()


def request_stop() -> None:
    _STOP.set()


def stop_requested() -> bool:
    return _STOP.is_set()


def check() -> None:
    """Raise KeyboardInterrupt if a stop was requested (at a loop's boundary)."""
    if _STOP.is_set():
        raise KeyboardInterrupt


def clear() -> None:
    _STOP.clear()
