"""The stub's configuration: one frozen object, built from options, environment or code.

Durations are stored in unscaled milliseconds, the way a profile states them; `scaled_s` is the one
place the time scale is applied. Environment variables named like the real gateway's are read where
one exists (`OPENCLAW_*`); the stub's own knobs are `GATEWAY_STUB_*`. Every option has exactly one
entry in `OPTIONS`, which drives both the command line and the environment.
"""

from __future__ import annotations

import argparse
import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from gateway_stub.approvals import DEFAULT_MAX_PENDING_APPROVALS
from gateway_stub.cost import NO_COST, CostClock, CostSpec, parse_cost
from gateway_stub.generations import DEFAULT_GENERATION, GENERATIONS, Generation
from openclaw_wire.constants import (
    DEFAULT_MAX_PREAUTH_CONNECTIONS_PER_IP,
    KEEPALIVE_PING_INTERVAL_MS,
    KEEPALIVE_PONG_TIMEOUT_MS,
    TICK_INTERVAL_MS,
)

DEFAULT_PORT = 18789  # DEFAULT_GATEWAY_CLIENT_URL, packages/gateway-client/src/client.ts
# Idle latencies seen on 2026.9.6: challenge 17-27 ms after TCP connect, hello-ok ~40 ms after connect.
DEFAULT_CHALLENGE_LATENCY_MS = 20.0
DEFAULT_HELLO_LATENCY_MS = 40.0
APPROVAL_DEDUP_MODES = ("off", "intent")
HEALTH_REFRESH_COALESCE_MODES = ("join", "rearm")


class ConfigError(ValueError):
    """A bad option: the message names the option and what was expected."""


@dataclass(frozen=True)
class StubConfig:
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    profile: str = DEFAULT_GENERATION  # a generation's name, called after the --profile option users pass
    auth_mode: str = "token"
    token: str | None = None
    handshake_timeout_ms: int | None = None  # None: the generation's
    max_preauth_per_ip: int = DEFAULT_MAX_PREAUTH_CONNECTIONS_PER_IP
    time_scale: float = 1.0
    upgrade_cost: CostSpec = NO_COST
    connect_cost_before_timer: CostSpec = NO_COST
    connect_cost_after_timer: CostSpec = NO_COST
    colocated_challenge_cost: CostSpec = NO_COST
    colocated_hello_cost: CostSpec = NO_COST
    health_refresh_cost: CostSpec = NO_COST
    health_refresh_coalesce: str = "join"
    cost_clock: CostClock = "wall"
    challenge_latency_ms: float = DEFAULT_CHALLENGE_LATENCY_MS
    hello_latency_ms: float = DEFAULT_HELLO_LATENCY_MS
    tick_interval_ms: float = TICK_INTERVAL_MS
    ping_interval_ms: float = KEEPALIVE_PING_INTERVAL_MS
    ping_timeout_ms: float = KEEPALIVE_PONG_TIMEOUT_MS
    auth_failure_delay: bool = True
    approval_dedup: str = "off"
    max_pending_approvals: int = DEFAULT_MAX_PENDING_APPROVALS
    log_file: Path | None = None
    seed: int | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_loopback(self.host)
        if self.profile not in GENERATIONS:
            raise ConfigError(f"--profile: expected one of {', '.join(GENERATIONS)}, got {self.profile!r}")
        if self.auth_mode not in ("token", "none"):
            raise ConfigError(f"--auth: expected token or none, got {self.auth_mode!r}")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"--port: expected 0..65535, got {self.port}")
        if not self.time_scale > 0:
            raise ConfigError(f"--time-scale: expected a number > 0, got {self.time_scale}")
        if self.max_preauth_per_ip < 1:
            raise ConfigError(f"--max-preauth-per-ip: expected an integer >= 1, got {self.max_preauth_per_ip}")
        if self.approval_dedup not in APPROVAL_DEDUP_MODES:
            raise ConfigError(f"--approval-dedup: expected off or intent, got {self.approval_dedup!r}")
        if self.health_refresh_coalesce not in HEALTH_REFRESH_COALESCE_MODES:
            raise ConfigError(
                f"--health-refresh-coalesce: expected join or rearm, got {self.health_refresh_coalesce!r}")
        if self.max_pending_approvals < 1:
            raise ConfigError(
                f"--max-pending-approvals: expected an integer >= 1, got {self.max_pending_approvals}")

    @property
    def generation(self) -> Generation:
        return GENERATIONS[self.profile]

    @property
    def effective_handshake_timeout_ms(self) -> int:
        return self.handshake_timeout_ms or self.generation.handshake_timeout_ms

    def scaled_s(self, ms: float) -> float:
        """Unscaled milliseconds to the real seconds the stub waits: the one place the scale applies."""
        return ms * self.time_scale / 1000.0

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "token":
                value = "<set>" if value else None
            elif isinstance(value, CostSpec):
                value = value.describe()
            elif isinstance(value, Path):
                value = str(value)
            elif f.name == "extra":
                continue
            out[f.name] = value
        out["effective_handshake_timeout_ms"] = self.effective_handshake_timeout_ms
        return out


def _check_loopback(host: str) -> None:
    if host == "localhost":
        return
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        expected = "a loopback address (127.0.0.0/8, ::1 or localhost)"
        raise ConfigError(f"--host: expected {expected}, got {host!r}") from None
    if not address.is_loopback:
        raise ConfigError(f"--host: refused {host!r}: the stub binds loopback only (127.0.0.0/8, ::1 or localhost)")


# ---------------------------------------------------------------------------------------------
# Parsers: each takes text and returns a value or raises ValueError saying what was expected.


def _positive_int_strict(text: str) -> int:
    # OpenClaw reads these env vars with ^\+?\d+$ and requires a positive value.
    if not re.fullmatch(r"\+?[0-9]+", text) or int(text) < 1:  # JS \d is ASCII-only; Python's is not
        raise ValueError(f"expected a positive integer, got {text!r}")
    return int(text)


def _port(text: str) -> int:
    if not re.fullmatch(r"\d+", text) or int(text) > 65535:
        raise ValueError(f"expected a port number 0..65535, got {text!r}")
    return int(text)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"expected a number > 0, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise ValueError(f"expected a finite number > 0, got {text!r}")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"expected a number >= 0, got {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise ValueError(f"expected a finite number >= 0, got {text!r}")
    return value


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in allowed:
            raise ValueError(f"expected one of {', '.join(allowed)}, got {text!r}")
        return text

    return parse


def _int(text: str) -> int:
    if not re.fullmatch(r"-?\d+", text):
        raise ValueError(f"expected an integer, got {text!r}")
    return int(text)


def _bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected on or off, got {text!r}")


def _text(text: str) -> str:
    if not text:
        raise ValueError("expected a non-empty value")
    return text


@dataclass(frozen=True)
class Option:
    flag: str
    field: str
    parse: Callable[[str], Any]
    help: str
    env: str
    metavar: str = ""


_COST_HELP = "DIST[@SLICE_MS]: fixed:MS, uniform:LO,HI or lognormal:MEDIAN,SIGMA; @SLICE_MS burns in slices"
OPTIONS: tuple[Option, ...] = (
    Option("--host", "host", _text, "loopback address to bind (default 127.0.0.1)", "GATEWAY_STUB_HOST"),
    Option("--port", "port", _port, f"port to listen on; 0 picks a free one (default {DEFAULT_PORT})",
           "OPENCLAW_GATEWAY_PORT"),
    Option("--profile", "profile", _choice(*GENERATIONS), f"protocol profile (default {DEFAULT_GENERATION})",
           "GATEWAY_STUB_PROFILE", "{" + ",".join(GENERATIONS) + "}"),
    Option("--auth", "auth_mode", _choice("token", "none"), "auth mode (default token)", "GATEWAY_STUB_AUTH",
           "{token,none}"),
    Option("--token", "token", _text, "shared gateway token (default: a random one, printed at start)",
           "OPENCLAW_GATEWAY_TOKEN"),
    Option("--handshake-timeout-ms", "handshake_timeout_ms", _positive_int_strict,
           "pre-auth handshake timeout (default: the profile's, 10000 april-2026, 15000 current)",
           "OPENCLAW_HANDSHAKE_TIMEOUT_MS"),
    Option("--max-preauth-per-ip", "max_preauth_per_ip", _positive_int_strict,
           "concurrent unauthenticated sockets per client IP before 503 (default 32)",
           "OPENCLAW_MAX_PREAUTH_CONNECTIONS_PER_IP"),
    Option("--time-scale", "time_scale", _positive_float,
           "multiply every duration (timeouts, costs, tick, ping, latencies) by this (default 1)",
           "GATEWAY_STUB_TIME_SCALE"),
    Option("--upgrade-cost", "upgrade_cost", parse_cost, f"CPU burned per HTTP upgrade; {_COST_HELP}",
           "GATEWAY_STUB_UPGRADE_COST", "COST"),
    Option("--connect-cost-before-timer", "connect_cost_before_timer", parse_cost,
           "CPU burned per connect before the handshake timer is cleared (frame, auth, device proof)",
           "GATEWAY_STUB_CONNECT_COST_BEFORE_TIMER", "COST"),
    Option("--connect-cost-after-timer", "connect_cost_after_timer", parse_cost,
           "CPU burned per connect after the timer is cleared (building hello-ok)",
           "GATEWAY_STUB_CONNECT_COST_AFTER_TIMER", "COST"),
    Option("--colocated-challenge-cost", "colocated_challenge_cost", parse_cost,
           "co-located mode: client-side CPU per handshake after the challenge (signing the device proof)",
           "GATEWAY_STUB_COLOCATED_CHALLENGE_COST", "COST"),
    Option("--colocated-hello-cost", "colocated_hello_cost", parse_cost,
           "co-located mode: client-side CPU per handshake after hello-ok (parsing it)",
           "GATEWAY_STUB_COLOCATED_HELLO_COST", "COST"),
    Option("--health-refresh-cost", "health_refresh_cost", parse_cost,
           "the real gateway's health refresh (refreshGatewayHealthSnapshot): CPU burned on the loop after each "
           "hello-ok sent, each health request and every 60 s, coalesced: a request while one runs joins it "
           "(default 0: off)",
           "GATEWAY_STUB_HEALTH_REFRESH_COST", "COST"),
    Option("--health-refresh-coalesce", "health_refresh_coalesce", _choice(*HEALTH_REFRESH_COALESCE_MODES),
           "a refresh request while one runs: 'join' it, as openclaw 2026.4.24 does (default), or 'rearm' one "
           "more refresh after it (at most one pending)",
           "GATEWAY_STUB_HEALTH_REFRESH_COALESCE", "{join,rearm}"),
    Option("--cost-clock", "cost_clock", _choice("wall", "cpu"),
           "burn costs by wall time (default) or by thread CPU time", "GATEWAY_STUB_COST_CLOCK", "{wall,cpu}"),
    Option("--challenge-latency-ms", "challenge_latency_ms", _non_negative_float,
           f"idle delay before connect.challenge (default {DEFAULT_CHALLENGE_LATENCY_MS:g})",
           "GATEWAY_STUB_CHALLENGE_LATENCY_MS"),
    Option("--hello-latency-ms", "hello_latency_ms", _non_negative_float,
           f"idle time from connect to hello-ok, not counting cost (default {DEFAULT_HELLO_LATENCY_MS:g})",
           "GATEWAY_STUB_HELLO_LATENCY_MS"),
    Option("--tick-interval-ms", "tick_interval_ms", _positive_float, "tick event interval (default 30000)",
           "GATEWAY_STUB_TICK_INTERVAL_MS"),
    Option("--ping-interval-ms", "ping_interval_ms", _positive_float, "keepalive ping interval (default 25000)",
           "GATEWAY_STUB_PING_INTERVAL_MS"),
    Option("--ping-timeout-ms", "ping_timeout_ms", _positive_float, "pong wait before terminating (default 25000)",
           "GATEWAY_STUB_PING_TIMEOUT_MS"),
    Option("--auth-failure-delay", "auth_failure_delay", _bool,
           "delay the n-th loopback auth failure by min(250*2^(n-1), 5000) ms (default on)",
           "GATEWAY_STUB_AUTH_FAILURE_DELAY", "{on,off}"),
    Option("--approval-dedup", "approval_dedup", _choice(*APPROVAL_DEDUP_MODES),
           "stub-only fix arm: 'intent' coalesces an exec.approval.request whose (agentId, sessionKey, runId "
           "or else command) matches a pending approval into it; the real gateway has no such dedupe, it "
           "dedupes by approval id only (default off)",
           "GATEWAY_STUB_APPROVAL_DEDUP", "{off,intent}"),
    Option("--max-pending-approvals", "max_pending_approvals", _positive_int_strict,
           f"pending exec approvals kept before exec.approval.request answers UNAVAILABLE "
           f"(default {DEFAULT_MAX_PENDING_APPROVALS})", "GATEWAY_STUB_MAX_PENDING_APPROVALS"),
    Option("--log-file", "log_file", lambda t: Path(_text(t)), "also write events as JSON lines to this file",
           "GATEWAY_STUB_LOG_FILE", "PATH"),
    Option("--seed", "seed", _int, "seed for sampled costs (default: random)", "GATEWAY_STUB_SEED"),
)


class _OneLineParser(argparse.ArgumentParser):
    """argparse prints usage plus an error; the project's rule is one line naming the option, exit 2."""

    def error(self, message: str) -> Any:
        raise ConfigError(message.replace("argument ", "", 1))


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(
        prog="python -m gateway_stub",
        description="A tunable imitation of the OpenClaw gateway's WebSocket handshake (loopback only).",
        epilog="Each option can also be set by the environment variable in brackets; the option wins. "
        "Exit codes: 0 stopped cleanly, 2 bad option, 3 could not start (e.g. port in use).",
    )
    for option in OPTIONS:
        parser.add_argument(
            option.flag,
            dest=option.field,
            default=None,
            metavar=option.metavar or None,
            help=f"{option.help} [{option.env}]",
        )
    return parser


def config_from_args(argv: list[str] | None, environ: Mapping[str, str]) -> StubConfig:
    """Options over environment over defaults; raise ConfigError naming the first bad one."""
    namespace = build_parser().parse_args(argv)
    values: dict[str, Any] = {}
    for option in OPTIONS:
        cli_text: str | None = getattr(namespace, option.field)
        source, text = (option.flag, cli_text) if cli_text is not None else (option.env, environ.get(option.env))
        if text is None:
            continue
        try:
            values[option.field] = option.parse(text)
        except ValueError as exc:
            raise ConfigError(f"{source}: {exc}") from None
    return StubConfig(**values)
