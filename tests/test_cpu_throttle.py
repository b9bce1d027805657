"""harness/backends/cpu_throttle.py on a real busy-looping child process: both methods hold it near the quota,
and afterwards it runs free again with nothing left behind (no cgroup, no stopped process)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.backends.cpu_throttle import CGROUP_V1_CPU_ROOT, ThrottleMethod, _CgroupThrottle, throttle_cpu
from harness.errors import BadInput

QUOTA = 0.2
MEASURE_S = 2.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@pytest.fixture
def busy_child() -> Iterator[subprocess.Popen[bytes]]:
    child = subprocess.Popen([sys.executable, "-c", "while True: pass"], stdin=subprocess.DEVNULL)
    try:
        yield child
    finally:
        child.kill()
        child.wait(10)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def cpu_share(pid: int, seconds: float) -> float:
    """The fraction of one core the process used over `seconds` of wall clock."""
    cpu_before, wall_before = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return (cpu_seconds(pid) - cpu_before) / (time.monotonic() - wall_before)


def cgroup_available() -> bool:
    probe = _CgroupThrottle.create(0.5, 100_000, "probe")
    if probe is None:
        return False
    probe.remove()
    return True


def skip_unless_works(method: ThrottleMethod) -> None:
    if method == "cgroup" and not cgroup_available():
        pytest.skip("no writable cgroup CPU controller here (not root, or no cpu controller mounted)")


METHODS: list[ThrottleMethod] = ["cgroup", "sigstop"]


@pytest.mark.parametrize("method", METHODS)
def test_holds_a_busy_process_to_the_quota_and_releases_it(method: ThrottleMethod,
                                                            busy_child: subprocess.Popen[bytes]) -> None:
    skip_unless_works(method)
    pid = busy_child.pid
    with throttle_cpu(lambda: [pid], QUOTA, name="test-busy", method=method) as throttle:
        time.sleep(0.3)  # let the first periods pass
        throttled = cpu_share(pid, MEASURE_S)
        described = throttle.describe()
        cgroup = described.get("cgroup")
    # Upper bound from the limit itself; lower bound loose, since other work shares the machine's cores.
    assert QUOTA * 0.5 <= throttled <= QUOTA * 1.25, throttled
    assert described["quota"] == QUOTA and described["period_us"] == 100_000
    assert described["nr_periods"] and described["nr_periods"] >= 15
    if method == "cgroup":
        assert described["method"].startswith("cgroup-v")
        assert described["nr_throttled"] and described["nr_throttled"] >= 10
        assert cgroup is not None and not Path(cgroup).exists()
    else:
        assert described["method"] == "sigstop-duty-cycle"
        assert described["stopped_time_ms"] > 1000 * MEASURE_S * 0.4  # stopped most of the time
    assert state(pid) in "RS"  # continued, not left stopped
    assert cpu_share(pid, 0.5) > QUOTA * 1.3  # and no longer throttled (other work shares the cores)


def test_the_empty_cgroup_of_a_dead_harness_is_removed(busy_child: subprocess.Popen[bytes]) -> None:
    skip_unless_works("cgroup")
    dead = subprocess.Popen(["true"])
    dead.wait()
    alive = os.getpid()
    with throttle_cpu(lambda: [busy_child.pid], 0.5, name="test-orphans", method="cgroup") as throttle:
        parent = Path(throttle.describe()["cgroup"]).parent
    orphan, live = parent / f"harness-crashed-{dead.pid}-abcdef", parent / f"harness-running-{alive}-abcdef"
    orphan.mkdir()
    live.mkdir()
    try:
        with throttle_cpu(lambda: [busy_child.pid], 0.5, name="test-orphans", method="cgroup"):
            assert not orphan.exists()  # its creator is gone and it is empty
            assert live.exists()  # its creator still runs
    finally:
        for directory in (orphan, live):
            if directory.exists():
                directory.rmdir()


@pytest.mark.parametrize("method", METHODS)
def test_an_interrupted_block_still_releases_the_process(method: ThrottleMethod,
                                                         busy_child: subprocess.Popen[bytes]) -> None:
    skip_unless_works(method)
    pid = busy_child.pid
    before = set(CGROUP_V1_CPU_ROOT.iterdir()) if CGROUP_V1_CPU_ROOT.is_dir() else set()
    with pytest.raises(KeyboardInterrupt), throttle_cpu(lambda: [pid], 0.05, name="test-interrupt", method=method):
        time.sleep(0.25)
        raise KeyboardInterrupt
    after = set(CGROUP_V1_CPU_ROOT.iterdir()) if CGROUP_V1_CPU_ROOT.is_dir() else set()
    assert after == before
    assert state(pid) in "RS"
    assert cpu_share(pid, 0.5) > 0.1


def test_children_forked_after_the_start_are_throttled_too() -> None:
    skip_unless_works("cgroup")
    # The parent forks a busy child half a second in, after the throttle was applied to the parent alone.
    script = ("import os, time\ntime.sleep(0.5)\nif os.fork() == 0:\n    while True: pass\n"
              "else:\n    print(flush=True)\n    time.sleep(60)\n")
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        with throttle_cpu(lambda: [parent.pid], QUOTA, name="test-fork", method="cgroup"):
            assert parent.stdout is not None and parent.stdout.readline() == b"\n"
            children = Path(f"/proc/{parent.pid}/task/{parent.pid}/children").read_text().split()
            assert len(children) == 1
            share = cpu_share(int(children[0]), 1.5)
        assert share <= QUOTA * 1.25, share
    finally:
        os.killpg(parent.pid, 9)
        parent.wait(10)


@pytest.mark.parametrize("quota", [0, -0.5, float("nan"), float("inf"), (os.cpu_count() or 1) + 1])
def test_a_bad_quota_is_one_line_naming_cpu_quota(quota: float) -> None:
    with pytest.raises(BadInput, match=r"^cpu_quota: expected a number > 0") as caught, \
            throttle_cpu(lambda: [], quota, name="bad"):
        pass
    assert "\n" not in str(caught.value)


@pytest.mark.openclaw
def test_a_real_gateway_is_throttled_once_ready_and_released_at_stop(tmp_path: Path) -> None:
    from conftest import require_openclaw

    from harness.backends.local_service import session_pids
    from harness.backends.openclaw import OpenClawGateway

    version = "2026.4.24"
    require_openclaw(version)
    with OpenClawGateway(version, log_dir=tmp_path, cpu_quota=0.25) as gateway:
        described = gateway.cpu_throttle
        assert described is not None and described["quota"] == 0.25
        pids = gateway.session_pids()
        assert set(pids) <= set(described["pids"]) and gateway.pid in described["pids"]
        if described["method"].startswith("cgroup-v1"):
            for pid in pids:
                assert f":cpu:/{Path(described['cgroup']).name}" in Path(f"/proc/{pid}/cgroup").read_text()
        session = gateway.pid
        gateway.stop()
    assert session_pids(session) == []
    after = gateway.cpu_throttle
    assert after is not None and after["method"] == described["method"]
    if "cgroup" in described:
        assert not Path(described["cgroup"]).exists()


def test_the_gateway_refuses_a_bad_cpu_quota(tmp_path: Path) -> None:
    from harness.backends.openclaw import OpenClawGateway

    with pytest.raises(BadInput, match=r"^cpu_quota: "):
        OpenClawGateway("2026.4.24", log_dir=tmp_path, cpu_quota=0)
