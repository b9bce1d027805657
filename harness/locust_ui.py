"""The harness inside Locust's own web UI, for `locust -f harness/locustfile.py` without `--headless`: a "Storm" tab
with the harness's figures (storm entries, accounts connected, handshake attempts, a live guess at the verdict),
the harness options as the UI's "Custom parameters" (arm, gateway, the start coordinator's J, K and H), each
checked when the UI starts a run so a bad value is one line in the UI rather than a server error, and a web UI
that binds 127.0.0.1 unless `--web-host` says otherwise. It uses only the extension points Locust's own
examples/extend_web_ui.py shows: the `extended_tabs`/`extended_tables` template arguments and `extended_stats` in
`/stats/requests` (the tab is a table Locust's React UI draws and refreshes itself, no JavaScript of ours), plus
one Flask route on `web_ui.app`,
`/harness/figures`, with the same figures as JSON for scripts and tests. The locustfile builds each run and hands
this module plain numbers; the figures and checks here are pure, and Flask is imported only where the UI is
wired, so they can be used (and tested) without loading Locust or gevent.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

from harness.errors import BadInput
from harness.events import AccountLedger
from harness.input_fields import cut
from harness.policy.arms import CLIENT_ARMS, Arm
from harness.policy.coordinator import (
    ENV_MAX_CONCURRENT_STARTS,
    ENV_START_JITTER_MS,
    ENV_START_SLOT_MAX_HOLD_MS,
    CoordinatorSettings,
    StartCoordinator,
)
from harness.policy.start_gates import AdaptiveStarts, StaggeredStarts
from harness.target import require_loopback_url

if TYPE_CHECKING:
    from locust.env import Environment

logger = logging.getLogger(__name__)

TAB_KEY = "harness-storm"
TAB_TITLE = "Storm"
FIGURES_ROUTE = "/harness/figures"
# Locust's web UI binds every interface by default; this one drives load at a gateway on loopback and shows its
# token in a form, so it stays on loopback unless the user asks for more with --web-host.
DEFAULT_WEB_HOST = "127.0.0.1"
# The live guess's sliding window: several of the April handshake timeout (10 s) so a storm's retry cycles always
# show inside it, and the "in the last 60 s" a person watching the tab can read at a glance.
LIVE_WINDOW_MS = 60_000.0
# Same bounds as a profile's `fixes.coordinator` (harness.profile): at most a day, at most 2000 accounts.
MAX_SETTING_MS = 86_400_000
MAX_CONCURRENT_STARTS = 2000

CHANNELS = ("matrix", "telegram")
GATEWAY_PROTOCOLS = (3, 4)  # April (2026.4.x) and current

Guess = Literal["no run yet", "starting", "storm", "converging", "converged"]


# -- options ------------------------------------------------------------------------------------------------------


def loopback_url_option(value: str) -> str:
    """`--gateway-url`: empty (set it later in the UI) or a loopback ws:// URL; anything else is refused."""
    if value == "":
        return value
    try:
        return require_loopback_url(value, "--gateway-url")
    except BadInput as exc:
        # argparse already names the option in front of the message.
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--gateway-url: ")) from None


def _whole_number(minimum: int, maximum: int, unit: str) -> Callable[[str], int]:
    def parse(value: str) -> int:
        # Digits only, as the PR's environment parsing (harness.policy.coordinator) reads J, K and H; unlike it, a
        # value typed here that is out of range is refused rather than silently replaced by the default.
        # ASCII only and short: str.isdigit() accepts "²", and int() refuses more than 4300 digits.
        text = str(value).strip()
        if not (text.isascii() and text.isdigit() and len(text) <= 12 and minimum <= int(text) <= maximum):
            raise argparse.ArgumentTypeError(f"expected a whole number{unit} from {minimum} to {maximum}, "
                                             f"got {cut(value)}")
        return int(text)

    return parse


@dataclass(frozen=True)
class CoordinatorOption:
    flag: str
    dest: str  # the CoordinatorSettings field, and the form field the web UI sends
    env: str  # where OpenClaw reads it, and where the option's default comes from
    parse: Callable[[str], int]
    help: str


COORDINATOR_OPTIONS = (
    CoordinatorOption("--start-jitter-ms", "start_jitter_ms", ENV_START_JITTER_MS,
                      _whole_number(0, MAX_SETTING_MS, " of ms"),
                      "coordinator arms: J, the random jitter before an account's first start, in ms"),
    CoordinatorOption("--max-concurrent-starts", "max_concurrent_starts", ENV_MAX_CONCURRENT_STARTS,
                      _whole_number(1, MAX_CONCURRENT_STARTS, ""), "coordinator arms: K, the starts in flight at once"),
    CoordinatorOption("--start-slot-max-hold-ms", "start_slot_max_hold_ms", ENV_START_SLOT_MAX_HOLD_MS,
                      _whole_number(1, MAX_SETTING_MS, " of ms"),
                      "coordinator arms: H, the longest a start holds its slot, in ms"),
)


def add_coordinator_options(parser: Any, environ: Mapping[str, str]) -> None:
    """The coordinator's settings as options (and so as the web UI's custom parameters). Their defaults come from
    the OPENCLAW_APPROVAL_HANDLER_* environment variables, as OpenClaw reads them, so an environment that set them
    before keeps working."""
    defaults = CoordinatorSettings.from_env(environ)
    for option in COORDINATOR_OPTIONS:
        default = getattr(defaults, option.dest)
        parser.add_argument(option.flag, dest=option.dest, type=option.parse, default=default,
                            help=f"{option.help} (default {default}; {option.env} sets the default)")


def coordinator_settings(options: Any) -> CoordinatorSettings:
    return CoordinatorSettings(**{option.dest: int(getattr(options, option.dest)) for option in COORDINATOR_OPTIONS})


def bind_loopback_by_default(parser: Any) -> None:
    """Make 127.0.0.1 the default of Locust's `--web-host`; an explicit --web-host (or LOCUST_WEB_HOST) still wins."""
    parser.set_defaults(web_host=DEFAULT_WEB_HOST)


def check_swarm_form(form: Mapping[str, str]) -> str | None:
    """The first problem with the harness's custom parameters the web UI sent to start a run, as one line; None if
    they are fine. Locust converts them to the option's type itself, checking neither range nor choices (and a
    number that does not parse is a server error)."""
    checks: dict[str, Callable[[str], object]] = {"gateway_url": loopback_url_option}
    checks.update({option.dest: option.parse for option in COORDINATOR_OPTIONS})
    flags = {"gateway_url": "--gateway-url", **{option.dest: option.flag for option in COORDINATOR_OPTIONS}}
    choices = {"arm": list(CLIENT_ARMS), "channel": list(CHANNELS),
               "gateway_protocol": [str(p) for p in GATEWAY_PROTOCOLS]}
    if "gateway_url" in form and not form["gateway_url"].strip():
        return "--gateway-url: required: the gateway's loopback ws:// URL (e.g. ws://127.0.0.1:18789/)"
    for dest, allowed in choices.items():
        if dest in form and form[dest] not in allowed:
            return f"--{dest.replace('_', '-')}: expected one of {', '.join(allowed)}, got {cut(form[dest])}"
    for dest, check in checks.items():
        if dest in form:
            try:
                check(form[dest])
            except argparse.ArgumentTypeError as exc:
                return f"{flags[dest]}: {exc}"
    return None


# -- figures ------------------------------------------------------------------------------------------------------


def start_note(started: int, configured: int | None, arm: Arm) -> str:
    """What a start does with the accounts: how many of the configured ones, and that they start together."""
    together = (f"all {started} start on the same tick" if arm.start_gate == "none"
                else f"all {started} reach the {arm.start_gate} start gate on the same tick")
    if started == 0:
        return "started no accounts"
    if configured is None or configured == started:
        return f"started {started} account{'s' if started != 1 else ''}; {together}"
    if started < configured:
        return f"started {started} of the {configured} configured accounts; {together}"
    return f"started {started} accounts, {started - configured} more than the {configured} configured; {together}"


def live_guess(started: int, connected: int, storm_in_window: int, attempts: int) -> Guess:
    """The verdict so far. The judge (harness.verdict.figures) says `storm` when storm entries go on into a run's
    final window and `converged` when every account holds a connection with none after startup; live, the window
    slides (the last minute) and the end is now. Storm entries with everyone connected, or accounts still
    connecting without storm entries, are `converging`: the next minute decides."""
    if attempts == 0 and connected == 0:
        return "starting"
    if storm_in_window and connected < started:
        return "storm"
    if connected >= started and not storm_in_window:
        return "converged"
    return "converging"


def describe_gate(arm: Arm, gate: StartCoordinator | None) -> str:
    """The start gate the running accounts go through, read from the live object (what a setting became)."""
    if gate is None:
        return "none: every account starts at once"
    stats = gate.statistics()
    queue = f"granted {stats.granted_total}, in flight {stats.borrowed}, waiting {stats.waiting}"
    if isinstance(gate, StaggeredStarts):
        return f"stagger: {gate.stagger_ms} ms between first starts; {queue}"
    if isinstance(gate, AdaptiveStarts):
        return f"adaptive: {gate.capacity()} of at most {gate.maximum} starts at once; {queue}"
    settings = gate.settings
    return (f"coordinator: J = {settings.start_jitter_ms} ms jitter, K = {settings.max_concurrent_starts} "
            f"concurrent starts, H = {settings.start_slot_max_hold_ms} ms longest hold; {queue}")


@dataclass(frozen=True)
class LiveFigures:
    """What the Storm tab shows, and `/harness/figures` returns."""

    guess: Guess
    storm_entries_in_window: int
    window_s: float
    storm_entries: int
    accounts_connected: int
    accounts_started: int  # the user count of this start: how many accounts the start barrier waits for
    accounts_running: int  # Locust users running now: differs from started while spawning or after an edit
    accounts_configured: int | None  # --users on the command line, if given
    handshake_attempts: int
    arm: str
    start_gate: str
    note: str
    running_s: float

    def rows(self) -> list[dict[str, str]]:
        """The tab's table: one row per figure."""
        configured = "" if self.accounts_configured is None else f" ({self.accounts_configured} configured)"
        return [
            {"figure": "verdict so far (live guess)", "value": self.guess},
            {"figure": f"storm entries in the last {self.window_s:g} s", "value": str(self.storm_entries_in_window)},
            {"figure": "storm entries since the start", "value": str(self.storm_entries)},
            {"figure": "accounts connected",
             "value": f"{self.accounts_connected} / {self.accounts_running} running{configured}"},
            {"figure": "handshake attempts", "value": str(self.handshake_attempts)},
            {"figure": "arm", "value": self.arm},
            {"figure": "start gate", "value": self.start_gate},
            {"figure": "start", "value": self.note},
            {"figure": "running for", "value": f"{self.running_s:.0f} s"},
        ]

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "rows": self.rows()}


def no_run_yet(configured: int | None, note: str = "") -> LiveFigures:
    return LiveFigures(guess="no run yet", storm_entries_in_window=0, window_s=LIVE_WINDOW_MS / 1000, storm_entries=0,
                       accounts_connected=0, accounts_started=0, accounts_running=0, accounts_configured=configured,
                       handshake_attempts=0, arm="", start_gate="", note=note or "press Start to begin a run",
                       running_s=0.0)


def live_figures(ledger: AccountLedger, *, now_ms: float, started: int, running: int, configured: int | None,
                 arm: Arm, gate: StartCoordinator | None, note: str) -> LiveFigures:
    """The figures of a run so far, from its ledger at scenario time `now_ms` (milliseconds since its start)."""
    storms = [a for a in ledger.attempts if a.storm_kind is not None]
    in_window = sum(1 for a in storms if a.ended_ms >= now_ms - LIVE_WINDOW_MS)
    connected = len(ledger.connected)
    attempts = len(ledger.attempts)
    if running > started:
        # Raising the user count of a running test adds accounts without a new start (and no barrier).
        note = f"{note}; {running - started} more joined the running test, each starting as it arrived"
    return LiveFigures(
        guess=live_guess(max(running, 1), connected, in_window, attempts), storm_entries_in_window=in_window,
        window_s=LIVE_WINDOW_MS / 1000, storm_entries=len(storms), accounts_connected=connected,
        accounts_started=started, accounts_running=running, accounts_configured=configured,
        handshake_attempts=attempts, arm=f"{arm.name}: {arm.description}", start_gate=describe_gate(arm, gate),
        note=note, running_s=max(0.0, now_ms) / 1000,
    )


# -- wiring into Locust's web UI ----------------------------------------------------------------------------------


def install(environment: Environment, figures: Callable[[], LiveFigures]) -> None:
    """Add the Storm tab, its JSON route and the check of the custom parameters to `environment.web_ui`."""
    # Flask comes with Locust; imported here so the figures above load without it.
    from flask import Response, jsonify, request

    web_ui = environment.web_ui
    app = web_ui.app if web_ui is not None else None
    if web_ui is None or app is None:
        return
    options = environment.parsed_options
    base = str(getattr(options, "web_base_path", "") or "").rstrip("/")
    # Read by Locust's React UI from window.templateArgs: a tab whose table has these columns and whose rows come
    # from `extended_stats` under the same key in every /stats/requests answer (the UI polls it every few seconds).
    web_ui.template_args["extended_tabs"] = [{"title": TAB_TITLE, "key": TAB_KEY}]
    web_ui.template_args["extended_tables"] = [
        {"key": TAB_KEY, "structure": [{"key": "figure", "title": "Figure"}, {"key": "value", "title": "Value"}]},
    ]
    web_ui.template_args["extended_csv_files"] = [
        {"href": f".{FIGURES_ROUTE}", "title": "Download the harness figures (JSON)"},
    ]

    def figures_json() -> Response:
        return jsonify(figures().as_json())

    # Behind --web-login like Locust's own routes, where it is on.
    guarded = web_ui.auth_required_if_enabled(figures_json)  # type: ignore[no-untyped-call]
    app.add_url_rule(base + FIGURES_ROUTE, "harness_figures", guarded)

    def add_storm_rows(response: Response) -> Response:
        if request.path != base + "/stats/requests" or not response.is_json:
            return response
        # /stats/requests is memoized for a moment; replacing the key keeps a reused answer correct.
        body = {**response.get_json(), "extended_stats": [{"key": TAB_KEY, "data": figures().rows()}]}
        response.set_data(json.dumps(body))
        return response

    def refuse_bad_parameters() -> Response | None:
        if request.method != "POST" or request.path != base + "/swarm":
            return None
        problem = check_swarm_form(request.form)
        if problem is None:
            return None
        logger.error("harness: refused: %s", problem)
        # The shape of Locust's own refusals in /swarm, which its UI shows to the user.
        return jsonify({"success": False, "message": problem, "host": environment.host})

    app.after_request(add_storm_rows)
    app.before_request(refuse_bad_parameters)
