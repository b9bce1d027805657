"""OpenClaw constants that both the stub and the harness use, each with the OpenClaw source it mirrors.

All durations are milliseconds of OpenClaw's own (unscaled) time.
"""

from __future__ import annotations

# The protocol versions: 3 up to the 2026.4.x releases, 4 from 2026.5 (reference section 1).
PROTOCOL_APRIL = 3
PROTOCOL_CURRENT = 4

# The pre-auth handshake timeout. 2026.4.20/4.24: 10 000 ms (src/gateway/handshake-timeouts.ts).
APRIL_HANDSHAKE_TIMEOUT_MS = 10_000
# DEFAULT_PREAUTH_HANDSHAKE_TIMEOUT_MS, packages/gateway-client/src/timeouts.ts (2026.9.6); already 15e3 in the
# 2026.4.29 package, while main still had 10 s on 2026-04-25 (openclaw#49049): the first release with 15 s.
DEFAULT_PREAUTH_HANDSHAKE_TIMEOUT_MS = 15_000
FIRST_RELEASE_WITH_15_S_HANDSHAKE = (2026, 4, 29)

# The gateway's presence list (listSystemPresence, src/infra/system-presence.ts; 2026.4.24's
# server-plugin-bootstrap-*.js): entries older than TTL_MS are dropped, and past MAX_ENTRIES the oldest go.
PRESENCE_TTL_MS = 300_000
PRESENCE_MAX_ENTRIES = 200

# TICK_INTERVAL_MS, src/gateway/server-maintenance.ts: one global `tick` event; a client closes 4000
# "tick timeout" after 2 x this of silence.
TICK_INTERVAL_MS = 30_000
# src/gateway/websocket-keepalive.ts
KEEPALIVE_PING_INTERVAL_MS = 25_000
KEEPALIVE_PONG_TIMEOUT_MS = 25_000
# The periodic health refresh (healthInterval, src/gateway/server-maintenance.ts).
HEALTH_REFRESH_INTERVAL_MS = 60_000

# packages/gateway-client/src/timeouts.ts and client.ts
CONNECT_CHALLENGE_TIMEOUT_MS = 15_000
DEFAULT_GATEWAY_REQUEST_TIMEOUT_MS = 30_000

# DEFAULT_MAX_PREAUTH_CONNECTIONS_PER_IP, src/gateway/server/preauth-connection-budget.ts.
DEFAULT_MAX_PREAUTH_CONNECTIONS_PER_IP = 32

# DEFAULT_EXEC_APPROVAL_TIMEOUT_MS, src/infra/exec-approvals-core.ts (exec-approvals.ts in 4.29).
DEFAULT_EXEC_APPROVAL_TIMEOUT_MS = 1_800_000
# The error a second exec.approval.request under a pending id gets (src/gateway/exec-approval-manager.ts).
MSG_APPROVAL_ALREADY_PENDING = "approval id already pending"


def protocol_for_version(version: str) -> int:
    """The protocol an OpenClaw release speaks: 3 up to the 2026.4.x releases, 4 from 2026.5."""
    try:
        year, month = (int(part) for part in version.split(".")[:2])
    except ValueError:
        return PROTOCOL_CURRENT
    return PROTOCOL_APRIL if (year, month) <= (2026, 4) else PROTOCOL_CURRENT


def handshake_timeout_ms_for_version(version: str) -> int:
    """The pre-auth handshake timeout an OpenClaw release uses by default: 10 s up to 2026.4.24 (the storm's), 15 s
    from 2026.4.29 (grep DEFAULT_PREAUTH_HANDSHAKE_TIMEOUT_MS in each package). A version that does not parse is
    taken as a current one."""
    try:
        year, month, day = (int(part) for part in version.split("-")[0].split(".")[:3])
    except ValueError:
        return DEFAULT_PREAUTH_HANDSHAKE_TIMEOUT_MS
    if (year, month, day) < FIRST_RELEASE_WITH_15_S_HANDSHAKE:
        return APRIL_HANDSHAKE_TIMEOUT_MS
    return DEFAULT_PREAUTH_HANDSHAKE_TIMEOUT_MS


def handshake_timeout_ms_for_protocol(protocol: int) -> int:
    """The handshake timeout a client of this protocol assumes (the harness's clients and the stub's profiles)."""
    return APRIL_HANDSHAKE_TIMEOUT_MS if protocol <= PROTOCOL_APRIL else DEFAULT_PREAUTH_HANDSHAKE_TIMEOUT_MS
