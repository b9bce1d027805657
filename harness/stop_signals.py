"""SIGINT and SIGTERM, the signals that ask the harness to stop, and holding them back where a stop cannot land.

Low in the layers (no gevent): the backends start child processes inside `signals_held`; `harness.interrupts`
installs the handlers.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """SIGINT and SIGTERM wait while the block runs; one that arrived meanwhile is delivered as it ends.

    For code that must not be cut short. gevent's monkey-patching: interrupted, it leaves `threading` half
    patched, and the interpreter then waits forever at exit for a thread that does not exist. Starting a
    child process: a stop request raised inside `fork()`'s after-fork callbacks cuts one
    short, and the lock it was to release stays held (seen: logging's, after which the harness hung in a
    futex wait with both signals ignored). Keep the child in a variable inside the block, so the request
    that lands as the block ends finds it and stops it. The child inherits the mask: `prepare_child` (its
    preexec_fn) unblocks the signals again before it execs.
    """
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def unblock_stop_signals() -> None:
    """In a child started inside `signals_held`, before exec: take SIGINT and SIGTERM again."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
