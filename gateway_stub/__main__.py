"""`python -m gateway_stub`: run the stub until SIGINT or SIGTERM.

On start it prints one JSON line to stdout (`{"event":"ready","url":…,"port":…,"token":…}`) for
programs that launched it on port 0, and the real gateway's `[gateway] ready` line to stderr.
Exit codes: 0 stopped cleanly, 2 bad option, 3 could not start.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys

from gateway_stub.config import ConfigError, config_from_args
from gateway_stub.server import GatewayStub

EXIT_OK = 0
EXIT_BAD_OPTION = 2
EXIT_START_FAILED = 3


async def _serve(stub: GatewayStub) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stub.start()
    try:
        ready = {"event": "ready", "url": stub.url, "http": stub.http_url, "port": stub.port,
                 "token": stub.token, "profile": stub.generation.name, "pid": os.getpid()}
        print(json.dumps(ready), flush=True)
        stub.log.console("gateway", f"listening on {stub.url} (PID {os.getpid()}, profile {stub.generation.name})")
        stub.log.console("gateway", "ready")
        await stop.wait()
    finally:
        await stub.stop()


def main(argv: list[str] | None = None) -> int:
    try:
        config = config_from_args(argv, os.environ)
    except ConfigError as exc:
        print(f"gateway_stub: error: {exc}", file=sys.stderr)
        return EXIT_BAD_OPTION
    try:
        stub = GatewayStub(config)
    except OSError as exc:
        print(f"gateway_stub: error: --log-file: cannot open {config.log_file}: {exc.strerror}", file=sys.stderr)
        return EXIT_BAD_OPTION
    try:
        asyncio.run(_serve(stub))
    except OSError as exc:
        print(f"gateway_stub: error: cannot listen on {config.host}:{config.port}: {exc.strerror or exc}",
              file=sys.stderr)
        return EXIT_START_FAILED
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
