"""The connect request an April-era native-approvals handler sends (reference §8.3), and its 9.6 counterpart.

Client `gateway-client`, mode `backend`, role operator, scope `operator.approvals`, no caps, token
auth, display name `<Channel> Native Approvals (<account>)`, protocol 3/3 (4/4 on `current`).
A `ClientShape` holds what differs between runs: the protocol, what an approver needs to receive
approvals at that protocol (§10.4, §12.5), and the device key the connects are signed with, if any.
"""

from __future__ import annotations

import itertools
import json
import uuid
from dataclasses import dataclass
from typing import Any

from openclaw_wire.constants import PROTOCOL_APRIL, PROTOCOL_CURRENT
from openclaw_wire.device_auth import DeviceIdentity

CHANNEL_LABELS = {"matrix": "Matrix", "telegram": "Telegram"}
CLIENT_VERSION = "2026.4.24"  # the version the fake clients report
_request_seq = itertools.count(1)


def handler_display_name(channel: str, account: str) -> str:
    return f"{CHANNEL_LABELS.get(channel, channel.title())} Native Approvals ({account})"


def backend_connect_params(*, display_name: str, scopes: list[str], token: str, protocol: int = PROTOCOL_APRIL,
                           client_version: str = CLIENT_VERSION, caps: list[str] | None = None) -> dict[str, Any]:
    """`gateway-client`/`backend` with token auth: the device-less shape that keeps its scopes on loopback.

    The April handlers, their resolver clicks, the agent's requester sockets and the health probe all
    connect this way, differing only in display name and scopes.
    """
    params: dict[str, Any] = {
        "minProtocol": protocol,
        "maxProtocol": protocol,
        "client": {"id": "gateway-client", "displayName": display_name, "version": client_version,
                   "platform": "linux", "mode": "backend"},
        "role": "operator",
        "scopes": scopes,
        "auth": {"token": token},
    }
    if caps:
        params["caps"] = caps
    return params


def handler_connect_params(*, channel: str, account: str, token: str, protocol: int = PROTOCOL_APRIL) -> dict[str, Any]:
    return ClientShape(protocol).handler_params(channel, account, token)


@dataclass(frozen=True)
class ClientShape:
    """How one run's fake clients connect: protocol, approver access, and the device key they sign with.

    An approver (a native-approvals handler, the operator's resolve click) needs `operator.approvals` at
    protocol 3. At protocol 4 (2026.9.6) it needs `operator.admin` and cap `approvals` to be sent approvals
    and to see them (reference §10.4, §12.5). `device` is one key for every client of the run, as all the
    handlers of one OpenClaw process share its device identity; on 9.6 that also lets the agent see its own
    request from a new socket (the requesting device). None: device-less token auth.
    """

    protocol: int = PROTOCOL_APRIL
    device: DeviceIdentity | None = None

    def params(self, display_name: str, scopes: list[str], token: str) -> dict[str, Any]:
        return backend_connect_params(display_name=display_name, scopes=scopes, token=token, protocol=self.protocol)

    def approver_params(self, display_name: str, token: str) -> dict[str, Any]:
        if self.protocol < PROTOCOL_CURRENT:
            return self.params(display_name, ["operator.approvals"], token)
        return backend_connect_params(display_name=display_name, scopes=["operator.admin", "operator.approvals"],
                                      token=token, protocol=self.protocol, caps=["approvals"])

    def handler_params(self, channel: str, account: str, token: str) -> dict[str, Any]:
        return self.approver_params(handler_display_name(channel, account), token)


def request_frame(method: str, params: Any) -> tuple[str, str]:
    """(request id, frame text); ids are shaped `<seq>:<uuid>` like the reference client's."""
    request_id = f"{next(_request_seq)}:{uuid.uuid4()}"
    frame = {"type": "req", "id": request_id, "method": method, "params": params}
    return request_id, json.dumps(frame)
