"""What the API keeps about each proxy and toxic, and the JSON Toxiproxy shows for them.

These records are the whole state of the API. The asyncio side reads them, a link taking its toxic
chain from `ProxyRecord.toxics` and a dial going to `ProxyRecord.upstream`, but never changes them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from harness.faults.embedded_proxy.gojson import float32_json
from harness.faults.toxic_types import STREAMS


@dataclass(eq=False)
class Toxic:
    name: str
    type: str
    stream: str  # as the client wrote it; `direction` is the parsed stream
    direction: str
    toxicity: float
    attributes: dict[str, int]
    generation: int = 0  # bumped on update: links restart the toxic with the new attributes

    def as_json(self) -> dict[str, Any]:
        return {"attributes": dict(self.attributes), "name": self.name, "type": self.type,
                "stream": self.stream, "toxicity": float32_json(self.toxicity)}


@dataclass(eq=False)
class ProxyRecord:
    name: str
    listen: str  # once enabled, the bound address (a requested port 0 shows the real port)
    upstream: str
    enabled: bool = False
    toxics: list[Toxic] = field(default_factory=list)  # in order of addition: each stream's chain order

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "listen": self.listen, "upstream": self.upstream, "enabled": self.enabled,
                "toxics": self.toxic_list()}

    def toxic_list(self) -> list[dict[str, Any]]:
        return [t.as_json() for stream in STREAMS for t in self.toxics if t.direction == stream]

    def find_toxic(self, name: str) -> Toxic | None:
        return next((t for t in self.toxics if t.name == name), None)
