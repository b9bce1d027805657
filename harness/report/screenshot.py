"""A PNG of report.html as a browser draws it, taken with headless Chromium's own `--screenshot`.

Used by `harness report DIR --screenshot` (and for the README's picture). Chromium is Debian's package
(`ci/browser-up` installs it), found as `chromium` on PATH or at $HARNESS_CHROMIUM; it runs with a throwaway
profile folder, no network services, and a time limit, and is stopped with its whole process group.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from harness.errors import BackendError

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--hide-scrollbars", "--disable-extensions", "--disable-sync", "--no-default-browser-check")
SCREENSHOT_TIMEOUT_S = 60.0
WINDOW = (1280, 2000)


def chromium_path() -> str | None:
    configured = os.environ.get("HARNESS_CHROMIUM")
    if configured:
        return configured if Path(configured).is_file() else None
    return shutil.which("chromium") or shutil.which("chromium-browser")


def screenshot(page: Path, png: Path, window: tuple[int, int] = WINDOW) -> Path:
    browser = chromium_path()
    if browser is None:
        raise BackendError("--screenshot: no Chromium found (install Debian's chromium, e.g. ci/browser-up, or set "
                           "HARNESS_CHROMIUM)")
    with tempfile.TemporaryDirectory(prefix="harness-chromium-") as profile:
        command = [browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={window[0]},{window[1]}",
                   f"--screenshot={png.resolve()}", page.resolve().as_uri()]
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                   start_new_session=True)
        try:
            _, errors = process.communicate(timeout=SCREENSHOT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise BackendError(f"--screenshot: chromium took more than {SCREENSHOT_TIMEOUT_S:g} s") from None
        finally:
            _stop_group(process)
    if process.returncode != 0 or not png.is_file():
        last = (errors or "").strip().splitlines()[-1:] or ["no output"]
        raise BackendError(f"--screenshot: chromium exited {process.returncode}: {last[0][:200]}")
    return png


def _stop_group(process: subprocess.Popen[str]) -> None:
    """Chromium's helpers (zygote, crashpad) share its process group: none of them outlives the screenshot."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
