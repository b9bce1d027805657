"""The stub's configuration: one frozen object, built from options, environment or code.

Durations are stored in unscaled milliseconds, the way a profile states them; `scaled_s` is the one
place the time scale is applied. Environment variables named like the real gateway's are read where
one exists (`OPENCLAW_*`); the stub's own knobs are `GATEWAY_STUB_*`. Every option has exactly one
entry in `OPTIONS`, which drives both the command line and the environment: its syntax (numbers in ASCII
digits only, finite), its range and, for a duration, the least it may become once the time scale applies,
shown in `--help`. `StubConfig` checks the same ranges, so a config built in code cannot get round them.
"""

from __future__ import annotations

import argparse
import ipaddress
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from gateway_stub.approvals import DEFAULT_MAX_PENDING_APPROVALS
from gateway_stub.cost import (
    MAX_COST_MS,
    MAX_LOGNORMAL_SIGMA,
    MIN_REAL_SLICE_MS,
    NO_COST,
    CostClock,
    CostSpec,
    parse_cost,
)
from gateway_stub.generations import DEFAULT_GENERATION, GENERATIONS, Generation
from gateway_stub.numbers import parse_decimal, parse_integer, shown
from openclaw_wire.constants import (
    DEFAULT_MAX_PREAUTH_CONNECTIONS_PER_IP,
    KEEPALIVE_PING_INTERVAL_MS,
    KEEPALIVE_PONG_TIMEOUT_MS,
    TICK_INTERVAL_MS,
)

DEFAULT_PORT = 18789  # DEFAULT_GATEWAY_CLIENT_URL, packages/gateway-client/src/client.ts
APPROVAL_DEDUP_MODES = ("off", "intent")
HEALTH_REFRESH_COALESCE_MODES = ("join", "rearm")
# The bounds (see `Limits`). No duration is longer than Node's setTimeout can wait (TIMEOUT_MAX; a longer
# delay makes the real gateway's timer fire after 1 ms). Below 1 ms of real time a repeating timer (tick,
# ping) keeps a core busy and a deadline (handshake timeout, pong wait) is gone before a frame can cross
# loopback; the time scale's own range keeps every default above that.
MAX_DURATION_MS = 2_147_483_647
MIN_REAL_TIMER_MS = 1.0
MIN_TIME_SCALE = 0.001
MAX_TIME_SCALE = 1000.0
MAX_COUNT = 2_147_483_647
MAX_SEED = 2**64 - 1


class ConfigError(ValueError):
    """A bad option: the message names the option and what was expected.

    `field` is the StubConfig field at fault when the check was on the built config, so the command line can
    name the environment variable instead when the value came from there.
    """

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


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
    challenge_latency_ms: float | None = None  # None: the generation's, as recorded
    hello_latency_ms: float | None = None
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
            raise ConfigError(f"--profile: expected one of {', '.join(GENERATIONS)}, got {self.profile!r}",
                              "profile")
        if self.auth_mode not in ("token", "none"):
            raise ConfigError(f"--auth: expected token or none, got {self.auth_mode!r}", "auth_mode")
        if self.approval_dedup not in APPROVAL_DEDUP_MODES:
            raise ConfigError(f"--approval-dedup: expected off or intent, got {self.approval_dedup!r}",
                              "approval_dedup")
        if self.health_refresh_coalesce not in HEALTH_REFRESH_COALESCE_MODES:
            raise ConfigError(
                f"--health-refresh-coalesce: expected join or rearm, got {self.health_refresh_coalesce!r}",
                "health_refresh_coalesce")
        # The time scale first: the other durations are checked against it.
        for option in sorted(OPTIONS, key=lambda o: o.field != "time_scale"):
            value = getattr(self, option.field)
            problem = None if option.limits is None or value is None else option.limits.problem(value,
                                                                                                self.time_scale)
            if problem is not None:
                raise ConfigError(f"{option.flag}: {problem}", option.field)

    @property
    def generation(self) -> Generation:
        return GENERATIONS[self.profile]

    @property
    def effective_handshake_timeout_ms(self) -> int:
        return self.handshake_timeout_ms or self.generation.handshake_timeout_ms

    @property
    def effective_challenge_latency_ms(self) -> float:
        return self.generation.challenge_latency_ms if self.challenge_latency_ms is None else self.challenge_latency_ms

    @property
    def effective_hello_latency_ms(self) -> float:
        return self.generation.hello_latency_ms if self.hello_latency_ms is None else self.hello_latency_ms

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
        raise ConfigError(f"--host: expected {expected}, got {shown(host)}", "host") from None
    if not address.is_loopback:
        raise ConfigError(f"--host: refused {host!r}: the stub binds loopback only (127.0.0.0/8, ::1 or localhost)",
                          "host")


# ---------------------------------------------------------------------------------------------
# Limits: what a parsed value may be, checked on the built config whatever set it.


def _number_text(value: float) -> str:
    # A huge int overflows float formatting, and past 4300 digits str() itself refuses: say its size instead.
    if isinstance(value, int):
        return str(value) if value.bit_length() <= 100 else f"an integer of {value.bit_length()} bits"
    return f"{value:g}"


@dataclass(frozen=True)
class Limits:
    """A numeric option's range, `low..high` in `unit`; for a duration also `real_min_ms`, the least it may be
    in real milliseconds once multiplied by the time scale."""

    low: float
    high: float
    unit: str = ""
    real_min_ms: float | None = None

    def problem(self, value: Any, time_scale: float) -> str | None:
        """What is wrong with `value` at `time_scale`, or None."""
        if not isinstance(value, int | float) or isinstance(value, bool):
            return f"expected a number, got {value!r}"
        if not ((isinstance(value, int) or math.isfinite(value)) and self.low <= value <= self.high):
            return f"expected {self.describe()}, got {_number_text(value)}"
        if self.real_min_ms is not None and value * time_scale < self.real_min_ms:
            return (f"expected at least {self.real_min_ms:g} ms of real time once scaled, got {_number_text(value)}"
                    f" x --time-scale {time_scale:g} = {value * time_scale:g} ms")
        return None

    def describe(self) -> str:
        unit = f" {self.unit}" if self.unit else ""
        text = f"{_number_text(self.low)}..{_number_text(self.high)}{unit}"
        if self.real_min_ms is not None:
            text += f", at least {self.real_min_ms:g} ms once scaled"
        return text


@dataclass(frozen=True)
class CostLimits:
    """A cost's slices, once scaled, are at least `MIN_REAL_SLICE_MS` (its amounts are bounded by parse_cost)."""

    def problem(self, value: Any, time_scale: float) -> str | None:
        if not isinstance(value, CostSpec):
            return f"expected a cost, got {value!r}"
        slice_ms = value.slice_ms
        if not math.isfinite(slice_ms) or slice_ms < 0:
            return f"expected @SLICE_MS >= 0, got {slice_ms!r}"
        if 0 < slice_ms * time_scale < MIN_REAL_SLICE_MS:
            return (f"expected @SLICE_MS of at least {MIN_REAL_SLICE_MS:g} ms of real time once scaled, got "
                    f"@{slice_ms:g} x --time-scale {time_scale:g} = {slice_ms * time_scale:g} ms")
        return None

    def describe(self) -> str:
        return (f"amounts up to {MAX_COST_MS:.0f} ms, sigma up to {MAX_LOGNORMAL_SIGMA:g}, @SLICE_MS at least "
                f"{MIN_REAL_SLICE_MS:g} ms once scaled")


Check = Limits | CostLimits

COUNT = Limits(1, MAX_COUNT)
TIMER = Limits(1, MAX_DURATION_MS, "ms", real_min_ms=MIN_REAL_TIMER_MS)  # a deadline or a repeating timer
LATENCY = Limits(0, MAX_DURATION_MS, "ms")  # an idle sleep: 0 is none
COST = CostLimits()


# ---------------------------------------------------------------------------------------------
# Parsers: each takes text and returns a value or raises ValueError saying what was expected; the ranges
# are the option's `limits`.


def _unsigned_int(text: str) -> int:
    # OpenClaw reads its integer env vars with ^\+?\d+$ (JavaScript's \d is ASCII-only; Python's is not).
    return parse_integer(text, signed=False)


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in allowed:
            raise ValueError(f"expected one of {', '.join(allowed)}, got {shown(text)}")
        return text

    return parse


def _bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected on or off, got {shown(text)}")


def _text(text: str) -> str:
    if not text:
        raise ValueError("expected a non-empty value")
    return text


def _path(text: str) -> Path:
    if "\0" in _text(text):
        raise ValueError("expected a file path, got one with a NUL character")
    return Path(text)


@dataclass(frozen=True)
class Option:
    flag: str
    field: str
    parse: Callable[[str], Any]
    help: str
    env: str
    metavar: str = ""
    limits: Check | None = None

    def help_text(self) -> str:
        bounds = f"; accepts {self.limits.describe()}" if self.limits is not None else ""
        return f"{self.help}{bounds} [{self.env}]"


_COST_HELP = "DIST[@SLICE_MS]: fixed:MS, uniform:LO,HI or lognormal:MEDIAN,SIGMA; @SLICE_MS burns in slices"
OPTIONS: tuple[Option, ...] = (
    Option("--host", "host", _text, "loopback address to bind (default 127.0.0.1)", "GATEWAY_STUB_HOST"),
    Option("--port", "port", _unsigned_int, f"port to listen on; 0 picks a free one (default {DEFAULT_PORT})",
           "OPENCLAW_GATEWAY_PORT", "PORT", Limits(0, 65535)),
    Option("--profile", "profile", _choice(*GENERATIONS), f"protocol profile (default {DEFAULT_GENERATION})",
           "GATEWAY_STUB_PROFILE", "{" + ",".join(GENERATIONS) + "}"),
    Option("--auth", "auth_mode", _choice("token", "none"), "auth mode (default token)", "GATEWAY_STUB_AUTH",
           "{token,none}"),
    Option("--token", "token", _text, "shared gateway token (default: a random one, printed at start)",
           "OPENCLAW_GATEWAY_TOKEN"),
    Option("--handshake-timeout-ms", "handshake_timeout_ms", _unsigned_int,
           "pre-auth handshake timeout (default: the profile's, 10000 april-2026, 15000 current)",
           "OPENCLAW_HANDSHAKE_TIMEOUT_MS", "MS", TIMER),
    Option("--max-preauth-per-ip", "max_preauth_per_ip", _unsigned_int,
           "concurrent unauthenticated sockets per client IP before 503 (default 32)",
           "OPENCLAW_MAX_PREAUTH_CONNECTIONS_PER_IP", "N", COUNT),
    Option("--time-scale", "time_scale", parse_decimal,
           "multiply every duration (timeouts, costs, tick, ping, latencies) by this (default 1)",
           "GATEWAY_STUB_TIME_SCALE", "X", Limits(MIN_TIME_SCALE, MAX_TIME_SCALE)),
    Option("--upgrade-cost", "upgrade_cost", parse_cost, f"CPU burned per HTTP upgrade; {_COST_HELP}",
           "GATEWAY_STUB_UPGRADE_COST", "COST", COST),
    Option("--connect-cost-before-timer", "connect_cost_before_timer", parse_cost,
           "CPU burned per connect before the handshake timer is cleared (frame, auth, device proof)",
           "GATEWAY_STUB_CONNECT_COST_BEFORE_TIMER", "COST", COST),
    Option("--connect-cost-after-timer", "connect_cost_after_timer", parse_cost,
           "CPU burned per connect after the timer is cleared (building hello-ok)",
           "GATEWAY_STUB_CONNECT_COST_AFTER_TIMER", "COST", COST),
    Option("--colocated-challenge-cost", "colocated_challenge_cost", parse_cost,
           "co-located mode: client-side CPU per handshake after the challenge (signing the device proof)",
           "GATEWAY_STUB_COLOCATED_CHALLENGE_COST", "COST", COST),
    Option("--colocated-hello-cost", "colocated_hello_cost", parse_cost,
           "co-located mode: client-side CPU per handshake after hello-ok (parsing it)",
           "GATEWAY_STUB_COLOCATED_HELLO_COST", "COST", COST),
    Option("--health-refresh-cost", "health_refresh_cost", parse_cost,
           "the real gateway's health refresh (refreshGatewayHealthSnapshot): CPU burned on the loop after each "
           "hello-ok sent, each health request and every 60 s, coalesced: a request while one runs joins it "
           "(default 0: off)",
           "GATEWAY_STUB_HEALTH_REFRESH_COST", "COST", COST),
    Option("--health-refresh-coalesce", "health_refresh_coalesce", _choice(*HEALTH_REFRESH_COALESCE_MODES),
           "a refresh request while one runs: 'join' it, as openclaw 2026.4.24 does (default), or 'rearm' one "
           "more refresh after it (at most one pending)",
           "GATEWAY_STUB_HEALTH_REFRESH_COALESCE", "{join,rearm}"),
    Option("--cost-clock", "cost_clock", _choice("wall", "cpu"),
           "burn costs by wall time (default) or by thread CPU time", "GATEWAY_STUB_COST_CLOCK", "{wall,cpu}"),
    Option("--challenge-latency-ms", "challenge_latency_ms", parse_decimal,
           "idle delay before connect.challenge (default: the profile's, as recorded)",
           "GATEWAY_STUB_CHALLENGE_LATENCY_MS", "MS", LATENCY),
    Option("--hello-latency-ms", "hello_latency_ms", parse_decimal,
           "idle time from connect to hello-ok, not counting cost (default: the profile's, as recorded)",
           "GATEWAY_STUB_HELLO_LATENCY_MS", "MS", LATENCY),
    Option("--tick-interval-ms", "tick_interval_ms", parse_decimal, "tick event interval (default 30000)",
           "GATEWAY_STUB_TICK_INTERVAL_MS", "MS", TIMER),
    Option("--ping-interval-ms", "ping_interval_ms", parse_decimal, "keepalive ping interval (default 25000)",
           "GATEWAY_STUB_PING_INTERVAL_MS", "MS", TIMER),
    Option("--ping-timeout-ms", "ping_timeout_ms", parse_decimal, "pong wait before terminating (default 25000)",
           "GATEWAY_STUB_PING_TIMEOUT_MS", "MS", TIMER),
    Option("--auth-failure-delay", "auth_failure_delay", _bool,
           "delay the n-th loopback auth failure by min(250*2^(n-1), 5000) ms (default on)",
           "GATEWAY_STUB_AUTH_FAILURE_DELAY", "{on,off}"),
    Option("--approval-dedup", "approval_dedup", _choice(*APPROVAL_DEDUP_MODES),
           "stub-only fix arm: 'intent' coalesces an exec.approval.request whose (agentId, sessionKey, runId "
           "or else command) matches a pending approval into it; the real gateway has no such dedupe, it "
           "dedupes by approval id only (default off)",
           "GATEWAY_STUB_APPROVAL_DEDUP", "{off,intent}"),
    Option("--max-pending-approvals", "max_pending_approvals", _unsigned_int,
           f"pending exec approvals kept before exec.approval.request answers UNAVAILABLE "
           f"(default {DEFAULT_MAX_PENDING_APPROVALS})", "GATEWAY_STUB_MAX_PENDING_APPROVALS", "N", COUNT),
    Option("--log-file", "log_file", _path, "also write events as JSON lines to this file",
           "GATEWAY_STUB_LOG_FILE", "PATH"),
    Option("--seed", "seed", parse_integer, "seed for sampled costs (default: random)", "GATEWAY_STUB_SEED", "N",
           Limits(-MAX_SEED, MAX_SEED)),
)


class _OneLineParser(argparse.ArgumentParser):
    """argparse prints usage plus an error; the project's rule is one line naming the option, exit 2."""

    def error(self, message: str) -> Any:
        # argparse quotes the offending argument whole, and lists unrecognized ones as they came (newlines too).
        line = " ".join(message.replace("argument ", "", 1).split())
        raise ConfigError(line if len(line) <= 300 else line[:299] + "…")


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(
        prog="python -m gateway_stub",
        description="A tunable imitation of the OpenClaw gateway's WebSocket handshake (loopback only).",
        epilog="Each option can also be set by the environment variable in brackets; the option wins. Numbers "
        "are ASCII digits, finite; each range follows 'accepts', and a duration marked 'once scaled' is checked "
        "after --time-scale multiplies it. "
        "Exit codes: 0 stopped cleanly, 2 bad option, 3 could not start (e.g. port in use).",
    )
    for option in OPTIONS:
        parser.add_argument(
            option.flag,
            dest=option.field,
            default=None,
            metavar=option.metavar or None,
            help=option.help_text().replace("%", "%%"),
        )
    return parser


def config_from_args(argv: list[str] | None, environ: Mapping[str, str]) -> StubConfig:
    """Options over environment over defaults; raise ConfigError naming the first bad one where it was set."""
    namespace = build_parser().parse_args(argv)
    values: dict[str, Any] = {}
    set_by: dict[str, str] = {}  # field -> the option or variable that set it, as error messages name it
    for option in OPTIONS:
        text: str | None = getattr(namespace, option.field)
        source = option.flag
        if text is None:
            source, text = f"{option.env} ({option.flag})", environ.get(option.env)
        if text is None:
            continue
        try:
            values[option.field] = option.parse(text)
        except ValueError as exc:
            raise ConfigError(f"{source}: {exc}", option.field) from None
        set_by[option.field] = source
    try:
        return StubConfig(**values)
    except ConfigError as exc:
        flag = next((o.flag for o in OPTIONS if o.field == exc.field), None)
        setter = set_by.get(exc.field or "")
        message = str(exc)
        if flag is None or setter is None or not message.startswith(f"{flag}: "):
            raise
        raise ConfigError(setter + message[len(flag):], exc.field) from None
