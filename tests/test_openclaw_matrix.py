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
def test_the_real_gateways_own_matrix_approval_handlers_connect_to_it_over_loopback(tmp_path: Path) -> None:
    """Two Matrix accounts on a local Synapse, configured in the gateway itself: their native-approvals handlers
    start inside the gateway's process and connect to it as clients (what stormed in openclaw#70641)."""
    import re
    import time

    from conftest import require_synapse

    from harness.backends.openclaw import OpenClawGateway
    from harness.backends.synapse import SynapseHomeserver

    version = "2026.4.24"
    require_openclaw(version)
    require_synapse()
    with SynapseHomeserver(bots=2, log_dir=tmp_path) as homeserver:
        assert homeserver.owner is not None
        accounts = {bot.localpart: {
            "homeserver": homeserver.url, "network": {"dangerouslyAllowPrivateNetwork": True},
            "userId": bot.user_id, "accessToken": bot.access_token, "deviceId": bot.device_id, "encryption": False,
            "dm": {"policy": "allowlist", "allowFrom": [homeserver.owner.user_id]},
            "execApprovals": {"enabled": True}} for bot in homeserver.bots}
        config = {"channels": {"matrix": {"enabled": True, "defaultAccount": "bot001", "accounts": accounts}}}
        with OpenClawGateway(version, log_dir=tmp_path, config=config,
                             plugin_stage_dir=ensure_matrix_channel(version)) as gateway:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                connected = set(re.findall(r"clientDisplayName=Matrix Native Approvals \((bot\d+)\)",
                                           gateway.log_text()))
                if connected == {"bot001", "bot002"} and gateway.log_text().count("[matrix] connected to gateway") == 2:
                    break
                time.sleep(0.5)
            else:
                pytest.fail(f"the Matrix approval handlers did not connect: {gateway.log_text()[-2000:]}")
            assert gateway.external_sockets == [] and homeserver.external_sockets == []
