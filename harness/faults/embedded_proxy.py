"""An embedded Toxiproxy 2.x: Toxiproxy's HTTP API and its TCP proxying with toxics, on loopback only.

No Toxiproxy server binary can be installed on this project's machines, so this asyncio program runs
in its place, in its own process. It follows Toxiproxy's Go source (api.go, proxy.go, link.go,
toxic_collection.go, toxics/*.go) so that a client, or tests/test_toxiproxy_api.py, cannot tell the two
apart:

* the same routes and methods (POST or PATCH to update), JSON field names and order, status codes
  (201 proxy create and populate, 200 toxic create, 204 delete and reset, 400, 404, 405, 409, 500 when
  a listen address cannot be bound) and error bodies `{"error": "...", "status": N}`;
* the same toxics with the same attribute names and units: latency (latency, jitter: ms), bandwidth
  (rate: KB/s), slow_close (delay: ms), timeout (timeout: ms, 0 = hold and drop forever), reset_peer
  (timeout: ms, then RST), limit_data (bytes), slicer (average_size, size_variation: bytes; delay: µs),
  noop; defaults name `<type>_<stream>`, stream downstream, toxicity 1.0, attributes 0;
* toxics chained per stream in order of addition, applied to open connections as well as new ones,
  toxicity rolled per connection (again when a toxic is updated), limit_data's count kept across
  updates, a removed timeout toxic closing the connections it held (Toxiproxy >= 2.1.1).

Deliberate differences: every listen and upstream address must be loopback (127.0.0.0/8, ::1,
localhost), else 400, since this project sends load to loopback only (Toxiproxy would bind or dial
anything), and a proxy created without `listen` binds 127.0.0.1:0 rather than every interface;
reset_peer always ends in an RST, even when added to an open connection (Toxiproxy sets SO_LINGER 0
only on connections opened while it exists); inputs on which Toxiproxy's goroutines would panic or
recurse forever (bandwidth rate < 0, slicer average_size <= 0 or size_variation < 0) are clamped:
a rate <= 0 holds the data as Toxiproxy's rate 0 does, slices are at least one byte. /version says
`2.12.0+embedded`; there is no /metrics (Toxiproxy serves it only when metrics are switched on).

    python -m harness.faults.embedded_proxy [--host 127.0.0.1] [--port 8474]

prints `{"event":"ready","url":"http://127.0.0.1:PORT"}` on stdout once listening (port 0 picks one),
and stops on SIGINT or SIGTERM, closing every listener and connection. Bad options: one line on
stderr, exit 2; the API port cannot be bound: exit 3.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http
import ipaddress
import json
import os
import random
import secrets
import signal
import socket
import struct
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any, NoReturn
from urllib.parse import unquote, urlsplit

VERSION = "2.12.0+embedded"
DEFAULT_API_PORT = 8474
READ_SIZE = 32 * 1024  # chunks are at most this, as Go's io.Copy reads them
LATENCY_BUFFER = 1024  # chunks queued before the reader waits when the chain has a latency toxic (as in Toxiproxy)
LINK_BUFFER = 4  # otherwise: Toxiproxy's other toxics take their input unbuffered, so the sender feels them at once
MAX_BODY = 16 * 1024 * 1024
DIAL_TIMEOUT_S = 10.0
LISTEN_BACKLOG = 4096  # Go listens with somaxconn; asyncio's default (100) makes connect bursts wait on SYN retries
LOOPBACK_RULE = "the embedded proxy listens on and connects to loopback addresses only (127.0.0.0/8, ::1, localhost)"

# Toxic types: Go struct name, attribute names in the struct's order, Go type of the attributes.
TOXIC_TYPES: dict[str, tuple[str, tuple[str, ...], str]] = {
    "noop": ("NoopToxic", (), "int64"),
    "latency": ("LatencyToxic", ("latency", "jitter"), "int64"),
    "bandwidth": ("BandwidthToxic", ("rate",), "int64"),
    "slow_close": ("SlowCloseToxic", ("delay",), "int64"),
    "timeout": ("TimeoutToxic", ("timeout",), "int64"),
    "reset_peer": ("ResetToxic", ("timeout",), "int64"),
    "limit_data": ("LimitDataToxic", ("bytes",), "int64"),
    "slicer": ("SlicerToxic", ("average_size", "size_variation", "delay"), "int"),
}
STREAMS = ("upstream", "downstream")  # Toxiproxy's direction order: toxic lists show upstream first


# --------------------------------------------------------------------------------------------- errors


class ApiError(Exception):
    """An error answered as Toxiproxy does: `{"error": message, "status": status}`."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def bad_body(detail: str) -> ApiError:
    return ApiError(f"bad request body: {detail}", 400)


def missing_field(what: str) -> ApiError:
    return ApiError(f"missing required field: {what}", 400)


def proxy_not_found() -> ApiError:
    return ApiError("proxy not found", 404)


def toxic_not_found() -> ApiError:
    return ApiError("toxic not found", 404)


# ------------------------------------------------------------------------------------------ JSON, Go-style


def go_json(value: Any) -> bytes:
    """Like Go's json.Marshal: compact, UTF-8, with <, > and & escaped as Go does."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    for char, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                          ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(char, escaped)
    return text.encode()


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"invalid character '{name[0]}' looking for beginning of value")


def parse_body(raw: bytes) -> Any:
    """The first JSON value of a request body, as Go's json.Decoder reads it (trailing data ignored)."""
    try:
        text = raw.decode()
    except UnicodeDecodeError as exc:
        raise bad_body("invalid UTF-8 in JSON") from exc
    stripped = text.lstrip(" \t\r\n")
    if not stripped:
        raise bad_body("EOF")
    try:
        value, _ = json.JSONDecoder(parse_constant=_reject_constant).raw_decode(stripped)
    except ValueError as exc:
        raise bad_body(str(exc)) from exc
    return value


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _lookup(obj: dict[str, Any], key: str) -> tuple[bool, Any]:
    """Go matches JSON keys to struct fields exactly first, then case-insensitively."""
    if key in obj:
        return True, obj[key]
    for name, value in reversed(obj.items()):
        if name.lower() == key:
            return True, value
    return False, None


def _unmarshal_error(value: Any, where: str, go_type: str) -> ApiError:
    kind = _json_kind(value)
    if kind == "number":
        kind = f"number {json.dumps(value)}"
    return bad_body(f"json: cannot unmarshal {kind} into Go struct field {where} of type {go_type}")


def _object(value: Any, go_type: str) -> dict[str, Any]:
    if value is None:
        return {}  # Go: null decodes into a struct as a no-op
    if not isinstance(value, dict):
        raise bad_body(f"json: cannot unmarshal {_json_kind(value)} into Go value of type {go_type}")
    return value


def _string_field(obj: dict[str, Any], key: str, struct_name: str, default: str) -> str:
    present, value = _lookup(obj, key)
    if not present or value is None:
        return default
    if not isinstance(value, str):
        raise _unmarshal_error(value, f"{struct_name}.{key}", "string")
    return value


def _bool_field(obj: dict[str, Any], key: str, struct_name: str, default: bool) -> bool:
    present, value = _lookup(obj, key)
    if not present or value is None:
        return default
    if not isinstance(value, bool):
        raise _unmarshal_error(value, f"{struct_name}.{key}", "bool")
    return value


def _int_field(obj: dict[str, Any], key: str, struct_name: str, default: int, go_type: str) -> int:
    present, value = _lookup(obj, key)
    if not present or value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise _unmarshal_error(value, f"{struct_name}.{key}", go_type)
    if not -(2**63) <= value < 2**63:
        raise _unmarshal_error(value, f"{struct_name}.{key}", go_type)
    return value


def float32(value: float) -> float:
    packed: tuple[float] = struct.unpack("f", struct.pack("f", value))
    return packed[0]


def float32_json(value: float) -> float | int:
    """The number Go's json.Marshal writes for a float32: the shortest decimal that reads back the same."""
    if value.is_integer():
        return int(value)
    for digits in range(1, 10):
        text = f"{value:.{digits}g}"
        if float32(float(text)) == value:
            return float(text)
    return value


def _float32_field(obj: dict[str, Any], key: str, struct_name: str, default: float) -> float:
    present, value = _lookup(obj, key)
    if not present or value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _unmarshal_error(value, f"{struct_name}.{key}", "float32")
    try:
        return float32(float(value))
    except (OverflowError, struct.error) as exc:
        raise _unmarshal_error(value, f"{struct_name}.{key}", "float32") from exc


# ------------------------------------------------------------------------------------------ addresses


def split_host_port(address: str) -> tuple[str, str]:
    """Go's net.SplitHostPort: "host:port", "[v6]:port"."""
    if address.startswith("["):
        end = address.find("]")
        if end < 0:
            raise ValueError(f"address {address}: missing ']' in address")
        host, rest = address[1:end], address[end + 1:]
        if not rest.startswith(":"):
            raise ValueError(f"address {address}: missing port in address")
        return host, rest[1:]
    colon = address.rfind(":")
    if colon < 0:
        raise ValueError(f"address {address}: missing port in address")
    host, port = address[:colon], address[colon + 1:]
    if ":" in host:
        raise ValueError(f"address {address}: too many colons in address")
    return host, port


def loopback_ip(host: str) -> str | None:
    """The loopback IP a host stands for ("localhost" -> 127.0.0.1), or None if it is not loopback."""
    if host.lower() == "localhost":
        return "127.0.0.1"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    return str(ip) if ip.is_loopback else None


def join_host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def loopback_address(address: str, what: str, *, allow_port_zero: bool) -> tuple[str, int]:
    """(ip, port) of a loopback host:port, or an ApiError 400 that says why not."""
    try:
        host, port_text = split_host_port(address)
    except ValueError as exc:
        raise ApiError(f"invalid {what} address {address!r}: {exc}", 400) from exc
    if not port_text.isdigit() or not (0 if allow_port_zero else 1) <= int(port_text) <= 65535:
        raise ApiError(f"invalid {what} address {address!r}: bad port {port_text!r}", 400)
    ip = loopback_ip(host)
    if ip is None:
        shown = host or "every interface"
        raise ApiError(f"{what} address {address!r} is not loopback ({shown}): {LOOPBACK_RULE}", 400)
    return ip, int(port_text)


def check_addresses(listen: str, upstream: str) -> None:
    loopback_address(listen, "listen", allow_port_zero=True)
    loopback_address(upstream, "upstream", allow_port_zero=False)


async def dial(upstream: str) -> Endpoint:
    host, port_text = split_host_port(upstream)
    candidates = ["127.0.0.1", "::1"] if host.lower() == "localhost" else [str(loopback_ip(host))]
    loop = asyncio.get_running_loop()
    error: OSError = ConnectionRefusedError(f"dial tcp {upstream}: connection refused")
    for ip in candidates:
        try:
            _, endpoint = await asyncio.wait_for(loop.create_connection(Endpoint, ip, int(port_text)),
                                                 DIAL_TIMEOUT_S)
            return endpoint
        except (OSError, TimeoutError) as exc:
            error = exc if isinstance(exc, OSError) else ConnectionRefusedError(str(exc))
    raise error


# ------------------------------------------------------------------------------------------------ toxics


@dataclass(eq=False)
class Toxic:
    name: str
    type: str
    stream: str  # as the client wrote it; `direction` is the parsed stream
    direction: str
    toxicity: float
    attributes: dict[str, int]
    generation: int = 0  # bumped on update: links restart the toxic with the new attributes

    def as_json(self) -> dict[str, Any]:
        return {"attributes": dict(self.attributes), "name": self.name, "type": self.type,
                "stream": self.stream, "toxicity": float32_json(self.toxicity)}


def decode_attributes(toxic_type: str, raw: Any, current: dict[str, int]) -> dict[str, int]:
    struct_name, names, go_type = TOXIC_TYPES[toxic_type]
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise bad_body(f"json: cannot unmarshal {_json_kind(raw)} into Go struct field "
                       f".attributes of type toxics.{struct_name}")
    return {name: _int_field(raw, name, f"{struct_name}.attributes", current.get(name, 0), go_type)
            for name in names}


@dataclass
class Chunk:
    data: bytes
    ts: float  # when it was read (time.monotonic()); latency toxics move it on as Toxiproxy does


Emit = Callable[[Chunk], Awaitable[None]]


class StubClosed(Exception):  # noqa: N818 - Toxiproxy's name for a toxic ending its stream
    """Raised by a toxic that ends its stream: the toxics after it see the end, then the output closes."""

    def __init__(self, runtime: Runtime, *, reset: bool = False) -> None:
        super().__init__(runtime.toxic.name)
        self.runtime = runtime
        self.reset = reset


class DestClosed(Exception):  # noqa: N818
    """The link's destination socket is already closed."""


class Runtime:
    """One toxic on one link (one direction of one connection). Runs only if `active` (the toxicity roll)."""

    def __init__(self, toxic: Toxic, link: Link, state: dict[str, int]) -> None:
        self.toxic = toxic
        self.generation = toxic.generation
        self.link = link
        self.state = state
        self.attrs = dict(toxic.attributes)
        self.active = random.random() < toxic.toxicity
        self.stopped = False
        self._waiters: set[asyncio.Future[None]] = set()

    def start(self) -> None:
        """The toxic starts on the link (timers)."""

    def stop(self) -> None:
        """The toxic is removed or replaced: sleeps end at once, as an interrupted Toxiproxy toxic's do."""
        self.stopped = True
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def pause(self, seconds: float) -> None:
        if seconds <= 0 or self.stopped:
            return
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        timer = loop.call_later(seconds, _resolve, waiter)
        self._waiters.add(waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiters.discard(waiter)

    async def chunk(self, chunk: Chunk, emit: Emit) -> None:
        await emit(chunk)

    async def eof(self) -> None:
        """The stream ended before this toxic."""


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class Latency(Runtime):
    async def chunk(self, chunk: Chunk, emit: Emit) -> None:
        delay_ms = self.attrs["latency"]
        jitter = self.attrs["jitter"]
        if jitter > 0:
            delay_ms += random.randrange(jitter * 2) - jitter
        sleep = delay_ms / 1000.0 - (time.monotonic() - chunk.ts)  # from when the chunk was read
        await self.pause(sleep)
        chunk.ts += sleep
        await emit(chunk)


class Bandwidth(Runtime):
    def __init__(self, toxic: Toxic, link: Link, state: dict[str, int]) -> None:
        super().__init__(toxic, link, state)
        self.debt = 0.0  # seconds owed; negative when a sleep overran (Toxiproxy offsets the next one)

    async def chunk(self, chunk: Chunk, emit: Emit) -> None:
        rate = self.attrs["rate"]
        if rate <= 0:
            # Toxiproxy's loop for rate 0 never lets a byte through (and panics below 0): hold the data.
            while not self.stopped:
                await self.pause(3600.0)
            await emit(chunk)
            return
        self.debt += len(chunk.data) / (rate * 1000.0)
        data, step = chunk.data, rate * 100  # larger chunks go out in 100 ms pieces
        while len(data) > step:
            await self.pause(0.1)
            await emit(Chunk(data[:step], chunk.ts))
            data = data[step:]
            self.debt -= 0.1
        started = time.monotonic()
        await self.pause(self.debt)
        self.debt -= time.monotonic() - started
        await emit(Chunk(data, chunk.ts))


class SlowClose(Runtime):
    async def eof(self) -> None:
        await self.pause(self.attrs["delay"] / 1000.0)


class Timeout(Runtime):
    """Drops all data; closes the stream `timeout` ms after the last chunk (never, for 0)."""

    def __init__(self, toxic: Toxic, link: Link, state: dict[str, int]) -> None:
        super().__init__(toxic, link, state)
        self.timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self._arm()

    def _arm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        if self.attrs["timeout"] > 0 and not self.stopped:
            self.timer = asyncio.get_running_loop().call_later(self.attrs["timeout"] / 1000.0, self._fire)

    def _fire(self) -> None:
        self.link.close_after(self)

    def stop(self) -> None:
        super().stop()
        if self.timer is not None:
            self.timer.cancel()

    async def chunk(self, chunk: Chunk, emit: Emit) -> None:
        self._arm()  # the data is dropped; Toxiproxy's timer restarts with each chunk


class ResetPeer(Runtime):
    """On the first chunk (or the end of the stream): wait `timeout` ms, then reset the connection."""

    async def chunk(self, chunk: Chunk, emit: Emit) -> None:
        await self._reset()

    async def eof(self) -> None:
        await self._reset()

    async def _reset(self) -> NoReturn:
        await asyncio.sleep(max(self.attrs["timeout"], 0) / 1000.0)  # not interruptible in Toxiproxy either
        raise StubClosed(self, reset=True)


class LimitData(Runtime):
    async def chunk(self, chunk: Chunk, emit: Emit) -> None:
        limit = self.attrs["bytes"]
        remaining = max(limit - self.state["transmitted"], 0)
        data = chunk.data[:remaining]
        if data:
            await emit(Chunk(data, chunk.ts))
            self.state["transmitted"] += len(data)
        if limit - self.state["transmitted"] <= 0:
            raise StubClosed(self)


class Slicer(Runtime):
    def slices(self, size: int) -> list[tuple[int, int]]:
        average, variation = self.attrs["average_size"], max(self.attrs["size_variation"], 0)
        out: list[tuple[int, int]] = []
        stack = [(0, size)]
        while stack:
            start, end = stack.pop()
            if (end - start) - average <= variation or end - start <= 1:
                out.append((start, end))
                continue
            mid = start + (end - start) // 2
            if variation > 0:
                mid += random.randrange(variation * 2) - variation
            mid = min(max(mid, start + 1), end - 1)
            stack.append((mid, end))
            stack.append((start, mid))
        return out

    async def chunk(self, chunk: Chunk, emit: Emit) -> None:
        for start, end in self.slices(len(chunk.data)):
            await emit(Chunk(chunk.data[start:end], chunk.ts))
            await self.pause(self.attrs["delay"] / 1_000_000.0)


RUNTIMES: dict[str, type[Runtime]] = {
    "noop": Runtime, "latency": Latency, "bandwidth": Bandwidth, "slow_close": SlowClose, "timeout": Timeout,
    "reset_peer": ResetPeer, "limit_data": LimitData, "slicer": Slicer,
}


# ---------------------------------------------------------------------------------------- connections


class Endpoint(asyncio.Protocol):
    """One socket of a proxied connection: feeds what it reads to `reader_link`, is written by `writer_link`."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.reader_link: Link | None = None
        self.writer_link: Link | None = None
        self.writable = asyncio.Event()
        self.writable.set()
        self.lost = False
        self._early: list[bytes] = []  # read before the links were attached
        self._early_eof = False
        self._paused_for: set[str] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def attach(self, reader_link: Link, writer_link: Link) -> None:
        self.reader_link, self.writer_link = reader_link, writer_link
        for data in self._early:
            reader_link.feed(data)
        self._early.clear()
        if self._early_eof:
            reader_link.feed_eof()

    def data_received(self, data: bytes) -> None:
        if self.reader_link is None:
            self._early.append(data)
        else:
            self.reader_link.feed(data)

    def eof_received(self) -> bool:
        self._eof()
        return True  # keep the socket open to write the rest; the link closes it

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.writable.set()  # wakes a writer waiting to drain: it finds the socket gone
        self._eof()

    def _eof(self) -> None:
        if self.reader_link is None:
            self._early_eof = True
        else:
            self.reader_link.feed_eof()

    def pause_writing(self) -> None:
        self.writable.clear()
        if self.writer_link is not None:
            self.writer_link.source.pause("dest")

    def resume_writing(self) -> None:
        self.writable.set()
        if self.writer_link is not None:
            self.writer_link.source.resume("dest")

    def pause(self, reason: str) -> None:
        """Stop reading (the queue is full, the peer does not drain, or the upstream is being dialed)."""
        if not self._paused_for and self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()
        self._paused_for.add(reason)

    def resume(self, reason: str) -> None:
        if reason not in self._paused_for:
            return
        self._paused_for.discard(reason)
        if not self._paused_for and self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def closed(self) -> bool:
        return self.lost or self.transport is None or self.transport.is_closing()

    def write(self, data: bytes) -> None:
        if self.closed():
            raise DestClosed
        assert self.transport is not None
        self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def set_linger_zero(self) -> None:
        sock = self.transport.get_extra_info("socket") if self.transport is not None else None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


class ClientEndpoint(Endpoint):
    """The accepted side: reads nothing until its upstream is dialed."""

    def __init__(self, proxy: Proxy) -> None:
        super().__init__()
        self.proxy = proxy

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.pause("dial")
        self.proxy.accepted(self)


class Link:
    """One direction of one connection: what `source` reads goes down the toxic chain and out to `dest`.

    Chunks queue up to `limit` (LATENCY_BUFFER with a latency toxic, else LINK_BUFFER), then the source
    stops being read, as does a source whose destination does not drain. A writer task takes them through
    the chain in order; with no toxics and nothing queued, a read is written straight out.
    """

    def __init__(self, conn: Connection, direction: str, source: Endpoint, dest: Endpoint) -> None:
        self.conn = conn
        self.direction = direction
        self.source = source
        self.dest = dest
        self.buffer: deque[Chunk | None] = deque()
        self.wakeup = asyncio.Event()
        self.chain: list[Runtime] = []
        self.states: dict[int, dict[str, int]] = {}
        self.limit = LINK_BUFFER
        self.busy = False
        self.eof_fed = False
        self.closing = False
        self.done = False
        self.tasks: set[asyncio.Task[None]] = set()
        self._writer: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.sync()
        self._writer = self._spawn(self._write_loop())

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    def sync(self) -> None:
        """Match the chain to the proxy's toxics on this stream: new toxics start, updated ones restart."""
        old = {id(rt.toxic): rt for rt in self.chain}
        chain: list[Runtime] = []
        for toxic in self.conn.proxy.toxics:
            if toxic.direction != self.direction:
                continue
            runtime = old.pop(id(toxic), None)
            if runtime is None or runtime.generation != toxic.generation:
                if runtime is not None:
                    runtime.stop()
                state = self.states.setdefault(id(toxic), {"transmitted": 0})
                runtime = RUNTIMES[toxic.type](toxic, self, state)
                if runtime.active and not self.closing:
                    runtime.start()
            chain.append(runtime)
        for runtime in old.values():
            runtime.stop()
            self.states.pop(id(runtime.toxic), None)
        self.chain = chain
        self.limit = LATENCY_BUFFER if any(rt.toxic.type == "latency" for rt in chain) else LINK_BUFFER
        if len(self.buffer) < self.limit:
            self.source.resume("queue")

    def toxic_removed(self, toxic: Toxic) -> None:
        position = next((i for i, rt in enumerate(self.chain) if rt.toxic is toxic), None)
        self.sync()
        if position is not None and toxic.type == "timeout":
            # Toxiproxy's TimeoutToxic.Cleanup closes the stream it held, whatever the toxicity roll.
            self.close_from(self.chain, position)

    def close_after(self, runtime: Runtime) -> None:
        """A toxic ends the stream (a timer fired): the toxics after it see the end, then `dest` closes."""
        if runtime in self.chain:
            self.close_from(self.chain, self.chain.index(runtime) + 1)

    def close_from(self, chain: list[Runtime], start: int) -> None:
        if self.closing or self.done:
            return
        self.closing = True
        if self._writer is not None:
            self._writer.cancel()
        self._spawn(self._finish(chain, start))

    def feed(self, data: bytes) -> None:
        """Data read from `source`."""
        if self.closing:
            return  # the stream was ended by a toxic: what still comes is not passed on
        if not self.chain and not self.busy and not self.buffer:
            try:
                self.dest.write(data)
            except DestClosed:
                self.close_from([], 0)
            return
        now = time.monotonic()
        for offset in range(0, len(data), READ_SIZE):
            self.buffer.append(Chunk(data[offset:offset + READ_SIZE], now))
        self.wakeup.set()
        if len(self.buffer) >= self.limit:
            self.source.pause("queue")

    def feed_eof(self) -> None:
        if self.eof_fed or self.closing:
            return
        self.eof_fed = True
        self.buffer.append(None)
        self.wakeup.set()

    async def _write_loop(self) -> None:
        while True:
            while not self.buffer:
                self.wakeup.clear()
                await self.wakeup.wait()
            item = self.buffer.popleft()
            if len(self.buffer) < self.limit:
                self.source.resume("queue")
            if item is None:
                break
            self.busy = True
            chain = self.chain
            try:
                await self._through(chain, 0, item)
            except StubClosed as closed:
                if closed.reset:
                    self.conn.arm_reset()
                start = chain.index(closed.runtime) + 1 if closed.runtime in chain else len(chain)
                self.closing = True
                await self._finish(chain, start)
                return
            except (OSError, DestClosed):
                self.closing = True
                await self._finish([], 0)
                return
            self.busy = False
        self.closing = True
        await self._finish(self.chain, 0)

    async def _through(self, chain: list[Runtime], index: int, chunk: Chunk) -> None:
        while index < len(chain) and not chain[index].active:
            index += 1
        if index == len(chain):
            await self._output(chunk.data)
            return

        async def emit(next_chunk: Chunk) -> None:
            await self._through(chain, index + 1, next_chunk)

        await chain[index].chunk(chunk, emit)

    async def _output(self, data: bytes) -> None:
        if not data:
            return
        self.dest.write(data)
        if not self.dest.writable.is_set():
            await self.dest.writable.wait()
            if self.dest.lost:
                raise DestClosed

    async def _finish(self, chain: list[Runtime], start: int) -> None:
        """The end of the stream goes down the rest of the chain (slow_close waits), then `dest` closes."""
        try:
            for runtime in chain[start:]:
                if runtime.active:
                    try:
                        await runtime.eof()
                    except StubClosed as closed:
                        if closed.reset:
                            self.conn.arm_reset()
        finally:
            self._close()

    def _close(self) -> None:
        if self.done:
            return
        self.done = True
        self.buffer.clear()
        for runtime in self.chain:
            runtime.stop()
        self.dest.close()
        for task in list(self.tasks):
            if task is not asyncio.current_task():
                task.cancel()
        self.conn.link_done()

    def abort(self) -> None:
        self.closing = True
        self.done = True
        self.buffer.clear()
        for runtime in self.chain:
            runtime.stop()
        for task in list(self.tasks):
            if task is not asyncio.current_task():
                task.cancel()


class Connection:
    """A client connection and its upstream connection, joined by an upstream and a downstream Link."""

    def __init__(self, proxy: Proxy, client: Endpoint, upstream: Endpoint) -> None:
        self.proxy = proxy
        self.client = client
        self.upstream = upstream
        self.links = {"upstream": Link(self, "upstream", client, upstream),
                      "downstream": Link(self, "downstream", upstream, client)}

    def start(self) -> None:
        for link in self.links.values():
            link.start()
        self.client.attach(self.links["upstream"], self.links["downstream"])
        self.upstream.attach(self.links["downstream"], self.links["upstream"])
        self.client.resume("dial")

    def arm_reset(self) -> None:
        """SO_LINGER 0 on both sockets: closing them sends RST, as Toxiproxy's reset_peer makes it."""
        self.client.set_linger_zero()
        self.upstream.set_linger_zero()

    def link_done(self) -> None:
        if all(link.done for link in self.links.values()):
            self.proxy.connections.discard(self)

    def abort(self) -> None:
        for link in self.links.values():
            link.abort()
        self.client.abort()
        self.upstream.abort()
        self.proxy.connections.discard(self)


# ---------------------------------------------------------------------------------------------- proxies


class Proxy:
    def __init__(self, name: str, listen: str, upstream: str) -> None:
        self.name = name
        self.listen = listen
        self.upstream = upstream
        self.enabled = False
        self.toxics: list[Toxic] = []
        self.connections: set[Connection] = set()
        self._server: asyncio.Server | None = None
        self._epoch = 0
        self._dialing: set[asyncio.Task[None]] = set()

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "listen": self.listen, "upstream": self.upstream, "enabled": self.enabled,
                "toxics": self.toxic_list()}

    def toxic_list(self) -> list[dict[str, Any]]:
        return [t.as_json() for stream in STREAMS for t in self.toxics if t.direction == stream]

    async def start(self) -> None:
        if self.enabled:
            return
        ip, port = loopback_address(self.listen, "listen", allow_port_zero=True)
        try:
            server = await asyncio.get_running_loop().create_server(lambda: ClientEndpoint(self), ip, port,
                                                                    reuse_address=True, backlog=LISTEN_BACKLOG)
        except OSError as exc:
            reason = os.strerror(exc.errno).lower() if exc.errno else str(exc)
            raise ApiError(f"listen tcp {join_host_port(ip, port)}: bind: {reason}", 500) from exc
        self._server = server
        bound = server.sockets[0].getsockname()
        self.listen = join_host_port(ip, int(bound[1]))
        self.enabled = True
        self._epoch += 1

    def stop(self) -> None:
        """Stop listening and close every connection (Toxiproxy's stop: "gateway down")."""
        if not self.enabled:
            return
        self.enabled = False
        self._epoch += 1
        if self._server is not None:
            self._server.close()
            self._server = None
        for task in list(self._dialing):
            task.cancel()
        for conn in list(self.connections):
            conn.abort()

    def accepted(self, client: ClientEndpoint) -> None:
        task = asyncio.get_running_loop().create_task(self._connect(client, self._epoch))
        self._dialing.add(task)
        task.add_done_callback(self._dialing.discard)

    async def _connect(self, client: ClientEndpoint, epoch: int) -> None:
        try:
            upstream = await dial(self.upstream)
        except (OSError, ValueError):
            client.close()  # Toxiproxy closes the client when the upstream cannot be reached
            return
        except asyncio.CancelledError:  # the proxy stopped meanwhile
            client.abort()
            raise
        if epoch != self._epoch or not self.enabled or client.lost:
            client.abort()
            upstream.abort()
            return
        conn = Connection(self, client, upstream)
        self.connections.add(conn)
        conn.start()

    def links(self, direction: str) -> list[Link]:
        return [conn.links[direction] for conn in list(self.connections)]

    def find_toxic(self, name: str) -> Toxic | None:
        return next((t for t in self.toxics if t.name == name), None)

    def add_toxic(self, toxic: Toxic) -> None:
        self.toxics.append(toxic)
        for link in self.links(toxic.direction):
            link.sync()

    def update_toxic(self, toxic: Toxic) -> None:
        toxic.generation += 1
        for link in self.links(toxic.direction):
            link.sync()

    def remove_toxic(self, toxic: Toxic) -> None:
        self.toxics.remove(toxic)
        for link in self.links(toxic.direction):
            link.toxic_removed(toxic)

    def reset_toxics(self) -> None:
        for toxic in list(self.toxics):
            self.remove_toxic(toxic)


# ------------------------------------------------------------------------------------------------- API


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str | None = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)


def json_response(value: Any, status: int = 200) -> Response:
    return Response(status, go_json(value))


Handler = Callable[[str, list[str], bytes], Awaitable[Response]]


def error_response(error: ApiError) -> Response:
    # Go's http.Error: text/plain content type, a trailing newline.
    body = go_json({"error": error.message, "status": error.status}) + b"\n"
    return Response(error.status, body, "text/plain; charset=utf-8", [("X-Content-Type-Options", "nosniff")])


class Toxiproxy:
    """The proxy collection and the HTTP API over it."""

    def __init__(self) -> None:
        self.proxies: dict[str, Proxy] = {}
        self._lock = asyncio.Lock()  # one API call at a time, as Toxiproxy's collection lock makes them

    async def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Response:
        if headers.get("user-agent", "").startswith("Mozilla/"):
            return Response(403, b"User agent not allowed\n", "text/plain; charset=utf-8",
                            [("X-Content-Type-Options", "nosniff")])
        parts = path.split("/")[1:]
        if any(not part for part in parts):
            return self._not_found()
        parts = [unquote(part) for part in parts]
        route = self._route(parts)
        if route is None:
            return self._not_found()
        methods, handler = route
        if method not in methods:
            return Response(405, b"", None)
        async with self._lock:
            try:
                return await handler(method, parts, body)
            except ApiError as error:
                return error_response(error)

    @staticmethod
    def _not_found() -> Response:
        return Response(404, b"404 page not found\n", "text/plain; charset=utf-8",
                        [("X-Content-Type-Options", "nosniff")])

    def _route(self, parts: list[str]) -> tuple[tuple[str, ...], Handler] | None:
        match parts:
            case ["version"]:
                return ("GET",), self.version
            case ["reset"]:
                return ("POST",), self.reset
            case ["populate"]:
                return ("POST",), self.populate
            case ["proxies"]:
                return ("GET", "POST"), self.proxies_route
            case ["proxies", _]:
                return ("GET", "POST", "PATCH", "DELETE"), self.proxy_route
            case ["proxies", _, "toxics"]:
                return ("GET", "POST"), self.toxics_route
            case ["proxies", _, "toxics", _]:
                return ("GET", "POST", "PATCH", "DELETE"), self.toxic_route
        return None

    def _proxy(self, name: str) -> Proxy:
        proxy = self.proxies.get(name)
        if proxy is None:
            raise proxy_not_found()
        return proxy

    async def version(self, method: str, parts: list[str], body: bytes) -> Response:
        return Response(200, f'{{"version": "{VERSION}"}}\n'.encode(), "application/json;charset=utf-8")

    async def reset(self, method: str, parts: list[str], body: bytes) -> Response:
        for proxy in list(self.proxies.values()):
            await proxy.start()
            proxy.reset_toxics()
        return Response(204, b"", None)

    async def proxies_route(self, method: str, parts: list[str], body: bytes) -> Response:
        if method == "GET":
            return json_response({name: self.proxies[name].as_json() for name in sorted(self.proxies)})
        obj = _object(parse_body(body), "toxiproxy.Proxy")
        name = _string_field(obj, "name", "Proxy", "")
        listen = _string_field(obj, "listen", "Proxy", "")
        upstream = _string_field(obj, "upstream", "Proxy", "")
        enabled = _bool_field(obj, "enabled", "Proxy", True)
        if not name:
            raise missing_field("name")
        if not upstream:
            raise missing_field("upstream")
        listen = listen or "127.0.0.1:0"
        check_addresses(listen, upstream)
        if name in self.proxies:
            raise ApiError("proxy already exists", 409)
        proxy = Proxy(name, listen, upstream)
        if enabled:
            await proxy.start()
        self.proxies[name] = proxy
        return json_response(proxy.as_json(), 201)

    async def populate(self, method: str, parts: list[str], body: bytes) -> Response:
        value = parse_body(body)
        if value is not None and not isinstance(value, list):
            raise bad_body(f"json: cannot unmarshal {_json_kind(value)} into Go value of type "
                           "[]struct { toxiproxy.Proxy; Enabled *bool \"json:\\\"enabled\\\"\" }")
        entries: list[tuple[str, str, str, bool]] = []
        for index, item in enumerate(value or [], start=1):
            obj = _object(item, "struct { toxiproxy.Proxy; Enabled *bool }")
            name = _string_field(obj, "name", "Proxy", "")
            listen = _string_field(obj, "listen", "Proxy", "")
            upstream = _string_field(obj, "upstream", "Proxy", "")
            enabled = _bool_field(obj, "enabled", "Proxy", True)
            if not name:
                raise ApiError(f"missing required field: name at proxy {index}", 400)
            if not upstream:
                raise ApiError(f"missing required field: upstream at proxy {index}", 400)
            listen = listen or "127.0.0.1:0"
            check_addresses(listen, upstream)
            entries.append((name, listen, upstream, enabled))
        done: list[Proxy] = []
        error: ApiError | None = None
        for name, listen, upstream, enabled in entries:
            existing = self.proxies.get(name)
            if existing is not None:
                if existing.listen == listen and existing.upstream == upstream:
                    done.append(existing)
                    continue
                existing.stop()
            proxy = Proxy(name, listen, upstream)
            if enabled:
                try:
                    await proxy.start()
                except ApiError as exc:
                    error = exc
                    break
            self.proxies[name] = proxy
            done.append(proxy)
        result: dict[str, Any] = {}
        if error is not None:
            result = {"error": error.message, "status": error.status}
        result["proxies"] = [p.as_json() for p in done] or None
        return json_response(result, error.status if error is not None else 201)

    async def proxy_route(self, method: str, parts: list[str], body: bytes) -> Response:
        proxy = self._proxy(parts[1])
        if method == "GET":
            return json_response(proxy.as_json())
        if method == "DELETE":
            proxy.stop()
            del self.proxies[proxy.name]
            return Response(204, b"", None)
        obj = _object(parse_body(body), "toxiproxy.Proxy")
        listen = _string_field(obj, "listen", "Proxy", proxy.listen)
        upstream = _string_field(obj, "upstream", "Proxy", proxy.upstream)
        enabled = _bool_field(obj, "enabled", "Proxy", proxy.enabled)
        check_addresses(listen, upstream)
        if listen != proxy.listen or upstream != proxy.upstream:
            proxy.stop()  # Toxiproxy restarts the proxy and drops its connections
            proxy.listen, proxy.upstream = listen, upstream
        if enabled != proxy.enabled:
            if enabled:
                await proxy.start()
            else:
                proxy.stop()
        return json_response(proxy.as_json())

    async def toxics_route(self, method: str, parts: list[str], body: bytes) -> Response:
        proxy = self._proxy(parts[1])
        if method == "GET":
            return json_response(proxy.toxic_list())
        obj = _object(parse_body(body), "toxics.ToxicWrapper")
        name = _string_field(obj, "name", "ToxicWrapper", "")
        toxic_type = _string_field(obj, "type", "ToxicWrapper", "")
        stream = _string_field(obj, "stream", "ToxicWrapper", "downstream")
        toxicity = _float32_field(obj, "toxicity", "ToxicWrapper", 1.0)
        _, raw_attributes = _lookup(obj, "attributes")
        if raw_attributes is not None and not isinstance(raw_attributes, dict):
            raise bad_body(f"json: cannot unmarshal {_json_kind(raw_attributes)} into Go struct field "
                           "ToxicWrapper.attributes of type toxics.Toxic")
        direction = stream.lower()
        if direction not in STREAMS:
            raise ApiError("stream was invalid, can be either upstream or downstream", 400)
        name = name or f"{toxic_type}_{stream}"
        if toxic_type not in TOXIC_TYPES:
            raise ApiError("invalid toxic type", 400)
        if proxy.find_toxic(name) is not None:
            raise ApiError("toxic already exists", 409)
        attributes = decode_attributes(toxic_type, raw_attributes, {})
        toxic = Toxic(name, toxic_type, stream, direction, toxicity, attributes)
        proxy.add_toxic(toxic)
        return json_response(toxic.as_json())  # 200, as Toxiproxy answers a new toxic

    async def toxic_route(self, method: str, parts: list[str], body: bytes) -> Response:
        proxy = self._proxy(parts[1])
        toxic = proxy.find_toxic(parts[3])
        if toxic is None:
            raise toxic_not_found()
        if method == "GET":
            return json_response(toxic.as_json())
        if method == "DELETE":
            proxy.remove_toxic(toxic)
            return Response(204, b"", None)
        obj = _object(parse_body(body), "struct { Attributes interface {}; Toxicity float32 }")
        _, raw_attributes = _lookup(obj, "attributes")
        attributes = decode_attributes(toxic.type, raw_attributes, toxic.attributes)
        toxic.toxicity = _float32_field(obj, "toxicity", "", toxic.toxicity)
        toxic.attributes = attributes
        proxy.update_toxic(toxic)
        return json_response(toxic.as_json())

    async def close(self) -> None:
        for proxy in self.proxies.values():
            proxy.stop()


# ------------------------------------------------------------------------------------------- HTTP server


class HttpServer:
    """A small HTTP/1.1 server (keep-alive, Content-Length or chunked bodies) in front of `Toxiproxy`."""

    def __init__(self, api: Toxiproxy) -> None:
        self.api = api
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.StreamWriter] = set()
        self.url = ""

    async def start(self, host: str, port: int) -> str:
        self._server = await asyncio.start_server(self._serve, host, port, reuse_address=True, backlog=LISTEN_BACKLOG)
        bound = self._server.sockets[0].getsockname()
        self.url = f"http://{join_host_port(host, int(bound[1]))}"
        return self.url

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._clients):
            writer.transport.abort()
        await self.api.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._clients.add(writer)
        try:
            while await self._one(reader, writer):
                pass
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            self._clients.discard(writer)
            writer.close()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        line = await reader.readline()
        if not line.strip():
            return False
        try:
            method, target, version = line.decode("latin-1").split()
        except ValueError:
            await self._send(writer, Response(400, b"400 Bad Request", "text/plain; charset=utf-8"), "HTTP/1.1",
                             close=True)
            return False
        headers: dict[str, str] = {}
        while True:
            header = await reader.readline()
            if header in (b"\r\n", b"\n", b""):
                break
            key, _, value = header.decode("latin-1").partition(":")
            headers[key.strip().lower()] = value.strip()
        if headers.get("expect", "").lower() == "100-continue":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        body = await self._body(reader, headers)
        connection = headers.get("connection", "").lower()
        close = connection == "close" or (version == "HTTP/1.0" and connection != "keep-alive")
        if body is None:
            response = Response(413, b"request body too large\n", "text/plain; charset=utf-8")
            close = True
        else:
            response = await self.api.handle(method, urlsplit(target).path, headers, body)
        await self._send(writer, response, version, close=close)
        return not close

    @staticmethod
    async def _body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes | None:
        if "chunked" in headers.get("transfer-encoding", "").lower():
            parts: list[bytes] = []
            total = 0
            while True:
                size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                total += size
                if total > MAX_BODY:
                    return None
                parts.append(await reader.readexactly(size))
                await reader.readline()
        length = int(headers.get("content-length", "0") or "0")
        if length > MAX_BODY:
            return None
        return await reader.readexactly(length) if length > 0 else b""

    @staticmethod
    async def _send(writer: asyncio.StreamWriter, response: Response, version: str, *, close: bool) -> None:
        reason = http.HTTPStatus(response.status).phrase
        lines = [f"{'HTTP/1.0' if version == 'HTTP/1.0' else 'HTTP/1.1'} {response.status} {reason}"]
        if response.content_type is not None:
            lines.append(f"Content-Type: {response.content_type}")
        lines += [f"{key}: {value}" for key, value in response.headers]
        lines.append(f"X-Toxiproxy-Request-Id: {secrets.token_hex(10)}")
        lines.append(f"Date: {formatdate(usegmt=True)}")
        if response.status != 204:
            lines.append(f"Content-Length: {len(response.body)}")
        if close:
            lines.append("Connection: close")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + response.body)
        await writer.drain()


class EmbeddedToxiproxy:
    """In-process use: `server = EmbeddedToxiproxy(); url = await server.start(); ...; await server.close()`."""

    def __init__(self) -> None:
        self.api = Toxiproxy()
        self.http = HttpServer(self.api)

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        if loopback_ip(host) is None:
            raise ValueError(f"--host {host!r} is not loopback: {LOOPBACK_RULE}")
        return await self.http.start(str(loopback_ip(host)), port)

    async def close(self) -> None:
        await self.http.close()


# ----------------------------------------------------------------------------------------------- command


class _OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _host_arg(value: str) -> str:
    ip = loopback_ip(value)
    if ip is None:
        raise argparse.ArgumentTypeError(f"{value!r} is not a loopback address ({LOOPBACK_RULE})")
    return ip


def _port_arg(value: str) -> int:
    if not value.isdigit() or int(value) > 65535:
        raise argparse.ArgumentTypeError(f"{value!r} is not a port number (0-65535; 0 picks a free port)")
    return int(value)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = _OneLineParser(prog="python -m harness.faults.embedded_proxy",
                            description="An embedded Toxiproxy 2.x-compatible server, loopback only.")
    parser.add_argument("--host", type=_host_arg, default="127.0.0.1", help="API address (loopback)")
    parser.add_argument("--port", type=_port_arg, default=DEFAULT_API_PORT, help="API port; 0 picks a free one")
    return parser.parse_args(argv)


async def serve(host: str, port: int) -> int:
    server = EmbeddedToxiproxy()
    try:
        url = await server.start(host, port)
    except OSError as exc:
        reason = os.strerror(exc.errno).lower() if exc.errno else str(exc)
        print(f"embedded_proxy: error: --port: cannot listen on {join_host_port(host, port)}: {reason}",
              file=sys.stderr, flush=True)
        return 3
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(json.dumps({"event": "ready", "url": url}, separators=(",", ":")), flush=True)
    try:
        await stop.wait()
    finally:
        await server.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    sys.exit(main())
