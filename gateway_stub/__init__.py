"""A faithful, tunable imitation of the OpenClaw gateway's WebSocket handshake, for load and chaos tests."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway_stub.config import StubConfig
    from gateway_stub.server import GatewayStub

__all__ = ["GatewayStub", "StubConfig"]


def __getattr__(name: str) -> Any:
    """Imported on first use: reading the stub's options (the harness does) must not load the server."""
    if name == "GatewayStub":
        from gateway_stub.server import GatewayStub

        return GatewayStub
    if name == "StubConfig":
        from gateway_stub.config import StubConfig

        return StubConfig
    raise AttributeError(f"module 'gateway_stub' has no attribute {name!r}")
