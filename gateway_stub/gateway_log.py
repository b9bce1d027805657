"""The stub's log: the real gateway's console lines on stderr, and its JSON log file's records.

Console lines are what a person greps for (`handshake timeout conn=…`, `closed before connect …`),
worded and stamped as OpenClaw's (`2026-11-21T12:57:24.460+00:00 [ws] …`), with the structured fields
appended as `key=value` the way the real console prints them.

The JSON file (`--log-file`) has the shape of the real gateway's tslog file
(`/tmp/openclaw/openclaw-YYYY-MM-DD.log`, recorded on 2026.9.6): `"0"` is the logger name
(`{"subsystem":"gateway/ws"}`), then either `"1"`: message, or `"1"`: fields and `"2"`: message; plus
`_meta` (with `logLevelName`), `time`, `hostname` and `message`. So one reader counts storm entries
in the stub's log and the real gateway's alike: `message` starting with `handshake timeout` or
`closed before connect`, and `fields(record)["cause"] == "handshake-timeout"`.

The stub adds two top-level keys of its own to every record, `event` (`ws.handshake_timeout`,
`ws.closed_before_connect`, and the stub-only `ws.open`, `ws.hello`, `ws.close`, `ws.connect_rejected`,
`http.preauth_rejected`, and for exec approvals `approval.requested`, `approval.resolved`,
`approval.expired`) and `tMs` (real milliseconds since the stub started).
"""

from __future__ import annotations

import datetime as dt
import json
import platform
import socket
import sys
import time
from pathlib import Path
from typing import IO, Any

WS_SUBSYSTEM = "gateway/ws"
CONSOLE_PREFIX = {"gateway/ws": "[ws]", "gateway": "[gateway]", "shutdown": "[shutdown]"}
# tslog level ids.
LEVEL_IDS = {"debug": 2, "info": 3, "warn": 4, "error": 5}
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


def message_of(record: dict[str, Any]) -> str:
    """The message of a tslog record: top-level `message` (4.29, 9.6, the stub), else `"2"` or `"1"` (4.24)."""
    for key in ("message", "2", "1"):
        if isinstance(record.get(key), str):
            return str(record[key])
    return ""


def fields(record: dict[str, Any]) -> dict[str, Any]:
    """The structured fields of a tslog record (the real gateway's or the stub's); {} when it has none."""
    candidate = record.get("1")
    return candidate if isinstance(candidate, dict) else {}


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

    def record(self, event: str, level: str, subsystem: str, message: str,
               extra: dict[str, Any] | None = None, **stub_keys: Any) -> None:
        """One tslog-shaped JSON line; `stub_keys` go at the top level beside `event` and `tMs`."""
        if self._json is None:
            return
        moment = _now()
        name = json.dumps({"subsystem": subsystem}, separators=(",", ":"))
        record: dict[str, Any] = {"0": name}
        if extra:
            record["1"], record["2"] = extra, message
        else:
            record["1"] = message
        record["_meta"] = {
            "runtime": "python", "runtimeVersion": platform.python_version(), "hostname": _HOSTNAME,
            "date": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "logLevelId": LEVEL_IDS[level], "logLevelName": level.upper(), "name": name,
            "parentNames": ["openclaw"],
        }
        record.update(time=_stamp(moment), hostname=_HOSTNAME, message=message, event=event, tMs=self.t_ms())
        record.update(stub_keys)
        self._json.write(json.dumps(record, separators=(",", ":")) + "\n")

    def both(self, event: str, level: str, subsystem: str, message: str,
             extra: dict[str, Any] | None = None, *, console_fields: bool = True, **stub_keys: Any) -> None:
        self.console(subsystem, message, extra if console_fields else None)
        self.record(event, level, subsystem, message, extra, **stub_keys)
