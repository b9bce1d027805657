"""In-process accounts, then the gateway SIGTERMed and started again with the homeserver warm: do the handlers,
starting together against already-synced Matrix accounts, storm where a cold start did not?

    .venv/bin/python benchmarks/inprocess_restart.py --accounts 11 --quota 0.02 --out results/inprocess-restart

Prints the handlers' attempts (read from the console as a run reads them) before the restart and every 30 s
after it: outcomes, accounts connected, channel exits (whole console), the handlers' connect errors, the longest
handshake and how many outlasted the 10 s timer. Needs the extra `matrix` and the staged Matrix channel.
"""
import argparse
import logging
import time
from collections import Counter
from pathlib import Path

from harness.accounts.inprocess import read_console
from harness.backends.openclaw import OpenClawGateway
from harness.backends.openclaw_matrix import matrix_accounts_config, staged_matrix_channel
from harness.backends.synapse import SynapseHomeserver


def report(gateway: OpenClawGateway, label: str) -> None:
    ledger = read_console(gateway.log_path.read_text(errors="replace"), gateway.launched_at)
    mine = [attempt for attempt in ledger.attempts if attempt.started_ms >= 0]  # since the latest launch
    longest = max((attempt.latency_ms for attempt in mine), default=None)
    print(label, dict(Counter(attempt.outcome.value for attempt in mine)), "connected", len(ledger.connected),
          "channel exits", ledger.channel_exits, "connect errors", ledger.handler_connect_errors, "longest", longest,
          "over 10 s", sum(1 for attempt in mine if attempt.latency_ms > 10_000), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--version", default="2026.4.24")
    parser.add_argument("--accounts", type=int, default=11)
    parser.add_argument("--quota", type=float, default=0.02)
    parser.add_argument("--before", type=float, default=200, help="seconds before the restart")
    parser.add_argument("--after", type=float, default=240, help="seconds watched after it")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    with SynapseHomeserver(bots=args.accounts, log_dir=args.out) as homeserver:
        assert homeserver.owner is not None
        config = matrix_accounts_config(homeserver.url, homeserver.owner, homeserver.bots, exec_approvals=True)
        with OpenClawGateway(args.version, log_dir=args.out, cpu_quota=args.quota, config=config,
                             plugin_stage_dir=staged_matrix_channel(args.version),
                             handshake_timeout_ms=10_000) as gateway:
            time.sleep(args.before)
            report(gateway, "before the restart")
            print("restart", gateway.restart(), flush=True)
            started = time.monotonic()
            while time.monotonic() - started < args.after:
                time.sleep(30)
                report(gateway, f"{time.monotonic() - started:.0f} s after the restart")


if __name__ == "__main__":
    main()
