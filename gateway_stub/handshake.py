"""One connection's pre-auth handshake as a state object with no I/O: what happened goes in, actions come out.

Shaped like `websockets`' own `protocol.py`: the server tells a `Handshake` what happened on its connection
(it opened, a frame arrived, the handshake timer fired, the connect's cost is burned, hello-ok was prepared
and sent, the socket closed) and carries out the actions it answers, in order: send a frame, close, write a
log record or console line, bump a counter, start processing a connect, register the client, hand a frame
to the request handler. The object owns the handshake's state (the phase the real gateway logs as `phase=`,
the close cause, whether a connect is in flight, the frames `current` queues meanwhile, when the timer cut
it) and every rule that reads it. It never reads a clock, sleeps or touches a socket: callers pass elapsed
milliseconds since the WebSocket opened, and `socket_open`, false once the peer has started closing or the
socket is gone. Facts and exact strings come from ../shared/reference/openclaw-gateway.md, sections 2-4.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

from gateway_stub.gateway_log import na
from gateway_stub.generations import Generation
from gateway_stub.protocol import (
    CLOSE_POLICY_VIOLATION,
    CLOSE_TOO_BIG,
    MAX_PENDING_HANDSHAKE_FRAMES,
    MAX_PREAUTH_PAYLOAD_BYTES,
    REASON_PREAUTH_TOO_LARGE,
    REASON_SLOW_CONSUMER,
    REASON_TOO_MANY_PENDING,
    Accepted,
    CloseWith,
    Rejected,
    Request,
    error_frame,
    first_request_not_connect,
    parse_request,
    preauth_frame_size,
)
from openclaw_wire.log_records import (
    CAUSE_HANDSHAKE_TIMEOUT,
    MSG_CLOSED_BEFORE_CONNECT,
    MSG_HANDSHAKE_TIMEOUT,
    StubEvent,
)

LogLevel = Literal["debug", "info", "warn", "error"]
# The /metrics counters the handshake moves (metrics.COUNTERS has their help text).
Counter = Literal[
    "handshakes_started",
    "handshakes_succeeded",
    "handshakes_timed_out",
    "handshakes_auth_failed",
    "handshakes_rejected_other",
    "closed_before_connect",
]


class Phase(enum.StrEnum):
    """How far the handshake got, worded as the real gateway's `phase=` (2026.9.6, reference §4)."""

    WS_UPGRADE_STARTED = "ws_upgrade_started"
    AUTH_CREDENTIALS_RECEIVED = "auth_credentials_received"
    AUTH_VALIDATED = "auth_validated"
    HELLO_PAYLOAD_PREPARED = "hello_payload_prepared"
    READY = "ready"


class CloseCause(enum.StrEnum):
    """Why the gateway closed the socket: the `cause` of a `closed before connect` record.

    `handshake-timeout` is the real gateway's (recorded on 4.29 and 9.6); the others are the stub's own words.
    """

    HANDSHAKE_TIMEOUT = CAUSE_HANDSHAKE_TIMEOUT
    INVALID_HANDSHAKE = "invalid-handshake"
    CONNECT_REJECTED = "connect-rejected"
    PREAUTH_PAYLOAD_TOO_LARGE = "preauth-payload-too-large"
    TOO_MANY_PENDING_FRAMES = "too-many-pending-frames"
    SLOW_CONSUMER = "slow-consumer"


@dataclass(frozen=True)
class Endpoint:
    ip: str
    port: int | None

    @classmethod
    def of(cls, address: object) -> Endpoint:
        """From a socket address tuple; `n/a` when unknown."""
        if isinstance(address, tuple) and len(address) >= 2 and isinstance(address[1], int):
            return cls(str(address[0]), address[1])
        return cls("n/a", None)

    def __str__(self) -> str:
        return f"{self.ip}:{self.port}" if self.port is not None else "n/a"


@dataclass(frozen=True)
class Peer:
    """The connection as the real gateway's log lines name it."""

    conn_id: str
    remote: Endpoint
    local: Endpoint
    origin: str | None = None
    host: str | None = None
    user_agent: str | None = None
    forwarded_for: str | None = None

    @property
    def endpoint(self) -> str:
        """OpenClaw's `peer=`: remoteIp:remotePort->localIp:localPort."""
        return f"{self.remote}->{self.local}"

    def describe(self) -> str:
        return (f"conn={self.conn_id} peer={self.endpoint} remote={self.remote.ip} fwd={na(self.forwarded_for)} "
                f"origin={na(self.origin)} host={na(self.host)} ua={na(self.user_agent)}")


# ---------------------------------------------------------------------------------------------
# Actions: what the server carries out, in the order given.


@dataclass(frozen=True)
class Send:
    """Send this text frame; a socket that closed meanwhile loses it."""

    frame: str


@dataclass(frozen=True)
class Close:
    """Close with this code and reason.

    `background`: start the close and go on at once, so frames already read are still handled (April's
    answers) or a timer callback can do it; otherwise wait for the closing handshake before reading on.
    """

    code: int
    reason: str
    background: bool = False


@dataclass(frozen=True)
class Record:
    """A record about this connection in the JSON log; with `console`, also the real gateway's console line,
    which appends the fields as key=value when `console_fields`."""

    event: StubEvent
    level: LogLevel
    message: str
    fields: Mapping[str, object] | None = None
    console: bool = False
    console_fields: bool = True


@dataclass(frozen=True)
class ConsoleLine:
    """A console line only (the real gateway writes no record for it)."""

    message: str


@dataclass(frozen=True)
class Bump:
    counter: Counter


@dataclass(frozen=True)
class StartConnect:
    """Process this `connect`: burn the before-timer cost, then call `connect_cost_done`."""

    request: Request


@dataclass(frozen=True)
class DelayRejection:
    """Wait the loopback auth-failure delay (the server keeps the per-IP failure window), then call
    `rejection_due`."""


@dataclass(frozen=True)
class Register:
    """The client is registered: end pre-auth (cancel the handshake timer, give the budget slot back)."""

    accepted: Accepted


@dataclass(frozen=True)
class Ready:
    """hello-ok is out: observe how long the handshake took and start what follows a hello."""

    handshake_ms: float


@dataclass(frozen=True)
class Dispatch:
    """Handle this frame as a request after hello."""

    message: str | bytes


Action = Send | Close | Record | ConsoleLine | Bump | StartConnect | DelayRejection | Register | Ready | Dispatch
Decide = Callable[[], Accepted | Rejected]


class Handshake:
    """The pre-auth handshake of one connection, from the WebSocket's open to hello-ok or the close."""

    def __init__(self, peer: Peer, generation: Generation, *, auth_failure_delay: bool) -> None:
        """`auth_failure_delay`: whether an auth failure is answered after the loopback back-off."""
        self.peer = peer
        self.generation = generation
        self._auth_failure_delay = auth_failure_delay
        self._phase = Phase.WS_UPGRADE_STARTED
        self._close_cause: CloseCause | None = None
        self._connect: Request | None = None
        self._connect_in_flight = False
        self._queued: list[str | bytes] = []
        self._timed_out_after_ms: float | None = None
        self._accepted: Accepted | None = None
        self._rejected: Rejected | None = None
        self._registered = False
        self._handshake_ms = 0.0

    # -- state, read-only -------------------------------------------------------------------------

    @property
    def phase(self) -> Phase:
        return self._phase

    @property
    def close_cause(self) -> CloseCause | None:
        return self._close_cause

    @property
    def connect_in_flight(self) -> bool:
        """A `connect` was read and hello-ok is not out yet (an abandoned connect stays in flight)."""
        return self._connect_in_flight

    @property
    def queued(self) -> tuple[str | bytes, ...]:
        return tuple(self._queued)

    @property
    def timed_out_after_ms(self) -> float | None:
        return self._timed_out_after_ms

    @property
    def accepted(self) -> Accepted | None:
        """The connect's decision once it was accepted (registration may still be ahead)."""
        return self._accepted

    @property
    def registered(self) -> bool:
        """Past registration: the handshake timer is cleared and frames go to the request handler."""
        return self._registered

    def is_closing(self, *, socket_open: bool) -> bool:
        return self._close_cause is not None or not socket_open

    # -- inputs -----------------------------------------------------------------------------------

    def opened(self) -> list[Action]:
        """The WebSocket is open (the handshake timer starts now)."""
        return [Bump("handshakes_started"),
                Record(StubEvent.WS_OPEN, "debug", f"open conn={self.peer.conn_id} peer={self.peer.endpoint}")]

    def frame_received(self, message: str | bytes, *, socket_open: bool) -> list[Action]:
        """A text or binary frame arrived (binary is read as UTF-8 text, as Node's `ws` hands it over)."""
        if self._registered:
            return [Dispatch(message)]
        # April answers every request already read with the one sent during connect, then closes.
        answering_early = (self._close_cause is CloseCause.INVALID_HANDSHAKE and self._connect_in_flight
                           and socket_open)
        if self.is_closing(socket_open=socket_open) and not answering_early:
            return []
        if preauth_frame_size(message) > MAX_PREAUTH_PAYLOAD_BYTES:
            return self._refuse(CLOSE_TOO_BIG, REASON_PREAUTH_TOO_LARGE, CloseCause.PREAUTH_PAYLOAD_TOO_LARGE,
                                socket_open=socket_open)
        if self._connect_in_flight and self.generation.queues_handshake_frames:
            self._queued.append(message)
            if len(self._queued) > MAX_PENDING_HANDSHAKE_FRAMES:
                return self._refuse(CLOSE_POLICY_VIOLATION, REASON_TOO_MANY_PENDING,
                                    CloseCause.TOO_MANY_PENDING_FRAMES, socket_open=socket_open)
            return []
        parsed = parse_request(message)
        if isinstance(parsed, Request) and self._connect_in_flight:
            # April: any request while a connect is in flight counts as a first request that is not connect.
            # Each one gets its own res and the 1008 close follows the frames already read (recorded on 4.24
            # and 4.29: 20 requests in one TCP write got 20 res, then the close; the connect got none).
            refused = first_request_not_connect(parsed)
            assert refused.reply is not None
            actions: list[Action] = [Send(refused.reply)]
            if self._close_cause is None:
                self._close_cause = CloseCause.INVALID_HANDSHAKE
                actions += [Bump("handshakes_rejected_other"), Close(refused.code, refused.reason, background=True)]
            return actions
        if self.is_closing(socket_open=socket_open):
            return []
        if isinstance(parsed, Request) and parsed.method != "connect":
            parsed = first_request_not_connect(parsed)
        if isinstance(parsed, CloseWith):
            actions = [Bump("handshakes_rejected_other")]
            if parsed.log == "invalid handshake":
                actions.append(ConsoleLine(f"invalid handshake {self.peer.describe()}"))
            elif parsed.log:
                actions.append(ConsoleLine(f"{parsed.log} conn={self.peer.conn_id}"))
            return actions + self._close(parsed.code, parsed.reason, CloseCause.INVALID_HANDSHAKE,
                                         socket_open=socket_open, reply=parsed.reply)
        self._phase = Phase.AUTH_CREDENTIALS_RECEIVED
        self._connect = parsed
        self._connect_in_flight = True
        return [StartConnect(parsed)]

    def timer_fired(self, elapsed_ms: float, *, socket_open: bool) -> list[Action]:
        """The handshake timer fired, `elapsed_ms` after the open; late, when the loop was busy."""
        if self._registered or self.is_closing(socket_open=socket_open):
            return []
        self._timed_out_after_ms = elapsed_ms
        self._close_cause = CloseCause.HANDSHAKE_TIMEOUT
        peer = self.peer
        message = f"{MSG_HANDSHAKE_TIMEOUT} conn={peer.conn_id} peer={peer.endpoint} remote={peer.remote.ip}"
        # close() with no arguments, as the real gateway does: 1000 and an empty reason.
        return [Bump("handshakes_timed_out"),
                Record(StubEvent.WS_HANDSHAKE_TIMEOUT, "warn", message + self._phase_suffix(), console=True),
                Close(1000, "", background=True)]

    def connect_cost_done(self, decide: Decide, *, socket_open: bool) -> list[Action]:
        """The before-timer cost is burned: `decide` the connect, unless the socket is closing by now.

        A connect cut meanwhile (the timer, April's answer to a frame sent during connect) is dropped
        without being decided, so it costs no more and counts as neither success nor rejection.
        """
        if self.is_closing(socket_open=socket_open):
            return []
        assert self._connect is not None, "connect_cost_done before a connect was started"
        decision = decide()
        if isinstance(decision, Accepted):
            self._accepted = decision
            self._phase = Phase.AUTH_VALIDATED
            return []
        self._rejected = decision
        record = Record(StubEvent.WS_CONNECT_REJECTED, "warn",
                        f"connect rejected conn={self.peer.conn_id} code={decision.error.code}",
                        {"error": decision.error.message, "closeCode": decision.close_code})
        if decision.auth_failure and self._auth_failure_delay:
            # Counted once answered (rejection_due): a timer that cuts the delay makes the handshake a timeout.
            return [record, DelayRejection()]
        bump, *answer = self._refuse_connect(socket_open=socket_open)  # open and not closing: it closes
        return [bump, record, *answer]

    def rejection_due(self, *, socket_open: bool) -> list[Action]:
        """The loopback auth-failure delay is over: answer the connect and close, unless closing by now."""
        return self._refuse_connect(socket_open=socket_open)

    def hello_due(self, *, socket_open: bool) -> list[Action]:
        """The idle hello latency is over and an overdue timer has had its turn: register, unless closing."""
        if self.is_closing(socket_open=socket_open):
            return []
        assert self._accepted is not None and not self._registered, "hello_due without an accepted connect"
        self._registered = True
        return [Register(self._accepted)]

    def hello_prepared(self, elapsed_ms: float) -> list[Action]:
        """hello-ok is built, `elapsed_ms` after the open: the handshake's duration as the stub reports it."""
        assert self._registered, "hello_prepared before registration"
        self._phase = Phase.HELLO_PAYLOAD_PREPARED
        self._handshake_ms = elapsed_ms
        return []

    def hello_sent(self) -> list[Action]:
        """hello-ok is out: the client is ready, and the frames queued meanwhile are handled in order."""
        accepted = self._accepted
        assert accepted is not None and self._phase is Phase.HELLO_PAYLOAD_PREPARED, "hello_sent before hello_prepared"
        self._phase = Phase.READY
        self._connect_in_flight = False
        client_name = accepted.client.get("displayName") or accepted.client["id"]
        queued, self._queued = self._queued, []
        return [Bump("handshakes_succeeded"),
                Record(StubEvent.WS_HELLO, "info", f"hello conn={self.peer.conn_id} client={client_name!r}",
                       {"handshakeMs": round(self._handshake_ms), "role": accepted.role}),
                Ready(self._handshake_ms),
                *(Dispatch(frame) for frame in queued)]

    def slow_consumer(self, *, socket_open: bool) -> list[Action]:
        """More than the buffered-bytes limit waits to be sent to this client."""
        return self._close(CLOSE_POLICY_VIOLATION, REASON_SLOW_CONSUMER, CloseCause.SLOW_CONSUMER,
                           socket_open=socket_open)

    def closed(self, code: int | None, reason: str | None, elapsed_ms: float) -> list[Action]:
        """The socket is closed, `elapsed_ms` after the open, with the close frame's code and reason if any."""
        duration_ms = round(elapsed_ms, 3)
        peer = self.peer
        if self._registered:
            message = f"closed conn={peer.conn_id} code={na(code)} reason={na(reason)}"
            return [Record(StubEvent.WS_CLOSE, "info", message, {"durationMs": round(duration_ms)})]
        message = (f"{MSG_CLOSED_BEFORE_CONNECT} {peer.describe()} code={na(code)} reason={na(reason)}"
                   + self._phase_suffix())
        return [Bump("closed_before_connect"),
                Record(StubEvent.WS_CLOSED_BEFORE_CONNECT, "warn", message,
                       self._closed_before_connect_fields(duration_ms), console=True,
                       console_fields=self.generation.console_appends_fields)]

    # -- rules shared by several inputs -------------------------------------------------------------

    def _close(self, code: int, reason: str, cause: CloseCause, *, socket_open: bool,
               reply: str | None = None) -> list[Action]:
        """Close for `cause`, answering `reply` first; the first cause wins, a closing socket gets nothing."""
        if self.is_closing(socket_open=socket_open):
            return []
        self._close_cause = cause
        return [*([Send(reply)] if reply is not None else []), Close(code, reason)]

    def _refuse(self, code: int, reason: str, cause: CloseCause, *, socket_open: bool) -> list[Action]:
        """Close for `cause` and count the handshake as refused, unless it is closing already: April still reads
        frames while its early answer's close is under way, and the first outcome is the one counted."""
        closing = self._close(code, reason, cause, socket_open=socket_open)
        return [Bump("handshakes_rejected_other"), *closing] if closing else []

    def _refuse_connect(self, *, socket_open: bool) -> list[Action]:
        """Count the refusal, answer the connect and close; nothing when the socket is closing already."""
        assert self._connect is not None and self._rejected is not None
        reply = error_frame(self._connect.id, self._rejected.error)
        closing = self._close(self._rejected.close_code, self._rejected.close_reason, CloseCause.CONNECT_REJECTED,
                              socket_open=socket_open, reply=reply)
        counter: Counter = "handshakes_auth_failed" if self._rejected.auth_failure else "handshakes_rejected_other"
        return [Bump(counter), *closing] if closing else []

    def _phase_suffix(self) -> str:
        return f" phase={self._phase}" if self.generation.log_phase else ""

    def _closed_before_connect_fields(self, duration_ms: float) -> dict[str, object]:
        """The structured fields of the real gateway's record, in its order (recorded on 2026.9.6)."""
        peer = self.peer
        out: dict[str, object] = {}
        if self._close_cause:
            out["cause"] = str(self._close_cause)
        out.update(durationMs=round(duration_ms), handshake="failed")
        if self.generation.log_phase:
            out["phase"] = str(self._phase)
        out.update(host=na(peer.host), userAgent=na(peer.user_agent), remoteAddr=peer.remote.ip,
                   remotePort=peer.remote.port, localAddr=peer.local.ip, localPort=peer.local.port,
                   endpoint=peer.endpoint)
        if self._timed_out_after_ms is not None:
            out["handshakeMs"] = round(self._timed_out_after_ms)
        return out
