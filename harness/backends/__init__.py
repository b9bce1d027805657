"""Where the target gateway runs: the stub in a child process or in containers, the real OpenClaw gateway
from npm, or a gateway someone else runs at a loopback URL; each behind the `Backend` protocol
(`harness.backends.base`), picked for a target in one place, `open_backend`."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from harness.backends.base import Backend, UrlBackend
from harness.target import OpenClawTarget, StubTarget, Target, UrlTarget

if TYPE_CHECKING:  # the module itself is loaded only for an in-process target
    from harness.backends.openclaw_matrix import HomeserverLink

__all__ = ["Backend", "open_backend"]


@contextlib.contextmanager
def open_backend(target: Target, out_dir: Path, stub_args: Sequence[str] = (), *,
                 homeserver_link: HomeserverLink | None = None) -> Iterator[Backend]:
    """Start the gateway for `target` (`stub_args`: the run's own options for a stub; `homeserver_link`: what an
    in-process target's gateway reaches its homeserver through), stop it on exit."""
    match target:
        case UrlTarget():
            yield UrlBackend(target)
        case OpenClawTarget(matrix_accounts=accounts) if accounts > 0:
            from harness.backends.openclaw_matrix import open_inprocess

            with open_inprocess(target, out_dir, homeserver_link) as backend:
                yield backend
        case OpenClawTarget():
            from harness.backends.openclaw import OpenClawBackend, OpenClawGateway

            with OpenClawGateway(target.version, handshake_timeout_ms=target.handshake_timeout_ms,
                                 max_preauth_per_ip=target.max_preauth_per_ip, cpu_quota=target.cpu_quota,
                                 cpu_quota_from=target.cpu_quota_from, log_dir=out_dir) as gateway:
                yield OpenClawBackend(target, gateway)
        case StubTarget(backend="docker"):
            from harness.backends.docker import DockerGateway
            from harness.backends.stub import DockerStubBackend, stub_log_size

            log_start = stub_log_size(out_dir)  # taken before the stub starts: all its records are this run's
            with DockerGateway([*target.args, *stub_args], out_dir) as container:  # its JSON log: out_dir too
                yield DockerStubBackend(target, container, out_dir, log_start)
        case StubTarget():
            from harness.backends.embedded import EmbeddedStub
            from harness.backends.stub import STUB_LOG, StubBackend, stub_log_size

            log_start = stub_log_size(out_dir)  # taken before the stub starts: all its records are this run's
            with EmbeddedStub([*target.args, *stub_args, "--log-file", str(out_dir / STUB_LOG)],
                              log_path=out_dir / "stub.log") as stub:
                yield StubBackend(target, stub, out_dir, log_start)
