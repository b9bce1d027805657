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

# The toxics a fault window may add: noop does nothing, so it is no fault.
TOXIC_ATTRIBUTES: dict[str, Mapping[str, Unit]] = {
    name: toxic.attributes for name, toxic in TOXIC_TYPES.items() if name != "noop"}
FaultKind = Literal["toxic", "gateway_down", "gateway_restart"]


class FaultSpecError(ValueError):
    """A bad fault entry; the message starts with the field's path."""


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


def parse_faults(raw: Any, duration_s: float) -> tuple[FaultWindow, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise FaultSpecError(f"faults: expected a list of fault windows, got {type(raw).__name__}")
    return tuple(_parse_window(i, entry, duration_s) for i, entry in enumerate(raw))


def _parse_window(index: int, entry: Any, duration_s: float) -> FaultWindow:
    where = f"faults[{index}]"
    if not isinstance(entry, dict):
        raise FaultSpecError(f"{where}: expected a mapping")
    unknown = set(entry) - {"at_s", "until_s", "toxic", "gateway_down", "gateway_restart"}
    if unknown:
        raise FaultSpecError(f"{where}.{sorted(unknown)[0]}: unknown key "
                             "(expected at_s, until_s, toxic, gateway_down, gateway_restart)")
    start = _number(entry.get("at_s"), f"{where}.at_s", required=True)
    end = _number(entry.get("until_s"), f"{where}.until_s", required=False)
    if start is None or start < 0 or start >= duration_s:
        raise FaultSpecError(f"{where}.at_s: expected 0 <= at_s < duration_s ({duration_s:g}), got {start}")
    if end is not None and end <= start:
        raise FaultSpecError(f"{where}.until_s: expected a time after at_s ({start:g}), got {end:g}")
    kinds = ["toxic" in entry, entry.get("gateway_down") is True, entry.get("gateway_restart") is True]
    if sum(kinds) != 1:
        raise FaultSpecError(f"{where}: expected exactly one of toxic, gateway_down: true, gateway_restart: true")
    if kinds[2] and end is None:
        raise FaultSpecError(f"{where}.until_s: a gateway_restart needs the time it comes back")
    toxic = _parse_toxic(entry["toxic"], f"{where}.toxic") if kinds[0] else None
    return FaultWindow(index, start, end, toxic, restart=kinds[2])


def _parse_toxic(raw: Any, where: str) -> ToxicSpec:
    if not isinstance(raw, dict):
        raise FaultSpecError(f"{where}: expected a mapping")
    unknown = set(raw) - {"type", "stream", "toxicity", "attributes"}
    if unknown:
        raise FaultSpecError(f"{where}.{sorted(unknown)[0]}: unknown key (expected type, stream, toxicity, attributes)")
    kind = raw.get("type")
    if kind not in TOXIC_ATTRIBUTES:
        raise FaultSpecError(f"{where}.type: expected one of {', '.join(TOXIC_ATTRIBUTES)}, got {kind!r}")
    stream = raw.get("stream", DEFAULT_STREAM)
    if stream not in STREAMS:
        raise FaultSpecError(f"{where}.stream: expected downstream or upstream, got {stream!r}")
    toxicity = _number(raw.get("toxicity", 1.0), f"{where}.toxicity", required=True)
    if toxicity is None or not 0 <= toxicity <= 1:
        raise FaultSpecError(f"{where}.toxicity: expected a number from 0 to 1, got {toxicity}")
    attributes = raw.get("attributes") or {}
    if not isinstance(attributes, dict):
        raise FaultSpecError(f"{where}.attributes: expected a mapping")
    parsed: dict[str, float] = {}
    for name, value in attributes.items():
        if name not in TOXIC_ATTRIBUTES[kind]:
            allowed = ", ".join(TOXIC_ATTRIBUTES[kind])
            raise FaultSpecError(f"{where}.attributes.{name}: not an attribute of {kind} (expected {allowed})")
        number = _number(value, f"{where}.attributes.{name}", required=True)
        if number is None or number < 0:
            raise FaultSpecError(f"{where}.attributes.{name}: expected a number >= 0, got {value!r}")
        parsed[name] = number
    return ToxicSpec(kind, stream, float(toxicity), parsed)


def _number(value: Any, where: str, *, required: bool) -> float | None:
    if value is None:
        if required:
            raise FaultSpecError(f"{where}: required")
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise FaultSpecError(f"{where}: expected a number, got {value!r}")
    return float(value)
