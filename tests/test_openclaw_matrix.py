"""The real gateway's Matrix channel, staged at install time (harness/backends/openclaw_matrix.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import require_openclaw

from harness.backends.openclaw import ENTRY, cache_root, ensure_openclaw
from harness.backends.openclaw_matrix import (
    REQUIRED_PACKAGES,
    ensure_matrix_channel,
    matrix_channel_staged,
    stage_dir,
)
from harness.errors import BackendError


@pytest.mark.openclaw
@pytest.mark.parametrize("version", ["2026.4.24", "2026.4.29"])
def test_the_matrix_channel_is_staged_beside_its_version_which_stays_the_version(version: str) -> None:
    require_openclaw(version)
    stage = ensure_matrix_channel(version)  # staged by `harness openclaw-install --matrix` (about a minute once)
    install = ensure_openclaw(version)
    assert matrix_channel_staged(version) and stage == stage_dir(version)
    assert install not in stage.parents  # the gateway's npm walks up to the nearest package.json
    for package in REQUIRED_PACKAGES:
        assert list(stage.glob(f"*/node_modules/{package}/package.json")), package
    installed = json.loads((install / ENTRY.parent / "package.json").read_text(encoding="utf-8"))
    assert installed["version"] == version  # staging once moved a ^-pinned 2026.4.24 to 2026.9.6
    assert json.loads((install / "package.json").read_text())["dependencies"] == {"openclaw": version}


def test_a_cache_inside_an_npm_project_is_refused_before_anything_is_installed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "package.json").write_text("{}")
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(BackendError, match=r"^cannot stage the Matrix channel in .*: npm would install into the "
                                           rf"project at {tmp_path} \(set HARNESS_CACHE_DIR outside it\)$"):
        ensure_matrix_channel("2026.4.24")
    assert not (cache_root() / "2026.4.24").exists()


def test_an_install_pinned_with_a_caret_is_pinned_exactly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path))
    install = tmp_path / "2026.4.24"
    (install / ENTRY).parent.mkdir(parents=True)
    (install / ENTRY).write_text("")
    (install / "package.json").write_text(json.dumps({"private": True, "dependencies": {"openclaw": "^2026.4.24"}}))
    assert ensure_openclaw("2026.4.24") == install
    assert json.loads((install / "package.json").read_text())["dependencies"] == {"openclaw": "2026.4.24"}


@pytest.mark.openclaw
@pytest.mark.matrix
def test_an_inprocess_compare_reads_the_real_handlers_from_the_gateways_console(tmp_path: Path) -> None:
    """Two Matrix accounts on a local Synapse, configured in the gateway itself: their native-approvals handlers
    start inside the gateway's process and connect to it (what stormed in openclaw#70641); the harness counts them
    from the console. With the report's workaround (execApprovals off) no handler starts."""
    import subprocess
    import sys

    import yaml
    from conftest import require_synapse

    from harness.summary import read_summary

    version = "2026.4.24"
    require_openclaw(version)
    require_synapse()
    ensure_matrix_channel(version)  # staged by `harness openclaw-install --matrix`
    profile = tmp_path / "inprocess.yaml"
    profile.write_text(yaml.safe_dump({
        "name": "inprocess-2", "target": {"kind": "openclaw", "version": version, "inprocess": True},
        "accounts": {"count": 2}, "duration_s": 45, "windows": {"startup_s": 35, "final_s": 10}}))
    harness = Path(sys.executable).parent / "harness"
    done = subprocess.run([str(harness), "compare", str(profile), "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    shipped = read_summary(tmp_path / "out" / "shipped" / "summary.json")
    assert shipped.verdict == "converged" and shipped.accounts == 2 and shipped.connected_accounts_at_end == 2
    assert shipped.storm_entries == 0 and shipped.time_to_all_connected_s is not None
    assert shipped.inprocess is not None and shipped.inprocess.exec_approvals
    assert shipped.inprocess.handshake_ms.count >= 2 and shipped.inprocess.handler_connect_errors == 0
    assert shipped.inprocess.correlated is True and shipped.inprocess.homeserver.startswith("synapse 1.")
    console = (tmp_path / "out" / "shipped" / "openclaw.log").read_text(errors="replace")
    assert "Matrix Native Approvals (bot001)" in console and "Matrix Native Approvals (bot002)" in console
    assert (tmp_path / "out" / "shipped" / "synapse.log").is_file()
    assert shipped.target.kind == "openclaw" and shipped.target.external_sockets == []
    off = read_summary(tmp_path / "out" / "approvals-off" / "summary.json")
    assert off.inprocess is not None and not off.inprocess.exec_approvals
    assert (off.accounts, off.handshake_attempts_total, off.verdict) == (0, 0, "converged")
    assert "Matrix Native Approvals" not in (tmp_path / "out" / "approvals-off" / "openclaw.log").read_text(
        errors="replace")


def test_a_run_never_stages_the_matrix_channel_it_names_the_install_command(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.backends.openclaw_matrix import staged_matrix_channel

    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path))
    with pytest.raises(BackendError, match=r"^the Matrix channel of openclaw 2026\.4\.24 is not staged: run "
                                           r"`harness openclaw-install 2026\.4\.24 --matrix` once"):
        staged_matrix_channel("2026.4.24")
    assert list(tmp_path.iterdir()) == []  # nothing installed or staged on the way


def test_the_gateway_config_puts_each_bot_on_the_homeserver_with_the_owner_as_approver() -> None:
    from harness.backends.openclaw_matrix import matrix_accounts_config
    from harness.backends.synapse import MatrixUser

    owner = MatrixUser("@owner:localhost", "pw", "token-owner", "OWNER")
    bots = [MatrixUser(f"@bot00{i}:localhost", "pw", f"token-{i}", f"DEV{i}") for i in (1, 2)]
    config = matrix_accounts_config("http://127.0.0.1:8008", owner, bots, exec_approvals=False)
    matrix = config["channels"]["matrix"]
    assert matrix["enabled"] and matrix["defaultAccount"] == "bot001"
    assert list(matrix["accounts"]) == ["bot001", "bot002"]
    account = matrix["accounts"]["bot002"]
    assert account["homeserver"] == "http://127.0.0.1:8008" and account["accessToken"] == "token-2"
    assert account["dm"] == {"policy": "allowlist", "allowFrom": ["@owner:localhost"]}
    assert account["execApprovals"] == {"enabled": False} and account["encryption"] is False
