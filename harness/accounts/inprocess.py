"""In-process accounts: OpenClaw's own native-approvals handlers, read from the real gateway's console.

With `target.inprocess`, the accounts are the Matrix channel's accounts inside the real gateway (on a local
Synapse): their handlers connect to the gateway over loopback from the gateway's own process, so no client of
the harness sees their handshakes. What they did is read back from the gateway's console (`openclaw.log`, the
run's own file; ANSI colours stripped), line by line, into the same events the fake accounts record
(`harness.events`), so one verdict judges both:

  [ws] ← open … conn=<id>                                  a connection opened: an attempt starts
  [ws] ← connect … clientDisplayName=Matrix Native Approvals (<account>) … conn=<id>
                                                           its connect frame was handled: hello (the gateway
                                                           writes `→ hello-ok` right after, with no conn id)
  [ws] handshake timeout conn=<uuid> …                     the gateway's handshake timer closed it
  [ws] closed before connect conn=<uuid> … code=<code>     another close before hello
  [ws] → close code=<code> … handshake=connected … conn=<id>  an authenticated connection closed
  [ws] → close code=1000 … cause=handshake-timeout …       the timer's close (seconds later on a busy loop)
  [matrix] connect error: gateway closed (1000): …         a handler's client saw its connection closed before
                                                           hello (the handlers' side, counted, see below)
  [matrix] failed to start native approval handler: …      the handler's start failed: a new one in 1 s
  [matrix] [<account>] channel exited: …                   an account's Matrix client gave up starting (a
                                                           starved host: no ready sync within 30 s); counted

Console conn ids are shortened (`7d35fa9b…25a9`: the first 8 and last 4 characters); the timeout lines carry
the whole uuid and are shortened the same way to match. A connection the timer closes before its connect frame
was handled cannot be told apart by account: the gateway never learned whose it was. Such attempts are
attributed to `UNATTRIBUTED` (`accounts.csv` shows them on that row); every count and the verdict use them.

The handlers' side (their subsystem is `matrix/native-approvals`, shown as `[matrix]` on the console) is what
the field report correlated 1:1 with the gateway's `handshake timeout` lines: `handler_connect_errors` and
`handler_failed_starts` count them.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from harness.events import AccountLedger, Attempt, Disconnect, Outcome
from openclaw_wire.log_records import MSG_CLOSED_BEFORE_CONNECT, MSG_HANDSHAKE_TIMEOUT

UNATTRIBUTED = "(before connect)"
DISPLAY_NAME = re.compile(r"clientDisplayName=Matrix Native Approvals \((?P<account>[^)]+)\)")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_LINE = re.compile(r"^(?P<at>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)) \[(?P<subsystem>[^\]]+)\] "
                   r"(?P<message>.*)$")
_CONN = re.compile(r"\bconn=(?P<conn>\S+)")
_CODE = re.compile(r"\bcode=(?P<code>\d+)")
HANDLER_SUBSYSTEMS = ("matrix", "matrix/native-approvals")
HANDLER_CONNECT_ERROR = "connect error"
HANDLER_FAILED_START = "failed to start native approval handler"
CHANNEL_EXITED = "channel exited:"  # e.g. "Matrix client did not reach a ready sync state within 30000ms"


def short_conn(conn: str) -> str:
    """A conn id as the console shortens it: the whole uuid becomes its first 8 and last 4 characters."""
    if "…" in conn or len(conn) <= 13:
        return conn
    return f"{conn[:8]}…{conn[-4:]}"


@dataclass(frozen=True)
class ConsoleLine:
    at: dt.datetime
    subsystem: str
    message: str


def console_lines(text: str) -> Iterable[ConsoleLine]:
    """The timestamped lines of a gateway console (others, such as V8's GC trace, are skipped)."""
    for raw in text.splitlines():
        match = _LINE.match(_ANSI.sub("", raw).rstrip())
        if match is None:
            continue
        try:
            at = dt.datetime.fromisoformat(match["at"].replace("Z", "+00:00"))
        except ValueError:
            continue
        yield ConsoleLine(at, match["subsystem"], match["message"])


@dataclass
class _Open:
    handler_id: int
    started_ms: float
    account: str = UNATTRIBUTED


@dataclass(kw_only=True)
class InProcessLedger(AccountLedger):
    """What the handlers did, as events in ms since `launched_at` (the gateway's launch: scenario time 0), kept as
    the fake accounts' ledger keeps them (attempts, disconnects, who is connected), plus the handlers' own counts."""

    launched_at: dt.datetime
    handler_connect_errors: int = 0  # the handlers' own `connect error` lines
    handler_failed_starts: int = 0  # and their `failed to start native approval handler` lines
    channel_exits: int = 0  # `[matrix] [<account>] channel exited: …` (before its handler could run)
    _open: dict[str, _Open] = field(default_factory=dict)  # short conn id -> its attempt in flight
    _hello: dict[str, tuple[str, int]] = field(default_factory=dict)  # short conn id -> (account, handler id)
    _next_id: int = 0

    def read(self, text: str) -> None:
        """Fold in a whole console, from its start (the ledger is rebuilt: call it on a fresh ledger)."""
        for line in console_lines(text):
            self.add(line)

    def add(self, line: ConsoleLine) -> None:
        at_ms = (line.at - self.launched_at).total_seconds() * 1000.0
        if line.subsystem in HANDLER_SUBSYSTEMS:
            self.handler_connect_errors += line.message.startswith(HANDLER_CONNECT_ERROR)
            self.handler_failed_starts += line.message.startswith(HANDLER_FAILED_START)
            self.channel_exits += CHANNEL_EXITED in line.message
            return
        if line.subsystem != "ws":
            return
        message = line.message
        conn_match = _CONN.search(message)
        if conn_match is None:
            if message.startswith("← connect") and self._open:
                # Seen on 4.24: now and then a connect line ends without its conn id. It belongs to a connection
                # still open: the oldest, as connects are handled in the order the sockets opened.
                conn = min(self._open, key=lambda key: self._open[key].started_ms)
            else:
                return
        else:
            conn = short_conn(conn_match["conn"])
        if message.startswith("← open"):
            self._next_id += 1
            self._open[conn] = _Open(self._next_id, at_ms)
        elif message.startswith("← connect"):
            name = DISPLAY_NAME.search(message)
            pending = self._open.pop(conn, None)
            if name is None or pending is None:
                return  # another client (an operator, the CLI), or one opened before the console was read
            account = name["account"]
            self.record_attempt(Attempt(account, pending.handler_id, pending.started_ms, at_ms, Outcome.HELLO))
            self._hello[conn] = (account, pending.handler_id)
        elif message.startswith(MSG_HANDSHAKE_TIMEOUT):
            self._failed(conn, at_ms, Outcome.HANDSHAKE_TIMEOUT, 1000)
        elif message.startswith(MSG_CLOSED_BEFORE_CONNECT):
            code = _CODE.search(message)
            self._failed(conn, at_ms, Outcome.CLOSED, int(code["code"]) if code else None)
        elif message.startswith("→ close") and conn in self._hello:
            account, handler_id = self._hello.pop(conn)
            code = _CODE.search(message)
            self.record_disconnect(Disconnect(account, handler_id, at_ms, int(code["code"]) if code else None, ""))

    def _failed(self, conn: str, at_ms: float, outcome: Outcome, code: int | None) -> None:
        pending = self._open.pop(conn, None)
        if pending is None:
            return  # the timeout line came first and already ended it (its `closed before connect` follows)
        self.record_attempt(Attempt(pending.account, pending.handler_id, pending.started_ms, at_ms, outcome,
                                    close_code=code))


def read_console(text: str, launched_at: dt.datetime) -> InProcessLedger:
    ledger = InProcessLedger(launched_at=launched_at)
    ledger.read(text)
    return ledger
