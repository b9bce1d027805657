"""The harness's Toxiproxy client: toxiproxy-python, bound to one server and given timeouts.

toxiproxy-python keeps the server's host and port as class-level globals of `APIConsumer` and calls
`requests` with no timeout, so two servers in one process would talk over each other and a hung server
would hang the run. `ToxiproxyClient` keeps the library's API (`proxies()`, `create()`, `populate()`,
`reset()`, `version()`, and proxies with `add_toxic()`, `destroy_toxic()`, `enable()`, `disable()`,
`down()`) but runs every call with its own consumer class swapped into the library, one call at a time,
with a timeout on every request. Errors come back as `FaultError` with the server's message.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import requests
import toxiproxy.proxy
import toxiproxy.server
from toxiproxy.api import APIConsumer, validate_response
from toxiproxy.exceptions import InvalidToxic, NotFound, ProxyExists

from harness.errors import BackendError

DEFAULT_TIMEOUT_S = 5.0
_swap_lock = threading.RLock()  # the library's globals are shared by the whole process


class FaultError(BackendError):
    """The Toxiproxy server refused or did not answer a fault operation."""


def _consumer_for(host: str, port: int, timeout_s: float) -> type[APIConsumer]:
    """An APIConsumer subclass bound to one server, with a timeout on every request."""

    def send(method: str) -> Any:
        def call(cls: type[APIConsumer], url: str, /, **kwargs: Any) -> Any:
            kwargs.setdefault("timeout", timeout_s)
            return validate_response(requests.request(method, f"http://{host}:{port}{url}", **kwargs))

        return classmethod(call)

    return type("BoundAPIConsumer", (APIConsumer,), {"host": host, "port": port, "get": send("GET"),
                                                     "post": send("POST"), "delete": send("DELETE")})


class ToxiproxyClient:
    def __init__(self, url: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        parts = urlsplit(url)
        if parts.hostname is None or parts.port is None:
            raise FaultError(f"TOXIPROXY_URL: expected http://HOST:PORT, got {url!r}")
        self.url = url
        self._consumer = _consumer_for(parts.hostname, parts.port, timeout_s)
        self._server = toxiproxy.server.Toxiproxy()

    @contextlib.contextmanager
    def _bound(self) -> Iterator[None]:
        with _swap_lock:
            saved = (toxiproxy.server.APIConsumer, toxiproxy.proxy.APIConsumer)
            toxiproxy.server.APIConsumer = toxiproxy.proxy.APIConsumer = self._consumer
            try:
                yield
            except (ProxyExists, NotFound, InvalidToxic) as exc:
                raise FaultError(f"{self.url}: {type(exc).__name__}: {_text(exc)}") from None
            except requests.RequestException as exc:
                raise FaultError(f"{self.url}: Toxiproxy did not answer: {type(exc).__name__}") from None
            finally:
                toxiproxy.server.APIConsumer, toxiproxy.proxy.APIConsumer = saved

    def version(self) -> str:
        """The server's version: Toxiproxy 2.x answers JSON {"version": ...}, older ones plain text."""
        with self._bound():
            text = str(self._consumer.get("/version").text).strip()
        try:
            return str(json.loads(text)["version"])
        except (ValueError, KeyError, TypeError):
            return text

    def reset(self) -> None:
        with self._bound():
            self._server.reset()

    def proxies(self) -> dict[str, BoundProxy]:
        with self._bound():
            return {name: BoundProxy(self, proxy) for name, proxy in self._server.proxies().items()}

    def create(self, upstream: str, name: str, listen: str | None = None, enabled: bool | None = None) -> BoundProxy:
        with self._bound():
            return BoundProxy(self, self._server.create(upstream=upstream, name=name, listen=listen, enabled=enabled))

    def populate(self, proxies: list[dict[str, Any]]) -> list[BoundProxy]:
        with self._bound():
            return [BoundProxy(self, p) for p in self._server.populate(proxies)]


class BoundProxy:
    """A toxiproxy-python Proxy whose calls go to the server it came from."""

    def __init__(self, client: ToxiproxyClient, proxy: toxiproxy.proxy.Proxy) -> None:
        self._client = client
        self._proxy = proxy

    @property
    def name(self) -> str:
        return str(self._proxy.name)

    @property
    def listen(self) -> str:
        return str(self._proxy.listen)

    @property
    def upstream(self) -> str:
        return str(self._proxy.upstream)

    def add_toxic(self, **toxic: Any) -> None:
        with self._client._bound():
            self._proxy.add_toxic(**toxic)

    def destroy_toxic(self, name: str) -> None:
        with self._client._bound():
            self._proxy.destroy_toxic(name)

    def toxics(self) -> dict[str, Any]:
        with self._client._bound():
            return dict(self._proxy.toxics())

    def enable(self) -> None:
        with self._client._bound():
            self._proxy.enable()

    def disable(self) -> None:
        with self._client._bound():
            self._proxy.disable()

    def destroy(self) -> None:
        with self._client._bound():
            self._proxy.destroy()


def _text(exc: Exception) -> str:
    raw = exc.args[0] if exc.args else ""
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
