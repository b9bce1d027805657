"""The connect request an April-era native-approvals handler sends (reference §8.3).

Client `gateway-client`, mode `backend`, role operator, scope `operator.approvals`, no caps, token
auth, display name `<Channel> Native Approvals (<account>)`, protocol 3/3 (4/4 on `current`).
"""

from __future__ import annotations

import itertools
import json
import uuid
from typing import Any

CHANNEL_LABELS = {"matrix": "Matrix", "telegram": "Telegram"}
CLIENT_VERSION = "2026.4.24"  # the version the fake clients report
_request_seq = itertools.count(1)


def handler_display_name(channel: str, account: str) -> str:
    return f"{CHANNEL_LABELS.get(channel, channel.title())} Native Approvals ({account})"


def backend_connect_params(*, display_name: str, scopes: list[str], token: str, protocol: int = 3,
                           client_version: str = CLIENT_VERSION) -> dict[str, Any]:
    """`gateway-client`/`backend` with token auth: the device-less shape that keeps its scopes on loopback.

    The April handlers, their resolver clicks, the agent's requester sockets and the health probe all
    connect this way, differing only in display name and scopes.
    """
    return {
        "minProtocol": protocol,
        "maxProtocol": protocol,
        "client": {"id": "gateway-client", "displayName": display_name, "version": client_version,
                   "platform": "linux", "mode": "backend"},
        "role": "operator",
        "scopes": scopes,
        "auth": {"token": token},
    }


def handler_connect_params(*, channel: str, account: str, token: str, protocol: int = 3) -> dict[str, Any]:
    return backend_connect_params(display_name=handler_display_name(channel, account), scopes=["operator.approvals"],
                                  token=token, protocol=protocol)


def request_frame(method: str, params: Any) -> tuple[str, str]:
    """(request id, frame text); ids are shaped `<seq>:<uuid>` like the reference client's."""
    request_id = f"{next(_request_seq)}:{uuid.uuid4()}"
    frame = {"type": "req", "id": request_id, "method": method, "params": params}
    return request_id, json.dumps(frame)
