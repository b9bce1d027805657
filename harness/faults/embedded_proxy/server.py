"""The embedded Toxiproxy's HTTP/1.1 server, and `EmbeddedToxiproxy`, which wires the API, runner and server.

The server is a thin asyncio layer over `ToxiproxyApi`: it reads requests (keep-alive, Content-Length or
chunked bodies, `Expect: 100-continue`), hands each to the API and writes the answer with the headers
Toxiproxy's Go server adds (a request id, Date, Content-Length). Everything Toxiproxy-specific is the
API's; what is here is HTTP.
"""

from __future__ import annotations

import asyncio
import http
import secrets
from email.utils import formatdate
from urllib.parse import urlsplit

from harness.faults.embedded_proxy.addresses import LOOPBACK_RULE, join_host_port, loopback_ip
from harness.faults.embedded_proxy.api import PLAIN_TEXT, Request, Response, ToxiproxyApi
from harness.faults.embedded_proxy.proxy import LISTEN_BACKLOG, AsyncioProxyRunner

MAX_BODY = 16 * 1024 * 1024
BODY_TOO_LARGE = Response(413, b"request body too large\n", PLAIN_TEXT)
MALFORMED_REQUEST_LINE = Response(400, b"400 Bad Request", PLAIN_TEXT)


class HttpServer:
    """A small HTTP/1.1 server (keep-alive, Content-Length or chunked bodies) in front of a `ToxiproxyApi`."""

    def __init__(self, api: ToxiproxyApi) -> None:
        self.api = api
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.StreamWriter] = set()
        self.url = ""

    async def start(self, host: str, port: int) -> str:
        self._server = await asyncio.start_server(self._serve, host, port, reuse_address=True, backlog=LISTEN_BACKLOG)
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
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            self._clients.discard(writer)
            writer.close()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        line = await reader.readline()
        if not line.strip():
            return False
        try:
            method, target, version = line.decode("latin-1").split()
        except ValueError:
            await self._send(writer, MALFORMED_REQUEST_LINE, "HTTP/1.1", close=True)
            return False
        headers: dict[str, str] = {}
        while True:
            header = await reader.readline()
            if header in (b"\r\n", b"\n", b""):
                break
            key, _, value = header.decode("latin-1").partition(":")
            headers[key.strip().lower()] = value.strip()
        if headers.get("expect", "").lower() == "100-continue":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        body = await self._body(reader, headers)
        connection = headers.get("connection", "").lower()
        close = connection == "close" or (version == "HTTP/1.0" and connection != "keep-alive")
        if body is None:
            response = BODY_TOO_LARGE
            close = True
        else:
            response = self.api.handle(Request(method, urlsplit(target).path, body, headers))
        await self._send(writer, response, version, close=close)
        return not close

    @staticmethod
    async def _body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes | None:
        if "chunked" in headers.get("transfer-encoding", "").lower():
            parts: list[bytes] = []
            total = 0
            while True:
                size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                total += size
                if total > MAX_BODY:
                    return None
                parts.append(await reader.readexactly(size))
                await reader.readline()
        length = int(headers.get("content-length", "0") or "0")
        if length > MAX_BODY:
            return None
        return await reader.readexactly(length) if length > 0 else b""

    @staticmethod
    async def _send(writer: asyncio.StreamWriter, response: Response, version: str, *, close: bool) -> None:
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
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + response.body)
        await writer.drain()


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
