"""The stub's log: the real gateway's console lines on stderr, and JSON lines in an optional file.

Console lines are what a person greps for (`handshake timeout conn=…`, `closed before connect …`),
worded as OpenClaw words them. The JSON file carries the same events as records with the fields the
real gateway's log file has (`cause`, `handshake`, `handshakeMs`, `durationMs`), plus stub-only
records (`event` = `ws.open`, `ws.hello`, `ws.close`, `http.preauth_rejected`, `ws.connect_rejected`)
that the harness counts storms from. Every record has `event`, `time` (ISO 8601) and `tMs`
(milliseconds since the stub started, real time; divide by the time scale for profile time).
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import time
from pathlib import Path
from typing import IO, Any

WS_SUBSYSTEM = "gateway/ws"
CONSOLE_PREFIX = {"gateway/ws": "[ws]", "gateway": "[gateway]", "shutdown": "[shutdown]"}


def _iso_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def na(value: object) -> str:
    """OpenClaw prints a missing value as `n/a`."""
    return "n/a" if value in (None, "") else str(value)


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

    def console(self, subsystem: str, message: str) -> None:
        prefix = CONSOLE_PREFIX.get(subsystem, f"[{subsystem}]")
        try:
            self._console.write(f"{_iso_now()} {prefix} {message}\n")
            self._console.flush()
        except (BrokenPipeError, ValueError):
            pass  # a reader that went away must not take the gateway down

    def record(self, event: str, level: str = "info", message: str | None = None, **fields: Any) -> None:
        if self._json is None:
            return
        record: dict[str, Any] = {"time": _iso_now(), "tMs": self.t_ms(), "event": event, "level": level}
        if message is not None:
            record["message"] = message
        record.update(fields)
        self._json.write(json.dumps(record, separators=(",", ":")) + "\n")

    def both(self, event: str, level: str, subsystem: str, message: str, **fields: Any) -> None:
        self.console(subsystem, message)
        self.record(event, level, message, subsystem=subsystem, **fields)
