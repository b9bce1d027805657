"""A soak plan: which profiles and arms run, cycle after cycle, for how long, and what counts as a failure.

    name: quick                          # required; names the results folder and the history's rows
    description: ""
    time_scale: 0.1                      # every run's and every gateway's (default: each profile's own)
    duration_minutes: 10                 # start no run after this much real time (the one running finishes)
    cycles: null                         # or at most this many cycles (the first limit reached ends the soak)
    warmup_minutes: 2                    # resource samples this early (after each gateway start) are not fitted
    sample_interval_s: 5                 # how often the processes are sampled
    restart_every_minutes: 0             # restart every gateway process between runs this often (0: never)
    idle_s: 0                            # between cycles nothing runs; the gateways and the sampler go on
    runs:                                # each cycle runs these in order
      - profile: ../profiles/matrix-11-accounts.yaml   # relative to this file
        arms: [shipped, coordinator]     # default: every arm of the profile
        expect: {shipped: storm}         # the verdict each arm must give; an arm not named must pass its thresholds
        duration_s: 120                  # default: the profile's
        overrides: {target: {cpu_quota: null}}   # laid over the profile (a null removes the key)
        sigterm_after_s: 30              # the real gateway only: SIGTERM it this far into each run, start it again
        own_gateway: false               # true: a gateway of its own (runs of one target share one by default)
    bounds:                              # growth after warm-up that fails the soak
      rss_percent_per_hour: 5            # resident memory, of a process whose live heap is not known
      heap_percent_per_hour: 5           # the live heap: Node's after full collections, CPython's allocated blocks
      descriptors_per_hour: 0            # 0: any steady growth
      sockets_per_hour: 0
    tolerances:                          # tonight against the median of the previous nights (with --history)
      nights: 7
      time_to_all_connected_s: "+25%"    # "+P%" above the median, "+N" above it, "max N" at all
      storm_entries_after_startup: {coordinator: "max 0"}   # or per arm

Every run aims at a gateway the soak started and keeps running: runs whose profiles give the same target and
the same stub options share one, so its memory and descriptors can be watched for hours. Every problem is one
line naming the field (`BadInput`, exit 2).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import BadInput
from harness.input_fields import Fields, Problems, cut
from harness.profile import Profile, load_profile, parse_profile
from harness.target import OpenClawTarget, StubTarget
from harness.yaml_input import read_yaml

VERDICTS = ("storm", "recovered", "converged", "degraded")
MAX_RUNS_PER_CYCLE = 50
MAX_MINUTES = 7 * 24 * 60
TOLERANCE_RE = re.compile(r"^(?:\+(?P<percent>\d+(?:\.\d+)?)%|\+(?P<plus>\d+(?:\.\d+)?)|max (?P<max>-?\d+(?:\.\d+)?))$")
DEFAULT_TOLERANCES: Mapping[str, str] = {"time_to_all_connected_s": "+25%", "health_rpc_ms.p50": "+50%",
                                         "handshake_ms.p99": "+50%"}
GATEWAY_CHOICES = "stub, stub-docker or openclaw@VERSION"
# What each night keeps per arm (the median over its cycles' conclusive runs), and per process role.
RUN_FIGURES = ("time_to_all_connected_s", "storm_entries", "storm_entries_after_startup", "connected_accounts_at_end",
               "handshake_ms.p99", "health_rpc_ms.p50", "duplicates.max_prompts_per_intent",
               "duplicates.decisions_lost")
RESOURCE_FIGURES = ("rss_mb", "rss_percent_per_hour", "heap_percent_per_hour", "descriptors_per_hour",
                    "sockets_per_hour")


@dataclass(frozen=True)
class Tolerance:
    """How far tonight's figure may be from the previous nights' median before it is a regression."""

    text: str
    percent: float | None = None
    plus: float | None = None
    maximum: float | None = None

    def exceeded(self, tonight: float, median: float | None) -> bool:
        if self.maximum is not None:
            return tonight > self.maximum
        if median is None:
            return False
        if self.percent is not None:
            return tonight > median * (1 + self.percent / 100.0) and tonight > median
        assert self.plus is not None
        return tonight > median + self.plus


@dataclass(frozen=True)
class SoakRun:
    name: str  # its results folder and its rows in the history: the profile's name unless the plan names it
    profile: Profile
    arms: tuple[str, ...]
    expect: Mapping[str, str]  # arm -> verdict; an arm not here must pass its thresholds
    sigterm_after_s: float | None = None  # real seconds into each run: the real gateway is SIGTERMed and restarted
    own_gateway: bool = False  # its arms get a gateway of their own, not shared with other runs of the same target


@dataclass(frozen=True)
class Bounds:
    rss_percent_per_hour: float = 5.0
    heap_percent_per_hour: float = 5.0
    descriptors_per_hour: float = 0.0
    sockets_per_hour: float = 0.0


@dataclass(frozen=True)
class SoakPlan:
    name: str
    description: str
    path: Path
    duration_s: float | None  # real seconds
    cycles: int | None
    warmup_s: float
    sample_interval_s: float
    restart_every_s: float | None
    idle_s: float
    runs: tuple[SoakRun, ...]
    bounds: Bounds
    nights: int = 7
    tolerances: Mapping[str, Mapping[str, Tolerance]] = field(default_factory=dict)  # figure -> arm or "*" -> rule

    def tolerance(self, figure: str, arm: str) -> Tolerance | None:
        """The rule for a figure of "run/arm" (or of a process role): given for that run's arm, else for the arm
        in every run, else for every arm."""
        rules = self.tolerances.get(figure, {})
        return rules.get(arm) or rules.get(arm.rsplit("/", 1)[-1]) or rules.get("*")

    @property
    def gateway_name(self) -> str:
        """The gateways its runs aim at, as --gateway names them: the history keeps each apart."""
        names = []
        for run in self.runs:
            target = run.profile.target
            name = (f"openclaw@{target.version}" if isinstance(target, OpenClawTarget) else
                    "stub-docker" if isinstance(target, StubTarget) and target.backend == "docker" else target.kind)
            if name not in names:
                names.append(name)
        return "+".join(names)


def load_plan(path: Path, gateway: str | None = None) -> SoakPlan:
    """The plan at `path`; `gateway` (the --gateway option) aims every run at another kind of gateway."""
    data, lines = read_yaml(path, "soak plan")
    problems = Problems(str(path), lines)
    root = Fields(data, "", problems)
    name, description = root.name_and_description()
    time_scale = root.number("time_scale", None, minimum=0, exclusive_minimum=True, maximum=10)
    minutes = root.number("duration_minutes", None, minimum=0, exclusive_minimum=True, maximum=MAX_MINUTES)
    cycles = root.number("cycles", None, minimum=1, maximum=1_000_000, integer=True)
    if minutes is None and cycles is None:
        root.fail("duration_minutes", "required (or cycles): a soak must end by itself")
    warmup = root.number("warmup_minutes", 2, minimum=0, maximum=MAX_MINUTES)
    interval = root.number("sample_interval_s", 5, minimum=0.5, maximum=3600)
    restart = root.number("restart_every_minutes", 0, minimum=0, maximum=MAX_MINUTES)
    idle = root.number("idle_s", 0, minimum=0, maximum=86_400)
    runs_raw = root.get("runs", list, None, required=True)
    bounds = _bounds(root.section("bounds"))
    nights, tolerances = _tolerances(root.section("tolerances"))
    root.done()
    runs: list[SoakRun] = []
    if runs_raw is not None:
        if not 1 <= len(runs_raw) <= MAX_RUNS_PER_CYCLE:
            root.fail("runs", f"expected a list of 1 to {MAX_RUNS_PER_CYCLE} runs, got {len(runs_raw)}")
        for index, raw in enumerate(runs_raw[:MAX_RUNS_PER_CYCLE]):
            fields = Fields(raw, f"runs[{index}]", problems, root.line("runs"))
            run = _run(fields, path, time_scale, gateway)
            if run is not None and run.name in {earlier.name for earlier in runs}:
                fields.fail("name", f"expected a name of its own: an earlier run is already called {run.name} "
                                    "(runs of one profile need `name:` to keep their folders and history apart)")
            elif run is not None:
                runs.append(run)
    problems.check()
    assert name is not None
    return SoakPlan(name=name, description=description, path=path,
                    duration_s=None if minutes is None else minutes * 60.0, cycles=cycles, warmup_s=warmup * 60.0,
                    sample_interval_s=float(interval), restart_every_s=restart * 60.0 if restart else None,
                    idle_s=float(idle), runs=tuple(runs), bounds=bounds, nights=nights, tolerances=tolerances)


def _run(fields: Fields, plan_path: Path, time_scale: float | None, gateway: str | None) -> SoakRun | None:
    name = fields.results_name(required=False)
    profile_text = fields.text("profile", None, max_length=1000, required=True)
    arms_raw = fields.get("arms", list, None)
    expect_raw = fields.get("expect", dict, {})
    duration_s = fields.number("duration_s", None, minimum=0, exclusive_minimum=True, maximum=86_400)
    sigterm_after_s = fields.number("sigterm_after_s", None, minimum=0, exclusive_minimum=True, maximum=86_400)
    own_gateway = fields.get("own_gateway", bool, False)
    overrides = fields.get("overrides", dict, {})
    fields.done()
    if profile_text is None:
        return None
    profile = _profile(fields, plan_path.parent / profile_text, time_scale, duration_s, gateway, overrides)
    if profile is None:
        return None
    arms = tuple(arms_raw) if arms_raw is not None else profile.arms
    for arm in arms:
        if arm not in profile.arms:
            fields.fail("arms", f"expected arms of {profile.name} ({', '.join(profile.arms)}), got {cut(arm)}")
            return None
    for arm, verdict in expect_raw.items():
        if arm not in arms:
            fields.fail("expect", f"{cut(arm)} is not one of this run's arms ({', '.join(arms)})")
        elif verdict not in VERDICTS:
            fields.fail("expect", f"{arm}: expected a verdict ({', '.join(VERDICTS)}), got {cut(verdict)}")
    if sigterm_after_s is not None and not isinstance(profile.target, OpenClawTarget):
        fields.fail("sigterm_after_s", "expected a run against the real gateway (target kind openclaw): a stub "
                                       "is restarted within a run by its profile's gateway_restart fault")
    elif sigterm_after_s is not None and sigterm_after_s >= profile.duration_s / profile.time_scale:
        fields.fail("sigterm_after_s", f"expected less than the run's {profile.duration_s / profile.time_scale:g} "
                                       f"real seconds, got {sigterm_after_s:g}")
    if isinstance(profile.target, OpenClawTarget) and profile.target.inprocess:
        fields.fail("profile", f"{profile.name} runs in-process accounts, which start with their own gateway and "
                               "homeserver each run: not in a soak yet")
        return None
    if not isinstance(profile.target, StubTarget) and "gateway-dedup" in arms:
        fields.fail("arms", "gateway-dedup needs the stub's --approval-dedup; this run's gateway is "
                            f"{profile.target.kind}")
    return SoakRun(name or profile.name, profile, arms, dict(expect_raw), sigterm_after_s, bool(own_gateway))


def _profile(fields: Fields, path: Path, time_scale: float | None, duration_s: float | None,
             gateway: str | None, overrides: dict[str, Any]) -> Profile | None:
    try:
        if gateway is None and time_scale is None and duration_s is None and not overrides:
            return load_profile(path)
        data, lines = read_yaml(path, "profile")
        if not isinstance(data, dict):
            return load_profile(path)  # its own error
        data = merged(data, overrides)
        if time_scale is not None:
            data["time_scale"] = time_scale
        if duration_s is not None:
            data["duration_s"] = duration_s
        if gateway is not None:
            data["target"] = gateway_target(data.get("target"), gateway)
            if data["target"]["kind"] == "openclaw":
                data["time_scale"] = 1  # the real gateway runs in real time, whatever the plan's scale
        return parse_profile(data, path=path, lines=lines)
    except BadInput as exc:
        fields.fail("profile", f"{cut(str(path))} is not a valid profile: {str(exc).splitlines()[0]}")
        return None


def merged(data: dict[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """`data` with `changes` laid over it, mapping by mapping; a null removes the key."""
    out = dict(data)
    for key, value in changes.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


def gateway_target(target: Any, gateway: str) -> dict[str, Any]:
    """The profile's target section, aimed at the gateway `--gateway` names."""
    section = dict(target) if isinstance(target, dict) else {}
    if gateway in ("stub", "stub-docker"):
        if section.get("kind", "stub") != "stub":
            raise BadInput(f"--gateway {gateway}: this profile's target is {section.get('kind')}, not a stub")
        return {**section, "backend": "docker" if gateway == "stub-docker" else "embedded"}
    if gateway.startswith("openclaw@") and len(gateway) > len("openclaw@"):
        kept = {k: section[k] for k in ("handshake_timeout_ms", "max_preauth_per_ip") if k in section}
        return {"kind": "openclaw", "version": gateway.split("@", 1)[1], **kept}
    raise BadInput(f"--gateway: expected {GATEWAY_CHOICES}, got {cut(gateway)}")


def _bounds(section: Fields) -> Bounds:
    bounds = Bounds(
        rss_percent_per_hour=section.number("rss_percent_per_hour", 5.0, minimum=0, maximum=10_000),
        heap_percent_per_hour=section.number("heap_percent_per_hour", 5.0, minimum=0, maximum=10_000),
        descriptors_per_hour=section.number("descriptors_per_hour", 0.0, minimum=0, maximum=1_000_000),
        sockets_per_hour=section.number("sockets_per_hour", 0.0, minimum=0, maximum=1_000_000),
    )
    section.done()
    return bounds


def _tolerances(section: Fields) -> tuple[int, dict[str, dict[str, Tolerance]]]:
    nights = section.number("nights", 7, minimum=1, maximum=365, integer=True)
    rules: dict[str, dict[str, Tolerance]] = {}
    for figure, text in DEFAULT_TOLERANCES.items():
        default = parse_tolerance(text)
        assert default is not None, text
        rules[figure] = {"*": default}
    for figure, value in section.data.items():
        if figure == "nights":
            continue
        section.get(figure, (str, dict))
        if figure not in RUN_FIGURES + RESOURCE_FIGURES:
            section.fail(figure, f"expected a figure the history keeps ({', '.join(RUN_FIGURES + RESOURCE_FIGURES)})")
            continue
        per_arm = value if isinstance(value, dict) else {"*": value}
        parsed: dict[str, Tolerance] = {}
        for arm, text in per_arm.items():
            rule = parse_tolerance(text) if isinstance(text, str) else None
            if rule is None:
                section.fail(figure, f"expected \"+P%\", \"+N\" or \"max N\" (for all, per arm or per run/arm), got "
                                     f"{cut(text)}")
            else:
                parsed[str(arm)] = rule
        rules[figure] = parsed
    section.done()
    return nights, rules


def parse_tolerance(text: str) -> Tolerance | None:
    match = TOLERANCE_RE.match(text.strip())
    if match is None:
        return None
    number = {k: float(v) for k, v in match.groupdict().items() if v is not None}
    return Tolerance(text.strip(), number.get("percent"), number.get("plus"), number.get("max"))
