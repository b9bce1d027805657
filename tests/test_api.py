"""harness.api: profiles from paths, YAML text or dicts, overrides, typed results and errors (simulated runs)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from harness import api

ROOT = Path(__file__).resolve().parent.parent
MATRIX_11 = ROOT / "profiles" / "matrix-11-accounts.yaml"


def test_a_path_a_yaml_string_and_a_dict_are_the_same_profile(tmp_path: Path) -> None:
    text = MATRIX_11.read_text()
    results = [api.run(source, arm="coordinator", target="sim", out=tmp_path / str(index))
               for index, source in enumerate((MATRIX_11, str(MATRIX_11), text, yaml.safe_load(text)))]
    assert {r.verdict for r in results} == {"converged"}
    assert len({r.summary.time_to_all_connected_s for r in results}) == 1
    assert all((r.out_dir / "summary.json").exists() for r in results)


def test_overrides_change_the_profile_without_editing_a_file(tmp_path: Path) -> None:
    result = api.run(MATRIX_11, arm="coordinator", target="sim", out=tmp_path, accounts=4, cost="fixed:500@10",
                     coordinator={"max_concurrent_starts": 1, "start_jitter_ms": 0},
                     thresholds={"coordinator": {"time_to_all_connected_s": "< 1"}})
    assert result.summary.accounts == 4
    assert result.summary.coordinator is not None and result.summary.coordinator.max_concurrent_starts == 1
    assert result.summary.target.connect_cost_before_timer == "fixed:500@10"  # type: ignore[union-attr]
    assert not result.passed and [t.metric for t in result.thresholds if not t.passed] == ["time_to_all_connected_s"]
    assert "threshold failed: time_to_all_connected_s < 1 (was 2." in result.explain()
    assert MATRIX_11.read_text().count("count: 11") == 1  # the file is untouched
    merged = api.profile_data(MATRIX_11, overrides={"target": {"upgrade_cost": "fixed:5"}, "windows": {"final_s": 30}})
    assert merged["target"]["connect_cost_before_timer"] == "fixed:2000@10"
    assert merged["target"]["upgrade_cost"] == "fixed:5"
    assert merged["windows"] == {"startup_s": 60, "final_s": 30}


def test_compare_and_repeat_give_every_arm_and_its_distribution(tmp_path: Path) -> None:
    result = api.compare(MATRIX_11, target="sim", out=tmp_path, repeat=3)
    assert {arm: r.verdict for arm, r in result.arms.items()} == {"shipped": "storm", "coordinator": "converged"}
    assert result.passed and "storm 3/3" in result.table
    assert result["shipped"].distribution is not None and result["shipped"].distribution.repeats == 3
    assert len(result["coordinator"].summaries) == 3
    assert (tmp_path / "compare.json").exists()
    assert "witness: matrix-" in result["shipped"].explain()
    # The report of a repeat: the distribution tabled, each arm's first run drawn.
    assert result.report == result["shipped"].report == tmp_path / "report.html"
    page = result.report.read_text()
    assert "Over 3 runs per arm" in page and 'data-chart="swimlane"' in page
    assert f"report: {result.report}" in result["shipped"].explain()


def test_errors_are_typed_never_system_exit(tmp_path: Path) -> None:
    with pytest.raises(api.BadInput, match=r"accounts.count: expected a number >= 1, got 0"):
        api.run({"name": "bad", "accounts": {"count": 0}}, out=tmp_path)
    with pytest.raises(api.BadInput, match=r"arm: expected one of this profile's arms \(shipped, coordinator\)"):
        api.run(MATRIX_11, arm="nope", target="sim", out=tmp_path)
    with pytest.raises(api.BadInput, match=r"target: only a stub profile can run in the simulator"):
        api.run({"name": "u", "target": {"kind": "url", "url": "ws://127.0.0.1:1/", "token": "t"},
                 "accounts": {"count": 1}}, target="sim")
    with pytest.raises(api.BackendError, match="nothing answers at ws://127.0.0.1:1/"):
        api.run({"name": "u", "target": {"kind": "url", "url": "ws://127.0.0.1:1/", "token": "t"},
                 "accounts": {"count": 1}, "duration_s": 5, "windows": {"startup_s": 1, "final_s": 2}}, out=tmp_path)


def test_a_simulated_run_loads_no_gevent_or_locust_in_the_callers_process() -> None:
    code = (f"import sys; from harness import api; api.run({str(MATRIX_11)!r}, arm='shipped', target='sim'); "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'gevent', 'locust'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert out.strip() == "[]"


@pytest.mark.slow
def test_ctrl_c_during_a_live_run_raises_interrupted_and_leaves_nothing_behind(tmp_path: Path) -> None:
    import signal
    import time

    code = ("from harness import api\n"
            "try:\n"
            f"    api.run({str(MATRIX_11)!r}, arm='shipped', out={str(tmp_path)!r})\n"
            "except api.Interrupted as exc:\n"
            "    print('INTERRUPTED', exc)\n")
    process = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not list(tmp_path.glob("shipped/stub.log")):
        time.sleep(0.1)
    time.sleep(2)  # the accounts are running
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert "INTERRUPTED interrupted; everything the run started has been stopped" in stdout, stderr
    assert "Traceback" not in stderr
    ps = subprocess.run(["ps", "-ww", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(tmp_path) not in ps  # neither the harness child nor its stub
