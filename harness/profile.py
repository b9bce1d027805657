"""Profiles: one YAML file per scenario, validated in full before anything starts.

Every problem is one line that names the field and says what was expected (`BadInput`, exit 2):
unknown keys, wrong types, out-of-range values, unknown arms, and thresholds on unknown metrics.
The shape, with defaults:

    name: matrix-11-accounts          # required
    description: ""
    target:
      kind: stub                      # stub (the gateway stub), url (a ws:// URL on loopback) or openclaw (the real
                                      # gateway from npm, started by the harness on loopback; time_scale must be 1)
      backend: embedded               # stub: where it runs: embedded (a child process) or docker (containers)
      profile: april-2026             # stub: protocol profile
      handshake_timeout_ms: null      # stub: null = the profile's (10000 april-2026, 15000 current)
      max_preauth_per_ip: 32          # stub
      connect_cost_before_timer: "0"  # stub: cost specs, see gateway_stub/cost.py
      connect_cost_after_timer: "0"
      upgrade_cost: "0"
      colocated_challenge_cost: "0"
      colocated_hello_cost: "0"
      health_refresh_cost: "0"         # stub: the health refresh after each hello-ok, coalesced
      health_refresh_coalesce: join    # stub: a hello during a refresh joins it (join) or re-arms one more (rearm)
      cost_clock: wall
      challenge_latency_ms: 20
      hello_latency_ms: 40
      url: null                       # url: ws://127.0.0.1:PORT/
      token: null                     # url: the gateway's token
      version: null                   # openclaw: the npm version, e.g. 2026.4.24, 2026.4.29, 2026.9.6 (required)
      cpu_quota: null                 # openclaw: a fraction of one core for the gateway (e.g. 0.1); null: unthrottled
                                      # openclaw also takes handshake_timeout_ms and max_preauth_per_ip (null: its own)
      protocol: 3                     # the accounts' protocol (3 April, 4 current; openclaw: 3 up to 2026.4.x)
      device_signed: false            # sign connects with one device key (default true for openclaw and protocol 4)
    accounts:
      count: 11                       # required, 1..2000
      channels: {matrix: 11}          # counts per channel (matrix, telegram), summing to count
      keep_reconnecting_after_failed_start: false
    arms: [shipped, coordinator]      # from harness.policy.arms.ARMS
    coordinator: {}                   # start_jitter_ms, max_concurrent_starts, start_slot_max_hold_ms;
                                      # unset ones come from OPENCLAW_APPROVAL_HANDLER_* (PR parsing) or the PR defaults
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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gateway_stub.config import ConfigError, StubConfig
from gateway_stub.cost import parse_cost
from harness.agents.settings import AgentSettings, OperatorSettings
from harness.errors import BadInput
from harness.faults.timeline import FaultSpecError, FaultWindow, parse_faults
from harness.policy.arms import ARMS
from harness.policy.coordinator import CoordinatorSettings
from harness.target import STUB_BACKENDS, OpenClawTarget, StubTarget, Target, UrlTarget, require_loopback_url
from harness.verdict.thresholds import Threshold, parse_threshold
from openclaw_wire.constants import (
    DEFAULT_EXEC_APPROVAL_TIMEOUT_MS,
    PROTOCOL_APRIL,
    PROTOCOL_CURRENT,
    protocol_for_version,
)

CHANNELS = ("matrix", "telegram")
MAX_ACCOUNTS = 2000
MAX_DURATION_S = 86_400
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

    def thresholds_for(self, arm: str) -> tuple[Threshold, ...]:
        return (*self.thresholds.get("all", ()), *self.thresholds.get(arm, ()))

    def with_overrides(self, *, seed: int | None = None, time_scale: float | None = None) -> Profile:
        from dataclasses import replace

        changes: dict[str, Any] = {}
        if seed is not None:
            changes["seed"] = seed
        if time_scale is not None:
            if not time_scale > 0:
                raise BadInput(f"--time-scale: expected a number > 0, got {time_scale}")
            _check_real_time(self.target, time_scale, "--time-scale")
            changes["time_scale"] = time_scale
        return replace(self, **changes)


def load_profile(path: Path, environ: Mapping[str, str] | None = None) -> Profile:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise BadInput(f"{path}: cannot read the profile: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise BadInput(f"{path}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    return parse_profile(data, path=path, environ=os.environ if environ is None else environ)


# ---------------------------------------------------------------------------------------------


class _Fields:
    """Reads one mapping of the profile, remembering which keys were used, to refuse unknown ones."""

    def __init__(self, data: Any, path: str) -> None:
        if not isinstance(data, dict):
            raise BadInput(f"{path or 'profile'}: expected a mapping, got {_kind(data)}")
        self.data: dict[str, Any] = data
        self.path = path
        self._used: set[str] = set()

    def where(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = None, *, required: bool = False) -> Any:
        self._used.add(key)
        if key not in self.data or self.data[key] is None:
            if required:
                raise BadInput(f"{self.where(key)}: required")
            return default
        value = self.data[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in kinds:
            raise BadInput(f"{self.where(key)}: expected {_names(kinds)}, got a boolean")
        if not isinstance(value, kinds):
            raise BadInput(f"{self.where(key)}: expected {_names(kinds)}, got {_kind(value)}")
        return value

    def number(self, key: str, default: float | None, *, minimum: float | None = None, maximum: float | None = None,
               exclusive_minimum: bool = False, integer: bool = False, required: bool = False) -> Any:
        value = self.get(key, int if integer else (int, float), default, required=required)
        if value is None:
            return None
        if minimum is not None and (value <= minimum if exclusive_minimum else value < minimum):
            raise BadInput(f"{self.where(key)}: expected a number {'>' if exclusive_minimum else '>='} {minimum:g}, "
                           f"got {value}")
        if maximum is not None and value > maximum:
            raise BadInput(f"{self.where(key)}: expected a number <= {maximum:g}, got {value}")
        return value

    def section(self, key: str) -> _Fields:
        self._used.add(key)
        return _Fields(self.data.get(key) or {}, self.where(key))

    def done(self) -> None:
        unknown = [k for k in self.data if k not in self._used]
        if unknown:
            known = ", ".join(sorted(self._used))
            raise BadInput(f"{self.where(str(unknown[0]))}: unknown key (expected one of {known})")


def _names(kinds: tuple[type, ...]) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false", list: "a list",
             dict: "a mapping"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
            dict: "a mapping"}.get(type(value), type(value).__name__)


def parse_profile(data: Any, *, path: Path | None = None, environ: Mapping[str, str] | None = None) -> Profile:
    root = _Fields(data, "")
    name = root.get("name", str, required=True)
    description = root.get("description", str, "")
    target = _parse_target(root.section("target"))
    accounts = root.section("accounts")
    count = accounts.number("count", None, minimum=1, maximum=MAX_ACCOUNTS, integer=True, required=True)
    channels = _parse_channels(accounts, count)
    keep_reconnecting = accounts.get("keep_reconnecting_after_failed_start", bool, False)
    accounts.done()
    arms = tuple(root.get("arms", list, ["shipped", "coordinator"]))
    for index, arm in enumerate(arms):
        if arm not in ARMS:
            raise BadInput(f"arms[{index}]: unknown arm {arm!r} (expected one of {', '.join(ARMS)})")
    if not arms:
        raise BadInput("arms: expected at least one arm")
    coordinator = _parse_coordinator(root.section("coordinator"), environ or {})
    time_scale = root.number("time_scale", 1.0, minimum=0, exclusive_minimum=True)
    _check_real_time(target, time_scale, "time_scale")
    duration_s = root.number("duration_s", 120, minimum=0, exclusive_minimum=True, maximum=MAX_DURATION_S)
    windows = root.section("windows")
    startup_s = windows.number("startup_s", 30, minimum=0)
    final_s = windows.number("final_s", 30, minimum=0, exclusive_minimum=True)
    windows.done()
    if final_s > duration_s:
        raise BadInput(f"windows.final_s: expected at most duration_s ({duration_s:g}), got {final_s:g}")
    if startup_s >= duration_s:
        raise BadInput(f"windows.startup_s: expected less than duration_s ({duration_s:g}), got {startup_s:g}")
    probe = root.section("probe")
    probe_interval_ms = probe.number("interval_ms", 1000, minimum=0)
    probe.done()
    seed = root.get("seed", int)
    agents, operator = _parse_agents(root)
    try:
        faults = parse_faults(root.get("faults", list), float(duration_s))
    except FaultSpecError as exc:
        raise BadInput(str(exc)) from None
    for index, arm in enumerate(arms):
        if ARMS[arm].approval_fix != "none" and agents is None:
            raise BadInput(f"arms[{index}]: {arm!r} is an approval arm and needs an agents section")
    thresholds = _parse_thresholds(root.section("assert"), arms)
    root.done()
    return Profile(name=name, description=description, path=path, target=target, account_count=count,
                   channels=channels, keep_reconnecting_after_failed_start=keep_reconnecting, arms=arms,
                   coordinator=coordinator, time_scale=float(time_scale), duration_s=float(duration_s),
                   startup_window_s=float(startup_s), final_window_s=float(final_s),
                   probe_interval_ms=float(probe_interval_ms), seed=seed, thresholds=thresholds, agents=agents,
                   operator=operator, faults=faults)


def _parse_agents(root: _Fields) -> tuple[AgentSettings | None, OperatorSettings | None]:
    if root.data.get("agents") is None:
        if root.data.get("operator") is not None:
            raise BadInput("operator: only with an agents section")
        root.get("agents", dict)
        root.get("operator", dict)
        return None, None
    section = root.section("agents")
    count = section.number("count", None, minimum=1, maximum=MAX_ACCOUNTS, integer=True, required=True)
    heartbeat_ms = section.number("heartbeat_ms", 60_000, minimum=0, exclusive_minimum=True)
    timeouts = section.get("provider_timeouts_ms", list, [10_000, 10_000, 10_000])
    for index, value in enumerate(timeouts):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise BadInput(f"agents.provider_timeouts_ms[{index}]: expected a number > 0, got {value!r}")
    if not timeouts:
        raise BadInput("agents.provider_timeouts_ms: expected at least one provider")
    command = section.get("command", str, "ls -la")
    approval_timeout_ms = section.number("approval_timeout_ms", DEFAULT_EXEC_APPROVAL_TIMEOUT_MS, minimum=1,
                                         integer=True)
    section.done()
    operator = root.section("operator")
    away = "answer_after_ms" in operator.data and operator.data["answer_after_ms"] is None
    answer_after_ms = None if away else operator.number("answer_after_ms", DEFAULT_ANSWER_AFTER_MS, minimum=0)
    decision = operator.get("decision", str, "allow-once")
    if decision not in ("allow-once", "allow-always", "deny"):
        raise BadInput(f"operator.decision: expected allow-once, allow-always or deny, got {decision!r}")
    operator.done()
    agents = AgentSettings(count, float(heartbeat_ms), tuple(float(t) for t in timeouts), command,
                           int(approval_timeout_ms))
    return agents, OperatorSettings(None if answer_after_ms is None else float(answer_after_ms), decision)


def _check_real_time(target: Target, time_scale: float, where: str) -> None:
    if isinstance(target, OpenClawTarget) and time_scale != 1:
        raise BadInput(f"{where}: the real gateway runs in real time; expected 1 with target kind openclaw, "
                       f"got {time_scale:g}")


def _parse_target(target: _Fields) -> Target:
    kind = target.get("kind", str, "stub")
    protocol = target.number("protocol", None, minimum=3, maximum=4, integer=True)
    device_signed = target.get("device_signed", bool)
    if kind == "url":
        url = require_loopback_url(target.get("url", str, required=True), target.where("url"))
        token = target.get("token", str, required=True)
        target.done()
        return UrlTarget(url, token, protocol or PROTOCOL_APRIL, bool(device_signed or protocol == PROTOCOL_CURRENT))
    if kind == "openclaw":
        return _parse_openclaw_target(target, protocol, device_signed)
    if kind != "stub":
        raise BadInput(f"{target.where('kind')}: expected stub, url or openclaw, got {kind!r}")
    options: dict[str, Any] = {}
    args: list[str] = []
    parsers: dict[str, tuple[type | tuple[type, ...], Callable[[Any], Any]]] = {
        "profile": (str, str), "handshake_timeout_ms": (int, int), "max_preauth_per_ip": (int, int),
        "cost_clock": (str, str), "health_refresh_coalesce": (str, str),
        "challenge_latency_ms": ((int, float), float), "hello_latency_ms": ((int, float), float),
    }
    for key in STUB_OPTIONS:
        is_cost = key.endswith("_cost") or "_cost_" in key
        kind_of, convert = ((str, int, float), lambda v: parse_cost(str(v))) if is_cost else parsers[key]
        value = target.get(key, kind_of)
        if value is None:
            continue
        try:
            options[key] = convert(value)
        except ValueError as exc:
            raise BadInput(f"{target.where(key)}: {exc}") from None
        args += [f"--{key.replace('_', '-')}", str(value)]
    for key in ("url", "token"):
        if target.get(key, str) is not None:
            raise BadInput(f"{target.where(key)}: only with kind: url (this target is the gateway stub)")
    backend = target.get("backend", str, "embedded")
    if backend not in STUB_BACKENDS:
        raise BadInput(f"{target.where('backend')}: expected {' or '.join(STUB_BACKENDS)}, got {backend!r}")
    target.done()
    try:
        stub = StubConfig(port=0, **options)
    except ConfigError as exc:
        message = str(exc).split(": ", 1)[-1]
        raise BadInput(f"target: {message}") from None
    protocol = protocol or stub.generation.protocol
    return StubTarget(stub, tuple(args), protocol, bool(device_signed or protocol == PROTOCOL_CURRENT), backend=backend)


def _parse_openclaw_target(target: _Fields, protocol: int | None, device_signed: bool | None) -> OpenClawTarget:
    version = target.get("version", (str, float), required=True)
    version = str(version)
    if not OPENCLAW_VERSION_RE.match(version):
        raise BadInput(f"{target.where('version')}: expected an npm version such as 2026.4.24, got {version!r}")
    handshake_timeout_ms = target.number("handshake_timeout_ms", None, minimum=1, integer=True)
    max_preauth = target.number("max_preauth_per_ip", None, minimum=1, integer=True)
    cpu_quota = target.number("cpu_quota", None, minimum=0, exclusive_minimum=True, maximum=os.cpu_count() or 1)
    for key in (*STUB_OPTIONS, "url", "token"):
        if key not in ("handshake_timeout_ms", "max_preauth_per_ip") and target.get(key, object) is not None:
            raise BadInput(f"{target.where(key)}: not an option of kind: openclaw (expected version, "
                           f"handshake_timeout_ms, max_preauth_per_ip, cpu_quota, protocol, device_signed)")
    target.done()
    return OpenClawTarget(version, handshake_timeout_ms, max_preauth, None if cpu_quota is None else float(cpu_quota),
                          protocol or protocol_for_version(version), True if device_signed is None else device_signed)


def _parse_channels(accounts: _Fields, count: int) -> tuple[str, ...]:
    raw = accounts.get("channels", (dict, str), {"matrix": count})
    if isinstance(raw, str):
        raw = {raw: count}
    channels: list[str] = []
    for channel, n in raw.items():
        where = accounts.where(f"channels.{channel}")
        if channel not in CHANNELS:
            raise BadInput(f"{where}: unknown channel (expected one of {', '.join(CHANNELS)})")
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise BadInput(f"{where}: expected an integer >= 0, got {n!r}")
        channels += [channel] * n
    if len(channels) != count:
        raise BadInput(f"{accounts.where('channels')}: the counts add up to {len(channels)}, expected count ({count})")
    return tuple(channels)


def _parse_coordinator(section: _Fields, environ: Mapping[str, str]) -> CoordinatorSettings:
    from_env = CoordinatorSettings.from_env(environ)
    jitter = section.number("start_jitter_ms", from_env.start_jitter_ms, minimum=0, integer=True)
    k = section.number("max_concurrent_starts", from_env.max_concurrent_starts, minimum=1, integer=True)
    hold = section.number("start_slot_max_hold_ms", from_env.start_slot_max_hold_ms, minimum=1, integer=True)
    section.done()
    return CoordinatorSettings(jitter, k, hold)


def _parse_thresholds(section: _Fields, arms: tuple[str, ...]) -> dict[str, tuple[Threshold, ...]]:
    out: dict[str, tuple[Threshold, ...]] = {}
    for arm in list(section.data):
        if arm != "all" and arm not in arms:
            raise BadInput(f"{section.where(str(arm))}: not an arm of this profile (expected all or one of "
                           f"{', '.join(arms)})")
        block = section.section(str(arm))
        parsed = []
        for metric in list(block.data):
            try:
                parsed.append(parse_threshold(str(metric), block.get(str(metric), (str, int, float, list))))
            except ValueError as exc:
                raise BadInput(f"{block.where(str(metric))}: {exc}") from None
        block.done()
        out[str(arm)] = tuple(parsed)
    return out
