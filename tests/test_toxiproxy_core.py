"""The embedded Toxiproxy's API layer on its own: requests in, responses out, a fake runner, no sockets.

`ToxiproxyApi` is driven with `Request`s and a `FakeRunner` that records what it is asked (listen, stop,
toxic changes) and answers ports as a kernel would, so every route, status code, Go-style error and
loopback rule is checked in microseconds. Sockets are switched off for the whole module, so a test that
reached for one would fail. tests/test_toxiproxy_api.py holds the same API to real TCP traffic.
"""

from __future__ import annotations

import errno
import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from harness.faults.embedded_proxy.__main__ import parse_args
from harness.faults.embedded_proxy.api import VERSION, Request, Response, ToxiproxyApi
from harness.faults.embedded_proxy.records import ProxyRecord, Toxic
from harness.faults.embedded_proxy.toxics import RUNTIMES
from harness.faults.timeline import TOXIC_ATTRIBUTES, ToxicSpec
from harness.faults.toxic_types import STREAMS, TOXIC_TYPES

UPSTREAM = "127.0.0.1:9000"


class FakeRunner:
    """A `ProxyRunner` with no I/O: ports from 40000 up, `busy` addresses refused as a bind would refuse them."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.listening: dict[str, tuple[str, int]] = {}
        self.busy: set[tuple[str, int]] = set()
        self._next_port = 40000

    def start(self, proxy: ProxyRecord, ip: str, port: int) -> int:
        self.calls.append(("start", proxy.name, f"{ip}:{port}"))
        if (ip, port) in self.busy or (port and (ip, port) in self.listening.values()):
            raise OSError(errno.EADDRINUSE, "Address already in use")
        if port == 0:
            port, self._next_port = self._next_port, self._next_port + 1
        self.listening[proxy.name] = (ip, port)
        return port

    def stop(self, proxy: ProxyRecord) -> None:
        self.calls.append(("stop", proxy.name))
        del self.listening[proxy.name]

    def toxic_added(self, proxy: ProxyRecord, toxic: Toxic) -> None:
        self.calls.append(("toxic_added", proxy.name, toxic.name))

    def toxic_updated(self, proxy: ProxyRecord, toxic: Toxic) -> None:
        self.calls.append(("toxic_updated", proxy.name, toxic.name))

    def toxic_removed(self, proxy: ProxyRecord, toxic: Toxic) -> None:
        self.calls.append(("toxic_removed", proxy.name, toxic.name))

    def take_calls(self) -> list[tuple[str, ...]]:
        calls, self.calls = self.calls, []
        return calls


@dataclass
class Reply:
    status: int
    response: Response

    def json(self) -> Any:
        return json.loads(self.response.body)

    @property
    def error(self) -> str:
        """The message of a Go-style error reply, after checking its shape."""
        assert self.response.content_type == "text/plain; charset=utf-8"
        assert ("X-Content-Type-Options", "nosniff") in self.response.headers
        assert self.response.body.endswith(b"}\n")
        body = self.json()
        assert list(body) == ["error", "status"] and body["status"] == self.status
        message: str = body["error"]
        return message


class Client:
    def __init__(self) -> None:
        self.runner = FakeRunner()
        self.api = ToxiproxyApi(self.runner)

    def call(self, method: str, path: str, body: Any = None, *, raw: bytes | None = None,
             headers: dict[str, str] | None = None) -> Reply:
        data = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
        response = self.api.handle(Request(method, path, data, headers or {}))
        return Reply(response.status, response)

    def create(self, name: str, **fields: Any) -> dict[str, Any]:
        reply = self.call("POST", "/proxies", {"name": name, "upstream": UPSTREAM, **fields})
        assert reply.status == 201, reply
        proxy: dict[str, Any] = reply.json()
        return proxy

    def toxic(self, proxy: str, toxic_type: str, **fields: Any) -> dict[str, Any]:
        reply = self.call("POST", f"/proxies/{proxy}/toxics", {"type": toxic_type, **fields})
        assert reply.status == 200, reply
        toxic: dict[str, Any] = reply.json()
        return toxic


@pytest.fixture(autouse=True)
def no_sockets(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> socket.socket:
        raise AssertionError("the API layer opened a socket")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_server", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture
def client() -> Iterator[Client]:
    yield Client()


# ------------------------------------------------------------------------------------------ version, routes


def test_version_is_json_with_a_newline(client: Client) -> None:
    reply = client.call("GET", "/version")
    assert reply.status == 200
    assert reply.response.body == b'{"version": "2.12.0+embedded"}\n' and VERSION == "2.12.0+embedded"
    assert reply.response.content_type == "application/json;charset=utf-8"


@pytest.mark.parametrize(("method", "path", "status"), [
    ("GET", "/nope", 404), ("GET", "/", 404), ("GET", "//proxies", 404), ("GET", "/proxies/", 404),
    ("GET", "/proxies/a/toxics/b/c", 404), ("PUT", "/proxies", 405), ("GET", "/reset", 405),
    ("GET", "/populate", 405), ("POST", "/version", 405), ("PUT", "/proxies/a", 405),
    ("PATCH", "/proxies/a/toxics", 405),
])
def test_unknown_routes_are_404_and_wrong_methods_405(client: Client, method: str, path: str, status: int) -> None:
    reply = client.call(method, path)
    assert reply.status == status
    if status == 404:
        assert reply.response.body == b"404 page not found\n"
    else:
        assert reply.response.body == b"" and reply.response.content_type is None


def test_browsers_are_refused_whatever_the_route(client: Client) -> None:
    for path in ("/proxies", "/version", "/nope"):
        reply = client.call("GET", path, headers={"User-Agent": "Mozilla/5.0 (X11; Linux x86_64)"})
        assert reply.status == 403 and reply.response.body == b"User agent not allowed\n"
    assert client.call("GET", "/proxies", headers={"user-agent": "curl/8.5"}).status == 200


# ----------------------------------------------------------------------------------------------- proxies


def test_create_listens_and_shows_the_bound_port(client: Client) -> None:
    reply = client.call("POST", "/proxies", {"name": "gw", "listen": "127.0.0.1:0", "upstream": UPSTREAM})
    assert reply.status == 201 and reply.response.content_type == "application/json"
    proxy = reply.json()
    assert list(proxy) == ["name", "listen", "upstream", "enabled", "toxics"]
    assert proxy == {"name": "gw", "listen": "127.0.0.1:40000", "upstream": UPSTREAM, "enabled": True, "toxics": []}
    assert client.runner.take_calls() == [("start", "gw", "127.0.0.1:0")]
    assert client.call("GET", "/proxies/gw").json() == proxy


def test_listing_is_by_name(client: Client) -> None:
    for name in ("b", "c", "a"):
        client.create(name)
    listing = client.call("GET", "/proxies")
    assert listing.status == 200 and list(listing.json()) == ["a", "b", "c"]
    assert listing.json()["c"]["listen"] == "127.0.0.1:40001"


def test_a_disabled_proxy_does_not_listen_and_an_empty_listen_is_loopback(client: Client) -> None:
    disabled = client.create("off", listen="127.0.0.1:0", enabled=False)
    assert disabled["enabled"] is False and disabled["listen"] == "127.0.0.1:0"
    assert client.runner.take_calls() == []
    assert client.create("default")["listen"] == "127.0.0.1:40000"
    assert client.runner.take_calls() == [("start", "default", "127.0.0.1:0")]


def test_json_keys_match_fields_case_insensitively_as_go_does(client: Client) -> None:
    reply = client.call("POST", "/proxies", {"NAME": "gw", "Upstream": UPSTREAM, "ENABLED": False})
    assert reply.status == 201 and reply.json()["name"] == "gw" and reply.json()["enabled"] is False


@pytest.mark.parametrize(("raw", "message"), [
    (b"", "bad request body: EOF"),
    (b"   \n", "bad request body: EOF"),
    (b"{not json", "bad request body: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"),
    (b'{"name": 5}',
     "bad request body: json: cannot unmarshal number 5 into Go struct field Proxy.name of type string"),
    (b'{"name": "x", "upstream": "127.0.0.1:1", "enabled": "yes"}',
     "bad request body: json: cannot unmarshal string into Go struct field Proxy.enabled of type bool"),
    (b"[1]", "bad request body: json: cannot unmarshal array into Go value of type toxiproxy.Proxy"),
    (b"\xff", "bad request body: invalid UTF-8 in JSON"),
    (b'{"name": NaN}', "bad request body: invalid character 'N' looking for beginning of value"),
    (b"null", "missing required field: name"),
    (b'{"upstream": "127.0.0.1:1"}', "missing required field: name"),
    (b'{"name": "x"}', "missing required field: upstream"),
    (b'{"name": "x", "upstream": ""}', "missing required field: upstream"),
])
def test_create_rejects_bad_bodies_with_go_errors(client: Client, raw: bytes, message: str) -> None:
    reply = client.call("POST", "/proxies", raw=raw)
    assert reply.status == 400
    assert reply.error == message
    assert client.api.proxies == {} and client.runner.calls == []


def test_trailing_data_after_the_first_json_value_is_ignored(client: Client) -> None:
    raw = json.dumps({"name": "gw", "upstream": UPSTREAM}).encode() + b" garbage"
    assert client.call("POST", "/proxies", raw=raw).status == 201


def test_a_second_proxy_of_the_same_name_is_409(client: Client) -> None:
    client.create("gw")
    reply = client.call("POST", "/proxies", {"name": "gw", "upstream": UPSTREAM})
    assert reply.status == 409 and reply.error == "proxy already exists"
    assert client.runner.take_calls() == [("start", "gw", "127.0.0.1:0")]


def test_a_listen_address_that_cannot_be_bound_is_500_and_creates_nothing(client: Client) -> None:
    client.runner.busy.add(("127.0.0.1", 5000))
    reply = client.call("POST", "/proxies", {"name": "gw", "listen": "127.0.0.1:5000", "upstream": UPSTREAM})
    assert reply.status == 500
    assert reply.error == "listen tcp 127.0.0.1:5000: bind: address already in use"
    assert client.call("GET", "/proxies/gw").status == 404


@pytest.mark.parametrize("listen", ["0.0.0.0:0", ":0", "10.1.2.3:0", "example.com:0", "[::]:0", "192.168.0.1:80"])
def test_non_loopback_listen_addresses_are_refused(client: Client, listen: str) -> None:
    reply = client.call("POST", "/proxies", {"name": "x", "listen": listen, "upstream": UPSTREAM})
    assert reply.status == 400 and "is not loopback" in reply.error and "loopback addresses only" in reply.error
    assert client.runner.calls == [] and client.api.proxies == {}


@pytest.mark.parametrize(("upstream", "fragment"), [
    ("10.1.2.3:80", "upstream address '10.1.2.3:80' is not loopback (10.1.2.3)"),
    ("example.com:80", "upstream address 'example.com:80' is not loopback (example.com)"),
    ("127.0.0.1:0", "invalid upstream address '127.0.0.1:0': bad port '0'"),
    ("127.0.0.1", "invalid upstream address '127.0.0.1': address 127.0.0.1: missing port in address"),
    ("::1:80", "invalid upstream address '::1:80': address ::1:80: too many colons in address"),
    ("127.0.0.1:http", "invalid upstream address '127.0.0.1:http': bad port 'http'"),
])
def test_bad_upstream_addresses_are_400(client: Client, upstream: str, fragment: str) -> None:
    reply = client.call("POST", "/proxies", {"name": "x", "upstream": upstream})
    assert reply.status == 400 and reply.error.startswith(fragment)


def test_loopback_names_resolve_to_loopback_ips(client: Client) -> None:
    assert client.create("v4", listen="localhost:0")["listen"] == "127.0.0.1:40000"
    assert client.create("v6", listen="[::1]:0")["listen"] == "[::1]:40001"
    assert client.create("net8", listen="127.0.0.2:7000")["listen"] == "127.0.0.2:7000"
    assert client.runner.take_calls() == [("start", "v4", "127.0.0.1:0"), ("start", "v6", "::1:0"),
                                          ("start", "net8", "127.0.0.2:7000")]


def test_disable_and_enable_stop_and_restart_the_listener_on_the_same_port(client: Client) -> None:
    client.create("gw")
    client.runner.take_calls()
    disabled = client.call("POST", "/proxies/gw", {"enabled": False})
    assert disabled.status == 200
    assert disabled.json()["enabled"] is False and disabled.json()["listen"] == "127.0.0.1:40000"
    assert client.runner.take_calls() == [("stop", "gw")]
    assert client.call("POST", "/proxies/gw", {"enabled": False}).status == 200
    assert client.runner.take_calls() == []  # already down: nothing to stop
    enabled = client.call("PATCH", "/proxies/gw", {"enabled": True})
    assert enabled.status == 200 and enabled.json()["enabled"] is True
    assert client.runner.take_calls() == [("start", "gw", "127.0.0.1:40000")]


def test_a_new_upstream_restarts_an_enabled_proxy_and_only_records_a_disabled_one(client: Client) -> None:
    client.create("on")
    client.create("off", enabled=False)
    client.runner.take_calls()
    moved = client.call("POST", "/proxies/on", {"upstream": "127.0.0.1:9001"})
    assert moved.status == 200 and moved.json()["upstream"] == "127.0.0.1:9001" and moved.json()["enabled"] is True
    assert client.runner.take_calls() == [("stop", "on"), ("start", "on", "127.0.0.1:40000")]
    assert client.call("POST", "/proxies/off", {"upstream": "127.0.0.1:9001"}).json()["enabled"] is False
    assert client.runner.take_calls() == []


def test_a_refused_update_changes_nothing(client: Client) -> None:
    before = client.create("gw")
    client.runner.take_calls()
    for body in ({"upstream": "10.0.0.1:80"}, {"listen": "0.0.0.0:1"}):
        reply = client.call("POST", "/proxies/gw", body)
        assert reply.status == 400 and "loopback" in reply.error
    reply = client.call("POST", "/proxies/gw", raw=b'{"enabled": 1}')
    assert reply.error == ("bad request body: json: cannot unmarshal number 1 into Go struct field Proxy.enabled "
                           "of type bool")
    assert client.call("GET", "/proxies/gw").json() == before
    assert client.runner.calls == []


def test_delete_stops_a_running_proxy_and_forgets_it(client: Client) -> None:
    client.create("on")
    client.create("off", enabled=False)
    client.runner.take_calls()
    reply = client.call("DELETE", "/proxies/on")
    assert reply.status == 204 and reply.response.body == b"" and reply.response.content_type is None
    assert client.call("DELETE", "/proxies/off").status == 204
    assert client.runner.take_calls() == [("stop", "on")]
    assert client.call("GET", "/proxies").json() == {}
    assert client.call("DELETE", "/proxies/on").error == "proxy not found"


def test_unknown_proxies_and_toxics_are_404(client: Client) -> None:
    for method, path in [("GET", "/proxies/x"), ("POST", "/proxies/x"), ("DELETE", "/proxies/x"),
                         ("GET", "/proxies/x/toxics"), ("POST", "/proxies/x/toxics"),
                         ("GET", "/proxies/x/toxics/t"), ("PATCH", "/proxies/x/toxics/t")]:
        reply = client.call(method, path, {"type": "latency"})
        assert (reply.status, reply.error) == (404, "proxy not found"), (method, path)
    client.create("gw")
    for method in ("GET", "POST", "PATCH", "DELETE"):
        reply = client.call(method, "/proxies/gw/toxics/t", {})
        assert (reply.status, reply.error) == (404, "toxic not found"), method


def test_names_in_paths_are_percent_decoded(client: Client) -> None:
    client.create("a b/c")
    assert client.call("GET", "/proxies/a%20b%2Fc").json()["name"] == "a b/c"


def test_bodies_are_written_as_go_writes_json(client: Client) -> None:
    reply = client.call("POST", "/proxies", {"name": "<a&b>\u2028é", "upstream": UPSTREAM})
    assert b'"name":"\\u003ca\\u0026b\\u003e\\u2028\xc3\xa9"' in reply.response.body
    assert b" " not in reply.response.body


# ------------------------------------------------------------------------------------------------ toxics


def test_a_toxic_gets_toxiproxys_defaults_and_reaches_the_runner(client: Client) -> None:
    client.create("gw")
    client.runner.take_calls()
    reply = client.call("POST", "/proxies/gw/toxics", {"type": "latency", "attributes": {"latency": 100}})
    assert reply.status == 200  # not 201: Toxiproxy answers a new toxic with 200
    assert reply.response.body == (b'{"attributes":{"latency":100,"jitter":0},"name":"latency_downstream",'
                                   b'"type":"latency","stream":"downstream","toxicity":1}')
    assert client.runner.take_calls() == [("toxic_added", "gw", "latency_downstream")]
    assert client.call("GET", "/proxies/gw/toxics/latency_downstream").json() == reply.json()
    assert client.call("GET", "/proxies/gw").json()["toxics"] == [reply.json()]


@pytest.mark.parametrize("toxic_type", sorted(TOXIC_TYPES))
def test_every_toxic_type_takes_the_attributes_of_the_shared_table(client: Client, toxic_type: str) -> None:
    client.create("gw")
    toxic = client.toxic("gw", toxic_type, stream="upstream")
    assert toxic["name"] == f"{toxic_type}_upstream"
    assert list(toxic["attributes"]) == list(TOXIC_TYPES[toxic_type].attributes)
    assert set(toxic["attributes"].values()) <= {0}


def test_a_toxic_keeps_the_stream_as_written_and_ignores_unknown_attributes(client: Client) -> None:
    client.create("gw")
    toxic = client.toxic("gw", "slicer", stream="UpStream", toxicity=0.1,
                         attributes={"average_size": 10, "delay": 5, "bogus": 1})
    assert toxic == {"attributes": {"average_size": 10, "size_variation": 0, "delay": 5}, "name": "slicer_UpStream",
                     "type": "slicer", "stream": "UpStream", "toxicity": 0.1}
    assert client.api.proxies["gw"].toxics[0].direction == "upstream"


@pytest.mark.parametrize(("body", "status", "message"), [
    ({"type": "latency"}, 409, "toxic already exists"),
    ({"type": "latency", "name": "other", "stream": "sideways"}, 400,
     "stream was invalid, can be either upstream or downstream"),
    ({"type": "no_such_toxic"}, 400, "invalid toxic type"),
    ({}, 400, "invalid toxic type"),
    ({"type": "latency", "name": "x", "attributes": {"latency": "slow"}}, 400,
     "bad request body: json: cannot unmarshal string into Go struct field LatencyToxic.attributes.latency "
     "of type int64"),
    ({"type": "slicer", "attributes": {"delay": 1.5}}, 400,
     "bad request body: json: cannot unmarshal number 1.5 into Go struct field SlicerToxic.attributes.delay "
     "of type int"),
    ({"type": "latency", "name": "x", "attributes": {"latency": 2**63}}, 400,
     "bad request body: json: cannot unmarshal number 9223372036854775808 into Go struct field "
     "LatencyToxic.attributes.latency of type int64"),
    ({"type": "latency", "name": "y", "toxicity": "high"}, 400,
     "bad request body: json: cannot unmarshal string into Go struct field ToxicWrapper.toxicity of type float32"),
    ({"type": "latency", "name": "z", "attributes": [1]}, 400,
     "bad request body: json: cannot unmarshal array into Go struct field ToxicWrapper.attributes "
     "of type toxics.Toxic"),
    ({"type": 7}, 400, "bad request body: json: cannot unmarshal number 7 into Go struct field ToxicWrapper.type "
     "of type string"),
])
def test_toxic_errors(client: Client, body: dict[str, Any], status: int, message: str) -> None:
    client.create("gw")
    client.toxic("gw", "latency")
    client.runner.take_calls()
    reply = client.call("POST", "/proxies/gw/toxics", body)
    assert (reply.status, reply.error) == (status, message)
    assert [t["name"] for t in client.call("GET", "/proxies/gw/toxics").json()] == ["latency_downstream"]
    assert client.runner.calls == []


def test_malformed_toxic_bodies_are_bad_request_bodies(client: Client) -> None:
    client.create("gw")
    for raw in (b"", b"[", b'"latency"', b"\xfe"):
        reply = client.call("POST", "/proxies/gw/toxics", raw=raw)
        assert reply.status == 400 and reply.error.startswith("bad request body: "), raw


# Bodies no client should send, each answered as Toxiproxy's Go decoder answers it (found by tests/test_fuzz_proxy.py:
# before, each raised out of `handle` and the HTTP server dropped the connection).


@pytest.mark.parametrize("raw", [b"[" * 100_000, b"[" * 10_001 + b"]" * 10_001, b'{"name":' * 20_000])
def test_nesting_past_gos_limit_is_exceeded_max_depth(client: Client, raw: bytes) -> None:
    reply = client.call("POST", "/proxies", raw=raw)
    assert (reply.status, reply.error) == (400, "bad request body: exceeded max depth")


def test_nesting_python_cannot_recurse_through_is_read_as_go_reads_it(client: Client) -> None:
    deep = "[" * 5000 + "]" * 5000
    reply = client.call("POST", "/proxies", raw=deep.encode())
    assert reply.error == "bad request body: json: cannot unmarshal array into Go value of type toxiproxy.Proxy"
    raw = f'{{"name": "gw", "upstream": "{UPSTREAM}", "junk": {deep}}}'.encode()  # Go skips unknown fields
    assert client.call("POST", "/proxies", raw=raw).status == 201


@pytest.mark.parametrize(("literal", "where"), [
    ("1e400", "ToxicWrapper.toxicity of type float32"),
    ("1e39", "ToxicWrapper.toxicity of type float32"),
    ("1" * 5000, "ToxicWrapper.toxicity of type float32"),
])
def test_numbers_past_float32_are_go_unmarshal_errors_naming_the_literal(client: Client, literal: str,
                                                                          where: str) -> None:
    client.create("gw")
    reply = client.call("POST", "/proxies/gw/toxics", raw=f'{{"type": "latency", "toxicity": {literal}}}'.encode())
    assert reply.status == 400
    assert reply.error == f"bad request body: json: cannot unmarshal number {literal} into Go struct field {where}"


@pytest.mark.parametrize("literal", ["1e3", "9223372036854775808", "1" * 5000])
def test_attributes_that_are_not_int64_name_the_literal(client: Client, literal: str) -> None:
    client.create("gw")
    reply = client.call("POST", "/proxies/gw/toxics", raw=f'{{"type": "latency", "attributes": {{"latency": '
                                                          f'{literal}}}}}'.encode())
    assert reply.error == (f"bad request body: json: cannot unmarshal number {literal} into Go struct field "
                           "LatencyToxic.attributes.latency of type int64")


def test_a_huge_number_in_an_unknown_field_is_ignored_as_go_ignores_it(client: Client) -> None:
    raw = f'{{"name": "gw", "upstream": "{UPSTREAM}", "x": {"9" * 5000}, "y": 1e400}}'.encode()
    assert client.call("POST", "/proxies", raw=raw).status == 201


def test_a_lone_surrogate_escape_becomes_u_fffd_as_in_go(client: Client) -> None:
    raw = f'{{"name": "gw\\udc80", "upstream": "{UPSTREAM}"}}'.encode()
    reply = client.call("POST", "/proxies", raw=raw)
    assert reply.status == 201 and reply.json()["name"] == "gw\ufffd"
    assert client.call("GET", "/proxies").status == 200  # the listing can still be written as UTF-8


@pytest.mark.parametrize("listen", ["127.0.0.1:\u00b2", "127.0.0.1:\uff11\uff12\uff13", "127.0.0.1:" + "9" * 5000,
                                    "127.0.0.1:-1", "[::1%lo]:0"])
def test_ports_and_hosts_python_would_misread_are_400(client: Client, listen: str) -> None:
    reply = client.call("POST", "/proxies", {"name": "x", "listen": listen, "upstream": UPSTREAM})
    assert reply.status == 400, reply
    assert client.runner.calls == [] and client.api.proxies == {}


def test_leading_zeros_in_a_port_are_read_as_go_reads_them(client: Client) -> None:
    assert client.create("gw", listen="127.0.0.1:00000")["listen"] == "127.0.0.1:40000"


def test_update_keeps_unset_fields_bumps_the_generation_and_tells_the_runner(client: Client) -> None:
    client.create("gw")
    client.toxic("gw", "latency", attributes={"latency": 100, "jitter": 10})
    client.runner.take_calls()
    base = "/proxies/gw/toxics/latency_downstream"
    updated = client.call("POST", base, {"attributes": {"latency": 250}})
    assert updated.status == 200 and updated.json()["attributes"] == {"latency": 250, "jitter": 10}
    patched = client.call("PATCH", base, {"toxicity": 0.5})
    assert patched.json()["toxicity"] == 0.5 and patched.json()["attributes"]["latency"] == 250
    assert client.api.proxies["gw"].toxics[0].generation == 2
    assert client.runner.take_calls() == [("toxic_updated", "gw", "latency_downstream")] * 2


def test_a_refused_toxic_update_changes_nothing(client: Client) -> None:
    client.create("gw")
    before = client.toxic("gw", "latency", attributes={"latency": 100})
    client.runner.take_calls()
    base = "/proxies/gw/toxics/latency_downstream"
    for raw in (b'{"attributes": {"latency": 1.5}}', b'{"attributes": {"latency": 5}, "toxicity": "x"}',
                b'{"attributes": "fast"}', b"[]"):
        reply = client.call("POST", base, raw=raw)
        assert reply.status == 400 and reply.error.startswith("bad request body: "), raw
    assert client.call("GET", base).json() == before
    assert client.api.proxies["gw"].toxics[0].generation == 0 and client.runner.calls == []


def test_toxics_are_listed_upstream_first_in_order_of_addition(client: Client) -> None:
    client.create("gw")
    client.toxic("gw", "latency", name="d1")
    client.toxic("gw", "latency", name="u1", stream="upstream")
    client.toxic("gw", "slicer", name="d2")
    client.toxic("gw", "bandwidth", name="u2", stream="upstream")
    assert [t["name"] for t in client.call("GET", "/proxies/gw/toxics").json()] == ["u1", "u2", "d1", "d2"]
    assert [t["name"] for t in client.call("GET", "/proxies/gw").json()["toxics"]] == ["u1", "u2", "d1", "d2"]


def test_delete_a_toxic(client: Client) -> None:
    client.create("gw")
    client.toxic("gw", "limit_data", name="cap", attributes={"bytes": 9})
    client.runner.take_calls()
    reply = client.call("DELETE", "/proxies/gw/toxics/cap")
    assert reply.status == 204 and reply.response.body == b""
    assert client.runner.take_calls() == [("toxic_removed", "gw", "cap")]
    assert client.call("GET", "/proxies/gw/toxics").json() == []
    assert client.call("DELETE", "/proxies/gw/toxics/cap").error == "toxic not found"


# ---------------------------------------------------------------------------------------- reset, populate


def test_reset_enables_every_proxy_on_its_port_and_removes_every_toxic(client: Client) -> None:
    client.create("a")
    client.create("b")
    client.toxic("a", "timeout", attributes={"timeout": 0})
    client.toxic("a", "latency", stream="upstream")
    client.call("POST", "/proxies/b", {"enabled": False})
    client.runner.take_calls()
    reply = client.call("POST", "/reset")
    assert reply.status == 204 and reply.response.body == b""
    assert client.runner.take_calls() == [("toxic_removed", "a", "timeout_downstream"),
                                          ("toxic_removed", "a", "latency_upstream"),
                                          ("start", "b", "127.0.0.1:40001")]
    after = client.call("GET", "/proxies").json()
    assert [(p["enabled"], p["listen"], p["toxics"]) for p in after.values()] == [
        (True, "127.0.0.1:40000", []), (True, "127.0.0.1:40001", [])]


def test_populate_creates_keeps_and_replaces(client: Client) -> None:
    first = client.call("POST", "/populate", [{"name": "a", "upstream": UPSTREAM},
                                              {"name": "b", "upstream": UPSTREAM, "enabled": False}])
    assert first.status == 201 and list(first.json()) == ["proxies"]
    a, b = first.json()["proxies"]
    assert (a["listen"], a["enabled"], b["listen"], b["enabled"]) == ("127.0.0.1:40000", True, "127.0.0.1:0", False)
    client.toxic("a", "latency")
    client.runner.take_calls()

    same = client.call("POST", "/populate", [{"name": "a", "listen": a["listen"], "upstream": UPSTREAM}])
    assert same.status == 201 and len(same.json()["proxies"][0]["toxics"]) == 1
    assert client.runner.take_calls() == []

    moved = client.call("POST", "/populate", [{"name": "a", "listen": a["listen"], "upstream": "127.0.0.1:9001"}])
    assert moved.status == 201
    assert moved.json()["proxies"][0] == {"name": "a", "listen": "127.0.0.1:40000", "upstream": "127.0.0.1:9001",
                                          "enabled": True, "toxics": []}
    assert client.runner.take_calls() == [("stop", "a"), ("start", "a", "127.0.0.1:40000")]


def test_populate_checks_every_entry_before_changing_anything(client: Client) -> None:
    for body, message in [
        ([{"upstream": UPSTREAM}], "missing required field: name at proxy 1"),
        ([{"name": "c", "upstream": UPSTREAM}, {"name": "d"}], "missing required field: upstream at proxy 2"),
        ([{"name": "c", "upstream": UPSTREAM}, {"name": "d", "listen": "0.0.0.0:0", "upstream": UPSTREAM}],
         "listen address '0.0.0.0:0' is not loopback (0.0.0.0)"),
        ({"name": "c"}, "bad request body: json: cannot unmarshal object into Go value of type "
                        '[]struct { toxiproxy.Proxy; Enabled *bool "json:\\"enabled\\"" }'),
        ([5], "bad request body: json: cannot unmarshal number into Go value of type "
              "struct { toxiproxy.Proxy; Enabled *bool }"),
    ]:
        reply = client.call("POST", "/populate", body)
        assert reply.status == 400 and reply.error.startswith(message), body
    assert client.api.proxies == {} and client.runner.calls == []


def test_populate_of_nothing_answers_null(client: Client) -> None:
    for raw in (b"null", b"[]"):
        reply = client.call("POST", "/populate", raw=raw)
        assert reply.status == 201 and reply.response.body == b'{"proxies":null}'


def test_populate_stops_at_the_first_proxy_that_cannot_listen(client: Client) -> None:
    client.runner.busy.add(("127.0.0.1", 5000))
    reply = client.call("POST", "/populate", [{"name": "a", "upstream": UPSTREAM},
                                              {"name": "b", "listen": "127.0.0.1:5000", "upstream": UPSTREAM},
                                              {"name": "c", "upstream": UPSTREAM}])
    assert reply.status == 500 and reply.response.content_type == "application/json"
    body = reply.json()
    assert list(body) == ["error", "status", "proxies"]
    assert body["error"] == "listen tcp 127.0.0.1:5000: bind: address already in use" and body["status"] == 500
    assert [p["name"] for p in body["proxies"]] == ["a"]
    assert sorted(client.api.proxies) == ["a"]


# ------------------------------------------------------------------------------------ one toxic table


def test_the_timeline_and_the_proxy_read_one_toxic_table() -> None:
    assert STREAMS == ("upstream", "downstream")
    assert set(RUNTIMES) == set(TOXIC_TYPES)
    assert {name: kind.attributes for name, kind in TOXIC_TYPES.items() if name != "noop"} == TOXIC_ATTRIBUTES
    spec = ToxicSpec("slicer", attributes={"average_size": 64, "size_variation": 8, "delay": 1000})
    assert spec.scaled_attributes(0.5) == {"average_size": 64, "size_variation": 8, "delay": 500}
    assert ToxicSpec("bandwidth", attributes={"rate": 100}).scaled_attributes(0.5) == {"rate": 200}


def test_a_scaled_timeline_toxic_is_accepted_by_the_api_as_it_is(client: Client) -> None:
    client.create("gw")
    for index, (toxic_type, units) in enumerate(TOXIC_ATTRIBUTES.items()):
        spec = ToxicSpec(toxic_type, "upstream", 0.5, dict.fromkeys(units, 1000))
        toxic = client.toxic("gw", toxic_type, name=f"fault-{index}", stream=spec.stream, toxicity=spec.toxicity,
                             attributes=spec.scaled_attributes(0.1))
        assert toxic["attributes"] == spec.scaled_attributes(0.1)


@pytest.mark.parametrize("port", ["\uff11\uff12\uff13", "\u00b2", "1_0", "65536", "-1", ""])
def test_the_command_line_reads_its_port_in_ascii_digits_only(port: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        parse_args(["--port", port])
    assert exited.value.code == 2
    [line] = capsys.readouterr().err.splitlines()
    assert "--port" in line and "is not a port number" in line
