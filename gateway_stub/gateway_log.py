"""The stub's log writer: the real gateway's console lines on stderr, and its JSON log file's records.

Console lines are what a person greps for (`handshake timeout conn=…`, `closed before connect …`),
worded and stamped as OpenClaw's (`2026-11-21T12:57:24.460+00:00 [ws] …`), with the structured fields
appended as `key=value` the way the real console prints them. The JSON file (`--log-file`) holds records
of the real gateway's tslog shape; the shape, the words and the reader that counts them live in
`openclaw_wire.log_records`, shared with the harness.
"""

from __future__ import annotations

import datetime as dt
import json
import socket
import sys
import time
from pathlib import Path
from typing import IO, Any

from openclaw_wire.log_records import WS_SUBSYSTEM, StubEvent, build_record

CONSOLE_PREFIX = {WS_SUBSYSTEM: "[ws]", "gateway": "[gateway]", "shutdown": "[shutdown]"}
_HOSTNAME = socket.gethostname()


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _stamp(moment: dt.datetime) -> str:
    """OpenClaw's console and `time` stamp: milliseconds and an explicit +00:00 offset."""
    return moment.isoformat(timespec="milliseconds")


def na(value: object) -> str:
    """OpenClaw prints a missing value as `n/a`."""
    return "n/a" if value in (None, "") else str(value)


def _console_value(value: object) -> str:
    text = str(value)
    return json.dumps(text) if (" " in text or text == "") else text


class GatewayLog:
    def __init__(self, console: IO[str] | None = None, json_path: Path | None = None) -> None:
        self._console = console if console is not None else sys.stderr
        self._json = json_path.open("a", encoding="utf-8", buffering=1) if json_path else None
        self._started = time.monotonic()

    def close(self) -> None:
        if self._json:
            self._json.close()
            self._json = None

    def t_ms(self) -> float:
        return round((time.monotonic() - self._started) * 1000.0, 3)

    def console(self, subsystem: str, message: str, extra: dict[str, Any] | None = None) -> None:
        prefix = CONSOLE_PREFIX.get(subsystem, f"[{subsystem}]")
        tail = "".join(f" {k}={_console_value(v)}" for k, v in (extra or {}).items())
        try:
            self._console.write(f"{_stamp(_now())} {prefix} {message}{tail}\n")
            self._console.flush()
        except (BrokenPipeError, ValueError):
            pass  # a reader that went away must not take the gateway down

    def record(self, event: StubEvent, level: str, subsystem: str, message: str,
               extra: dict[str, Any] | None = None, **stub_keys: Any) -> None:
        """One tslog-shaped JSON line; `stub_keys` go at the top level beside `event` and `tMs`."""
        if self._json is None:
            return
        record = build_record(event, level, subsystem, message, extra, moment=_now(), t_ms=self.t_ms(),
                              hostname=_HOSTNAME, **stub_keys)
        self._json.write(json.dumps(record, separators=(",", ":")) + "\n")

    def both(self, event: StubEvent, level: str, subsystem: str, message: str,
             extra: dict[str, Any] | None = None, *, console_fields: bool = True, **stub_keys: Any) -> None:
        self.console(subsystem, message, extra if console_fields else None)
        self.record(event, level, subsystem, message, extra, **stub_keys)
