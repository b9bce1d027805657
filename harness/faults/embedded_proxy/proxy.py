"""The asyncio side of the API's `ProxyRunner`: a listening socket per enabled proxy, its dials and connections.

`AsyncioProxyRunner` is what the embedded server gives `ToxiproxyApi`: it listens when the API enables a
proxy, accepts, dials the record's upstream (closing the client when it cannot be reached, as Toxiproxy
does), joins the two sockets in a `Connection`, and passes the API's toxic changes on to the open links.
It keeps no proxy state of its own beyond what is running; the records are the API's.
"""

from __future__ import annotations

import asyncio
import socket

from harness.faults.embedded_proxy.link import ClientEndpoint, Connection, Link, dial
from harness.faults.embedded_proxy.records import ProxyRecord, Toxic

LISTEN_BACKLOG = 4096  # Go listens with somaxconn; asyncio's default (100) makes connect bursts wait on SYN retries


class Listener:
    """One enabled proxy: its listening socket, the upstream dials in flight and the open connections."""

    def __init__(self, record: ProxyRecord, ip: str, port: int) -> None:
        self.record = record
        # Bound here, synchronously, so the API can answer with the port or the bind error at once; asyncio
        # starts accepting at its next turn, and connections made before that wait in the backlog.
        family = socket.AF_INET6 if ":" in ip else socket.AF_INET
        self.sock = socket.create_server((ip, port), family=family, backlog=LISTEN_BACKLOG)
        self.port = int(self.sock.getsockname()[1])
        self.connections: set[Connection] = set()
        self.closed = False
        self._server: asyncio.Server | None = None
        self._dialing: set[asyncio.Task[None]] = set()
        self._opening = asyncio.get_running_loop().create_task(self._serve())

    async def _serve(self) -> None:
        server = await asyncio.get_running_loop().create_server(
            lambda: ClientEndpoint(self._accepted), sock=self.sock, backlog=LISTEN_BACKLOG, start_serving=False)
        self._server = server
        await server.start_serving()

    def _accepted(self, client: ClientEndpoint) -> None:
        task = asyncio.get_running_loop().create_task(self._connect(client))
        self._dialing.add(task)
        task.add_done_callback(self._dialing.discard)

    async def _connect(self, client: ClientEndpoint) -> None:
        try:
            upstream = await dial(self.record.upstream)
        except (OSError, ValueError):
            client.close()  # Toxiproxy closes the client when the upstream cannot be reached
            return
        except asyncio.CancelledError:  # the proxy stopped meanwhile
            client.abort()
            raise
        if self.closed or client.lost:
            client.abort()
            upstream.abort()
            return
        conn = Connection(self.record, client, upstream, self.connections.discard)
        self.connections.add(conn)
        conn.start()

    def links(self, direction: str) -> list[Link]:
        return [conn.links[direction] for conn in list(self.connections)]

    def close(self) -> None:
        """Stop listening, cancel the dials in flight and drop every connection."""
        self.closed = True
        if self._server is not None:
            self._server.close()
        else:
            # _serve has not run yet (it sets _server in its first step): the socket is still ours alone.
            self._opening.cancel()
            self.sock.close()
        for task in list(self._dialing):
            task.cancel()
        for conn in list(self.connections):
            conn.abort()


class AsyncioProxyRunner:
    """The `ProxyRunner` of the embedded server (see api.py): it must run inside the event loop."""

    def __init__(self) -> None:
        self._listeners: dict[ProxyRecord, Listener] = {}

    def start(self, proxy: ProxyRecord, ip: str, port: int) -> int:
        listener = Listener(proxy, ip, port)
        self._listeners[proxy] = listener
        return listener.port

    def stop(self, proxy: ProxyRecord) -> None:
        listener = self._listeners.pop(proxy, None)
        if listener is not None:
            listener.close()

    def toxic_added(self, proxy: ProxyRecord, toxic: Toxic) -> None:
        for link in self._links(proxy, toxic.direction):
            link.sync()

    def toxic_updated(self, proxy: ProxyRecord, toxic: Toxic) -> None:
        for link in self._links(proxy, toxic.direction):
            link.sync()

    def toxic_removed(self, proxy: ProxyRecord, toxic: Toxic) -> None:
        for link in self._links(proxy, toxic.direction):
            link.toxic_removed(toxic)

    def _links(self, proxy: ProxyRecord, direction: str) -> list[Link]:
        listener = self._listeners.get(proxy)
        return listener.links(direction) if listener is not None else []

    def close(self) -> None:
        """Every proxy stops: listeners closed, connections dropped (the server is shutting down)."""
        for listener in list(self._listeners.values()):
            listener.close()
        self._listeners.clear()
