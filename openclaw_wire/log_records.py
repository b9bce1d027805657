"""The gateway's JSON log records: their shape, the words that matter in them, and the reader.

The real gateway writes a tslog file (`/tmp/openclaw/openclaw-YYYY-MM-DD.log`, recorded on 2026.9.6): `"0"` is
the logger name (`{"subsystem":"gateway/ws"}`), then either `"1"`: message, or `"1"`: fields and `"2"`: message;
plus `_meta` (with `logLevelName`), `time`, `hostname` and `message` (4.24 has no top-level `message`). The stub
writes the same shape (`build_record`), so one reader counts storm entries in either: a connection closed by the
handshake timer is a `closed before connect …` record with `cause: handshake-timeout`, or a `handshake timeout
conn=…` warning.

The stub adds two top-level keys of its own, `event` (one of `StubEvent`) and `tMs` (real milliseconds since
it started), so the harness can also count what the real gateway does not log (a 503 at the pre-auth budget).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import enum
import json
import platform
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

WS_SUBSYSTEM = "gateway/ws"
# The words OpenClaw's handshake lines start with (src/gateway/server/ws-connection.ts), and the close cause.
MSG_HANDSHAKE_TIMEOUT = "handshake timeout"
MSG_CLOSED_BEFORE_CONNECT = "closed before connect"
CAUSE_HANDSHAKE_TIMEOUT = "handshake-timeout"
# tslog level ids.
LEVEL_IDS = {"debug": 2, "info": 3, "warn": 4, "error": 5}

Record = Mapping[str, Any]


class StubEvent(enum.StrEnum):
    """The `event` key of the stub's records (the real gateway's have none)."""

    WS_OPEN = "ws.open"
    WS_HELLO = "ws.hello"
    WS_CLOSE = "ws.close"
    WS_HANDSHAKE_TIMEOUT = "ws.handshake_timeout"
    WS_CLOSED_BEFORE_CONNECT = "ws.closed_before_connect"
    WS_CONNECT_REJECTED = "ws.connect_rejected"
    HTTP_PREAUTH_REJECTED = "http.preauth_rejected"
    APPROVAL_REQUESTED = "approval.requested"
    APPROVAL_RESOLVED = "approval.resolved"
    APPROVAL_EXPIRED = "approval.expired"


def build_record(event: StubEvent, level: str, subsystem: str, message: str, extra: Mapping[str, Any] | None,
                 *, moment: dt.datetime, t_ms: float, hostname: str, **stub_keys: Any) -> dict[str, Any]:
    """One tslog-shaped record; `stub_keys` go at the top level beside `event` and `tMs`."""
    name = json.dumps({"subsystem": subsystem}, separators=(",", ":"))
    record: dict[str, Any] = {"0": name}
    if extra:
        record["1"], record["2"] = dict(extra), message
    else:
        record["1"] = message
    record["_meta"] = {
        "runtime": "python", "runtimeVersion": platform.python_version(), "hostname": hostname,
        "date": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "logLevelId": LEVEL_IDS[level], "logLevelName": level.upper(), "name": name,
        "parentNames": ["openclaw"],
    }
    record.update(time=moment.isoformat(timespec="milliseconds"), hostname=hostname, message=message,
                  event=event.value, tMs=t_ms)
    record.update(stub_keys)
    return record


def message_of(record: Record) -> str:
    """The message of a tslog record: top-level `message` (4.29, 9.6, the stub), else `"2"` or `"1"` (4.24)."""
    for key in ("message", "2", "1"):
        if isinstance(record.get(key), str):
            return str(record[key])
    return ""


def fields(record: Record) -> dict[str, Any]:
    """The structured fields of a tslog record (the real gateway's or the stub's); {} when it has none."""
    candidate = record.get("1")
    return candidate if isinstance(candidate, dict) else {}


_CONN_ID = re.compile(r"\bconn=(\S+)")


def conn_id_of(record: Record) -> str | None:
    """The connection a record is about (`conn=<uuid>` in its message), if it names one."""
    match = _CONN_ID.search(message_of(record))
    return match.group(1) if match else None


def closed_by_handshake_timer(record: Record) -> bool:
    """`closed before connect …` with cause handshake-timeout: the handshake timer closed this connection."""
    return (message_of(record).startswith(MSG_CLOSED_BEFORE_CONNECT)
            and fields(record).get("cause") == CAUSE_HANDSHAKE_TIMEOUT)


def is_handshake_timeout_warning(record: Record) -> bool:
    """The `handshake timeout conn=…` warning the timer writes when it fires."""
    return message_of(record).startswith(MSG_HANDSHAKE_TIMEOUT)


def is_preauth_rejected(record: Record) -> bool:
    """A 503 at the per-IP pre-auth budget (the stub's record; the real gateway logs no line for it)."""
    return record.get("event") == StubEvent.HTTP_PREAUTH_REJECTED


def written_by_stub(record: Record) -> bool:
    return "event" in record


def read_records(path: Path, start_byte: int = 0) -> list[dict[str, Any]] | None:
    """The JSON records of a log file (from `start_byte`: what was appended since), skipping lines that are not
    JSON objects; None when there is no file."""
    if not path.exists():
        return None
    with path.open("rb") as log:
        log.seek(start_byte)
        text = log.read().decode("utf-8", errors="replace")
    records = []
    for line in text.splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict):
                records.append(record)
    return records
