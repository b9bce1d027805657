"""harness.client.safe_close: a connection closed from outside waits for its reader to leave the selector.

The crash it prevents (libev aborting on a watcher whose file was closed under it) needs gevent and luck to
reproduce; what can be checked is the order it enforces: when `close_socket()` runs the original from a
thread other than the reader, the reader has already finished.
"""

from __future__ import annotations

import base64
import hashlib
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.sync.client import connect

from harness.client import safe_close


@pytest.fixture
def silent_server() -> Iterator[int]:
    """Accepts the WebSocket upgrade, then never sends another byte (never answers a close)."""
    server = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []

    def serve() -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            request = b""
            while b"\r\n\r\n" not in request:
                request += client.recv(4096)
            key = next(line.split(b":", 1)[1].strip() for line in request.split(b"\r\n")
                       if line.lower().startswith(b"sec-websocket-key"))
            accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
            client.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                           b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")
            held.append(client)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    server.close()
    for client in held:
        client.close()


def test_an_outside_close_lets_the_reader_finish_first(silent_server: int, monkeypatch: pytest.MonkeyPatch) -> None:
    reader_alive_at_close: list[bool] = []
    original = safe_close._original_close_socket

    def spy(connection: Any) -> None:
        if threading.current_thread() is not connection.recv_events_thread:
            reader_alive_at_close.append(connection.recv_events_thread.is_alive())
        original(connection)

    monkeypatch.setattr(safe_close, "_original_close_socket", spy)
    safe_close.install()
    ws = connect(f"ws://127.0.0.1:{silent_server}/", compression=None, close_timeout=0.2, legacy=True)
    ws.close()  # the server never answers: close() times out and closes the socket from this thread
    assert reader_alive_at_close == [False]
    assert not ws.recv_events_thread.is_alive()
