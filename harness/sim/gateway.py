"""The gateway stub, modelled: one event loop, its costs and timers, the pre-auth budget and the latencies.

It follows `gateway_stub.server` step by step, so a profile's stub options mean the same here (the stub's
own `StubConfig` is what it reads, and its cost distributions and budget are the stub's own objects):

  upgrade        a loop callback burning `upgrade_cost` in one run, then the per-IP pre-auth budget: a
                 503 when it is spent, else the socket opens, the handshake timer starts, and the
                 challenge follows `challenge_latency_ms` later (then the co-located challenge cost);
  connect        `connect_cost_before_timer` (one run or slices), dropped if the timer cut it meanwhile;
                 then the rest of `hello_latency_ms` idle; a timer overdue by then fires first (the stub
                 fires it explicitly, as Node runs overdue timers first); else the client registers (timer
                 cleared, budget slot back), `connect_cost_after_timer` is burned and hello-ok goes out,
                 followed by the co-located hello cost and a coalesced health refresh;
  timer          fires late when the loop is busy; closes 1000 with no reason;
  close          a closed socket gives its budget slot back and cancels its connect at the next slice.

Frames cross loopback as `harness.sim.network` says (with the fault timeline's proxy, if any); the stub's own
per-handshake CPU (Python's websockets, JSON, signature checks) is `overhead_ms`, spent on the upgrade: both
from the calibration (docs/simulator.md).
"""

from __future__ import annotations

import random

from gateway_stub.budget import PreauthBudget
from gateway_stub.config import StubConfig
from gateway_stub.cost import CostSpec
from harness.sim.conn import Client, Conn
from harness.sim.loop import Action, Simulation
from harness.sim.network import Network, Tuning
from openclaw_wire.constants import HEALTH_REFRESH_INTERVAL_MS

LOOPBACK_IP = "127.0.0.1"  # every local client shares one pre-auth budget key, as on the stub
# Passes of the stub's asyncio loop a step waits for (see `Simulation.submit`).
READ_TURNS = 2  # a frame read wakes the task reading the socket
TASK_TURNS = 3  # ... which creates a task for it
TIMER_TURNS = 2  # a sleep's timer wakes its task
TIMER_CALLBACK_TURNS = 1  # a call_later callback runs as it falls due


class SimGateway:
    def __init__(self, sim: Simulation, config: StubConfig, tuning: Tuning, seed: int | None,
                 network: Network | None = None) -> None:
        self.sim = sim
        self.network = network or Network(sim, tuning, (), seed, time_scale=1.0)
        self.network.on_cut = lambda conn: self.sim.submit(lambda: self._closed(conn), 0.0, READ_TURNS)
        self.config = config
        self.tuning = tuning
        self._rng = random.Random(seed)  # the costs' draws, as the stub's CostBurner has its own
        self._budget = PreauthBudget(config.max_preauth_per_ip)
        self._timeout_ms = float(config.effective_handshake_timeout_ms)
        self._refresh_running = False
        self._refresh_pending = False
        self.lag_samples_ms: list[float] = []
        self.lag_sampled_at_ms: list[float] = []  # when each lag sample was taken
        if not config.health_refresh_cost.is_zero:
            self._periodic_refresh()

    # -- from clients (each after the network's latency) ----------------------------------------------

    def connect(self, client: Client, proxied: bool = True) -> Conn:
        """A client opens a socket (through the fault proxy, unless `proxied` is false) and sends its upgrade."""
        conn = Conn(client)
        self.network.open(conn, proxied, lambda: client.refused(conn, None),
                          lambda: self.sim.submit(lambda: self._upgrade(conn),
                                                  self._sample(self.config.upgrade_cost) + self.network.upgrade_loop_ms,
                                                  self.tuning.upgrade_turns))
        return conn

    def send_connect(self, conn: Conn) -> None:
        self.network.up(conn, lambda: self.sim.submit(lambda: self._connect_frame(conn), 0.0, TASK_TURNS))

    def client_closed(self, conn: Conn) -> None:
        """The client closed its socket (or answered the gateway's close)."""
        conn.client_gone = True
        self.network.closed(conn, lambda: self.sim.submit(lambda: self._closed(conn), 0.0, READ_TURNS))

    def request(self, respond: Action) -> None:
        """A request after hello (the health probe's `health`, direct): answered by the loop, then a refresh."""
        def handle() -> None:
            self.network.down_to(None, respond)
            self.request_health_refresh()

        self.network.up(None, lambda: self.sim.submit(handle, 0.0, TASK_TURNS))

    # -- on the loop ----------------------------------------------------------------------------------

    def _upgrade(self, conn: Conn) -> None:
        if conn.client_gone:
            return  # the client gave up before the upgrade was read: nothing opens
        slot = self._budget.try_acquire(LOOPBACK_IP)
        if slot is None:
            self._tell(conn, lambda: conn.client.refused(conn, 503))
            return
        conn.slot = slot
        conn.timer_due_ms = self.sim.now_ms + self._timeout_ms
        self.sim.at(conn.timer_due_ms, lambda: self.sim.submit(lambda: self._timer_fired(conn), 0.0,
                                                               TIMER_CALLBACK_TURNS))
        self._tell(conn, lambda: conn.client.upgraded(conn))
        self.sim.after(self.config.effective_challenge_latency_ms,
                       lambda: self.sim.submit(lambda: self._challenge(conn), 0.0, TIMER_TURNS))

    def _challenge(self, conn: Conn) -> None:
        if not conn.alive() or conn.closing:
            return
        self._tell(conn, lambda: conn.client.challenged(conn))
        self._spawn_cost(self.config.colocated_challenge_cost)

    def _connect_frame(self, conn: Conn) -> None:
        if not conn.alive() or conn.closing:
            return
        conn.received_ms = self.sim.now_ms
        cost = self.config.connect_cost_before_timer
        self.sim.burn(self._sample(cost), cost.slice_ms, lambda: self._connect_cost_done(conn), conn.alive)

    def _connect_cost_done(self, conn: Conn) -> None:
        if conn.closing:
            return  # cut by the timer during the cost: dropped undecided
        idle_left_ms = self.config.effective_hello_latency_ms - (self.sim.now_ms - conn.received_ms)
        self.sim.after(max(0.0, idle_left_ms), lambda: self.sim.submit(lambda: self._hello_due(conn), 0.0, TIMER_TURNS))

    def _hello_due(self, conn: Conn) -> None:
        if not conn.alive() or conn.closing:
            return
        if self.sim.now_ms >= conn.timer_due_ms:
            self._timer_fired(conn)  # overdue: it fires before the connect goes on
            return
        conn.registered = True
        self._end_preauth(conn)
        cost = self.config.connect_cost_after_timer
        self.sim.burn(self._sample(cost), cost.slice_ms, lambda: self._hello_out(conn), conn.alive)

    def _hello_out(self, conn: Conn) -> None:
        self._tell(conn, lambda: conn.client.hello(conn))
        self._spawn_cost(self.config.colocated_hello_cost)
        self.request_health_refresh()

    def _timer_fired(self, conn: Conn) -> None:
        if conn.registered or conn.closing or not conn.alive():
            return
        conn.closing = True
        self.network.close_to_client(conn, lambda: conn.client.closed_by_gateway(conn, 1000, ""))

    def _closed(self, conn: Conn) -> None:
        if conn.closed:
            return
        conn.closed = True
        self._end_preauth(conn)

    def _end_preauth(self, conn: Conn) -> None:
        if conn.slot is not None:
            conn.slot.release()
            conn.slot = None

    # -- the health refresh, coalesced ------------------------------------------------------------

    def request_health_refresh(self) -> None:
        cost = self.config.health_refresh_cost
        if cost.is_zero:
            return
        if self._refresh_running:
            self._refresh_pending = self.config.health_refresh_coalesce == "rearm"
            return
        self._refresh_running = True
        self._refresh()

    def _refresh(self) -> None:
        cost = self.config.health_refresh_cost
        self._refresh_pending = False
        self.sim.burn(self._sample(cost), cost.slice_ms, self._refresh_done)

    def _refresh_done(self) -> None:
        if self._refresh_pending:
            self._refresh()
        else:
            self._refresh_running = False

    def _periodic_refresh(self) -> None:
        self.sim.after(HEALTH_REFRESH_INTERVAL_MS, lambda: self.sim.submit(self._periodic_refresh_due))

    def _periodic_refresh_due(self) -> None:
        self.request_health_refresh()
        self._periodic_refresh()

    # -- the loop's lag, as the stub's probe measures it ------------------------------------------

    def watch_lag(self, interval_ms: float, until_ms: float) -> None:
        """Every `interval_ms` a timer asks the loop for a turn; how late it gets one is the loop's lag."""
        def due(at_ms: float) -> None:
            self.sim.submit(lambda: self._lag_turn(at_ms, interval_ms, until_ms), 0.0, TIMER_TURNS)

        self.sim.after(interval_ms, lambda: due(self.sim.now_ms))

    def _lag_turn(self, due_ms: float, interval_ms: float, until_ms: float) -> None:
        self.lag_samples_ms.append(self.sim.now_ms - due_ms)
        self.lag_sampled_at_ms.append(self.sim.now_ms)
        if self.sim.now_ms + interval_ms < until_ms:
            self.watch_lag(interval_ms, until_ms)

    def recent_lag_max_ms(self, interval_ms: float) -> float | None:
        """The worst lag sampled in the last `interval_ms`: what the stub's health reports as `delayMaxMs`."""
        worst = None
        for lag, at_ms in zip(reversed(self.lag_samples_ms), reversed(self.lag_sampled_at_ms), strict=True):
            if at_ms < self.sim.now_ms - interval_ms:
                break
            worst = lag if worst is None else max(worst, lag)
        return None if worst is None else round(worst, 3)

    # -- helpers ----------------------------------------------------------------------------------

    def _tell(self, conn: Conn, deliver: Action) -> None:
        self.network.down_to(conn, deliver)

    def _spawn_cost(self, cost: CostSpec) -> None:
        if not cost.is_zero:
            self.sim.burn(self._sample(cost), cost.slice_ms, _nothing)

    def _sample(self, cost: CostSpec) -> float:
        return 0.0 if cost.is_zero else cost.distribution.sample_ms(self._rng)


def _nothing() -> None:
    return None
