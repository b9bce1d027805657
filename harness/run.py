"""One arm of a profile, end to end: boot the target, spawn the accounts under Locust, watch, judge, write.

The run is bounded: it lasts the profile's `duration_s` (profile time), then every account is stopped,
the stub is stopped, and the results are written to the arm's folder:
  summary.json        the figures and the verdict (schema_version 1; see README)
  accounts.csv        one row per account: attempts, successes, failures by cause, close codes, …
  stub.log, stub.jsonl the stub's console and JSON log (stub target, embedded or in a container)
  openclaw.log, gateway.jsonl  the real gateway's console and its records from the shared JSON log (openclaw)
  locust_stats.csv, locust_failures.csv, …  Locust's own CSV stats
Everything started here is stopped here, also on Ctrl-C.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import random
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

import gevent
import locust  # noqa: F401  (patches with gevent on import; harness.cli imports it before anything else)
from gevent.event import Event
from locust.env import Environment
from locust.stats import PERCENTILES_TO_REPORT, StatsCSVFileWriter
from websockets.exceptions import ConnectionClosed

from harness.accounts.connect_shape import ClientShape
from harness.accounts.ledger import Ledger, Outcome
from harness.accounts.session import HandshakeFailed, RequestTimedOut, call, short_session
from harness.agents.agent import FakeAgent
from harness.agents.ledger import ApprovalLedger
from harness.agents.operator import Operator
from harness.backends.docker import DockerGateway
from harness.backends.embedded import ChildService, EmbeddedStub
from harness.backends.openclaw import OpenClawGateway
from harness.clock import ScaledClock
from harness.errors import BackendError
from harness.faults.client import BoundProxy, FaultError, ToxiproxyClient
from harness.faults.scheduler import FaultScheduler
from harness.locustfile import NativeApprovalsAccount, RunContext
from harness.policy.arms import ARMS, Arm
from harness.profile import STUB_OPTIONS, Profile
from harness.verdict.duplicates import summarize_duplicates, write_intents_csv
from harness.verdict.figures import RunRecord, check_thresholds, summarize, timeline
from openclaw_wire.device_auth import DeviceIdentity
from openclaw_wire.log_records import read_records

SCHEMA_VERSION = 1
PROGRESS_INTERVAL_S = 1.0  # real seconds between progress updates
LOCUST_CSV_INTERVAL_S = 1.0
PROBE_READY_TIMEOUT_S = 30.0


@dataclass
class ArmResult:
    arm: str
    summary: dict[str, Any]
    out_dir: Path

    @property
    def passed(self) -> bool:
        return all(a["passed"] for a in self.summary["assertions"])


@dataclass
class _Target:
    url: str  # the gateway itself: the health probe connects here
    token: str
    stub: EmbeddedStub | DockerGateway | None = None
    openclaw: OpenClawGateway | None = None
    client_url: str = ""  # where accounts and agents connect: through the fault proxy when there is one
    fault_proxy: BoundProxy | None = None
    fault_backend: str | None = None


@contextlib.contextmanager
def _target(profile: Profile, arm: Arm, out_dir: Path) -> Iterator[_Target]:
    with _gateway(profile, arm, out_dir) as target:
        if not profile.faults:
            target.client_url = target.url
            yield target
            return
        with _fault_proxy(target, out_dir):
            yield target


@contextlib.contextmanager
def _fault_proxy(target: _Target, out_dir: Path) -> Iterator[None]:
    """A Toxiproxy proxy in front of the gateway: a real server at TOXIPROXY_URL, else the embedded one.

    With the Docker backend, a Toxiproxy container on the stub's network (TOXIPROXY_URL is not used).
    """
    with contextlib.ExitStack() as stack:
        url = os.environ.get("TOXIPROXY_URL")
        backend, where = "toxiproxy", ""
        gateway = urlsplit(target.url)
        listen, upstream, client_url = "127.0.0.1:0", f"{gateway.hostname}:{gateway.port}", ""
        if isinstance(target.stub, DockerGateway):
            container = stack.enter_context(target.stub.toxiproxy(out_dir / "toxiproxy.log"))
            url, backend, where = container.api_url, container.backend, f" in container {container.image}"
            listen, upstream, client_url = container.listen, container.upstream, container.client_url
        elif not url:
            child = stack.enter_context(ChildService("harness.faults.embedded_proxy", ["--host", "127.0.0.1",
                                                     "--port", "0"], log_path=out_dir / "toxiproxy.log"))
            url, backend = str(child.ready["url"]), "embedded"
        client = ToxiproxyClient(url)
        proxy = client.create(upstream=upstream, name=f"gateway-{uuid.uuid4().hex[:8]}", listen=listen)
        try:
            target.client_url = client_url or f"ws://{proxy.listen}/"
            target.fault_proxy = proxy
            target.fault_backend = f"{backend} {client.version()} at {url}{where}"
            yield
        finally:
            with contextlib.suppress(FaultError):
                proxy.destroy()


@contextlib.contextmanager
def _gateway(profile: Profile, arm: Arm, out_dir: Path) -> Iterator[_Target]:
    if profile.target.kind == "url":
        assert profile.target.url is not None and profile.target.token is not None
        yield _Target(profile.target.url, profile.target.token)
        return
    if profile.target.openclaw is not None:
        real = profile.target.openclaw
        with OpenClawGateway(real.version, handshake_timeout_ms=real.handshake_timeout_ms,
                             max_preauth_per_ip=real.max_preauth_per_ip, cpu_quota=real.cpu_quota,
                             log_dir=out_dir) as gateway:
            yield _Target(gateway.url, gateway.token, openclaw=gateway)
        return
    args = [*profile.target.stub_args, "--time-scale", str(profile.time_scale)]
    if arm.approval_fix == "gateway-dedup":
        args += ["--approval-dedup", "intent"]
    if profile.seed is not None:
        args += ["--seed", str(profile.seed)]
    if profile.target.backend == "docker":
        with DockerGateway(args, out_dir) as container:  # its JSON log: out_dir/stub.jsonl too
            yield _Target(container.url, container.token, container)
        return
    with EmbeddedStub([*args, "--log-file", str(out_dir / "stub.jsonl")], log_path=out_dir / "stub.log") as stub:
        yield _Target(stub.url, stub.token, stub)


@dataclass
class HealthProbe:
    """An operator client, connected before the accounts start, that calls `health` at a fixed interval.

    It measures the latency tax a storm puts on normal traffic over a connection that already exists.
    If its connection drops it reconnects like any client, and its failed handshakes are counted, so
    the gateway's log can be reconciled with accounts plus probe.
    """

    url: str
    token: str
    clock: ScaledClock
    interval_ms: float
    shape: ClientShape
    samples_ms: list[float] = field(default_factory=list)
    handshake_timeouts: int = 0
    failures: int = 0
    connected: Event = field(default_factory=Event)

    def run(self) -> None:
        params = self.shape.params("harness health probe", ["operator.read"], self.token)
        while True:
            try:
                with short_session(self.url, params, self.clock, handshake_timeout_ms=15_000) as ws:
                    self.connected.set()
                    while True:
                        started = time.perf_counter()
                        call(ws, "health", {}, self.clock)
                        self.samples_ms.append(self.clock.profile_ms(time.perf_counter() - started))
                        gevent.sleep(self.clock.real_s(self.interval_ms))
            except HandshakeFailed as failed:
                self.handshake_timeouts += failed.outcome is Outcome.HANDSHAKE_TIMEOUT
                self.failures += 1
            except (RequestTimedOut, ConnectionClosed, OSError):
                self.failures += 1
            gevent.sleep(self.clock.real_s(self.interval_ms))


class Progress:
    """One line updated in place on a terminal; plain periodic lines otherwise."""

    def __init__(self, stream: IO[str], every_s: float = 10.0) -> None:
        self._stream = stream
        self._tty = stream.isatty()
        self._every_s = every_s
        self._last_plain = 0.0

    def update(self, text: str) -> None:
        if self._tty:
            self._stream.write("\r\x1b[2K" + text)
            self._stream.flush()
        elif time.monotonic() - self._last_plain >= self._every_s:
            self._last_plain = time.monotonic()
            self._stream.write(text + "\n")
            self._stream.flush()

    def done(self, text: str) -> None:
        self._stream.write(("\r\x1b[2K" if self._tty else "") + text + "\n")
        self._stream.flush()


def run_arm(profile: Profile, arm_name: str, out_dir: Path, *, progress_stream: IO[str] = sys.stderr) -> ArmResult:
    out_dir.mkdir(parents=True, exist_ok=True)
    progress = Progress(progress_stream)
    arm = ARMS[arm_name]
    wall_started = time.monotonic()
    with _target(profile, arm, out_dir) as target:
        clock = ScaledClock(profile.time_scale)
        device = DeviceIdentity.generate() if profile.target.device_signed else None
        shape = ClientShape(profile.target.protocol, device)
        environment = Environment(user_classes=[NativeApprovalsAccount])
        scenario = _ApprovalScenario.build(profile, arm, target, clock, shape)
        context = RunContext(
            url=target.client_url, token=target.token, arm=arm, channels=list(profile.channels), clock=clock,
            coordinator_settings=profile.coordinator, shape=shape,
            handshake_timeout_ms=_client_handshake_timeout_ms(profile),
            keep_reconnecting_after_failed_start=profile.keep_reconnecting_after_failed_start, seed=profile.seed,
            approvals=scenario.ledger if scenario else None, operator=scenario.operator if scenario else None,
        )
        environment.harness_context = context  # type: ignore[attr-defined]
        csv_writer = StatsCSVFileWriter(environment, PERCENTILES_TO_REPORT, str(out_dir / "locust"), False)
        # The probe is the harness's instrument, not a fake of a real client: device-less, at the run's protocol.
        probe = HealthProbe(target.url, target.token, clock, profile.probe_interval_ms, ClientShape(shape.protocol))
        greenlets = [gevent.spawn(csv_writer)]
        if profile.probe_interval_ms > 0:
            greenlets.append(gevent.spawn(probe.run))
            if not probe.connected.wait(timeout=PROBE_READY_TIMEOUT_S):
                raise BackendError(f"the health probe could not connect to {target.url} "
                                   f"within {PROBE_READY_TIMEOUT_S:g} s")
        runner = environment.create_local_runner()
        clock.restart()  # profile time 0 is when the accounts start
        faults = None
        if target.fault_proxy is not None:
            faults = FaultScheduler(target.fault_proxy, profile.faults, clock, on_restart=context.reregister_all)
        if faults is not None:
            greenlets.append(gevent.spawn(faults.run))
        try:
            runner.start(profile.account_count, spawn_rate=min(profile.account_count, 100))
            if scenario:
                greenlets.append(gevent.spawn(scenario.start_when_connected, context.ledger, profile))
            _watch(profile, arm_name, clock, context.ledger, progress,
                   sample=scenario.sampler(target) if scenario else None)
            # The run ends here for every source: what happens during teardown is not the run's.
            if scenario:
                scenario.stop()
            gateway_records = _gateway_records(target, out_dir)
            attempts, disconnects = list(context.ledger.attempts), list(context.ledger.disconnects)
            connected_at_end = frozenset(context.ledger.connected)
            health_samples, probe_timeouts = list(probe.samples_ms), probe.handshake_timeouts
            runtime = context.runtime
            coordinator_stats = dataclasses.asdict(runtime.coordinator.statistics()) if runtime else None
        finally:
            runner.quit()
            context.close()
            gevent.sleep(LOCUST_CSV_INTERVAL_S + 0.1)  # one more CSV pass with the final stats
            gevent.killall(greenlets, block=True, timeout=5)
            csv_writer.close_files()
        lag = _loop_lag(target, profile.time_scale)
        described_target = _describe_target(profile, target)
    record = RunRecord(
        accounts=context.account_names, attempts=attempts, disconnects=disconnects,
        connected_at_end=connected_at_end, duration_ms=profile.duration_s * 1000.0,
        startup_window_ms=profile.startup_window_s * 1000.0, final_window_ms=profile.final_window_s * 1000.0,
        gateway_records=gateway_records, health_rpc_ms=health_samples, event_loop_lag_ms=lag,
        other_client_handshake_timeouts=probe_timeouts,
    )
    figures = summarize(record)
    summary = {
        "schema_version": SCHEMA_VERSION, "profile": profile.name, "arm": arm_name, "seed": profile.seed,
        "time_scale": profile.time_scale, "target": described_target,
        "accounts": profile.account_count, "wall_clock_s": round(time.monotonic() - wall_started, 3),
        "duration_s": profile.duration_s, "windows": {"startup_s": profile.startup_window_s,
                                                      "final_s": profile.final_window_s},
        "coordinator": vars(profile.coordinator) if arm.coordinated else None,
        # borrowed/total/waiting at the end, grants, forced releases, cancelled waiters, longest wait (profile ms)
        "coordinator_statistics": coordinator_stats,
        **figures,
        "health_probe": {"handshake_timeouts": probe_timeouts, "reconnects": probe.failures},
    }
    fault_windows = faults.describe() if faults is not None else []
    if faults is not None:
        summary["faults"] = fault_windows
        summary["fault_backend"] = target.fault_backend
    summary["timeline"] = timeline(record, fault_windows)
    if scenario:
        summary["approval_fix"] = arm.approval_fix
        # gateway-dedup is the stub's own: a real gateway has no such coalescing to switch on.
        summary["approval_fix_applies"] = not (arm.approval_fix == "gateway-dedup" and target.stub is None)
        summary["duplicates"] = summarize_duplicates(scenario.ledger)
        write_intents_csv(scenario.ledger, out_dir / "intents.csv")
    summary["assertions"] = check_thresholds(summary, profile.thresholds_for(arm_name))
    context.ledger.write_accounts_csv(out_dir / "accounts.csv", context.account_names)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    progress.done(f"[{arm_name}] {summary['verdict']}: {summary['storm_entries']} storm entries, "
                  f"{summary['connected_accounts_at_end']}/{profile.account_count} connected at the end "
                  f"({summary['wall_clock_s']:.1f} s)")
    return ArmResult(arm_name, summary, out_dir)


def _watch(profile: Profile, arm: str, clock: ScaledClock, ledger: Ledger, progress: Progress,
           sample: Callable[[float], None] | None = None) -> None:
    while (now_ms := clock.now_ms()) < profile.duration_s * 1000.0:
        if sample is not None:
            sample(now_ms)
        storms = sum(1 for a in ledger.attempts if a.storm_kind is not None)
        progress.update(f"[{arm}] {now_ms / 1000:6.0f}/{profile.duration_s:g} s  connected "
                        f"{len(ledger.connected)}/{profile.account_count}  storm entries {storms}")
        gevent.sleep(min(PROGRESS_INTERVAL_S, clock.real_s(profile.duration_s * 1000.0 - now_ms)))


@dataclass
class _ApprovalScenario:
    """The duplicate-prompt scenario of a run: its agents, the operator, and what they recorded."""

    ledger: ApprovalLedger
    operator: Operator
    agents: list[FakeAgent]
    clock: ScaledClock

    @classmethod
    def build(cls, profile: Profile, arm: Arm, target: _Target, clock: ScaledClock,
              shape: ClientShape) -> _ApprovalScenario | None:
        if profile.agents is None or profile.operator is None:
            return None
        ledger = ApprovalLedger()
        timeout_ms = _client_handshake_timeout_ms(profile)
        operator = Operator(profile.operator, target.client_url, target.token, shape, clock, ledger, timeout_ms)
        seed = profile.seed or 0
        agents = [FakeAgent(f"agent-{i + 1}", profile.agents, arm.approval_fix, url=target.client_url,
                            token=target.token,
                            shape=shape, clock=clock, ledger=ledger,
                            rng=random.Random(seed * 1000 + i), handshake_timeout_ms=timeout_ms)
                  for i in range(profile.agents.count)]
        return cls(ledger, operator, agents, clock)

    def start_when_connected(self, accounts: Ledger, profile: Profile) -> None:
        """Agents start once every approval chat's handler holds its connection (or the startup window ends)."""
        while (len(accounts.connected) < profile.account_count
               and self.clock.now_ms() < profile.startup_window_s * 1000.0):
            gevent.sleep(self.clock.real_s(100))
        for agent in self.agents:
            agent.start()

    def sampler(self, target: _Target) -> Callable[[float], None] | None:
        stub = target.stub
        if stub is None:
            return None

        def sample(now_ms: float) -> None:
            with contextlib.suppress(OSError, KeyError, ValueError):
                self.ledger.pending_samples.append((now_ms, int(stub.stats()["approvals"]["pending"])))

        return sample

    def stop(self) -> None:
        for agent in self.agents:
            agent.stop()
        self.operator.stop()


def _client_handshake_timeout_ms(profile: Profile) -> int:
    """The socket's own upgrade timeout, as the reference client's: the gateway's handshake timeout."""
    target = profile.target
    if target.stub is not None:
        return target.stub.effective_handshake_timeout_ms
    if target.openclaw is not None:
        return target.openclaw.effective_handshake_timeout_ms
    return 10_000


def _loop_lag(target: _Target, time_scale: float) -> dict[str, float | None] | None:
    if target.stub is None:
        return None
    try:
        lag = target.stub.stats()["event_loop_lag_ms"]
    except OSError:
        return None
    return {k: None if lag.get(k) is None else round(lag[k] / time_scale, 3) for k in ("p99", "max")}


def _gateway_records(target: _Target, out_dir: Path) -> list[dict[str, Any]] | None:
    """The gateway's own log records of this run: the stub's JSON log, or the real gateway's (copied to the run)."""
    if target.openclaw is None:
        return read_records(out_dir / "stub.jsonl")
    records = target.openclaw.json_log_records()
    with (out_dir / "gateway.jsonl").open("w", encoding="utf-8") as copy:
        copy.writelines(json.dumps(record) + "\n" for record in records)
    return records


def _describe_target(profile: Profile, running: _Target) -> dict[str, Any]:
    target = profile.target
    if running.openclaw is not None:
        gateway, options = running.openclaw, target.openclaw
        assert options is not None
        return {"kind": "openclaw", "protocol": target.protocol, "device_signed": target.device_signed,
                **dataclasses.asdict(options),
                "effective_handshake_timeout_ms": _client_handshake_timeout_ms(profile),
                # how the CPU quota is applied (cgroup or SIGSTOP duty cycle), None when unthrottled
                "cpu_throttle": gateway.cpu_throttle, "ready_after_s": round(gateway.ready_after_s or 0.0, 1),
                "external_sockets": list(gateway.external_sockets)}
    if target.stub is None:
        return {"kind": "url", "url": target.url, "protocol": target.protocol}
    described = target.stub.describe()
    # The profile's stub options, the timeout as in effect, without the idle latencies.
    keep = ["effective_handshake_timeout_ms" if k == "handshake_timeout_ms" else k for k in STUB_OPTIONS
            if not k.endswith("_latency_ms")]
    backend = {"backend": "docker", **running.stub.describe()} if isinstance(running.stub, DockerGateway) \
        else {"backend": "embedded"}
    return {"kind": "stub", **backend, **{k: described[k] for k in keep}}


def run_profile(profile: Profile, arms: list[str], out_root: Path,
                on_result: Callable[[ArmResult], None] | None = None) -> list[ArmResult]:
    results = []
    for arm in arms:
        result = run_arm(profile, arm, out_root / arm.replace("+", "_"))
        results.append(result)
        if on_result:
            on_result(result)
    return results
