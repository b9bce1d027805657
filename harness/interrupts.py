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
import sys
from collections.abc import Callable
from types import FrameType

from harness.stop_signals import STOP_SIGNALS


class Terminated(BaseException):  # noqa: N818  (like KeyboardInterrupt: a request to stop, not an error)
    """SIGTERM arrived: stop everything started, then exit 143."""


_SIGNAL_OF: dict[type[BaseException], int] = {KeyboardInterrupt: signal.SIGINT, Terminated: signal.SIGTERM}


def _stop_request(signum: int) -> BaseException:
    return KeyboardInterrupt() if signum == signal.SIGINT else Terminated()


def _ignore_from_now_on() -> None:
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


_AGAIN_AFTER_S = 0.001
_Handler = Callable[[int, "FrameType | None"], None]


def _install(on_signal: _Handler) -> None:
    """`on_signal` for SIGINT and SIGTERM, and a hook that sends again a stop request that was swallowed.

    Python runs a handler at whatever bytecode is next, and some places cannot raise: an exception from an
    at-fork callback, a `__del__` or a weakref callback is printed as "Exception ignored in ..." and dropped
    (seen: Ctrl-C landing in logging's after-fork hook while the stub was being forked; the run went on).
    Such a request is made again a millisecond later (SIGALRM), until it lands where it can raise: sent at
    once, it would be handled inside this hook, which cannot raise either.
    """
    def unraisable(info: sys.UnraisableHookArgs) -> None:
        signum = None if info.exc_value is None else _SIGNAL_OF.get(type(info.exc_value))
        if signum is None:
            sys.__unraisablehook__(info)
            return

        def again(alarm: int, frame: FrameType | None) -> None:
            signal.signal(signal.SIGALRM, signal.SIG_DFL)
            on_signal(signum, frame)

        signal.signal(signal.SIGALRM, again)
        signal.setitimer(signal.ITIMER_REAL, _AGAIN_AFTER_S)

    for signum in STOP_SIGNALS:
        signal.signal(signum, on_signal)
    sys.unraisablehook = unraisable


def forget_unhandled_interrupt() -> None:
    """Call once a KeyboardInterrupt has been handled, before exiting with 130.

    CPython marks a KeyboardInterrupt "unhandled" for good when it leaves code run from a string (`exec(str)`,
    as dataclasses does for every class it builds at import), and then ends the process with SIGINT whatever
    exit code the program chose (seen: 3 of 40 Ctrl-Cs 0.2-0.45 s into start-up exited -2, not 130). Each
    such evaluation clears the mark when it starts, so one that succeeds clears it.
    """
    exec("None")  # noqa: S102  (a constant: no input reaches it)


def raise_on_signals() -> None:
    """Before anything else is imported: SIGINT raises KeyboardInterrupt, SIGTERM raises Terminated, once."""

    def on_signal(signum: int, frame: FrameType | None) -> None:
        _ignore_from_now_on()
        raise _stop_request(signum)

    _install(on_signal)


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

    _install(on_signal)


