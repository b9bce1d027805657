"""One proxied connection over asyncio: its two sockets, and a link per direction running the toxic chain.

A link takes what one socket reads through the toxics of its stream, in order of addition, and writes
it to the other socket. The chain follows the proxy's toxics while the connection is open: a new toxic
starts on open connections too, an updated one restarts (its toxicity rolled again, limit_data's count
kept), a removed timeout toxic closes the connection it held (Toxiproxy >= 2.1.1). Backpressure is
Toxiproxy's: a full queue or a destination that does not drain stops the source being read. One
deliberate difference: reset_peer always ends in an RST, even when added to an open connection
(Toxiproxy sets SO_LINGER 0 only on connections opened while it exists).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

from harness.faults.embedded_proxy.addresses import loopback_ip, split_host_port
from harness.faults.embedded_proxy.records import ProxyRecord, Toxic
from harness.faults.embedded_proxy.toxics import RUNTIMES, Chunk, StubClosed, ToxicRuntime

READ_SIZE = 32 * 1024  # chunks are at most this, as Go's io.Copy reads them
LATENCY_BUFFER = 1024  # chunks queued before the reader waits when the chain has a latency toxic (as in Toxiproxy)
LINK_BUFFER = 4  # otherwise: Toxiproxy's other toxics take their input unbuffered, so the sender feels them at once
DIAL_TIMEOUT_S = 10.0


class DestClosed(Exception):  # noqa: N818
    """The link's destination socket is already closed."""


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

    def __init__(self, on_accept: Callable[[ClientEndpoint], None]) -> None:
        super().__init__()
        self.on_accept = on_accept

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.pause("dial")
        self.on_accept(self)


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
        self.chain: list[ToxicRuntime] = []
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
        chain: list[ToxicRuntime] = []
        for toxic in self.conn.record.toxics:
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

    def close_after(self, runtime: ToxicRuntime) -> None:
        """A toxic ends the stream (a timer fired): the toxics after it see the end, then `dest` closes."""
        if runtime in self.chain:
            self.close_from(self.chain, self.chain.index(runtime) + 1)

    def close_from(self, chain: list[ToxicRuntime], start: int) -> None:
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

    async def _through(self, chain: list[ToxicRuntime], index: int, chunk: Chunk) -> None:
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

    async def _finish(self, chain: list[ToxicRuntime], start: int) -> None:
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

    def __init__(self, record: ProxyRecord, client: Endpoint, upstream: Endpoint,
                 on_closed: Callable[[Connection], None]) -> None:
        self.record = record
        self.on_closed = on_closed
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
            self.on_closed(self)

    def abort(self) -> None:
        for link in self.links.values():
            link.abort()
        self.client.abort()
        self.upstream.abort()
        self.on_closed(self)


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
