"""The shipped fault scenarios end to end, through the embedded Toxiproxy in front of the stub."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from schema_check import load_comparison

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent


def compare(profile: str, out: Path) -> dict[str, dict[str, Any]]:
    result = subprocess.run([sys.executable, "-m", "harness.cli", "compare", str(ROOT / "profiles" / profile),
                             "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    return load_comparison(out / "compare.json")


def storm_seconds(summary: dict[str, Any]) -> list[float]:
    return [row["t_s"] for row in summary["timeline"] if row["storm_entries"]]


def test_latency_spike_storm_outlives_its_trigger_as_shipped_and_not_behind_the_coordinator(tmp_path: Path) -> None:
    arms = compare("latency-spike.yaml", tmp_path)
    for summary in arms.values():
        assert summary["fault_backend"].startswith("embedded")
        spike, restart = summary["faults"]
        assert (spike["kind"], restart["kind"]) == ("toxic", "gateway_restart")
        assert 59 <= spike["applied_at_s"] <= 62 and 119 <= spike["removed_at_s"] <= 122
        assert not storm_seconds(summary) or min(storm_seconds(summary)) >= 60  # quiet before the fault
    shipped, coordinated = arms["shipped"], arms["coordinator"]
    assert shipped["verdict"] == "storm"
    assert max(storm_seconds(shipped)) >= 350  # trigger gone at 120 s, storm still there at the end
    assert coordinated["verdict"] == "recovered"
    assert max(storm_seconds(coordinated)) < 180  # recovered soon after the spike
    assert coordinated["recovered_at_s"] < 180
    assert coordinated["connected_accounts_at_end"] == 11


def test_handshake_stall_is_confined_to_its_window(tmp_path: Path) -> None:
    arms = compare("handshake-stall.yaml", tmp_path)
    for arm, summary in arms.items():
        assert summary["verdict"] == "recovered", arm  # storm entries after startup, then all back and quiet
        seconds = storm_seconds(summary)
        assert seconds and min(seconds) >= 60 and max(seconds) < 140, (arm, seconds)
        assert summary["storm_entries_by_kind"]["connect_error"] >= 11, arm  # the upgrade never got through
