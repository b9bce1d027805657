"""What a soak watches in its processes, and how it judges their growth.

`sample_processes` reads, through psutil, the resident memory, open descriptors and TCP sockets by state of a set
of processes (a gateway and its children, or the harness itself), and on Linux what kind each descriptor is
(socket, pipe, file, eventpoll, eventfd, ...: what a rising descriptor count is made of). `growth` fits the
samples taken after warm-up with the Theil-Sen estimator (scipy.stats.theilslopes: the median of the pairwise
slopes, with its confidence interval), which a garbage collector's saw-tooth or one spike cannot drag the way a
least-squares line would; a bound is broken only when the whole interval lies above it.
"""

from __future__ import annotations

import contextlib
import os
import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import psutil

CONFIDENCE = 0.95
MIN_FIT_SAMPLES = 10
MB = 1024.0 * 1024.0


@dataclass(frozen=True)
class ProcessSample:
    pids: list[int]
    rss_mb: float
    descriptors: int
    sockets: dict[str, int]  # TCP state -> count (ESTABLISHED, LISTEN, CLOSE_WAIT, ...)
    descriptor_kinds: dict[str, int]  # socket, pipe, file, eventpoll, ... -> count (empty where /proc is not)

    @property
    def socket_total(self) -> int:
        return sum(self.sockets.values())


def sample_processes(pids: Iterable[int]) -> ProcessSample | None:
    """The processes' summed figures now; None when none of them is alive."""
    alive, rss, descriptors, states, kinds = [], 0, 0, Counter[str](), Counter[str]()
    for pid in dict.fromkeys(pids):
        with contextlib.suppress(psutil.Error):
            process = psutil.Process(pid)
            with process.oneshot():
                rss += process.memory_info().rss
                descriptors += process.num_fds()
                states.update(c.status for c in process.net_connections(kind="tcp"))
            kinds.update(descriptor_kinds(pid))
            alive.append(pid)
    if not alive:
        return None
    return ProcessSample(alive, round(rss / MB, 2), descriptors, dict(sorted(states.items())),
                         dict(sorted(kinds.items())))


def descriptor_kinds(pid: int) -> Counter[str]:
    """What a process's open descriptors are, by kind, from /proc/PID/fd (empty without /proc)."""
    kinds = Counter[str]()
    with contextlib.suppress(OSError):
        for entry in os.scandir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):  # closed between listing and reading
                link = os.readlink(entry.path)
                if link.startswith(("socket:", "pipe:")):
                    kinds[link.split(":", 1)[0]] += 1
                elif link.startswith("anon_inode:"):
                    kinds[link.removeprefix("anon_inode:").strip("[]")] += 1
                else:
                    kinds["file"] += 1
    return kinds


def with_children(pids: Iterable[int]) -> list[int]:
    """The processes and every live process below them (a gateway's workers, Node's helpers)."""
    found: list[int] = []
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            found += [pid, *(child.pid for child in psutil.Process(pid).children(recursive=True))]
    return list(dict.fromkeys(found))


@dataclass(frozen=True)
class Growth:
    """A fitted slope per hour with its confidence interval, over `samples` points spanning `hours`."""

    per_hour: float
    low: float
    high: float
    samples: int
    hours: float
    start: float  # the median of the first samples fitted: what a percentage is of
    intercept: float = 0.0  # the fitted line's value at time 0, in the values' unit
    from_s: float = 0.0  # the span fitted
    to_s: float = 0.0

    def percent_per_hour(self) -> Growth:
        scale = 100.0 / self.start if self.start else 0.0
        return Growth(self.per_hour * scale, self.low * scale, self.high * scale, self.samples, self.hours,
                      self.start, self.intercept * scale, self.from_s, self.to_s)

    def exceeds(self, bound: float) -> bool:
        """The whole interval lies above `bound` (for a bound of 0: steady growth)."""
        return self.low > bound


def growth(times_s: Sequence[float], values: Sequence[float]) -> Growth | None:
    """The Theil-Sen slope of `values` over `times_s`, per hour; None with too few samples or no spread in time."""
    if len(values) < MIN_FIT_SAMPLES or max(times_s) - min(times_s) <= 0:
        return None
    from scipy.stats import theilslopes  # only where a fit is made: scipy takes a while to import

    hours = [t / 3600.0 for t in times_s]
    fit = theilslopes(values, hours, alpha=CONFIDENCE)
    head = list(values[: max(1, len(values) // 10)])
    return Growth(float(fit.slope), float(fit.low_slope), float(fit.high_slope), len(values),
                  max(hours) - min(hours), float(statistics.median(head)), float(fit.intercept), min(times_s),
                  max(times_s))
