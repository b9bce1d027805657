"""Drive an in-process run: the real gateway's own Matrix accounts, watched through its console.

No client of the harness takes part (no Locust, no probe): the handlers start inside the gateway as it starts,
so scenario time 0 is the gateway's launch, and the run lasts the profile's duration from there. Every second
the console's new lines are folded into the run's ledger (`harness.accounts.inprocess`) for the progress line,
and the host's CPU waits are noted; at the end the gateway's JSON log records are taken for the second source.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from harness.accounts.inprocess import InProcessLedger, console_lines
from harness.backends.base import local_toxiproxy
from harness.backends.openclaw_matrix import HomeserverLink, InProcessBackend
from harness.errors import BadInput
from harness.events import RunRecord
from harness.faults.client import ToxiproxyClient
from harness.host import HostMeter, HostWindow
from harness.report.progress import Progress
from harness.run.compose import Parts

PROGRESS_INTERVAL_S = 1.0


class ConsoleFollower:
    """The complete lines a growing console file gained since the last call."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._offset = 0
        self._partial = b""

    def new_text(self) -> str:
        try:
            with self._path.open("rb") as console:
                console.seek(self._offset)
                data = console.read()
        except OSError:
            return ""
        self._offset += len(data)
        data = self._partial + data
        complete, _, self._partial = data.rpartition(b"\n")
        return complete.decode("utf-8", errors="replace")


def homeserver_link(latency_ms: int, out_dir: Path) -> HomeserverLink | None:
    """What the gateway reaches the homeserver through: itself, or a Toxiproxy proxy (the embedded one, or the one
    at TOXIPROXY_URL) whose latency toxic holds back every answer by `latency_ms`."""
    if latency_ms <= 0:
        return None

    @contextlib.contextmanager
    def behind_latency(homeserver_url: str) -> Iterator[str]:
        with local_toxiproxy(homeserver_url, out_dir) as placement:
            proxy = ToxiproxyClient(placement.api_url).create(upstream=placement.upstream, name="homeserver",
                                                              listen=placement.listen)
            proxy.add_toxic(name="homeserver-latency", type="latency", stream="downstream", toxicity=1.0,
                            attributes={"latency": latency_ms, "jitter": 0})
            yield f"http://{proxy.listen}"

    return behind_latency


@dataclasses.dataclass(frozen=True)
class InProcessDriven:
    record: RunRecord
    host: HostWindow | None
    ledger: InProcessLedger  # the handlers' own counts


def drive_inprocess(parts: Parts, backend: InProcessBackend, progress: Progress,
                    on_progress: Callable[[float, int, int], None] | None = None) -> InProcessDriven:
    profile, gateway = parts.profile, backend.gateway
    launched_at = gateway.launched_at
    ledger = InProcessLedger(launched_at=launched_at)
    console = ConsoleFollower(gateway.log_path)
    host = HostMeter(backend.pids)
    host.start()
    ready_ms = _elapsed_ms(launched_at)  # the meter starts at ready: its ticks are shifted to launch time
    duration_ms = profile.duration_s * 1000.0
    if ready_ms >= duration_ms:
        raise BadInput(f"duration_s: the gateway was ready only {ready_ms / 1000:.0f} s after its launch, beyond the "
                       f"run's {profile.duration_s:g} s (a quota from launch starts it slowly): expected a longer run")
    # With execApprovals off (the workaround) no account starts a handler: none is expected to connect.
    accounts = backend.account_names if backend.target.exec_approvals else []
    while True:
        for line in console_lines(console.new_text()):
            ledger.add(line)
        now_ms = _elapsed_ms(launched_at)
        if now_ms >= duration_ms:
            break
        backend.check_alive()
        host.tick()
        if on_progress is not None:
            on_progress(now_ms, len(ledger.connected), ledger.storm_entries())
        progress.update(f"[{parts.arm.name}] {now_ms / 1000:6.0f}/{profile.duration_s:g} s  connected "
                        f"{len(ledger.connected)}/{len(accounts)}  storm entries {ledger.storm_entries()}  "
                        f"(in-process, from the gateway's console)")
        time.sleep(min(PROGRESS_INTERVAL_S, (duration_ms - now_ms) / 1000.0))
    window = host.stop()
    if window is not None:
        shift = ready_ms / 1000.0
        window = dataclasses.replace(window, ticks=tuple(dataclasses.replace(t, at_s=t.at_s + shift)
                                                         for t in window.ticks))
    in_run = [a for a in ledger.attempts if a.ended_ms <= duration_ms]
    record = RunRecord(
        accounts=accounts, attempts=in_run, disconnects=[d for d in ledger.disconnects if d.at_ms <= duration_ms],
        connected_at_end=frozenset(ledger.connected), duration_ms=duration_ms,
        startup_window_ms=profile.startup_window_s * 1000.0, final_window_ms=profile.final_window_s * 1000.0,
        gateway_records=backend.gateway_records(parts.out_dir),
    )
    return InProcessDriven(record, window, ledger)


def _elapsed_ms(since: dt.datetime) -> float:
    return (dt.datetime.now(dt.UTC) - since).total_seconds() * 1000.0
