"""`harness`: the command line.

  harness run PROFILE [--arm NAME] [--seed N] [--time-scale X] [--out DIR]   one arm
  harness compare PROFILE [--seed N] [--time-scale X] [--out DIR]            every arm, one table
      both also take --backend {embedded,docker}: where a stub target runs (overrides the profile's),
      --target sim: a stub profile in the simulator (virtual time, no sockets), --processes N: the accounts
      over N local worker processes, and --master: wait for workers started elsewhere with
  harness run --worker --master-host HOST [--master-port P] [--gateway-url URL]   one worker of a master's run
  harness sweep SPEC [--out DIR] [--workers N] [--verify N]                 a simulated grid; recommended J and K
  harness report DIR [--screenshot]                                          report.html again, from the folder alone
  harness soak PLAN [--out DIR] [--history FILE] [--gateway KIND]            hours of cycles; growth; regressions
  harness history FILE [--plan NAME] [--figure NAME] [--out DIR]             the trend of a soak history
  harness demo                                                               one handshake, one timeout
  harness toxiproxy [--host 127.0.0.1] [--port 8474]                        a Toxiproxy-compatible server
  harness openclaw-install [VERSION ...] [--matrix]                          Node 24 + openclaw@VERSION, cached

Exit codes: 0 every threshold met, 1 a threshold failed, 2 invalid input (one line naming the field),
3 the target or environment failed (also: it died during the run), 4 inconclusive (the host was too busy for
a verdict), 5 a soak's figure regressed against its history, 130 interrupted (everything started is stopped
first).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gateway_stub.generations import DEFAULT_GENERATION, GENERATIONS
from harness.errors import EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_OK, EXIT_TERMINATED, BadInput, HarnessError
from harness.interrupts import (
    Terminated,
    deliver_signals_to_main_greenlet,
    forget_unhandled_interrupt,
    raise_on_signals,
)
from harness.stop_signals import signals_held

MAX_REPEAT = 100
MAX_SEED = 2**32 - 1
MIN_TIME_SCALE, MAX_TIME_SCALE = 0.001, 10.0  # as a profile's time_scale (harness.profile)


def _whole(text: str, low: int, high: int, what: str) -> int:
    """ASCII digits only (int() also takes '１２３'), within bounds."""
    if not (text.isascii() and text.isdigit() and len(text) <= 12 and low <= int(text) <= high):
        raise argparse.ArgumentTypeError(f"expected {what} from {low} to {high}, got {text[:20]!r}")
    return int(text)


def _repeat_count(text: str) -> int:
    return _whole(text, 1, MAX_REPEAT, "a whole number of runs")


def _worker_count(text: str) -> int:
    return _whole(text, 1, 256, "a number of workers")


def _process_count(text: str) -> int:
    from harness.profile import MAX_PROCESSES

    return _whole(text, 1, MAX_PROCESSES, "a number of processes")


def _port(text: str) -> int:
    return _whole(text, 1, 65535, "a port")


def _loopback_url(text: str) -> str:
    from harness.target import require_loopback_url

    try:
        require_loopback_url(text)
    except BadInput as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _verify_count(text: str) -> int:
    return _whole(text, 0, 100, "a number of cells")


def _seed(text: str) -> int:
    return _whole(text, 0, MAX_SEED, "a seed")


def _time_scale(text: str) -> float:
    try:
        value = float(text) if text.isascii() and len(text) <= 32 else math.nan
    except ValueError:
        value = math.nan
    if not MIN_TIME_SCALE <= value <= MAX_TIME_SCALE:  # also refuses nan and inf
        raise argparse.ArgumentTypeError(f"expected a number from {MIN_TIME_SCALE:g} to {MAX_TIME_SCALE:g}, "
                                         f"got {text[:20]!r}")
    return value


def checked_out_dir(out: Path, option: str = "--out") -> Path:
    """The results folder, made now: a file there, no permission, or a name the system refuses is one line, exit 2,
    before anything starts."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as exc:
        raise BadInput(f"{option}: cannot write results to {str(out)[:120]!r}: {exc.strerror or exc}") from None
    return out


MESSAGE_SHOWN_CHARS = 300


class _OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:
        # argparse quotes the offending argument whole, and lists unrecognized ones as they came (newlines too).
        line = " ".join(message.split())
        if len(line) > MESSAGE_SHOWN_CHARS:
            line = line[: MESSAGE_SHOWN_CHARS - 1] + "…"
        print(f"harness: error: {line}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(prog="harness", description="Chaos and load harness for WebSocket gateways.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_OneLineParser)
    for name, text in (("run", "run one arm of a profile (default: its first arm)"),
                       ("compare", "run every arm of a profile and print them side by side")):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("profile", type=Path, nargs="?" if name == "run" else None,
                         help="a profile YAML file (see profiles/)")
        if name == "run":
            sub.add_argument("--arm", help="the arm to run (default: the profile's first)")
            sub.add_argument("--worker", action="store_true",
                             help="be one worker of a master's run (`harness run PROFILE --master` elsewhere): no "
                                  "profile; the master sends the accounts")
            sub.add_argument("--master-host", help="with --worker: the master's address")
            sub.add_argument("--start-barrier", type=Path, help=argparse.SUPPRESS)  # a fleet member's (run/fleet.py)
            sub.add_argument("--gateway-url", type=_loopback_url,
                             help="with --worker: reach the gateway here instead of at the master's URL (a loopback "
                                  "tunnel to it, e.g. `ssh -L`)")
        sub.add_argument("--seed", type=_seed, help="override the profile's seed")
        sub.add_argument("--time-scale", type=_time_scale,
                         help=f"override the profile's time scale ({MIN_TIME_SCALE:g} to {MAX_TIME_SCALE:g})")
        sub.add_argument("--out", type=Path, help="results folder (default: results/<profile>-<time>)")
        sub.add_argument("--repeat", type=_repeat_count, default=1, metavar="N",
                         help=f"run each arm N times (1..{MAX_REPEAT}) with seeds base, base+1, ... and report the "
                              "distribution (verdict counts, median and range of every figure)")
        sub.add_argument("--target", choices=("sim",),
                         help="run a stub profile in the simulator (virtual time, no sockets; harness/sim/)")
        sub.add_argument("--no-report", action="store_true",
                         help="leave out report.html and its charts (about a second of drawing)")
        sub.add_argument("--processes", type=_process_count, metavar="N",
                         help="spread the accounts over N local worker processes, each one gateway-side process with "
                              "its own start coordinator (Locust's distributed mode; default: the profile's "
                              "accounts.processes)")
        sub.add_argument("--master", action="store_true",
                         help="run the gateway and judge here, and wait for the workers (the profile's "
                              "accounts.processes, or --processes) started elsewhere with `harness run --worker`")
        sub.add_argument("--master-bind-host", default="127.0.0.1",
                         help="with --master: the address workers connect to (default 127.0.0.1; 0.0.0.0 for "
                              "workers on other machines)")
        sub.add_argument("--master-port", type=_port, default=5557,
                         help="with --master or --worker: the master's port (default 5557, Locust's)")
        sub.add_argument("--backend", choices=("embedded", "docker"),
                         help="where a stub target runs: child processes or Docker containers (default: the "
                              "profile's target.backend, else embedded)")
    sweep = commands.add_parser("sweep", help="run a grid of simulated runs on every core and recommend J and K")
    sweep.add_argument("spec", type=Path, help="a sweep spec YAML file (see sweeps/)")
    sweep.add_argument("--out", type=Path, help="results folder (default: results/sweep-<name>; the same folder "
                                                "resumes an interrupted sweep)")
    sweep.add_argument("--workers", type=_worker_count, help="worker processes (default: one per core)")
    sweep.add_argument("--verify", type=_verify_count, default=0, metavar="N",
                       help="re-run the N most informative cells on the stub over real sockets and report agreement")
    soak = commands.add_parser("soak", help="run a soak plan for hours: cycles, resource growth, night-over-night "
                                             "trends")
    soak.add_argument("plan", type=Path, help="a soak plan YAML file (see soak/)")
    soak.add_argument("--out", type=Path, help="results folder (default: results/soak-<plan>-<time>)")
    soak.add_argument("--history", type=Path, help="an SQLite history to compare tonight with and append it to")
    soak.add_argument("--gateway", metavar="KIND", help="aim every run at stub, stub-docker or openclaw@VERSION "
                                                        "instead of its profile's target")
    history = commands.add_parser("history", help="print (and draw) the trend of a soak history's figures")
    history.add_argument("file", type=Path, help="an SQLite history written by `harness soak --history`")
    history.add_argument("--plan", help="only this plan's nights")
    history.add_argument("--figure", help="only this figure (e.g. time_to_all_connected_s)")
    history.add_argument("--out", type=Path, help="also write report.html with the trend charts into this folder")
    report = commands.add_parser("report", help="(re)build report.html in a results folder from its files alone")
    report.add_argument("folder", type=Path, help="a run, compare or sweep results folder")
    report.add_argument("--screenshot", action="store_true",
                        help="also save report.png: the top 1280 x 2000 pixels of the page as headless Chromium draws "
                             "it (needs Debian's chromium)")
    proxy = commands.add_parser("toxiproxy", help="run the embedded Toxiproxy-compatible server in the foreground")
    proxy.add_argument("--host", default="127.0.0.1", help="loopback address for the API (default 127.0.0.1)")
    proxy.add_argument("--port", default="8474", help="API port (default 8474, Toxiproxy's)")
    install = commands.add_parser("openclaw-install", help="install Node 24 and the real gateway into the cache "
                                  "that `target: kind: openclaw` uses (npm, about 30 s and 650 MB per version)")
    install.add_argument("versions", nargs="*", help="openclaw versions (default: the pinned ones, "
                                                     "2026.4.24 2026.4.29 2026.9.6)")
    install.add_argument("--matrix", action="store_true",
                         help="also stage the Matrix channel's dependencies of each version that bundles it "
                              "(2026.4.x: the gateway installs them itself, once, with npm online; about 250 MB)")
    demo = commands.add_parser("demo", help="start the embedded gateway stub and show a handshake")
    demo.add_argument("--profile", choices=tuple(GENERATIONS), default=DEFAULT_GENERATION,
                      help=f"protocol profile of the stub (default {DEFAULT_GENERATION})")
    demo.add_argument("--out", type=Path, default=None,
                      help="keep the stub's log in this folder (default: a temporary folder, removed)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Ctrl-C (130) and SIGTERM (143) stop everything started and end in one line, at any moment: the signal
    handlers come before the heavy imports (Locust patches sockets and threads with gevent as it loads)."""
    raise_on_signals()
    try:
        args = build_parser().parse_args(argv)
        if args.command == "sweep":  # simulated only: no gevent, so its worker processes can fork cleanly
            return run_sweep_command(args)
        if args.command == "report":  # reads files only
            return report_command(args.folder, args.screenshot)
        if args.command == "history":
            return history_command(args)
        with signals_held():  # a stop request inside gevent's monkey-patching leaves `threading` half patched
            import locust  # noqa: F401  (gevent's monkey-patching must come before sockets and threads are imported)

            deliver_signals_to_main_greenlet()
        return _run_command(args)
    except KeyboardInterrupt:
        forget_unhandled_interrupt()
        print("harness: interrupted; everything it started has been stopped", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Terminated:
        print("harness: stopped by SIGTERM; everything it started has been stopped", file=sys.stderr)
        return EXIT_TERMINATED
    except HarnessError as exc:
        for line in str(exc).splitlines():  # a profile with several problems: one line each
            print(f"harness: error: {line}", file=sys.stderr)
        return exc.exit_code


def _run_command(args: argparse.Namespace) -> int:
    if args.command == "demo":
        from harness.demo import run_demo

        return run_demo(args.profile, None if args.out is None else checked_out_dir(args.out))
    if args.command == "openclaw-install":
        return install_openclaw(args.versions, matrix=args.matrix)
    if args.command == "toxiproxy":
        # The proxy is an asyncio program; this process is patched by gevent, so it hands over instead.
        module = ["-m", "harness.faults.embedded_proxy", "--host", args.host, "--port", args.port]
        os.execv(sys.executable, [sys.executable, *module])
    if args.command == "soak":
        return soak_command(args)
    return run_or_compare(args)


def accounts(count: int) -> str:
    return "1 account" if count == 1 else f"{count} accounts"


def run_or_compare(args: argparse.Namespace) -> int:
    from harness.profile import load_profile
    from harness.report.table import render, render_distributions
    from harness.run import compare_title, record_results, run_profile
    from harness.run.compose import MasterSettings
    from harness.target import StubTarget
    from harness.verdict.distribution import exit_code

    if getattr(args, "worker", False):
        return worker_command(args)
    if args.profile is None:
        raise BadInput("run: expected a profile (or --worker --master-host HOST)")
    profile = load_profile(args.profile).with_overrides(seed=args.seed, time_scale=args.time_scale,
                                                        target=args.target, processes=args.processes)
    if args.backend:
        if not isinstance(profile.target, StubTarget):
            raise BadInput(f"--backend: only with target kind stub, this profile's is {profile.target.kind}")
        profile = dataclasses.replace(profile, target=dataclasses.replace(profile.target, backend=args.backend))
    if args.command == "run":
        arm = args.arm or profile.arms[0]
        if arm not in profile.arms:
            raise BadInput(f"--arm: expected one of this profile's arms ({', '.join(profile.arms)}), got {arm!r}")
        arms = [arm]
    else:
        arms = list(profile.arms)
    out = checked_out_dir(args.out or Path("results") / f"{profile.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    times = f", {args.repeat} times each" if args.repeat > 1 else ""
    print(f"{profile.name}: {accounts(profile.account_count)}, arms {', '.join(arms)}{times}, "
          f"{profile.duration_s:g} s at time scale {profile.time_scale:g} -> {out}", file=sys.stderr)
    master = MasterSettings(args.master_bind_host, args.master_port) if args.master else None
    results = run_profile(profile, arms, out, repeat=args.repeat, master=master,
                          start_barrier=getattr(args, "start_barrier", None))
    spreads = record_results(profile, results, out, repeat=args.repeat, comparison=args.command == "compare",
                             report=not args.no_report)
    title = compare_title(profile, args.repeat, spreads)
    if args.repeat == 1:
        print(render([r.summary for r in results], title))
    else:
        print(render_distributions(spreads, title))
    shown = "" if args.no_report else f" (report: {out / 'report.html'})"
    print(f"results: {out}{shown}", file=sys.stderr)
    return exit_code(spreads)


def worker_command(args: argparse.Namespace) -> int:
    """`harness run --worker --master-host H`: one worker of a master's run, until the master is done with it."""
    import json

    from harness.run.workers import run_worker

    if not args.master_host:
        raise BadInput("--worker: expected --master-host HOST (where `harness run PROFILE --master` runs)")
    if args.profile is not None:
        raise BadInput("--worker: expected no profile (the master sends the accounts)")

    def announce(line: dict[str, object]) -> None:
        print(json.dumps(line), flush=True)
        print(f"harness: worker {line['worker']} connected to {args.master_host}:{args.master_port}", file=sys.stderr)

    return run_worker(args.master_host, args.master_port, args.gateway_url, announce)


def run_sweep_command(args: argparse.Namespace) -> int:
    from harness.report.html import write_report
    from harness.report.recommendation import render_recommendation
    from harness.sweep import run_sweep
    from harness.sweep.spec import load_spec, spec_runs
    from harness.sweep.verify import verify

    spec = load_spec(args.spec)
    out = checked_out_dir(args.out or Path("results") / f"sweep-{spec.name}")
    print(f"{spec.name}: {spec_runs(spec)} simulated runs ({len(spec.seeds)} seeds each), {spec.duration_s:g} s of "
          f"scenario each -> {out}", file=sys.stderr)
    result = run_sweep(spec, out, workers=args.workers)
    print(render_recommendation(result.recommendation))
    if args.verify:
        print(verify(spec, out, args.verify))
        write_report(out)  # again, to link verify.json
    print(f"results: {out} (report: {out / 'report.html'})", file=sys.stderr)
    return EXIT_OK


def soak_command(args: argparse.Namespace) -> int:
    from harness.soak import run_soak
    from harness.soak.plan import load_plan

    plan = load_plan(args.plan, args.gateway)
    out = checked_out_dir(args.out or Path("results") / f"soak-{plan.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    if args.history is not None and args.history.is_dir():
        raise BadInput(f"--history: {args.history} is a folder; expected an SQLite file (made if absent)")
    limit = f"{plan.duration_s / 60:g} minutes" if plan.duration_s else f"{plan.cycles} cycles"
    print(f"soak {plan.name}: {sum(len(r.arms) for r in plan.runs)} runs per cycle against {plan.gateway_name}, "
          f"for {limit} -> {out}", file=sys.stderr)
    result = run_soak(plan, out, history=args.history, gateway_name=plan.gateway_name)
    print((out / "soak.md").read_text(encoding="utf-8"))
    print(f"results: {out} (report: {out / 'report.html'})", file=sys.stderr)
    return result.exit_code


def history_command(args: argparse.Namespace) -> int:
    from harness.soak.trend import print_trend

    return print_trend(args.file, plan=args.plan, figure=args.figure,
                       out=None if args.out is None else checked_out_dir(args.out))


def report_command(folder: Path, with_screenshot: bool) -> int:
    from harness.report.html import write_report
    from harness.report.screenshot import screenshot

    page = write_report(folder)
    print(f"report: {page}", file=sys.stderr)
    if with_screenshot:
        print(f"screenshot: {screenshot(page, folder / 'report.png')}", file=sys.stderr)
    return EXIT_OK


def install_openclaw(versions: list[str], *, matrix: bool = False) -> int:
    import logging

    from harness.backends.openclaw import PINNED_VERSIONS, ensure_node, ensure_openclaw
    from harness.backends.openclaw_matrix import bundles_matrix_channel, ensure_matrix_channel

    logging.basicConfig(level=logging.INFO, format="harness: %(message)s")
    print(f"node: {ensure_node()}", file=sys.stderr)
    for version in versions or PINNED_VERSIONS:
        print(f"openclaw {version}: {ensure_openclaw(version)}", file=sys.stderr)
        if matrix and bundles_matrix_channel(version):
            print(f"openclaw {version} Matrix channel: {ensure_matrix_channel(version)}", file=sys.stderr)
        elif matrix:
            print(f"openclaw {version} Matrix channel: not bundled (the npm package @openclaw/matrix; not staged "
                  f"yet)", file=sys.stderr)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
