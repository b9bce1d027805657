"""Inside a container: TCP bridges between the container's network and its loopback, around one child command.

The gateway stub and the embedded Toxiproxy bind and dial loopback only, and the stub, like the real
gateway, keeps a device-less backend client's scopes only when that client connects from loopback
("direct-local"). In a container the harness arrives through a published port and the Toxiproxy container
dials the stub by its network alias: neither is loopback. So each service keeps binding 127.0.0.1 inside
its container, and a `--forward LISTEN=TARGET` accepts on LISTEN and connects to TARGET for it. The stub
then sees every client on 127.0.0.1, as the native-approvals handlers that run inside a real gateway's
process are. The child's output is the container's log; SIGTERM and SIGINT are passed on to it, and the
bridge exits with its exit code.

    python -m harness.backends.loopback_bridge --forward 0.0.0.0:18789=127.0.0.1:18790 -- \
        python -m gateway_stub --host 127.0.0.1 --port 18790

This module is the Docker image's entrypoint, so it imports nothing beyond the standard library.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from dataclasses import dataclass
from functools import partial

READ_CHUNK_BYTES = 65536
CONNECT_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Forward:
    listen_host: str
    listen_port: int
    target_host: str
    target_port: int

    def __str__(self) -> str:
        return f"{self.listen_host}:{self.listen_port}={self.target_host}:{self.target_port}"


def parse_forward(text: str) -> Forward:
    """`LISTEN_HOST:PORT=TARGET_HOST:PORT` (the target host may be a container's network alias)."""
    listen, separator, target = text.partition("=")
    try:
        if not separator:
            raise ValueError
        listen_host, listen_port = _host_port(listen)
        target_host, target_port = _host_port(target)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LISTEN_HOST:PORT=TARGET_HOST:PORT, got {text!r}") from None
    return Forward(listen_host, listen_port, target_host, target_port)


def _host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    number = int(port)
    if not host or not 0 < number < 65536:
        raise ValueError(text)
    return host.strip("[]"), number


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(READ_CHUNK_BYTES):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        # One side is done: close the other, as Toxiproxy does; both pipes then end.
        writer.close()


async def _bridge(forward: Forward, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
    try:
        upstream = await asyncio.wait_for(asyncio.open_connection(forward.target_host, forward.target_port),
                                          CONNECT_TIMEOUT_S)
    except (OSError, TimeoutError):
        client_writer.close()  # the service is not listening (yet, or any more): as a refused connection
        return
    upstream_reader, upstream_writer = upstream
    await asyncio.gather(_pipe(client_reader, upstream_writer), _pipe(upstream_reader, client_writer))


async def serve(forwards: list[Forward], command: list[str]) -> int:
    """Open every forward, run `command` to its end, and return its exit code (128 + N for signal N)."""
    servers = [await asyncio.start_server(partial(_bridge, forward), forward.listen_host, forward.listen_port,
                                          reuse_address=True) for forward in forwards]
    child = await asyncio.create_subprocess_exec(*command)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, partial(_pass_on, child, sig))
    code = await child.wait()
    for server in servers:
        server.close()
    return code if code >= 0 else 128 - code


def _pass_on(child: asyncio.subprocess.Process, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        child.send_signal(sig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="loopback_bridge", description=__doc__.split("\n\n")[0])
    parser.add_argument("--forward", type=parse_forward, action="append", default=[],
                        help="LISTEN_HOST:PORT=TARGET_HOST:PORT (repeatable)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- the command to run")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("expected a command after --")
    try:
        return asyncio.run(serve(args.forward, command))
    except OSError as exc:
        print(f"loopback_bridge: error: {exc}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
