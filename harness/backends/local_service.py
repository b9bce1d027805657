"""A local service the harness starts for a run (the real gateway, a Matrix homeserver) and must stop whole.

Each runs in a session of its own (`start_new_session`), so everything it spawns is found by session id, and
stopped together: SIGTERM to the group, SIGKILL after a grace period, then whatever of the session is left.
Its sockets are checked against loopback from /proc (the harness sends load to loopback only, and a service it
starts must not reach beyond it either). Linux only, as the services are.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path

logger = logging.getLogger(__name__)


def session_pids(session_id: int) -> list[int]:
    """The live (non-zombie) processes whose session id is `session_id`."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()  # after "pid (comm) ": state ppid pgrp session ...
        if len(fields) > 3 and fields[0] != "Z" and int(fields[3]) == session_id:
            pids.append(int(entry.name))
    return sorted(pids)


def _socket_inodes(pids: Iterable[int]) -> dict[int, int]:
    inodes: dict[int, int] = {}
    for pid in pids:
        fd_dir = Path(f"/proc/{pid}/fd")
        try:
            fds = list(fd_dir.iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes[int(target[8:-1])] = pid
    return inodes


def _parse_address(text: str) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]:
    host, port = text.split(":")
    raw = bytes.fromhex(host)
    # /proc/net prints each 32-bit word of the address in host (little-endian) order.
    raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    address = ipaddress.ip_address(raw)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped, int(port, 16)
    return address, int(port, 16)


def _is_local(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return address.is_loopback


_TCP_STATES = {"01": "ESTABLISHED", "02": "SYN_SENT", "03": "SYN_RECV", "04": "FIN_WAIT1", "05": "FIN_WAIT2",
               "06": "TIME_WAIT", "07": "CLOSE", "08": "CLOSE_WAIT", "09": "LAST_ACK", "0A": "LISTEN",
               "0B": "CLOSING"}


def non_loopback_sockets(session_id: int) -> list[str]:
    """Sockets of the session's processes connected to, or listening on, a non-loopback address.

    Read from `/proc/<pid>/net/{tcp,tcp6,udp,udp6}` (the tables of the session leader's network namespace),
    matched to the processes by socket inode. Empty when everything is on loopback.
    """
    pids = session_pids(session_id)
    if not pids:
        return []
    inodes = _socket_inodes(pids)
    findings = []
    for proto in ("tcp", "tcp6", "udp", "udp6"):
        try:
            lines = Path(f"/proc/{pids[0]}/net/{proto}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or int(fields[9]) not in inodes:
                continue
            (local, local_port), (remote, remote_port) = _parse_address(fields[1]), _parse_address(fields[2])
            if proto.startswith("tcp"):
                state = _TCP_STATES.get(fields[3], fields[3])
            else:
                state = "BOUND" if remote.is_unspecified else "CONNECTED"
            if state in ("LISTEN", "BOUND"):
                external = not _is_local(local)  # reachable beyond loopback
            else:
                external = not remote.is_unspecified and not _is_local(remote)
            if external:
                findings.append(f"{proto} {local}:{local_port} -> {remote}:{remote_port} {state} "
                                f"(pid {inodes[int(fields[9])]})")
    return findings


def http_status(opener: urllib.request.OpenerDirector, url: str) -> int | None:
    try:
        with opener.open(url, timeout=2.0) as response:
            status: int = response.status
            return status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (OSError, ValueError):
        return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def kill_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def stop_group(process: subprocess.Popen[bytes], grace_s: float, name: str) -> tuple[int, bool]:
    """SIGTERM to the process's group, SIGKILL after `grace_s`: its exit code, and whether it had to be killed."""
    if process.poll() is not None:
        return process.returncode, False
    kill_group(process.pid, signal.SIGTERM)
    try:
        return process.wait(grace_s), False
    except subprocess.TimeoutExpired:
        logger.warning("%s did not stop %g s after SIGTERM; killing it", name, grace_s)
        kill_group(process.pid, signal.SIGKILL)
        return process.wait(), True


def stop_service(process: subprocess.Popen[bytes], grace_s: float, name: str,
                 loopback: LoopbackWatch | None = None) -> tuple[int, bool]:
    """Stop a service whole: its sockets checked a last time, SIGTERM to its group, SIGKILL after `grace_s`, and
    whatever is left of its session killed; interrupted (Ctrl-C), SIGKILL at once. Its exit code, and whether it
    had to be killed."""
    try:
        if loopback is not None and process.poll() is None:
            with contextlib.suppress(OSError):
                loopback.check(process.pid, "before stop")
        code, killed = stop_group(process, grace_s, name)
        reap_session(process.pid, name)
        return code, killed
    except BaseException:
        kill_group(process.pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            process.wait(5)
        raise


def reap_session(session_id: int, name: str) -> None:
    """Children may outlive the leader briefly; SIGKILL whatever of the session is left after 2 s."""
    deadline = time.monotonic() + 2.0
    while session_pids(session_id) and time.monotonic() < deadline:
        time.sleep(0.05)
    leftovers = session_pids(session_id)
    if leftovers:
        logger.warning("%s left processes %s; killing them", name, leftovers)
        kill_group(session_id, signal.SIGKILL)
        for pid in leftovers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5.0
        while session_pids(session_id) and time.monotonic() < deadline:
            time.sleep(0.05)


def private_dir(kind: str) -> Path:
    """A private folder for one service (its HOME, its data), named after this process so that a later harness
    can remove it if this one dies without stopping the service (`remove_orphaned_dirs`)."""
    return Path(tempfile.mkdtemp(prefix=f"{kind}-home-{os.getpid()}-"))


_PRIVATE_DIR_OWNER = re.compile(r"-home-(\d+)-[^-]+$")


def remove_orphaned_dirs(kinds: str) -> None:
    """Remove the private folders (`kinds`: a glob, `openclaw-*` for every version's) of harness processes that
    died without stopping their service (SIGKILL, a crash); the services themselves got SIGTERM from the
    kernel (`prepare_child`)."""
    for folder in Path(tempfile.gettempdir()).glob(f"{kinds}-home-*"):
        owner = _PRIVATE_DIR_OWNER.search(folder.name)
        if owner is not None and not Path(f"/proc/{owner.group(1)}").exists():
            shutil.rmtree(folder, ignore_errors=True)


class LoopbackWatch:
    """What a service's session was found connected to, or listening on, beyond loopback: each socket kept once
    (`found`) and logged as a warning when first seen. Checking is sampling: a socket that lives between two
    checks is missed."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.found: list[str] = []
        self._lock = threading.Lock()  # the gateway's watch thread and its starter both record

    def check(self, session_id: int, when: str) -> list[str]:
        """The session's sockets beyond loopback now, recorded."""
        findings = non_loopback_sockets(session_id)
        with self._lock:
            for finding in findings:
                if finding not in self.found:
                    self.found.append(finding)
                    logger.warning("%s has a non-loopback socket %s: %s", self.name, when, finding)
        return findings
