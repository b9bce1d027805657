"""Closing a `websockets.sync` connection under gevent without closing a file its reader is still polling.

Every sync connection has a reader thread (a greenlet under gevent) blocked in `selectors` on the socket
and on a notifier socket. When the connection is closed from another greenlet (a close handshake that
timed out, an opening handshake that failed, `close()` at teardown), `close_socket()` writes the notifier
and closes both sockets at once, while the reader's gevent selector still has live libev watchers on
them. gevent documents that files must be unregistered before they are closed; libev aborts the whole
process when it later touches such a watcher ("libev: I/O watcher with invalid fd found in epoll_ctl",
seen once here at the end of a 120-account run against a throttled real gateway).

`install()` wraps `close_socket()`: called from any greenlet but the reader's, it first wakes the reader
through the notifier and gives it a moment to leave its selector and close the sockets itself (which it
does after its watchers are stopped), then runs the original, which is idempotent.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any

from websockets.sync.connection import Connection

READER_EXIT_WAIT_S = 1.0
_original_close_socket = Connection.close_socket


def _close_socket_after_the_reader(self: Any) -> None:
    reader = getattr(self, "recv_events_thread", None)
    if reader is not None and reader is not threading.current_thread() and reader.is_alive():
        with contextlib.suppress(OSError):
            self.shutdown_notifier.send(b"x")
        reader.join(READER_EXIT_WAIT_S)
    _original_close_socket(self)


def install() -> None:
    Connection.close_socket = _close_socket_after_the_reader  # type: ignore[method-assign]
