"""The harness end to end: the real CLI in a child process against the embedded stub, time-scaled.

These are the project's main promises: the matrix-11 case storms as shipped and converges behind the
start coordinator, a single account never storms, bad input exits 2 naming the field, a failed
threshold exits 1, and Ctrl-C leaves nothing running.
"""

from __future__ import annotations

import csv
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from schema_check import load_comparison, load_summary

from harness.errors import EXIT_INCONCLUSIVE

ROOT = Path(__file__).resolve().parent.parent
PROFILES = ROOT / "profiles"


def harness(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


# A run on a host too busy to judge is inconclusive (exit 4), as it should be; a test that compares verdicts asks
# again, up to this many times, before it compares them.
INCONCLUSIVE_RETRIES = 2


def judged(*args: str, out: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """`harness` with `--out out`, asked again (into a fresh `out`) while the host was too busy to judge."""
    for _ in range(INCONCLUSIVE_RETRIES + 1):
        shutil.rmtree(out, ignore_errors=True)
        result = harness(*args, "--out", str(out), timeout=timeout)
        if result.returncode != EXIT_INCONCLUSIVE:
            break
    return result


def summary(out: Path, arm: str) -> dict[str, Any]:
    return load_summary(out / arm / "summary.json")


def stub_processes(marker: str) -> list[str]:
    ps = subprocess.run(["ps", "-ww", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [line for line in ps.splitlines() if "gateway_stub" in line and marker in line]


@pytest.mark.slow
def test_matrix_11_storms_as_shipped(tmp_path: Path) -> None:
    result = judged("run", str(PROFILES / "matrix-11-accounts.yaml"), "--arm", "shipped", out=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    s = summary(tmp_path, "shipped")
    assert s["verdict"] == "storm"
    assert s["final_window_storm_entries"] >= 11  # every account, again and again, to the end
    assert s["connected_accounts_at_end"] < 11
    assert s["storm_entries_by_kind"]["handshake_timeout"] == s["storm_entries"]
    assert s["sources_agree"] is True
    assert all(t["passed"] for t in s["thresholds"])
    with (tmp_path / "shipped" / "accounts.csv").open(encoding="utf-8") as ledger:
        rows = list(csv.DictReader(ledger))
    assert len(rows) == 11 and all(int(r["failed_handshake_timeout"]) >= 2 for r in rows)
    stats = (tmp_path / "shipped" / "locust_stats.csv").read_text(encoding="utf-8")
    assert "WS,connect" in stats
    assert "handshake timeout conn=" in (tmp_path / "shipped" / "stub.log").read_text(encoding="utf-8")
    assert "storm" in result.stdout  # the table
    # Locust's own HTML report beside its CSVs, and the harness's report with the run's attempts drawn from the
    # same ledger as accounts.csv.
    assert "WS" in (tmp_path / "shipped" / "locust.html").read_text(encoding="utf-8")
    with (tmp_path / "shipped" / "attempts.csv").open(encoding="utf-8") as attempts:
        assert len(list(csv.DictReader(attempts))) == sum(int(r["attempts"]) for r in rows)
    assert 'data-verdict="storm"' in (tmp_path / "report.html").read_text(encoding="utf-8")
    assert f"report: {tmp_path / 'report.html'}" in result.stderr


@pytest.mark.slow
def test_matrix_11_converges_behind_the_coordinator(tmp_path: Path) -> None:
    result = judged("run", str(PROFILES / "matrix-11-accounts.yaml"), "--arm", "coordinator", out=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    s = summary(tmp_path, "coordinator")
    assert s["verdict"] == "converged"
    assert s["storm_entries_after_startup"] == 0
    assert s["connected_accounts_at_end"] == 11
    assert s["time_to_all_connected_s"] is not None and s["time_to_all_connected_s"] < s["duration_s"]
    assert s["coordinator"] == {"start_jitter_ms": 2000, "max_concurrent_starts": 3, "start_slot_max_hold_ms": 30000}
    stats = s["coordinator_statistics"]
    assert (stats["borrowed"], stats["total"], stats["waiting"]) == (0, 3, 0)
    assert stats["granted_total"] >= 11  # one grant per start; a start that failed on a loaded machine retries
    assert stats["max_wait_ms"] > 0  # eleven accounts, three slots: someone waited


@pytest.mark.slow
def test_single_account_converges_in_every_arm(tmp_path: Path) -> None:
    result = harness("compare", str(PROFILES / "single-account.yaml"), "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr[-2000:]
    arms = load_comparison(tmp_path / "compare.json")
    assert set(arms) == {"shipped", "coordinator", "backoff", "coordinator+backoff"}
    for arm, s in arms.items():
        assert (s["verdict"], s["storm_entries"], s["connected_accounts_at_end"]) == ("converged", 0, 1), arm


@pytest.mark.slow
def test_a_failed_threshold_exits_1(tmp_path: Path) -> None:
    profile = tmp_path / "wrong-expectation.yaml"
    text = (PROFILES / "single-account.yaml").read_text(encoding="utf-8")
    profile.write_text(text.replace("verdict: converged", "verdict: storm"), encoding="utf-8")
    result = harness("run", str(profile), "--out", str(tmp_path / "out"))
    assert result.returncode == 1, result.stderr[-2000:]
    assert "FAIL: verdict" in result.stdout


def test_a_bad_profile_exits_2_with_one_line_naming_the_field(tmp_path: Path) -> None:
    profile = tmp_path / "bad.yaml"
    profile.write_text("name: bad\naccounts: {count: 11}\narms: [shipped, jittery]\n", encoding="utf-8")
    result = harness("compare", str(profile), "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"harness: error: {profile}:3: arms[1]: unknown arm 'jittery' (expected one of shipped, ")
    assert not (tmp_path / "out").exists()  # nothing started


def test_more_accounts_than_open_files_allow_exits_2_saying_why(tmp_path: Path) -> None:
    profile = tmp_path / "many.yaml"
    profile.write_text("name: many\naccounts: {count: 100}\narms: [shipped]\nduration_s: 60\n", encoding="utf-8")

    def few_files() -> None:  # in the child only: 100 accounts need about 1 x 100 + 256
        resource.setrlimit(resource.RLIMIT_NOFILE, (300, 300))

    result = subprocess.run([sys.executable, "-m", "harness.cli", "run", str(profile), "--out", str(tmp_path / "out")],
                            cwd=ROOT, capture_output=True, text=True, timeout=120, preexec_fn=few_files)
    assert result.returncode == 2, result.stderr
    header, line = result.stderr.strip().splitlines()  # what the run is, then why it cannot
    assert header.startswith("many: 100 accounts")
    assert line == ("harness: error: accounts.count: 100 accounts need about 356 open files in one process (1 each), "
                    "and this one may open 300 (`ulimit -Hn`, which only root can raise): raise it, or run fewer "
                    "accounts")
    assert not list((tmp_path / "out").glob("*/stub.log"))  # no gateway was started


@pytest.mark.parametrize("args", [["run", "missing.yaml"], ["run", "PROFILE", "--time-scale", "-1"],
                                  ["run", "PROFILE", "--arm", "backoff"], ["explode"]])
def test_bad_options_exit_2(args: list[str], tmp_path: Path) -> None:
    args = [str(PROFILES / "matrix-11-accounts.yaml") if a == "PROFILE" else a for a in args]
    result = harness(*args, "--out", str(tmp_path)) if args[0] != "explode" else harness(*args)
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def interrupt_mid_run(profile: Path, out: Path, *options: str, started: Callable[[], bool],
                      start_timeout_s: float = 60, mid_run_s: float = 2,
                      before_interrupt: Callable[[], None] | None = None,
                      sig: int = signal.SIGINT) -> tuple[int, str]:
    """`harness run PROFILE --arm shipped` until `started()`, `mid_run_s` more, then `sig`: (exit code, stderr)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "harness.cli", "run", str(profile), "--arm", "shipped", *options, "--out", str(out)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + start_timeout_s
        while not started():
            assert time.monotonic() < deadline and process.poll() is None, "the run never started"
            time.sleep(0.1)
        time.sleep(mid_run_s)
        if before_interrupt is not None:
            before_interrupt()
        process.send_signal(sig)
        try:
            _, stderr = process.communicate(timeout=60)
        except subprocess.TimeoutExpired as exc:
            tail = (exc.stderr or b"")[-4000:]
            raise AssertionError(f"still running 60 s after {signal.Signals(sig).name}; stderr ends:\n"
                                 f"{tail.decode(errors='replace') if isinstance(tail, bytes) else tail}") from None
    finally:
        if process.poll() is None:
            process.kill()
    assert "Traceback" not in stderr
    return process.returncode, stderr


@pytest.mark.parametrize(("sig", "code", "line"), [
    (signal.SIGINT, 130, "harness: interrupted; everything it started has been stopped"),
    (signal.SIGTERM, 143, "harness: stopped by SIGTERM; everything it started has been stopped"),
])
def test_ctrl_c_or_sigterm_stops_everything_with_one_line(tmp_path: Path, sig: int, code: int, line: str) -> None:
    exit_code, stderr = interrupt_mid_run(PROFILES / "matrix-11-accounts.yaml", tmp_path, sig=sig,
                                          started=lambda: bool(stub_processes(str(tmp_path))))
    assert exit_code == code, stderr[-2000:]
    assert stderr.strip().splitlines()[-1] == line
    assert stub_processes(str(tmp_path)) == []


def catches_sigterm(pid: int) -> bool:
    """The harness installs its signal handlers first thing in main(): SIGTERM (bit 15) is then caught."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    caught = next(int(line.split()[1], 16) for line in status.splitlines() if line.startswith("SigCgt:"))
    return bool(caught & (1 << (signal.SIGTERM - 1)))


def test_ctrl_c_during_start_up_is_one_line_and_exit_130(tmp_path: Path) -> None:
    process = subprocess.Popen([sys.executable, "-m", "harness.cli", "run", str(PROFILES / "matrix-11-accounts.yaml"),
                                "--out", str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    try:
        deadline = time.monotonic() + 30
        while not catches_sigterm(process.pid):
            assert time.monotonic() < deadline and process.poll() is None, "main() never started"
            time.sleep(0.005)
        process.send_signal(signal.SIGINT)  # while Locust and the rest are still being imported
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, stderr[-2000:]
    assert stderr.strip().splitlines() == ["harness: interrupted; everything it started has been stopped"]
    assert stub_processes(str(tmp_path)) == []


@pytest.mark.parametrize(("signum", "ended"), [(signal.SIGKILL, "signal SIGKILL"),
                                               (signal.SIGTERM, "exit code 0")])  # the stub stops cleanly on SIGTERM
def test_a_gateway_that_dies_mid_run_stops_the_run_with_exit_3_naming_it(tmp_path: Path, signum: int,
                                                                         ended: str) -> None:
    process = subprocess.Popen([sys.executable, "-m", "harness.cli", "run", str(PROFILES / "matrix-11-accounts.yaml"),
                                "--arm", "coordinator", "--out", str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "coordinator" / "locust_stats.csv").exists():  # the stub is up and the accounts run
            assert time.monotonic() < deadline and process.poll() is None, "the run never started its accounts"
            time.sleep(0.1)
        [stub] = stub_processes(str(tmp_path))
        os.kill(int(stub.split()[0]), signum)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 3, stderr[-2000:]
    assert "Traceback" not in stderr and stdout == ""  # no verdict, no table
    [error] = [line for line in stderr.splitlines() if line.startswith("harness: error:")]
    assert error.startswith(f"harness: error: the gateway stub exited with {ended} during the run; "
                            "its log's last lines: "), error
    assert not (tmp_path / "coordinator" / "summary.json").exists()


def test_nothing_answering_at_a_url_target_is_exit_3_before_any_load(tmp_path: Path) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # bound, never listening: connections are refused
        profile = tmp_path / "url.yaml"
        profile.write_text(f"name: url\naccounts: {{count: 2}}\narms: [shipped]\nduration_s: 60\n"
                           f"target: {{kind: url, url: 'ws://127.0.0.1:{port}/', token: t}}\n", encoding="utf-8")
        result = harness("run", str(profile), "--out", str(tmp_path / "out"), timeout=60)
    assert result.returncode == 3, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"harness: error: nothing answers at ws://127.0.0.1:{port}/ (connection refused)")



def test_a_killed_harness_leaves_no_stub_behind(tmp_path: Path) -> None:
    # SIGKILL gives the harness no chance to stop anything: the kernel's parent-death signal stops the stub.
    process = subprocess.Popen(
        [sys.executable, "-m", "harness.cli", "run", str(PROFILES / "matrix-11-accounts.yaml"), "--arm", "shipped",
         "--out", str(tmp_path)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "shipped" / "locust_stats.csv").exists():  # the stub is up and the accounts run
            assert time.monotonic() < deadline and process.poll() is None, "the run never started its accounts"
            time.sleep(0.1)
        assert stub_processes(str(tmp_path))
        process.kill()
        process.wait(10)
        deadline = time.monotonic() + 15
        while stub_processes(str(tmp_path)) and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        if process.poll() is None:
            process.kill()
    assert stub_processes(str(tmp_path)) == []


def test_locust_runs_the_locustfile_on_its_own(tmp_path: Path) -> None:
    # The path for users who want Locust's web UI: `locust -f harness/locustfile.py` against a stub they
    # started. Run headless here, bounded by --run-time.
    from harness.backends.embedded import EmbeddedStub

    with EmbeddedStub(["--challenge-latency-ms", "0", "--hello-latency-ms", "0"],
                      log_path=tmp_path / "stub.log") as stub:
        result = subprocess.run(
            [sys.executable, "-m", "locust", "-f", str(ROOT / "harness" / "locustfile.py"), "--headless",
             "--users", "3", "--spawn-rate", "3", "--run-time", "4s", "--csv", str(tmp_path / "locust"),
             "--gateway-url", stub.url, f"--gateway-token={stub.token}", "--arm", "coordinator"],
            cwd=tmp_path, capture_output=True, text=True, timeout=120,
        )
        counters = stub.stats()["counters"]
    assert result.returncode == 0, result.stderr[-2000:]
    rows = list(csv.DictReader((tmp_path / "locust_stats.csv").open(encoding="utf-8")))
    connect = next(r for r in rows if r["Type"] == "WS" and r["Name"] == "connect")
    assert (connect["Request Count"], connect["Failure Count"]) == ("3", "0")
    assert counters["handshakes_succeeded"] == 3


def test_demo_shows_a_handshake_a_health_reply_and_a_timeout() -> None:
    result = harness("demo", timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    assert "hello-ok protocol=3" in out and "methods=132" in out
    health_reply = out.split("-> health\n<- ", 1)[1].splitlines()[0]
    assert health_reply.startswith('{"type":"res"') and '"ok":true' in health_reply
    assert "<- closed code=1000 reason=''" in out
    assert "handshakes_timed_out=1" in out
