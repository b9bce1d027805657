"""One socket between a simulated client and the simulated gateway, and what the gateway tells a client."""

from __future__ import annotations

from typing import Protocol

from gateway_stub.budget import PreauthSlot


class Client(Protocol):
    """What the gateway tells a client: each call happens when the frame arrives."""

    def upgraded(self, conn: Conn) -> None: ...

    def refused(self, conn: Conn, status: int | None) -> None: ...

    def challenged(self, conn: Conn) -> None: ...

    def hello(self, conn: Conn) -> None: ...

    def closed_by_gateway(self, conn: Conn, code: int, reason: str) -> None: ...


class Conn:
    """One socket, as the gateway sees it."""

    __slots__ = ("client", "slot", "timer_due_ms", "received_ms", "registered", "closing", "closed", "client_gone")

    def __init__(self, client: Client) -> None:
        self.client = client
        self.slot: PreauthSlot | None = None
        self.timer_due_ms = 0.0
        self.received_ms = 0.0
        self.registered = False
        self.closing = False  # the gateway started closing it (its timer)
        self.closed = False  # the gateway saw it closed
        self.client_gone = False  # the client closed it

    def alive(self) -> bool:
        return not (self.closed or self.client_gone)
