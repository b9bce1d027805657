"""Toxiproxy's toxic types, written once: each type's attributes with their units, and the two streams.

Both the fault timeline (which validates a profile's toxics and scales their durations) and the embedded
Toxiproxy (which decodes them from API requests, as the Go structs in Toxiproxy's toxics/*.go do) read
this table, so the two cannot disagree on a name, a unit or an order. It is plain data: importing it
pulls in no asyncio and no proxy code.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

# "ms" and "us" are durations (they follow the time scale), "bytes" a size (it does not), "rate" KB/s
# (divided by the time scale, so a throttle means the same amount of data per scenario second).
Unit = Literal["ms", "us", "bytes", "rate"]


@dataclass(frozen=True)
class ToxicType:
    name: str
    go_struct: str  # the struct in toxics/*.go: Toxiproxy's decoding errors name it
    attributes: Mapping[str, Unit]  # in the struct's field order, which is the order Toxiproxy writes them
    go_int: str = "int64"  # the attributes' Go type, also named in decoding errors


TOXIC_TYPES: Mapping[str, ToxicType] = {toxic.name: toxic for toxic in (
    ToxicType("noop", "NoopToxic", {}),
    ToxicType("latency", "LatencyToxic", {"latency": "ms", "jitter": "ms"}),
    ToxicType("bandwidth", "BandwidthToxic", {"rate": "rate"}),
    ToxicType("slow_close", "SlowCloseToxic", {"delay": "ms"}),
    ToxicType("timeout", "TimeoutToxic", {"timeout": "ms"}),
    ToxicType("reset_peer", "ResetToxic", {"timeout": "ms"}),
    ToxicType("limit_data", "LimitDataToxic", {"bytes": "bytes"}),
    ToxicType("slicer", "SlicerToxic", {"average_size": "bytes", "size_variation": "bytes", "delay": "us"},
              go_int="int"),
)}

# Toxiproxy's order: a proxy's toxic list shows the upstream ones first.
STREAMS = ("upstream", "downstream")
DEFAULT_STREAM = "downstream"  # what Toxiproxy assumes when a toxic names no stream
