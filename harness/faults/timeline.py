"""A profile's `faults:` timeline, as data: which toxic or outage, from when, until when.

    faults:
      - at_s: 60                 # scenario time
        until_s: 75              # omitted: until the run ends
        toxic: {type: latency, stream: downstream, toxicity: 1.0, attributes: {latency: 12000, jitter: 0}}
      - at_s: 80
        until_s: 85
        gateway_down: true       # the proxy in front of the gateway is disabled: connections drop, none open
      - at_s: 90
        until_s: 92
        gateway_restart: true    # down as above, and at until_s every account re-registers, as the channel
                                 # accounts do when the real gateway process restarts (a new bootstrap generation)

Toxic types, attribute names and units are Toxiproxy's (harness/faults/toxic_types.py, the table the
embedded proxy reads too). Durations in attributes (latency, jitter, delay, timeout: ms; slicer delay:
µs) follow the time scale like everything else; a bandwidth rate is divided by it, so the same window
means the same thing in scenario time at any scale.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from harness.faults.toxic_types import DEFAULT_STREAM, STREAMS, TOXIC_TYPES, Unit
from harness.input_fields import Fields, Problems, cut, kind_of

# The toxics a fault window may add: noop does nothing, so it is no fault.
MAX_FAULT_WINDOWS = 100
MAX_DURATION_S = 86_400  # a fault window lies within a run, which is at most a day
MAX_ATTRIBUTE = 1e12  # Toxiproxy's attributes are int64; this keeps them so after any time scale

TOXIC_ATTRIBUTES: dict[str, Mapping[str, Unit]] = {
    name: toxic.attributes for name, toxic in TOXIC_TYPES.items() if name != "noop"}
FaultKind = Literal["toxic", "gateway_down", "gateway_restart"]


@dataclass(frozen=True)
class ToxicSpec:
    type: str
    stream: str = DEFAULT_STREAM
    toxicity: float = 1.0
    attributes: Mapping[str, float] = field(default_factory=dict)

    def scaled_attributes(self, time_scale: float) -> dict[str, int]:
        out: dict[str, int] = {}
        for name, value in self.attributes.items():
            unit = TOXIC_ATTRIBUTES[self.type][name]
            if unit in ("ms", "us"):
                value = value * time_scale
            elif unit == "rate":
                value = value / time_scale
            out[name] = int(round(value))
        return out


@dataclass(frozen=True)
class FaultWindow:
    index: int
    start_s: float
    end_s: float | None
    toxic: ToxicSpec | None  # None: the gateway is down
    restart: bool = False  # gateway down, then the accounts re-register

    @property
    def kind(self) -> FaultKind:
        if self.toxic is not None:
            return "toxic"
        return "gateway_restart" if self.restart else "gateway_down"

    @property
    def toxic_name(self) -> str:
        return f"fault-{self.index}"

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"index": self.index, "kind": self.kind, "from_s": self.start_s, "to_s": self.end_s}
        if self.toxic is not None:
            out.update(type=self.toxic.type, stream=self.toxic.stream, toxicity=self.toxic.toxicity,
                       attributes=dict(self.toxic.attributes))
        return out


def parse_faults(raw: Any, duration_s: float, problems: Problems | None = None, line: int | None = None,
                 ) -> tuple[FaultWindow, ...]:
    """The `faults:` list of a profile; its problems go to `problems` (without one: `BadInput` at once)."""
    own = problems is None
    problems = problems or Problems()
    windows: tuple[FaultWindow, ...] = ()
    if raw is not None and not isinstance(raw, list):
        problems.add("faults", f"expected a list of fault windows, got {kind_of(raw)}", line)
    elif raw is not None and len(raw) > MAX_FAULT_WINDOWS:
        problems.add("faults", f"expected at most {MAX_FAULT_WINDOWS} fault windows, got {len(raw)}", line)
    elif raw is not None:
        parsed = [_parse_window(i, entry, duration_s, problems, line) for i, entry in enumerate(raw)]
        windows = tuple(w for w in parsed if w is not None)
    if own:
        problems.check()
    return windows


def _parse_window(index: int, entry: Any, duration_s: float, problems: Problems,
                  line: int | None) -> FaultWindow | None:
    fields = Fields(entry, f"faults[{index}]", problems, line)
    count = len(problems.items)
    start = fields.number("at_s", None, minimum=0, maximum=MAX_DURATION_S, required=True)
    end = fields.number("until_s", None, minimum=0, maximum=MAX_DURATION_S)
    if start is not None and start >= duration_s:
        fields.fail("at_s", f"expected 0 <= at_s < duration_s ({duration_s:g}), got {start:g}")
    if start is not None and end is not None and end <= start:
        fields.fail("until_s", f"expected a time after at_s ({start:g}), got {end:g}")
    has_toxic = fields.has("toxic")
    down = fields.get("gateway_down", bool, False) is True
    restart = fields.get("gateway_restart", bool, False) is True
    if has_toxic + down + restart != 1 and fields.data:
        problems.add(fields.path, "expected exactly one of toxic, gateway_down: true, gateway_restart: true",
                     fields.line("at_s"))
    if restart and end is None and "until_s" not in fields.data:
        fields.fail("until_s", "a gateway_restart needs the time it comes back")
    toxic = _parse_toxic(fields.section("toxic")) if has_toxic else None
    fields.done()
    if len(problems.items) > count or start is None:
        return None
    return FaultWindow(index, float(start), None if end is None else float(end), toxic, restart=restart)


def _parse_toxic(fields: Fields) -> ToxicSpec | None:
    count = len(fields.problems.items)
    kind = fields.get("type", str, required=True)
    if kind is not None and kind not in TOXIC_ATTRIBUTES:
        fields.fail("type", f"expected one of {', '.join(TOXIC_ATTRIBUTES)}, got {cut(kind)}")
        kind = None
    stream = fields.get("stream", str, DEFAULT_STREAM)
    if stream not in STREAMS:
        fields.fail("stream", f"expected downstream or upstream, got {cut(stream)}")
    toxicity = fields.number("toxicity", 1.0, minimum=0, maximum=1)
    attributes = fields.section("attributes")
    parsed: dict[str, float] = {}
    for name in list(attributes.data):
        if kind is not None and name not in TOXIC_ATTRIBUTES[kind]:
            allowed = ", ".join(TOXIC_ATTRIBUTES[kind])
            attributes.fail(name, f"not an attribute of {kind} (expected {allowed})")
            continue
        value = attributes.number(name, None, minimum=0, maximum=MAX_ATTRIBUTE, required=True)
        if value is not None:
            parsed[name] = float(value)
    if kind is not None:
        attributes.done()
    fields.done()
    if kind is None or len(fields.problems.items) > count:
        return None
    return ToxicSpec(kind, stream, float(toxicity), parsed)
