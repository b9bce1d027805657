"""The gateway stub as a run's backend: in a child process (embedded) or in Docker containers.

Both run the same stub with the same options and read the same things back: its /stats, and its JSON log,
which it writes into the run's folder (`stub.jsonl`; bind-mounted into the container). They differ in where a
Toxiproxy in front of the stub runs: on this machine, or in a container on the stub's Docker network.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from harness.backends.base import TargetDied, ToxiproxyPlacement, descendants, local_toxiproxy
from harness.backends.docker import DockerGateway
from harness.backends.embedded import last_lines
from harness.summary import StubTargetRecord, TargetRecord
from harness.target import StubTarget
from openclaw_wire.log_records import read_records

STUB_LOG = "stub.jsonl"


class StubProcess(Protocol):
    """A running stub: `EmbeddedStub` or `DockerGateway`."""

    name: str

    @property
    def url(self) -> str: ...

    @property
    def token(self) -> str: ...

    @property
    def pid(self) -> int | None: ...

    def stats(self, timeout_s: float = 5.0, *, collect: bool = False) -> dict[str, Any]: ...

    def ended(self) -> str | None: ...

    def log_text(self) -> str: ...


def stub_log_size(out_dir: Path) -> int:
    """Where the stub's JSON log in `out_dir` ends now (0 without one): a stub appends to the log it finds."""
    with contextlib.suppress(FileNotFoundError):
        return (out_dir / STUB_LOG).stat().st_size
    return 0


class StubBackend:
    coalesces_approvals = True

    def __init__(self, target: StubTarget, process: StubProcess, log_dir: Path, log_start: int = 0) -> None:
        self._target = target
        self._process = process
        self._log = log_dir / STUB_LOG
        # The stub appends to a JSON log left in the folder by an earlier run (a rerun into the same folder):
        # this stub's records begin here. Reading the whole log gave a run the earlier runs' records too, and
        # made a process that reruns into a folder grow its memory with the log, run after run.
        self._log_start = log_start

    @property
    def url(self) -> str:
        return self._process.url

    @property
    def token(self) -> str:
        return self._process.token

    def stats(self, *, collect: bool = False) -> dict[str, Any] | None:
        try:
            return self._process.stats(collect=collect)
        except (OSError, ValueError):
            return None  # the stub is gone or answered nonsense: there is nothing to read

    def gateway_records(self, out_dir: Path) -> list[dict[str, Any]] | None:
        return read_records(self._log, self._log_start)

    def mark(self) -> None:
        self._log_start = stub_log_size(self._log.parent)

    def describe(self) -> TargetRecord:
        config = self._target.config.describe()
        return StubTargetRecord(kind="stub", backend=self._target.backend, cost_clock=config["cost_clock"],
                                **StubTargetRecord.fields_from(config), **self._container_fields())

    def pids(self) -> list[int]:
        pid = self._process.pid
        return [] if pid is None else [pid]

    def heap_after_gc_mb(self) -> float | None:
        return None  # CPython frees by reference count: its resident memory is what is judged

    def check_alive(self) -> None:
        ended = self._process.ended()
        if ended is not None:
            try:
                log = self._process.log_text()
            except OSError:
                log = ""
            raise TargetDied(f"the {self._process.name} {ended} during the run; its log's last lines: "
                             f"{last_lines(log)}")

    def _container_fields(self) -> dict[str, Any]:
        return {"image": None, "base_image": None, "toxiproxy_image": None, "toxiproxy_fallback": None}

    def toxiproxy(self, out_dir: Path) -> contextlib.AbstractContextManager[ToxiproxyPlacement]:
        return local_toxiproxy(self.url, out_dir)


class DockerStubBackend(StubBackend):
    def __init__(self, target: StubTarget, gateway: DockerGateway, log_dir: Path, log_start: int = 0) -> None:
        super().__init__(target, gateway, log_dir, log_start)
        self._gateway = gateway

    def pids(self) -> list[int]:
        pid = self._gateway.pid
        return [] if pid is None else descendants(pid)

    def _container_fields(self) -> dict[str, Any]:
        started = self._gateway.toxiproxy_started
        return {"image": self._gateway.image, "base_image": self._gateway.base_image,
                "toxiproxy_image": started.image if started else None,
                "toxiproxy_fallback": started.fallback if started else None}

    @contextlib.contextmanager
    def _container_toxiproxy(self, out_dir: Path) -> Iterator[ToxiproxyPlacement]:
        with self._gateway.toxiproxy(out_dir / "toxiproxy.log") as container:
            yield ToxiproxyPlacement(container.api_url, container.backend, f" in container {container.image}",
                                     container.listen, container.upstream, container.client_url)

    def toxiproxy(self, out_dir: Path) -> contextlib.AbstractContextManager[ToxiproxyPlacement]:
        return self._container_toxiproxy(out_dir)
