"""A client WebSocket on one plain socket, driven by websockets' Sans-I/O `ClientProtocol`: no reader thread.

`websockets.sync` gives every connection a reader thread (a greenlet under gevent), a socketpair to wake it
and a `selectors` poll on raw descriptors: three descriptors and a greenlet per connection, which capped one
harness process at about 6,600 accounts under this machine's limit of 20,000 open files, and which gevent
can only close safely with care (libev aborts on a watcher whose descriptor was closed under it). Here the
caller's own `recv` reads the socket: one descriptor per connection, nothing running between calls, and a
close from another greenlet or thread shuts the socket down, which wakes a reader cleanly.

It offers what the harness uses of `websockets.sync.client.ClientConnection`, with the same exceptions:
`connect` raises `InvalidStatus` / `InvalidHandshake` / `OSError` / `TimeoutError`; `recv(timeout)` returns
one text message or raises `TimeoutError` or `ConnectionClosed`; `send`; `close(code, reason)`; and
`close_code` / `close_reason` once closed. The server's pings are answered while a `recv` is reading, as the
clients it stands for always are (they hold a read open between requests). Plain sockets are gevent's when
Locust has patched the process, so many connections share one thread there; elsewhere they block.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections import deque
from typing import Any

from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import CLOSED, OPEN
from websockets.uri import parse_uri

READ_CHUNK = 65536


class PlainSocketConnection:
    def __init__(self, sock: socket.socket, protocol: ClientProtocol, close_timeout_s: float) -> None:
        self._sock = sock
        self._protocol = protocol
        self._close_timeout_s = close_timeout_s
        self._messages: deque[str] = deque()
        self._fragments: list[bytes] = []
        self._socket_closed = False
        self._reading = False  # a recv is reading the socket: close() leaves the reading to it
        self._closed = threading.Event()

    # -- what a ClientConnection offers

    def __enter__(self) -> PlainSocketConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def close_code(self) -> int | None:
        return self._protocol.close_code

    @property
    def close_reason(self) -> str | None:
        return self._protocol.close_reason

    def send(self, message: str) -> None:
        if self._protocol.state is not OPEN:
            raise self._closed_error()
        self._protocol.send_text(message.encode())
        self._flush()

    def recv(self, timeout: float | None = None) -> str:
        """The next text message; TimeoutError when `timeout` seconds pass first; ConnectionClosed once closed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        self._reading = True
        try:
            while not self._messages:
                if self._protocol.state is CLOSED or self._socket_closed:
                    raise self._closed_error()
                self._read_once(deadline)
        finally:
            self._reading = False
        return self._messages.popleft()

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Start the closing handshake, wait up to the close timeout for the server's close, then close the socket."""
        if self._protocol.state is OPEN:
            self._protocol.send_close(code, reason)
            with contextlib.suppress(OSError):
                self._flush()
            if self._reading:  # the reader sees the server's close and closes the socket
                self._closed.wait(self._close_timeout_s)
            else:
                deadline = time.monotonic() + self._close_timeout_s
                with contextlib.suppress(OSError, TimeoutError):
                    while self._protocol.state is not CLOSED and not self._socket_closed:
                        self._read_once(deadline)
        self._close_socket()

    # -- the socket

    def _read_once(self, deadline: float | None) -> None:
        """One read from the socket, fed to the protocol; raises TimeoutError past `deadline`."""
        try:
            data = self._recv_chunk(deadline)
        except TimeoutError:
            raise
        except OSError:
            data = b""  # reset, or shut down by close() from elsewhere: the end of the stream
        if self._socket_closed:
            return  # closed under this read by another greenlet or thread
        events = self._feed(data)
        with contextlib.suppress(OSError):
            self._flush()  # pongs, the close frame's echo, the end of our stream
        self._take_messages(events)
        if self._protocol.state is CLOSED:
            self._close_socket()

    def _recv_chunk(self, deadline: float | None) -> bytes:
        """What one read of the socket gives (b"" at the end of the stream); TimeoutError past `deadline`."""
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            self._sock.settimeout(remaining)
        else:
            self._sock.settimeout(None)
        return self._sock.recv(READ_CHUNK)

    def _feed(self, data: bytes) -> list[Any]:
        """`data` (or the end of the stream, when empty) given to the protocol: the events it makes of it."""
        if data:
            self._protocol.receive_data(data)
        else:
            self._protocol.receive_eof()
        return self._protocol.events_received()

    def _take_messages(self, events: list[Any]) -> None:
        for frame in events:
            if isinstance(frame, Frame) and frame.opcode in (Opcode.TEXT, Opcode.BINARY, Opcode.CONT):
                self._fragments.append(bytes(frame.data))
                if frame.fin:
                    self._messages.append(b"".join(self._fragments).decode())
                    self._fragments = []

    def _flush(self) -> None:
        for data in self._protocol.data_to_send():
            if data:
                self._sock.sendall(data)
            else:
                self._sock.shutdown(socket.SHUT_WR)

    def _close_socket(self) -> None:
        if self._socket_closed:
            return
        self._socket_closed = True
        self._closed.set()
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes a recv blocked in another greenlet or thread
        self._sock.close()
        if self._protocol.state is not CLOSED:
            self._protocol.receive_eof()

    def _closed_error(self) -> ConnectionClosed:
        if self._protocol.state is not CLOSED:
            self._protocol.receive_eof()
        return self._protocol.close_exc


def connect(url: str, *, open_timeout: float, close_timeout: float,
            max_size: int | None = None) -> PlainSocketConnection:
    """Open `url` (ws:// only) within `open_timeout` seconds: TCP, then the HTTP upgrade; no compression."""
    uri = parse_uri(url)
    if uri.secure:
        raise InvalidHandshake("wss:// is not supported by the harness's client; loopback targets use ws://")
    deadline = time.monotonic() + open_timeout
    sock = socket.create_connection((uri.host, uri.port), timeout=open_timeout)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        protocol = ClientProtocol(uri, max_size=max_size)
        protocol.send_request(protocol.connect())
        connection = PlainSocketConnection(sock, protocol, close_timeout)
        connection._flush()
        response = _handshake_response(connection, deadline)
        if protocol.handshake_exc is not None:
            raise protocol.handshake_exc
        if response is None:
            raise InvalidHandshake("connection closed during the opening handshake")
        connection._flush()  # the pong to a ping that came with the response
    except BaseException:
        sock.close()
        raise
    return connection


def _handshake_response(connection: PlainSocketConnection, deadline: float) -> Response | None:
    """Read until the server's HTTP response; frames that came in the same read (the challenge often does) are kept."""
    while True:
        try:
            data = connection._recv_chunk(deadline)
        except TimeoutError:
            raise TimeoutError("timed out during the opening handshake") from None
        events = connection._feed(data)
        for index, event in enumerate(events):
            if isinstance(event, Response):
                connection._take_messages(events[index + 1:])
                return event
        if not data:
            return None
