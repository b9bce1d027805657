"""Fuzzing the embedded Toxiproxy's API with hypothesis: through `ToxiproxyApi.handle`, then over HTTP.

Requests come from a grammar of valid and near-valid Toxiproxy calls (every route and method, proxy and
toxic bodies built from the shared toxic table, populate lists), with their fields broken one at a time,
plus what no client should send: nesting far past any recursion limit, numbers past float and int64, bad
UTF-8, lone surrogate escapes, non-loopback and malformed addresses. (a) Through the sans-I/O API with a fake
runner (no sockets, microseconds a request): `handle` never raises and never answers 5xx (the one 5xx
Toxiproxy has, a listen address that cannot be bound, happens only on ports the fake runner calls busy),
every error is Toxiproxy's `{"error", "status"}` JSON, every other body is JSON, no proxy ever holds or
listens on a non-loopback address, and what the runner listens on is what the records say is enabled.
(b) Over HTTP against a running embedded proxy (its own loop in a thread, 127.0.0.1 port 0): the same
requests, sent one by one, pipelined or as broken HTTP (bad Content-Length, short bodies, bad chunks,
oversized headers, bad request lines): every request gets a complete answer before the connection closes,
none is a 5xx, and the proxy still serves `/version` afterwards. Listen addresses are port 0 or refused,
so the fuzz never takes a port another program on the machine could want. conftest's `quick` profile is
the slice the normal suite runs; `HYPOTHESIS_PROFILE=campaign` runs the long one.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import json
import socket
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import pytest
from conftest import CAMPAIGN, report
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.faults.embedded_proxy.addresses import loopback_ip, split_host_port
from harness.faults.embedded_proxy.api import Request, Response, ToxiproxyApi
from harness.faults.embedded_proxy.records import ProxyRecord, Toxic
from harness.faults.embedded_proxy.server import EmbeddedToxiproxy
from harness.faults.toxic_types import STREAMS, TOXIC_TYPES

API_EXAMPLES = settings().max_examples * 6  # a request through `handle` takes microseconds
HTTP_EXAMPLES = settings().max_examples
NAMES = ("p1", "p2", "p 3", "ü", "a/b", "x" * 40)  # few, so requests meet the proxies earlier ones made
BUSY_PORT = 7  # the fake runner's one port that cannot be bound
requests_sent: Counter[str] = Counter()  # by level, reported by the campaign


# ---------------------------------------------------------------------------------------------
# The request grammar


class Big(bytes):
    """A long body that hypothesis shows by its length."""

    def __repr__(self) -> str:
        return f"Big({bytes(self[:24])!r} + {len(self) - 24} more bytes)"


JSON_SCALARS = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
                | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=10))
JSON_VALUES = st.recursive(JSON_SCALARS, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=8)
HOSTS = ("127.0.0.1", "127.0.0.1", "localhost", "[::1]", "127.9.9.9", "0.0.0.0", "", "192.168.1.10", "[::]",
         "example.com", "[::1%lo]", "LOCALHOST", "::1")
LISTEN_PORTS = ("0", "0", "00000", "", "x", "-1", "65536", "１２３", "²", "9" * 30)
UPSTREAM_PORTS = ("9", "8474", "65535", "0", "", "http", "１", "99999999999999999999")
NUMBERS = ("1e400", "-1e400", "1" * 400, "1" * 5000, "3.5", "1e3", "-0", "9223372036854775808", "NaN", "1e39")


def _maybe(value: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(value, value, value, JSON_VALUES)


@st.composite
def addresses(draw: st.DrawFn, ports: tuple[str, ...]) -> str:
    return f"{draw(st.sampled_from(HOSTS))}:{draw(st.sampled_from(ports))}"


@st.composite
def proxy_objects(draw: st.DrawFn) -> dict[str, Any]:
    proxy: dict[str, Any] = {"name": draw(_maybe(st.sampled_from(NAMES))),
                             "listen": draw(_maybe(addresses(LISTEN_PORTS))),
                             "upstream": draw(_maybe(addresses(UPSTREAM_PORTS)))}
    if draw(st.booleans()):
        proxy[draw(st.sampled_from(["enabled", "Enabled", "ENABLED"]))] = draw(_maybe(st.booleans()))
    for key in draw(st.lists(st.sampled_from(sorted(proxy)), max_size=1)):
        del proxy[key]
    return proxy


@st.composite
def toxic_objects(draw: st.DrawFn) -> dict[str, Any]:
    toxic_type = draw(st.sampled_from(sorted(TOXIC_TYPES)) | st.text(max_size=6))
    names = TOXIC_TYPES[toxic_type].attributes if toxic_type in TOXIC_TYPES else {}
    number = st.integers(min_value=-(2**65), max_value=2**65) | st.floats(allow_nan=False, allow_infinity=False)
    attributes = {name: draw(_maybe(number)) for name in names if draw(st.booleans())}
    toxic: dict[str, Any] = {"type": toxic_type, "attributes": draw(_maybe(st.just(attributes))),
                             "stream": draw(_maybe(st.sampled_from([*STREAMS, "UpStream", "sideways"]))),
                             "toxicity": draw(_maybe(st.floats(min_value=-1, max_value=2)))}
    if draw(st.booleans()):
        toxic["name"] = draw(_maybe(st.sampled_from(["t1", "t2", "latency_downstream"])))
    for key in draw(st.lists(st.sampled_from(sorted(toxic)), max_size=1)):
        del toxic[key]
    return toxic


@st.composite
def bodies(draw: st.DrawFn, route: str) -> bytes:
    shape = {"proxies": proxy_objects(), "proxy": proxy_objects(), "toxics": toxic_objects(),
             "toxic": toxic_objects(), "populate": st.lists(proxy_objects(), max_size=3)}.get(route, JSON_VALUES)
    text = json.dumps(draw(st.one_of(shape, shape, shape, JSON_VALUES)))
    mutation = draw(st.integers(0, 12))
    if mutation == 0:
        return text[:draw(st.integers(0, len(text)))].encode()
    if mutation == 1:
        return text.replace("0", draw(st.sampled_from(NUMBERS)), 1).encode()
    if mutation == 2:
        return text.replace('"', '"\\udc80', 1).encode()
    if mutation == 3:
        return text.encode().replace(b"1", b"\xff", 1)  # invalid UTF-8
    if mutation == 4:
        depth = draw(st.sampled_from([900, 1500, 9999, 10_001, 100_000]))
        opener = draw(st.sampled_from(["[", '{"a":', '{"name":']))
        closer = {"[": "]", '{"a":': "}", '{"name":': "}"}[opener]
        return Big((opener * depth + "1" + closer * depth * draw(st.integers(0, 1))).encode())
    if mutation == 5:
        return draw(st.binary(max_size=30))
    if mutation == 6:
        return (text + draw(st.sampled_from([" trailing", "]", "\x00"]))).encode()
    return text.encode()


ROUTES = {
    "version": "/version", "reset": "/reset", "populate": "/populate", "proxies": "/proxies",
    "proxy": "/proxies/{name}", "toxics": "/proxies/{name}/toxics", "toxic": "/proxies/{name}/toxics/{toxic}",
}
JUNK_PATHS = ("/", "", "/proxies/", "//proxies", "/proxies/%ff", "/proxies/%", "/proxies/%2F/toxics", "/versionx",
              "/proxies/p1/toxics/", "/proxies/p1/toxics/t1/x", "*", "/proxies/" + "%C3%BC", "/metrics")


def _quote(name: str) -> str:
    return "".join(c if c.isalnum() and c.isascii() else "".join(f"%{b:02X}" for b in c.encode()) for c in name)


@st.composite
def api_requests(draw: st.DrawFn) -> Request:
    route = draw(st.sampled_from(sorted(ROUTES)))
    path = ROUTES[route].format(name=_quote(draw(st.sampled_from(NAMES))),
                                toxic=draw(st.sampled_from(["t1", "t2", "latency_downstream", "nope"])))
    if draw(st.integers(0, 9)) == 0:
        path = draw(st.sampled_from(JUNK_PATHS))
    method = draw(st.sampled_from(["GET", "POST", "POST", "PATCH", "DELETE", "PUT", "HEAD", "OPTIONS", "get"]))
    body = draw(bodies(route)) if method in ("POST", "PATCH") or draw(st.integers(0, 5)) == 0 else b""
    headers = {"user-agent": draw(st.sampled_from(["toxiproxy-cli", "curl/8", "Mozilla/5.0 (X11)", ""]))}
    return Request(method, path, body, headers)


# ---------------------------------------------------------------------------------------------
# (a) The sans-I/O API with a fake runner


class FakeRunner:
    """Listens in name only: ports from 40000 up, and BUSY_PORT refused as a bind would refuse it."""

    def __init__(self) -> None:
        self.listening: dict[int, tuple[str, int]] = {}  # id(proxy record) -> where
        self._next_port = 40000

    def start(self, proxy: ProxyRecord, ip: str, port: int) -> int:
        assert id(proxy) not in self.listening, f"started twice: {proxy.name}"
        assert ipaddress.ip_address(ip).is_loopback, f"asked to listen on {ip}"
        if port == BUSY_PORT:
            raise OSError(errno.EADDRINUSE, "Address already in use")
        if port == 0:
            port, self._next_port = self._next_port, self._next_port + 1
        self.listening[id(proxy)] = (ip, port)
        return port

    def stop(self, proxy: ProxyRecord) -> None:
        assert self.listening.pop(id(proxy), None) is not None, f"stopped but not listening: {proxy.name}"

    def toxic_added(self, proxy: ProxyRecord, toxic: Toxic) -> None:
        assert toxic in proxy.toxics

    def toxic_updated(self, proxy: ProxyRecord, toxic: Toxic) -> None:
        assert toxic in proxy.toxics

    def toxic_removed(self, proxy: ProxyRecord, toxic: Toxic) -> None:
        assert toxic not in proxy.toxics


def _is_loopback_address(address: str) -> bool:
    host, _ = split_host_port(address)
    return loopback_ip(host) is not None


def check_response(request: Request, response: Response) -> None:
    """What every answer must be, whatever was asked."""
    assert response.status in (200, 201, 204, 400, 403, 404, 405, 409, 500), response
    if response.status == 500:
        error = json.loads(response.body)
        assert error["status"] == 500 and error["error"].startswith("listen tcp "), (request, response)
        assert f":{BUSY_PORT}: bind: " in error["error"], (request, response)  # the only port that cannot bind
    if response.status in (400, 409, 500) or (response.status == 404 and response.body.startswith(b"{")):
        error = json.loads(response.body)
        assert list(error) == ["error", "status"] and error["status"] == response.status, response
        assert isinstance(error["error"], str) and error["error"], response
    elif response.status in (200, 201):
        json.loads(response.body.decode("utf-8"), parse_constant=lambda name: pytest.fail(f"{name} in {response}"))


def check_state(api: ToxiproxyApi, runner: FakeRunner) -> None:
    for proxy in api.proxies.values():
        assert _is_loopback_address(proxy.listen) and _is_loopback_address(proxy.upstream), proxy
        assert proxy.enabled == (id(proxy) in runner.listening), proxy
        json.dumps(proxy.as_json(), allow_nan=False).encode("utf-8")  # writable, as GET /proxies writes it
    assert len(runner.listening) == sum(p.enabled for p in api.proxies.values())


@settings(max_examples=API_EXAMPLES, suppress_health_check=[HealthCheck.too_slow, HealthCheck.large_base_example])
@given(requests=st.lists(api_requests(), min_size=1, max_size=12), busy=st.booleans())
def test_api_answers_every_request_as_toxiproxy_does(requests: list[Request], busy: bool) -> None:
    runner = FakeRunner()
    api = ToxiproxyApi(runner)
    for request in requests:
        if busy and b'127.0.0.1:0"' in request.body:
            request = Request(request.method, request.path,
                              request.body.replace(b'127.0.0.1:0"', f'127.0.0.1:{BUSY_PORT}"'.encode()),
                              request.headers)
        requests_sent["api"] += 1
        response = api.handle(request)
        check_response(request, response)
        check_state(api, runner)
    version = api.handle(Request("GET", "/version"))
    assert version.status == 200 and json.loads(version.body)["version"].startswith("2.")


# ---------------------------------------------------------------------------------------------
# (b) A running embedded proxy over HTTP


class ProxyThread:
    """The embedded proxy serving from its own event loop in a thread, as `harness toxiproxy` runs it."""

    def __init__(self) -> None:
        self._ready: Future[str] = Future()
        self._stop: asyncio.Event | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.problems: list[str] = []
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)
        self._thread.start()
        url = self._ready.result(timeout=10)
        self.port = int(url.rsplit(":", 1)[1])

    async def _main(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.loop.set_exception_handler(lambda _, context: self.problems.append(str(context)))
        self._stop = asyncio.Event()
        server = EmbeddedToxiproxy()
        self._ready.set_result(await server.start())
        try:
            await self._stop.wait()
        finally:
            await server.close()

    def close(self) -> None:
        assert self.loop is not None and self._stop is not None
        self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=15)


@pytest.fixture(scope="module")
def proxy(request: pytest.FixtureRequest) -> Iterator[ProxyThread]:
    running = ProxyThread()
    yield running
    running.close()
    if CAMPAIGN:
        report(request.config, f"\nfuzz_proxy: {requests_sent['api']} requests through ToxiproxyApi.handle, "
                               f"{requests_sent['http']} over HTTP")


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


class HttpClient:
    """A raw HTTP/1.1 connection that reads answers exactly as framed (Content-Length), or fails the test."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buffer = b""

    def _fill(self) -> bool:
        data = self.sock.recv(65536)
        self.buffer += data
        return bool(data)

    def answer(self, what: str, head_request: bool = False) -> Answer:
        while True:
            while b"\r\n\r\n" not in self.buffer:
                if not self._fill():
                    raise AssertionError(f"connection closed with no answer to {what}: {self.buffer[:200]!r}")
            head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
            status_line, *lines = head.decode("latin-1").split("\r\n")
            assert status_line.startswith("HTTP/1."), status_line
            if status_line.split()[1] != "100":  # Expect: 100-continue's interim answer comes first
                break
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
        length = 0 if head_request or status_line.split()[1] == "204" else int(headers.get("content-length", "0"))
        while len(self.buffer) < length:
            if not self._fill():
                raise AssertionError(f"answer to {what} cut short: {self.buffer[:200]!r}")
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return Answer(int(status_line.split()[1]), headers, body)

    def closed_by_server(self) -> bool:
        self.sock.settimeout(5)
        try:
            return not self.buffer and not self._fill()
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.sock.close()


def http_bytes(request: Request, framing: str) -> bytes:
    path = request.path or "/"
    head = f"{request.method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    if request.headers.get("user-agent"):
        head += f"User-Agent: {request.headers['user-agent']}\r\n"
    body = bytes(request.body)
    if framing == "chunked":
        chunks = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 7]), body[i:i + 7]) for i in range(0, len(body), 7))
        return (head + "Transfer-Encoding: chunked\r\n\r\n").encode() + chunks + b"0\r\n\r\n"
    if framing == "expect":
        head += "Expect: 100-continue\r\n"
    return (head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body


# Requests Go's net/http itself refuses, each answered with a 4xx before the connection closes.
BROKEN_HTTP = (
    b"GET /version HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
    b"GET /version HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
    b"GET /version HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
    b"POST /proxies HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"POST /proxies HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
    b"GET /version HTTP/9.9\r\n\r\n",
    b"GET  /version HTTP/1.1\r\n\r\n",
    b"GET /version\r\n\r\n",
    b"\xff\xfe /version HTTP/1.1\r\n\r\n",
    b"GET /version HTTP/1.1\r\nNo colon here\r\n\r\n",
    b"GET /version HTTP/1.1\r\nX-Big: " + b"a" * ((1 << 20) + 8192) + b"\r\n\r\n",  # over Go's 1 MiB + 4 KiB
    b"GET " + b"/a" * 600_000 + b" HTTP/1.1\r\n\r\n",
    b"GET http://[::1/version HTTP/1.1\r\n\r\n",
)
# Bodies that end before their Content-Length says, sent with a half-close: a JSON 400, as Toxiproxy's decoder
# reports an unexpected EOF.
SHORT_BODIES = (b"POST /proxies HTTP/1.1\r\nContent-Length: 100\r\n\r\n{\"name\":",
                b"POST /populate HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n[{")


@settings(max_examples=HTTP_EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                 HealthCheck.large_base_example])
@given(requests=st.lists(api_requests(), min_size=1, max_size=6),
       framings=st.lists(st.sampled_from(["length", "length", "chunked", "expect"]), min_size=6, max_size=6),
       pipelined=st.booleans(), broken=st.none() | st.sampled_from(BROKEN_HTTP), short=st.none()
       | st.sampled_from(SHORT_BODIES))
def test_http_api_answers_every_request_and_keeps_serving(proxy: ProxyThread, requests: list[Request],
                                                          framings: list[str], pipelined: bool, broken: bytes | None,
                                                          short: bytes | None) -> None:
    proxy.problems.clear()
    client = HttpClient(proxy.port)
    try:
        wire = [http_bytes(r, f) for r, f in zip(requests, framings, strict=False)]
        if pipelined:
            client.sock.sendall(b"".join(wire))
        for index, (request, data) in enumerate(zip(requests, wire, strict=True)):
            requests_sent["http"] += 1
            if not pipelined:
                client.sock.sendall(data)
            answer = client.answer(f"{request.method} {request.path}", head_request=request.method == "HEAD")
            assert answer.status < 500, (request, answer)
            check_response(request, Response(answer.status, answer.body))
            if answer.headers.get("connection") == "close":
                assert index == len(requests) - 1 or client.closed_by_server(), "said close, kept the connection"
                break
        for raw, half_close in ((broken, False), (short, True)):
            if raw is None:
                continue
            requests_sent["http"] += 1
            client.close()
            client = HttpClient(proxy.port)
            client.sock.sendall(raw)
            if half_close:
                client.sock.shutdown(socket.SHUT_WR)
            answer = client.answer(repr(raw[:40]))
            assert 400 <= answer.status < 500, (raw[:60], answer)
            assert answer.headers.get("connection") == "close"
    finally:
        client.close()
    version = HttpClient(proxy.port)
    try:
        version.sock.sendall(b"GET /version HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        assert version.answer("/version").status == 200
    finally:
        version.close()
    assert proxy.problems == []


@pytest.mark.parametrize("raw", [*BROKEN_HTTP, *SHORT_BODIES], ids=lambda raw: repr(raw[:30]))
def test_http_requests_go_cannot_read_are_answered_then_closed(proxy: ProxyThread, raw: bytes) -> None:
    client = HttpClient(proxy.port)
    try:
        client.sock.sendall(raw)
        if raw in SHORT_BODIES:
            client.sock.shutdown(socket.SHUT_WR)
        answer = client.answer(repr(raw[:40]))
        assert 400 <= answer.status < 500 and answer.headers["connection"] == "close", answer
        assert client.closed_by_server()
        if raw in SHORT_BODIES or b"zz" in raw:
            assert json.loads(answer.body)["error"].startswith("bad request body: "), answer
    finally:
        client.close()
