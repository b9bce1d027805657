"""Profiles: one YAML file per scenario, validated in full before anything starts.

Every problem is one line that names the field and says what was expected (`BadInput`, exit 2):
unknown keys, wrong types, out-of-range values, unknown arms, and thresholds on unknown metrics.
The shape, with defaults:

    name: matrix-11-accounts          # required
    description: ""
    target:
      kind: stub                      # stub (the gateway stub), url (a ws:// URL on loopback), openclaw (the real
                                      # gateway from npm, started by the harness on loopback; time_scale must be 1)
                                      # or sim (the stub's options, run in the simulator: harness/sim/)
      backend: embedded               # stub: where it runs: embedded (a child process) or docker (containers)
      profile: april-2026             # stub: protocol profile
      handshake_timeout_ms: null      # stub: null = the profile's (10000 april-2026, 15000 april-2026.4.29 and current)
      max_preauth_per_ip: 32          # stub
      connect_cost_before_timer: "0"  # stub: cost specs, see gateway_stub/cost.py
      connect_cost_after_timer: "0"
      upgrade_cost: "0"
      colocated_challenge_cost: "0"
      colocated_hello_cost: "0"
      health_refresh_cost: "0"         # stub: the health refresh after each hello-ok, coalesced
      health_refresh_coalesce: join    # stub: a hello during a refresh joins it (join) or re-arms one more (rearm)
      cost_clock: wall
      challenge_latency_ms: null      # stub: idle latencies; null = the profile's, as recorded (ms: april-2026 3 and 2,
      hello_latency_ms: null          #   april-2026.4.29 4 and 2, current 3 and 7)
      url: null                       # url: ws://127.0.0.1:PORT/
      token: null                     # url: the gateway's token
      version: null                   # openclaw: the npm version, e.g. 2026.4.24, 2026.4.29, 2026.9.6 (required)
      cpu_quota: null                 # openclaw: a fraction of one core for the gateway (e.g. 0.1); null: unthrottled
      cpu_quota_from: ready           # openclaw: the quota holds from ready (startup at full speed) or from launch
      inprocess: false                # openclaw: the accounts are Matrix accounts inside the gateway, on a local
                                      # Synapse (extra `matrix`); arms shipped and approvals-off; no probe, agents
                                      # or faults (harness/accounts/inprocess.py)
      homeserver_latency_ms: 0        # openclaw, in-process: the homeserver's answers reach the gateway this much
                                      # later (a Toxiproxy latency toxic between them: a homeserver far away)
                                      # openclaw also takes handshake_timeout_ms and max_preauth_per_ip (null: its own)
      protocol: 3                     # the accounts' protocol (3 April, 4 current; openclaw: 3 up to 2026.4.x)
      device_signed: false            # sign connects with one device key (default true for openclaw and protocol 4)
    accounts:
      count: 11                       # required, 1..10000 x processes
      channels: {matrix: 11}          # counts per channel (matrix, telegram), summing to count
      keep_reconnecting_after_failed_start: false
      processes: 1                    # gateway-side processes (1..64): each a Locust worker with its share of
                                      # the accounts and its own start coordinator, as each OpenClaw process has
    fleet: {gateways: 1}              # a fleet: G stub gateways on this host (1..16), each with the accounts
                                      # above, all started on one tick; a verdict each and one for the fleet
    arms: [shipped, coordinator]      # from harness.policy.arms.ARMS (in-process: [shipped, approvals-off])
    coordinator: {}                   # start_jitter_ms, max_concurrent_starts, start_slot_max_hold_ms;
                                      # unset ones come from OPENCLAW_APPROVAL_HANDLER_* (PR parsing) or the PR defaults
    fixes:                            # the other fix families' parameters (arms stagger, adaptive, breaker)
      stagger_ms: 2000                # stagger: the i-th account's first start waits i x stagger_ms
      adaptive_max_concurrent_starts: 8   # adaptive: the AIMD cap's ceiling
      breaker_failures: 3             # breaker: failed starts in a row that open it
      breaker_cooldown_ms: 30000      # breaker: how long it stays open
    time_scale: 1.0                   # > 0
    duration_s: 120                   # scenario time, > 0, at most 86400
    windows: {startup_s: 30, final_s: 30}
    probe: {interval_ms: 1000}        # health RPC latency probe; 0 turns it off
    seed: null
    agents:                           # optional: the duplicate-prompt scenario (openclaw#69478)
      count: 11
      heartbeat_ms: 60000             # a run starts every heartbeat; its exec call needs approval
      provider_timeouts_ms: [10000, 10000, 10000]   # the failover chain: each attempt's timeout
      command: "ls -la"
      approval_timeout_ms: 1800000
    faults: []                        # a fault timeline through a Toxiproxy proxy in front of the gateway;
                                      # see harness/faults/timeline.py
    operator:                         # with agents
      answer_after_ms: 25000          # null: away, never answers
      decision: allow-once            # allow-once, allow-always or deny
    assert: {}                        # per arm (or `all`): metric: threshold,
                                      # e.g. verdict: storm, storm_entries: "== 0"
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway_stub.config import ConfigError
from gateway_stub.config import config_from_args as stub_config_from_args
from harness.agents.settings import AgentSettings, OperatorSettings
from harness.errors import BadInput
from harness.faults.timeline import FaultWindow, parse_faults
from harness.input_fields import Fields, Problems, cut, kind_of
from harness.policy.arms import ARMS, FixSettings
from harness.policy.backoff import BreakerSettings
from harness.policy.coordinator import CoordinatorSettings
from harness.policy.start_gates import GateSettings
from harness.target import (
    STUB_BACKENDS,
    OpenClawTarget,
    SimTarget,
    StubTarget,
    Target,
    UrlTarget,
    require_loopback_url,
)
from harness.verdict.thresholds import Threshold, parse_threshold
from harness.yaml_input import LineMap, read_yaml
from openclaw_wire.constants import (
    DEFAULT_EXEC_APPROVAL_TIMEOUT_MS,
    PROTOCOL_APRIL,
    PROTOCOL_CURRENT,
    protocol_for_version,
)

CHANNELS = ("matrix", "telegram")
DECISIONS = ("allow-once", "allow-always", "deny")
MAX_FLEET_GATEWAYS = 16
MAX_ACCOUNTS = 10_000  # per harness process (a Locust worker); a sweep's simulated runs are one process
MAX_PROCESSES = 64


def why_max_accounts(processes: int) -> str:
    per = (f"at most {MAX_ACCOUNTS} per harness process, and accounts.processes is {processes}" if processes > 1 else
           "the most one harness process is meant to hold; more need accounts.processes (or --processes)")
    return f"{per}; each account takes 1 open file and about 0.06 MB (benchmarks/accounts_at_scale.py)"


MAX_DURATION_S = 86_400
MAX_INTERVAL_MS = 86_400_000  # any duration in a profile: at most a day
MAX_APPROVAL_TIMEOUT_MS = 7 * MAX_INTERVAL_MS
MIN_TIME_SCALE, MAX_TIME_SCALE = 0.001, 10.0
MIN_REAL_INTERVAL_MS = 1.0  # a repeating timer (probe, heartbeat) fires at most once a real millisecond
MAX_SEED = 2**32 - 1
MAX_PREAUTH_PER_IP = 1_000_000
MAX_PROVIDERS = 20
MAX_THRESHOLDS_PER_ARM = 100
MAX_COMMAND_LENGTH = 1_000
MAX_URL_LENGTH = 2_000
MAX_TOKEN_LENGTH = 1_000
DEFAULT_WINDOW_S = 30
DEFAULT_ANSWER_AFTER_MS = 25_000
OPENCLAW_VERSION_RE = re.compile(r"^\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?$")
STUB_OPTIONS = ("profile", "handshake_timeout_ms", "max_preauth_per_ip", "connect_cost_before_timer",
                "connect_cost_after_timer", "upgrade_cost", "colocated_challenge_cost", "colocated_hello_cost",
                "health_refresh_cost", "health_refresh_coalesce", "cost_clock", "challenge_latency_ms",
                "hello_latency_ms")


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    path: Path | None
    target: Target
    account_count: int
    channels: tuple[str, ...]  # one per account
    keep_reconnecting_after_failed_start: bool
    arms: tuple[str, ...]
    coordinator: CoordinatorSettings
    time_scale: float
    duration_s: float
    startup_window_s: float
    final_window_s: float
    probe_interval_ms: float
    seed: int | None
    thresholds: Mapping[str, tuple[Threshold, ...]] = field(default_factory=dict)  # arm or "all"
    agents: AgentSettings | None = None
    operator: OperatorSettings | None = None
    faults: tuple[FaultWindow, ...] = ()
    gates: GateSettings = GateSettings()
    breaker: BreakerSettings = BreakerSettings()
    processes: int = 1  # gateway-side processes, each with its own accounts and start coordinator: Locust workers
    fleet_gateways: int = 1  # a fleet: this many stub gateways on the host, each with its own account_count accounts

    @property
    def fixes(self) -> FixSettings:
        return FixSettings(self.coordinator, self.gates, self.breaker)

    def thresholds_for(self, arm: str) -> tuple[Threshold, ...]:
        return (*self.thresholds.get("all", ()), *self.thresholds.get(arm, ()))

    def with_overrides(self, *, seed: int | None = None, time_scale: float | None = None,
                       target: str | None = None, processes: int | None = None) -> Profile:
        """The profile with `--seed`, `--time-scale`, `--target sim` (a stub profile, run in the simulator) or
        `--processes`."""
        from dataclasses import replace

        changes: dict[str, Any] = {}
        if self.fleet_gateways > 1 and (target == "sim" or (processes or 1) > 1):
            raise BadInput(f"--{'target' if target == 'sim' else 'processes'}: a fleet ({self.fleet_gateways} "
                           "gateways) runs each gateway's accounts in one process over real sockets")
        if processes is not None:
            if self.account_count > MAX_ACCOUNTS * processes:
                raise BadInput(f"--processes: {self.account_count} accounts need at least "
                               f"{-(-self.account_count // MAX_ACCOUNTS)} ({why_max_accounts(processes)})")
            if refused := processes_refused(self.target, self.agents is not None, processes):
                raise BadInput(f"--processes: {refused}")
            changes["processes"] = processes
        if target is not None and target != self.target.kind:
            if target != "sim" or not isinstance(self.target, StubTarget):
                raise BadInput(f"--target: only a stub profile can run in the simulator (--target sim); this "
                               f"profile's target is {self.target.kind}")
            changes["target"] = SimTarget(self.target)
        if seed is not None:
            changes["seed"] = seed
        if time_scale is not None:
            if not time_scale > 0:
                raise BadInput(f"--time-scale: expected a number > 0, got {time_scale}")
            problems = Problems()
            _check_real_time(self.target, time_scale, problems, None, "--time-scale")
            problems.check()
            changes["time_scale"] = time_scale
        return replace(self, **changes)


def _parse_fleet(fleet: Fields, target: Target | None, processes: int) -> int:
    """`fleet: {gateways: G}`: G stub gateways on this host, each with the profile's accounts, started together."""
    gateways: int = fleet.number("gateways", 1, minimum=1, maximum=MAX_FLEET_GATEWAYS, integer=True)
    fleet.done()
    if gateways > 1 and target is not None and (not isinstance(target, StubTarget) or isinstance(target, SimTarget)):
        fleet.fail("gateways", f"a fleet is of stub gateways (target kind stub); this profile's target is "
                   f"{target.kind}")
    if gateways > 1 and processes > 1:
        fleet.fail("gateways", "a fleet's gateways each run their accounts in one process; expected "
                   "accounts.processes 1")
    return gateways


def processes_refused(target: Target, has_agents: bool, processes: int) -> str | None:
    """Why this profile cannot spread its accounts over `processes` harness processes, or None."""
    if processes == 1:
        return None
    if isinstance(target, SimTarget):
        return "the simulator models one gateway-side process; expected 1"
    if _is_inprocess(target):
        return "in-process accounts run inside the real gateway, not in harness processes; expected 1"
    if has_agents:
        return ("the approval scenario's operator watches every account's chat in one process; expected 1 with an "
                "agents section")
    return None


def load_profile(path: Path, environ: Mapping[str, str] | None = None) -> Profile:
    data, lines = read_yaml(path, "profile")
    return parse_profile(data, path=path, environ=os.environ if environ is None else environ, lines=lines)


def parse_profile(data: Any, *, path: Path | None = None, environ: Mapping[str, str] | None = None,
                  lines: LineMap | None = None) -> Profile:
    """The profile in `data`, or `BadInput` listing every problem in it (one line each, with its line)."""
    problems = Problems(None if path is None else str(path), lines or LineMap())
    root = Fields(data, "", problems)
    name, description = root.name_and_description()
    time_scale = root.number("time_scale", 1.0, minimum=MIN_TIME_SCALE, maximum=MAX_TIME_SCALE)
    target = _parse_target(root.section("target"), time_scale)
    accounts = root.section("accounts")
    processes = accounts.number("processes", 1, minimum=1, maximum=MAX_PROCESSES, integer=True)
    count = accounts.number("count", None, minimum=1, maximum=MAX_ACCOUNTS * processes, integer=True, required=True,
                            why_maximum=why_max_accounts(processes))
    channels = _parse_channels(accounts, count)
    keep_reconnecting = accounts.get("keep_reconnecting_after_failed_start", bool, False)
    accounts.done()
    arms = _parse_arms(root)
    coordinator = _parse_coordinator(root.section("coordinator"), environ or {})
    gates, breaker = _parse_fixes(root.section("fixes"))
    if target is not None:
        _check_real_time(target, time_scale, problems, root.line("time_scale"))
    duration_s = root.number("duration_s", 120, minimum=0, exclusive_minimum=True, maximum=MAX_DURATION_S)
    startup_s, final_s = _parse_windows(root.section("windows"), duration_s)
    probe = root.section("probe")
    probe_interval_ms = probe.number("interval_ms", 1000, minimum=0, maximum=MAX_INTERVAL_MS)
    if 0 < probe_interval_ms * time_scale < MIN_REAL_INTERVAL_MS:
        probe.fail("interval_ms", f"expected 0 (off) or at least {MIN_REAL_INTERVAL_MS:g} ms of real time at time "
                   f"scale {time_scale:g}, got {probe_interval_ms:g}")
    probe.done()
    seed = root.number("seed", None, minimum=0, maximum=MAX_SEED, integer=True)
    agents, operator = _parse_agents(root, time_scale)
    faults = parse_faults(root.get("faults", object), float(duration_s), problems, root.line("faults"))
    for index, arm in enumerate(arms):
        if ARMS[arm].approval_fix != "none" and agents is None:
            problems.add(f"arms[{index}]", f"{arm!r} is an approval arm and needs an agents section",
                         root.line("arms"))
    if isinstance(target, OpenClawTarget) and target.matrix_accounts and count is not None and channels is not None:
        if not root.has("arms"):
            arms = INPROCESS_ARMS
        target = _inprocess_target(root, target, count, channels, arms, probe, agents is not None, bool(faults))
    else:
        for index, arm in enumerate(arms):
            if ARMS[arm].inprocess_only:
                problems.add(f"arms[{index}]", f"{arm!r} switches the real gateway's own config: only with "
                             "target kind openclaw and inprocess: true", root.line("arms"))
    if target is not None and (refused := processes_refused(target, agents is not None, processes)):
        problems.add("accounts.processes", refused, accounts.line("processes"))
    fleet_gateways = _parse_fleet(root.section("fleet"), target, processes)
    thresholds = _parse_thresholds(root.section("assert"), arms)
    root.done()
    problems.check()
    assert name is not None and target is not None and count is not None and channels is not None
    return Profile(name=name, description=description, path=path, target=target, account_count=count,
                   channels=channels, keep_reconnecting_after_failed_start=keep_reconnecting, arms=arms,
                   coordinator=coordinator, time_scale=float(time_scale), duration_s=float(duration_s),
                   startup_window_s=float(startup_s), final_window_s=float(final_s),
                   probe_interval_ms=0.0 if _is_inprocess(target) else float(probe_interval_ms), seed=seed,
                   thresholds=thresholds, agents=agents,
                   operator=operator, faults=faults, gates=gates, breaker=breaker, processes=processes,
                   fleet_gateways=fleet_gateways)


def _parse_arms(root: Fields) -> tuple[str, ...]:
    raw = root.get("arms", list, ["shipped", "coordinator"])
    arms: list[str] = []
    if len(raw) > len(ARMS):
        root.fail("arms", f"expected at most {len(ARMS)} arms, got {len(raw)}")
        return ()
    for index, arm in enumerate(raw):
        if not isinstance(arm, str) or arm not in ARMS:
            shown = cut(arm) if isinstance(arm, str) else kind_of(arm)
            root.problems.add(f"arms[{index}]", f"unknown arm {shown} (expected one of {', '.join(ARMS)})",
                              root.line("arms"))
        elif arm in arms:
            root.problems.add(f"arms[{index}]", f"{arm!r} is listed twice", root.line("arms"))
        else:
            arms.append(arm)
    if not raw:
        root.fail("arms", "expected at least one arm")
    return tuple(arms)


def _parse_windows(windows: Fields, duration_s: float) -> tuple[float, float]:
    startup_s = windows.number("startup_s", DEFAULT_WINDOW_S, minimum=0, maximum=MAX_DURATION_S)
    final_s = windows.number("final_s", DEFAULT_WINDOW_S, minimum=0, exclusive_minimum=True, maximum=MAX_DURATION_S)
    windows.done()
    for key, value, broken, expected in (
            ("final_s", final_s, final_s > duration_s, "at most"),
            ("startup_s", startup_s, startup_s >= duration_s, "less than")):
        if not broken:
            continue
        if windows.has(key):
            windows.fail(key, f"expected {expected} duration_s ({duration_s:g}), got {value:g}")
        else:
            windows.fail(key, f"the default ({value:g} s) is not {expected} duration_s ({duration_s:g}): set "
                         f"windows.{key}")
    return startup_s, final_s


def _parse_agents(root: Fields, time_scale: float) -> tuple[AgentSettings | None, OperatorSettings | None]:
    if not root.has("agents"):
        if root.has("operator"):
            root.fail("operator", "only with an agents section")
        root.get("agents", dict)
        root.get("operator", dict)
        return None, None
    section = root.section("agents")
    count = section.number("count", None, minimum=1, maximum=MAX_ACCOUNTS, integer=True, required=True)
    heartbeat_ms = section.number("heartbeat_ms", 60_000, minimum=0, exclusive_minimum=True,
                                  maximum=MAX_INTERVAL_MS)
    if heartbeat_ms * time_scale < MIN_REAL_INTERVAL_MS:
        section.fail("heartbeat_ms", f"expected at least {MIN_REAL_INTERVAL_MS:g} ms of real time at time scale "
                     f"{time_scale:g}, got {heartbeat_ms:g}")
    timeouts = _parse_provider_timeouts(section)
    command = section.text("command", "ls -la", max_length=MAX_COMMAND_LENGTH)
    approval_timeout_ms = section.number("approval_timeout_ms", DEFAULT_EXEC_APPROVAL_TIMEOUT_MS, minimum=1,
                                         maximum=MAX_APPROVAL_TIMEOUT_MS, integer=True)
    section.done()
    operator = root.section("operator")
    away = "answer_after_ms" in operator.data and operator.data["answer_after_ms"] is None
    answer_after_ms = None if away else operator.number("answer_after_ms", DEFAULT_ANSWER_AFTER_MS, minimum=0,
                                                        maximum=MAX_INTERVAL_MS)
    decision = operator.get("decision", str, "allow-once")
    if decision not in DECISIONS:
        operator.fail("decision", f"expected {', '.join(DECISIONS[:-1])} or {DECISIONS[-1]}, got {cut(decision)}")
    operator.done()
    if count is None:
        return None, None
    agents = AgentSettings(count, float(heartbeat_ms), timeouts, command, int(approval_timeout_ms))
    return agents, OperatorSettings(None if answer_after_ms is None else float(answer_after_ms), decision)


def _parse_provider_timeouts(section: Fields) -> tuple[float, ...]:
    timeouts = section.get("provider_timeouts_ms", list, [10_000, 10_000, 10_000])
    line = section.line("provider_timeouts_ms")
    where = section.where("provider_timeouts_ms")
    if not timeouts or len(timeouts) > MAX_PROVIDERS:
        section.problems.add(where, f"expected 1 to {MAX_PROVIDERS} providers, got {len(timeouts)}", line)
        return ()
    parsed = []
    for index, value in enumerate(timeouts):
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= MAX_INTERVAL_MS:
            section.problems.add(f"{where}[{index}]", f"expected a number > 0 and <= {MAX_INTERVAL_MS:g}, got "
                                 f"{cut(value)}", line)
        else:
            parsed.append(float(value))
    return tuple(parsed)


def _check_real_time(target: Target, time_scale: float, problems: Problems, line: int | None,
                     where: str = "time_scale") -> None:
    if isinstance(target, OpenClawTarget) and time_scale != 1:
        problems.add(where, f"the real gateway runs in real time; expected 1 with target kind openclaw, got "
                     f"{time_scale:g}", line)


def _parse_target(target: Fields, time_scale: float) -> Target | None:
    kind = target.get("kind", str, "stub")
    protocol = target.number("protocol", None, minimum=PROTOCOL_APRIL, maximum=PROTOCOL_CURRENT, integer=True)
    device_signed = target.get("device_signed", bool)
    if kind == "url":
        return _parse_url_target(target, protocol, device_signed)
    if kind == "openclaw":
        return _parse_openclaw_target(target, protocol, device_signed)
    if kind not in ("stub", "sim"):
        target.fail("kind", f"expected stub, url, openclaw or sim, got {cut(kind)}")
        return None
    stub = _parse_stub_target(target, protocol, device_signed, time_scale, simulated=kind == "sim")
    return SimTarget(stub) if stub is not None and kind == "sim" else stub


def _parse_url_target(target: Fields, protocol: int | None, device_signed: bool | None) -> UrlTarget | None:
    url = target.text("url", None, max_length=MAX_URL_LENGTH, required=True)
    token = target.text("token", None, max_length=MAX_TOKEN_LENGTH, required=True)
    for key in (*STUB_OPTIONS, "version", "cpu_quota", "backend"):
        if target.has(key):
            target.fail(key, "not an option of kind: url (expected url, token, protocol, device_signed)")
            target.get(key, object)
    target.done()
    if url is None or token is None:
        return None
    try:
        require_loopback_url(url, target.where("url"))
    except BadInput as exc:
        target.problems.add(target.where("url"), str(exc).split(": ", 1)[1], target.line("url"))
        return None
    protocol = protocol or PROTOCOL_APRIL
    return UrlTarget(url, token, protocol, bool(device_signed or protocol == PROTOCOL_CURRENT))


def _parse_stub_target(target: Fields, protocol: int | None, device_signed: bool | None,
                       time_scale: float, *, simulated: bool = False) -> StubTarget | None:
    args: list[str] = []
    for key in STUB_OPTIONS:
        value = target.get(key, (str, int, float))
        if value is not None:
            args += [f"--{key.replace('_', '-')}", _option_text(value)]
    for key in ("url", "token"):
        if target.get(key, object) is not None:
            target.fail(key, "only with kind: url (this target is the gateway stub)")
    for key in ("version", "cpu_quota"):
        if target.get(key, object) is not None:
            target.fail(key, "only with kind: openclaw (this target is the gateway stub)")
    backend = target.get("backend", str, "embedded")
    if simulated and target.has("backend"):
        target.fail("backend", "not an option of kind: sim (the simulator runs in this process)")
    elif backend not in STUB_BACKENDS:
        target.fail("backend", f"expected {' or '.join(STUB_BACKENDS)}, got {cut(backend)}")
    target.done()
    # The stub's own option table decides, so whatever the stub would refuse is refused here: each option
    # alone first (every problem reported), then all together (the checks that span options).
    scale = ["--time-scale", _option_text(time_scale)]
    alone = [_stub_problem(target, ["--port", "0", flag, value, *scale])
             for flag, value in zip(args[::2], args[1::2], strict=True)]
    if any(alone) or _stub_problem(target, ["--port", "0", *args, *scale]):
        return None
    stub = stub_config_from_args(["--port", "0", *args, *scale], {})
    protocol = protocol or stub.generation.protocol
    return StubTarget(stub, tuple(args), protocol, bool(device_signed or protocol == PROTOCOL_CURRENT),
                      backend=backend if backend in STUB_BACKENDS else "embedded")


def _stub_problem(target: Fields, argv: list[str]) -> bool:
    """Whether the stub refuses these options; its reason goes to the problems, under the option's field."""
    try:
        stub_config_from_args(argv, {})
    except ConfigError as exc:
        option = exc.field if exc.field in STUB_OPTIONS else None
        message = str(exc).split(": ", 1)[-1]
        target.problems.add(target.where(option) if option else target.path, message,
                            target.line(option) if option else None)
        return True
    return False


def _option_text(value: str | int | float) -> str:
    """A profile value as the stub's command line takes it (a float that is a whole number stays exact)."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return str(value)


def _parse_openclaw_target(target: Fields, protocol: int | None, device_signed: bool | None) -> OpenClawTarget | None:
    version = target.get("version", (str, float), None, required=True)
    version = None if version is None else str(version)
    if version is not None and not OPENCLAW_VERSION_RE.match(version):
        target.fail("version", f"expected an npm version such as 2026.4.24, got {cut(version)}")
        version = None
    handshake_timeout_ms = target.number("handshake_timeout_ms", None, minimum=1, maximum=MAX_INTERVAL_MS,
                                         integer=True)
    max_preauth = target.number("max_preauth_per_ip", None, minimum=1, maximum=MAX_PREAUTH_PER_IP, integer=True)
    cpu_quota = target.number("cpu_quota", None, minimum=0, exclusive_minimum=True, maximum=os.cpu_count() or 1)
    quota_from = target.get("cpu_quota_from", str, "ready")
    if quota_from not in ("ready", "launch"):
        target.fail("cpu_quota_from", f"expected ready or launch, got {cut(quota_from)}")
    elif target.has("cpu_quota_from") and cpu_quota is None:
        target.fail("cpu_quota_from", "only with cpu_quota (there is no quota to start)")
    inprocess = target.get("inprocess", bool, False)
    homeserver_latency_ms = target.number("homeserver_latency_ms", 0, minimum=0, maximum=MAX_INTERVAL_MS, integer=True)
    if target.has("homeserver_latency_ms") and not inprocess:
        target.fail("homeserver_latency_ms", "only with inprocess: true (there is no homeserver otherwise)")
    for key in (*STUB_OPTIONS, "url", "token", "backend"):
        if key not in ("handshake_timeout_ms", "max_preauth_per_ip") and target.get(key, object) is not None:
            target.fail(key, "not an option of kind: openclaw (expected version, handshake_timeout_ms, "
                        "max_preauth_per_ip, cpu_quota, cpu_quota_from, inprocess, homeserver_latency_ms, protocol, "
                        "device_signed)")
    target.done()
    if version is None:
        return None
    return OpenClawTarget(version, handshake_timeout_ms, max_preauth, None if cpu_quota is None else float(cpu_quota),
                          protocol or protocol_for_version(version), True if device_signed is None else device_signed,
                          cpu_quota_from="launch" if quota_from == "launch" else "ready",
                          matrix_accounts=-1 if inprocess else 0,  # -1: set from accounts.count below
                          homeserver_latency_ms=int(homeserver_latency_ms or 0))


INPROCESS_ARMS = ("shipped", "approvals-off")  # an in-process profile's arms when it names none


def _is_inprocess(target: Target) -> bool:
    return isinstance(target, OpenClawTarget) and target.inprocess


def _inprocess_target(root: Fields, target: OpenClawTarget, count: int, channels: tuple[str, ...],
                      arms: tuple[str, ...], probe: Fields, has_agents: bool, has_faults: bool) -> OpenClawTarget:
    """The target with its in-process Matrix accounts (`inprocess: true`), refusing what cannot run in-process:
    the harness's own start policies (the accounts run OpenClaw's code), other channels, a probe, agents, faults."""
    from dataclasses import replace

    problems = root.problems
    if any(channel != "matrix" for channel in channels):
        problems.add("accounts.channels", "in-process accounts are Matrix accounts on a local Synapse (Telegram's "
                     "servers cannot run here); expected matrix only", root.section("accounts").line("channels"))
    for index, arm in enumerate(arms):
        if arm != "shipped" and not ARMS[arm].inprocess_only:
            problems.add(f"arms[{index}]", f"{arm!r} is a start policy of the harness's fake accounts; in-process "
                         "accounts run OpenClaw's own code (expected shipped or approvals-off)", root.line("arms"))
    if probe.has("interval_ms") and probe.get("interval_ms", object) != 0:
        probe.fail("interval_ms", "in-process runs have no health probe (the handlers are the gateway's only "
                   "clients, as in the field); expected 0 or no probe section")
    if has_agents:
        root.fail("agents", "the approval scenario needs the harness's fake accounts; not with inprocess: true")
    if has_faults:
        root.fail("faults", "in-process handlers connect inside the gateway's process: no proxy can sit between "
                  "them; not with inprocess: true")
    return replace(target, matrix_accounts=count)


def _parse_channels(accounts: Fields, count: int | None) -> tuple[str, ...] | None:
    raw = accounts.get("channels", (dict, str), None)
    if raw is None:
        return None if count is None else ("matrix",) * count
    if isinstance(raw, str):
        raw = {raw: count}
    channels: list[str] = []
    section = accounts.section("channels")
    for channel, n in raw.items():
        if channel not in CHANNELS:
            section.fail(str(channel), f"unknown channel (expected one of {', '.join(CHANNELS)})")
        elif n is None or isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= MAX_ACCOUNTS:
            section.fail(str(channel), f"expected an integer from 0 to {MAX_ACCOUNTS}, got {cut(n)}")
        else:
            channels += [channel] * n  # bounded above: at most MAX_ACCOUNTS per channel
    if count is not None and len(channels) != count and len(accounts.problems.items) == 0:
        accounts.fail("channels", f"the counts add up to {len(channels)}, expected count ({count})")
    return tuple(channels) if count is not None and len(channels) == count else None


def _parse_coordinator(section: Fields, environ: Mapping[str, str]) -> CoordinatorSettings:
    from_env = CoordinatorSettings.from_env(environ)
    jitter = section.number("start_jitter_ms", from_env.start_jitter_ms, minimum=0, maximum=MAX_INTERVAL_MS,
                            integer=True)
    k = section.number("max_concurrent_starts", from_env.max_concurrent_starts, minimum=1, maximum=MAX_ACCOUNTS,
                       integer=True)
    hold = section.number("start_slot_max_hold_ms", from_env.start_slot_max_hold_ms, minimum=1,
                          maximum=MAX_INTERVAL_MS, integer=True)
    section.done()
    return CoordinatorSettings(jitter, k, hold)


def _parse_fixes(section: Fields) -> tuple[GateSettings, BreakerSettings]:
    gates, breaker = GateSettings(), BreakerSettings()
    stagger = section.number("stagger_ms", gates.stagger_ms, minimum=0, maximum=MAX_INTERVAL_MS, integer=True)
    adaptive = section.number("adaptive_max_concurrent_starts", gates.adaptive_max_concurrent_starts, minimum=1,
                              maximum=MAX_ACCOUNTS, integer=True)
    failures = section.number("breaker_failures", breaker.failures, minimum=1, maximum=1000, integer=True)
    cooldown = section.number("breaker_cooldown_ms", breaker.cooldown_ms, minimum=1, maximum=MAX_INTERVAL_MS,
                              integer=True)
    section.done()
    return GateSettings(stagger, adaptive), BreakerSettings(failures, cooldown)


def _parse_thresholds(section: Fields, arms: tuple[str, ...]) -> dict[str, tuple[Threshold, ...]]:
    out: dict[str, tuple[Threshold, ...]] = {}
    for arm in list(section.data):
        block = section.section(arm)
        if arm != "all" and arm not in arms:
            section.fail(arm, f"not an arm of this profile (expected all or one of {', '.join(arms)})")
            continue
        parsed = []
        for metric in list(block.data)[:MAX_THRESHOLDS_PER_ARM]:
            spec = block.get(metric, (str, int, float, list))
            if spec is None:
                continue
            try:
                parsed.append(parse_threshold(metric, spec))
            except ValueError as exc:
                block.fail(metric, str(exc))
        if len(block.data) > MAX_THRESHOLDS_PER_ARM:
            section.fail(arm, f"expected at most {MAX_THRESHOLDS_PER_ARM} thresholds, got {len(block.data)}")
        block.done()
        out[arm] = tuple(parsed)
    return out
