"""Ctrl-C reaches the main greenlet, whichever greenlet happens to be running when it arrives.

Under gevent's monkey-patching a `threading.Thread` is a greenlet on the main thread, and Python runs a
signal handler in whatever code is running at that moment. The default SIGINT handler raises
KeyboardInterrupt right there: in a patched thread, `Thread.run`'s own `except` catches it, prints
"Exception in thread ..." and the thread dies, while the run goes on to its end as if Ctrl-C had not been
pressed (seen: the real gateway's socket watcher took it, about one Ctrl-C in eight). The handler below
raises it in the main greenlet instead, the way gevent's hub passes on a KeyboardInterrupt from a spawned
greenlet; the greenlet that was interrupted carries on.
"""

from __future__ import annotations

import signal
from types import FrameType

import gevent


def deliver_ctrl_c_to_main_greenlet() -> None:
    """Install the SIGINT handler; call it from the main greenlet of the main thread."""
    main = gevent.getcurrent()

    def on_sigint(signum: int, frame: FrameType | None) -> None:
        if gevent.getcurrent() is main:
            raise KeyboardInterrupt
        gevent.get_hub().handle_system_error(KeyboardInterrupt, KeyboardInterrupt())

    signal.signal(signal.SIGINT, on_sigint)
