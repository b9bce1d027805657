"""The one progress line of a run: updated in place on a terminal, plain periodic lines otherwise."""

from __future__ import annotations

import time
from typing import IO


class Progress:
    def __init__(self, stream: IO[str], every_s: float = 10.0) -> None:
        self._stream = stream
        self._tty = stream.isatty()
        self._every_s = every_s
        self._last_plain = 0.0

    def update(self, text: str) -> None:
        if self._tty:
            self._stream.write("\r\x1b[2K" + text)
            self._stream.flush()
        elif time.monotonic() - self._last_plain >= self._every_s:
            self._last_plain = time.monotonic()
            self._stream.write(text + "\n")
            self._stream.flush()

    def done(self, text: str) -> None:
        self._stream.write(("\r\x1b[2K" if self._tty else "") + text + "\n")
        self._stream.flush()
