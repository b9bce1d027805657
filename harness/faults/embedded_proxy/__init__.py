"""An embedded Toxiproxy 2.x: Toxiproxy's HTTP API and its TCP proxying with toxics, on loopback only.

No Toxiproxy binary can be installed on this project's machines, so this asyncio program runs in its
place (`python -m harness.faults.embedded_proxy`, see __main__.py), following Toxiproxy's Go source so
closely that a client, or tests/test_toxiproxy_api.py, cannot tell the two apart. The API is a class
with no I/O (api.py: `ToxiproxyApi.handle(Request) -> Response`, the listeners behind a `ProxyRunner`
it is given); toxics.py, link.py and proxy.py are the asyncio proxying it drives, server.py the HTTP
server over it, gojson.py, addresses.py and records.py what they share, and the toxic table itself is
harness/faults/toxic_types.py, shared with the fault timeline.
"""

from __future__ import annotations

from harness.faults.embedded_proxy.api import VERSION, ProxyRunner, Request, Response, ToxiproxyApi
from harness.faults.embedded_proxy.errors import ApiError
from harness.faults.embedded_proxy.proxy import AsyncioProxyRunner
from harness.faults.embedded_proxy.records import ProxyRecord, Toxic
from harness.faults.embedded_proxy.server import EmbeddedToxiproxy

__all__ = ["VERSION", "ApiError", "AsyncioProxyRunner", "EmbeddedToxiproxy", "ProxyRecord", "ProxyRunner", "Request",
           "Response", "Toxic", "ToxiproxyApi"]
