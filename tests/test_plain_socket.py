"""harness.client.plain_socket: the accounts' WebSocket on one socket, against a `websockets.sync` server.

The server runs in a thread of this process; each test scripts what the server does with its one connection.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.server import ServerConnection, serve

from harness.backends.embedded import EmbeddedStub
from harness.client.plain_socket import connect

Handler = Callable[[ServerConnection], None]


@pytest.fixture
def server() -> Iterator[Callable[..., str]]:
    """`server(handler)` starts a loopback server running `handler` per connection; returns its ws:// URL."""
    started: list[object] = []

    def start(handler: Handler) -> str:
        ws_server = serve(handler, "127.0.0.1", 0, ping_interval=None)
        thread = threading.Thread(target=ws_server.serve_forever, daemon=True)
        thread.start()
        started.append((ws_server, thread))
        port = ws_server.socket.getsockname()[1]
        return f"ws://127.0.0.1:{port}/"

    yield start
    for ws_server, thread in started:  # type: ignore[misc]
        ws_server.shutdown()
        thread.join(5)


def fd_set() -> dict[int, str]:
    """This process's open descriptors, with what each points to."""
    found = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            found[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue  # the listing's own descriptor, closed since
    return found


def open_fds() -> int:
    return len(fd_set())


def echo(ws: ServerConnection) -> None:
    for message in ws:
        ws.send(message)


def test_a_message_goes_and_comes_back(server: Callable[..., str]) -> None:
    ws = connect(server(echo), open_timeout=5, close_timeout=1)
    ws.send("hello")
    assert ws.recv(timeout=5) == "hello"
    ws.close()
    assert ws.close_code == 1000


def test_a_connection_is_one_descriptor(tmp_path: Path) -> None:
    with EmbeddedStub(["--profile", "current"], log_path=tmp_path / "stub.log") as stub:
        before = fd_set()
        connections = [connect(stub.url, open_timeout=10, close_timeout=1) for _ in range(20)]
        opened = {fd: target for fd, target in fd_set().items() if before.get(fd) != target}
        # each its socket, and nothing else: no socketpair, no reader (a set: another test's garbage may close one)
        assert len(opened) == 20
        assert all(target.startswith("socket:") for target in opened.values())
        for ws in connections:
            ws.close()
        assert not set(opened.items()) & set(fd_set().items())


def test_a_fragmented_message_is_one_message(server: Callable[..., str]) -> None:
    def fragments(ws: ServerConnection) -> None:
        ws.send(["par", "tial ", "text"])
        ws.send("next")
        ws.recv()

    ws = connect(server(fragments), open_timeout=5, close_timeout=1)
    assert ws.recv(timeout=5) == "partial text"
    assert ws.recv(timeout=5) == "next"
    ws.close()


def test_a_timeout_leaves_the_connection_usable(server: Callable[..., str]) -> None:
    ws = connect(server(echo), open_timeout=5, close_timeout=1)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        ws.recv(timeout=0.2)
    assert 0.15 < time.monotonic() - started < 2
    ws.send("still here")
    assert ws.recv(timeout=5) == "still here"
    ws.close()


def test_the_server_s_close_code_and_reason_reach_the_reader(server: Callable[..., str]) -> None:
    def tick_timeout(ws: ServerConnection) -> None:
        ws.close(4000, "tick timeout")

    ws = connect(server(tick_timeout), open_timeout=5, close_timeout=1)
    with pytest.raises(ConnectionClosed):
        ws.recv(timeout=5)
    assert (ws.close_code, ws.close_reason) == (4000, "tick timeout")
    with pytest.raises(ConnectionClosed):
        ws.send("too late")


def test_the_server_s_ping_is_answered_while_reading(server: Callable[..., str]) -> None:
    answered = threading.Event()

    def pinger(ws: ServerConnection) -> None:
        if ws.ping().wait(5):
            answered.set()
        ws.send("done")
        ws.recv()

    ws = connect(server(pinger), open_timeout=5, close_timeout=1)
    assert ws.recv(timeout=5) == "done"
    assert answered.is_set()
    ws.close()


def test_a_close_from_another_thread_wakes_the_reader(server: Callable[..., str]) -> None:
    ws = connect(server(echo), open_timeout=5, close_timeout=1)
    outcome: list[BaseException] = []

    def read() -> None:
        try:
            ws.recv(timeout=30)
        except BaseException as exc:  # noqa: BLE001 - what the reader saw is the assertion
            outcome.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    time.sleep(0.2)
    started = time.monotonic()
    ws.close(1000, "stop")
    reader.join(5)
    assert not reader.is_alive() and time.monotonic() - started < 3
    assert len(outcome) == 1 and isinstance(outcome[0], ConnectionClosed)


def test_a_refused_upgrade_raises_invalid_status_and_leaves_no_descriptor() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)

        def refuse() -> None:  # what the gateway's pre-auth budget answers: 503 before the upgrade
            conn, _ = listener.accept()
            with conn:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 5\r\n\r\nbusy\n")

        refuser = threading.Thread(target=refuse)
        refuser.start()
        before = open_fds()
        with pytest.raises(InvalidStatus) as refused:
            connect(f"ws://127.0.0.1:{listener.getsockname()[1]}/", open_timeout=5, close_timeout=1)
        refuser.join(5)
        assert refused.value.response.status_code == 503
        assert open_fds() == before


def test_a_server_that_never_answers_the_upgrade_times_out() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    try:
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            connect(f"ws://127.0.0.1:{listener.getsockname()[1]}/", open_timeout=0.3, close_timeout=1)
        assert time.monotonic() - started < 3
    finally:
        listener.close()

