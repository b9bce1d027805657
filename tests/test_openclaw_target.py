"""`target: kind: openclaw`: the harness's fake accounts and agents against the real gateway from npm.

Short versions of the shipped real-gateway profiles, run through the CLI in a child process: the
duplicate prompts of openclaw#69478 on 2026.4.29 and 2026.9.6 (device-signed clients, 9.6's approver
shape), storm entries counted from the real gateway's own JSON log on a throttled 2026.4.24, and a
Ctrl-C that leaves no gateway process and no cgroup behind. Marked `openclaw`: see
conftest.require_openclaw.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import require_openclaw
from test_harness_e2e import PROFILES, interrupt_mid_run, judged, summary

from harness.backends.cpu_throttle import CGROUP_PREFIX, CGROUP_V1_CPU_ROOT

pytestmark = pytest.mark.openclaw


def short_profile(tmp_path: Path, source: str, **changes: Any) -> Path:
    """A copy of a shipped profile with some top-level sections replaced (and no thresholds for dropped arms)."""
    data = yaml.safe_load((PROFILES / source).read_text(encoding="utf-8"))
    data.update(changes)
    kept = set(data.get("arms", [])) | {"all"}
    data["assert"] = {arm: block for arm, block in (data.get("assert") or {}).items() if arm in kept}
    path = tmp_path / source
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def gateway_processes() -> set[int]:
    """Live processes named like the real gateway (it renames itself `openclaw-gateway`)."""
    found = set()
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            if comm.read_text().strip().startswith("openclaw"):
                found.add(int(comm.parent.name))
        except OSError:
            continue
    return found


def harness_cgroups() -> set[str]:
    if not CGROUP_V1_CPU_ROOT.is_dir():
        return set()
    return {p.name for p in CGROUP_V1_CPU_ROOT.rglob(f"{CGROUP_PREFIX}*") if p.is_dir()}


@pytest.mark.parametrize("version", ["2026.4.29", "2026.9.6"])
def test_failover_duplicates_prompts_on_the_real_gateway_unless_the_id_is_stable(version: str,
                                                                                 tmp_path: Path) -> None:
    require_openclaw(version)
    profile = short_profile(
        tmp_path, f"openclaw-{version}-failover.yaml",
        agents={"count": 3, "heartbeat_ms": 30_000, "provider_timeouts_ms": [3000, 3000, 3000], "command": "ls"},
        operator={"answer_after_ms": 5000, "decision": "allow-once"},
        arms=["none", "stable-id"], duration_s=40, windows={"startup_s": 10, "final_s": 20},
    )
    result = judged("compare", str(profile), out=tmp_path / "out", timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    none, stable = summary(tmp_path / "out", "none"), summary(tmp_path / "out", "stable-id")
    for s in (none, stable):
        assert s["target"]["kind"] == "openclaw" and s["target"]["version"] == version
        assert s["target"]["device_signed"] is True
        assert s["target"]["external_sockets"] == []
        assert s["connected_accounts_at_end"] == 1
    assert (tmp_path / "out" / "none" / "openclaw.log").stat().st_size > 0
    # Each provider attempt asks again under a new id, and the chat posts each one.
    assert none["duplicates"]["intents"] == 3
    assert none["duplicates"]["max_prompts_per_intent"] == 3
    assert none["duplicates"]["decisions_lost"] >= 3
    # A stable id per intent: the retries find the same pending approval; the operator's answer counts.
    assert stable["duplicates"]["max_prompts_per_intent"] == 1
    assert stable["duplicates"]["intents_decided"] == stable["duplicates"]["intents"] == 3
    assert stable["duplicates"]["decisions_lost"] == 0


def test_storm_entries_on_a_throttled_real_gateway_match_its_own_log(tmp_path: Path) -> None:
    require_openclaw("2026.4.24")
    profile = short_profile(
        tmp_path, "openclaw-2026.4.24-matrix.yaml",
        target={"kind": "openclaw", "version": "2026.4.24", "handshake_timeout_ms": 2000, "cpu_quota": 0.05},
        accounts={"count": 6, "channels": {"matrix": 6}}, arms=["shipped"], duration_s=30,
        windows={"startup_s": 10, "final_s": 10}, probe={"interval_ms": 0}, **{"assert": {}},
    )
    result = judged("run", str(profile), "--arm", "shipped", out=tmp_path / "out", timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    s = summary(tmp_path / "out", "shipped")
    throttle = s["target"]["cpu_throttle"]
    assert throttle["quota"] == 0.05 and throttle["method"]
    assert s["storm_entries"] > 0, s  # six handshakes at 5% of a core do not fit in 2 s
    # The gateway's own count: one `handshake timeout conn=…` warning per connection its timer closed.
    gateway_log = (tmp_path / "out" / "shipped" / "gateway.jsonl").read_text(encoding="utf-8")
    from_log = s["storm_entries_by_source"]["gateway_log"]["handshake_timeout"]
    assert gateway_log.count('"handshake timeout conn=') == from_log
    assert s["sources_agree"] is True


def test_ctrl_c_stops_the_real_gateway_and_removes_its_cgroup(tmp_path: Path) -> None:
    require_openclaw("2026.4.24")
    before_processes, before_cgroups = gateway_processes(), harness_cgroups()
    locust_stats = tmp_path / "shipped" / "locust_stats.csv"  # the gateway is up and throttled, the accounts run
    code, stderr = interrupt_mid_run(PROFILES / "openclaw-2026.4.24-matrix.yaml", tmp_path,
                                     started=locust_stats.exists, start_timeout_s=180, mid_run_s=3)
    assert code == 130, stderr[-2000:]
    assert gateway_processes() - before_processes == set()
    assert harness_cgroups() - before_cgroups == set()
