"""A slow host on demand: hold a set of processes to a fraction of one CPU core.

`throttle_cpu(pids, quota, name=...)` is a context manager. Inside it, the processes `pids()` names get at
most `quota` cores (0.1 = a tenth of one core), by the first method that works here:

* **cgroup v1** (`cpu.cfs_quota_us` / `cpu.cfs_period_us`): a new cgroup beside the caller's in the `cpu`
  hierarchy (`/sys/fs/cgroup/cpu/...`), the processes moved into it. CFS bandwidth control caps the CPU time
  of all their threads together per period, the way a container's CPU limit does.
* **cgroup v2** (`cpu.max`): the same on the unified hierarchy, where the `cpu` controller is bound there.
* **SIGSTOP duty cycle**: a thread that lets the processes run for part of every period and stops them
  (SIGSTOP, then SIGCONT) for the rest, sizing each run window so that their CPU time (/proc utime + stime)
  follows `quota` x wall time. Coarser than CFS: CPU time is read in clock ticks (10 ms), so it holds the
  quota over a second or so rather than within each period.

Processes a throttled process forks later are throttled too: a cgroup's children inherit it, and the duty
cycle re-reads `pids()` every period. On exit (also when interrupted) every process is moved back to the
cgroup the throttle was created in and the cgroup is removed, or the duty cycle stops and every process it
knew is sent SIGCONT: nothing is left behind.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import re
import secrets
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal, Protocol

from harness.errors import BackendError, BadInput

ThrottleMethod = Literal["auto", "cgroup", "sigstop"]

DEFAULT_PERIOD_US = 100_000
CGROUP_V1_CPU_ROOT = Path("/sys/fs/cgroup/cpu")
CGROUP_V2_ROOTS = (Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/unified"))
_RMDIR_TIMEOUT_S = 5.0
CGROUP_PREFIX = "harness-"  # <prefix><name>-<creating pid>-<6 hex digits>
_ORPHAN_OWNER = re.compile(r"-(\d+)-[0-9a-f]{6}$")


def check_quota(quota: float) -> float:
    """`quota` as a float if it is a number > 0 and <= the machine's cores, else `BadInput` naming `cpu_quota`."""
    cores = os.cpu_count() or 1
    if isinstance(quota, bool) or not isinstance(quota, (int, float)) or not math.isfinite(quota) \
            or not 0 < quota <= cores:
        raise BadInput(f"cpu_quota: expected a number > 0 and <= {cores} (the cores of this machine), got {quota!r}")
    return float(quota)


class CpuThrottle(Protocol):
    method: str
    quota: float
    period_us: int

    def describe(self) -> dict[str, Any]:
        """What summary.json records: method, quota, period, and the throttling statistics so far."""
        ...


@contextlib.contextmanager
def throttle_cpu(pids: Callable[[], list[int]], quota: float, *, name: str, method: ThrottleMethod = "auto",
                 period_us: int = DEFAULT_PERIOD_US) -> Iterator[CpuThrottle]:
    """Hold the processes `pids()` names to `quota` cores while the block runs (see the module doc).

    `method="auto"` takes a writable cgroup CPU controller (v1, then v2) and falls back to the SIGSTOP duty
    cycle; `"cgroup"` refuses to fall back (BackendError); `"sigstop"` forces the duty cycle.
    """
    quota = check_quota(quota)
    if period_us < 1000 or period_us > 1_000_000:
        raise BadInput(f"cpu_quota period: expected 1000..1000000 us, got {period_us}")
    throttle: _CgroupThrottle | _DutyCycleThrottle | None = None
    if method in ("auto", "cgroup"):
        throttle = _CgroupThrottle.create(quota, period_us, name)
        if throttle is None and method == "cgroup":
            raise BackendError("cpu_quota: no writable cgroup CPU controller (v1 cpu.cfs_quota_us or v2 cpu.max)")
    if throttle is None:
        throttle = _DutyCycleThrottle(quota, period_us, pids)
    try:
        throttle.apply(pids())
        yield throttle
    finally:
        throttle.remove()


# --- cgroups -------------------------------------------------------------------------------------------------


def _own_cgroup(controller: str | None) -> str:
    """This process's cgroup path for `controller` (v1), or its unified (v2) path when `controller` is None."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if (controller is None and controllers == "") or (controller is not None
                                                          and controller in controllers.split(",")):
            return path
    raise OSError(errno.ENOENT, f"no {controller or 'unified'} entry in /proc/self/cgroup")


def _v2_cpu_root() -> Path | None:
    for root in CGROUP_V2_ROOTS:
        with contextlib.suppress(OSError):
            if "cpu" in (root / "cgroup.controllers").read_text().split():
                return root
    return None


class _CgroupThrottle:
    """A cgroup of its own with a CPU bandwidth limit; v1 or v2, as found."""

    def __init__(self, directory: Path, parent: Path, version: int, quota: float, period_us: int) -> None:
        self.directory = directory
        self.parent = parent
        self.version = version
        self.quota = quota
        self.period_us = period_us
        self.method = "cgroup-v1 cpu.cfs_quota_us" if version == 1 else "cgroup-v2 cpu.max"
        self.moved: list[int] = []
        self._last_stat: dict[str, int] = {}

    @property
    def quota_us(self) -> int:
        return max(1000, round(self.quota * self.period_us))

    @classmethod
    def create(cls, quota: float, period_us: int, name: str) -> _CgroupThrottle | None:
        """The cgroup, made and limited; None when no writable CPU controller is found."""
        unique = f"{CGROUP_PREFIX}{_safe(name)}-{os.getpid()}-{secrets.token_hex(3)}"
        candidates: list[tuple[int, Path]] = []
        if (CGROUP_V1_CPU_ROOT / "cpu.cfs_quota_us").is_file():
            with contextlib.suppress(OSError):
                candidates.append((1, CGROUP_V1_CPU_ROOT / _own_cgroup("cpu").lstrip("/")))
        v2_root = _v2_cpu_root()
        if v2_root is not None:
            candidates.append((2, v2_root))  # the root: v2 forbids processes in inner cgroups with controllers
        for version, parent in candidates:
            _remove_orphans(parent)
            throttle = cls(parent / unique, parent, version, quota, period_us)
            try:
                throttle._make()
            except OSError:
                throttle._rmdir()
                continue
            return throttle
        return None

    def _make(self) -> None:
        if self.version == 2:
            with contextlib.suppress(OSError):  # may already be on; the write below fails if it cannot be
                (self.parent / "cgroup.subtree_control").write_text("+cpu")
        self.directory.mkdir()
        if self.version == 1:
            (self.directory / "cpu.cfs_period_us").write_text(str(self.period_us))
            (self.directory / "cpu.cfs_quota_us").write_text(str(self.quota_us))
        else:
            (self.directory / "cpu.max").write_text(f"{self.quota_us} {self.period_us}")

    def apply(self, pids: list[int]) -> None:
        for pid in pids:
            if _move(pid, self.directory):
                self.moved.append(pid)

    def cpu_stat(self) -> dict[str, int]:
        """nr_periods, nr_throttled and throttled time (v1 `throttled_time` ns, v2 `throttled_usec`)."""
        with contextlib.suppress(OSError, ValueError):
            lines = (self.directory / "cpu.stat").read_text().splitlines()
            self._last_stat = {key: int(value) for key, value in (line.split() for line in lines if line.strip())}
        return dict(self._last_stat)

    def describe(self) -> dict[str, Any]:
        stat = self.cpu_stat()
        throttled_ms = (stat["throttled_time"] / 1e6 if "throttled_time" in stat
                        else stat.get("throttled_usec", 0) / 1e3)
        return {"method": self.method, "quota": self.quota, "period_us": self.period_us, "quota_us": self.quota_us,
                "cgroup": str(self.directory), "pids": list(self.moved), "nr_periods": stat.get("nr_periods"),
                "nr_throttled": stat.get("nr_throttled"), "throttled_time_ms": round(throttled_ms, 3)}

    def remove(self) -> None:
        """Move every process left in the cgroup back to the parent, then remove the cgroup (bounded retry)."""
        self.cpu_stat()
        self._lift_limit()
        deadline = time.monotonic() + _RMDIR_TIMEOUT_S
        while True:
            for pid in self._members():
                _move(pid, self.parent)
            try:
                self._rmdir()
                return
            except OSError as exc:
                if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                    raise BackendError(f"cpu_quota: could not remove {self.directory}: {exc.strerror}") from None
            time.sleep(0.05)  # exiting tasks can keep a cgroup busy for a moment

    def _lift_limit(self) -> None:
        """Unlimit the cgroup before its processes leave it: the kernel then unthrottles them at once.

        A process moved out of a throttled cgroup while it is throttled can get no CPU at all for up to about
        a second after the move (Linux 6.18: 4 of 20 releases of a busy child): a gateway stopping on Ctrl-C
        would stall, and a probe right after release would read a stopped process.
        """
        with contextlib.suppress(OSError):
            if self.version == 1:
                (self.directory / "cpu.cfs_quota_us").write_text("-1")
            else:
                (self.directory / "cpu.max").write_text(f"max {self.period_us}")

    def _members(self) -> list[int]:
        try:
            return [int(line) for line in (self.directory / "cgroup.procs").read_text().split()]
        except OSError:
            return []

    def _rmdir(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.directory.rmdir()


def _remove_orphans(parent: Path) -> None:
    """Remove the empty cgroups of harness processes that died without removing them (a crash, a SIGKILL)."""
    for directory in parent.glob(f"{CGROUP_PREFIX}*"):
        owner = _ORPHAN_OWNER.search(directory.name)
        if owner is None or Path(f"/proc/{owner.group(1)}").exists():
            continue
        with contextlib.suppress(OSError):  # not empty, or gone already: leave it
            directory.rmdir()


def _move(pid: int, cgroup: Path) -> bool:
    """Write `pid` (its whole thread group) into `cgroup`; False if the process is gone."""
    try:
        (cgroup / "cgroup.procs").write_text(str(pid))
    except OSError as exc:
        if exc.errno == errno.ESRCH:
            return False
        raise
    return True


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in name)[:40] or "throttle"


# --- SIGSTOP/SIGCONT duty cycle --------------------------------------------------------------------------------


class _DutyCycleThrottle:
    """Stop and continue the processes each period so that their CPU time follows `quota` x wall time.

    Each period they run for a window and are stopped (SIGSTOP) for the rest of it. The window is the CPU
    time they are owed: `quota` x the time elapsed, minus the CPU time they used (utime + stime of every
    pid, all threads, from /proc), so a process slowed by other load, or one using several cores at once,
    is given more or less time accordingly. The credit is capped at `CREDIT_PERIODS` periods' worth, so an
    idle process cannot save up for a burst.
    """

    method = "sigstop-duty-cycle"
    CREDIT_PERIODS = 2.0

    def __init__(self, quota: float, period_us: int, pids: Callable[[], list[int]]) -> None:
        self.quota = quota
        self.period_us = period_us
        self._pids = pids
        self._known: set[int] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.periods = 0
        self.stopped_s = 0.0

    def apply(self, pids: list[int]) -> None:
        self._known.update(pids)
        self._thread = threading.Thread(target=self._cycle, name="cpu-throttle-duty-cycle", daemon=True)
        self._thread.start()

    def _cycle(self) -> None:
        period_s = self.period_us / 1e6
        max_credit_s = self.CREDIT_PERIODS * self.quota * period_s
        credit_s = 0.0
        pids = self._pids()
        used_s, last = cpu_seconds(pids), time.monotonic()
        while not self._stop.is_set():
            run_s = min(period_s, max(0.0, credit_s + self.quota * period_s))
            if self._stop.wait(run_s):
                return
            if run_s < period_s:
                stopped_at = time.monotonic()
                _signal_all(pids, signal.SIGSTOP)
                try:
                    self._stop.wait(period_s - run_s)
                finally:
                    _signal_all(pids, signal.SIGCONT)
                    self.stopped_s += time.monotonic() - stopped_at
            self.periods += 1
            now, now_used_s = time.monotonic(), cpu_seconds(pids)
            credit_s = min(max_credit_s, credit_s + self.quota * (now - last) - max(0.0, now_used_s - used_s))
            pids = self._pids()  # children forked meanwhile join from the next period
            self._known.update(pids)
            used_s, last = cpu_seconds(pids), now

    def describe(self) -> dict[str, Any]:
        return {"method": self.method, "quota": self.quota, "period_us": self.period_us, "pids": sorted(self._known),
                "nr_periods": self.periods, "stopped_time_ms": round(self.stopped_s * 1000, 3)}

    def remove(self) -> None:
        self._stop.set()
        try:
            if self._thread is not None:
                self._thread.join()
        finally:
            _signal_all(sorted(self._known), signal.SIGCONT)  # whatever the thread was doing when stopped


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of the processes (all their threads), in seconds; a vanished process counts 0."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / CLOCK_TICKS


def _signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)
