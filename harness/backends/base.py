"""What a run needs of the gateway it aims at, whatever runs it: the `Backend` protocol.

A backend is started and stopped as a context manager (see `harness.backends.open_backend`); while it runs it
says where the gateway listens (`url`, `token`), what its own instruments show (`stats()`: the stub's
/stats, None for a gateway without one), which log records it wrote during the run (`gateway_records()`),
what it is (`describe()`, summary.json's `target`), and where a Toxiproxy proxy in front of it should run
(`toxiproxy()`: beside it, since the proxy must reach the gateway and the clients must reach the proxy).
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from harness.backends.embedded import ChildService
from harness.errors import BackendError
from harness.summary import TargetRecord, UrlTargetRecord
from harness.target import UrlTarget

EMBEDDED_PROXY_MODULE = "harness.faults.embedded_proxy"
ALIVE_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class ToxiproxyPlacement:
    """A Toxiproxy server for a run, and the addresses to give it for the proxy in front of the gateway."""

    api_url: str
    backend: str  # "toxiproxy" (the real one) or "embedded" (the project's compatible proxy)
    where: str  # how summary.json names where it runs, after its URL ("" on this machine)
    listen: str  # the proxy's listen address, as the Toxiproxy server binds it
    upstream: str  # the gateway, as the Toxiproxy server dials it
    client_url: str | None  # the proxy, as the harness's clients reach it; None: at its listen address


class Backend(Protocol):
    @property
    def url(self) -> str:
        """Where the gateway itself listens (the health probe connects here, never through a fault proxy)."""

    @property
    def token(self) -> str: ...

    @property
    def coalesces_approvals(self) -> bool:
        """The gateway-dedup arm's switch exists here (the stub's `--approval-dedup`; no real gateway has one)."""

    def stats(self, *, collect: bool = False) -> dict[str, Any] | None:
        """The gateway's own figures now (the stub's /stats), or None where there are none to read; `collect`:
        after a full garbage collection, where the gateway can be asked for one (the stub)."""

    def gateway_records(self, out_dir: Path) -> list[dict[str, Any]] | None:
        """The gateway's JSON log records of this run (kept in `out_dir`), or None when there is no log."""

    def mark(self) -> None:
        """From now on, `gateway_records()` gives only what the gateway logs after this call: a gateway that
        stays up serves run after run (a soak), and each run judges its own records only."""

    def describe(self) -> TargetRecord: ...

    def pids(self) -> list[int]:
        """The gateway's processes on this machine, for the host's CPU figures (empty where they are not ours)."""

    def heap_after_gc_mb(self) -> float | None:
        """A garbage-collected gateway's live heap: what it held after its latest full collection (the real
        gateway's V8 heap); None where there is no such figure (the stub: CPython frees by reference count)."""

    def check_alive(self) -> None:
        """Raise `TargetDied` naming the gateway, how it ended and its log's last lines, if it is gone."""

    def toxiproxy(self, out_dir: Path) -> contextlib.AbstractContextManager[ToxiproxyPlacement]: ...


@contextlib.contextmanager
def local_toxiproxy(gateway_url: str, out_dir: Path) -> Iterator[ToxiproxyPlacement]:
    """The Toxiproxy at TOXIPROXY_URL if set, else the embedded one as a child process; on this machine."""
    gateway = urlsplit(gateway_url)
    upstream = f"{gateway.hostname}:{gateway.port}"
    url = os.environ.get("TOXIPROXY_URL")
    if url:
        yield ToxiproxyPlacement(url, "toxiproxy", "", "127.0.0.1:0", upstream, None)
        return
    with ChildService(EMBEDDED_PROXY_MODULE, ["--host", "127.0.0.1", "--port", "0"],
                      log_path=out_dir / "toxiproxy.log") as child:
        yield ToxiproxyPlacement(str(child.ready["url"]), "embedded", "", "127.0.0.1:0", upstream, None)


class TargetDied(BackendError):
    """The gateway died or stopped answering during the run: there is no verdict to give."""


def descendants(pid: int) -> list[int]:
    """`pid` and every live process below it (from /proc's parent links)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo += children.get(current, [])
    return found


class UrlBackend:
    """A gateway someone else runs, at a loopback URL: nothing to start, nothing to read but the wire."""

    coalesces_approvals = False

    def __init__(self, target: UrlTarget) -> None:
        self._target = target

    @property
    def url(self) -> str:
        return self._target.url

    @property
    def token(self) -> str:
        return self._target.token

    def stats(self, *, collect: bool = False) -> dict[str, Any] | None:
        return None

    def gateway_records(self, out_dir: Path) -> list[dict[str, Any]] | None:
        return None

    def mark(self) -> None:
        pass  # no log to read

    def describe(self) -> TargetRecord:
        return UrlTargetRecord(kind="url", url=self._target.url, protocol=self._target.protocol)

    def pids(self) -> list[int]:
        return []

    def heap_after_gc_mb(self) -> float | None:
        return None

    def check_alive(self) -> None:
        """Something must accept a TCP connection at the URL (a busy gateway still accepts: only a refusal counts)."""
        parts = urlsplit(self._target.url)
        try:
            with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80), timeout=ALIVE_TIMEOUT_S):
                pass
        except ConnectionRefusedError:
            raise TargetDied(f"nothing answers at {self._target.url} (connection refused)") from None
        except OSError:
            pass  # a timeout or a full backlog is a busy gateway, not a dead one

    def toxiproxy(self, out_dir: Path) -> contextlib.AbstractContextManager[ToxiproxyPlacement]:
        return local_toxiproxy(self.url, out_dir)
