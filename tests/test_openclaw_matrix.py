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
