"""The verdict and its figures, from hand-written event lists (no sockets, no clock)."""

from __future__ import annotations

from typing import Any

import pytest

from harness.events import Attempt, Disconnect, Outcome, RunRecord
from harness.summary import GatewayLogCounts, StormCounts, UrlTargetRecord
from harness.verdict.figures import gateway_storm_counts, summarize, timeline
from harness.verdict.judge import RunMeta, judge
from harness.verdict.thresholds import parse_threshold

ACCOUNTS = ["a", "b"]


def attempt(account: str, ended_s: float, outcome: Outcome, handler: int = 1, took_s: float = 1.0) -> Attempt:
    return Attempt(account, handler, (ended_s - took_s) * 1000, ended_s * 1000, outcome,
                   1000 if outcome is Outcome.HANDSHAKE_TIMEOUT else None)


def record(attempts: list[Attempt], connected: set[str], disconnects: list[Disconnect] | None = None,
           **extra: Any) -> RunRecord:
    return RunRecord(accounts=ACCOUNTS, attempts=attempts, disconnects=disconnects or [],
                     connected_at_end=frozenset(connected), duration_ms=100_000, startup_window_ms=20_000,
                     final_window_ms=30_000, **extra)


def test_storm_when_entries_continue_into_the_final_window() -> None:
    attempts = [attempt("a", t, Outcome.HANDSHAKE_TIMEOUT) for t in (11, 22, 33, 44, 55, 66, 77, 88, 99)]
    summary = summarize(record(attempts + [attempt("b", 2, Outcome.HELLO)], {"b"}))
    assert summary.verdict == "storm"
    assert summary.storm_entries == 9
    assert summary.final_window_storm_entries == 3  # 77, 88, 99 are at or after 70 s
    assert summary.storm_entries_after_startup == 8
    assert summary.storm_entries_by_kind == StormCounts(handshake_timeout=9, preauth_rejected=0, connect_error=0)
    assert summary.time_to_all_connected_s is None
    assert [w.at_s for w in summary.witnesses] == [77, 88, 99]


def test_converged_when_everyone_holds_a_connection_and_the_final_window_is_clean() -> None:
    attempts = [attempt("a", 11, Outcome.HANDSHAKE_TIMEOUT), attempt("a", 13, Outcome.HELLO, handler=2),
                attempt("b", 5, Outcome.HELLO)]
    summary = summarize(record(attempts, {"a", "b"}))
    assert summary.verdict == "converged"
    assert summary.time_to_all_connected_s == 13
    assert summary.storm_entries_after_startup == 0
    assert summary.handshake_ms.max == 1000


def test_degraded_when_quiet_but_not_everyone_is_connected() -> None:
    summary = summarize(record([attempt("a", 5, Outcome.HELLO), attempt("b", 10, Outcome.REJECTED)], {"a"}))
    assert summary.verdict == "degraded"
    assert summary.storm_entries_by_kind.connect_error == 1


def test_a_disconnect_delays_all_connected() -> None:
    attempts = [attempt("a", 5, Outcome.HELLO), attempt("b", 20, Outcome.HELLO),
                attempt("a", 30, Outcome.HELLO, handler=2)]
    summary = summarize(record(attempts, {"a", "b"}, [Disconnect("a", 1, 10_000, 1006, "")]))
    assert summary.time_to_all_connected_s == 30


def _log(message: str, cause: str | None = None, event: str = "ws.closed_before_connect") -> dict[str, Any]:
    return {"0": '{"subsystem":"gateway/ws"}', "1": {"cause": cause} if cause else {}, "2": message,
            "message": message, "event": event}


def test_gateway_log_counts_match_the_real_gateways_records() -> None:
    real_4_24 = {"0": '{"subsystem":"gateway/ws"}', "1": {"cause": "handshake-timeout", "handshakeMs": 2006},
                 "2": "closed before connect conn=x peer=p remote=127.0.0.1 code=1000 reason=n/a"}
    assert gateway_storm_counts([real_4_24, real_4_24]) == GatewayLogCounts(
        handshake_timeout=2, preauth_rejected=None, connect_error=None)
    stub = [_log("closed before connect conn=1", "handshake-timeout"), _log("closed before connect conn=2"),
            _log("preauth budget exceeded", event="http.preauth_rejected")]
    assert gateway_storm_counts(stub) == GatewayLogCounts(handshake_timeout=1, preauth_rejected=1, connect_error=None)


def test_a_late_handshake_timer_is_counted_once_from_its_warning() -> None:
    # Recorded on 2026.4.24 at 5% of a core: the timer fired 14.7 s after open, the connect frame was
    # handled after it, and the close was logged as `→ close … cause=handshake-timeout handshake=connected`,
    # with no `closed before connect` record. Its warning is what counts it.
    warning = {"0": '{"subsystem":"gateway/ws"}', "1": "handshake timeout conn=49f63836 peer=p remote=127.0.0.1"}
    normal = [{"0": '{"subsystem":"gateway/ws"}', "1": "handshake timeout conn=aa peer=p remote=127.0.0.1"},
              {"0": '{"subsystem":"gateway/ws"}', "1": {"cause": "handshake-timeout"},
               "2": "closed before connect conn=aa peer=p remote=127.0.0.1 code=1000 reason=n/a"}]
    assert gateway_storm_counts([warning, *normal]).handshake_timeout == 2


@pytest.mark.parametrize(("logged", "agree"), [(3, True), (5, True), (6, False)])
def test_sources_agree_within_one_in_flight_attempt_per_account(logged: int, agree: bool) -> None:
    attempts = [attempt("a", t, Outcome.HANDSHAKE_TIMEOUT) for t in (10, 20, 30)]
    records = [_log("closed before connect", "handshake-timeout")] * logged
    summary = summarize(record(attempts, set(), gateway_records=records))
    assert summary.storm_entries_by_source.gateway_log.handshake_timeout == logged
    assert summary.sources_agree is agree


def test_the_probes_own_timeouts_are_reconciled() -> None:
    records = [_log("closed before connect", "handshake-timeout")] * 9
    summary = summarize(record([], set(), gateway_records=records, probe_handshake_timeouts=8))
    assert summary.sources_agree is True


def test_thresholds_check_numbers_and_verdicts() -> None:
    meta = RunMeta(profile="p", arm="shipped", seed=1, time_scale=1.0, wall_clock_s=1.0,
                   target=UrlTargetRecord(kind="url", url="ws://127.0.0.1:1/", protocol=3))
    summary = judge(meta, record([attempt("a", 90, Outcome.HANDSHAKE_TIMEOUT)], set()),
                    [parse_threshold("verdict", "storm"), parse_threshold("storm_entries", "== 0"),
                     parse_threshold("storm_entries_by_kind.handshake_timeout", ">= 1"),
                     parse_threshold("time_to_all_connected_s", "< 30")])
    assert [(c.metric, c.passed) for c in summary.thresholds] == [
        ("verdict", True), ("storm_entries", False), ("storm_entries_by_kind.handshake_timeout", True),
        ("time_to_all_connected_s", False)]  # null never meets a numeric threshold


@pytest.mark.parametrize(("metric", "spec", "message"), [
    ("storms", "== 0", "unknown metric"),
    ("verdict", "stormy", "expected a verdict"),
    ("storm_entries", "about 3", "expected a threshold like"),
    ("storm_entries", True, "expected a threshold like"),
])
def test_bad_thresholds_are_refused(metric: str, spec: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_threshold(metric, spec)


def test_timeline_counts_each_second_and_shows_the_faults_active() -> None:
    attempts = [attempt("a", 1.5, Outcome.HELLO), attempt("b", 2.2, Outcome.HANDSHAKE_TIMEOUT),
                attempt("b", 3.4, Outcome.HELLO, handler=2)]
    run = RunRecord(accounts=ACCOUNTS, attempts=attempts, disconnects=[Disconnect("a", 1, 3_100, 1006, "")],
                    connected_at_end=frozenset({"b"}), duration_ms=5_000, startup_window_ms=0, final_window_ms=1_000)
    rows = timeline(run, [(0, 2.0, 3.0)])
    assert [(r.t_s, r.attempts, r.hellos, r.storm_entries, r.connected, r.faults) for r in rows] == [
        (0, 0, 0, 0, 0, []),
        (1, 1, 1, 0, 1, []),        # a connects at 1.5 s
        (2, 1, 0, 1, 1, [0]),       # b times out during the fault window
        (3, 1, 1, 0, 1, []),        # a drops at 3.1 s, b connects at 3.4 s
        (4, 0, 0, 0, 1, []),
    ]
