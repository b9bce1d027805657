"""The typed summary of one arm's run: the only writer of summary.json, and the reader of it.

`Summary` is a pydantic model: the judge (`harness.verdict.judge`) fills it, `write()` is the one place
summary.json is written, and `read_summary()` validates a file on the way in, so a renamed or missing key
fails loudly where it happens instead of turning a threshold silently into "no value". The JSON Schema
published at `docs/summary.schema.json` is generated from this type (`python -m harness.summary`), and a
test keeps the two equal; so is `docs/distribution.schema.json`, for a repeat's distribution.json. Pydantic
rather than dataclasses: it gives validation of files read back (reports, comparisons, history) and the JSON
Schema from the same declaration.

Thresholds name figures by dotted path (`handshake_ms.p99`); `metric_field()` resolves a path against this
type when a profile loads, so a threshold on a figure that does not exist is refused before anything runs.

Migration. schema_version 2 (this one) differs from 1 in three ways: `assertions` is now `thresholds`;
every key is always present (`faults` is `[]`, and `fault_backend`, `approval_fix`, `approval_fix_applies`
and `duplicates` are null when the run has no faults or no approval scenario; a fault window has null
`type`, `stream`, `toxicity`, `attributes` and an empty `errors` when it has none); and `target` always
carries the fields of its kind (a stub in the embedded backend has null `image`, `base_image`,
`toxiproxy_image`, `toxiproxy_fallback`).
"""

from __future__ import annotations

import dataclasses
import json
import sys
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from harness.events import StormKind
from harness.policy.coordinator import CoordinatorSettings, CoordinatorStatistics

SCHEMA_VERSION: Literal[2] = 2
SCHEMA_PATH = Path(__file__).resolve().parent.parent / "docs" / "summary.schema.json"
DISTRIBUTION_SCHEMA_PATH = SCHEMA_PATH.with_name("distribution.schema.json")

# What the figures say, and what the summary says: the same, or `inconclusive` when the host was too busy for
# the figures to mean anything (harness.verdict.host).
ObservedVerdict = Literal["storm", "recovered", "converged", "degraded"]
Verdict = Literal["storm", "recovered", "converged", "degraded", "inconclusive"]
VERDICTS: tuple[Verdict, ...] = typing.get_args(Verdict)
# A threshold's value as checked: a number, a verdict, a yes/no, or nothing (the figure had no value).
MetricValue = float | int | bool | str | None


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)


class StormCounts(_Model):
    handshake_timeout: int
    preauth_rejected: int
    connect_error: int


class GatewayLogCounts(_Model):
    """What the gateway's own log shows; null where it cannot show a kind (the real gateway logs no 503)."""

    handshake_timeout: int
    preauth_rejected: int | None
    connect_error: int | None


class StormSources(_Model):
    clients: StormCounts
    gateway_log: GatewayLogCounts | None
    """Null when the gateway's log could not be read."""


class LatencyFigures(_Model):
    p50: float | None
    p99: float | None
    max: float | None


class HandshakeDistribution(_Model):
    count: int
    p10: float | None
    p50: float | None
    p90: float | None
    p99: float | None
    max: float | None
    over_timeout: int
    """Attempts that lasted longer than the handshake timeout: its timer fired late (a busy event loop)."""


class LostWorkerRecord(_Model):
    """A harness worker (one gateway-side process's accounts) that died or stopped answering during the run."""

    worker: str
    """Locust's id of the worker."""
    accounts: list[str]
    """The accounts it held: their figures end where the worker did."""
    at_s: float
    """Scenario seconds when the master found it gone."""
    how: str


class InProcessFigures(_Model):
    """In-process accounts (`target.inprocess`): the real gateway's own Matrix handlers, read from its console."""

    matrix_accounts: int
    exec_approvals: bool
    """Their `execApprovals.enabled`: false is the report's workaround (the approvals-off arm)."""
    homeserver: str
    handler_connect_errors: int
    """The handlers' own `connect error` console lines: their clients saw the connection closed before hello."""
    handler_failed_starts: int
    """Their `failed to start native approval handler` lines: each is followed by a new handler 1 s later."""
    channel_exits: int
    """`[matrix] [<account>] channel exited: …` lines: an account's Matrix client gave up before its handler could
    start (on a starved host: `did not reach a ready sync state within 30000ms`); the gateway starts it again."""
    gateway_handshake_timeouts: int | None
    """Connections the gateway's handshake timer closed, from its JSON log; null when it could not be read."""
    correlated: bool | None
    """The handlers' connect errors and the gateway's handshake timeouts match one to one (within one attempt in
    flight per account), as the report found."""
    handshake_ms: HandshakeDistribution
    """Every handler attempt, the gateway's `← open` to its connect handled or its handshake timeout: the report's
    `handshakeMs`."""


class HealthRpcFigures(_Model):
    p50: float | None
    p99: float | None
    samples: int


class LoopLagFigures(_Model):
    p99: float | None
    max: float | None


class Witness(_Model):
    """One storm entry in the final window: the proof that a storm lasted (Jepsen-style)."""

    account: str
    handler: int
    at_s: float
    kind: StormKind
    close_code: int | None


class HealthProbeFigures(_Model):
    handshake_timeouts: int
    reconnects: int


class TimelineRow(_Model):
    t_s: float
    attempts: int
    hellos: int
    storm_entries: int
    connected: int
    faults: list[int]
    """Indexes of the fault windows active in this bucket."""
    health_rpc_ms: float | None = None
    """The slowest health RPC the probe sent in this bucket (None: no call sent in it)."""
    event_loop_lag_ms: float | None = None
    """The worst event-loop delay the gateway reported in this bucket's health answers (None: not reported)."""


class FaultWindowRecord(_Model):
    """A fault window as the profile asked for it and as it really happened (scenario seconds)."""

    index: int
    kind: Literal["toxic", "gateway_down", "gateway_restart"]
    from_s: float
    to_s: float | None
    type: str | None
    """The toxic's; null for an outage."""
    stream: str | None
    toxicity: float | None
    attributes: dict[str, float] | None
    applied_at_s: float | None
    removed_at_s: float | None
    errors: list[str]


class Windows(_Model):
    startup_s: float
    final_s: float


class DuplicateFigures(_Model):
    intents: int
    intents_decided: int
    approval_requests_total: int
    prompts_total: int
    max_prompts_per_intent: int
    duplicate_prompts: int
    peak_prompt_rate_per_s: int
    pending_approvals_max: int | None
    """Null when the gateway's pending count could not be sampled."""
    clicks_total: int
    clicks_refused: int
    decisions_lost: int
    unknown_prompts: int


class ProcessCpuFigures(_Model):
    """One role's processes over the run: CPU used, and CPU denied (runnable, but waiting for a CPU)."""

    cpu_s: float
    waited_s: float
    waited_fraction: float
    """waited_s over the wall seconds of the run: the share of the run this role was held back by the host."""


class HostFigures(_Model):
    """How busy the host was while the accounts ran (harness.host); what decides `inconclusive`."""

    cores: int
    wall_s: float
    """Real seconds the accounts ran."""
    harness: ProcessCpuFigures | None
    """The harness's own process: the accounts under Locust and the health probe."""
    gateway: ProcessCpuFigures | None
    """The gateway's processes; null where they are not on this machine or cannot be read."""
    steal_fraction: float | None
    """Share of all CPU time a hypervisor gave to other machines."""
    cpu_pressure_fraction: float | None
    """Share of the run during which some task on the machine waited for a CPU (PSI)."""
    harness_loop_lag_ms: LoopLagFigures
    """How late the harness's event loop woke a 50 ms sleeper, in scenario milliseconds."""
    gateway_cpu_quota: float | None = None
    """The gateway ran under this `cpu_quota` (a share of one core): Linux counts the time the quota throttles
    it as waiting, so its wait is the experiment's, not the host's, and is not judged."""


class ThresholdResult(_Model):
    metric: str
    threshold: str
    value: MetricValue
    passed: bool


class StubOptionsRecord(_Model):
    """The stub's options as a run used them: the stub itself, or the simulator's model of it."""

    profile: str
    """The stub's protocol generation (its `--profile`)."""
    effective_handshake_timeout_ms: int
    max_preauth_per_ip: int
    connect_cost_before_timer: str
    connect_cost_after_timer: str
    upgrade_cost: str
    colocated_challenge_cost: str
    colocated_hello_cost: str
    health_refresh_cost: str
    health_refresh_coalesce: str

    @classmethod
    def fields_from(cls, described: Mapping[str, Any]) -> dict[str, Any]:
        """These fields out of `StubConfig.describe()`."""
        return {name: described[name] for name in StubOptionsRecord.model_fields}


class StubTargetRecord(StubOptionsRecord):
    kind: Literal["stub"]
    backend: Literal["embedded", "docker"]
    cost_clock: str
    image: str | None
    """Docker only, from here on."""
    base_image: str | None
    toxiproxy_image: str | None
    toxiproxy_fallback: str | None
    """Why the pinned Toxiproxy image was not used, when it was not."""


class UrlTargetRecord(_Model):
    kind: Literal["url"]
    url: str
    protocol: int


class OpenClawTargetRecord(_Model):
    kind: Literal["openclaw"]
    protocol: int
    device_signed: bool
    version: str
    handshake_timeout_ms: int | None
    max_preauth_per_ip: int | None
    cpu_quota: float | None
    cpu_quota_from: Literal["ready", "launch"] = "ready"
    """When the quota started holding: once the gateway was ready, or from its launch."""
    effective_handshake_timeout_ms: int
    cpu_throttle: dict[str, Any] | None
    """How the quota was applied (cgroup or SIGSTOP duty cycle)."""
    ready_after_s: float
    external_sockets: list[str]
    """Any socket the gateway opened beyond loopback."""


class SimTuningRecord(_Model):
    network_real_ms: float
    network_jitter_real_ms: float
    connect_real_ms: tuple[float, float]
    close_real_ms: tuple[float, float]
    upgrade_loop_real_ms: float
    upgrade_turns: int


class SimTargetRecord(StubOptionsRecord):
    """The stub as the simulator models it (harness/sim/, docs/simulator.md): no sockets, virtual time."""

    kind: Literal["sim"]
    challenge_latency_ms: float
    hello_latency_ms: float
    tuning: SimTuningRecord
    """What the model adds for real sockets and Python, in real ms (from the calibration, docs/simulator.md)."""
    loop_busy_s: float
    """Scenario seconds the modelled loop spent on callbacks."""


TargetRecord = Annotated[StubTargetRecord | UrlTargetRecord | OpenClawTargetRecord | SimTargetRecord,
                         Field(discriminator="kind")]


class Summary(_Model):
    """summary.json: one arm of one profile, judged."""

    schema_version: Literal[2]
    profile: str
    """The profile's name."""
    arm: str
    """The start policy (openclaw#70641) or approval fix (openclaw#69478) this run used."""
    seed: int | None
    time_scale: float
    """Real seconds per scenario second: every duration the run used was multiplied by it."""
    target: TargetRecord
    accounts: int
    """How many fake channel accounts ran."""
    wall_clock_s: float
    """Real seconds the whole arm took, start-up and teardown included."""
    duration_s: float
    """Scenario seconds the accounts ran."""
    windows: Windows
    coordinator: CoordinatorSettings | None
    """The settings, for an arm behind the coordinator."""
    coordinator_statistics: CoordinatorStatistics | None
    """The coordinator at the end (trio's CapacityLimiter.statistics() shape) and over the run."""
    storm_entries: int
    """Failed handshake attempts of any kind (handshake timeout, pre-auth 503, connect error), as the clients saw
    them."""
    storm_entries_by_kind: StormCounts
    storm_entries_by_source: StormSources
    """The same count from the clients and from the gateway's own log."""
    sources_agree: bool | None
    """The two sources differ by no more than one in-flight attempt per account; null when the gateway's log could
    not be read."""
    final_window_storm_entries: int
    """Storm entries in the last `windows.final_s` seconds: any means the storm lasted to the end."""
    storm_entries_after_startup: int
    """Storm entries after the first `windows.startup_s` seconds."""
    verdict: Verdict
    """storm: storm entries continue into the final window; recovered: storm entries after startup, then a clean
    final window with every account connected; converged: every account connected and none after startup;
    degraded: otherwise; inconclusive: the host was too busy for the figures to mean anything (see
    inconclusive_reason)."""
    observed_verdict: ObservedVerdict
    """What the figures alone say, whatever the host did."""
    inconclusive_reason: str | None
    recovered_at_s: float | None
    """For `recovered`: when every account held a connection again after the last storm entry."""
    host: HostFigures | None
    """Null for a run that had no host (a simulation)."""
    time_to_all_connected_s: float | None
    """When every account first held a connection at once; null if that never happened."""
    connected_accounts_at_end: int
    handshake_attempts_total: int
    handshake_ms: LatencyFigures
    """Connect to hello-ok, of the attempts that reached it, in scenario milliseconds."""
    health_rpc_ms: HealthRpcFigures
    """The health probe's `health` round trips over an existing connection: the tax a storm puts on normal
    traffic."""
    event_loop_lag_ms: LoopLagFigures
    """How late the stub's event loop ran a 50 ms timer, in scenario milliseconds; null for other gateways."""
    witnesses: list[Witness]
    """Up to ten storm entries of the final window."""
    health_probe: HealthProbeFigures
    faults: list[FaultWindowRecord]
    """The profile's fault windows, with when each was really applied and removed."""
    fault_backend: str | None
    """Which Toxiproxy ran the faults, and where; null without faults."""
    timeline: list[TimelineRow]
    """Per second of scenario time (coarser for long runs)."""
    approval_fix: str | None
    """With the approval scenario: how a failed-over run asks again."""
    approval_fix_applies: bool | None
    """False when the fix exists only in the stub and the target is another gateway (gateway-dedup)."""
    duplicates: DuplicateFigures | None
    """The duplicate-prompt figures (openclaw#69478); null without the approval scenario."""
    thresholds: list[ThresholdResult]
    """The profile's thresholds for this arm, each with the value it was checked against."""
    inprocess: InProcessFigures | None = None
    """In-process accounts' own figures; null for the harness's fake accounts."""
    processes: int = 1
    """Harness processes the accounts ran in: Locust workers when more than one, each one gateway-side process with
    its own share of the accounts and its own start coordinator (`accounts.processes`, `--processes`)."""
    lost_workers: list[LostWorkerRecord] = []
    """Workers that died or stopped answering, with their accounts; any makes the verdict inconclusive."""

    @property
    def passed(self) -> bool:
        return all(t.passed for t in self.thresholds)

    def to_json(self) -> str:
        return self.model_dump_json(indent=2) + "\n"

    def write(self, path: Path) -> None:
        path.write_text(self.to_json(), encoding="utf-8")


class FigureSpread(_Model):
    """One figure over the conclusive runs of a repeat: its median and range, and how many runs had no value."""

    median: float | None
    min: float | None
    max: float | None
    nulls: int


class Distribution(_Model):
    """distribution.json: one arm run `repeats` times with seeds derived from the base seed (base, base+1, …)."""

    schema_version: Literal[2]
    profile: str
    arm: str
    repeats: int
    seeds: list[int | None]
    verdicts: dict[str, int]
    """How many runs gave each verdict, inconclusive ones included."""
    conclusive: int
    """Runs whose verdict was not inconclusive: the figures and the thresholds below are over these."""
    runs_passed: int
    """Conclusive runs that met every per-run threshold."""
    figures: dict[str, FigureSpread]
    """Every numeric figure a threshold can name, over the conclusive runs."""
    thresholds: list[ThresholdResult]
    """The profile's thresholds over the distribution (`verdict: "converged in >= 9/10"`, `x: "median < 5"`)."""

    @property
    def passed(self) -> bool:
        return self.runs_passed == self.conclusive and all(t.passed for t in self.thresholds)

    def write(self, path: Path) -> None:
        path.write_text(self.model_dump_json(indent=2) + "\n", encoding="utf-8")


class Comparison(_Model):
    """compare.json: every arm of one profile (every run of each arm, with --repeat)."""

    profile: str
    repeats: int
    arms: list[Summary]
    distributions: list[Distribution]

    def write(self, path: Path) -> None:
        path.write_text(self.model_dump_json(indent=2) + "\n", encoding="utf-8")


class SummaryError(ValueError):
    """A summary file that is not a summary of this schema version; the message names the file and the field."""


def read_summary(path: Path) -> Summary:
    try:
        return Summary.model_validate_json(path.read_bytes())
    except OSError as exc:
        raise SummaryError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "root"
        raise SummaryError(f"{path}: {where}: {first['msg']}") from None


# -- metrics: the figures a threshold can name -----------------------------------------------------

# Settings and descriptions of the run, not figures of it: a threshold cannot name them.
_NOT_METRICS = frozenset({"schema_version", "profile", "arm", "seed", "time_scale", "target", "accounts",
                          "duration_s", "windows", "coordinator", "fault_backend", "approval_fix",
                          "approval_fix_applies", "wall_clock_s", "processes"})
_NUMBERS = (int, float, bool)


def _leaf_types(annotation: Any) -> tuple[Any, ...]:
    """The non-None types of an annotation (`int | None` -> (int,))."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return tuple(a for a in typing.get_args(annotation) if a is not type(None))
    return (annotation,)


def _fields_of(kind: Any) -> dict[str, Any] | None:
    """The fields of a section of the summary (a model or a dataclass) with their annotations; None for a leaf."""
    if isinstance(kind, type) and issubclass(kind, BaseModel):
        return {name: field.annotation for name, field in kind.model_fields.items()}
    if isinstance(kind, type) and dataclasses.is_dataclass(kind):
        return typing.get_type_hints(kind)
    return None


def _section(annotation: Any) -> dict[str, Any] | None:
    sections = [fields for leaf in _leaf_types(annotation) if (fields := _fields_of(leaf)) is not None]
    return sections[0] if len(sections) == 1 else None


def metric_field(path: str) -> Literal["number", "verdict"] | None:
    """What a threshold on `path` compares: a number, the verdict, or None when it names no figure."""
    if path == "verdict":
        return "verdict"
    parts = path.split(".")
    if parts[0] in _NOT_METRICS:
        return None
    fields: dict[str, Any] | None = _fields_of(Summary)
    for part in parts[:-1]:
        fields = _section(fields.get(part)) if fields is not None and part in fields else None
    if fields is None or parts[-1] not in fields:
        return None
    leaves = _leaf_types(fields[parts[-1]])
    return "number" if leaves and all(leaf in _NUMBERS for leaf in leaves) else None


def metrics() -> tuple[str, ...]:
    """Every figure a threshold can name, in summary order."""
    found: list[str] = ["verdict"]

    def walk(fields: dict[str, Any], prefix: str) -> None:
        for name, annotation in fields.items():
            path = prefix + name
            if not prefix and name in _NOT_METRICS:
                continue
            section = _section(annotation)
            if section is not None:
                walk(section, path + ".")
            elif metric_field(path) == "number":
                found.append(path)

    walk(_fields_of(Summary) or {}, "")
    return tuple(found)


def metric_value(summary: Summary, path: str) -> MetricValue:
    """The value of a figure by dotted path; None where a section is absent (no approval scenario)."""
    value: Any = summary
    for part in path.split("."):
        value = getattr(value, part, None)
        if value is None:
            return None
    return value if isinstance(value, int | float | str) else None


def json_schema(model: type[BaseModel] | None = None) -> dict[str, Any]:
    schema = (model or Summary).model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema


def main() -> int:
    """`python -m harness.summary [--check]`: write the published schemas, or check that they are current."""
    stale = []
    for model, path in ((Summary, SCHEMA_PATH), (Distribution, DISTRIBUTION_SCHEMA_PATH)):
        text = json.dumps(json_schema(model), indent=2) + "\n"
        if sys.argv[1:] == ["--check"]:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(path)
        else:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}", file=sys.stderr)
    for path in stale:
        print(f"{path} is out of date: run python -m harness.summary", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
