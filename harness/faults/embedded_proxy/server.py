"""The embedded Toxiproxy's HTTP/1.1 server, and `EmbeddedToxiproxy`, which wires the API, runner and server.

The server is a thin asyncio layer over `ToxiproxyApi`: it reads requests (keep-alive and pipelining,
Content-Length or chunked bodies, `Expect: 100-continue`), hands each to the API and writes the answer with
the headers Toxiproxy's Go server adds (a request id, Date, Content-Length). Everything Toxiproxy-specific is
the API's; what is here is HTTP. Whatever a client sends, it gets an answer before the connection closes
(unless it is gone): a request Go's net/http cannot read is a plain `400 Bad Request` (`431` for headers over
its 1 MiB limit) followed by a close, as Go writes them; a body that ends early or has a bad chunk is the
API's JSON 400 `bad request body: ...`, since in Toxiproxy that is the handler's JSON decoder failing. The one
deliberate difference: a Transfer-Encoding other than chunked is a 400 here, where Go answers 501.
"""

from __future__ import annotations

import asyncio
import http
import re
import secrets
import sys
from dataclasses import dataclass
from email.utils import formatdate
from urllib.parse import urlsplit

from harness.faults.embedded_proxy.addresses import LOOPBACK_RULE, join_host_port, loopback_ip
from harness.faults.embedded_proxy.api import PLAIN_TEXT, Request, Response, ToxiproxyApi, error_response
from harness.faults.embedded_proxy.errors import ApiError, bad_body
from harness.faults.embedded_proxy.proxy import LISTEN_BACKLOG, AsyncioProxyRunner

MAX_BODY = 16 * 1024 * 1024
# Go's http.DefaultMaxHeaderBytes (1 MiB), plus the 4096 bytes of slack its server reads beyond it.
MAX_HEADER_BYTES = (1 << 20) + 4096
BODY_TOO_LARGE = Response(413, b"request body too large\n", PLAIN_TEXT)
# What Go's server writes, and then closes, for a request it cannot read (net/http server.go).
MALFORMED_REQUEST_LINE = Response(400, b"400 Bad Request", PLAIN_TEXT)
HEADERS_TOO_LARGE = Response(431, b"431 Request Header Fields Too Large", PLAIN_TEXT)
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # an HTTP method or header name (RFC 9110 token)
_VERSION = re.compile(r"HTTP/1\.[0-9]")
_CONTENT_LENGTH = re.compile(r"[0-9]{1,19}")
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,16}")


class Unreadable(Exception):
    """The request cannot be read as HTTP/1.1: answer `response` and close, as Go's server does."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status)
        self.response = response


def _bad_request(reason: str) -> Unreadable:
    return Unreadable(Response(400, f"400 Bad Request: {reason}".encode(), PLAIN_TEXT))


@dataclass
class _Head:
    method: str
    path: str  # the request target's path, percent-encoded, without the query
    version: str
    headers: dict[str, str]


class HttpServer:
    """A small HTTP/1.1 server (keep-alive, Content-Length or chunked bodies) in front of a `ToxiproxyApi`."""

    def __init__(self, api: ToxiproxyApi) -> None:
        self.api = api
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.StreamWriter] = set()
        self.url = ""

    async def start(self, host: str, port: int) -> str:
        # The reader's line limit is the header limit, so an over-long line is a 431 and not a dropped connection.
        self._server = await asyncio.start_server(self._serve, host, port, reuse_address=True, backlog=LISTEN_BACKLOG,
                                                  limit=MAX_HEADER_BYTES)
        bound = self._server.sockets[0].getsockname()
        self.url = f"http://{join_host_port(host, int(bound[1]))}"
        return self.url

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._clients):
            writer.transport.abort()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._clients.add(writer)
        try:
            while await self._one(reader, writer):
                pass
        except OSError:
            pass  # the client went away: there is no one left to answer
        finally:
            self._clients.discard(writer)
            writer.close()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Read and answer one request; whether to read another on this connection."""
        try:
            head = await self._head(reader)
        except Unreadable as exc:
            await self._send(writer, exc.response, "HTTP/1.1", close=True)
            return False
        if head is None:
            return False
        connection = head.headers.get("connection", "").lower()
        close = connection == "close" or (head.version == "HTTP/1.0" and connection != "keep-alive")
        if head.headers.get("expect", "").lower() == "100-continue":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        try:
            body = await self._body(reader, head.headers)
        except Unreadable as exc:
            await self._send(writer, exc.response, head.version, close=True)
            return False
        except ApiError as error:
            # The body ended early or its chunks are broken: in Toxiproxy the handler's JSON decoder sees it.
            await self._send(writer, error_response(error), head.version, close=True)
            return False
        if body is None:
            response, close = BODY_TOO_LARGE, True
        else:
            response = self._answer(Request(head.method, head.path, body, head.headers))
        await self._send(writer, response, head.version, close=close, head_only=head.method == "HEAD")
        return not close

    def _answer(self, request: Request) -> Response:
        try:
            return self.api.handle(request)
        except Exception as exc:
            # The last resort: a bug in the API answers a 500 (the fuzz tests fail on it) instead of a silent drop.
            print(f"embedded_proxy: error: {request.method} {request.path[:200]}: {exc!r}", file=sys.stderr, flush=True)
            return error_response(ApiError(f"internal error: {type(exc).__name__}", 500))

    @staticmethod
    async def _head(reader: asyncio.StreamReader) -> _Head | None:
        """The request line and headers; None at a clean end of the stream before a request."""
        size = 0
        while True:
            line = await _line(reader)
            if not line:
                return None
            size += len(line)
            if line.strip(b"\r\n"):
                break  # blank lines before a request line are skipped (RFC 9112 section 2.2)
            if size > MAX_HEADER_BYTES:
                raise Unreadable(HEADERS_TOO_LARGE)
        parts = line.decode("latin-1").rstrip("\r\n").split(" ")
        if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]) or not parts[1]:
            raise Unreadable(MALFORMED_REQUEST_LINE)
        method, target, version = parts
        if not _VERSION.fullmatch(version):
            raise _bad_request("malformed HTTP version")
        path = _path(target)
        if path is None:
            raise Unreadable(MALFORMED_REQUEST_LINE)
        headers: dict[str, str] = {}
        while True:
            line = await _line(reader)
            size += len(line)
            if size > MAX_HEADER_BYTES:
                raise Unreadable(HEADERS_TOO_LARGE)
            if line in (b"\r\n", b"\n", b""):
                break
            key, colon, value = line.decode("latin-1").partition(":")
            if not colon or not _TOKEN.fullmatch(key):
                raise _bad_request("malformed MIME header line")
            key, value = key.lower(), value.strip(" \t\r\n")
            if key == "content-length" and headers.get(key, value) != value:
                raise _bad_request("multiple Content-Length headers")  # Go's words for differing values
            headers[key] = value if key not in headers or key == "content-length" else f"{headers[key]}, {value}"
        return _Head(method, path, version, headers)

    @staticmethod
    async def _body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes | None:
        """The request body; None when it is over MAX_BODY. Raises ApiError (a JSON 400) when it ends early."""
        transfer_encoding = headers.get("transfer-encoding")
        try:
            if transfer_encoding is not None:
                if transfer_encoding.lower() != "chunked":
                    raise _bad_request("unsupported transfer encoding")
                return await _chunked_body(reader)
            length_text = headers.get("content-length", "0")
            if not _CONTENT_LENGTH.fullmatch(length_text):
                raise _bad_request(f"bad Content-Length {length_text[:40]!r}")
            length = int(length_text)
            if length > MAX_BODY:
                return None
            return await reader.readexactly(length) if length > 0 else b""
        except asyncio.IncompleteReadError:
            raise bad_body("unexpected EOF") from None

    @staticmethod
    async def _send(writer: asyncio.StreamWriter, response: Response, version: str, *, close: bool,
                    head_only: bool = False) -> None:
        """Write `response`; `head_only` (a HEAD request) leaves the body out but not its Content-Length."""
        reason = http.HTTPStatus(response.status).phrase
        lines = [f"{'HTTP/1.0' if version == 'HTTP/1.0' else 'HTTP/1.1'} {response.status} {reason}"]
        if response.content_type is not None:
            lines.append(f"Content-Type: {response.content_type}")
        lines += [f"{key}: {value}" for key, value in response.headers]
        lines.append(f"X-Toxiproxy-Request-Id: {secrets.token_hex(10)}")
        lines.append(f"Date: {formatdate(usegmt=True)}")
        if response.status != 204:
            lines.append(f"Content-Length: {len(response.body)}")
        if close:
            lines.append("Connection: close")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (b"" if head_only else response.body))
        await writer.drain()


async def _line(reader: asyncio.StreamReader) -> bytes:
    """One line, with its newline (b"" at the end of the stream); a line over the header limit is a 431."""
    try:
        return await reader.readline()
    except ValueError:  # StreamReader's limit, which is MAX_HEADER_BYTES
        raise Unreadable(HEADERS_TOO_LARGE) from None


async def _chunked_body(reader: asyncio.StreamReader) -> bytes | None:
    parts: list[bytes] = []
    total = 0
    while True:
        size_line = (await _line(reader)).split(b";", 1)[0].strip()
        if not _CHUNK_SIZE.fullmatch(size_line):
            raise bad_body("invalid byte in chunk length")  # Go's chunked reader's words
        size = int(size_line, 16)
        if size == 0:
            while (await _line(reader)) not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return b"".join(parts)
        total += size
        if total > MAX_BODY:
            return None
        parts.append(await reader.readexactly(size))
        if (await reader.readexactly(1)) == b"\r":
            await reader.readexactly(1)


def _path(target: str) -> str | None:
    """The path of a request target (origin form `/a?b`, absolute form `http://host/a`, or `*`), query left out;
    None for a target Go's url.ParseRequestURI refuses (a bracketed host left open, say)."""
    if target.startswith("/") or target == "*":
        return target.split("?", 1)[0]
    try:
        parts = urlsplit(target)
    except ValueError:
        return None
    if not parts.scheme or not parts.netloc:
        return None
    return parts.path or "/"


class EmbeddedToxiproxy:
    """In-process use: `server = EmbeddedToxiproxy(); url = await server.start(); ...; await server.close()`."""

    def __init__(self) -> None:
        self.runner = AsyncioProxyRunner()
        self.api = ToxiproxyApi(self.runner)
        self.http = HttpServer(self.api)

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        ip = loopback_ip(host)
        if ip is None:
            raise ValueError(f"--host {host!r} is not loopback: {LOOPBACK_RULE}")
        return await self.http.start(ip, port)

    async def close(self) -> None:
        self.http.close()
        self.runner.close()
