"""In-process accounts: the real gateway's console read into attempts, and the profile's in-process target.

The console lines are the real 2026.4.24's (copied from in-process runs on 2026-11-30: ANSI colours, shortened
conn ids, the timeout lines' whole uuids); the run end to end is in tests/test_openclaw_inprocess.py.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from harness.accounts.inprocess import UNATTRIBUTED, console_lines, read_console, short_conn
from harness.errors import BadInput
from harness.events import Outcome
from harness.profile import parse_profile
from harness.run.inprocess import homeserver_link
from harness.summary import GatewayLogCounts
from harness.verdict.figures import handler_errors_correlate, handshake_distribution, summarize
from harness.verdict.tables import account_rows

LAUNCH = dt.datetime(2026, 11, 30, 12, 16, 28, tzinfo=dt.UTC)
GREY, CYAN, RESET = "\x1b[90m", "\x1b[36m", "\x1b[39m"


def line(at: str, subsystem: str, message: str) -> str:
    return f"{GREY}2026-11-30T{at}+00:00{RESET} {CYAN}[{subsystem}]{RESET} {CYAN}{message}{RESET}"


def opened(at: str, conn: str, port: int) -> str:
    return line(at, "ws", f"← open remoteAddr=127.0.0.1 remotePort={port} localAddr=127.0.0.1 localPort=49423 "
                f"endpoint=127.0.0.1:{port}->127.0.0.1:49423 conn={conn}")


def connect(at: str, conn: str, account: str) -> str:
    return line(at, "ws", f"← connect client=gateway-client clientDisplayName=Matrix Native Approvals ({account}) "
                f"version=2026.4.24 mode=backend clientId=gateway-client platform=linux auth=token conn={conn}")


UUID = "6ef2a369-1111-4222-8333-44445555a76a"
CONSOLE = "\n".join([
    line("12:16:33.151", "gateway", "ready (7 plugins: acpx, bonjour, browser, device-pair, matrix; 2.1s)"),
    "[21464:0x3a44f000]    36850 ms: Mark-Compact (reduce) 156.9 (302.1) -> 150.5 (173.6) MB",
    opened("12:16:44.040", "6ef2a369…a76a", 40838),
    opened("12:16:49.940", "a7ca184a…f6fa", 40848),
    line("12:16:54.041", "ws", f"handshake timeout conn={UUID} peer=127.0.0.1:40838->127.0.0.1:49423 "
         "remote=127.0.0.1"),
    line("12:16:54.043", "ws", f"closed before connect conn={UUID} peer=127.0.0.1:40838->127.0.0.1:49423 "
         "remote=127.0.0.1 fwd=n/a origin=n/a host=127.0.0.1:49423 ua=n/a code=1000 reason=n/a"),
    line("12:16:54.100", "matrix", "connect error: gateway closed (1000): "),
    "\x1b[90m2026-11-30T12:16:54.101+00:00\x1b[39m gateway connect failed: Error: gateway closed (1000): ",
    line("12:16:54.102", "matrix", "failed to start native approval handler: Error: gateway closed: 1000 "),
    line("12:16:54.300", "ws", "→ close code=1000 durationMs=10260 cause=handshake-timeout handshake=failed "
         "endpoint=127.0.0.1:40838->127.0.0.1:49423 conn=6ef2a369…a76a"),
    connect("12:16:51.241", "a7ca184a…f6fa", "bot007"),
    line("12:16:51.242", "ws", "→ hello-ok methods=136 events=24 presence=2 stateVersion=3"),
    opened("12:16:55.040", "f7cee9b1…02e2", 40876),
    connect("12:16:55.540", "f7cee9b1…02e2", "bot002"),
    opened("12:16:56.000", "0a0a0a0a…0b0b", 40880),
    connect("12:16:56.700", "", "bot001").removesuffix(f" conn={RESET}") + RESET,  # 4.24 left its conn id out
    line("12:17:30.771", "ws", "→ close code=1005 durationMs=138915 handshake=connected lastFrameType=req "
         "endpoint=127.0.0.1:40876->127.0.0.1:49423 conn=f7cee9b1…02e2"),
    line("12:17:31.000", "ws", "← connect client=cli clientDisplayName=openclaw-cli conn=ffffffff…0000"),
    line("12:17:34.759", "matrix", "[bot005] channel exited: Matrix client did not reach a ready sync state within "
         "30000ms"),
])


def test_console_lines_skip_the_gc_trace_and_strip_colours() -> None:
    lines = list(console_lines(CONSOLE))
    assert lines[0].subsystem == "gateway" and lines[0].message.startswith("ready (7 plugins")
    assert lines[0].at == dt.datetime(2026, 11, 30, 12, 16, 33, 151000, tzinfo=dt.UTC)
    assert not any("Mark-Compact" in entry.message for entry in lines)
    assert all("\x1b" not in entry.message for entry in lines)


def test_short_conn_matches_the_console_form() -> None:
    assert short_conn(UUID) == "6ef2a369…a76a"
    assert short_conn("6ef2a369…a76a") == "6ef2a369…a76a"


def test_the_console_becomes_attempts_and_disconnects() -> None:
    ledger = read_console(CONSOLE, LAUNCH)
    timeout, hello, second, third = ledger.attempts
    assert timeout.outcome is Outcome.HANDSHAKE_TIMEOUT and timeout.account == UNATTRIBUTED
    assert timeout.started_ms == pytest.approx(16_040.0) and timeout.latency_ms == pytest.approx(10_001.0)
    assert timeout.close_code == 1000
    assert (hello.account, hello.outcome) == ("bot007", Outcome.HELLO)
    assert hello.latency_ms == pytest.approx(1_301.0)
    assert second.account == "bot002"
    assert (third.account, third.outcome, third.latency_ms) == ("bot001", Outcome.HELLO, pytest.approx(700.0))
    assert [(d.account, d.close_code) for d in ledger.disconnects] == [("bot002", 1005)]
    assert ledger.connected == {"bot007": hello.handler_id, "bot001": third.handler_id}  # bot002 closed; the
    # CLI's connect is no handler
    assert (ledger.handler_connect_errors, ledger.handler_failed_starts, ledger.storm_entries()) == (1, 1, 1)
    assert ledger.channel_exits == 1


def test_a_console_read_in_pieces_gives_the_same_ledger() -> None:
    whole = read_console(CONSOLE, LAUNCH)
    pieces = read_console("", LAUNCH)
    for text in CONSOLE.split("\n"):
        pieces.read(text)
    assert pieces.attempts == whole.attempts and pieces.disconnects == whole.disconnects


def test_the_storm_figures_judge_in_process_attempts() -> None:
    from harness.events import RunRecord

    ledger = read_console(CONSOLE, LAUNCH)
    record = RunRecord(accounts=["bot002", "bot007", "bot001"], attempts=ledger.attempts,
                       disconnects=ledger.disconnects, connected_at_end=frozenset(ledger.connected),
                       duration_ms=120_000.0, startup_window_ms=60_000.0, final_window_ms=30_000.0)
    figures = summarize(record)
    assert figures.storm_entries == 1 and figures.storm_entries_by_kind.handshake_timeout == 1
    assert figures.verdict == "degraded"  # bot002 is not connected at the end
    rows = {row[0]: row for row in account_rows(record)}
    assert list(rows) == ["bot002", "bot007", "bot001", UNATTRIBUTED] and rows[UNATTRIBUTED][3] == 1
    distribution = handshake_distribution(ledger.attempts, 10_000.0)
    assert distribution.count == 4 and distribution.over_timeout == 1
    assert distribution.max == pytest.approx(10_001.0)


@pytest.mark.parametrize(("failures", "timeouts", "accounts", "expected"), [
    (20, 20, 11, True), (20, 31, 11, True), (20, 32, 11, False), (0, 0, 1, True), (5, 0, 1, False)])
def test_handler_errors_correlate_with_the_gateways_timeouts(failures: int, timeouts: int, accounts: int,
                                                               expected: bool) -> None:
    gateway = GatewayLogCounts(handshake_timeout=timeouts, preauth_rejected=None, connect_error=None)
    assert handler_errors_correlate(failures, gateway, accounts) is expected
    assert handler_errors_correlate(failures, None, accounts) is None


def inprocess_profile(**changes: object) -> dict[str, object]:
    profile: dict[str, object] = {
        "name": "inprocess", "duration_s": 120,
        "target": {"kind": "openclaw", "version": "2026.4.24", "cpu_quota": 0.05, "inprocess": True},
        "accounts": {"count": 11}}
    profile.update(changes)
    return profile


def test_an_inprocess_profile_has_matrix_accounts_the_workaround_arm_and_no_probe() -> None:
    profile = parse_profile(inprocess_profile())
    assert profile.target.matrix_accounts == 11 and profile.target.inprocess  # type: ignore[union-attr]
    assert profile.arms == ("shipped", "approvals-off") and profile.probe_interval_ms == 0
    assert profile.target.cpu_quota_from == "ready"  # type: ignore[union-attr]
    launched = parse_profile(inprocess_profile(target={"kind": "openclaw", "version": "2026.4.24", "cpu_quota": 0.1,
                                                       "cpu_quota_from": "launch", "inprocess": True}))
    assert launched.target.cpu_quota_from == "launch"  # type: ignore[union-attr]
    assert profile.target.homeserver_latency_ms == 0  # type: ignore[union-attr]
    far = parse_profile(inprocess_profile(target={"kind": "openclaw", "version": "2026.4.24", "inprocess": True,
                                                  "homeserver_latency_ms": 2000}))
    assert far.target.homeserver_latency_ms == 2000  # type: ignore[union-attr]


@pytest.mark.parametrize(("changes", "message"), [
    ({"arms": ["shipped", "coordinator"]}, "arms[1]: 'coordinator' is a start policy of the harness's fake accounts"),
    ({"probe": {"interval_ms": 1000}}, "probe.interval_ms: in-process runs have no health probe"),
    ({"accounts": {"count": 2, "channels": {"telegram": 2}}}, "accounts.channels: in-process accounts are Matrix"),
    ({"faults": [{"at_s": 30, "gateway_down": True}]}, "faults: in-process handlers"),
    ({"target": {"kind": "openclaw", "version": "2026.4.24", "cpu_quota_from": "launch"}},
     "target.cpu_quota_from: only with cpu_quota"),
    ({"target": {"kind": "openclaw", "version": "2026.4.24", "cpu_quota": 0.1, "cpu_quota_from": "boot"}},
     "target.cpu_quota_from: expected ready or launch, got 'boot'"),
    ({"target": {"kind": "openclaw", "version": "2026.4.24", "homeserver_latency_ms": 2000}},
     "target.homeserver_latency_ms: only with inprocess: true"),
    ({"target": {"kind": "openclaw", "version": "2026.4.24", "inprocess": True, "homeserver_latency_ms": -1}},
     "target.homeserver_latency_ms: expected"),
])
def test_what_cannot_run_in_process_is_refused_in_one_line(changes: dict[str, object], message: str) -> None:
    with pytest.raises(BadInput) as refused:
        parse_profile(inprocess_profile(**changes))
    assert message in str(refused.value)


def test_the_workaround_arm_needs_an_inprocess_target() -> None:
    with pytest.raises(BadInput, match=r"arms\[1\]: 'approvals-off' switches the real gateway's own config"):
        parse_profile({"name": "stub", "accounts": {"count": 2}, "arms": ["shipped", "approvals-off"]})


@pytest.mark.subprocess
def test_a_far_homeserver_answers_through_the_proxy_that_late(tmp_path: Path) -> None:
    """`homeserver_latency_ms`: the gateway's homeserver URL is a Toxiproxy proxy whose answers come that late."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Versions)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        link = homeserver_link(400, tmp_path)
        assert link is not None and homeserver_link(0, tmp_path) is None
        with link(f"http://127.0.0.1:{server.server_address[1]}") as url:
            assert url.startswith("http://127.0.0.1:") and not url.endswith(f":{server.server_address[1]}")
            started = time.monotonic()
            with urllib.request.urlopen(f"{url}/_matrix/client/versions", timeout=10) as answer:
                assert json.loads(answer.read()) == {"versions": ["v1.11"]}
            assert time.monotonic() - started >= 0.4
    finally:
        server.shutdown()
        server.server_close()


class _Versions(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
        body = b'{"versions": ["v1.11"]}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the standard library's name)
        pass
