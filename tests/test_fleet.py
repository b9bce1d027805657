"""Fleets: G stub gateways on one host, each a whole run with its own verdict, all started on one tick."""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest
import yaml
from test_harness_e2e import PROFILES, judged

from harness.errors import BadInput
from harness.profile import load_profile, parse_profile
from harness.run.fleet import GO_FILE, member_profile, wait_at_barrier

FLEET = PROFILES / "fleet-restart.yaml"


def test_a_member_runs_the_profile_without_the_fleet_with_its_own_seed() -> None:
    profile = load_profile(FLEET).with_overrides(time_scale=0.2)
    member = member_profile(profile, 2)
    assert "fleet" not in member
    assert (member["name"], member["seed"], member["time_scale"]) == ("fleet-restart-gateway-02", 70642, 0.2)
    again = parse_profile(yaml.safe_load(yaml.safe_dump(member)))
    assert (again.fleet_gateways, again.account_count, again.arms) == (1, 11, ("shipped", "coordinator"))


def test_a_member_waits_at_the_barrier_for_the_fleet_s_start(tmp_path: Path) -> None:
    start_at = time.time() + 0.5

    def open_later() -> None:
        time.sleep(0.2)
        (tmp_path / GO_FILE).write_text(repr(start_at), encoding="ascii")

    opener = threading.Thread(target=open_later)
    opener.start()
    wait_at_barrier(tmp_path, check_alive=lambda: None)
    assert time.time() >= start_at  # not before the fleet's start time
    assert time.time() - start_at < 0.2
    opener.join()
    assert len(list(tmp_path.glob("*.ready"))) == 1  # it said it was ready


@pytest.mark.parametrize(("text", "expected"), [
    ("fleet: {gateways: 17}", "fleet.gateways: expected a number <= 16"),
    ("fleet: {gateways: 2}\ntarget: {kind: openclaw, version: 2026.4.24}",
     "fleet.gateways: a fleet is of stub gateways (target kind stub); this profile's target is openclaw"),
    ("fleet: {gateways: 2, size: 3}", "fleet.size: unknown key"),
])
def test_a_bad_fleet_is_refused_naming_the_field(text: str, expected: str) -> None:
    with pytest.raises(BadInput) as refused:
        parse_profile(yaml.safe_load(f"name: f\naccounts: {{count: 3}}\n{text}\n"))
    assert expected in str(refused.value)


def test_a_fleet_cannot_be_simulated_or_spread_over_processes() -> None:
    profile = load_profile(FLEET)
    for overrides in ({"target": "sim"}, {"processes": 2}):
        with pytest.raises(BadInput, match="a fleet"):
            profile.with_overrides(**overrides)  # type: ignore[arg-type]


def _first_account_open(stub_jsonl: Path) -> float:
    """Wall time of the second connection the stub saw: the first is the health probe's, before the barrier."""
    opens = [json.loads(line)["time"] for line in stub_jsonl.read_text(encoding="utf-8").splitlines()
             if '"event":"ws.open"' in line]
    return datetime.fromisoformat(opens[1]).timestamp()


@pytest.mark.slow
def test_the_fleet_restart_storms_every_gateway_as_shipped_together(tmp_path: Path) -> None:
    result = judged("run", str(FLEET), "--arm", "shipped", "--no-report", out=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    fleet = json.loads((tmp_path / "shipped" / "fleet.json").read_text(encoding="utf-8"))
    assert (fleet["gateways"], fleet["accounts_per_gateway"], fleet["stormed"]) == (3, 11, 3)
    assert [m["seed"] for m in fleet["members"]] == [70641, 70642, 70643]
    assert fleet["worst"]["verdict"] == "storm"
    worst = json.loads((tmp_path / "shipped" / "summary.json").read_text(encoding="utf-8"))
    assert worst["storm_entries"] == fleet["worst"]["storm_entries"]
    starts = [_first_account_open(tmp_path / "shipped" / f"gateway-{i:02d}" / "shipped" / "stub.jsonl")
              for i in (1, 2, 3)]
    assert max(starts) - min(starts) < 0.3, starts  # one tick for the whole fleet (real seconds)
    assert "storm" in result.stdout and "fleet of 3" in result.stderr
    assert not (tmp_path / "shipped" / "start-barrier").exists()

