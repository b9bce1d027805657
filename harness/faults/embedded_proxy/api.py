"""Toxiproxy's HTTP API with no I/O: `ToxiproxyApi.handle(Request) -> Response`, the way api.go answers.

This is the proxy collection and everything a client can observe of it through the API: the routes and
methods (POST or PATCH to update), validation, JSON field names and order, status codes (201 proxy
create and populate, 200 toxic create, 204 delete and reset, 400, 403 for browsers, 404, 405, 409, 500
when a listen address cannot be bound) and error bodies `{"error": "...", "status": N}`. What needs
sockets (listening, dropping connections, applying a toxic change to open connections) it asks of the
`ProxyRunner` it is given, so tests drive it with a fake in microseconds, and the asyncio side (proxy.py,
server.py) is a thin layer over it, as websockets' server is over its protocol.py.

`handle` is synchronous and never yields, so API calls cannot interleave: that is what Toxiproxy's
collection lock gives it. /version says `2.12.0+embedded`; there is no /metrics (Toxiproxy serves it
only when metrics are switched on).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import unquote

from harness.faults.embedded_proxy.addresses import check_addresses, join_host_port, loopback_address
from harness.faults.embedded_proxy.errors import ApiError, bad_body, missing_field, proxy_not_found, toxic_not_found
from harness.faults.embedded_proxy.gojson import (
    as_object,
    bool_field,
    float32_field,
    go_json,
    int_field,
    json_kind,
    lookup,
    parse_body,
    string_field,
)
from harness.faults.embedded_proxy.records import ProxyRecord, Toxic
from harness.faults.toxic_types import DEFAULT_STREAM, STREAMS, TOXIC_TYPES

VERSION = "2.12.0+embedded"
DEFAULT_LISTEN = "127.0.0.1:0"  # Toxiproxy would bind every interface; see addresses.py
PLAIN_TEXT = "text/plain; charset=utf-8"
NOSNIFF = ("X-Content-Type-Options", "nosniff")  # Go's http.Error sets it


@dataclass(frozen=True)
class Request:
    method: str
    path: str  # the request target's path, still percent-encoded (no query)
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str | None = "application/json"
    headers: tuple[tuple[str, str], ...] = ()


class ProxyRunner(Protocol):
    """The I/O the API asks for. It is told of every change to an enabled proxy; the records stay the API's."""

    def start(self, proxy: ProxyRecord, ip: str, port: int) -> int:
        """Listen on ip:port (port 0: any free one) for `proxy` and answer the bound port; OSError if it cannot.

        Called only for a proxy that is not running; it must be listening when this returns, because the
        API answers with the bound address at once.
        """

    def stop(self, proxy: ProxyRecord) -> None:
        """Stop listening for `proxy` and close every one of its connections (Toxiproxy's "gateway down")."""

    def toxic_added(self, proxy: ProxyRecord, toxic: Toxic) -> None:
        """`toxic` was appended to `proxy.toxics`: open connections start it too."""

    def toxic_updated(self, proxy: ProxyRecord, toxic: Toxic) -> None:
        """`toxic` has new attributes or toxicity (and a new generation): open connections restart it."""

    def toxic_removed(self, proxy: ProxyRecord, toxic: Toxic) -> None:
        """`toxic` was taken out of `proxy.toxics`: open connections drop it."""


def json_response(value: Any, status: int = 200) -> Response:
    return Response(status, go_json(value))


def error_response(error: ApiError) -> Response:
    # Go's http.Error: text/plain content type, a trailing newline.
    body = go_json({"error": error.message, "status": error.status}) + b"\n"
    return Response(error.status, body, PLAIN_TEXT, (NOSNIFF,))


NOT_FOUND = Response(404, b"404 page not found\n", PLAIN_TEXT, (NOSNIFF,))
METHOD_NOT_ALLOWED = Response(405, b"", None)
NO_CONTENT = Response(204, b"", None)
BROWSER_REFUSED = Response(403, b"User agent not allowed\n", PLAIN_TEXT, (NOSNIFF,))  # Toxiproxy >= 2.1.2

Handler = Callable[[str, list[str], bytes], Response]


def decode_attributes(toxic_type: str, raw: Any, current: Mapping[str, int]) -> dict[str, int]:
    """A toxic's attributes from a request body, as Go decodes them into its struct (unset ones kept)."""
    kind = TOXIC_TYPES[toxic_type]
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise bad_body(f"json: cannot unmarshal {json_kind(raw)} into Go struct field "
                       f".attributes of type toxics.{kind.go_struct}")
    return {name: int_field(raw, name, f"{kind.go_struct}.attributes", current.get(name, 0), kind.go_int)
            for name in kind.attributes}


class ToxiproxyApi:
    """The proxy collection and the Toxiproxy HTTP API over it."""

    def __init__(self, runner: ProxyRunner) -> None:
        self.runner = runner
        self.proxies: dict[str, ProxyRecord] = {}

    def handle(self, request: Request) -> Response:
        user_agent = next((value for key, value in request.headers.items() if key.lower() == "user-agent"), "")
        if user_agent.startswith("Mozilla/"):
            return BROWSER_REFUSED
        parts = request.path.split("/")[1:]
        if any(not part for part in parts):
            return NOT_FOUND
        parts = [unquote(part) for part in parts]
        route = self._route(parts)
        if route is None:
            return NOT_FOUND
        methods, handler = route
        if request.method not in methods:
            return METHOD_NOT_ALLOWED
        try:
            return handler(request.method, parts, request.body)
        except ApiError as error:
            return error_response(error)

    def _route(self, parts: list[str]) -> tuple[tuple[str, ...], Handler] | None:
        match parts:
            case ["version"]:
                return ("GET",), self.version
            case ["reset"]:
                return ("POST",), self.reset
            case ["populate"]:
                return ("POST",), self.populate
            case ["proxies"]:
                return ("GET", "POST"), self.proxies_route
            case ["proxies", _]:
                return ("GET", "POST", "PATCH", "DELETE"), self.proxy_route
            case ["proxies", _, "toxics"]:
                return ("GET", "POST"), self.toxics_route
            case ["proxies", _, "toxics", _]:
                return ("GET", "POST", "PATCH", "DELETE"), self.toxic_route
        return None

    # ------------------------------------------------------------------------ proxies and their toxics

    def _proxy(self, name: str) -> ProxyRecord:
        proxy = self.proxies.get(name)
        if proxy is None:
            raise proxy_not_found()
        return proxy

    def _start(self, proxy: ProxyRecord) -> None:
        if proxy.enabled:
            return
        ip, port = loopback_address(proxy.listen, "listen", allow_port_zero=True)
        try:
            bound_port = self.runner.start(proxy, ip, port)
        except OSError as exc:
            reason = os.strerror(exc.errno).lower() if exc.errno else str(exc)
            raise ApiError(f"listen tcp {join_host_port(ip, port)}: bind: {reason}", 500) from exc
        proxy.listen = join_host_port(ip, bound_port)
        proxy.enabled = True

    def _stop(self, proxy: ProxyRecord) -> None:
        if not proxy.enabled:
            return
        proxy.enabled = False
        self.runner.stop(proxy)

    def _remove_toxic(self, proxy: ProxyRecord, toxic: Toxic) -> None:
        proxy.toxics.remove(toxic)
        self.runner.toxic_removed(proxy, toxic)

    # ----------------------------------------------------------------------------------------- routes

    def version(self, method: str, parts: list[str], body: bytes) -> Response:
        return Response(200, f'{{"version": "{VERSION}"}}\n'.encode(), "application/json;charset=utf-8")

    def reset(self, method: str, parts: list[str], body: bytes) -> Response:
        for proxy in list(self.proxies.values()):
            self._start(proxy)
            for toxic in list(proxy.toxics):
                self._remove_toxic(proxy, toxic)
        return NO_CONTENT

    def proxies_route(self, method: str, parts: list[str], body: bytes) -> Response:
        if method == "GET":
            return json_response({name: self.proxies[name].as_json() for name in sorted(self.proxies)})
        obj = as_object(parse_body(body), "toxiproxy.Proxy")
        name = string_field(obj, "name", "Proxy", "")
        listen = string_field(obj, "listen", "Proxy", "")
        upstream = string_field(obj, "upstream", "Proxy", "")
        enabled = bool_field(obj, "enabled", "Proxy", True)
        if not name:
            raise missing_field("name")
        if not upstream:
            raise missing_field("upstream")
        listen = listen or DEFAULT_LISTEN
        check_addresses(listen, upstream)
        if name in self.proxies:
            raise ApiError("proxy already exists", 409)
        proxy = ProxyRecord(name, listen, upstream)
        if enabled:
            self._start(proxy)
        self.proxies[name] = proxy
        return json_response(proxy.as_json(), 201)

    def populate(self, method: str, parts: list[str], body: bytes) -> Response:
        value = parse_body(body)
        if value is not None and not isinstance(value, list):
            raise bad_body(f"json: cannot unmarshal {json_kind(value)} into Go value of type "
                           "[]struct { toxiproxy.Proxy; Enabled *bool \"json:\\\"enabled\\\"\" }")
        entries: list[tuple[str, str, str, bool]] = []
        # Every entry is checked before any proxy changes: a bad list creates nothing.
        for index, item in enumerate(value or [], start=1):
            obj = as_object(item, "struct { toxiproxy.Proxy; Enabled *bool }")
            name = string_field(obj, "name", "Proxy", "")
            listen = string_field(obj, "listen", "Proxy", "")
            upstream = string_field(obj, "upstream", "Proxy", "")
            enabled = bool_field(obj, "enabled", "Proxy", True)
            if not name:
                raise ApiError(f"missing required field: name at proxy {index}", 400)
            if not upstream:
                raise ApiError(f"missing required field: upstream at proxy {index}", 400)
            listen = listen or DEFAULT_LISTEN
            check_addresses(listen, upstream)
            entries.append((name, listen, upstream, enabled))
        done: list[ProxyRecord] = []
        error: ApiError | None = None
        for name, listen, upstream, enabled in entries:
            existing = self.proxies.get(name)
            if existing is not None:
                if existing.listen == listen and existing.upstream == upstream:
                    done.append(existing)
                    continue
                self._stop(existing)
            proxy = ProxyRecord(name, listen, upstream)
            if enabled:
                try:
                    self._start(proxy)
                except ApiError as exc:
                    # Toxiproxy stops at the first proxy that cannot listen and reports the ones before it.
                    error = exc
                    break
            self.proxies[name] = proxy
            done.append(proxy)
        result: dict[str, Any] = {}
        if error is not None:
            result = {"error": error.message, "status": error.status}
        result["proxies"] = [p.as_json() for p in done] or None
        return json_response(result, error.status if error is not None else 201)

    def proxy_route(self, method: str, parts: list[str], body: bytes) -> Response:
        proxy = self._proxy(parts[1])
        if method == "GET":
            return json_response(proxy.as_json())
        if method == "DELETE":
            self._stop(proxy)
            del self.proxies[proxy.name]
            return NO_CONTENT
        obj = as_object(parse_body(body), "toxiproxy.Proxy")
        listen = string_field(obj, "listen", "Proxy", proxy.listen)
        upstream = string_field(obj, "upstream", "Proxy", proxy.upstream)
        enabled = bool_field(obj, "enabled", "Proxy", proxy.enabled)
        check_addresses(listen, upstream)
        if listen != proxy.listen or upstream != proxy.upstream:
            self._stop(proxy)  # Toxiproxy restarts the proxy and drops its connections
            proxy.listen, proxy.upstream = listen, upstream
        if enabled != proxy.enabled:
            if enabled:
                self._start(proxy)
            else:
                self._stop(proxy)
        return json_response(proxy.as_json())

    def toxics_route(self, method: str, parts: list[str], body: bytes) -> Response:
        proxy = self._proxy(parts[1])
        if method == "GET":
            return json_response(proxy.toxic_list())
        obj = as_object(parse_body(body), "toxics.ToxicWrapper")
        name = string_field(obj, "name", "ToxicWrapper", "")
        toxic_type = string_field(obj, "type", "ToxicWrapper", "")
        stream = string_field(obj, "stream", "ToxicWrapper", DEFAULT_STREAM)
        toxicity = float32_field(obj, "toxicity", "ToxicWrapper", 1.0)
        _, raw_attributes = lookup(obj, "attributes")
        if raw_attributes is not None and not isinstance(raw_attributes, dict):
            raise bad_body(f"json: cannot unmarshal {json_kind(raw_attributes)} into Go struct field "
                           "ToxicWrapper.attributes of type toxics.Toxic")
        direction = stream.lower()
        if direction not in STREAMS:
            raise ApiError("stream was invalid, can be either upstream or downstream", 400)
        name = name or f"{toxic_type}_{stream}"
        if toxic_type not in TOXIC_TYPES:
            raise ApiError("invalid toxic type", 400)
        if proxy.find_toxic(name) is not None:
            raise ApiError("toxic already exists", 409)
        attributes = decode_attributes(toxic_type, raw_attributes, {})
        toxic = Toxic(name, toxic_type, stream, direction, toxicity, attributes)
        proxy.toxics.append(toxic)
        self.runner.toxic_added(proxy, toxic)
        return json_response(toxic.as_json())  # 200, as Toxiproxy answers a new toxic

    def toxic_route(self, method: str, parts: list[str], body: bytes) -> Response:
        proxy = self._proxy(parts[1])
        toxic = proxy.find_toxic(parts[3])
        if toxic is None:
            raise toxic_not_found()
        if method == "GET":
            return json_response(toxic.as_json())
        if method == "DELETE":
            self._remove_toxic(proxy, toxic)
            return NO_CONTENT
        obj = as_object(parse_body(body), "struct { Attributes interface {}; Toxicity float32 }")
        _, raw_attributes = lookup(obj, "attributes")
        attributes = decode_attributes(toxic.type, raw_attributes, toxic.attributes)
        toxic.toxicity = float32_field(obj, "toxicity", "", toxic.toxicity)
        toxic.attributes = attributes
        toxic.generation += 1
        self.runner.toxic_updated(proxy, toxic)
        return json_response(toxic.as_json())
