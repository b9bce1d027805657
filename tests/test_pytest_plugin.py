"""The pytest plugin, tested with pytester: fixtures, options, marker, JUnit properties, failure reports."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from harness.report.charts import pyplot

# The inner sessions draw reports (matplotlib, numpy); pytester removes the modules an inner session imported,
# and numpy cannot be imported twice in one process: load it here, before any inner session.
pyplot()

ROOT = Path(__file__).resolve().parent.parent
MATRIX_11 = ROOT / "profiles" / "matrix-11-accounts.yaml"
SINGLE = ROOT / "profiles" / "single-account.yaml"


@pytest.fixture(autouse=True)
def _inner_config(request: pytest.FixtureRequest) -> None:
    """The inner sessions' own ini: pytest-asyncio's loop scope stated (it warns otherwise)."""
    if "pytester" in request.fixturenames:
        request.getfixturevalue("pytester").makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")


def test_a_five_line_test_passes_and_records_its_figures_in_junit_xml(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(f"""
        from harness.testing import assert_no_storm

        def test_no_storm(harness_run):
            assert_no_storm(harness_run({str(MATRIX_11)!r}, arm="coordinator", target="sim"))
    """)
    result = pytester.runpytest("--junitxml=report.xml")
    result.assert_outcomes(passed=1)
    folders = list((pytester.path.parent / "basetemp").glob("test_no_storm0/harness-1"))  # pytester's basetemp
    assert len(folders) == 1 and (folders[0] / "coordinator" / "summary.json").is_file()
    assert not (folders[0] / "report.html").exists()  # a passing test's run is not drawn
    xml = (pytester.path / "report.xml").read_text()
    assert '<property name="harness.coordinator.verdict" value="converged"' in xml
    assert '<property name="harness.coordinator.storm_entries" value="0"' in xml
    assert re.search(r'name="harness.coordinator.time_to_all_connected_s" value="2\d\.\d+"', xml)


def test_a_failing_run_reports_verdict_witnesses_and_its_kept_folder(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(f"""
        from harness.testing import assert_no_storm

        def test_shipped(harness_run):
            assert_no_storm(harness_run({str(MATRIX_11)!r}, arm="shipped", target="sim"))
    """)
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    text = result.stdout.str()
    assert "expected no storm (verdict converged)" in text
    assert "arm shipped: verdict storm" in text
    assert "witness: matrix-" in text and "handshake_timeout, close code 1000" in text
    # Five witnesses at most, each shown in the assertion's message and the report section (and in the short
    # summary too where pytest does not truncate it, as when the CI variable is set).
    witnesses = {line.split("witness: ", 1)[1] for line in text.splitlines() if "witness: " in line}
    assert 1 <= len(witnesses) <= 5, witnesses
    assert "Captured harness call" in text or "harness" in text
    folder = re.search(r"results: (\S+shipped)", text)
    assert folder is not None and (Path(folder.group(1)) / "summary.json").exists()
    # Drawn because the test failed (the fixture's runs skip it otherwise), and named in the report section.
    assert (Path(folder.group(1)).parent / "report.html").is_file()
    assert f"report: {Path(folder.group(1)).parent / 'report.html'}" in text
    assert "{'" not in text.split("expected no storm")[1][:2000]  # no dict dump


def test_the_marker_gives_the_profile_and_parametrises_arms(pytester: pytest.Pytester) -> None:
    pytester.copy_example(str(MATRIX_11))
    pytester.makepyfile("""
        import pytest

        @pytest.mark.gateway_profile("matrix-11-accounts.yaml", arms=["shipped", "coordinator"])
        def test_each_arm(harness_run, gateway_arm):
            result = harness_run(target="sim")
            assert result.arm == gateway_arm
            assert result.verdict == {"shipped": "storm", "coordinator": "converged"}[gateway_arm]

        @pytest.mark.gateway_profile("matrix-11-accounts.yaml", arm="coordinator")
        def test_one_arm(harness_run):
            assert harness_run(target="sim", accounts=4).summary.accounts == 4
    """)
    result = pytester.runpytest("-v")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["*test_each_arm?shipped?*PASSED*", "*test_each_arm?coordinator?*PASSED*"])


def test_options_reach_every_run_and_keep_results(pytester: pytest.Pytester, tmp_path: Path) -> None:
    pytester.makepyfile(f"""
        def test_scaled(harness_run):
            result = harness_run({str(SINGLE)!r}, target="sim")
            assert result.summary.time_scale == 0.5
            assert len(result.summaries) == 2 and result.distribution is not None
    """)
    kept = tmp_path / "kept"
    result = pytester.runpytest("--harness-time-scale", "0.5", "--harness-repeat", "2", "--harness-keep-results",
                                str(kept))
    result.assert_outcomes(passed=1)
    assert list(kept.glob("*/harness-1/*/distribution.json"))


def test_a_bad_profile_is_one_clear_error_not_a_traceback(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import pytest
        from harness.api import BadInput

        def test_bad(harness_run):
            with pytest.raises(BadInput, match="accounts.count: expected a number >= 1, got 0"):
                harness_run({"name": "bad", "accounts": {"count": 0}, "target": {"kind": "sim"}})

        def test_gateway_url_needs_a_token(harness_run):
            with pytest.raises(BadInput, match="--gateway-url needs --gateway-token"):
                harness_run({"name": "x", "accounts": {"count": 1}})
    """)
    pytester.runpytest("-k", "test_bad").assert_outcomes(passed=1)
    pytester.runpytest("-k", "token", "--gateway-url", "ws://127.0.0.1:1/").assert_outcomes(passed=1)


def test_the_stub_and_toxiproxy_fixtures_start_and_stop(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        from websockets.sync.client import connect

        def test_stub(gateway_stub):
            stub = gateway_stub(connect_cost_before_timer="fixed:5", handshake_timeout_ms=4000)
            assert stub.url.startswith("ws://127.0.0.1:") and stub.token
            assert stub.stats()["handshake_timeout_ms"] == 4000
            with connect(stub.url) as ws:
                assert '"connect.challenge"' in ws.recv(timeout=5)
            assert "ws.open" in [record.get("event") for record in stub.records()]

        def test_toxiproxy(toxiproxy):
            assert toxiproxy.url.startswith("http://127.0.0.1:")
            assert toxiproxy.client.version()
    """)
    pytester.runpytest().assert_outcomes(passed=2)


@pytest.mark.slow
def test_a_live_run_leaves_the_callers_process_unpatched_and_its_asyncio_working(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(f"""
        import asyncio, sys

        def test_live(harness_run):
            result = harness_run({str(SINGLE)!r}, arm="shipped", overrides={{"duration_s": 20,
                                 "windows": {{"startup_s": 5, "final_s": 10}}}})
            assert result.verdict == "converged", result.explain()
            assert result.summary.target.kind == "stub"
            assert "locust" not in sys.modules
            if "gevent.monkey" in sys.modules:
                import gevent.monkey
                assert not gevent.monkey.is_module_patched("socket")
            assert asyncio.run(asyncio.sleep(0, result="still works")) == "still works"
    """)
    pytester.runpytest_subprocess().assert_outcomes(passed=1)


@pytest.mark.slow
def test_gateway_url_points_every_run_at_the_developers_gateway(pytester: pytest.Pytester, tmp_path: Path) -> None:
    from harness.backends.embedded import EmbeddedStub

    pytester.makepyfile(f"""
        def test_against_my_gateway(harness_run):
            result = harness_run({str(SINGLE)!r}, arm="shipped", overrides={{"duration_s": 20,
                                 "windows": {{"startup_s": 5, "final_s": 10}}}})
            assert result.summary.target.kind == "url", result.explain()
            assert result.verdict == "converged", result.explain()
    """)
    with EmbeddedStub(["--time-scale", "0.1"], log_path=tmp_path / "stub.log") as stub:
        result = pytester.runpytest_subprocess("--gateway-url", stub.url, f"--gateway-token={stub.token}")
    result.assert_outcomes(passed=1)


def test_the_plugin_loads_no_gevent_or_locust() -> None:
    import subprocess

    code = "import sys, harness.pytest_plugin; print(sorted(m for m in sys.modules if m.split('.')[0] in " \
           "('gevent', 'locust')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.openclaw
def test_the_openclaw_gateway_fixture_starts_the_real_gateway(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        from websockets.sync.client import connect

        def test_real(openclaw_gateway):
            gateway = openclaw_gateway("2026.4.24")
            assert gateway.url.startswith("ws://127.0.0.1:") and gateway.token
            with connect(gateway.url) as ws:
                assert '"connect.challenge"' in ws.recv(timeout=10)
    """)
    result = pytester.runpytest()
    outcomes = result.parseoutcomes()
    if outcomes.get("skipped"):
        from tests.conftest import skip_unless_available

        skip_unless_available("openclaw", "the fixture skipped: " + result.stdout.str()[-300:])
    result.assert_outcomes(passed=1)
