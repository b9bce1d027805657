"""The asyncio server: wires the protocol, cost model, budget, log and metrics to `websockets`.

One event loop serves everything, as the real gateway's Node loop does, so CPU burned for one
handshake delays every other socket's frames and timers. Timers are plain `call_later` handles:
when the loop is busy they fire late, exactly like Node's, and that lateness is the storm.
The HTTP side (same port, like the real gateway): `/healthz`, `/readyz`, `/metrics`, `/stats`, `/`.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import json
import logging
import secrets
import time
import uuid
from collections import deque
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from gateway_stub import protocol as proto
from gateway_stub.approval_service import ApprovalDedup, ApprovalService
from gateway_stub.approvals import Caller
from gateway_stub.budget import BUDGET_EXCEEDED_BODY, PreauthBudget, PreauthSlot
from gateway_stub.config import StubConfig
from gateway_stub.cost import CostBurner, CostSpec
from gateway_stub.gateway_log import GatewayLog, na
from gateway_stub.methods import METHODS, RESPONDED, MethodCall, MethodError, unknown_method
from gateway_stub.metrics import StubMetrics, render_prometheus, watch_event_loop_lag
from openclaw_wire.constants import HEALTH_REFRESH_INTERVAL_MS
from openclaw_wire.log_records import (
    CAUSE_HANDSHAKE_TIMEOUT,
    MSG_CLOSED_BEFORE_CONNECT,
    MSG_HANDSHAKE_TIMEOUT,
    WS_SUBSYSTEM,
    StubEvent,
)

# Failures counted for the loopback auth delay within this window (auth-rate-limit.ts: 60 000 ms).
AUTH_FAILURE_WINDOW_MS = 60_000
SHUTDOWN_CLOSE_GRACE_S = 2.0

_ws_logger = logging.getLogger("gateway_stub.websockets")
_ws_logger.setLevel(logging.ERROR)


@dataclass(eq=False)
class Connection:
    """One WebSocket, from open to close."""

    id: str
    ws: ServerConnection
    slot: PreauthSlot | None
    opened_at: float
    remote: Endpoint
    local: Endpoint
    origin: str | None
    host: str | None
    user_agent: str | None
    forwarded_for: str | None
    nonce: str
    phase: str = "ws_upgrade_started"
    timer: asyncio.TimerHandle | None = None
    timed_out_after_ms: float | None = None
    close_cause: str | None = None
    connect_task: asyncio.Task[None] | None = None
    pending_frames: list[str | bytes] = field(default_factory=list)
    accepted: proto.Accepted | None = None
    seq: int = 0
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    @property
    def remote_ip(self) -> str:
        return self.remote.ip

    @property
    def peer(self) -> str:
        """OpenClaw's `peer=`: remoteIp:remotePort->localIp:localPort."""
        return f"{self.remote}->{self.local}"

    @property
    def closing(self) -> bool:
        return self.close_cause is not None or self.ws.state.name in ("CLOSING", "CLOSED")

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def end_preauth(self) -> None:
        """Stop the handshake timer and give the budget slot back (idempotent)."""
        if self.timer is not None:
            self.timer.cancel()
        if self.slot is not None:
            self.slot.release()


@dataclass(frozen=True)
class Endpoint:
    ip: str
    port: int | None

    @classmethod
    def of(cls, address: Any) -> Endpoint:
        """From a socket address tuple; `n/a` when unknown."""
        return cls(str(address[0]), int(address[1])) if address else cls("n/a", None)

    def __str__(self) -> str:
        return f"{self.ip}:{self.port}" if self.port is not None else "n/a"


class GatewayStub:
    """A running (or not yet started) gateway stub. Use `async with GatewayStub(config) as stub:`."""

    def __init__(self, config: StubConfig, log: GatewayLog | None = None) -> None:
        self.config = config
        self.profile = config.protocol_profile
        self.token = config.token if config.token is not None else secrets.token_urlsafe(24)
        self.log = log if log is not None else GatewayLog(json_path=config.log_file)
        self.metrics = StubMetrics()
        self._burner = CostBurner(time_scale=config.time_scale, seed=config.seed, clock=config.cost_clock)
        self._budget = PreauthBudget(config.max_preauth_per_ip)
        self._pending_slots: dict[ServerConnection, PreauthSlot] = {}
        self._preauth: set[Connection] = set()
        self._authenticated: set[Connection] = set()
        self._conns_by_id: dict[str, Connection] = {}
        self._auth_failures: dict[str, deque[float]] = {}
        self._device_tokens: dict[str, str] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._health_refresh_running = False
        self._health_refresh_pending = False
        self._server: Server | None = None
        self._started_at = time.monotonic()
        self._boot_id = str(uuid.uuid4())
        self._recovery_scope = secrets.token_urlsafe(32)
        dedup: ApprovalDedup = "intent" if config.approval_dedup == "intent" else "off"
        self.approvals = ApprovalService(self.profile, self, self.log, scaled_s=config.scaled_s, dedup=dedup,
                                         max_pending=config.max_pending_approvals)
        self.port = 0

    # -- lifecycle ------------------------------------------------------------------------------

    async def __aenter__(self) -> GatewayStub:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        cfg = self.config
        self._server = await serve(
            self._handle,
            cfg.host,
            cfg.port,
            process_request=self._process_request,
            process_response=self._process_response,
            compression=None,  # the real gateway negotiates no permessage-deflate
            max_size=proto.MAX_PAYLOAD_BYTES,
            ping_interval=cfg.scaled_s(cfg.ping_interval_ms),
            ping_timeout=cfg.scaled_s(cfg.ping_timeout_ms),
            open_timeout=cfg.scaled_s(cfg.effective_handshake_timeout_ms),
            close_timeout=max(0.5, cfg.scaled_s(1000)),
            server_header=None,
            logger=_ws_logger,
        )
        sockname = next(iter(self._server.sockets)).getsockname()
        self.port = int(sockname[1])
        self._started_at = time.monotonic()
        self._spawn(watch_event_loop_lag(self.metrics))
        self._spawn(self._tick_forever())
        if not cfg.health_refresh_cost.is_zero:
            self._spawn(self._refresh_health_forever())

    async def stop(self) -> None:
        """Announce shutdown, close every socket with 1012, stop listening, end background work."""
        if self._server is None:
            return
        started = time.perf_counter()
        server, self._server = self._server, None
        server.close(close_connections=False)
        for conn in list(self._authenticated):
            with contextlib.suppress(ConnectionClosed):
                await conn.ws.send(proto.event_frame("shutdown", {"reason": "gateway stopping"}, conn.next_seq()))
        closing = [c.ws.close(proto.CLOSE_SERVICE_RESTART, proto.REASON_SERVICE_RESTART)
                   for c in (*self._authenticated, *self._preauth)]
        if closing:
            await asyncio.wait([asyncio.ensure_future(c) for c in closing], timeout=SHUTDOWN_CLOSE_GRACE_S)
        server.close(close_connections=True)
        await server.wait_closed()
        self.approvals.close()
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        self.log.console("shutdown", f"completed cleanly in {int((time.perf_counter() - started) * 1000)}ms")
        self.log.close()

    @property
    def url(self) -> str:
        host = f"[{self.config.host}]" if ":" in self.config.host else self.config.host
        return f"ws://{host}:{self.port}/"

    @property
    def http_url(self) -> str:
        return "http" + self.url[2:]

    @property
    def server_version(self) -> str:
        return self.profile.server_version

    def health_template(self) -> dict[str, Any]:
        recorded = self.profile.hello_template()["snapshot"].get("health") or {}
        copied: dict[str, Any] = json.loads(json.dumps(recorded))
        return copied

    def uptime_ms(self) -> int:
        return int((time.monotonic() - self._started_at) * 1000)

    def _spawn(self, work: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    # -- observability --------------------------------------------------------------------------

    def gauges(self) -> dict[str, float]:
        return {
            "preauth_sockets": len(self._preauth),
            "authenticated_sockets": len(self._authenticated),
            "preauth_budget_held": self._budget.held(),
            "time_scale": self.config.time_scale,
        }

    def stats(self) -> dict[str, Any]:
        return {
            "profile": self.profile.name,
            "protocol": self.profile.protocol,
            "time_scale": self.config.time_scale,
            "handshake_timeout_ms": self.config.effective_handshake_timeout_ms,
            "uptime_ms": self.uptime_ms(),
            "counters": dict(self.metrics.counters),
            "gauges": self.gauges(),
            "handshake_ms": self.metrics.handshake_ms.summary(),
            "event_loop_lag_ms": self.metrics.loop_lag_ms.summary(),
            "approvals": self.approvals.stats(),
            "config": self.config.describe(),
        }

    # -- HTTP: upgrade admission and plain endpoints -----------------------------------------------

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if "websocket" not in request.headers.get("Upgrade", "").lower():
            return self._serve_http(connection, request)
        self._burner.burn_blocking(self.config.upgrade_cost)
        remote_ip = Endpoint.of(connection.remote_address).ip
        slot = self._budget.try_acquire(remote_ip)
        if slot is None:
            self.metrics.bump("handshakes_rejected_503")
            self.log.record(StubEvent.HTTP_PREAUTH_REJECTED, "warn", WS_SUBSYSTEM,
                            f"preauth budget exceeded remote={remote_ip} status=503", remote=remote_ip, status=503)
            return _budget_exceeded_response()
        self._pending_slots[connection] = slot
        # Whatever happens next (upgrade refused, socket dropped, hello, close), the slot comes back.
        connection.connection_lost_waiter.add_done_callback(lambda _: slot.release())
        return None

    def _process_response(self, connection: ServerConnection, request: Request, response: Response) -> None:
        if response.status_code != http.HTTPStatus.SWITCHING_PROTOCOLS:
            slot = self._pending_slots.pop(connection, None)
            if slot is not None:
                slot.release()

    def _serve_http(self, connection: ServerConnection, request: Request) -> Response:
        path = request.path.split("?", 1)[0]
        if path in ("/healthz", "/health"):
            return _json_response(connection, {"ok": True, "status": "live"})
        if path in ("/readyz", "/ready"):
            return _json_response(connection, {"ready": self._server is not None})
        if path == "/stats":
            return _json_response(connection, self.stats())
        if path == "/metrics":
            labels = {"profile": self.profile.name}
            text = render_prometheus(self.metrics, self.gauges(), labels)
            return _text_response(connection, text, "text/plain; version=0.0.4; charset=utf-8")
        if path == "/":
            page = "<!doctype html><title>OpenClaw gateway stub</title><p>gateway stub: see /stats</p>\n"
            return _text_response(connection, page, "text/html; charset=utf-8")
        return connection.respond(http.HTTPStatus.NOT_FOUND, "Not Found\n")

    # -- one WebSocket ----------------------------------------------------------------------------

    async def _handle(self, ws: ServerConnection) -> None:
        loop = asyncio.get_running_loop()
        headers: Headers = ws.request.headers if ws.request else Headers()
        conn = Connection(
            id=str(uuid.uuid4()),
            ws=ws,
            slot=self._pending_slots.pop(ws, None),
            opened_at=loop.time(),
            remote=Endpoint.of(ws.remote_address),
            local=Endpoint.of(ws.local_address),
            origin=headers.get("Origin"),
            host=headers.get("Host"),
            user_agent=headers.get("User-Agent"),
            forwarded_for=headers.get("X-Forwarded-For") or headers.get("X-Real-IP"),
            nonce=str(uuid.uuid4()),
        )
        self._preauth.add(conn)
        self.metrics.bump("handshakes_started")
        self.log.record(StubEvent.WS_OPEN, "debug", WS_SUBSYSTEM, f"open conn={conn.id} peer={conn.peer}",
                        connId=conn.id)
        timeout_s = self.config.scaled_s(self.config.effective_handshake_timeout_ms)
        conn.timer = loop.call_later(timeout_s, self._on_handshake_timeout, conn)
        try:
            await asyncio.sleep(self.config.scaled_s(self.config.challenge_latency_ms))
            challenge = proto.challenge_payload(self.profile, conn.nonce, int(time.time() * 1000))
            await ws.send(proto.event_frame("connect.challenge", challenge))
            self._colocated_cost(self.config.colocated_challenge_cost)
            async for message in ws:
                if conn.accepted is None:
                    await self._on_preauth_frame(conn, message)
                else:
                    self._on_request_frame(conn, message)
        except ConnectionClosed:
            pass
        finally:
            self._on_closed(conn)

    def _on_handshake_timeout(self, conn: Connection) -> None:
        if conn.accepted is not None or conn.closing:
            return
        loop = asyncio.get_running_loop()
        conn.timed_out_after_ms = (loop.time() - conn.opened_at) * 1000.0
        conn.close_cause = CAUSE_HANDSHAKE_TIMEOUT
        self.metrics.bump("handshakes_timed_out")
        message = f"{MSG_HANDSHAKE_TIMEOUT} conn={conn.id} peer={conn.peer} remote={conn.remote_ip}" + self._phase(conn)
        self.log.both(StubEvent.WS_HANDSHAKE_TIMEOUT, "warn", WS_SUBSYSTEM, message, connId=conn.id)
        # close() with no arguments, as the real gateway does: 1000 and an empty reason.
        self._spawn(conn.ws.close())

    def _phase(self, conn: Connection) -> str:
        return f" phase={conn.phase}" if self.profile.log_phase else ""

    async def _close(self, conn: Connection, code: int, reason: str, cause: str, reply: str | None = None) -> None:
        if conn.closing:
            return
        conn.close_cause = cause
        if reply is not None:
            with contextlib.suppress(ConnectionClosed):
                await conn.ws.send(reply)
        await conn.ws.close(code, reason)

    async def _on_preauth_frame(self, conn: Connection, message: str | bytes) -> None:
        # April answers every request already read with the one sent during connect, then closes.
        answering_early = (conn.close_cause == "invalid-handshake" and conn.connect_task is not None
                           and conn.ws.state.name == "OPEN")
        if conn.closing and not answering_early:
            return
        if proto.preauth_frame_size(message) > proto.MAX_PREAUTH_PAYLOAD_BYTES:
            self.metrics.bump("handshakes_rejected_other")
            await self._close(conn, proto.CLOSE_TOO_BIG, proto.REASON_PREAUTH_TOO_LARGE, "preauth-payload-too-large")
            return
        if conn.connect_task is not None and self.profile.queues_handshake_frames:
            conn.pending_frames.append(message)
            if len(conn.pending_frames) > proto.MAX_PENDING_HANDSHAKE_FRAMES:
                self.metrics.bump("handshakes_rejected_other")
                await self._close(conn, proto.CLOSE_POLICY_VIOLATION, proto.REASON_TOO_MANY_PENDING,
                                  "too-many-pending-frames")
            return
        parsed = proto.parse_request(message)
        if isinstance(parsed, proto.Request) and conn.connect_task is not None:
            # April: any request while a connect is in flight counts as a first request that is not connect.
            # Each one gets its own res and the 1008 close follows the frames already read (recorded on 4.24
            # and 4.29: 20 requests in one TCP write got 20 res, then the close; the connect got none).
            refused = proto.first_request_not_connect(parsed)
            assert refused.reply is not None
            with contextlib.suppress(ConnectionClosed):
                await conn.ws.send(refused.reply)
            if conn.close_cause is None:
                self.metrics.bump("handshakes_rejected_other")
                conn.close_cause = "invalid-handshake"
                self._spawn(conn.ws.close(refused.code, refused.reason))
            return
        if conn.closing:
            return
        if isinstance(parsed, proto.Request) and parsed.method != "connect":
            parsed = proto.first_request_not_connect(parsed)
        if isinstance(parsed, proto.CloseWith):
            self.metrics.bump("handshakes_rejected_other")
            if parsed.log == "invalid handshake":
                self.log.console(WS_SUBSYSTEM, f"invalid handshake {self._describe(conn)}")
            elif parsed.log:
                self.log.console(WS_SUBSYSTEM, f"{parsed.log} conn={conn.id}")
            await self._close(conn, parsed.code, parsed.reason, "invalid-handshake", reply=parsed.reply)
            return
        conn.phase = "auth_credentials_received"
        conn.connect_task = asyncio.create_task(self._process_connect(conn, parsed))
        conn.tasks.add(conn.connect_task)

    def _describe(self, conn: Connection) -> str:
        return (f"conn={conn.id} peer={conn.peer} remote={conn.remote_ip} fwd={na(conn.forwarded_for)} "
                f"origin={na(conn.origin)} host={na(conn.host)} ua={na(conn.user_agent)}")

    async def _process_connect(self, conn: Connection, request: proto.Request) -> None:
        loop = asyncio.get_running_loop()
        received_at = loop.time()
        await self._burner.burn(self.config.connect_cost_before_timer)
        if conn.closing:
            return
        decision = proto.decide_connect(request.params, self._connect_context(conn))
        if isinstance(decision, proto.Rejected):
            await self._reject_connect(conn, request, decision)
            return
        conn.phase = "auth_validated"
        idle_left_s = self.config.scaled_s(self.config.hello_latency_ms) - (loop.time() - received_at)
        # Always yield at least once: the real connect path awaits I/O before registering the client,
        # and Node runs overdue timers before such a continuation. asyncio would resume this task first,
        # so a timer that fell due during the cost is fired here explicitly.
        await asyncio.sleep(max(0.0, idle_left_s))
        if conn.timer is not None and loop.time() >= conn.timer.when():
            self._on_handshake_timeout(conn)
        if conn.closing:
            return
        # Registered: from here the handshake timer cannot fire, and the budget slot is free again.
        conn.end_preauth()
        conn.accepted = decision
        self._preauth.discard(conn)
        self._authenticated.add(conn)
        self._conns_by_id[conn.id] = conn
        await self._burner.burn(self.config.connect_cost_after_timer)
        device_token = None
        if decision.device_id is not None and decision.device_paired:
            device_token = secrets.token_urlsafe(24)
            self._device_tokens[device_token] = decision.device_id
        payload = proto.hello_ok_payload(
            self.profile, decision, conn_id=conn.id, uptime_ms=self.uptime_ms(), boot_id=self._boot_id,
            device_token=device_token, now_ms=int(time.time() * 1000), http_base=self.http_url,
            recovery_scope=self._recovery_scope,
        )
        conn.phase = "hello_payload_prepared"
        handshake_ms = (loop.time() - conn.opened_at) * 1000.0
        try:
            await conn.ws.send(proto.ok_frame(request.id, payload))
        except ConnectionClosed:
            return
        conn.phase = "ready"
        self.metrics.bump("handshakes_succeeded")
        self.metrics.handshake_ms.observe(handshake_ms)
        client_name = decision.client.get("displayName") or decision.client["id"]
        self.log.record(StubEvent.WS_HELLO, "info", WS_SUBSYSTEM, f"hello conn={conn.id} client={client_name!r}",
                        {"handshakeMs": round(handshake_ms), "role": decision.role}, connId=conn.id)
        self._colocated_cost(self.config.colocated_hello_cost)
        self._request_health_refresh()
        loop.call_later(self.config.scaled_s(self.profile.health_event_after_hello_ms), self._health_event_due, conn)
        conn.connect_task = None
        queued, conn.pending_frames = conn.pending_frames, []
        for frame in queued:
            self._on_request_frame(conn, frame)

    def _connect_context(self, conn: Connection) -> proto.ConnectContext:
        return proto.ConnectContext(
            profile=self.profile,
            auth_mode=self.config.auth_mode,
            shared_secret=self.token,
            peer_is_loopback=_is_loopback(conn.remote_ip),
            has_origin=conn.origin is not None,
            has_forwarded_headers=conn.forwarded_for is not None,
            challenge_nonce=conn.nonce,
            now_ms=int(time.time() * 1000),
            issued_device_tokens=self._device_tokens,
        )

    async def _reject_connect(self, conn: Connection, request: proto.Request, decision: proto.Rejected) -> None:
        counter = "handshakes_auth_failed" if decision.auth_failure else "handshakes_rejected_other"
        self.metrics.bump(counter)
        self.log.record(StubEvent.WS_CONNECT_REJECTED, "warn", WS_SUBSYSTEM,
                        f"connect rejected conn={conn.id} code={decision.error.code}",
                        {"error": decision.error.message, "closeCode": decision.close_code}, connId=conn.id)
        if decision.auth_failure and self.config.auth_failure_delay and self.profile.loopback_auth_failure_delay:
            await asyncio.sleep(self.config.scaled_s(self._auth_failure_delay_ms(conn.remote_ip)))
        reply = proto.error_frame(request.id, decision.error)
        await self._close(conn, decision.close_code, decision.close_reason, "connect-rejected", reply=reply)

    def _auth_failure_delay_ms(self, remote_ip: str) -> int:
        now = time.monotonic()
        window_s = self.config.scaled_s(AUTH_FAILURE_WINDOW_MS)
        failures = self._auth_failures.setdefault(remote_ip, deque())
        while failures and now - failures[0] > window_s:
            failures.popleft()
        failures.append(now)
        return proto.loopback_auth_failure_delay_ms(len(failures))

    def _colocated_cost(self, spec: CostSpec) -> None:
        # In the field the approval clients ran inside the gateway process: their side of each
        # handshake ran on the same loop, later, as its own callback.
        if not spec.is_zero:
            self._spawn(self._burner.burn(spec))

    def _request_health_refresh(self) -> None:
        """The real gateway's `refreshGatewayHealthSnapshot`, coalesced, burning `--health-refresh-cost`.

        2026.4.24 requests one after every hello-ok sent, after every `health` request (its handler answers
        from the cache, then refreshes in the background) and every 60 s. It keeps one refresh promise: a
        request while it runs gets that promise (join). `rearm` marks one more to run after it instead (at
        most one pending, however many requests arrive). The burn is on this loop like every other cost, so it
        delays upgrades, challenges and other handshakes.
        """
        if self.config.health_refresh_cost.is_zero:
            return
        if self._health_refresh_running:
            self.metrics.bump("health_refresh_joins")
            if self.config.health_refresh_coalesce == "rearm":
                self._health_refresh_pending = True
            return
        self._health_refresh_running = True
        self._spawn(self._run_health_refreshes())

    async def _run_health_refreshes(self) -> None:
        try:
            again = True
            while again:
                self._health_refresh_pending = False
                self.metrics.bump("health_refreshes")
                await self._burner.burn(self.config.health_refresh_cost)
                again = self._health_refresh_pending
        finally:
            self._health_refresh_running = False
            self._health_refresh_pending = False

    def _on_closed(self, conn: Connection) -> None:
        conn.end_preauth()
        for task in conn.tasks:
            task.cancel()
        loop = asyncio.get_running_loop()
        duration_ms = round((loop.time() - conn.opened_at) * 1000.0, 3)
        code, reason = conn.ws.close_code, conn.ws.close_reason
        if conn.accepted is None:
            self._preauth.discard(conn)
            self.metrics.bump("closed_before_connect")
            message = (f"{MSG_CLOSED_BEFORE_CONNECT} {self._describe(conn)} code={na(code)} reason={na(reason)}"
                       + self._phase(conn))
            self.log.both(StubEvent.WS_CLOSED_BEFORE_CONNECT, "warn", WS_SUBSYSTEM, message,
                          self._closed_before_connect_fields(conn, duration_ms),
                          console_fields=self.profile.console_appends_fields, connId=conn.id)
        else:
            self._authenticated.discard(conn)
            self._conns_by_id.pop(conn.id, None)
            message = f"closed conn={conn.id} code={na(code)} reason={na(reason)}"
            self.log.record(StubEvent.WS_CLOSE, "info", WS_SUBSYSTEM, message, {"durationMs": round(duration_ms)},
                            connId=conn.id)

    def _closed_before_connect_fields(self, conn: Connection, duration_ms: float) -> dict[str, Any]:
        """The structured fields of the real gateway's record, in its order (recorded on 2026.9.6)."""
        out: dict[str, Any] = {}
        if conn.close_cause:
            out["cause"] = conn.close_cause
        out.update(durationMs=round(duration_ms), handshake="failed")
        if self.profile.log_phase:
            out["phase"] = conn.phase
        out.update(host=na(conn.host), userAgent=na(conn.user_agent), remoteAddr=conn.remote.ip,
                   remotePort=conn.remote.port, localAddr=conn.local.ip, localPort=conn.local.port,
                   endpoint=conn.peer)
        if conn.timed_out_after_ms is not None:
            out["handshakeMs"] = round(conn.timed_out_after_ms)
        return out

    # -- after hello ------------------------------------------------------------------------------

    def _on_request_frame(self, conn: Connection, message: str | bytes) -> None:
        parsed = proto.parse_request(message)
        if isinstance(parsed, proto.CloseWith):
            self.log.console(WS_SUBSYSTEM, f"parse/handle error conn={conn.id}")
            return
        task = asyncio.create_task(self._run_method(conn, parsed))
        conn.tasks.add(task)
        task.add_done_callback(conn.tasks.discard)

    async def _run_method(self, conn: Connection, request: proto.Request) -> None:
        assert conn.accepted is not None
        self.metrics.bump("requests_total")
        method = METHODS.get(request.method)
        # An unknown method is gated like an admin one first (observed on 2026.9.6): a non-admin client
        # learns only that it lacks operator.admin.
        required = method.required_scopes if method else (proto.SCOPE_ADMIN,)
        try:
            missing = proto.missing_scope(conn.accepted.scopes, required)
            if missing is not None:
                raise MethodError(proto.forbidden(missing, required, self.profile))
            if method is None:
                raise MethodError(unknown_method(request.method))
            result = await method.handler(self, request.params, self._method_call(conn, request.id))
            if result is RESPONDED:
                return
            frame = proto.ok_frame(request.id, result)
        except MethodError as exc:
            frame = proto.error_frame(request.id, exc.error)
        await self._send(conn, frame)
        if request.method == "health":
            self._request_health_refresh()

    def _method_call(self, conn: Connection, request_id: str) -> MethodCall:
        async def respond(payload: Any) -> None:
            """An ok `res` for this request now; two-phase methods send "accepted" this way."""
            await self._send(conn, proto.ok_frame(request_id, payload))

        return MethodCall(caller=_caller(conn), respond=respond)

    def _health_event_due(self, conn: Connection) -> None:
        # Only a running server with the client still connected starts the send (nothing left un-awaited).
        if self._server is not None and conn in self._authenticated:
            self._spawn(self._send_health_event(conn))

    async def _send_health_event(self, conn: Connection) -> None:
        """The `health` event the real gateway sends each new client shortly after hello."""
        payload = await METHODS["health"].handler(self, {}, self._method_call(conn, "health"))
        await self._send(conn, proto.event_frame("health", payload, conn.next_seq()))

    # -- exec approvals: what the approval service needs of the server ------------------------------

    def approval_callers(self) -> list[Caller]:
        """Every connection past hello, as the approval rules see it."""
        return [_caller(c) for c in self._authenticated if c.phase == "ready" and not c.closing]

    async def send_approval_event(self, conn_id: str, event: str, payload: Any) -> None:
        """A targeted approval event with the connection's next `seq`, sent `dropIfSlow`: a client whose
        buffer is over the limit loses the frame but not its number, so it sees a gap (reference §6)."""
        conn = self._conns_by_id.get(conn_id)
        if conn is None or conn.closing:
            return
        frame = proto.event_frame(event, payload, conn.next_seq())
        transport = conn.ws.transport
        if transport is not None and transport.get_write_buffer_size() > proto.MAX_BUFFERED_BYTES:
            return
        await self._send(conn, frame)

    async def _send(self, conn: Connection, frame: str) -> None:
        transport = conn.ws.transport
        if transport is not None and transport.get_write_buffer_size() > proto.MAX_BUFFERED_BYTES:
            await self._close(conn, proto.CLOSE_POLICY_VIOLATION, proto.REASON_SLOW_CONSUMER, "slow-consumer")
            return
        with contextlib.suppress(ConnectionClosed):
            await conn.ws.send(frame)

    async def _refresh_health_forever(self) -> None:
        while True:
            await asyncio.sleep(self.config.scaled_s(HEALTH_REFRESH_INTERVAL_MS))
            self._request_health_refresh()

    async def _tick_forever(self) -> None:
        # One global timer, phased by gateway start, not by connect (src/gateway/server-maintenance.ts).
        interval_s = self.config.scaled_s(self.config.tick_interval_ms)
        while True:
            await asyncio.sleep(interval_s)
            now_ms = int(time.time() * 1000)
            for conn in list(self._authenticated):
                await self._send(conn, proto.event_frame("tick", {"ts": now_ms}, conn.next_seq()))


def _caller(conn: Connection) -> Caller:
    accepted = conn.accepted
    assert accepted is not None
    return Caller(conn_id=conn.id, client_id=str(accepted.client["id"]),
                  display_name=accepted.client.get("displayName"), device_id=accepted.device_id,
                  scopes=accepted.scopes, caps=accepted.caps)


def _is_loopback(ip: str) -> bool:
    return ip.startswith("127.") or ip in ("::1", "localhost")


def _budget_exceeded_response() -> Response:
    """Byte for byte the real 503 (recorded on 2026.9.6): exactly these three headers, no Date."""
    body = BUDGET_EXCEEDED_BODY.encode()
    headers = Headers([("Connection", "close"), ("Content-Type", "text/plain; charset=utf-8"),
                       ("Content-Length", str(len(body)))])
    return Response(http.HTTPStatus.SERVICE_UNAVAILABLE.value, "Service Unavailable", headers, body)


def _json_response(connection: ServerConnection, body: dict[str, Any]) -> Response:
    return _text_response(connection, json.dumps(body) + "\n", "application/json; charset=utf-8")


def _text_response(connection: ServerConnection, text: str, content_type: str) -> Response:
    response = connection.respond(http.HTTPStatus.OK, text)
    del response.headers["Content-Type"]
    response.headers["Content-Type"] = content_type
    return response
