"""A faithful, tunable imitation of the OpenClaw gateway's WebSocket handshake, for load and chaos tests."""

from gateway_stub.config import StubConfig
from gateway_stub.server import GatewayStub

__all__ = ["GatewayStub", "StubConfig"]
