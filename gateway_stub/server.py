"""The asyncio server: wires the handshake, protocol, cost model, budget, log and metrics to `websockets`.

Each connection's handshake rules live in a `Handshake` (handshake.py, no I/O); this module owns what it
cannot: the sockets, the timers, the cost burned on the loop, and carrying out the actions the handshake
answers. One event loop serves everything, as the real gateway's Node loop does, so CPU burned for one
handshake delays every other socket's frames and timers. Timers are plain `call_later` handles: when the
loop is busy they fire late, exactly like Node's, and that lateness is the storm. The HTTP side (same port,
like the real gateway): `/healthz`, `/readyz`, `/metrics`, `/stats`, `/`.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import http
import json
import logging
import secrets
import sys
import time
import uuid
from collections import deque
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, assert_never

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import State

from gateway_stub import protocol as proto
from gateway_stub.approval_service import ApprovalDedup, ApprovalService
from gateway_stub.approvals import Caller
from gateway_stub.budget import BUDGET_EXCEEDED_BODY, PreauthBudget, PreauthSlot
from gateway_stub.config import StubConfig
from gateway_stub.cost import CostBurner, CostSpec
from gateway_stub.gateway_log import GatewayLog
from gateway_stub.handshake import (
    Action,
    Bump,
    Close,
    ConsoleLine,
    DelayRejection,
    Dispatch,
    Endpoint,
    Handshake,
    Peer,
    Phase,
    Ready,
    Record,
    Register,
    Send,
    StartConnect,
)
from gateway_stub.methods import METHODS, RESPONDED, MethodCall, MethodError, unknown_method
from gateway_stub.metrics import (
    LOOP_DELAY_INTERVAL_S,
    RecentLag,
    StubMetrics,
    exposition,
    stub_registry,
    watch_event_loop_lag,
)
from openclaw_wire.constants import HEALTH_REFRESH_INTERVAL_MS, PRESENCE_MAX_ENTRIES, PRESENCE_TTL_MS
from openclaw_wire.log_records import WS_SUBSYSTEM, StubEvent

# Failures counted for the loopback auth delay within this window (auth-rate-limit.ts: 60 000 ms).
AUTH_FAILURE_WINDOW_MS = 60_000
SHUTDOWN_CLOSE_GRACE_S = 2.0
# Node's server.listen() backlog (511), where asyncio's default is 100: with thousands of clients released on one
# tick, a short accept queue drops SYNs, and each dropped one is retried a second or more later.
NODE_LISTEN_BACKLOG = 511

_ws_logger = logging.getLogger("gateway_stub.websockets")
_ws_logger.setLevel(logging.ERROR)


@dataclass(eq=False)
class Connection:
    """One WebSocket, from open to close: the socket, its timer and tasks here, its handshake's state in
    `handshake`."""

    ws: ServerConnection
    handshake: Handshake
    slot: PreauthSlot | None
    opened_at: float  # loop time
    nonce: str
    timer: asyncio.TimerHandle | None = None
    seq: int = 0
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def id(self) -> str:
        return self.handshake.peer.conn_id

    @property
    def socket_open(self) -> bool:
        return self.ws.state is State.OPEN

    @property
    def closing(self) -> bool:
        return self.handshake.is_closing(socket_open=self.socket_open)

    def elapsed_ms(self) -> float:
        return (asyncio.get_running_loop().time() - self.opened_at) * 1000.0

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def end_preauth(self) -> None:
        """Stop the handshake timer and give the budget slot back (idempotent)."""
        if self.timer is not None:
            self.timer.cancel()
        if self.slot is not None:
            self.slot.release()


class GatewayStub:
    """A running (or not yet started) gateway stub. Use `async with GatewayStub(config) as stub:`."""

    def __init__(self, config: StubConfig, log: GatewayLog | None = None) -> None:
        self.config = config
        self.generation = config.generation
        self.token = config.token if config.token is not None else secrets.token_urlsafe(24)
        self.log = log if log is not None else GatewayLog(json_path=config.log_file)
        # Health's delay interval is a duration of the gateway's, so it scales like the others.
        self.metrics = StubMetrics(recent_loop_lag=RecentLag(LOOP_DELAY_INTERVAL_S * config.time_scale))
        self._registry = stub_registry(self.metrics, self.gauges, self.generation.name)
        self._burner = CostBurner(time_scale=config.time_scale, seed=config.seed, clock=config.cost_clock)
        self._budget = PreauthBudget(config.max_preauth_per_ip)
        self._pending_slots: dict[ServerConnection, PreauthSlot] = {}
        self._preauth: set[Connection] = set()
        self._authenticated: set[Connection] = set()
        self._conns_by_id: dict[str, Connection] = {}
        self._auth_failures: dict[str, deque[float]] = {}
        self._device_tokens: dict[str, str] = {}
        self._paired_scopes: dict[str, tuple[str, ...]] = {}  # device id -> the scopes it was paired with
        self._background: set[asyncio.Task[Any]] = set()
        self._health_refresh_running = False
        self._health_refresh_pending = False
        self._health_broadcast_due = False  # April: a `health` event to every client is on its way
        self._presence: dict[str, dict[str, Any]] = {}  # April: each client's presence entry, by its name
        self._server: Server | None = None
        self._started_at = time.monotonic()
        self._boot_id = str(uuid.uuid4())
        self._recovery_scope = secrets.token_urlsafe(32)
        dedup: ApprovalDedup = "intent" if config.approval_dedup == "intent" else "off"
        self.approvals = ApprovalService(self.generation, self, self.log, scaled_s=config.scaled_s, dedup=dedup,
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
            backlog=NODE_LISTEN_BACKLOG,
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
        self.metrics.gc_pauses.install()
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
        self.metrics.gc_pauses.remove()
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
        return self.generation.server_version

    def health_template(self) -> dict[str, Any]:
        return _copied(self.generation.hello_template()["snapshot"].get("health") or {})

    def status_template(self) -> dict[str, Any]:
        return _copied(self.generation.status_template())

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

    def recent_loop_lag(self) -> dict[str, Any]:
        """The loop lag over the last second: what health and status report (and only that: a health event goes
        to every new client, so it must not cost what the whole of /stats does)."""
        return self.metrics.recent_loop_lag.summary()

    def stats(self) -> dict[str, Any]:
        return {
            "profile": self.generation.name,
            "protocol": self.generation.protocol,
            "time_scale": self.config.time_scale,
            "handshake_timeout_ms": self.config.effective_handshake_timeout_ms,
            "uptime_ms": self.uptime_ms(),
            "counters": dict(self.metrics.counters),
            "gauges": self.gauges(),
            "handshake_ms": self.metrics.handshake.summary(),
            "event_loop_lag_ms": self.metrics.loop_lag.summary(),
            "event_loop_lag_last_interval_ms": self.recent_loop_lag(),
            "gc_pauses": self.metrics.gc_pauses.summary(),
            "approvals": self.approvals.stats(),
            # Whether a refresh burns now and one more is queued (rearm): lets a reader wait for it to end.
            "health_refresh": {"running": self._health_refresh_running, "pending": self._health_refresh_pending},
            "config": self.config.describe(),
            # Memory blocks CPython holds for objects: the stub's live heap (after `/stats?collect=1`, once its
            # cyclic garbage is freed), where resident memory keeps the arenas of its busiest moment.
            "python_allocated_blocks": sys.getallocatedblocks(),
        }

    # -- HTTP: upgrade admission and plain endpoints -----------------------------------------------

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if "websocket" not in (_header(request.headers, "Upgrade", first_only=False) or "").lower():
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
            if "collect=1" in request.path.partition("?")[2].split("&"):
                gc.collect()  # `/stats?collect=1`: its cyclic garbage freed first, for a live heap to compare
            return _json_response(connection, self.stats())
        if path == "/metrics":
            body, content_type = exposition(self._registry, _header(request.headers, "Accept", first_only=False))
            return _text_response(connection, body.decode(), content_type)
        if path == "/":
            page = "<!doctype html><title>OpenClaw gateway stub</title><p>gateway stub: see /stats</p>\n"
            return _text_response(connection, page, "text/html; charset=utf-8")
        return connection.respond(http.HTTPStatus.NOT_FOUND, "Not Found\n")

    # -- one WebSocket ----------------------------------------------------------------------------

    async def _handle(self, ws: ServerConnection) -> None:
        loop = asyncio.get_running_loop()
        slot = self._pending_slots.pop(ws, None)
        headers: Headers = ws.request.headers if ws.request else Headers()
        peer = Peer(
            conn_id=str(uuid.uuid4()),
            remote=Endpoint.of(ws.remote_address),
            local=Endpoint.of(ws.local_address),
            origin=_header(headers, "Origin"),
            host=_header(headers, "Host"),
            user_agent=_header(headers, "User-Agent"),
            forwarded_for=_header(headers, "X-Forwarded-For", first_only=False) or _header(headers, "X-Real-IP"),
        )
        delays_auth_failures = self.config.auth_failure_delay and self.generation.loopback_auth_failure_delay
        handshake = Handshake(peer, self.generation, auth_failure_delay=delays_auth_failures)
        conn = Connection(ws=ws, handshake=handshake, slot=slot, opened_at=loop.time(),
                          nonce=str(uuid.uuid4()))
        self._preauth.add(conn)
        self._carry_out_now(conn, handshake.opened())
        timeout_s = self.config.scaled_s(self.config.effective_handshake_timeout_ms)
        conn.timer = loop.call_later(timeout_s, self._on_handshake_timer, conn)
        try:
            await asyncio.sleep(self.config.scaled_s(self.config.effective_challenge_latency_ms))
            challenge = proto.challenge_payload(self.generation, conn.nonce, int(time.time() * 1000))
            await ws.send(proto.event_frame("connect.challenge", challenge))
            self._colocated_cost(self.config.colocated_challenge_cost)
            async for message in ws:
                await self._carry_out(conn, handshake.frame_received(message, socket_open=conn.socket_open))
        except ConnectionClosed:
            pass
        finally:
            self._on_closed(conn)

    def _on_handshake_timer(self, conn: Connection) -> None:
        self._carry_out_now(conn, conn.handshake.timer_fired(conn.elapsed_ms(), socket_open=conn.socket_open))

    async def _carry_out(self, conn: Connection, actions: list[Action]) -> None:
        """Carry out the handshake's actions in order, waiting where an action has to."""
        for action in actions:
            match action:
                case Send(frame):
                    with contextlib.suppress(ConnectionClosed):
                        await conn.ws.send(frame)
                case Close(code, reason, background=False):
                    await conn.ws.close(code, reason)
                case DelayRejection():
                    delay_ms = self._auth_failure_delay_ms(conn.handshake.peer.remote.ip)
                    await asyncio.sleep(self.config.scaled_s(delay_ms))
                    await self._carry_out(conn, conn.handshake.rejection_due(socket_open=conn.socket_open))
                case _:
                    self._carry_out_now(conn, [action])

    def _carry_out_now(self, conn: Connection, actions: list[Action]) -> None:
        """The actions that need no waiting: all a timer callback may be given."""
        for action in actions:
            match action:
                case Close(code, reason, background=True):
                    self._spawn(conn.ws.close(code, reason))
                case Record(event, level, message, fields, console, console_fields):
                    extra = dict(fields) if fields is not None else None
                    if console:
                        self.log.both(event, level, WS_SUBSYSTEM, message, extra, console_fields=console_fields,
                                      connId=conn.id)
                    else:
                        self.log.record(event, level, WS_SUBSYSTEM, message, extra, connId=conn.id)
                case ConsoleLine(message):
                    self.log.console(WS_SUBSYSTEM, message)
                case Bump(counter):
                    self.metrics.bump(counter)
                case StartConnect(request):
                    conn.tasks.add(asyncio.create_task(self._process_connect(conn, request)))
                case Register():
                    conn.end_preauth()
                    self._preauth.discard(conn)
                    self._authenticated.add(conn)
                    self._conns_by_id[conn.id] = conn
                case Ready(handshake_ms):
                    self._after_hello(conn, handshake_ms)
                case Dispatch(message):
                    self._on_request_frame(conn, message)
                case Send() | Close() | DelayRejection():
                    raise AssertionError(f"{action} has to be awaited: use _carry_out")
                case _:
                    assert_never(action)

    async def _process_connect(self, conn: Connection, request: proto.Request) -> None:
        loop = asyncio.get_running_loop()
        handshake = conn.handshake
        received_at = loop.time()
        await self._burner.burn(self.config.connect_cost_before_timer)

        def decide() -> proto.Accepted | proto.Rejected:
            return proto.decide_connect(request.params, self._connect_context(conn))

        await self._carry_out(conn, handshake.connect_cost_done(decide, socket_open=conn.socket_open))
        decision = handshake.accepted
        if decision is None:  # refused, or dropped because it was cut during the cost
            return
        idle_left_s = self.config.scaled_s(self.config.effective_hello_latency_ms) - (loop.time() - received_at)
        # Always yield at least once: the real connect path awaits I/O before registering the client,
        # and Node runs overdue timers before such a continuation. asyncio would resume this task first,
        # so a timer that fell due during the cost is fired here explicitly.
        await asyncio.sleep(max(0.0, idle_left_s))
        if conn.timer is not None and loop.time() >= conn.timer.when():
            self._on_handshake_timer(conn)
        await self._carry_out(conn, handshake.hello_due(socket_open=conn.socket_open))
        if not handshake.registered:
            return
        # Registered: from here the handshake timer cannot fire, and the budget slot is free again.
        await self._burner.burn(self.config.connect_cost_after_timer)
        device_token = None
        if decision.device_id is not None and decision.device_paired:
            device_token = secrets.token_urlsafe(24)
            self._device_tokens[device_token] = decision.device_id
            self._paired_scopes.setdefault(decision.device_id, decision.scopes)  # as first approved
        payload = proto.hello_ok_payload(
            self.generation, decision, conn_id=conn.id, uptime_ms=self.uptime_ms(), boot_id=self._boot_id,
            device_token=device_token, now_ms=int(time.time() * 1000), http_base=self.http_url,
            recovery_scope=self._recovery_scope,
        )
        self._carry_out_now(conn, handshake.hello_prepared(conn.elapsed_ms()))
        try:
            await conn.ws.send(proto.ok_frame(request.id, payload))
        except ConnectionClosed:
            return
        await self._carry_out(conn, handshake.hello_sent())

    def _after_hello(self, conn: Connection, handshake_ms: float) -> None:
        self.metrics.handshake.observe(handshake_ms)
        self._colocated_cost(self.config.colocated_hello_cost)
        self._request_health_refresh()
        delay_s = self.config.scaled_s(self.generation.health_event_after_hello_ms)
        if self.generation.presence_events:
            self._note_presence(conn, "connect")
        if not self.generation.health_event_to_every_client:
            asyncio.get_running_loop().call_later(delay_s, self._health_event_due, conn)
        elif not self._health_broadcast_due:
            self._health_broadcast_due = True
            asyncio.get_running_loop().call_later(delay_s, self._health_broadcast_now)

    def _connect_context(self, conn: Connection) -> proto.ConnectContext:
        peer = conn.handshake.peer
        return proto.ConnectContext(
            generation=self.generation,
            auth_mode=self.config.auth_mode,
            shared_secret=self.token,
            peer_is_loopback=_is_loopback(peer.remote.ip),
            has_origin=peer.origin is not None,
            has_forwarded_headers=peer.forwarded_for is not None,
            challenge_nonce=conn.nonce,
            now_ms=int(time.time() * 1000),
            issued_device_tokens=self._device_tokens, paired_scopes=self._paired_scopes,
        )

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
        actions = conn.handshake.closed(conn.ws.close_code, conn.ws.close_reason, conn.elapsed_ms())
        self._preauth.discard(conn)
        was_authenticated = conn in self._authenticated
        self._authenticated.discard(conn)
        self._conns_by_id.pop(conn.id, None)
        self._carry_out_now(conn, actions)
        if was_authenticated and self.generation.presence_events and self._server is not None:
            self._note_presence(conn, "disconnect")
            self._spawn(self._send_event(list(self._authenticated), "presence", {"presence": self._presence_list()}))

    def _note_presence(self, conn: Connection, reason: str) -> None:
        """The client's presence entry, as April keeps one per client name (recorded on 4.29)."""
        accepted = conn.handshake.accepted
        assert accepted is not None
        client = accepted.client
        host = str(client.get("displayName") or client["id"])
        mode = str(client.get("mode", ""))
        self._presence.pop(host, None)  # re-inserted: the dict stays oldest first
        self._presence[host] = {"host": host, "version": client.get("version"), "platform": client.get("platform"),
                                "mode": mode, "roles": [accepted.role], "scopes": list(accepted.scopes),
                                "reason": reason, "ts": int(time.time() * 1000), "text": f"Node: {host} · mode {mode}"}

    def _presence_list(self) -> list[dict[str, Any]]:
        """The gateway's entry and the clients', newest first; as April keeps it, at most PRESENCE_MAX_ENTRIES
        clients seen within PRESENCE_TTL_MS."""
        now_ms = int(time.time() * 1000)
        while self._presence:
            oldest = next(iter(self._presence))
            if len(self._presence) <= PRESENCE_MAX_ENTRIES and now_ms - self._presence[oldest]["ts"] <= PRESENCE_TTL_MS:
                break
            del self._presence[oldest]
        gateway = dict(self.generation.hello_template()["snapshot"]["presence"][0], ts=now_ms)
        return [gateway, *reversed(self._presence.values())]

    def _health_broadcast_now(self) -> None:
        self._health_broadcast_due = False
        if self._server is not None and self._authenticated:
            self._spawn(self._send_health_event(list(self._authenticated)))

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
        accepted = conn.handshake.accepted
        assert accepted is not None
        self.metrics.bump("requests_total")
        method = METHODS.get(request.method)
        # An unknown method is gated like an admin one first (observed on 2026.9.6): a non-admin client
        # learns only that it lacks operator.admin.
        required = method.required_scopes if method else (proto.SCOPE_ADMIN,)
        try:
            missing = proto.missing_scope(accepted.scopes, required)
            if missing is not None:
                raise MethodError(proto.forbidden(missing, required, self.generation))
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
            self._spawn(self._send_health_event([conn]))

    async def _send_health_event(self, conns: list[Connection]) -> None:
        """The `health` event the real gateway sends shortly after a hello: to the new client (9.6), or to every
        connected one (April); one payload for all of them."""
        payload = await METHODS["health"].handler(self, {}, self._method_call(conns[0], "health"))
        await self._send_event(conns, "health", payload)

    async def _send_event(self, conns: list[Connection], event: str, payload: Any) -> None:
        frame = proto.event_frames(event, payload)  # the payload encoded once for every connection
        for conn in conns:
            await self._send(conn, frame(conn.next_seq()))

    # -- exec approvals: what the approval service needs of the server ------------------------------

    def approval_callers(self) -> list[Caller]:
        """Every connection past hello, as the approval rules see it."""
        return [_caller(c) for c in self._authenticated if c.handshake.phase is Phase.READY and not c.closing]

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
            await self._carry_out(conn, conn.handshake.slow_consumer(socket_open=conn.socket_open))
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
            await self._send_event(list(self._authenticated), "tick", {"ts": int(time.time() * 1000)})


def _caller(conn: Connection) -> Caller:
    accepted = conn.handshake.accepted
    assert accepted is not None
    return Caller(conn_id=conn.id, client_id=str(accepted.client["id"]),
                  display_name=accepted.client.get("displayName"), device_id=accepted.device_id,
                  scopes=accepted.scopes, caps=accepted.caps)


def _is_loopback(ip: str) -> bool:
    return ip.startswith("127.") or ip in ("::1", "localhost")


def _header(headers: Headers, name: str, *, first_only: bool = True) -> str | None:
    """A request header as Node's http module hands it to the gateway: a repeated Origin, Host, User-Agent or
    X-Real-IP keeps its first value, other repeated headers are joined with ", "; None when absent.

    `Headers.get` raises on a repeated header instead, which would fail the upgrade or the HTTP answer.
    """
    values = headers.get_all(name)
    if not values:
        return None
    return values[0] if first_only else ", ".join(values)


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


def _copied(recorded: dict[str, Any]) -> dict[str, Any]:
    """A recorded payload to fill in, leaving the recording untouched."""
    copied: dict[str, Any] = json.loads(json.dumps(recorded))
    return copied
