"""report.html in a real browser: Debian's Chromium, headless, driven by Playwright (never a downloaded build).

The page must load from disk with no console error and no request leaving the file, show every chart it
promises, and draw something (the screenshot, kept in the results folder as report-browser.png, is not blank).
Skipped with the reason where no Chromium is installed; CI installs it (ci/browser-up) and sets
HARNESS_REQUIRE_BROWSER=1, which turns that skip into a failure.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from harness import api
from harness.report.html import write_report
from harness.report.screenshot import CHROMIUM_FLAGS, chromium_path
from harness.sweep import run_sweep
from harness.sweep.spec import load_spec

ROOT = Path(__file__).resolve().parent.parent
MATRIX_11 = ROOT / "profiles" / "matrix-11-accounts.yaml"
LOAD_TIMEOUT_MS = 30_000

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def browser():  # type: ignore[no-untyped-def]
    executable = chromium_path()
    if executable is None:
        reason = "no Chromium installed (ci/browser-up installs Debian's chromium)"
        if os.environ.get("HARNESS_REQUIRE_BROWSER") == "1":
            pytest.fail(f"HARNESS_REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(reason)
    playwright_api = pytest.importorskip("playwright.sync_api")
    with playwright_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, headless=True,
                                              args=[f for f in CHROMIUM_FLAGS if f != "--headless"])
        yield launched
        launched.close()


def compare_folder(out: Path) -> Path:
    return api.compare(MATRIX_11, target="sim", out=out).out_dir


def sweep_folder(out: Path) -> Path:
    spec = out / "spec.yaml"
    spec.write_text(yaml.safe_dump({
        "name": "browser", "base": str(MATRIX_11), "seeds": 1, "duration_s": 90,
        "axes": {"accounts": [1, 11], "host_speed": [1], "arm": ["coordinator"], "start_jitter_ms": [0, 2000],
                 "max_concurrent_starts": [1, 3, "unlimited"]}}))
    run_sweep(load_spec(spec), out / "sweep", workers=1, progress_stream=io.StringIO())
    return out / "sweep"


def soak_folder(out: Path) -> Path:
    """A one-cycle soak (about 20 s) with a history of two nights, so the page has every soak chart."""
    plan = out / "plan.yaml"
    plan.write_text(yaml.safe_dump({
        "name": "browser", "time_scale": 0.05, "cycles": 1, "warmup_minutes": 0, "sample_interval_s": 1,
        "runs": [{"profile": str(MATRIX_11), "arms": ["coordinator"], "expect": {"coordinator": "converged"},
                  "duration_s": 120}]}))
    for night in ("1", "2"):
        done = subprocess.run([sys.executable, "-m", "harness.cli", "soak", str(plan), "--out", str(out / night),
                               "--history", str(out / "history.sqlite")], cwd=ROOT, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
    return out / "2"


@pytest.mark.parametrize(("make", "charts", "banners"), [
    (compare_folder, ["timeline", "swimlane"], {"shipped": "storm", "coordinator": "converged"}),
    (sweep_folder, ["accounts-1", "accounts-11"], {}),
    pytest.param(soak_folder, ["cycles", "resources", "trend"], {}, marks=pytest.mark.slow),
])
def test_the_report_loads_offline_without_errors_and_shows_every_chart(browser, tmp_path: Path, make,  # type: ignore[no-untyped-def]
                                                                        charts: list[str],
                                                                        banners: dict[str, str]) -> None:
    folder = make(tmp_path)
    page_path = write_report(folder)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    requests: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("request", lambda request: requests.append(request.url))
    page.goto(page_path.as_uri(), wait_until="load", timeout=LOAD_TIMEOUT_MS)

    assert errors == []
    assert requests == [page_path.as_uri()]  # the page itself and nothing else
    shown = page.eval_on_selector_all("figure.chart", "figures => figures.map(f => f.dataset.chart)")
    assert shown == charts
    for chart in charts:
        box = page.locator(f"#chart-{chart} svg").bounding_box()
        assert box is not None and box["width"] > 400 and box["height"] > 150, chart
    for arm, verdict in banners.items():
        assert page.locator(f'.banner[data-arm="{arm}"] .verdict').inner_text().lower() == verdict
    if make is sweep_folder:
        assert page.locator("#recommendation tr").count() == 3  # the header and one row per account count
    if make is soak_folder:
        assert page.locator("#soak-verdict .verdict").inner_text().lower() == "passed"
        assert page.locator("#soak-runs tr").count() == 2  # the header and the one run

    screenshot = folder / "report-browser.png"
    page.screenshot(path=str(screenshot), full_page=True)
    page.close()
    import matplotlib.image

    pixels = matplotlib.image.imread(str(screenshot))
    colours = {tuple(p) for p in pixels[::7, ::7].reshape(-1, pixels.shape[-1]).tolist()}
    assert pixels.shape[0] > 900 and len(colours) > 50  # a long page with charts in it, not a blank one
