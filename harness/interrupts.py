"""Ctrl-C and SIGTERM reach the main greenlet, whichever greenlet is running when they arrive, and only once.

Under gevent's monkey-patching a `threading.Thread` is a greenlet on the main thread, and Python runs a
signal handler in whatever code is running at that moment. The default SIGINT handler raises
KeyboardInterrupt right there: in a patched thread, `Thread.run`'s own `except` catches it, prints
"Exception in thread ..." and the thread dies, while the run goes on to its end as if Ctrl-C had not been
pressed (seen: the real gateway's socket watcher took it, about one Ctrl-C in eight). The handlers below
raise in the main greenlet instead, the way gevent's hub passes on a KeyboardInterrupt from a spawned
greenlet; the greenlet that was interrupted carries on. SIGTERM raises `Terminated`, which the command
line turns into exit 143. A second signal while the first one's teardown runs is ignored, so the teardown
(stopping the gateway, removing containers) is not cut short.
"""

from __future__ import annotations

import signal
from types import FrameType


class Terminated(BaseException):  # noqa: N818  (like KeyboardInterrupt: a request to stop, not an error)
    """SIGTERM arrived: stop everything started, then exit 143."""


_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _stop_request(signum: int) -> BaseException:
    return KeyboardInterrupt() if signum == signal.SIGINT else Terminated()


def _ignore_from_now_on() -> None:
    for signum in _SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


def raise_on_signals() -> None:
    """Before anything else is imported: SIGINT raises KeyboardInterrupt, SIGTERM raises Terminated, once."""

    def on_signal(signum: int, frame: FrameType | None) -> None:
        _ignore_from_now_on()
        raise _stop_request(signum)

    for signum in _SIGNALS:
        signal.signal(signum, on_signal)


def deliver_signals_to_main_greenlet() -> None:
    """Once gevent is loaded: the same, raised in the main greenlet; call it from that greenlet."""
    import gevent

    main = gevent.getcurrent()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        _ignore_from_now_on()
        if gevent.getcurrent() is main:
            raise _stop_request(signum)
        stop = _stop_request(signum)
        gevent.get_hub().handle_system_error(type(stop), stop)

    for signum in _SIGNALS:
        signal.signal(signum, on_signal)
