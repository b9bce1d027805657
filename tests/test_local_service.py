"""harness/backends/local_service.py: what every service the harness starts shares (its session, stop, sockets)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness.backends.local_service import (
    non_loopback_sockets,
    private_dir,
    reap_session,
    remove_orphaned_dirs,
    session_pids,
    stop_group,
)

LISTENER = """
import signal, socket, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN if sys.argv[2] == "stubborn" else signal.SIG_DFL)
server = socket.socket()
server.bind((sys.argv[1], 0))
server.listen()
print("listening", flush=True)
time.sleep(60)
"""


def start(host: str, mode: str = "polite") -> subprocess.Popen[bytes]:
    process = subprocess.Popen([sys.executable, "-c", LISTENER, host, mode], stdout=subprocess.PIPE,
                               start_new_session=True)
    assert process.stdout is not None and process.stdout.readline() == b"listening\n"
    return process


def test_a_listener_beyond_loopback_is_found_and_one_on_loopback_is_not() -> None:
    for host, expected in (("127.0.0.1", False), ("0.0.0.0", True)):
        process = start(host)
        try:
            findings = non_loopback_sockets(process.pid)
            assert bool(findings) is expected, findings
            assert all(" LISTEN " in f and f"(pid {process.pid})" in f for f in findings)
        finally:
            stop_group(process, 5.0, "listener")


def test_a_service_that_ignores_sigterm_is_killed_after_its_grace_and_its_session_reaped() -> None:
    process = start("127.0.0.1", "stubborn")
    assert session_pids(process.pid) == [process.pid]
    started = time.monotonic()
    code, killed = stop_group(process, 0.5, "stubborn listener")
    assert killed and code == -9 and 0.5 <= time.monotonic() - started < 5
    reap_session(process.pid, "stubborn listener")
    assert session_pids(process.pid) == []


def test_private_folders_of_dead_harness_processes_are_removed_and_live_ones_kept() -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    orphan = Path(tempfile.mkdtemp(prefix=f"test-service-home-{int(dead.stdout)}-"))
    mine = private_dir("test-service")
    try:
        assert mine.name.startswith(f"test-service-home-{os.getpid()}-")
        remove_orphaned_dirs("test-*")
        assert not orphan.exists() and mine.is_dir()
    finally:
        for folder in (orphan, mine):
            if folder.exists():
                folder.rmdir()
