"""`harness sweep`: the spec's bad inputs, determinism, resuming, Ctrl-C, and what it recommends."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.errors import BadInput
from harness.profile import parse_profile
from harness.sweep import run_sweep
from harness.sweep.cells import cell_profile, cell_profile_data, cells
from harness.sweep.recommend import is_safe
from harness.sweep.spec import load_spec
from harness.target import SimTarget
from harness.verdict.figures import p95_time as p95

ROOT = Path(__file__).resolve().parent.parent
MATRIX_11 = ROOT / "profiles" / "matrix-11-accounts.yaml"


def write_spec(folder: Path, **overrides: Any) -> Path:
    spec: dict[str, Any] = {
        "name": "test-sweep", "base": str(MATRIX_11), "seeds": 2, "duration_s": 90,
        "axes": {"accounts": [1, 6, 11], "host_speed": [0.75, 1], "arm": ["coordinator", "shipped"],
                 "start_jitter_ms": [0, 2000], "max_concurrent_starts": [1, 3, "unlimited"]},
    }
    spec.update(overrides)
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def harness(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.parametrize(("change", "line"), [
    ({"base": None}, "base: required"),
    ({"axes": {"acounts": [1]}}, "axes.acounts: unknown key"),
    ({"axes": {"arm": ["coordinator", "stable-id"]}}, "axes.arm[1]: expected a start arm"),
    ({"axes": {"accounts": [0]}}, "axes.accounts[0]: expected an integer from 1 to 10000, got 0"),
    ({"axes": {"max_concurrent_starts": ["infinite"]}}, "axes.max_concurrent_starts[0]: expected an integer from 1 to "
                                                        "10000 or unlimited, got 'infinite'"),
    ({"axes": {"host_speed": []}}, "axes.host_speed: expected a list of 1 to 100 values, got 0"),
    ({"axes": {"start_jitter_ms": [0, 0]}}, "axes.start_jitter_ms[1]: 0 is listed twice"),
    ({"seeds": 0}, "seeds: expected a count from 1 to 1000 or a list of seeds, got 0"),
    ({"safe_host_speeds": [3]}, "safe_host_speeds: expected a non-empty list of values of axes.host_speed"),
    ({"base": "no-such.yaml"}, "base: the base profile is not valid"),
])
def test_a_bad_spec_is_one_line_naming_the_field_and_exit_2(tmp_path: Path, change: dict[str, Any],
                                                            line: str) -> None:
    spec = write_spec(tmp_path, **change)
    if change.get("base", "") is None:
        text = yaml.safe_load(spec.read_text())
        del text["base"]
        spec.write_text(yaml.safe_dump(text))
    with pytest.raises(BadInput, match=None) as raised:
        load_spec(spec)
    assert line in str(raised.value) and str(spec) in str(raised.value)
    result = harness("sweep", str(spec), "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and line in lines[0], result.stderr


def test_a_base_profile_that_is_not_the_stubs_is_refused(tmp_path: Path) -> None:
    base = tmp_path / "url.yaml"
    base.write_text(yaml.safe_dump({"name": "u", "target": {"kind": "url", "url": "ws://127.0.0.1:1/", "token": "t"},
                                    "accounts": {"count": 1}}))
    with pytest.raises(BadInput, match=r"base: expected a stub or sim profile .* got target kind url"):
        load_spec(write_spec(tmp_path, base=str(base)))


def test_the_same_spec_gives_a_byte_identical_sweep_csv_on_one_worker_or_two(tmp_path: Path) -> None:
    spec = load_spec(write_spec(tmp_path))
    run_sweep(spec, tmp_path / "one", workers=1)
    run_sweep(spec, tmp_path / "two", workers=2)
    first = (tmp_path / "one" / "sweep.csv").read_bytes()
    assert first == (tmp_path / "two" / "sweep.csv").read_bytes()
    rows = list(csv.DictReader(first.decode().splitlines()))
    assert len(rows) == 3 * 2 * (2 * 3 + 1) * 2  # accounts x speeds x (J x K + shipped) x seeds


def test_an_interrupted_sweep_resumes_without_redoing_finished_runs(tmp_path: Path) -> None:
    spec = load_spec(write_spec(tmp_path))
    whole = tmp_path / "whole"
    run_sweep(spec, whole, workers=1)
    part = tmp_path / "part"
    part.mkdir()
    lines = (whole / "cells.jsonl").read_text().splitlines()
    kept = lines[: len(lines) // 2]
    (part / "cells.jsonl").write_text("\n".join(kept) + "\n" + lines[len(lines) // 2][:20])  # a torn last line
    progress = tmp_path / "progress.txt"
    with progress.open("w") as stream:
        run_sweep(spec, part, workers=1, progress_stream=stream)
    assert f"{len(kept) - 1} of {len(lines) - 1} runs already in" in progress.read_text()
    assert (part / "sweep.csv").read_bytes() == (whole / "sweep.csv").read_bytes()


def test_another_specs_results_folder_is_refused(tmp_path: Path) -> None:
    run_sweep(load_spec(write_spec(tmp_path)), tmp_path / "out", workers=1)
    other = load_spec(write_spec(tmp_path, seeds=3))
    with pytest.raises(BadInput, match="holds the runs of another sweep"):
        run_sweep(other, tmp_path / "out", workers=1)


def test_ctrl_c_keeps_the_finished_runs_and_leaves_no_worker_behind(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, seeds=40, axes={"accounts": [4, 11, 16, 32], "host_speed": [0.5, 1, 2],
                                                "arm": ["coordinator"], "start_jitter_ms": [0, 1000, 2000],
                                                "max_concurrent_starts": [1, 3]})
    out = tmp_path / "out"
    process = subprocess.Popen([sys.executable, "-m", "harness.cli", "sweep", str(spec), "--out", str(out),
                                "--workers", "2"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    journal = out / "cells.jsonl"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not journal.exists() or len(journal.read_text().splitlines()) < 30):
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 130, stderr
    assert "interrupted after" in stderr and "the same command resumes" in stderr
    assert "Traceback" not in stderr
    done = len(journal.read_text().splitlines()) - 1
    assert 30 <= done < 4 * 3 * 6 * 40
    ps = subprocess.run(["ps", "-ww", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(spec) not in ps
    resumed = harness("sweep", str(spec), "--out", str(out))
    assert resumed.returncode == 0, resumed.stderr
    assert f"{done} of {4 * 3 * 6 * 40} runs already in" in resumed.stderr


def test_the_recommendation_is_safe_everywhere_and_the_fastest_safe_setting(tmp_path: Path) -> None:
    spec = load_spec(write_spec(tmp_path))
    result = run_sweep(spec, tmp_path / "out", workers=1)
    rows = list(csv.DictReader((tmp_path / "out" / "sweep.csv").read_text().splitlines()))
    recommendation = json.loads((tmp_path / "out" / "recommendation.json").read_text())
    assert recommendation == result.recommendation
    assert "is *safe* for N accounts when" in recommendation["objective"]

    def typed(row: dict[str, str]) -> dict[str, Any]:
        time_s = row["time_to_all_connected_s"]
        return {**row, "accounts": int(row["accounts"]),
                "storm_entries_after_startup": int(row["storm_entries_after_startup"]),
                "connected_accounts_at_end": int(row["connected_accounts_at_end"]),
                "time_to_all_connected_s": float(time_s) if time_s else None}

    def runs(accounts: int, jitter: int, cap: Any) -> list[dict[str, Any]]:
        return [typed(r) for r in rows if r["arm"] == "coordinator" and int(r["accounts"]) == accounts
                and r["start_jitter_ms"] == str(jitter) and r["max_concurrent_starts"] == str(cap)]

    for entry in recommendation["per_accounts"]:
        chosen = runs(entry["accounts"], entry["start_jitter_ms"], entry["max_concurrent_starts"])
        assert len(chosen) == 4 and all(is_safe(r) for r in chosen)  # 2 seeds x 2 speeds
        assert p95([r["time_to_all_connected_s"] for r in chosen]) == entry["p95_time_to_all_connected_s"]
        for jitter in (0, 2000):
            for cap in (1, 3, "unlimited"):
                other = runs(entry["accounts"], jitter, cap)
                if all(is_safe(r) for r in other):
                    assert p95([r["time_to_all_connected_s"] for r in other]) >= \
                        entry["p95_time_to_all_connected_s"] - 0.5
    # The matrix-11 gateway: 11 accounts with K unlimited storm; behind K = 3 they do not, at speeds 0.75 and 1.
    eleven = next(e for e in recommendation["per_accounts"] if e["accounts"] == 11)
    assert eleven["max_concurrent_starts"] != "unlimited"
    assert recommendation["pr_70649"]["in_grid"] and recommendation["pr_70649"]["safe_up_to_accounts"] >= 11
    for accounts in spec.accounts:
        for suffix in ("png", "svg"):
            assert (tmp_path / "out" / "charts" / f"accounts-{accounts}.{suffix}").stat().st_size > 1000


def test_a_cells_profile_file_says_what_the_simulator_runs(tmp_path: Path) -> None:
    spec = load_spec(write_spec(tmp_path, axes={"accounts": [6], "host_speed": [0.5], "arm": ["coordinator"],
                                                "start_jitter_ms": [500], "max_concurrent_starts": [2]}))
    (cell,) = list(cells(spec))
    direct = cell_profile(spec, cell, 7)
    from_file = parse_profile(cell_profile_data(spec, cell, 7, kind="sim"))
    for field in ("account_count", "channels", "arms", "coordinator", "seed", "duration_s", "startup_window_s",
                  "final_window_s"):
        assert getattr(from_file, field) == getattr(direct, field), field
    assert isinstance(from_file.target, SimTarget) and isinstance(direct.target, SimTarget)
    assert from_file.target.stub.config == direct.target.stub.config


def test_every_fix_family_is_an_axis_and_varies_only_its_own_parameters(tmp_path: Path) -> None:
    spec = load_spec(write_spec(tmp_path, seeds=1, axes={
        "accounts": [11], "arm": ["coordinator", "stagger", "adaptive", "breaker", "backoff-jitter"],
        "start_jitter_ms": [0, 2000], "max_concurrent_starts": [3], "stagger_ms": [500, 1000, 2000],
        "adaptive_max_concurrent_starts": [2, 4], "breaker_failures": [2, 5], "breaker_cooldown_ms": [10_000]}))
    run_sweep(spec, tmp_path / "out", workers=1)
    rows = list(csv.DictReader((tmp_path / "out" / "sweep.csv").read_text().splitlines()))
    by_arm = {arm: [r for r in rows if r["arm"] == arm] for arm in spec.arms}
    assert {arm: len(found) for arm, found in by_arm.items()} == {
        "coordinator": 2, "stagger": 3, "adaptive": 2, "breaker": 2, "backoff-jitter": 1}
    assert {r["stagger_ms"] for r in by_arm["stagger"]} == {"500", "1000", "2000"}
    assert {r["start_jitter_ms"] for r in by_arm["stagger"]} == {""}  # not the stagger arm's parameter
    assert {r["breaker_cooldown_ms"] for r in by_arm["breaker"]} == {"10000"}
    families = json.loads((tmp_path / "out" / "recommendation.json").read_text())["families"]
    assert [f["arm"] for f in families] == list(spec.arms)
    stagger = next(f for f in families if f["arm"] == "stagger")
    if stagger["best"] is not None:
        assert set(stagger["best"]) == {"stagger_ms", "p95_time_to_all_connected_s"}
