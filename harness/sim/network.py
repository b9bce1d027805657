"""Loopback between the clients and the gateway, and the fault timeline's proxy in front of the gateway.

Every frame crosses in the model's latency plus a uniform draw below its jitter (seeded); a new socket first
takes its setup time, and a close reaches the client's code after its close time (`Tuning`). These are what
Python and real sockets add to the stub's own timings, in real milliseconds, so at time scale 0.1 each is
ten times as long in scenario time; they also let retries that start in lockstep drift apart as they do
over real sockets. The accounts' sockets go through
the simulated Toxiproxy proxy when the profile has faults (the health probe connects directly, as live):

  gateway_down / gateway_restart   the proxy is disabled: every socket through it is cut (1006 to the
                                   client, closed at the gateway) and new ones are refused; a restart
                                   re-registers every account when it comes back;
  toxic latency                    frames in its stream wait `latency` ms more (plus or minus up to
                                   `jitter`), on the sockets its toxicity picks;
  toxic timeout                    frames in its stream are dropped; with `timeout` > 0 each affected socket
                                   is closed that long after the toxic reaches it.

Other toxics are refused with one line (`UNMODELLED_TOXICS`).
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from harness.faults.timeline import FaultWindow
from harness.sim.conn import Conn
from harness.sim.loop import Action, Simulation

MODELLED_TOXICS = ("latency", "timeout")


@dataclass(frozen=True)
class Tuning:
    """What real sockets and Python add to the stub's options, in real ms: measured by the calibration
    (benchmarks/sim_calibration.py, docs/simulator.md), not configured by a profile."""

    network_real_ms: float = 0.0  # one way, per frame
    network_jitter_real_ms: float = 0.0  # plus U(0, this), per frame
    connect_real_ms: tuple[float, float] = (0.0, 0.0)  # a new socket's setup before its upgrade request: U(lo, hi)
    close_real_ms: tuple[float, float] = (0.0, 0.0)  # a gateway's close reaching the client's code: U(lo, hi)
    upgrade_loop_real_ms: float = 0.0  # the stub's own loop time per upgrade (websockets, HTTP parsing)
    upgrade_turns: int = 2  # loop passes from a socket's arrival to its upgrade being handled


# What the calibration against the stub over real sockets found (docs/simulator.md): a first handshake over
# real sockets took about 10 ms of real time more than the stub's latencies and costs, and a socket opened
# after a handshake timeout 20-70 ms more than the retry delay; upgrades wait about four loop passes.
CALIBRATED = Tuning(network_real_ms=0.5, network_jitter_real_ms=0.5, connect_real_ms=(3.0, 8.0),
                    close_real_ms=(2.0, 10.0), upgrade_turns=4)


@dataclass
class _Toxic:
    window: FaultWindow
    active: bool = False


class Network:
    def __init__(self, sim: Simulation, tuning: Tuning, faults: Sequence[FaultWindow], seed: int | None, *,
                 time_scale: float) -> None:
        self._sim = sim
        self._tuning = tuning
        self._per_real_ms = 1.0 / time_scale  # scenario ms per real ms
        self.upgrade_loop_ms = tuning.upgrade_loop_real_ms * self._per_real_ms
        self._rng = random.Random(None if seed is None else f"network:{seed}")
        self._toxics = [_Toxic(w) for w in faults if w.toxic is not None]
        self._outages = [w for w in faults if w.toxic is None]
        self.down = False
        self.proxied: set[Conn] = set()  # open sockets through the proxy
        self._toxic_picks: dict[tuple[int, int], bool] = {}  # (window, socket id) -> the toxic applies to it
        self.on_cut: Callable[[Conn], None] = lambda conn: None  # the gateway's side of a cut socket
        self.on_restart: Callable[[], None] = lambda: None  # the accounts re-register

    def schedule_faults(self) -> None:
        for toxic in self._toxics:
            self._sim.at(toxic.window.start_s * 1000.0, functools.partial(self._toxic_on, toxic))
            if toxic.window.end_s is not None:
                self._sim.at(toxic.window.end_s * 1000.0, functools.partial(self._toxic_off, toxic))
        for window in self._outages:
            self._sim.at(window.start_s * 1000.0, self._go_down)
            if window.end_s is not None:
                self._sim.at(window.end_s * 1000.0, functools.partial(self._come_back, window))

    # -- crossings ----------------------------------------------------------------------------------

    def open(self, conn: Conn, proxied: bool, refused: Action, arrive: Action) -> None:
        """A client opens a socket: refused at once while the proxy is down, else its request crosses."""
        if proxied and self.down:
            self._sim.after(self._delay(), refused)
            return
        if proxied:
            self.proxied.add(conn)
        self._sim.after(self._uniform(self._tuning.connect_real_ms), lambda: self.up(conn, arrive))

    def up(self, conn: Conn | None, arrive: Action) -> None:
        """A frame from a client to the gateway."""
        self._cross(conn, "upstream", arrive)

    def down_to(self, conn: Conn | None, arrive: Action) -> None:
        """A frame from the gateway to a client."""
        self._cross(conn, "downstream", arrive)

    def close_to_client(self, conn: Conn, arrive: Action) -> None:
        """The gateway's close frame, and the closing handshake until the client's code sees it."""
        self._cross(conn, "downstream", lambda: self._sim.after(self._uniform(self._tuning.close_real_ms), arrive))

    def closed(self, conn: Conn, arrive: Action) -> None:
        """A socket's close reaches the other end (data toxics do not hold it back)."""
        self.proxied.discard(conn)
        self._sim.after(self._delay(), arrive)

    def _cross(self, conn: Conn | None, stream: str, arrive: Action) -> None:
        delay = self._delay()
        if conn is not None and conn in self.proxied:
            for toxic in self._toxics:
                if not toxic.active or toxic.window.toxic is None or toxic.window.toxic.stream != stream:
                    continue
                if not self._applies(toxic, conn):
                    continue
                spec = toxic.window.toxic
                if spec.type == "timeout":
                    return  # dropped
                jitter = spec.attributes.get("jitter", 0.0)
                delay += max(0.0, spec.attributes.get("latency", 0.0) + self._rng.uniform(-jitter, jitter))
        self._sim.after(delay, arrive)

    def _delay(self) -> float:
        return self._uniform((self._tuning.network_real_ms,
                              self._tuning.network_real_ms + self._tuning.network_jitter_real_ms))

    def _uniform(self, real_ms: tuple[float, float]) -> float:
        low, high = real_ms
        value = low if high <= low else low + self._rng.random() * (high - low)
        return value * self._per_real_ms

    def _applies(self, toxic: _Toxic, conn: Conn) -> bool:
        key = (toxic.window.index, id(conn))
        if key not in self._toxic_picks:
            assert toxic.window.toxic is not None
            self._toxic_picks[key] = self._rng.random() < toxic.window.toxic.toxicity
        return self._toxic_picks[key]

    # -- the fault timeline -------------------------------------------------------------------------

    def _toxic_on(self, toxic: _Toxic) -> None:
        toxic.active = True
        spec = toxic.window.toxic
        assert spec is not None
        timeout_ms = spec.attributes.get("timeout", 0.0)
        if spec.type == "timeout" and timeout_ms > 0:
            for conn in list(self.proxied):
                if self._applies(toxic, conn):
                    self._sim.after(timeout_ms, functools.partial(self._timed_out, toxic, conn))

    def _toxic_off(self, toxic: _Toxic) -> None:
        toxic.active = False

    def _timed_out(self, toxic: _Toxic, conn: Conn) -> None:
        if toxic.active:
            self.cut(conn)

    def _go_down(self) -> None:
        self.down = True
        for conn in list(self.proxied):
            self.cut(conn)

    def _come_back(self, window: FaultWindow) -> None:
        self.down = False
        if window.restart:
            self.on_restart()

    def cut(self, conn: Conn) -> None:
        """The proxy drops a socket: both ends see it closed without a close frame."""
        if conn not in self.proxied:
            return
        self.proxied.discard(conn)
        self._sim.after(self._delay() + self._uniform(self._tuning.close_real_ms),
                        lambda: conn.client.closed_by_gateway(conn, 1006, ""))
        self._sim.after(self._delay(), lambda: self.on_cut(conn))
