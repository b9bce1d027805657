"""The embedded backend: the gateway stub (and the embedded Toxiproxy) as child processes on loopback.

A `ChildService` is a Python module run as a child process that prints one JSON ready line on stdout.
The child runs in its own session so a terminal's Ctrl-C reaches only the harness, which then stops it
itself (SIGTERM, then SIGKILL after a grace period): no child outlives a run. Should the harness die
without stopping it (SIGKILL, a crash), the kernel sends the child SIGTERM (`prepare_child`).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Self

from harness.errors import BackendError
from harness.stop_signals import signals_held, unblock_stop_signals

READY_TIMEOUT_S = 15.0
STOP_GRACE_S = 5.0
READY_POLL_S = 0.02


class ChildService:
    """`with ChildService("some.module", [...], log_path=...) as child:` then `child.ready`."""

    name = "child service"
    favoured = True  # a gateway-side service gets a larger share of a contended CPU (`favour`)

    def __init__(self, module: str, args: list[str], *, log_path: Path, env: dict[str, str] | None = None) -> None:
        self._module = module
        self._args = args
        self._log_path = log_path
        self._env = env
        self._process: subprocess.Popen[str] | None = None
        self.ready: dict[str, Any] = {}

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def process(self) -> subprocess.Popen[str]:
        if self._process is None:
            raise BackendError(f"the {self.name} is not running")
        return self._process

    def log_text(self) -> str:
        """What the stub wrote to stderr so far: its console log."""
        return self._log_path.read_text(encoding="utf-8")

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def ended(self) -> str | None:
        """None while the child runs; else how it ended ("exited with exit code 1", "… with signal SIGKILL")."""
        code = None if self._process is None else self._process.poll()
        return None if code is None else f"exited with {exit_status(code)}"

    def start(self) -> None:
        self._log_path.parent.mkdir(parents=True, exist_ok=True)
        with self._log_path.open("w", encoding="utf-8") as log_file, signals_held():
            self._process = subprocess.Popen(
                [sys.executable, "-m", self._module, *self._args],
                stdout=subprocess.PIPE,
                stderr=log_file,
                stdin=subprocess.DEVNULL,
                text=True,
                env={**os.environ, **(self._env or {})},
                start_new_session=True,
                preexec_fn=prepare_child,
            )
        try:
            if self.favoured:
                favour(self._process.pid)
            self.ready = self._read_ready_line()
        except BaseException:
            self.stop()
            raise

    def _read_ready_line(self) -> dict[str, Any]:
        """The child's first stdout line, polled without blocking: a selector under gevent arms a Timeout per
        wait, and a Ctrl-C landing as one fired left it pending for the teardown's own wait (1 in 80 runs
        interrupted in start-up beside a busy loop ended in a gevent.Timeout traceback)."""
        assert self._process is not None and self._process.stdout is not None
        stdout = self._process.stdout.fileno()
        os.set_blocking(stdout, False)
        received = b""
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                chunk = os.read(stdout, 65536)
            except BlockingIOError:
                chunk = None
            if chunk == b"":
                break  # EOF: the child exited
            received += chunk or b""
            if b"\n" in received:
                ready: dict[str, Any] = json.loads(received.split(b"\n", 1)[0])
                return ready
            if self._process.poll() is not None:
                break
            time.sleep(READY_POLL_S)
        code = self._process.poll()
        tail = self._log_tail()
        if code is None:
            raise BackendError(f"{self.name} not ready after {READY_TIMEOUT_S:g} s; log: {tail}")
        raise BackendError(f"{self.name} exited with code {code} before it was ready: {tail}")

    def _log_tail(self) -> str:
        try:
            lines = self._log_path.read_text(encoding="utf-8").strip().splitlines()
        except OSError:
            return "(no log)"
        return lines[-1] if lines else "(empty log)"

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        """Stop the stub with `sig` (SIGKILL after a grace period); its exit code, None if never started."""
        process, self._process = self._process, None
        if process is None:
            return None
        end_processes([process], sig)
        if process.stdout is not None:
            process.stdout.close()
        return process.returncode



class EmbeddedStub(ChildService):
    """`with EmbeddedStub(["--profile", "april-2026"], log_path=...) as stub:` then `stub.url`."""

    name = "gateway stub"

    def __init__(self, stub_args: list[str], *, log_path: Path, env: dict[str, str] | None = None) -> None:
        super().__init__("gateway_stub", ["--host", "127.0.0.1", "--port", "0", *stub_args], log_path=log_path,
                         env=env)

    @property
    def url(self) -> str:
        return str(self.ready["url"])

    @property
    def http_url(self) -> str:
        return str(self.ready["http"])

    @property
    def token(self) -> str:
        return str(self.ready["token"])

    def stats(self, timeout_s: float = 5.0, *, collect: bool = False) -> dict[str, Any]:
        """The stub's /stats (with `collect`, after a full garbage collection: its live heap comparable)."""
        with urllib.request.urlopen(self.http_url + ("stats?collect=1" if collect else "stats"),
                                    timeout=timeout_s) as response:
            stats: dict[str, Any] = json.loads(response.read())
            return stats


PR_SET_PDEATHSIG = 1
# The scheduling weight of a service's own session (Linux autogroup): -10 is about nine times a normal
# session's share of a contended CPU. See `favour`.
FAVOURED_AUTOGROUP_NICE = -10


def favour(pid: int) -> bool:
    """Give the service's session a larger share of a contended CPU; True if the host allowed it (root).

    The gateway stub's handshake cost is time burned on its event loop in small slices; when other work on the
    host takes its CPU between slices, every handshake takes longer than the modelled cost and the host becomes
    part of the experiment. Each service runs in a session of its own, and with autogroup scheduling (the
    default on Linux desktops and servers) CPU is shared fairly between sessions whatever a process's nice
    value: so the weight is raised on the session (`/proc/<pid>/autogroup`), which ends with the service.
    Measured: matrix-11's `shipped` stub waited 31% of the run for a CPU beside one busy loop, 1% when favoured.
    `HARNESS_FAVOUR_SERVICES=0` turns it off.
    """
    if os.environ.get("HARNESS_FAVOUR_SERVICES", "1") == "0":
        return False
    try:
        Path(f"/proc/{pid}/autogroup").write_text(str(FAVOURED_AUTOGROUP_NICE), encoding="ascii")
    except OSError:
        return False  # not root, or no autogroup: the host figures will show what that cost
    return True


def exit_status(code: int) -> str:
    """A Popen return code in words: `exit code 3`, or `signal SIGKILL` for a negative one."""
    if code >= 0:
        return f"exit code {code}"
    try:
        return f"signal {signal.Signals(-code).name}"
    except ValueError:
        return f"signal {-code}"


def last_lines(text: str, count: int = 3) -> str:
    """The last `count` non-empty lines of a log, on one line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " | ".join(lines[-count:]) if lines else "(empty log)"


def prepare_child() -> None:
    """In a child before exec: take the signals `signals_held` blocked, and ask Linux for SIGTERM when the
    harness dies, so a crash leaves no service behind.

    Strictly, when the thread that started the child ends: every service is started from the main thread.
    """
    unblock_stop_signals()
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def end_processes(processes: list[subprocess.Popen[str]], sig: int = signal.SIGTERM, *, whole_group: bool = True,
                  grace_s: float = STOP_GRACE_S) -> None:
    """`sig` to each process still running (to its whole process group, or to the leader alone, which then stops
    its own children), and SIGKILL to the group of any still running `grace_s` later; back once all have ended."""
    running = [process for process in processes if process.poll() is None]
    for process in running:
        if whole_group:
            _signal_group(process, sig)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, sig)
    deadline = time.monotonic() + grace_s
    for process in running:
        try:
            process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _signal_group(process, signal.SIGKILL)
            process.wait()


def _signal_group(process: subprocess.Popen[str], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)
