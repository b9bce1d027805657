"""The CI files: the nightly-soak workflow passes actionlint, and ci/nightly-soak's options, exit codes, summary and
Ctrl-C behave as its header says. The script runs here on a copy of itself beside a fake `harness`, so no soak,
install or Docker daemon is involved."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "ci" / "nightly-soak"
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))

# Stands in for .venv/bin/harness: logs its arguments, writes a soak.md naming the gateway (--gateway, else the
# plan's name after "nightly-"), and exits with
# $FAKE_EXIT_<gateway> (soak) or $FAKE_INSTALL_<version> (openclaw-install), dots and the like as underscores.
# With $FAKE_HANG set, a soak announces itself and waits to be stopped.
FAKE_HARNESS = r"""#!/usr/bin/env bash
set -euo pipefail
echo "$* docker=${FAKE_DOCKER:-0}" >>"$FAKE_LOG"
if [ "$1" = openclaw-install ]; then
    code=FAKE_INSTALL_${2//[^A-Za-z0-9]/_}
    exit "${!code:-0}"
fi
plan=$(basename "$2" .yaml)
gateway=${plan#nightly-}  # a plan of its own (the real gateway's) when no --gateway is given
shift 2
while [ $# -gt 0 ]; do
    case $1 in --gateway) gateway=$2 ;; --out) out=$2 ;; --history) history=$2 ;; esac
    shift 2
done
mkdir -p "$out"
printf '| figure | %s |\n' "$gateway" >"$out/soak.md"
touch "$history"
if [ -n "${FAKE_HANG:-}" ]; then
    trap 'touch "$out/terminated"; exit 143' TERM
    touch "$out/started"
    while :; do sleep 0.05; done
fi
code=FAKE_EXIT_${gateway//[^A-Za-z0-9]/_}
exit "${!code:-0}"
"""


def write_executable(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    path.chmod(0o755)


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A folder laid out like the checkout: ci/nightly-soak, fake ci/docker-up (no daemon unless $FAKE_DOCKER_UP)
    and ci/docker-down, and a ready .venv whose harness is the fake one and whose pinned versions are 1.0 and 2.0."""
    root = tmp_path / "checkout"
    (root / "ci").mkdir(parents=True)
    shutil.copy2(SCRIPT, root / "ci" / "nightly-soak")
    write_executable(root / "ci" / "docker-up", '#!/bin/sh\n[ -n "${FAKE_DOCKER_UP:-}" ] || '
                     '{ echo "docker-up: no daemon" >&2; exit 1; }\necho "export FAKE_DOCKER=1"\n')
    write_executable(root / "ci" / "docker-down", '#!/bin/sh\ntouch "$FAKE_LOG.docker-down"\n')
    write_executable(root / ".venv" / "bin" / "pip", "#!/bin/sh\nexit 0\n")
    write_executable(root / ".venv" / "bin" / "python", "#!/bin/sh\necho 1.0 2.0\n")
    write_executable(root / ".venv" / "bin" / "harness", FAKE_HARNESS)
    # `python3 -m venv .venv` finds the venv made already.
    write_executable(tmp_path / "bin" / "python3", "#!/bin/sh\nexit 0\n")
    return root


def script_env(checkout: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "PATH": f"{checkout.parent / 'bin'}{os.pathsep}{os.environ['PATH']}",
            "FAKE_LOG": str(checkout.parent / "harness.log"), **extra}


def run_script(checkout: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(checkout / "ci" / "nightly-soak"), *args], capture_output=True, text=True,
                          timeout=60, cwd=checkout.parent, env=script_env(checkout, **extra), stdin=subprocess.DEVNULL)


def harness_calls(checkout: Path) -> list[str]:
    return (checkout.parent / "harness.log").read_text(encoding="utf-8").splitlines()


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda path: path.name)
def test_workflow_passes_actionlint(workflow: Path) -> None:
    actionlint = Path(sys.executable).parent / "actionlint"
    result = subprocess.run([str(actionlint), str(workflow)], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 0 and result.stdout == "", result.stdout + result.stderr


def test_nightly_workflow_is_there() -> None:
    assert ROOT / ".github" / "workflows" / "nightly-soak.yml" in WORKFLOWS


def test_nightly_soak_is_valid_bash() -> None:
    result = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert os.access(SCRIPT, os.X_OK)


def test_help_prints_usage_and_runs_nothing(checkout: Path) -> None:
    shutil.rmtree(checkout / ".venv")
    result = run_script(checkout, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: ci/nightly-soak [--quick] [--out DIR] [--history FILE]")
    assert result.stderr == ""
    assert sorted(path.name for path in checkout.iterdir()) == ["ci"]  # no .venv, no results
    assert not (checkout.parent / "harness.log").exists()


@pytest.mark.parametrize("args", [("--bogus",), ("--quick", "extra"), ("--out",)])
def test_a_bad_argument_is_one_line_and_exit_2(checkout: Path, args: tuple[str, ...]) -> None:
    result = run_script(checkout, *args)
    assert result.returncode == 2
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith("nightly-soak: "), result.stderr
    assert not (checkout / "results").exists() and not (checkout.parent / "harness.log").exists()


def test_quick_soaks_the_embedded_stub_only(checkout: Path) -> None:
    result = run_script(checkout, "--quick", "--out", "out", "--history", "h.sqlite", FAKE_EXIT_stub="5")
    assert result.returncode == 5, result.stderr
    out, history = checkout.parent / "out", checkout.parent / "h.sqlite"  # relative to where it was called
    assert harness_calls(checkout) == [
        f"soak soak/quick.yaml --gateway stub --out {out}/stub --history {history} docker=0"]
    summary = (out / "summary.md").read_text(encoding="utf-8")
    assert "## stub: exit 5 (regression against the previous nights)\n\n| figure | stub |\n" in summary
    assert summary.endswith("Worst: exit 5 (regression against the previous nights).\n")
    assert history.exists()


def test_nightly_goes_on_after_failures_and_exits_with_the_worst(checkout: Path) -> None:
    result = run_script(checkout, FAKE_EXIT_stub="5", FAKE_EXIT_openclaw_1_0="1", FAKE_INSTALL_2_0="3")
    assert result.returncode == 1, result.stderr  # failure ranks above regression and environment
    out = next((checkout / "results").glob("nightly-*"))
    history = checkout / "results" / "history.sqlite"
    assert harness_calls(checkout) == [
        f"soak soak/nightly.yaml --gateway stub --out {out}/stub --history {history} docker=0",
        "openclaw-install 1.0 docker=0",
        f"soak soak/nightly-openclaw-1.0.yaml --out {out}/openclaw-1.0 --history {history} docker=0",
        "openclaw-install 2.0 docker=0",
    ]
    summary = (out / "summary.md").read_text(encoding="utf-8")
    headings = [line for line in summary.splitlines() if line.startswith("## ")]
    assert headings == ["## stub: exit 5 (regression against the previous nights)", "## stub-docker: skipped",
                        "## openclaw-1.0: exit 1 (failure)", "## openclaw-2.0: exit 3 (target or environment failed)"]
    assert "| figure | openclaw-1.0 |" in summary
    assert summary.endswith("Worst: exit 1 (failure).\n")
    assert "stub-docker: skipped" in result.stderr
    assert not Path(f"{checkout.parent / 'harness.log'}.docker-down").exists()


def test_nightly_soaks_the_stub_in_docker_and_stops_the_daemon(checkout: Path) -> None:
    result = run_script(checkout, FAKE_DOCKER_UP="1")
    assert result.returncode == 0, result.stderr
    calls = harness_calls(checkout)
    assert [call.split(" --out")[0] for call in calls if call.startswith("soak ")] == [
        "soak soak/nightly.yaml --gateway stub", "soak soak/nightly.yaml --gateway stub-docker",
        "soak soak/nightly-openclaw-1.0.yaml", "soak soak/nightly-openclaw-2.0.yaml"]
    assert "--gateway stub-docker" in calls[1] and calls[1].endswith("docker=1")  # docker-up's exports
    assert Path(f"{checkout.parent / 'harness.log'}.docker-down").exists()


def test_ctrl_c_stops_the_running_soak_and_nothing_after_it(checkout: Path) -> None:
    out = checkout.parent / "out"
    process = subprocess.Popen([str(checkout / "ci" / "nightly-soak"), "--out", str(out)], cwd=checkout.parent,
                               env=script_env(checkout, FAKE_HANG="1"), stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while not (out / "stub" / "started").exists():
            assert process.poll() is None and time.monotonic() < deadline, "the fake soak never started"
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, stderr
    assert (out / "stub" / "terminated").exists()  # the soak was told to stop and its own trap ran
    assert len(harness_calls(checkout)) == 1
    assert (out / "summary.md").read_text(encoding="utf-8").endswith("Interrupted (SIGINT): exit 130.\n")
