"""The example suite in examples/pytest runs as a gateway developer would run it: plain pytest, and again against
"their own" gateway (a stub started here) with --gateway-url."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "pytest"


def pytest_in(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", str(folder), *args],
                          cwd=folder, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_the_example_suite_passes_with_plain_pytest() -> None:
    result = pytest_in(EXAMPLES)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "2 passed, 1 xfailed" in result.stdout, result.stdout[-2000:]


@pytest.mark.slow
def test_the_example_suite_runs_against_the_developers_own_gateway(tmp_path: Path) -> None:
    from harness.backends.embedded import EmbeddedStub

    with EmbeddedStub(["--time-scale", "0.1", "--connect-cost-before-timer", "fixed:200@10"],
                      log_path=tmp_path / "stub.log") as stub:
        result = pytest_in(EXAMPLES, "--gateway-url", stub.url, f"--gateway-token={stub.token}",
                           "--junitxml", str(tmp_path / "report.xml"))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "2 passed, 1 xfailed" in result.stdout, result.stdout[-2000:]
    assert 'name="harness.coordinator.verdict" value="converged"' in (tmp_path / "report.xml").read_text()
