"""Accounts over several harness processes (Locust's master and workers): `--processes N`, `--master`/`--worker`.

A distributed run of matrix-11 gives the single-process verdict and figures; one process holds 10,000 accounts;
workers started by hand join a master; a worker that dies is reported with its accounts and the run is
inconclusive; the journal that carries the ledgers replays in order.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from test_harness_e2e import PROFILES, ROOT, harness, judged, summary

from harness.errors import EXIT_BAD_INPUT, EXIT_INCONCLUSIVE
from harness.events import AccountLedger, Attempt, Disconnect, Outcome
from harness.policy.coordinator import CoordinatorStatistics
from harness.run.worker_messages import JournaledLedger, RunPlan, merged_statistics, replay

MATRIX_11 = str(PROFILES / "matrix-11-accounts.yaml")


def test_the_journal_replays_a_reconnect_in_order() -> None:
    worker = JournaledLedger()
    worker.record_attempt(Attempt("matrix-1", 1, 0, 5, Outcome.HELLO))
    worker.record_disconnect(Disconnect("matrix-1", 1, 10, 4000, "tick timeout"))
    worker.record_attempt(Attempt("matrix-1", 1, 11, 20, Outcome.HELLO))  # the same handler, connected again
    worker.record_attempt(Attempt("matrix-2", 2, 0, 10_000, Outcome.HANDSHAKE_TIMEOUT, 1000))
    master = AccountLedger()
    replay(master, worker.take())
    assert worker.take() == []  # taken once
    assert master.connected == {"matrix-1": 1}
    assert [a.outcome for a in master.attempts] == [Outcome.HELLO, Outcome.HELLO, Outcome.HANDSHAKE_TIMEOUT]
    assert master.disconnects == worker.disconnects
    assert master.storm_entries() == 1


def test_a_plan_survives_the_wire() -> None:
    plan = RunPlan(url="ws://127.0.0.1:1/", token="t", arm="coordinator", time_scale=0.1, duration_s=180,
                   fixes={"coordinator": {"start_jitter_ms": 2000, "max_concurrent_starts": 3,
                                          "start_slot_max_hold_ms": 30000},
                          "gates": {"stagger_ms": 2000, "adaptive_max_concurrent_starts": 4},
                          "breaker": {"failures": 3, "cooldown_ms": 60000}},
                   protocol=3, device_signed=False, handshake_timeout_ms=10000,
                   keep_reconnecting_after_failed_start=False, seed=7, worker_index=1, first_index=6,
                   channels=("matrix",) * 5)
    again = RunPlan.from_message(plan.to_message())
    assert again == plan
    assert again.fix_settings().coordinator.max_concurrent_starts == 3
    assert again.worker_seed() != RunPlan.from_message({**plan.to_message(), "worker_index": 0}).worker_seed()


@pytest.mark.slow
def test_two_local_workers_give_the_single_process_verdict_and_figures(tmp_path: Path) -> None:
    single = judged("run", MATRIX_11, "--arm", "shipped", "--no-report", out=tmp_path / "one")
    spread = judged("run", MATRIX_11, "--arm", "shipped", "--processes", "2", "--no-report", out=tmp_path / "two")
    assert single.returncode == 0, single.stderr[-2000:]
    assert spread.returncode == 0, spread.stderr[-2000:]
    one, two = summary(tmp_path / "one", "shipped"), summary(tmp_path / "two", "shipped")
    assert (one["processes"], two["processes"]) == (1, 2)
    assert two["lost_workers"] == []
    assert two["verdict"] == one["verdict"] == "storm"
    # Every account fails every attempt on the same timers in both: one attempt per account either way at most.
    for figure in ("storm_entries", "final_window_storm_entries", "handshake_attempts_total"):
        assert abs(two[figure] - one[figure]) <= 11, (figure, one[figure], two[figure])
    assert two["sources_agree"] is True  # the gateway's own log counts what the workers' journals said
    rows = (tmp_path / "two" / "shipped" / "accounts.csv").read_text(encoding="utf-8").splitlines()[1:]
    assert sorted(row.split(",")[0] for row in rows) == sorted(f"matrix-{i}" for i in range(1, 12))
    for log in ("worker-1.log", "worker-2.log"):
        assert "connected to 127.0.0.1" in (tmp_path / "two" / "shipped" / log).read_text(encoding="utf-8")
    assert not _workers_of(tmp_path)  # both ended with the run


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_workers_started_by_hand_join_a_master(tmp_path: Path) -> None:
    port = str(free_port())
    master = subprocess.Popen([sys.executable, "-m", "harness.cli", "run", str(PROFILES / "single-account.yaml"),
                               "--master", "--processes", "2", "--master-port", port, "--no-report",
                               "--out", str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    workers = [subprocess.Popen([sys.executable, "-m", "harness.cli", "run", "--worker", "--master-host", "127.0.0.1",
                                 "--master-port", port], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True) for _ in range(2)]
    try:
        _, stderr = master.communicate(timeout=240)
        assert master.returncode == 0, stderr[-2000:]
        for worker in workers:
            worker.wait(timeout=30)
            assert worker.returncode == 0
    finally:
        for process in (master, *workers):
            if process.poll() is None:
                process.kill()
                process.wait()
    s = summary(tmp_path, "shipped")
    assert (s["verdict"], s["processes"], s["connected_accounts_at_end"]) == ("converged", 2, 1)


def _workers_of(out: Path) -> list[psutil.Process]:
    """The live worker processes of the run writing to `out` (their parent's command line names it)."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        try:
            if "--worker" in (process.info["cmdline"] or []) and process.status() != psutil.STATUS_ZOMBIE and \
                    str(out) in " ".join(psutil.Process(process.ppid()).cmdline()):
                found.append(process)
        except psutil.Error:
            continue
    return found


def _opened_sockets(stub_jsonl: Path) -> int:
    try:
        return stub_jsonl.read_text(encoding="utf-8").count('"event":"ws.open"')
    except OSError:
        return 0


@pytest.mark.slow
def test_a_worker_that_dies_is_reported_with_its_accounts(tmp_path: Path) -> None:
    run = subprocess.Popen([sys.executable, "-m", "harness.cli", "run", MATRIX_11, "--arm", "shipped",
                            "--processes", "2", "--no-report", "--out", str(tmp_path)],
                           cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        while _opened_sockets(tmp_path / "shipped" / "stub.jsonl") < 2:  # the probe's, then the accounts'
            assert time.monotonic() < deadline and run.poll() is None, "the accounts never started"
            time.sleep(0.2)
        time.sleep(1)  # into the run
        victim = _workers_of(tmp_path)[0]
        victim.send_signal(signal.SIGKILL)
        _, stderr = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == EXIT_INCONCLUSIVE, stderr[-2000:]
    assert "Traceback" not in stderr
    s = summary(tmp_path, "shipped")
    assert s["verdict"] == "inconclusive"
    [lost] = s["lost_workers"]
    assert lost["how"] == "exited with signal SIGKILL"
    assert 5 <= len(lost["accounts"]) <= 6 and all(name.startswith("matrix-") for name in lost["accounts"])
    assert f"with {len(lost['accounts'])} accounts" in s["inconclusive_reason"]
    assert not _workers_of(tmp_path)


@pytest.mark.parametrize(("args", "expected"), [
    (["run", "--worker"], "harness: error: --worker: expected --master-host HOST"),
    (["run"], "harness: error: run: expected a profile (or --worker --master-host HOST)"),
    (["run", str(PROFILES / "heartbeat-failover-telegram.yaml"), "--processes", "2"],
     "harness: error: --processes: the approval scenario's operator watches every account's chat in one process"),
    (["run", "--worker", "--master-host", "127.0.0.1", "--gateway-url", "ws://192.0.2.1:1/"],
     "harness: error: argument --gateway-url:"),
    (["run", MATRIX_11, "--processes", "65"], "harness: error: argument --processes: expected a number of processes"),
])
def test_bad_distributed_options_exit_2_in_one_line(args: list[str], expected: str) -> None:
    result = harness(*args, timeout=60)
    assert result.returncode == EXIT_BAD_INPUT, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(expected), line


def test_more_accounts_than_one_process_holds_name_the_processes(tmp_path: Path) -> None:
    profile = tmp_path / "big.yaml"
    profile.write_text("name: big\naccounts: {count: 15000}\narms: [shipped]\n", encoding="utf-8")
    result = harness("run", str(profile), "--out", str(tmp_path / "out"), timeout=60)
    assert result.returncode == EXIT_BAD_INPUT
    [line] = result.stderr.strip().splitlines()
    assert "accounts.count: expected a number <= 10000 (the most one harness process is meant to hold; more need " \
           "accounts.processes (or --processes)" in line
    profile.write_text("name: big\naccounts: {count: 15000, processes: 2}\narms: [shipped]\n", encoding="utf-8")
    assert "15000 accounts" in harness("run", str(profile), "--processes", "1", "--out", str(tmp_path / "out"),
                                       timeout=60).stderr


def test_merged_coordinator_statistics_add_slots_and_keep_the_longest_wait() -> None:
    merged = merged_statistics([CoordinatorStatistics(0, 3, 0, 6, 0, 0, 120.0),
                                CoordinatorStatistics(1, 3, 2, 5, 1, 0, 300.0)])
    assert merged == CoordinatorStatistics(1, 6, 2, 11, 1, 0, 300.0)
    assert merged_statistics([]) is None


@pytest.mark.slow
def test_ten_thousand_accounts_in_one_process_converge(tmp_path: Path) -> None:
    result = judged("run", str(PROFILES / "scale-10000-accounts.yaml"), "--no-report", out=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    s = summary(tmp_path, "shipped")
    assert (s["verdict"], s["connected_accounts_at_end"], s["processes"]) == ("converged", 10000, 1)
    assert s["time_to_all_connected_s"] is not None and s["time_to_all_connected_s"] < 60
