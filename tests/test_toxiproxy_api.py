"""Toxiproxy API conformance: the same tests against the embedded proxy and, if TOXIPROXY_URL is set, a real one.

Every test talks to the server only through its HTTP API (urllib), and sends real TCP traffic through
its proxies to a small threaded echo server on 127.0.0.1, so a real Toxiproxy 2.x that shares this
machine's loopback (`TOXIPROXY_URL=http://127.0.0.1:8474`) must pass the same tests; the embedded one
runs as a child process on port 0. The few embedded-only tests (loopback-only addresses, the command
line) say so. Timings wait on events (data, EOF, reset) with generous upper bounds, never fixed sleeps
where a wait will do.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
MODULE = "harness.faults.embedded_proxy"
IO_TIMEOUT_S = 5.0


# ------------------------------------------------------------------------------------------- servers


def _read_ready_line(process: subprocess.Popen[str], timeout_s: float = 15.0) -> dict[str, Any]:
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if not selector.select(timeout_s):
            raise AssertionError("the embedded proxy printed no ready line")
    line = process.stdout.readline()
    assert line, f"the embedded proxy exited ({process.wait()}) before it was ready"
    ready: dict[str, Any] = json.loads(line)
    return ready


def start_embedded(*args: str) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    process = subprocess.Popen([sys.executable, "-m", MODULE, *args], cwd=ROOT, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        return process, _read_ready_line(process)
    except BaseException:
        process.kill()
        process.wait()
        raise


def stop_embedded(process: subprocess.Popen[str], sig: int = signal.SIGTERM) -> int:
    if process.poll() is None:
        process.send_signal(sig)
    try:
        return process.wait(10)
    finally:
        if process.poll() is None:
            process.kill()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


@dataclass
class Server:
    kind: str  # "embedded" or "real"
    url: str


@pytest.fixture(scope="module", params=["embedded", "real"])
def server(request: pytest.FixtureRequest) -> Iterator[Server]:
    if request.param == "real":
        url = os.environ.get("TOXIPROXY_URL", "")
        if not url:
            pytest.skip("TOXIPROXY_URL is not set: no real Toxiproxy server to hold the embedded one to")
        yield Server("real", url if "://" in url else f"http://{url}")
        return
    process, ready = start_embedded("--port", "0")
    yield Server("embedded", ready["url"])
    assert stop_embedded(process) == 0


@pytest.fixture
def embedded_only(server: Server) -> None:
    if server.kind != "embedded":
        pytest.skip("embedded-only behaviour (a real Toxiproxy binds and dials any address)")


@dataclass
class Reply:
    status: int
    body: bytes
    headers: dict[str, str]

    def json(self) -> Any:
        return json.loads(self.body)


class Api:
    """The Toxiproxy HTTP API over urllib; deletes the proxies it created when the test ends."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.prefix = f"t{uuid.uuid4().hex[:8]}_"
        self.created: set[str] = set()

    def call(self, method: str, path: str, body: Any = None, *, raw: bytes | None = None,
             headers: dict[str, str] | None = None) -> Reply:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"Content-Type": "application/json", **(headers or {})})
        try:
            with urllib.request.urlopen(request, timeout=IO_TIMEOUT_S) as response:
                return Reply(response.status, response.read(), {k.lower(): v for k, v in response.headers.items()})
        except urllib.error.HTTPError as error:
            with error:
                return Reply(error.code, error.read(), {k.lower(): v for k, v in error.headers.items()})

    def name(self, label: str) -> str:
        name = self.prefix + label
        self.created.add(name)
        return name

    def create(self, label: str, upstream_port: int, **fields: Any) -> dict[str, Any]:
        body = {"name": self.name(label), "listen": "127.0.0.1:0", "upstream": f"127.0.0.1:{upstream_port}", **fields}
        reply = self.call("POST", "/proxies", body)
        assert reply.status == 201, reply
        proxy: dict[str, Any] = reply.json()
        return proxy

    def toxic(self, proxy: dict[str, Any], toxic_type: str, status: int = 200, **fields: Any) -> dict[str, Any]:
        reply = self.call("POST", f"/proxies/{proxy['name']}/toxics", {"type": toxic_type, **fields})
        assert reply.status == status, reply
        toxic: dict[str, Any] = reply.json()
        return toxic

    def cleanup(self) -> None:
        for name in self.created:
            self.call("DELETE", f"/proxies/{name}")


@pytest.fixture
def api(server: Server) -> Iterator[Api]:
    client = Api(server.url)
    yield client
    client.cleanup()


def error_body(reply: Reply) -> dict[str, Any]:
    body: dict[str, Any] = reply.json()
    assert set(body) == {"error", "status"}, body
    assert body["status"] == reply.status
    return body


def assert_error(reply: Reply, status: int, message: str) -> None:
    assert reply.status == status, reply
    assert error_body(reply)["error"] == message


class EchoServer:
    """A threaded TCP echo server on 127.0.0.1:0. It records what it receives and when (b"" for a close or
    a reset); a chunk with b"CLOSE" in it makes it close that connection instead of echoing."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=1024)
        self.port = self.listener.getsockname()[1]
        self.received: list[tuple[float, bytes]] = []
        self.accepted = 0
        self.changed = threading.Condition()
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with self.changed:
                self.accepted += 1
                self.sockets.append(conn)
                self.changed.notify_all()
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    def _echo(self, conn: socket.socket) -> None:
        with conn:
            while True:
                try:
                    data = conn.recv(65536)
                except OSError:  # reset: recorded as a close, like EOF
                    data = b""
                with self.changed:
                    self.received.append((time.monotonic(), data))
                    self.changed.notify_all()
                if not data or b"CLOSE" in data:
                    return
                try:
                    conn.sendall(data)
                except OSError:
                    return

    def wait_for(self, predicate: Callable[[], bool], timeout_s: float = IO_TIMEOUT_S) -> None:
        with self.changed:
            assert self.changed.wait_for(predicate, timeout_s), "the echo server did not see it in time"

    def bytes_received(self) -> bytes:
        with self.changed:
            return b"".join(data for _, data in self.received)

    def close(self) -> None:
        self.listener.close()
        with self.changed:
            for conn in self.sockets:
                with contextlib.suppress(OSError):
                    conn.close()


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    server = EchoServer()
    yield server
    server.close()


# ------------------------------------------------------------------------------------------- clients


def port_of(proxy: dict[str, Any]) -> int:
    return int(proxy["listen"].rsplit(":", 1)[1])


def connect(proxy: dict[str, Any] | int) -> socket.socket:
    port = proxy if isinstance(proxy, int) else port_of(proxy)
    sock = socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT_S)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def recv_exact(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, f"EOF after {len(data)} of {size} bytes"
        data += chunk
    return data


def round_trip(sock: socket.socket, payload: bytes = b"ping") -> float:
    started = time.monotonic()
    sock.sendall(payload)
    assert recv_exact(sock, len(payload)) == payload
    return time.monotonic() - started


def read_to_eof(sock: socket.socket, timeout_s: float = IO_TIMEOUT_S) -> bytes:
    sock.settimeout(timeout_s)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def nothing_arrives(sock: socket.socket, for_s: float) -> bool:
    """True if neither data nor EOF arrives within `for_s` (the connection is held open)."""
    sock.settimeout(for_s)
    try:
        sock.recv(1)
    except TimeoutError:
        return True
    return False


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT_S).close()
    except ConnectionRefusedError:
        return True
    return False


def closed_by_peer(sock: socket.socket) -> bool:
    """True once the proxy has closed this connection (EOF or reset), within the I/O timeout."""
    sock.settimeout(IO_TIMEOUT_S)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        return True
    return True


# ----------------------------------------------------------------------------------------------- API


def test_version(api: Api) -> None:
    reply = api.call("GET", "/version")
    assert reply.status == 200
    text = reply.body.decode().strip()
    version = json.loads(text)["version"] if text.startswith("{") else text  # < 2.7 answered plain text
    assert version.startswith("2.")


def test_create_show_and_list_proxies(api: Api, echo: EchoServer) -> None:
    reply = api.call("POST", "/proxies", {"name": api.name("a"), "listen": "127.0.0.1:0",
                                          "upstream": f"127.0.0.1:{echo.port}"})
    assert reply.status == 201
    assert reply.headers["content-type"].startswith("application/json")
    proxy = reply.json()
    assert list(proxy) == ["name", "listen", "upstream", "enabled", "toxics"]
    assert proxy["name"] == api.prefix + "a" and proxy["upstream"] == f"127.0.0.1:{echo.port}"
    assert proxy["enabled"] is True and proxy["toxics"] == []
    assert proxy["listen"].startswith("127.0.0.1:") and port_of(proxy) != 0  # port 0: the real port is shown

    shown = api.call("GET", f"/proxies/{proxy['name']}")
    assert shown.status == 200 and shown.json() == proxy
    listing = api.call("GET", "/proxies")
    assert listing.status == 200 and listing.json()[proxy["name"]] == proxy

    disabled = api.create("b", echo.port, enabled=False)
    assert disabled["enabled"] is False and disabled["listen"] == "127.0.0.1:0"


def test_create_proxy_errors(api: Api, echo: EchoServer) -> None:
    upstream = f"127.0.0.1:{echo.port}"
    assert_error(api.call("POST", "/proxies", {"listen": "127.0.0.1:0", "upstream": upstream}),
                 400, "missing required field: name")
    assert_error(api.call("POST", "/proxies", {"name": api.name("x"), "listen": "127.0.0.1:0"}),
                 400, "missing required field: upstream")
    for raw in (b"", b"{not json", b'{"name": 5}'):
        reply = api.call("POST", "/proxies", raw=raw)
        assert reply.status == 400, raw
        assert error_body(reply)["error"].startswith("bad request body"), raw
    proxy = api.create("dup", echo.port)
    assert_error(api.call("POST", "/proxies", {"name": proxy["name"], "listen": "127.0.0.1:0", "upstream": upstream}),
                 409, "proxy already exists")


def test_unknown_proxy_and_toxic_are_404(api: Api, echo: EchoServer) -> None:
    missing = f"/proxies/{api.prefix}missing"
    for method, path, body in [("GET", missing, None), ("POST", missing, {"enabled": False}), ("DELETE", missing, None),
                               ("GET", f"{missing}/toxics", None), ("POST", f"{missing}/toxics", {"type": "latency"}),
                               ("GET", f"{missing}/toxics/latency_downstream", None),
                               ("DELETE", f"{missing}/toxics/latency_downstream", None)]:
        assert_error(api.call(method, path, body), 404, "proxy not found")
    proxy = api.create("p", echo.port)
    toxic = f"/proxies/{proxy['name']}/toxics/nope"
    for method, body in [("GET", None), ("POST", {"attributes": {}}), ("DELETE", None)]:
        assert_error(api.call(method, toxic, body), 404, "toxic not found")


def test_routes_and_methods(api: Api) -> None:
    assert api.call("GET", "/nope").status == 404
    assert api.call("PUT", "/proxies", {}).status == 405
    assert api.call("GET", "/reset").status == 405
    assert api.call("GET", "/populate").status == 405
    browser = api.call("GET", "/proxies", headers={"User-Agent": "Mozilla/5.0 (X11; Linux x86_64)"})
    assert browser.status == 403 and browser.body.strip() == b"User agent not allowed"  # Toxiproxy >= 2.1.2


def test_delete_proxy_stops_listening_and_closes_connections(api: Api, echo: EchoServer) -> None:
    proxy = api.create("p", echo.port)
    with connect(proxy) as sock:
        round_trip(sock)
        reply = api.call("DELETE", f"/proxies/{proxy['name']}")
        assert reply.status == 204 and reply.body == b""
        assert closed_by_peer(sock)
    assert refused(port_of(proxy))
    assert_error(api.call("GET", f"/proxies/{proxy['name']}"), 404, "proxy not found")
    assert_error(api.call("DELETE", f"/proxies/{proxy['name']}"), 404, "proxy not found")


def test_toxic_crud_and_defaults(api: Api, echo: EchoServer) -> None:
    proxy = api.create("p", echo.port)
    base = f"/proxies/{proxy['name']}/toxics"
    created = api.toxic(proxy, "latency", attributes={"latency": 100})
    assert created == {"attributes": {"latency": 100, "jitter": 0}, "name": "latency_downstream",
                       "type": "latency", "stream": "downstream", "toxicity": 1}
    assert api.call("GET", base).json() == [created]
    assert api.call("GET", f"{base}/latency_downstream").json() == created
    assert api.call("GET", f"/proxies/{proxy['name']}").json()["toxics"] == [created]

    updated = api.call("POST", f"{base}/latency_downstream", {"attributes": {"latency": 250}})
    assert updated.status == 200
    assert updated.json()["attributes"] == {"latency": 250, "jitter": 0}  # unset attributes are kept
    patched = api.call("PATCH", f"{base}/latency_downstream", {"toxicity": 0.5})
    assert patched.status == 200
    assert patched.json()["toxicity"] == 0.5 and patched.json()["attributes"]["latency"] == 250

    named = api.toxic(proxy, "limit_data", name="cap", stream="upstream", toxicity=0.25, attributes={"bytes": 9})
    assert named == {"attributes": {"bytes": 9}, "name": "cap", "type": "limit_data", "stream": "upstream",
                     "toxicity": 0.25}
    for toxic_type, attributes in [("bandwidth", {"rate": 0}), ("slow_close", {"delay": 0}),
                                   ("timeout", {"timeout": 0}), ("reset_peer", {"timeout": 0}),
                                   ("slicer", {"average_size": 0, "size_variation": 0, "delay": 0})]:
        toxic = api.toxic(proxy, toxic_type, stream="upstream")
        assert toxic["name"] == f"{toxic_type}_upstream" and toxic["attributes"] == attributes

    reply = api.call("DELETE", f"{base}/cap")
    assert reply.status == 204 and reply.body == b""
    assert_error(api.call("GET", f"{base}/cap"), 404, "toxic not found")
    assert_error(api.call("DELETE", f"{base}/cap"), 404, "toxic not found")


def test_toxic_errors(api: Api, echo: EchoServer) -> None:
    proxy = api.create("p", echo.port)
    base = f"/proxies/{proxy['name']}/toxics"
    api.toxic(proxy, "latency")
    assert_error(api.call("POST", base, {"type": "latency"}), 409, "toxic already exists")
    assert_error(api.call("POST", base, {"type": "latency", "name": "other", "stream": "sideways"}),
                 400, "stream was invalid, can be either upstream or downstream")
    assert_error(api.call("POST", base, {"type": "no_such_toxic"}), 400, "invalid toxic type")
    assert_error(api.call("POST", base, {}), 400, "invalid toxic type")
    for raw in (b"", b"[", b'{"type": "latency", "name": "x", "attributes": {"latency": "slow"}}',
                b'{"type": "latency", "name": "y", "toxicity": "high"}'):
        reply = api.call("POST", base, raw=raw)
        assert reply.status == 400 and error_body(reply)["error"].startswith("bad request body"), raw
    reply = api.call("POST", f"{base}/latency_downstream", raw=b'{"attributes": {"latency": 1.5}}')
    assert reply.status == 400 and error_body(reply)["error"].startswith("bad request body")
    assert [t["name"] for t in api.call("GET", base).json()] == ["latency_downstream"]


def test_toxic_listing_is_upstream_first_in_order_of_addition(api: Api, echo: EchoServer) -> None:
    proxy = api.create("p", echo.port)
    api.toxic(proxy, "latency", name="d1")
    api.toxic(proxy, "latency", name="u1", stream="upstream")
    api.toxic(proxy, "slicer", name="d2", attributes={"average_size": 10})
    api.toxic(proxy, "bandwidth", name="u2", stream="upstream", attributes={"rate": 1000})
    names = [t["name"] for t in api.call("GET", f"/proxies/{proxy['name']}/toxics").json()]
    assert names == ["u1", "u2", "d1", "d2"]


def test_reset_enables_proxies_and_removes_toxics(api: Api, echo: EchoServer) -> None:
    proxy = api.create("p", echo.port)
    api.toxic(proxy, "timeout", attributes={"timeout": 0})
    assert api.call("POST", f"/proxies/{proxy['name']}", {"enabled": False}).json()["enabled"] is False
    reply = api.call("POST", "/reset")
    assert reply.status == 204 and reply.body == b""
    after = api.call("GET", f"/proxies/{proxy['name']}").json()
    assert after["enabled"] is True and after["toxics"] == [] and after["listen"] == proxy["listen"]
    with connect(after) as sock:
        assert round_trip(sock) < 1.0


def test_populate(api: Api, echo: EchoServer) -> None:
    upstream = f"127.0.0.1:{echo.port}"
    first = api.call("POST", "/populate", [{"name": api.name("a"), "listen": "127.0.0.1:0", "upstream": upstream},
                                           {"name": api.name("b"), "listen": "127.0.0.1:0", "upstream": upstream,
                                            "enabled": False}])
    assert first.status == 201
    a, b = first.json()["proxies"]
    assert list(first.json()) == ["proxies"]
    assert a["enabled"] is True and b["enabled"] is False and port_of(a) != 0
    api.toxic(a, "latency", attributes={"latency": 10})

    # The same listen and upstream: the proxy is left as it is, toxics included.
    again = api.call("POST", "/populate", [{"name": a["name"], "listen": a["listen"], "upstream": upstream}])
    assert again.status == 201
    assert again.json()["proxies"][0]["listen"] == a["listen"]
    assert len(again.json()["proxies"][0]["toxics"]) == 1
    # A different upstream: the proxy is replaced.
    other = EchoServer()
    try:
        replaced = api.call("POST", "/populate", [{"name": a["name"], "listen": a["listen"],
                                                   "upstream": f"127.0.0.1:{other.port}"}])
        assert replaced.status == 201
        assert replaced.json()["proxies"][0]["upstream"] == f"127.0.0.1:{other.port}"
        with connect(replaced.json()["proxies"][0]) as sock:
            round_trip(sock)
        other.wait_for(lambda: other.accepted == 1)
    finally:
        other.close()

    assert_error(api.call("POST", "/populate", [{"listen": "127.0.0.1:0", "upstream": upstream}]),
                 400, "missing required field: name at proxy 1")
    reply = api.call("POST", "/populate", [{"name": api.name("c"), "listen": "127.0.0.1:0", "upstream": upstream},
                                           {"name": api.name("d"), "listen": "127.0.0.1:0"}])
    assert reply.status == 400 and reply.json()["error"] == "missing required field: upstream at proxy 2"
    assert api.call("GET", f"/proxies/{api.prefix}c").status == 404  # nothing is created from a bad list
    reply = api.call("POST", "/populate", raw=b"{")
    assert reply.status == 400 and reply.json()["error"].startswith("bad request body")


def test_non_loopback_addresses_are_refused(api: Api, echo: EchoServer, embedded_only: None) -> None:
    upstream = f"127.0.0.1:{echo.port}"
    for listen in ("0.0.0.0:0", ":0", "10.1.2.3:0", "example.com:0", "[::]:0"):
        reply = api.call("POST", "/proxies", {"name": api.name("x"), "listen": listen, "upstream": upstream})
        assert reply.status == 400, listen
        assert "loopback" in error_body(reply)["error"], listen
    for bad_upstream in ("10.1.2.3:80", "example.com:80", "192.168.0.1:80"):
        reply = api.call("POST", "/proxies", {"name": api.name("x"), "listen": "127.0.0.1:0", "upstream": bad_upstream})
        assert reply.status == 400 and "loopback" in error_body(reply)["error"], bad_upstream
    proxy = api.create("ok", echo.port, listen="localhost:0")
    assert proxy["listen"].startswith("127.0.0.1:")
    reply = api.call("POST", f"/proxies/{proxy['name']}", {"upstream": "10.0.0.1:80"})
    assert reply.status == 400 and "loopback" in error_body(reply)["error"]
    reply = api.call("POST", "/populate", [{"name": api.name("y"), "listen": "0.0.0.0:0", "upstream": upstream}])
    assert reply.status == 400 and "loopback" in error_body(reply)["error"]
    assert api.call("GET", f"/proxies/{api.prefix}y").status == 404


def test_listen_address_in_use_is_500(api: Api, echo: EchoServer) -> None:
    proxy = api.create("a", echo.port)
    reply = api.call("POST", "/proxies", {"name": api.name("b"), "listen": proxy["listen"],
                                          "upstream": f"127.0.0.1:{echo.port}"})
    assert reply.status == 500
    assert "address already in use" in error_body(reply)["error"]


# ------------------------------------------------------------------------------------------- traffic


def test_bytes_pass_intact_without_toxics(api: Api, echo: EchoServer) -> None:
    proxy = api.create("p", echo.port)
    payload = os.urandom(1 << 20)
    with connect(proxy) as sock:
        sender = threading.Thread(target=sock.sendall, args=(payload,))
        sender.start()
        assert recv_exact(sock, len(payload)) == payload
        sender.join()
        assert round_trip(sock) < 0.5


def test_enabled_false_is_gateway_down_and_true_listens_again(api: Api, echo: EchoServer) -> None:
    proxy = api.create("p", echo.port)
    with connect(proxy) as sock:
        round_trip(sock)
        reply = api.call("POST", f"/proxies/{proxy['name']}", {"enabled": False})
        assert reply.status == 200 and reply.json()["enabled"] is False
        assert closed_by_peer(sock)
    assert refused(port_of(proxy))
    reply = api.call("POST", f"/proxies/{proxy['name']}", {"enabled": True})
    assert reply.status == 200 and reply.json()["enabled"] is True
    assert reply.json()["listen"] == proxy["listen"]  # the same port again
    with connect(proxy) as sock:
        round_trip(sock)


def test_update_upstream_moves_new_connections(api: Api, echo: EchoServer) -> None:
    proxy = api.create("p", echo.port)
    other = EchoServer()
    try:
        reply = api.call("PATCH", f"/proxies/{proxy['name']}", {"upstream": f"127.0.0.1:{other.port}"})
        assert reply.status == 200 and reply.json()["upstream"] == f"127.0.0.1:{other.port}"
        with connect(reply.json()) as sock:
            round_trip(sock, b"to-the-other")
        other.wait_for(lambda: other.bytes_received() == b"to-the-other")
        assert echo.accepted == 0
    finally:
        other.close()


def test_latency_upstream_vs_downstream(api: Api, echo: EchoServer) -> None:
    proxy = api.create("p", echo.port)
    api.toxic(proxy, "latency", stream="upstream", attributes={"latency": 150})
    with connect(proxy) as sock:
        sent = time.monotonic()
        sock.sendall(b"up")
        assert recv_exact(sock, 2) == b"up"
        back = time.monotonic() - sent
        echo.wait_for(lambda: len(echo.received) >= 1)
        arrived = echo.received[0][0] - sent
    assert 0.14 <= arrived < 0.4  # delayed on the way to the server...
    assert 0.14 <= back < 0.45  # ...and not again on the way back

    api.call("DELETE", f"/proxies/{proxy['name']}/toxics/latency_upstream")
    api.toxic(proxy, "latency", attributes={"latency": 150})
    with connect(proxy) as sock:
        sent = time.monotonic()
        sock.sendall(b"down")
        assert recv_exact(sock, 4) == b"down"
        back = time.monotonic() - sent
        echo.wait_for(lambda: len(echo.received) >= 2)
        arrived = echo.received[1][0] - sent
    assert arrived < 0.1 and 0.14 <= back < 0.45


def test_latency_jitter_is_bounded(api: Api, echo: EchoServer) -> None:
    proxy = api.create("p", echo.port)
    api.toxic(proxy, "latency", attributes={"latency": 60, "jitter": 40})
    with connect(proxy) as sock:
        delays = [round_trip(sock) for _ in range(8)]
    assert min(delays) >= 0.019 and max(delays) < 0.1 + 0.08, delays
    assert max(delays) - min(delays) > 0.005, delays  # it does vary


def test_latency_toxics_chain_and_accumulate(api: Api, echo: EchoServer) -> None:
    proxy = api.create("p", echo.port)
    api.toxic(proxy, "latency", name="first", attributes={"latency": 100})
    api.toxic(proxy, "latency", name="second", attributes={"latency": 100})
    with connect(proxy) as sock:
        assert 0.19 <= round_trip(sock) < 0.5


def test_toxics_apply_to_open_connections(api: Api, echo: EchoServer) -> None:
    proxy = api.create("p", echo.port)
    with connect(proxy) as sock:
        assert round_trip(sock) < 0.1
        api.toxic(proxy, "latency", attributes={"latency": 150})
        assert 0.14 <= round_trip(sock) < 0.45
        api.call("DELETE", f"/proxies/{proxy['name']}/toxics/latency_downstream")
        assert round_trip(sock) < 0.1


def test_bandwidth_limits_throughput(api: Api, echo: EchoServer) -> None:
    proxy = api.create("p", echo.port)
    payload = os.urandom(25_000)
    with connect(proxy) as sock:
        assert round_trip(sock, payload) < 0.3  # unlimited first
        api.toxic(proxy, "bandwidth", attributes={"rate": 50})  # 50 KB/s: 25 000 bytes take 0.5 s
        elapsed = round_trip(sock, payload)
    assert 0.45 <= elapsed < 1.5, elapsed


def test_slow_close_delays_the_close(api: Api, echo: EchoServer) -> None:
    proxy = api.create("p", echo.port)
    with connect(proxy) as sock:
        started = time.monotonic()
        sock.sendall(b"CLOSE")  # the server closes; the proxy passes the close on at once
        assert read_to_eof(sock) == b""
        assert time.monotonic() - started < 0.2
    api.toxic(proxy, "slow_close", attributes={"delay": 300})
    with connect(proxy) as sock:
        round_trip(sock)
        started = time.monotonic()
        sock.sendall(b"CLOSE")
        assert read_to_eof(sock) == b""
        assert 0.28 <= time.monotonic() - started < 1.0


def test_timeout_zero_holds_the_connection_and_drops_data(api: Api, echo: EchoServer) -> None:
    proxy = api.create("p", echo.port)
    api.toxic(proxy, "timeout", attributes={"timeout": 0})
    with connect(proxy) as sock:
        sock.sendall(b"hello")
        echo.wait_for(lambda: echo.bytes_received() == b"hello")  # upstream passes; the echo is dropped
        assert nothing_arrives(sock, 0.4)
        # Removing the toxic closes the connections it held (Toxiproxy >= 2.1.1).
        assert api.call("DELETE", f"/proxies/{proxy['name']}/toxics/timeout_downstream").status == 204
        assert read_to_eof(sock) == b""
    with connect(proxy) as sock:
        round_trip(sock)


def test_timeout_closes_after_n_ms_without_data(api: Api, echo: EchoServer) -> None:
    proxy = api.create("p", echo.port)
    api.toxic(proxy, "timeout", attributes={"timeout": 200})
    with connect(proxy) as sock:
        started = time.monotonic()
        sock.sendall(b"hello")
        assert read_to_eof(sock) == b""
        assert 0.18 <= time.monotonic() - started < 1.0


def test_reset_peer_resets_the_connection(api: Api, echo: EchoServer) -> None:
    proxy = api.create("p", echo.port)
    api.toxic(proxy, "reset_peer", attributes={"timeout": 150})
    with connect(proxy) as sock:
        started = time.monotonic()
        sock.sendall(b"hello")
        with pytest.raises(ConnectionResetError):
            read_to_eof(sock)
        assert 0.14 <= time.monotonic() - started < 1.0
    api.call("POST", f"/proxies/{proxy['name']}/toxics/reset_peer_downstream", {"attributes": {"timeout": 0}})
    with connect(proxy) as sock:
        started = time.monotonic()
        sock.sendall(b"hello")
        with pytest.raises(ConnectionResetError):
            read_to_eof(sock)
        assert time.monotonic() - started < 0.3


def test_limit_data_closes_after_n_bytes(api: Api, echo: EchoServer) -> None:
    proxy = api.create("p", echo.port)
    api.toxic(proxy, "limit_data", attributes={"bytes": 10})
    payload = bytes(range(100))
    with connect(proxy) as sock:
        sock.sendall(payload)
        assert read_to_eof(sock) == payload[:10]

    api.call("DELETE", f"/proxies/{proxy['name']}/toxics/limit_data_downstream")
    api.toxic(proxy, "limit_data", stream="upstream", attributes={"bytes": 5})
    with connect(proxy) as sock:
        sock.sendall(payload)
        assert closed_by_peer(sock)
    echo.wait_for(lambda: sum(data == b"" for _, data in echo.received) == 2)  # the server saw both closes...
    assert echo.bytes_received() == payload + payload[:5]  # ...after exactly 5 bytes of the second


def test_slicer_splits_writes(api: Api, echo: EchoServer) -> None:
    proxy = api.create("p", echo.port)
    api.toxic(proxy, "slicer", attributes={"average_size": 10, "size_variation": 5, "delay": 20_000})
    payload = os.urandom(100)
    pieces: list[bytes] = []
    with connect(proxy) as sock:
        sock.sendall(payload)
        while sum(map(len, pieces)) < len(payload):
            piece = sock.recv(1000)
            assert piece
            pieces.append(piece)
    assert b"".join(pieces) == payload
    assert len(pieces) >= 5 and max(map(len, pieces)) <= 15, [len(p) for p in pieces]


def test_toxicity_zero_has_no_effect(api: Api, echo: EchoServer) -> None:
    proxy = api.create("p", echo.port)
    api.toxic(proxy, "latency", toxicity=0, attributes={"latency": 1000})
    api.toxic(proxy, "timeout", toxicity=0.0, attributes={"timeout": 0})
    with connect(proxy) as sock:
        assert round_trip(sock) < 0.3


def test_toxicity_is_rolled_per_connection(api: Api, echo: EchoServer) -> None:
    proxy = api.create("p", echo.port)
    api.toxic(proxy, "latency", toxicity=0.5, attributes={"latency": 200})
    socks = [connect(proxy) for _ in range(16)]
    try:
        started = time.monotonic()
        arrival: dict[int, float] = {}
        with selectors.DefaultSelector() as selector:
            for index, sock in enumerate(socks):
                sock.sendall(b"x")
                selector.register(sock, selectors.EVENT_READ, index)
            while len(arrival) < len(socks) and time.monotonic() - started < IO_TIMEOUT_S:
                for key, _ in selector.select(0.5):
                    arrival[key.data] = time.monotonic() - started
                    selector.unregister(key.fileobj)
                    socks[key.data].recv(1)
        assert len(arrival) == len(socks)
        slow = [i for i, t in arrival.items() if t >= 0.19]
        assert 0 < len(slow) < len(socks), sorted(arrival.values())  # P(all or none) = 2 / 65 536
        assert all(arrival[i] < 0.15 for i in arrival if i not in slow)
        for index in (slow[0], next(i for i in arrival if i not in slow)):  # the roll holds for the connection
            assert (round_trip(socks[index]) >= 0.19) == (index in slow)
    finally:
        for sock in socks:
            sock.close()


# ------------------------------------------------------------------------ command line (embedded only)


def test_bad_options_exit_2_naming_the_option() -> None:
    for args, option in [(["--port", "abc"], "--port"), (["--port", "70000"], "--port"), (["--bogus"], "--bogus"),
                         (["--host", "10.0.0.1"], "--host"), (["--host", "0.0.0.0"], "--host")]:
        result = subprocess.run([sys.executable, "-m", MODULE, *args], cwd=ROOT, capture_output=True, text=True,
                                timeout=30)
        assert result.returncode == 2, (args, result.stderr)
        assert result.stdout == ""
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and option in lines[0], (args, result.stderr)


def test_port_in_use_exits_3() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = subprocess.run([sys.executable, "-m", MODULE, "--port", str(port)], cwd=ROOT, capture_output=True,
                                text=True, timeout=30)
    assert result.returncode == 3, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "in use" in lines[0] and str(port) in lines[0]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_cleanly_closing_listeners_and_connections(sig: int, echo: EchoServer) -> None:
    process, ready = start_embedded("--port", "0")
    assert list(ready) == ["event", "url"] and ready["event"] == "ready"
    assert ready["url"].startswith("http://127.0.0.1:")
    try:
        api = Api(ready["url"])
        proxy = api.create("p", echo.port)
        with connect(proxy) as sock:
            round_trip(sock)
            process.send_signal(sig)
            assert closed_by_peer(sock)
        assert process.wait(10) == 0
        assert refused(port_of(proxy))
        assert refused(int(ready["url"].rsplit(":", 1)[1]))
        assert process.stderr is not None and process.stderr.read() == ""
    finally:
        stop_embedded(process)

