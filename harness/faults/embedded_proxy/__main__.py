"""The embedded Toxiproxy's command line: serve the API on a loopback port until SIGINT or SIGTERM.

    python -m harness.faults.embedded_proxy [--host 127.0.0.1] [--port 8474]

prints `{"event":"ready","url":"http://127.0.0.1:PORT"}` on stdout once listening (port 0 picks one),
and stops on SIGINT or SIGTERM, closing every listener and connection. Bad options: one line on
stderr, exit 2; the API port cannot be bound: exit 3.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import sys
from typing import NoReturn

from harness.faults.embedded_proxy.addresses import LOOPBACK_RULE, join_host_port, loopback_ip
from harness.faults.embedded_proxy.server import EmbeddedToxiproxy

DEFAULT_API_PORT = 8474  # Toxiproxy's


class _OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _host_arg(value: str) -> str:
    ip = loopback_ip(value)
    if ip is None:
        raise argparse.ArgumentTypeError(f"{value!r} is not a loopback address ({LOOPBACK_RULE})")
    return ip


def _port_arg(value: str) -> int:
    # ASCII digits only: str.isdigit() and int() would also take "１２３".
    if not re.fullmatch(r"[0-9]{1,5}", value) or int(value) > 65535:
        raise argparse.ArgumentTypeError(f"{value!r} is not a port number (0-65535; 0 picks a free port)")
    return int(value)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = _OneLineParser(prog="python -m harness.faults.embedded_proxy",
                            description="An embedded Toxiproxy 2.x-compatible server, loopback only.")
    parser.add_argument("--host", type=_host_arg, default="127.0.0.1", help="API address (loopback)")
    parser.add_argument("--port", type=_port_arg, default=DEFAULT_API_PORT, help="API port; 0 picks a free one")
    return parser.parse_args(argv)


async def serve(host: str, port: int) -> int:
    server = EmbeddedToxiproxy()
    try:
        url = await server.start(host, port)
    except OSError as exc:
        reason = os.strerror(exc.errno).lower() if exc.errno else str(exc)
        print(f"embedded_proxy: error: --port: cannot listen on {join_host_port(host, port)}: {reason}",
              file=sys.stderr, flush=True)
        return 3
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(json.dumps({"event": "ready", "url": url}, separators=(",", ":")), flush=True)
    try:
        await stop.wait()
    finally:
        await server.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    sys.exit(main())
