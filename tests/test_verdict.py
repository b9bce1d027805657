"""The verdict and its figures, from hand-written event lists (no sockets, no clock)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from harness.backends.openclaw import OpenClawGateway
from harness.errors import EXIT_INCONCLUSIVE, EXIT_OK, EXIT_THRESHOLD_FAILED
from harness.events import Attempt, Disconnect, HealthSample, Outcome, RunRecord
from harness.host import HostTick
from harness.summary import (
    GatewayLogCounts,
    HostFigures,
    LoopLagFigures,
    ProcessCpuFigures,
    StormCounts,
    UrlTargetRecord,
)
from harness.verdict.distribution import distribution, exit_code
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


def test_timeline_shows_the_slowest_health_call_and_worst_loop_delay_of_each_second() -> None:
    health = [HealthSample(100, 12.0, 3.0), HealthSample(600, 40.0, 25.0), HealthSample(1_200, 350.0, None),
              HealthSample(3_900, 9.0, 1.5)]
    run = RunRecord(accounts=ACCOUNTS, attempts=[], disconnects=[], connected_at_end=frozenset(), duration_ms=4_000,
                    startup_window_ms=0, final_window_ms=1_000, health=health)
    rows = timeline(run)
    assert [(r.health_rpc_ms, r.event_loop_lag_ms) for r in rows] == [
        (40.0, 25.0), (350.0, None), (None, None), (9.0, 1.5)]  # None: no call sent, or no delay reported
    assert run.health_rpc_ms == [12.0, 40.0, 350.0, 9.0]


def test_recovered_when_storm_entries_after_startup_end_and_everyone_is_back() -> None:
    # A storm from 25 to 45 s (startup ends at 20 s), b back at 52 s, a at 50 s; the final window (70 s on) is clean.
    attempts = [attempt("a", t, Outcome.HANDSHAKE_TIMEOUT) for t in (25, 35, 45)]
    attempts += [attempt("b", t, Outcome.HANDSHAKE_TIMEOUT, handler=2) for t in (26, 36)]
    attempts += [attempt("a", 50, Outcome.HELLO, handler=3), attempt("b", 52, Outcome.HELLO, handler=4)]
    summary = summarize(record(attempts, {"a", "b"}))
    assert summary.verdict == "recovered"
    assert summary.recovered_at_s == 52  # every account connected again after the last storm entry (45 s)
    assert summary.storm_entries_after_startup == 5 and summary.final_window_storm_entries == 0


def test_storm_entries_inside_the_startup_window_still_converge() -> None:
    attempts = [attempt("a", 10, Outcome.HANDSHAKE_TIMEOUT), attempt("a", 15, Outcome.HELLO, handler=2),
                attempt("b", 5, Outcome.HELLO)]
    summary = summarize(record(attempts, {"a", "b"}))
    assert (summary.verdict, summary.recovered_at_s) == ("converged", None)


def test_a_storm_that_clears_but_leaves_someone_out_is_degraded_not_recovered() -> None:
    attempts = [attempt("a", t, Outcome.HANDSHAKE_TIMEOUT) for t in (25, 35)] + [attempt("b", 5, Outcome.HELLO)]
    assert summarize(record(attempts, {"b"})).verdict == "degraded"


def host(harness_waited: float = 0.01, gateway_waited: float | None = 0.01, steal: float | None = 0.0,
         lag_p99_ms: float | None = 100.0) -> HostFigures:
    def cpu(fraction: float) -> ProcessCpuFigures:
        return ProcessCpuFigures(cpu_s=5.0, waited_s=fraction * 20, waited_fraction=fraction)

    return HostFigures(cores=2, wall_s=20.0, harness=cpu(harness_waited),
                       gateway=None if gateway_waited is None else cpu(gateway_waited), steal_fraction=steal,
                       cpu_pressure_fraction=0.2, harness_loop_lag_ms=LoopLagFigures(p99=lag_p99_ms, max=lag_p99_ms))


def storm_meta(host_figures: HostFigures | None) -> RunMeta:
    return RunMeta(profile="p", arm="coordinator", seed=1, time_scale=0.1, wall_clock_s=20.0, host=host_figures,
                   handshake_timeout_ms=10_000, target=UrlTargetRecord(kind="url", url="ws://127.0.0.1:1/", protocol=3))


@pytest.mark.parametrize(("figures", "reason"), [
    (host(harness_waited=0.40), "the harness's processes waited for a CPU 40% of the run (limit 25%)"),
    (host(gateway_waited=0.12), "the gateway's processes waited for a CPU 12% of the run (limit 10%)"),
    (host(gateway_waited=0.30), "the gateway's processes waited for a CPU 30% of the run"),
    (host(steal=0.2), "the hypervisor stole 20% of the CPU"),
    (host(lag_p99_ms=1500.0), "the harness's event loop ran its timers 1500 ms late"),
])
def test_a_busy_host_makes_the_verdict_inconclusive_never_a_storm(figures: HostFigures, reason: str) -> None:
    storm = [attempt("a", t, Outcome.HANDSHAKE_TIMEOUT) for t in (75, 85, 95)]
    converged = [parse_threshold("verdict", "converged")]
    summary = judge(storm_meta(figures), record(storm, set()), converged)
    assert (summary.verdict, summary.observed_verdict) == ("inconclusive", "storm")
    assert summary.inconclusive_reason is not None and summary.inconclusive_reason.startswith(reason)
    assert exit_code([distribution([summary], converged)]) == EXIT_INCONCLUSIVE  # not the failed threshold's 1


def test_a_gateway_throttled_by_its_cpu_quota_is_not_judged_by_its_wait_but_the_harness_still_is() -> None:
    storm = [attempt("a", t, Outcome.HANDSHAKE_TIMEOUT) for t in (75, 85, 95)]
    throttled = host(gateway_waited=0.94).model_copy(update={"gateway_cpu_quota": 0.05})
    assert judge(storm_meta(throttled), record(storm, set())).verdict == "storm"
    busy = host(gateway_waited=0.94, harness_waited=0.40).model_copy(update={"gateway_cpu_quota": 0.05})
    assert judge(storm_meta(busy), record(storm, set())).inconclusive_reason.startswith("the harness's processes")


def test_an_unthrottled_real_gateway_stalling_on_its_own_leaves_no_verdict(tmp_path: Path) -> None:
    # The console line of a 2026.4.29 failover run whose duplicates came out short (CI, 2026-11-30).
    gateway = OpenClawGateway("2026.4.29", log_dir=tmp_path)
    gateway.log_path.write_bytes(
        b"\x1b[90m2026-11-30T16:34:25.190+00:00\x1b[39m \x1b[36m[diagnostic]\x1b[39m \x1b[33mliveness warning: "
        b"reasons=event_loop_delay interval=36s eventLoopDelayP99Ms=178 eventLoopDelayMaxMs=13581.2 "
        b"eventLoopUtilization=0.688 cpuCoreRatio=0.288 active=0 waiting=0 queued=0\x1b[39m\n")
    assert gateway.longest_loop_stall_ms() == 13581.2
    assert gateway.longest_loop_stall_ms(since=gateway.console_size()) is None  # what came before a mark
    run = record([attempt("a", 5, Outcome.HELLO)], {"a"})
    judged_plainly = judge(storm_meta(host()), run).verdict
    stalled = replace(storm_meta(host()), gateway_loop_stall_ms=13581.2)
    summary = judge(stalled, run)
    assert (summary.verdict, summary.observed_verdict) == ("inconclusive", judged_plainly)
    assert summary.inconclusive_reason.startswith("the gateway's own event loop stalled for 13.6 s")
    assert judge(replace(stalled, gateway_loop_stall_ms=4000.0), run).verdict == judged_plainly  # under 5 s
    throttled = host().model_copy(update={"gateway_cpu_quota": 0.05})  # under a quota a stall is the subject
    assert judge(replace(stalled, host=throttled), run).verdict == judged_plainly


def ticks(busy_from_s: float, busy_to_s: float, fraction: float = 0.5, role: str = "gateway") -> tuple[HostTick, ...]:
    """A 10 s run (real time) whose `role` waits `fraction` of each second between the two times, 1% otherwise."""
    out, waited = [HostTick(0.0, 0.0, 0.0)], 0.0
    for second in range(1, 11):
        waited += fraction if busy_from_s < second <= busy_to_s else 0.01
        out.append(HostTick(float(second), waited if role == "harness" else 0.01 * second,
                            waited if role == "gateway" else 0.01 * second))
    return tuple(out)


@pytest.mark.parametrize("role", ["gateway", "harness"])
def test_a_burst_of_contention_while_the_storm_entries_happen_makes_the_verdict_inconclusive(role: str) -> None:
    # The coordinator's storm entries after startup at 25-45 s of scenario time, 2.5-4.5 s real at time scale
    # 0.1; over the whole 10 s run the role waited under its limit, but within those seconds half the time.
    attempts = [attempt("a", t, Outcome.HANDSHAKE_TIMEOUT) for t in (25, 35, 45)]
    attempts += [attempt("a", 50, Outcome.HELLO, handler=4), attempt("b", 5, Outcome.HELLO)]
    quiet_overall = host(gateway_waited=0.08, harness_waited=0.2)
    burst = replace(storm_meta(quiet_overall), host_ticks=ticks(1, 5, 0.5, role))
    summary = judge(burst, record(attempts, {"a", "b"}))
    assert (summary.verdict, summary.observed_verdict) == ("inconclusive", "recovered")
    assert summary.inconclusive_reason is not None
    assert summary.inconclusive_reason.startswith(f"the {role}'s processes waited for a CPU")
    assert "in which the storm entries after startup happened" in summary.inconclusive_reason
    # the same burst outside the storm entries' seconds, and no storm entries at all, leave the verdict alone
    later = replace(storm_meta(quiet_overall), host_ticks=ticks(6, 9, 0.5, role))
    assert judge(later, record(attempts, {"a", "b"})).verdict == "recovered"
    clean = [attempt("a", 30, Outcome.HELLO), attempt("b", 5, Outcome.HELLO)]
    assert judge(burst, record(clean, {"a", "b"})).verdict == "converged"


def test_a_quiet_host_leaves_the_verdict_alone_and_a_failed_arm_outranks_an_inconclusive_one() -> None:
    storm = [attempt("a", t, Outcome.HANDSHAKE_TIMEOUT) for t in (75, 85, 95)]
    converged, storm_expected = [parse_threshold("verdict", "converged")], [parse_threshold("verdict", "storm")]
    quiet = judge(storm_meta(host(gateway_waited=None)), record(storm, set()), converged)
    assert (quiet.verdict, quiet.inconclusive_reason, quiet.passed) == ("storm", None, False)
    busy = judge(storm_meta(host(harness_waited=0.5)), record(storm, set()), storm_expected)
    assert exit_code([distribution([quiet], converged), distribution([busy], storm_expected)]) == EXIT_THRESHOLD_FAILED
    no_host = judge(storm_meta(None), record(storm, set()), storm_expected)
    assert exit_code([distribution([no_host], storm_expected)]) == EXIT_OK


@pytest.mark.parametrize(("metric", "spec", "over", "describe"), [
    ("verdict", "converged in >= 9/10", "distribution", "converged in >= 9/10"),
    ("verdict", "storm or recovered in == 1/1", "distribution", "storm or recovered in == 1/1"),
    ("time_to_all_connected_s", "median < 30", "distribution", "median < 30"),
    ("storm_entries", "max <= 2", "distribution", "max <= 2"),
    ("storm_entries", "<= 2", "run", "<= 2"),
])
def test_thresholds_over_a_distribution_parse(metric: str, spec: str, over: str, describe: str) -> None:
    threshold = parse_threshold(metric, spec)
    assert (threshold.over, threshold.describe()) == (over, describe)


@pytest.mark.parametrize(("metric", "spec", "message"), [
    ("verdict", "converged in >= 11/10", "expected a share like 9/10"),
    ("verdict", "stormy in >= 1/2", "expected a verdict"),
    ("storm_entries", "mean < 3", "expected a threshold like"),
    ("storm_entries", "x" * 500, "…"),  # the value is cut, never formatted whole
])
def test_bad_distribution_thresholds_are_refused(metric: str, spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        parse_threshold(metric, spec)
    assert len(str(caught.value)) < 400


def test_a_repeat_counts_verdicts_and_judges_only_the_conclusive_runs() -> None:
    shares = [parse_threshold("verdict", "storm in >= 9/10"), parse_threshold("storm_entries", "median >= 3"),
              parse_threshold("verdict", "storm")]
    storm = [attempt("a", t, Outcome.HANDSHAKE_TIMEOUT) for t in (75, 85, 95)]
    runs = [judge(storm_meta(host()), record(storm, set()), shares),
            judge(storm_meta(host()), record(storm[:2] + [attempt("a", 99, Outcome.HANDSHAKE_TIMEOUT)], set()), shares),
            judge(storm_meta(host(harness_waited=0.6)), record([], {"a", "b"}), shares)]
    spread = distribution(runs, shares)
    assert (spread.repeats, spread.conclusive, spread.runs_passed) == (3, 2, 2)
    assert spread.verdicts == {"storm": 2, "inconclusive": 1}
    assert [(t.threshold, t.value, t.passed) for t in spread.thresholds] == [
        ("storm in >= 9/10", 1.0, True), ("median >= 3", 3.0, True)]
    assert spread.figures["storm_entries"].model_dump() == {"median": 3.0, "min": 3.0, "max": 3.0, "nulls": 0}
    assert spread.figures["time_to_all_connected_s"].nulls == 2
    assert exit_code([spread]) == EXIT_OK


def test_a_figure_missing_in_one_run_fails_a_threshold_over_the_distribution() -> None:
    median = [parse_threshold("time_to_all_connected_s", "median < 100")]
    connected = [attempt("a", 5, Outcome.HELLO), attempt("b", 6, Outcome.HELLO)]
    runs = [judge(storm_meta(None), record(connected, {"a", "b"}), median),
            judge(storm_meta(None), record(connected[:1], {"a"}), median)]
    [result] = distribution(runs, median).thresholds
    assert (result.value, result.passed) == (None, False)


def test_the_host_meter_notes_each_roles_waits_as_they_grow() -> None:
    import os
    import time

    from harness.host import HostMeter

    meter = HostMeter(lambda: [os.getpid()])
    meter.start()
    for _ in range(3):
        deadline = time.monotonic() + 0.05
        while time.monotonic() < deadline:  # some CPU, so the readings move
            pass
        meter.tick()
    window = meter.stop()
    assert window is not None and len(window.ticks) == 5  # the start, three ticks, the end
    assert [t.at_s for t in window.ticks] == sorted(t.at_s for t in window.ticks) and window.ticks[0].at_s == 0.0
    if window.harness is not None:  # Linux with schedstats: cumulative waits never shrink
        waits = [t.harness_waited_s for t in window.ticks]
        assert all(w is not None for w in waits) and waits == sorted(waits)  # type: ignore[type-var]
        assert waits[-1] == pytest.approx(window.harness.waited_s)
