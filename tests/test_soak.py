"""The soak: its plan, its growth fits, its history and regressions, and a short soak end to end."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.errors import BadInput
from harness.soak.history import MIGRATIONS, Night, nights, opened, record, regressions
from harness.soak.plan import load_plan, parse_tolerance
from harness.soak.resources import growth, sample_processes

ROOT = Path(__file__).resolve().parent.parent
MATRIX_11 = ROOT / "profiles" / "matrix-11-accounts.yaml"
INPROCESS = ROOT / "profiles" / "openclaw-2026.4.24-matrix-inprocess.yaml"


def write_plan(folder: Path, **changes: Any) -> Path:
    plan: dict[str, Any] = {
        "name": "test-soak", "time_scale": 0.05, "cycles": 1, "warmup_minutes": 0, "sample_interval_s": 1,
        "runs": [{"profile": str(MATRIX_11), "arms": ["shipped", "coordinator"],
                  "expect": {"shipped": "storm", "coordinator": "converged"}, "duration_s": 120}],
    }
    plan.update(changes)
    path = folder / "plan.yaml"
    path.write_text(yaml.safe_dump(plan))
    return path


def harness(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.parametrize(("change", "line"), [
    ({"cycles": None}, "duration_minutes: required (or cycles): a soak must end by itself"),
    ({"runs": [{"profile": "no-such.yaml"}]}, "runs[0].profile: "),
    ({"runs": [{"profile": str(MATRIX_11), "arms": ["stable-id"]}]}, "runs[0].arms: expected arms of matrix-11"),
    ({"runs": [{"profile": str(MATRIX_11), "expect": {"shipped": "stormy"}}]},
     "runs[0].expect: shipped: expected a verdict"),
    ({"sample_interval_s": 0}, "sample_interval_s: expected a number >= 0.5"),
    ({"tolerances": {"time_to_all_connected_s": "25%"}}, "tolerances.time_to_all_connected_s: expected"),
    ({"tolerances": {"verdict_of_the_night": "+1"}}, "tolerances.verdict_of_the_night: expected a figure"),
    ({"bounds": {"rss_percent_per_hour": -1}}, "bounds.rss_percent_per_hour: expected a number >= 0"),
    ({"runz": []}, "runz: unknown key"),
    ({"runs": [{"profile": str(MATRIX_11)}, {"profile": str(MATRIX_11), "arms": ["coordinator"]}]},
     "runs[1].name: expected a name of its own: an earlier run is already called matrix-11-accounts"),
    ({"runs": [{"profile": str(MATRIX_11), "name": "a/b"}]}, "runs[0].name: expected letters, digits"),
    ({"runs": [{"profile": str(MATRIX_11), "sigterm_after_s": 10}]},
     "runs[0].sigterm_after_s: expected a run against the real gateway (target kind openclaw)"),
    ({"runs": [{"profile": str(MATRIX_11), "own_gateway": "yes"}]}, "runs[0].own_gateway: expected"),
    ({"time_scale": 1, "runs": [{"profile": str(INPROCESS)}]},
     "runs[0].profile: openclaw-2026.4.24-matrix-inprocess runs in-process accounts"),
])
def test_a_bad_plan_is_one_line_naming_the_field_and_exit_2(tmp_path: Path, change: dict[str, Any],
                                                            line: str) -> None:
    path = write_plan(tmp_path, **change)
    with pytest.raises(BadInput) as raised:
        load_plan(path)
    assert line in str(raised.value) and str(path) in str(raised.value)
    result = harness("soak", str(path), "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and line in lines[0], result.stderr


def test_gateway_option_aims_every_run_at_another_gateway(tmp_path: Path) -> None:
    assert load_plan(write_plan(tmp_path)).gateway_name == "stub"
    assert load_plan(write_plan(tmp_path), "stub-docker").gateway_name == "stub-docker"
    plan = load_plan(write_plan(tmp_path), "openclaw@2026.4.24")
    assert plan.gateway_name == "openclaw@2026.4.24"
    assert plan.runs[0].profile.target.handshake_timeout_ms == 10000  # kept from the profile
    with pytest.raises(BadInput, match="--gateway: expected stub, stub-docker or openclaw@VERSION, got 'nginx'"):
        load_plan(write_plan(tmp_path), "nginx")


def test_a_tolerance_for_a_runs_arm_comes_before_one_for_the_arm_in_every_run(tmp_path: Path) -> None:
    plan = load_plan(write_plan(tmp_path, tolerances={"storm_entries_after_startup": {
        "coordinator": "max 0", "latency-spike/coordinator": "max 80"}, "time_to_all_connected_s": "+10%"}))
    assert plan.tolerance("storm_entries_after_startup", "latency-spike/coordinator").text == "max 80"
    assert plan.tolerance("storm_entries_after_startup", "matrix-11-accounts/coordinator").text == "max 0"
    assert plan.tolerance("storm_entries_after_startup", "matrix-11-accounts/shipped") is None
    assert plan.tolerance("time_to_all_connected_s", "matrix-11-accounts/shipped").text == "+10%"


def test_tolerances_read_as_written() -> None:
    assert parse_tolerance("+25%").exceeded(12.6, 10.0) and not parse_tolerance("+25%").exceeded(12.4, 10.0)
    assert parse_tolerance("+2").exceeded(12.1, 10.0) and not parse_tolerance("+2").exceeded(12.0, 10.0)
    assert parse_tolerance("max 0").exceeded(1, None) and not parse_tolerance("max 0").exceeded(0, 5.0)
    assert not parse_tolerance("+25%").exceeded(100.0, None)  # no earlier night: nothing to regress from
    assert parse_tolerance("25%") is None and parse_tolerance("max") is None


def test_growth_finds_a_steady_leak_and_not_a_saw_tooth() -> None:
    times = [i * 5.0 for i in range(720)]  # an hour, every 5 s
    leak = [100.0 + 0.002 * t + (3.0 if i % 40 < 20 else 0.0) for i, t in enumerate(times)]  # 7.2 MB/h + GC saw
    fit = growth(times, leak)
    assert fit is not None and 6.5 < fit.per_hour < 8.0 and fit.low > 0
    assert fit.percent_per_hour().exceeds(5.0)
    saw = [100.0 + (3.0 if i % 40 < 20 else 0.0) + (50.0 if i == 300 else 0.0) for i in range(720)]
    flat = growth(times, saw)
    assert flat is not None and abs(flat.per_hour) < 0.5 and not flat.percent_per_hour().exceeds(5.0)
    assert growth(times[:5], leak[:5]) is None  # too few samples to say


def test_a_process_sample_reads_this_process() -> None:
    sample = sample_processes([os.getpid(), 2**22 + 12345])  # the second is no process: left out
    assert sample is not None and sample.pids == [os.getpid()]
    assert sample.rss_mb > 10 and sample.descriptors >= 3
    assert sample_processes([2**22 + 12345]) is None


def test_a_process_sample_says_what_kind_its_descriptors_are(tmp_path: Path) -> None:
    import socket

    before = sample_processes([os.getpid()])
    read_end, write_end = os.pipe()
    with socket.socket(), (tmp_path / "f").open("w"):
        after = sample_processes([os.getpid()])
    os.close(read_end), os.close(write_end)
    assert before is not None and after is not None
    assert sum(after.descriptor_kinds.values()) == after.descriptors
    changed = {kind: after.descriptor_kinds.get(kind, 0) - before.descriptor_kinds.get(kind, 0)
               for kind in ("pipe", "socket", "file")}
    assert changed == {"pipe": 2, "socket": 1, "file": 1}


def test_history_migrates_records_and_finds_a_planted_regression(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite"
    plan = load_plan(write_plan(tmp_path, tolerances={"storm_entries_after_startup": {"coordinator": "max 0"}}))
    with opened(path) as connection:
        assert connection.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        for night, seconds in (("2026-11-20", 22.0), ("2026-11-21", 23.0), ("2026-11-22", 22.5)):
            record(connection, night, f"{night}T02:00:00+00:00", "test-soak", "stub", 10, 0,
                   {("m/coordinator", "time_to_all_connected_s"): seconds,
                    ("m/coordinator", "storm_entries_after_startup"): 0.0})
        earlier = nights(connection, "test-soak", "stub", limit=7)
    assert [n.night for n in earlier] == ["2026-11-20", "2026-11-21", "2026-11-22"]
    fine = Night(0, "2026-11-23", "test-soak", "stub", {("m/coordinator", "time_to_all_connected_s"): 27.0})
    assert regressions(fine, earlier, plan.tolerance) == []  # +20% on the median of 22.5: inside +25%
    slow = Night(0, "2026-11-23", "test-soak", "stub", {("m/coordinator", "time_to_all_connected_s"): 29.0,
                                                         ("m/coordinator", "storm_entries_after_startup"): 3.0})
    found = [r.line() for r in regressions(slow, earlier, plan.tolerance)]
    assert found == [
        "regression: m/coordinator storm_entries_after_startup 3 (median 0 over 3 nights; tolerance max 0)",
        "regression: m/coordinator time_to_all_connected_s 29 (median 22.5 over 3 nights; tolerance +25%)"]


def test_a_history_newer_than_this_harness_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite"
    connection = sqlite3.connect(path)
    connection.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    connection.close()
    with pytest.raises(BadInput, match="has schema version 2; this harness knows up to 1"), opened(path):
        pass
    (tmp_path / "junk").write_bytes(b"not a database at all" * 100)
    with pytest.raises(BadInput, match="is not an SQLite history"), opened(tmp_path / "junk"):
        pass


@pytest.mark.slow
def test_a_soak_writes_samples_cycles_and_history_and_the_next_night_reports_a_planted_regression(
        tmp_path: Path) -> None:
    # The planted regression is on the harness's own memory, a figure every night has: a run's figures are left
    # out of the night when the host was too busy to judge it (inconclusive), and this test must hold then too.
    plan = write_plan(tmp_path, tolerances={"rss_mb": "+25%"})
    history = tmp_path / "history.sqlite"
    first = harness("soak", str(plan), "--out", str(tmp_path / "night-1"), "--history", str(history))
    assert first.returncode == 0, first.stderr[-3000:]
    out = tmp_path / "night-1"
    soak = json.loads((out / "soak.json").read_text())
    expected = {"shipped": "storm", "coordinator": "converged"}
    assert [c["arm"] for c in soak["cycles"]] == ["shipped", "coordinator"]
    assert all(c["ok"] and c["verdict"] in (expected[c["arm"]], "inconclusive") for c in soak["cycles"])
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(samples) >= 5
    assert {"harness", "gateway-1"} <= set(samples[-1]["processes"])
    # the stub's and the harness's live heap (CPython's allocated blocks) beside their resident memory
    assert all(row["python_allocated_blocks"] > 10_000 for row in samples[-1]["processes"].values() if row)
    assert sum(1 for sample in samples if sample.get("at_rest")) == len(soak["cycles"])  # one after each run
    assert any(s["storm_entries"] for s in samples if s["run"] == "matrix-11-accounts/shipped")
    # the live heap, descriptors and sockets are fitted on the samples after each run: two are too few for a fit
    assert {f["resource"] for f in soak["resources"]} == {"rss_percent_per_hour"}
    assert all(f["not_judged"].startswith("its live heap is judged") for f in soak["resources"]
               if f["resource"] == "rss_percent_per_hour")
    assert "| matrix-11-accounts/shipped (expect storm) | 1 |" in first.stdout
    assert (out / "report.html").is_file() and (out / "junit.xml").is_file()
    assert (out / "cycle-001" / "matrix-11-accounts" / "coordinator" / "summary.json").is_file()

    # Plant a regression: the first night's harness needed a tenth of the memory it needs.
    with sqlite3.connect(history) as connection:
        (before,) = connection.execute("SELECT value FROM figures WHERE arm = 'resource/harness' "
                                       "AND figure = 'rss_mb'").fetchone()
        connection.execute("UPDATE figures SET value = ? WHERE arm = 'resource/harness' AND figure = 'rss_mb'",
                           (before / 10,))
    second = harness("soak", str(plan), "--out", str(tmp_path / "night-2"), "--history", str(history))
    assert second.returncode == 5, second.stderr[-3000:]
    night_2 = json.loads((tmp_path / "night-2" / "soak.json").read_text())
    planted = [line for line in night_2["regressions"] if line.startswith("regression: resource/harness rss_mb ")]
    assert len(planted) == 1 and f"(median {before / 10:g} over 1 nights; tolerance +25%)" in planted[0]
    assert planted[0] in second.stdout  # printed, one line each
    trend = harness("history", str(history), "--figure", "rss_mb", "--out", str(tmp_path / "trend"))
    assert trend.returncode == 0, trend.stderr
    assert re.search(rf"resource/harness\s+rss_mb\s+{re.escape(f'{before / 10:.4g}')}\s", trend.stdout), trend.stdout
    assert (tmp_path / "trend" / "report.html").is_file()


@pytest.mark.slow
def test_ctrl_c_keeps_what_was_sampled_and_leaves_nothing_running(tmp_path: Path) -> None:
    plan = write_plan(tmp_path, cycles=5)
    out = tmp_path / "out"
    child = subprocess.Popen([sys.executable, "-m", "harness.cli", "soak", str(plan), "--out", str(out)], cwd=ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (out / "cycles.jsonl").exists():
        time.sleep(0.5)  # the first run has ended: the soak is under way
    assert (out / "cycles.jsonl").exists()
    os.kill(child.pid, signal.SIGINT)
    _, stderr = child.communicate(timeout=60)
    assert child.returncode == 130, stderr[-2000:]
    soak = json.loads((out / "soak.json").read_text())
    assert soak["interrupted"] is True and len(soak["cycles"]) >= 1
    assert (out / "samples.jsonl").read_text().count("\n") >= 1
    ps = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    assert not [line for line in ps.splitlines() if str(out) in line]
    assert not math.isnan(soak["duration_s"])


def test_a_resource_bound_fails_a_steady_leak_but_not_a_short_span(tmp_path: Path) -> None:
    from harness.soak.outputs import resource_fits

    plan = load_plan(write_plan(tmp_path, warmup_minutes=1))

    def samples(seconds: int, *, leak_at_rest: bool = True) -> list[dict[str, Any]]:
        rows = []
        for t in range(0, seconds, 5):
            at_rest = t % 30 == 0  # after each run: counts are fitted on these only (during runs they follow the load)
            leaked = t // 600 if leak_at_rest or not at_rest else 0
            gateway = {"incarnation": 1, "started_at_s": 0.0, "rss_mb": 50.0 + t * 0.001, "descriptors": 20 + leaked,
                       "socket_total": 12 if at_rest else 40}
            rows.append({"t_s": float(t), "processes": {"gateway-1": gateway, "harness": None}, "at_rest": at_rest})
        return rows

    hour = {(f["resource"]): f for f in resource_fits(plan, samples(3600))}
    assert "rss_percent grew" in hour["rss_percent_per_hour"]["failure"]  # 3.6 MB/h on 50 MB: about 7% per hour
    assert "descriptors grew" in hour["descriptors_per_hour"]["failure"]  # one more every 10 minutes, at rest too
    assert "failure" not in hour["sockets_per_hour"]
    busy_only = {(f["resource"]): f for f in resource_fits(plan, samples(3600, leak_at_rest=False))}
    assert "failure" not in busy_only["descriptors_per_hour"]  # more held during runs, none kept after them
    short = resource_fits(plan, samples(240))  # three minutes after a minute of warm-up
    assert short and all(not f["judged"] and "failure" not in f for f in short)


@pytest.mark.parametrize(("live_heap", "start"), [("heap_after_gc_mb", 60.0), ("python_allocated_blocks", 90_000.0)],
                         ids=["node-heap-after-gc", "cpython-allocated-blocks"])
def test_a_process_with_a_live_heap_is_judged_by_it_not_by_its_resident_memory(
        tmp_path: Path, live_heap: str, start: float) -> None:
    from harness.soak.outputs import resource_fits

    plan = load_plan(write_plan(tmp_path, warmup_minutes=1))

    def samples(heap_percent_per_hour: float) -> list[dict[str, Any]]:
        rows = []
        for t in range(0, 3600, 5):  # resident memory: 300-700 MB, up by 40% of its start in the hour
            swing = 300.0 * ((t % 900) / 900.0) + 120.0 * t / 3600.0
            at_rest = t % 60 == 0  # after each run; during one CPython's heap follows the load, rising in the hour
            load = 1.0 if at_rest or live_heap == "heap_after_gc_mb" else 1.2 + 0.5 * t / 3600.0
            gateway = {"incarnation": 1, "started_at_s": 0.0, "rss_mb": 300.0 + swing, "descriptors": 30,
                       "socket_total": 3,
                       live_heap: round(start * load * (1 + heap_percent_per_hour / 100 * t / 3600), 1)}
            rows.append({"t_s": float(t), "processes": {"gateway-1": gateway}, "at_rest": at_rest})
        return rows

    steady = {f["resource"]: f for f in resource_fits(plan, samples(0.0))}
    assert not steady["rss_percent_per_hour"]["judged"] and "failure" not in steady["rss_percent_per_hour"]
    assert steady["rss_percent_per_hour"]["not_judged"].startswith("its live heap is judged")
    assert steady["heap_percent_per_hour"]["judged"] and "failure" not in steady["heap_percent_per_hour"]
    assert steady["heap_percent_per_hour"]["sampled"] == live_heap
    leaking = {f["resource"]: f for f in resource_fits(plan, samples(10.0))}
    assert "heap_percent grew" in leaking["heap_percent_per_hour"]["failure"]
    assert 9 < leaking["heap_percent_per_hour"]["per_hour"] < 11


def test_the_resources_chart_draws_a_collected_heap_beside_resident_memory_with_its_fitted_line(
        tmp_path: Path) -> None:
    from harness.report.charts import resources_chart
    from harness.soak.outputs import resource_fits

    plan = load_plan(write_plan(tmp_path, warmup_minutes=1))
    samples = [{"t_s": float(t), "processes": {"gateway-1": {
        "incarnation": 1, "started_at_s": 0.0, "rss_mb": 400.0 + (t % 300), "descriptors": 30, "socket_total": 3,
        **({"heap_after_gc_mb": 60.0 + t / 600.0} if t >= 30 else {})}}} for t in range(0, 1800, 5)]
    chart = resources_chart(samples, resource_fits(plan, samples), plan.warmup_s)
    memory = chart.figure.axes[0]
    solid, dotted, *fitted = memory.get_lines()
    assert len(solid.get_xdata()) == 360 and len(dotted.get_xdata()) == 354  # no heap before the first collection
    assert dotted.get_linestyle() == ":" and max(dotted.get_ydata()) < 70
    assert [line.get_linestyle() for line in fitted] == ["--", "--"]  # resident memory's fit and the heap's


def test_the_real_gateways_heap_after_collections_is_its_main_threads_read_from_its_console(
        tmp_path: Path) -> None:
    import harness.backends.openclaw as openclaw

    gateway = openclaw.OpenClawGateway.__new__(openclaw.OpenClawGateway)  # its console only: no Node started
    gateway._log_path, gateway._gc_read_to, gateway._main_isolate, gateway._heap_after_gc_mb = (
        tmp_path / "openclaw.log", 0, None, None)
    gateway._process = type("Process", (), {"pid": 4242})()  # type: ignore[assignment]
    assert gateway.heap_after_gc_mb() is None  # no console yet
    console = gateway._log_path
    console.write_text(
        "[4242:0x42cc3000]      391 ms: Mark-Compact 32.6 (51.2) -> 17.1 (51.9) MB, pooled: 0 MB, 3.46 / 0.00 ms\n"
        "2026-11-30T09:00:37.882+00:00 [gateway] ready\n"
        "[4242:0x7f1cd4001000]      132 ms: Mark-Compact 21.6 (49.2) -> 13.3 (51.5) MB, pooled: 0 MB\n"  # a worker
        "[777:0x42cc3000]      500 ms: Mark-Compact 90.0 (99.0) -> 80.0 (99.0) MB\n"  # another process
        "[4242:0x42cc3000]    60123 ms: Mark-Compact (reduce) 70.1 (90.0) -> 41.5 (60.2)")  # still being written
    assert gateway.heap_after_gc_mb() == 17.1
    with console.open("a") as out:
        out.write(" MB, pooled: 0 MB, 9.1 / 0.0 ms\n"
                  "[4242:0x7f1cd4001000] 70000 ms: Mark-Compact 9.0 (9.0) -> 8.0 (9.0) MB\n")
    assert gateway.heap_after_gc_mb() == 41.5
    assert gateway.log_text() == "2026-11-30T09:00:37.882+00:00 [gateway] ready\n"


def test_overrides_lay_changes_over_a_runs_profile(tmp_path: Path) -> None:
    from harness.soak.plan import merged

    assert merged({"a": {"b": 1, "c": 2}, "d": 3}, {"a": {"b": None, "e": 4}, "d": 5}) == {"a": {"c": 2, "e": 4},
                                                                                            "d": 5}
    plan = load_plan(write_plan(tmp_path, runs=[{"profile": str(MATRIX_11), "overrides": {
        "accounts": {"count": 4, "channels": {"matrix": 4}}, "target": {"connect_cost_before_timer": None}}}]))
    profile = plan.runs[0].profile
    assert profile.account_count == 4 and "--connect-cost-before-timer" not in " ".join(profile.target.args)
    assert len({repr(r.profile.target) for r in plan.runs}) == 1


def test_runs_of_one_profile_are_told_apart_by_their_names(tmp_path: Path) -> None:
    plan = load_plan(write_plan(tmp_path, runs=[{"profile": str(MATRIX_11)},
                                                {"profile": str(MATRIX_11), "name": "quiet-stretch"}]))
    assert [run.name for run in plan.runs] == ["matrix-11-accounts", "quiet-stretch"]
    assert plan.runs[0].profile.name == plan.runs[1].profile.name


def test_runs_of_one_target_share_a_gateway_unless_one_asks_for_its_own(tmp_path: Path) -> None:
    from harness.soak import _gateways

    def gateways(own: bool) -> list[str]:
        plan = load_plan(write_plan(tmp_path, runs=[
            {"profile": str(MATRIX_11), "arms": ["coordinator"]},
            {"profile": str(MATRIX_11), "arms": ["coordinator"], "name": "restarted", "own_gateway": own}]))
        return sorted(g.name for g in _gateways(plan, tmp_path / "out").values())

    assert gateways(False) == ["gateway-1"]
    assert gateways(True) == ["gateway-1", "gateway-2"]  # e.g. one SIGTERMed every run, one judged for 30 min


def test_a_stub_that_stays_up_gives_each_run_only_the_log_records_written_since_it_was_marked(
        tmp_path: Path) -> None:
    from harness.backends.stub import STUB_LOG, StubBackend
    from harness.profile import load_profile

    log = tmp_path / STUB_LOG
    log.write_text('{"n": 1}\n{"n": 2}\n')
    target = load_profile(MATRIX_11).target
    stub = StubBackend(target, process=None, log_dir=tmp_path)  # type: ignore[arg-type]  # its log only
    assert stub.gateway_records(tmp_path / "run") == [{"n": 1}, {"n": 2}]
    stub.mark()
    with log.open("a") as out:
        out.write('{"n": 3}\nnot json\n{"n": 4}\n')
    assert stub.gateway_records(tmp_path / "run") == [{"n": 3}, {"n": 4}]
    stub.mark()
    assert stub.gateway_records(tmp_path / "run") == []


def test_a_real_gateway_that_stays_up_gives_each_run_only_its_records_logged_since_it_was_marked(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import datetime as dt

    import harness.backends.openclaw as openclaw

    monkeypatch.setattr(openclaw, "JSON_LOG_DIR", tmp_path)
    gateway = openclaw.OpenClawGateway.__new__(openclaw.OpenClawGateway)  # its log only: no Node started
    gateway._port, gateway._started_at = 4242, dt.datetime.now()
    gateway._log_path = tmp_path / "openclaw.log"  # its console: the liveness warnings
    stall = "[diagnostic] liveness warning: reasons=event_loop_delay interval=36s eventLoopDelayMaxMs={}\n"
    gateway._log_path.write_text(stall.format(13581.2))
    log = tmp_path / f"openclaw-{dt.date.today():%Y-%m-%d}.log"
    log.write_text('{"n": 1, "at": "127.0.0.1:4242"}\n{"n": 2, "at": "127.0.0.1:9999"}\n')
    backend = openclaw.OpenClawBackend(None, gateway)  # type: ignore[arg-type]  # its log only
    assert backend.gateway_records(tmp_path) == [{"n": 1, "at": "127.0.0.1:4242"}]
    assert backend.longest_loop_stall_ms() == 13581.2
    backend.mark()
    assert backend.longest_loop_stall_ms() is None  # an earlier run's stall is not this run's
    with gateway._log_path.open("a") as console:
        console.write(stall.format(6100))
    assert backend.longest_loop_stall_ms() == 6100
    with log.open("a") as out:
        out.write('{"n": 3, "at": "127.0.0.1:4242"}\nnot json :4242\n{"n": 4, "at": "127.0.0.1:9999"}\n')
    assert backend.gateway_records(tmp_path) == [{"n": 3, "at": "127.0.0.1:4242"}]
    assert (tmp_path / "gateway.jsonl").read_text() == '{"n": 3, "at": "127.0.0.1:4242"}\n'
    backend.mark()
    assert backend.gateway_records(tmp_path) == []


def test_a_sigterm_mid_run_is_made_once_at_its_time_and_not_after_the_run() -> None:
    from harness.backends.openclaw import OpenClawBackend, Restart
    from harness.errors import BackendError
    from harness.soak import _sigterm_after

    restarts: list[float] = []

    class Gateway(OpenClawBackend):
        def __init__(self) -> None:  # only restart() is used
            pass

        def restart(self) -> Restart:
            restarts.append(time.monotonic())
            return Restart(exited_after_s=2.5, exit_code=0, killed=False, ready_after_s=4.0)

    began, new_processes = time.monotonic(), []
    with _sigterm_after(0.2, Gateway(), lambda: new_processes.append(time.monotonic())) as happened:
        time.sleep(0.5)
    assert len(restarts) == 1 and 0.2 <= restarts[0] - began < 0.5
    assert happened == {"after_s": 0.2, "exited_after_s": 2.5, "exit_code": 0, "killed": False, "ready_after_s": 4.0}
    assert len(new_processes) == 1 and new_processes[0] >= restarts[0]  # its resources are fitted on their own
    with _sigterm_after(5.0, Gateway()) as happened:
        pass  # the run ended before its time: no SIGTERM, then or later
    time.sleep(0.1)
    assert happened == {} and len(restarts) == 1
    with _sigterm_after(None, None) as happened:  # type: ignore[arg-type]  # no sigterm_after_s: nothing asked
        pass
    assert happened == {}

    class Unstartable(Gateway):
        def restart(self) -> Restart:
            raise BackendError("openclaw 2026.9.6 exited with code 1 before it was ready")

    with _sigterm_after(0.05, Unstartable(), lambda: new_processes.append(time.monotonic())) as happened:
        time.sleep(0.3)
    assert happened == {"after_s": 0.05, "error": "openclaw 2026.9.6 exited with code 1 before it was ready"}
    assert len(new_processes) == 1


def test_a_run_its_gateway_would_not_serve_is_a_failed_row_and_the_soak_goes_on(tmp_path: Path) -> None:
    plan = write_plan(tmp_path, runs=[{"profile": str(MATRIX_11), "arms": ["shipped", "coordinator"],
                                       "expect": {"coordinator": "converged"}, "duration_s": 120}])
    # As `harness soak` does it (gevent's patching first, through Locust), with the first run's gateway
    # refusing to serve it the way a real one too busy to shake hands for 30 s did.
    code = f"""
import io, sys
import locust
import harness.soak as soak
from harness.errors import BackendError
from harness.soak.plan import load_plan
from pathlib import Path
real_run_arm, calls = soak.run_arm, []
def run_arm(*args, **kwargs):
    calls.append(args[1])
    if len(calls) == 1:
        raise BackendError("the health probe could not connect to ws://127.0.0.1:1/ within 30 s")
    return real_run_arm(*args, **kwargs)
soak.run_arm = run_arm
result = soak.run_soak(load_plan(Path({str(plan)!r}), None), Path({str(tmp_path / "out")!r}),
                       progress_stream=io.StringIO())
print(calls, result.exit_code)
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.stdout.strip() == "['shipped', 'coordinator'] 1", done.stderr[-2000:]
    rows = [json.loads(line) for line in (tmp_path / "out" / "cycles.jsonl").read_text().splitlines()]
    assert [(r["arm"], r["ok"]) for r in rows] == [("shipped", False), ("coordinator", True)]
    assert rows[0]["verdict"] == "error" and rows[0]["error"].startswith("the health probe could not connect")
    # the next run went on against its gateway (too busy a machine makes it inconclusive, counted, not failed)
    assert rows[1]["verdict"] in ("converged", "inconclusive") and "error" not in rows[1]
    soak_json = json.loads((tmp_path / "out" / "soak.json").read_text())
    assert any("matrix-11-accounts/shipped could not run: the health probe" in f for f in soak_json["failures"])
