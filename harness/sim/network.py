"""Loopback between the clients and the gateway, and the fault timeline's proxy in front of the gateway.

Every frame crosses in the model's `network_ms` plus a uniform draw in [0, `network_jitter_ms`) (seeded), so
retries that start in lockstep drift apart as they do over real sockets. The accounts' sockets go through
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

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from harness.faults.timeline import FaultWindow
from harness.sim.loop import Action, Simulation

if TYPE_CHECKING:
    from harness.sim.gateway import Conn, Tuning

MODELLED_TOXICS = ("latency", "timeout")


@dataclass
class _Toxic:
    window: FaultWindow
    active: bool = False


class Network:
    def __init__(self, sim: Simulation, tuning: Tuning, faults: Sequence[FaultWindow], seed: int | None) -> None:
        self._sim = sim
        self._tuning = tuning
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
            self._sim.at(toxic.window.start_s * 1000.0, lambda t=toxic: self._toxic_on(t))
            if toxic.window.end_s is not None:
                self._sim.at(toxic.window.end_s * 1000.0, lambda t=toxic: setattr(t, "active", False))
        for window in self._outages:
            self._sim.at(window.start_s * 1000.0, self._go_down)
            if window.end_s is not None:
                self._sim.at(window.end_s * 1000.0, lambda w=window: self._come_back(w))

    # -- crossings ----------------------------------------------------------------------------------

    def open(self, conn: Conn, proxied: bool, refused: Action, arrive: Action) -> None:
        """A client opens a socket: refused at once while the proxy is down, else its request crosses."""
        if proxied and self.down:
            self._sim.after(self._delay(), refused)
            return
        if proxied:
            self.proxied.add(conn)
        self.up(conn, arrive)

    def up(self, conn: Conn | None, arrive: Action) -> None:
        """A frame from a client to the gateway."""
        self._cross(conn, "upstream", arrive)

    def down_to(self, conn: Conn | None, arrive: Action) -> None:
        """A frame from the gateway to a client."""
        self._cross(conn, "downstream", arrive)

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
        jitter = self._tuning.network_jitter_ms
        return self._tuning.network_ms + (self._rng.random() * jitter if jitter > 0 else 0.0)

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
                    self._sim.after(timeout_ms, lambda c=conn, t=toxic: self.cut(c) if t.active else None)

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
        self._sim.after(self._delay(), lambda: conn.client.closed_by_gateway(conn, 1006, ""))
        self._sim.after(self._delay(), lambda: self.on_cut(conn))
