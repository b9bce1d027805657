"""The harness's pytest plugin (registered as `pytest11` entry point `harness`: installing the package is enough).

Fixtures:
  harness_run            `harness_run(profile=None, **kw) -> RunResult`, as `harness.api.run` (and
                         `harness_run.compare(...)`). Each run's folder is under the test's `tmp_path`; the
                         verdict and figures go to the JUnit XML as properties; a failing test's report gets a
                         `harness` section explaining each run.
  gateway_stub           a factory: `gateway_stub(connect_cost_before_timer="fixed:500", ...)` starts the stub with
                         those options and returns its url, token, stats() and records(); stopped at teardown.
  toxiproxy              the embedded Toxiproxy-compatible server (or the one at TOXIPROXY_URL) and a bound client.
  openclaw_gateway       a factory: `openclaw_gateway("2026.4.24")` starts the real gateway from the cache; skipped with
                         the reason where Node or the package cannot be had (failed with HARNESS_REQUIRE_OPENCLAW=1).
  gateway_arm            the arm of a test parametrised by `@pytest.mark.gateway_profile(path, arms=[...])`.
Options: --gateway-url/--gateway-token (every harness_run targets that gateway on loopback), --harness-time-scale,
--harness-repeat, --harness-keep-results DIR (copy every run's folder there).
Marker: `@pytest.mark.gateway_profile("profile.yaml", arm=None, arms=None)`: the profile `harness_run()` runs when
called without one (a path relative to the test's file), its arm, or the arms to parametrise the test over.

Nothing here imports gevent or Locust: live runs happen in a child process (`harness.api`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from harness import api
from harness.api import CompareResult, RunResult

PROPERTIES = ("verdict", "storm_entries", "storm_entries_after_startup", "time_to_all_connected_s")
MARKER = "gateway_profile"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("harness", "gateway storm harness")
    group.addoption("--gateway-url", default=None, metavar="WS_URL",
                    help="run every harness_run against this gateway on loopback (with --gateway-token)")
    group.addoption("--gateway-token", default=None, metavar="TOKEN", help="the gateway's token, for --gateway-url")
    group.addoption("--harness-time-scale", type=float, default=None, metavar="X",
                    help="override every profile's time scale")
    group.addoption("--harness-repeat", type=int, default=1, metavar="N",
                    help="run each arm N times (seeds base, +1, …)")
    group.addoption("--harness-keep-results", default=None, metavar="DIR",
                    help="copy every run's results folder to DIR/<test>/")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{MARKER}(path, arm=None, arms=None): the profile harness_run() runs by default (relative to "
                   "the test file), its arm, or the arms to parametrise the test over (fixture gateway_arm)")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    marker = metafunc.definition.get_closest_marker(MARKER)
    if marker is not None and marker.kwargs.get("arms") and "gateway_arm" in metafunc.fixturenames:
        metafunc.parametrize("gateway_arm", list(marker.kwargs["arms"]))


@pytest.fixture
def gateway_arm(request: pytest.FixtureRequest) -> str | None:
    """The arm this test runs: its parametrised one, or the marker's `arm`."""
    param: str | None = getattr(request, "param", None)
    if param is not None:
        return param
    marker = request.node.get_closest_marker(MARKER)
    return None if marker is None else marker.kwargs.get("arm")


@dataclass
class HarnessRun:
    """The `harness_run` fixture: `harness.api.run` with the test's folder, options and marker filled in."""

    request: pytest.FixtureRequest
    tmp_path: Path
    record_property: Callable[[str, object], None]
    arm: str | None
    results: list[RunResult | CompareResult] = field(default_factory=list)

    def __call__(self, profile: api.ProfileSource | None = None, **options: Any) -> RunResult:
        profile, options = self._filled(profile, options)
        options.setdefault("arm", self.arm)
        result = api.run(profile, out=self._next_folder(), **options)
        self._record(result)
        return result

    def compare(self, profile: api.ProfileSource | None = None, **options: Any) -> CompareResult:
        profile, options = self._filled(profile, options)
        result = api.compare(profile, out=self._next_folder(), **options)
        self._record(result)
        return result

    def _filled(self, profile: api.ProfileSource | None,
                options: dict[str, Any]) -> tuple[api.ProfileSource, dict[str, Any]]:
        config = self.request.config
        if profile is None:
            marker = self.request.node.get_closest_marker(MARKER)
            if marker is None or not marker.args:
                raise api.BadInput(f"harness_run: no profile given and no @pytest.mark.{MARKER}(path) on the test")
            profile = Path(self.request.node.path).parent / marker.args[0]
        url = config.getoption("--gateway-url")
        if url and "target" not in options:
            token = config.getoption("--gateway-token")
            if not token:
                raise api.BadInput("--gateway-url needs --gateway-token (the gateway's shared token)")
            options["target"] = {"kind": "url", "url": url, "token": token}
        scale = config.getoption("--harness-time-scale")
        if scale is not None and "time_scale" not in options:
            options["time_scale"] = scale
        options.setdefault("repeat", config.getoption("--harness-repeat"))
        options.setdefault("report", False)  # drawn when the test fails or its results are kept (_with_report)
        return profile, options

    def _next_folder(self) -> Path:
        return self.tmp_path / f"harness-{len(self.results) + 1}"

    def _record(self, result: RunResult | CompareResult) -> None:
        self.results.append(result)
        for run in ([result] if isinstance(result, RunResult) else list(result.arms.values())):
            for name in PROPERTIES:
                self.record_property(f"harness.{run.arm}.{name}", getattr(run.summary, name))
            self.record_property(f"harness.{run.arm}.results", str(run.out_dir))
        keep = self.request.config.getoption("--harness-keep-results")
        if keep:
            folder = _with_report(result)
            target = Path(keep) / _safe_name(self.request.node.nodeid) / folder.name
            shutil.copytree(folder, target, dirs_exist_ok=True)


@pytest.fixture
def harness_run(request: pytest.FixtureRequest, tmp_path: Path, record_property: Callable[[str, object], None],
                gateway_arm: str | None) -> HarnessRun:
    runner = HarnessRun(request, tmp_path, record_property, gateway_arm)
    request.node.stash[_RUNS] = runner.results
    return runner


_RUNS = pytest.StashKey[list[RunResult | CompareResult]]()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()  # type: ignore[attr-defined]
    runs = item.stash.get(_RUNS, None)
    if report.when == "call" and report.failed and runs:
        for run in runs:
            _with_report(run)
        report.sections.append(("harness", "\n".join(run.explain() for run in runs)))


def _with_report(result: RunResult | CompareResult) -> Path:
    """The result's folder, with its report.html drawn now if it was not (the fixture's runs skip it to save
    about a second each, until a test fails or its results are kept)."""
    if not result.report.is_file():
        from harness.report.html import write_report

        write_report(result.report.parent)
    return result.report.parent


# -- the other fixtures -------------------------------------------------------------------------------------


@dataclass
class RunningStub:
    """A stub started by the `gateway_stub` fixture."""

    url: str
    http_url: str
    token: str
    log_file: Path
    _stats: Callable[[], dict[str, Any]]

    def stats(self) -> dict[str, Any]:
        """The stub's /stats now."""
        return self._stats()

    def records(self) -> list[dict[str, Any]]:
        """Its JSON log so far, one dict per record."""
        if not self.log_file.exists():
            return []
        return [json.loads(line) for line in self.log_file.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture
def gateway_stub(tmp_path: Path) -> Iterator[Callable[..., RunningStub]]:
    """A factory starting the stub (a child process on 127.0.0.1, a free port) with any of its options."""
    from harness.backends.embedded import EmbeddedStub

    started: list[EmbeddedStub] = []

    def start(**options: Any) -> RunningStub:
        index = len(started) + 1
        log_file = tmp_path / f"stub-{index}.jsonl"
        args = [item for name, value in options.items() for item in (f"--{name.replace('_', '-')}", str(value))]
        stub = EmbeddedStub([*args, "--log-file", str(log_file)], log_path=tmp_path / f"stub-{index}.log")
        stub.start()
        started.append(stub)
        return RunningStub(stub.url, stub.http_url, stub.token, log_file, stub.stats)

    yield start
    for stub in started:
        stub.stop()


@dataclass(frozen=True)
class RunningToxiproxy:
    url: str
    client: Any  # harness.faults.client.ToxiproxyClient


@pytest.fixture
def toxiproxy(tmp_path: Path) -> Iterator[RunningToxiproxy]:
    """The Toxiproxy at TOXIPROXY_URL, or the embedded compatible one as a child process, with a bound client."""
    from harness.backends.base import EMBEDDED_PROXY_MODULE
    from harness.backends.embedded import ChildService
    from harness.faults.client import ToxiproxyClient

    url = os.environ.get("TOXIPROXY_URL")
    if url:
        client = ToxiproxyClient(url)
        yield RunningToxiproxy(url, client)
        client.reset()
        return
    with ChildService(EMBEDDED_PROXY_MODULE, ["--host", "127.0.0.1", "--port", "0"],
                      log_path=tmp_path / "toxiproxy.log") as child:
        url = str(child.ready["url"])
        yield RunningToxiproxy(url, ToxiproxyClient(url))


@pytest.fixture
def openclaw_gateway(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """A factory starting the real gateway from the cache: `openclaw_gateway("2026.4.24", cpu_quota=None, ...)`."""
    from harness.backends.openclaw import OpenClawGateway, ensure_openclaw
    from harness.errors import BackendError, BadInput

    with contextlib.ExitStack() as stack:
        def start(version: str, **options: Any) -> OpenClawGateway:
            try:
                ensure_openclaw(version)
            except (BackendError, BadInput) as exc:
                reason = f"Node 24 or openclaw@{version} cannot be had: {exc}"
                if os.environ.get("HARNESS_REQUIRE_OPENCLAW") == "1":
                    pytest.fail(f"HARNESS_REQUIRE_OPENCLAW=1 but {reason}", pytrace=False)
                pytest.skip(reason)
            folder = tmp_path / f"openclaw-{version}"
            folder.mkdir(exist_ok=True)
            return stack.enter_context(OpenClawGateway(version, log_dir=folder, **options))

        yield start


def _safe_name(nodeid: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in nodeid)[:150]
