"""How busy the host was while a run ran: the CPU this run's processes were denied, read from Linux.

A live run shares the machine with whatever else runs there, and its verdict depends on time (handshake
timers, scaled by the time scale). So every live run measures, over the window the accounts ran:
  - for the harness's own process (the accounts under Locust, the health probe) and for the gateway's
    processes, the CPU time all their threads used, and the time each process's main thread, the one that runs
    its event loop (the stub's asyncio, Node's, the harness's gevent hub), was runnable but waiting for a CPU
    (`/proc/<pid>/task/<tid>/schedstat`, second field: run-queue wait). Only the loop thread's wait delays a
    timer; a multi-threaded gateway's helper threads (Node's libuv pool and V8's background threads) wait too,
    and summing them called a run of the real 2026.9.6 beside one busy loop `inconclusive` (4.1 s of thread waits
    in a 40 s run, 2.9 s of CPU used), where its loop thread waited 1-2% of each run;
  - the machine's steal time (`/proc/stat`: a hypervisor giving this VM's CPU to others) and its CPU pressure
    (`/proc/pressure/cpu`, "some": the share of time at least one task waited for a CPU);
and the driver adds the harness's own event-loop lag. `harness.verdict.host` turns these into a rule.
Reading /proc costs microseconds; where a file is missing (not Linux, schedstats off) the figure is None.

Before a live run, `ensure_open_files` raises the process's open-file limit to what its accounts need.
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.errors import BadInput

# Each account's connection is one socket (harness.client.plain_socket).
FILES_PER_ACCOUNT = 1
FILES_BESIDE_ACCOUNTS = 256  # the probe, agents, logs, CSV writers, Locust's own


def ensure_open_files(accounts: int) -> None:
    """Raise this process's open-file limit to what `accounts` connections need, or refuse in one line."""
    needed = FILES_PER_ACCOUNT * accounts + FILES_BESIDE_ACCOUNTS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    raised_hard = hard if hard == resource.RLIM_INFINITY or hard >= needed else needed
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, raised_hard))
    except (ValueError, OSError):
        raise BadInput(f"accounts.count: {accounts} accounts need about {needed} open files in one process "
                       f"({FILES_PER_ACCOUNT} each), and this one may open {hard} (`ulimit -Hn`, which only root can "
                       "raise): raise it, or run fewer accounts") from None


NS_PER_S = 1_000_000_000


@dataclass(frozen=True)
class CpuTimes:
    """One process: CPU used by all its threads, and its main (event-loop) thread's run-queue wait, in ns."""

    run_ns: int
    wait_ns: int


def process_cpu(pids: Sequence[int]) -> dict[int, CpuTimes]:
    """CPU used by every thread of each of `pids` now, and its main thread's run-queue wait; a process that
    cannot be read (gone, or schedstats off) is left out."""
    out: dict[int, CpuTimes] = {}
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        run = wait = 0
        readable = False
        for tid in tids:
            try:
                fields = Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()
                run += int(fields[0])
                if tid == str(pid):
                    wait = int(fields[1])
                readable = True
            except (OSError, ValueError, IndexError):
                continue
        if readable:
            out[pid] = CpuTimes(run, wait)
    return out


def steal_ticks() -> tuple[int, int] | None:
    """(steal, total) jiffies of all CPUs since boot, from /proc/stat; None off Linux."""
    try:
        first = Path("/proc/stat").read_text().splitlines()[0].split()
        ticks = [int(v) for v in first[1:]]
    except (OSError, ValueError, IndexError):
        return None
    return (ticks[7] if len(ticks) > 7 else 0), sum(ticks[:8])


def cpu_pressure_us() -> int | None:
    """Microseconds, since boot, during which some task waited for a CPU (PSI `some total`); None without PSI."""
    try:
        for line in Path("/proc/pressure/cpu").read_text().splitlines():
            if line.startswith("some "):
                return int(line.rsplit("total=", 1)[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


@dataclass(frozen=True)
class ProcessShare:
    """One role's processes over the window: CPU used and CPU denied (run-queue wait), in seconds."""

    cpu_s: float
    waited_s: float


@dataclass(frozen=True)
class HostTick:
    """How long each role's loop thread had waited for a CPU, in all, `at_s` seconds into the window."""

    at_s: float
    harness_waited_s: float | None
    gateway_waited_s: float | None


@dataclass(frozen=True)
class HostWindow:
    """What the host did over one window of wall time (and, tick by tick, how the waits grew within it)."""

    wall_s: float
    harness: ProcessShare | None
    gateway: ProcessShare | None
    steal_fraction: float | None
    cpu_pressure_fraction: float | None
    cores: int
    ticks: tuple[HostTick, ...] = ()


_Reading = tuple[float, dict[int, CpuTimes], dict[int, CpuTimes], tuple[int, int] | None, int | None]


class HostMeter:
    """Reads the host at `start()` and at `stop()`; `gateway_pids` is asked each time (processes come and go)."""

    def __init__(self, gateway_pids: Callable[[], Sequence[int]], harness_pid: int | None = None) -> None:
        self._gateway_pids = gateway_pids
        self._harness_pid = os.getpid() if harness_pid is None else harness_pid
        self._start: _Reading | None = None
        self._ticks: list[HostTick] = []

    def _read(self) -> _Reading:
        return (time.monotonic(), process_cpu([self._harness_pid]), process_cpu(self._gateway_pids()),
                steal_ticks(), cpu_pressure_us())

    def start(self) -> None:
        self._start = self._read()
        self._ticks = []

    def tick(self) -> None:
        """Note the waits so far (a run's driver calls this every second or so)."""
        if self._start is not None:
            self._ticks.append(self._tick(self._start, self._read()))

    @staticmethod
    def _tick(start: _Reading, now: _Reading) -> HostTick:
        harness, gateway = _share(start[1], now[1]), _share(start[2], now[2])
        return HostTick(now[0] - start[0], None if harness is None else harness.waited_s,
                        None if gateway is None else gateway.waited_s)

    def stop(self) -> HostWindow | None:
        if self._start is None:
            return None
        (t0, harness0, gateway0, steal0, psi0), (t1, harness1, gateway1, steal1, psi1) = self._start, self._read()
        wall_s = max(t1 - t0, 1e-9)
        steal = None
        if steal0 is not None and steal1 is not None and steal1[1] > steal0[1]:
            steal = (steal1[0] - steal0[0]) / (steal1[1] - steal0[1])
        pressure = None if psi0 is None or psi1 is None else min(1.0, (psi1 - psi0) / 1e6 / wall_s)
        end = self._tick(self._start, (t1, harness1, gateway1, steal1, psi1))
        return HostWindow(wall_s=wall_s, harness=_share(harness0, harness1), gateway=_share(gateway0, gateway1),
                          steal_fraction=steal, cpu_pressure_fraction=pressure, cores=os.cpu_count() or 1,
                          ticks=(HostTick(0.0, 0.0, 0.0), *self._ticks, end))


def _share(before: dict[int, CpuTimes], after: dict[int, CpuTimes]) -> ProcessShare | None:
    """Over the processes alive at the end: what each did since the start (or since it began, if it is new)."""
    if not after:
        return None
    zero = CpuTimes(0, 0)
    run = sum(max(0, t.run_ns - before.get(pid, zero).run_ns) for pid, t in after.items())
    wait = sum(max(0, t.wait_ns - before.get(pid, zero).wait_ns) for pid, t in after.items())
    return ProcessShare(cpu_s=run / NS_PER_S, waited_s=wait / NS_PER_S)
