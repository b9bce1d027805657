"""The static checks (ruff, mypy --strict) run as part of the test suite, so CI enforces them."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_ruff_and_mypy_are_clean() -> None:
    result = subprocess.run(["bash", str(ROOT / "ci" / "lint")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
