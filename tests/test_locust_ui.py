"""The locustfile under Locust's own web UI (harness.locust_ui): the Storm tab's figures, the custom parameters,
the loopback binding, and a start of fewer accounts than configured.

The live tests run `locust -f harness/locustfile.py` (web UI, not --headless) as a child process against the
embedded stub and drive it through the UI's own HTTP API (/swarm, /stop), as the browser does; the pytest process
never imports Locust or gevent. Every process binds loopback and is stopped by the test that started it.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from harness.backends.embedded import EmbeddedStub
from harness.events import AccountLedger, Attempt, Outcome
from harness.locust_ui import (
    LIVE_WINDOW_MS,
    TAB_KEY,
    check_swarm_form,
    live_figures,
    live_guess,
    start_note,
)
from harness.policy.arms import ARMS

ROOT = Path(__file__).resolve().parent.parent
LOCUSTFILE = ROOT / "harness" / "locustfile.py"
FAST_STUB = ["--challenge-latency-ms", "0", "--hello-latency-ms", "0"]
# Every start storms: the gateway's handshake timer (500 ms) fires long before a connect's cost (2 s) is paid.
STORM_STUB = ["--handshake-timeout-ms", "500", "--connect-cost-before-timer", "fixed:2000@10"]
WAIT_S = 30.0


# -- the pure parts: no Locust needed ----------------------------------------------------------------------------


def attempt(account: str, ended_ms: float, outcome: Outcome = Outcome.HELLO, handler: int = 1) -> Attempt:
    return Attempt(account, handler, ended_ms - 5, ended_ms, outcome)


def test_the_live_guess_follows_the_verdicts_words() -> None:
    assert live_guess(started=5, connected=0, storm_in_window=0, attempts=0) == "starting"
    assert live_guess(started=5, connected=2, storm_in_window=3, attempts=9) == "storm"
    assert live_guess(started=5, connected=5, storm_in_window=3, attempts=9) == "converging"  # the window decides
    assert live_guess(started=5, connected=3, storm_in_window=0, attempts=3) == "converging"  # still connecting
    assert live_guess(started=5, connected=5, storm_in_window=0, attempts=8) == "converged"


def test_figures_count_storm_entries_in_the_sliding_window_only() -> None:
    ledger = AccountLedger()
    ledger.record_attempt(attempt("matrix-1", 1_000, Outcome.HANDSHAKE_TIMEOUT))  # outside the window at 90 s
    ledger.record_attempt(attempt("matrix-1", 40_000, Outcome.PREAUTH_REJECTED))
    ledger.record_attempt(attempt("matrix-1", 41_000))
    ledger.record_attempt(attempt("matrix-2", 42_000))
    figures = live_figures(ledger, now_ms=90_000, started=3, running=3, configured=11, arm=ARMS["shipped"],
                           gate=None, note=start_note(3, 11, ARMS["shipped"]))
    assert (figures.storm_entries, figures.storm_entries_in_window, figures.handshake_attempts) == (2, 1, 4)
    assert (figures.accounts_connected, figures.accounts_started, figures.window_s) == (2, 3, LIVE_WINDOW_MS / 1000)
    assert figures.guess == "storm"
    rows = {row["figure"]: row["value"] for row in figures.rows()}
    assert rows["storm entries in the last 60 s"] == "1"
    assert rows["accounts connected"] == "2 / 3 running (11 configured)"
    assert rows["start"] == "started 3 of the 11 configured accounts; all 3 start on the same tick"
    assert rows["start gate"] == "none: every account starts at once"


def test_the_start_note_says_how_many_of_the_configured_accounts_start() -> None:
    assert start_note(11, 11, ARMS["shipped"]) == "started 11 accounts; all 11 start on the same tick"
    assert start_note(5, 11, ARMS["coordinator"]) == (
        "started 5 of the 11 configured accounts; all 5 reach the coordinator start gate on the same tick")
    assert start_note(13, 11, ARMS["shipped"]).startswith("started 13 accounts, 2 more than the 11 configured")
    assert start_note(4, None, ARMS["shipped"]) == "started 4 accounts; all 4 start on the same tick"


@pytest.mark.parametrize(("form", "expected"), [
    ({"start_jitter_ms": "abc"}, "--start-jitter-ms: expected a whole number of ms from 0 to 86400000, got 'abc'"),
    ({"max_concurrent_starts": "0"}, "--max-concurrent-starts: expected a whole number from 1 to 2000, got '0'"),
    ({"start_slot_max_hold_ms": "2.5"}, "--start-slot-max-hold-ms: expected a whole number of ms from 1"),
    ({"start_jitter_ms": "²"}, "--start-jitter-ms: expected a whole number"),
    ({"gateway_url": "ws://10.0.0.1:18789/"}, "--gateway-url: refused '10.0.0.1': load goes to loopback only"),
    ({"gateway_url": ""}, "--gateway-url: required"),
    ({"arm": "fastest"}, "--arm: expected one of adaptive, backoff"),
    ({"gateway_protocol": "5"}, "--gateway-protocol: expected one of 3, 4, got '5'"),
])
def test_a_bad_custom_parameter_is_one_line_naming_the_option(form: dict[str, str], expected: str) -> None:
    problem = check_swarm_form({"gateway_url": "ws://127.0.0.1:18789/", "arm": "shipped", **form})
    assert problem is not None and problem.startswith(expected) and "\n" not in problem


def test_good_custom_parameters_pass() -> None:
    assert check_swarm_form({"gateway_url": "ws://localhost:1/", "arm": "coordinator", "start_jitter_ms": "0",
                             "max_concurrent_starts": "1", "start_slot_max_hold_ms": " 250 ",
                             "user_count": "5", "spawn_rate": "5"}) is None


# -- Locust's web UI, live -----------------------------------------------------------------------------------------


def free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def listening_addresses(port: int) -> set[str]:
    """The local addresses with a socket listening on `port`, from the kernel's tables (hex, as /proc shows them)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table, encoding="ascii") as rows:
            for row in list(rows)[1:]:
                local, state = row.split()[1], row.split()[3]
                address, port_hex = local.rsplit(":", 1)
                if state == "0A" and int(port_hex, 16) == port:
                    found.add(address)
    return found


@dataclass
class WebUi:
    base: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    def get(self, path: str) -> bytes:
        with urllib.request.urlopen(self.base + path, timeout=10) as response:
            body: bytes = response.read()
            return body

    def get_json(self, path: str) -> Any:
        return json.loads(self.get(path))

    def post(self, path: str, form: dict[str, str] | None = None) -> Any:
        data = urllib.parse.urlencode(form or {}).encode()
        with urllib.request.urlopen(urllib.request.Request(self.base + path, data=data), timeout=10) as response:
            return json.loads(response.read())

    def figures(self) -> dict[str, Any]:
        figures: dict[str, Any] = self.get_json("/harness/figures")
        return figures

    def template_args(self) -> dict[str, Any]:
        page = self.get("/").decode()
        found = re.search(r"window\.templateArgs = (.*)\n", page)
        assert found, page[:500]
        args: dict[str, Any] = json.loads(found.group(1))
        return args

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
        deadline = time.monotonic() + WAIT_S
        figures = self.figures()
        while not predicate(figures):
            assert self.process.poll() is None, self.log.read_text(encoding="utf-8")[-3000:]
            assert time.monotonic() < deadline, f"no {what} within {WAIT_S:g} s: {figures}"
            time.sleep(0.2)
            figures = self.figures()
        return figures


@contextmanager
def locust_web_ui(tmp_path: Path, stub: EmbeddedStub, *args: str, host: str = "127.0.0.1",
                  env: dict[str, str] | None = None) -> Iterator[WebUi]:
    port = free_port(host)
    log = tmp_path / f"locust-{port}.log"
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OPENCLAW_APPROVAL_HANDLER_", "LOCUST_"))}
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--web-port", str(port),
             "--gateway-url", stub.url, f"--gateway-token={stub.token}", *args],
            cwd=tmp_path, stdout=sink, stderr=subprocess.STDOUT, env={**clean, **(env or {})},
        )
    ui = WebUi(f"http://{host}:{port}", port, process, log)
    try:
        deadline = time.monotonic() + WAIT_S
        while True:
            assert process.poll() is None, log.read_text(encoding="utf-8")[-3000:]
            try:
                ui.figures()
                break
            except OSError:
                assert time.monotonic() < deadline, f"the web UI did not answer within {WAIT_S:g} s"
                time.sleep(0.2)
        yield ui
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def rows_of(figures: dict[str, Any]) -> dict[str, str]:
    return {row["figure"]: row["value"] for row in figures["rows"]}


def test_a_start_of_fewer_accounts_than_configured_from_the_web_ui(tmp_path: Path) -> None:
    with EmbeddedStub(FAST_STUB, log_path=tmp_path / "stub.log") as stub, \
            locust_web_ui(tmp_path, stub, "--users", "11", "--spawn-rate", "11",
                          env={"OPENCLAW_APPROVAL_HANDLER_MAX_CONCURRENT_STARTS": "4"}) as ui:
        # Loopback only, though no --web-host was given (Locust's own default is every interface).
        assert listening_addresses(ui.port) == {"0100007F"}
        args = ui.template_args()
        assert args["extended_tabs"] == [{"title": "Storm", "key": TAB_KEY}]
        options = args["extra_options"]  # the UI's "Custom parameters"
        assert {"arm", "gateway_url", "start_jitter_ms", "max_concurrent_starts", "start_slot_max_hold_ms"} <= set(
            options)
        assert options["max_concurrent_starts"]["default_value"] == 4  # from the environment, as before
        assert options["gateway_token"]["is_secret"] is True
        assert "coordinator" in options["arm"]["choices"]
        assert ui.figures()["guess"] == "no run yet"

        # 5 of the 11 configured, under the coordinator with the UI's J and K: the start barrier must not wait
        # for 11 that never come.
        started = ui.post("/swarm", {"user_count": "5", "spawn_rate": "5", "arm": "coordinator",
                                     "start_jitter_ms": "0", "max_concurrent_starts": "1", "gateway_url": stub.url})
        assert started["success"] is True, started
        figures = ui.wait_for(lambda f: f["accounts_connected"] == 5, "5 accounts connected")
        rows = rows_of(figures)
        assert (figures["accounts_started"], figures["accounts_running"], figures["accounts_configured"]) == (5, 5, 11)
        assert figures["note"] == ("started 5 of the 11 configured accounts; all 5 reach the coordinator start gate "
                                   "on the same tick")
        assert rows["accounts connected"] == "5 / 5 running (11 configured)"
        assert figures["arm"].startswith("coordinator:")
        # Read back from the running coordinator: the UI's values, not the environment's K = 4.
        assert figures["start_gate"].startswith("coordinator: J = 0 ms jitter, K = 1 concurrent starts")
        assert "granted 5" in figures["start_gate"]
        assert (figures["handshake_attempts"], figures["storm_entries"], figures["guess"]) == (5, 0, "converged")
        assert stub.stats()["counters"]["handshakes_succeeded"] == 5
        # The tab's rows ride on Locust's own /stats/requests, which the UI polls.
        stats = ui.get_json("/stats/requests")
        tab = next(entry for entry in stats["extended_stats"] if entry["key"] == TAB_KEY)
        assert {row["figure"]: row["value"] for row in tab["data"]}["accounts connected"] == \
            "5 / 5 running (11 configured)"
        connect = next(s for s in stats["stats"] if s["name"] == "connect")
        assert (connect["num_requests"], connect["num_failures"]) == (5, 0)
        assert "WARNING/locustfile: harness: started 5 of the 11 configured accounts" in ui.log.read_text("utf-8")

        # A bad value is refused with one line, and the running test goes on.
        refused = ui.post("/swarm", {"user_count": "5", "spawn_rate": "5", "start_jitter_ms": "soon"})
        assert refused == {"success": False, "host": None,
                           "message": "--start-jitter-ms: expected a whole number of ms from 0 to 86400000, got "
                                      "'soon'"}
        assert ui.figures()["accounts_connected"] == 5

        # Stopped: the tab keeps the run's last figures. The next start takes the UI's values afresh.
        assert ui.post("/stop")["success"] is True
        stopped = ui.figures()
        assert stopped["note"].startswith("stopped; started 5 of the 11") and stopped["accounts_connected"] == 5
        restarted = ui.post("/swarm", {"user_count": "3", "spawn_rate": "3", "arm": "shipped",
                                       "gateway_url": stub.url})
        assert restarted["success"] is True, restarted
        figures = ui.wait_for(lambda f: f["accounts_connected"] == 3 and f["accounts_started"] == 3,
                              "3 accounts of a second start connected")
        assert figures["arm"].startswith("shipped:") and figures["start_gate"] == "none: every account starts at once"
        assert figures["note"] == "started 3 of the 11 configured accounts; all 3 start on the same tick"
        assert figures["handshake_attempts"] == 3  # a fresh ledger for the new start


def test_a_storm_shows_in_the_tab_and_an_explicit_web_host_wins(tmp_path: Path) -> None:
    # 127.0.0.2 is loopback too (the whole of 127/8 is), so --web-host can be seen to win without leaving it.
    with EmbeddedStub(STORM_STUB, log_path=tmp_path / "stub.log") as stub, \
            locust_web_ui(tmp_path, stub, "--web-host", "127.0.0.2", host="127.0.0.2") as ui:
        assert listening_addresses(ui.port) == {"0200007F"}
        started = ui.post("/swarm", {"user_count": "4", "spawn_rate": "4", "arm": "shipped"})
        assert started["success"] is True, started
        figures = ui.wait_for(lambda f: f["guess"] == "storm" and f["storm_entries_in_window"] >= 4, "a storm")
        assert figures["accounts_configured"] is None  # no --users at launch
        assert figures["note"] == "started 4 accounts; all 4 start on the same tick"
        assert figures["accounts_connected"] < 4
        assert figures["storm_entries_in_window"] <= figures["storm_entries"] <= figures["handshake_attempts"]
        assert rows_of(figures)["verdict so far (live guess)"] == "storm"


@pytest.mark.parametrize(("option", "expected"), [
    (["--gateway-url", "ws://10.1.2.3:18789/"],
     "error: argument --gateway-url: refused '10.1.2.3': load goes to loopback only"),
    (["--start-jitter-ms", "-5"], "error: argument --start-jitter-ms: expected a whole number of ms"),
    (["--max-concurrent-starts", "0"], "error: argument --max-concurrent-starts: expected a whole number"),
])
def test_a_bad_option_on_the_command_line_is_one_line(tmp_path: Path, option: list[str], expected: str) -> None:
    result = subprocess.run([sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", *option],
                            cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    # "<prog>: error: …", prog being how Locust was started.
    assert expected in result.stderr and result.stderr.count("\n") == 1, result.stderr
