"""What each toxic does to a stream: one runtime per toxic per link, as Toxiproxy's toxics/*.go behave.

latency (latency, jitter: ms) delays each chunk from when it was read; bandwidth (rate: KB/s) paces the
data; slow_close (delay: ms) delays the close; timeout (timeout: ms, 0 = hold forever) drops the data and
closes that long after the last chunk; reset_peer (timeout: ms) resets the connection; limit_data (bytes)
closes after that many bytes, its count kept across updates; slicer (average_size, size_variation:
bytes; delay: µs) splits writes; noop passes everything on. The toxicity is rolled once per link, again
when a toxic is updated. Deliberate differences: inputs on which Toxiproxy's goroutines would panic or
recurse forever (bandwidth rate < 0, slicer average_size <= 0 or size_variation < 0) are clamped: a rate
<= 0 holds the data as Toxiproxy's rate 0 does, slices are at least one byte.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import NoReturn, Protocol

from harness.faults.embedded_proxy.records import Toxic


class Link(Protocol):
    """What a toxic may ask of the link it runs on (`harness.faults.embedded_proxy.link.Link`)."""

    def close_after(self, runtime: ToxicRuntime) -> None:
        """End the link once `runtime`'s stream has drained (slow_close, timeout)."""


@dataclass
class Chunk:
    data: bytes
    ts: float  # when it was read (time.monotonic()); latency toxics move it on as Toxiproxy does


Emit = Callable[[Chunk], Awaitable[None]]


class StubClosed(Exception):  # noqa: N818 - Toxiproxy's name for a toxic ending its stream
    """Raised by a toxic that ends its stream: the toxics after it see the end, then the output closes."""

    def __init__(self, runtime: ToxicRuntime, *, reset: bool = False) -> None:
        super().__init__(runtime.toxic.name)
        self.runtime = runtime
        self.reset = reset


class ToxicRuntime:
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


class Latency(ToxicRuntime):
    async def chunk(self, chunk: Chunk, emit: Emit) -> None:
        delay_ms = self.attrs["latency"]
        jitter = self.attrs["jitter"]
        if jitter > 0:
            delay_ms += random.randrange(jitter * 2) - jitter
        sleep = delay_ms / 1000.0 - (time.monotonic() - chunk.ts)  # from when the chunk was read
        await self.pause(sleep)
        chunk.ts += sleep
        await emit(chunk)


class Bandwidth(ToxicRuntime):
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


class SlowClose(ToxicRuntime):
    async def eof(self) -> None:
        await self.pause(self.attrs["delay"] / 1000.0)


class Timeout(ToxicRuntime):
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


class ResetPeer(ToxicRuntime):
    """On the first chunk (or the end of the stream): wait `timeout` ms, then reset the connection."""

    async def chunk(self, chunk: Chunk, emit: Emit) -> None:
        await self._reset()

    async def eof(self) -> None:
        await self._reset()

    async def _reset(self) -> NoReturn:
        await asyncio.sleep(max(self.attrs["timeout"], 0) / 1000.0)  # not interruptible in Toxiproxy either
        raise StubClosed(self, reset=True)


class LimitData(ToxicRuntime):
    async def chunk(self, chunk: Chunk, emit: Emit) -> None:
        limit = self.attrs["bytes"]
        remaining = max(limit - self.state["transmitted"], 0)
        data = chunk.data[:remaining]
        if data:
            await emit(Chunk(data, chunk.ts))
            self.state["transmitted"] += len(data)
        if limit - self.state["transmitted"] <= 0:
            raise StubClosed(self)


class Slicer(ToxicRuntime):
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


RUNTIMES: dict[str, type[ToxicRuntime]] = {
    "noop": ToxicRuntime, "latency": Latency, "bandwidth": Bandwidth, "slow_close": SlowClose, "timeout": Timeout,
    "reset_peer": ResetPeer, "limit_data": LimitData, "slicer": Slicer,
}
