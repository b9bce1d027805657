"""A real Matrix homeserver on loopback for real Matrix accounts: Synapse, started and stopped like the gateway.

    with SynapseHomeserver(bots=11, log_dir=run_folder) as homeserver:
        homeserver.url, homeserver.owner, homeserver.bots   # each a MatrixUser with its access token

Synapse (PyPI `matrix-synapse`, the project's extra `matrix`) runs as its own process, `python -m
synapse.app.homeserver`, in a session of its own, on 127.0.0.1 and a free port, with SQLite and every file in a
private folder (removed at the end, and by a later harness if this one dies). The harness writes its
configuration itself: the client API only (no federation listener, no federation, no key servers, no presence,
no URL previews, no registration but the shared-secret admin API, rate limits out of the way of many bots,
cheap password hashing); its console goes to `log_dir/synapse.log`. Once `/_matrix/client/versions` answers,
an owner (an admin) and the bots are registered through the shared-secret admin API, each with an access
token and a device. Its sockets are checked against loopback as the gateway's are. Stopping it sends SIGTERM
(it exits in about 2 s), SIGKILL after 15 s.
"""

from __future__ import annotations

import hashlib
import hmac
import importlib.metadata
import importlib.util
import json
import logging
import secrets
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import yaml

from harness.backends.embedded import prepare_child
from harness.backends.local_service import (
    LoopbackWatch,
    free_port,
    http_status,
    private_dir,
    remove_orphaned_dirs,
    session_pids,
    stop_service,
)
from harness.errors import BackendError, BadInput
from harness.stop_signals import signals_held

logger = logging.getLogger(__name__)

SERVER_NAME = "localhost"
READY_TIMEOUT_S = 90.0  # a first start creates its SQLite schema: about 6 s here, more on a busy machine
STOP_GRACE_S = 15.0
REQUEST_TIMEOUT_S = 30.0
MAX_BOTS = 500
OWNER = "owner"
PRIVATE_DIR_KIND = "synapse"
INSTALL_HINT = "pip install -e '.[matrix]'"
# Synapse's request rate limits, each set out of the way: many bots log in, join and send from one address.
UNLIMITED = {"per_second": 1000, "burst_count": 10000}
RATE_LIMITS: dict[str, Any] = {
    "rc_message": UNLIMITED,
    "rc_registration": UNLIMITED,
    "rc_login": {"address": UNLIMITED, "account": UNLIMITED, "failed_attempts": UNLIMITED},
    "rc_joins": {"local": UNLIMITED, "remote": UNLIMITED},
    "rc_joins_per_room": UNLIMITED,
    "rc_invites": {"per_room": UNLIMITED, "per_user": UNLIMITED, "per_issuer": UNLIMITED},
    "rc_room_creation": UNLIMITED,
    "rc_presence": {"per_user": UNLIMITED},
}


@dataclass(frozen=True)
class MatrixUser:
    user_id: str  # @localpart:localhost
    password: str
    access_token: str
    device_id: str

    @property
    def localpart(self) -> str:
        return self.user_id[1:].split(":", 1)[0]


def synapse_installed() -> bool:
    return importlib.util.find_spec("synapse") is not None


def homeserver_config(home: Path, port: int, shared_secret: str) -> dict[str, Any]:
    """Synapse's configuration: loopback, the client API only, SQLite and every file under `home`."""
    return {
        "server_name": SERVER_NAME,
        "public_baseurl": f"http://127.0.0.1:{port}/",
        "pid_file": str(home / "homeserver.pid"),
        "listeners": [{"port": port, "bind_addresses": ["127.0.0.1"], "type": "http", "tls": False,
                       "x_forwarded": False, "resources": [{"names": ["client"], "compress": False}]}],
        "database": {"name": "sqlite3", "args": {"database": str(home / "homeserver.db")}},
        "media_store_path": str(home / "media_store"),
        "signing_key_path": str(home / f"{SERVER_NAME}.signing.key"),
        "registration_shared_secret": shared_secret,
        "macaroon_secret_key": secrets.token_urlsafe(32),
        "form_secret": secrets.token_urlsafe(32),
        "report_stats": False,
        "enable_registration": False,
        "enable_metrics": False,
        "trusted_key_servers": [],
        "suppress_key_server_warning": True,
        "federation_domain_whitelist": [],
        "allow_public_rooms_over_federation": False,
        "url_preview_enabled": False,
        "presence": {"enabled": False},
        "bcrypt_rounds": 4,  # registration and login are paid in password hashing: 12 rounds take ~300 ms each
        **RATE_LIMITS,
    }


class SynapseHomeserver:
    """One Synapse on 127.0.0.1 with an owner and `bots` bot users; see the module's docstring."""

    def __init__(self, *, bots: int, log_dir: Path, ready_timeout_s: float = READY_TIMEOUT_S) -> None:
        if not 0 <= bots <= MAX_BOTS:
            raise BadInput(f"bots: expected 0 to {MAX_BOTS} Matrix bot users, got {bots}")
        self._bot_count = bots
        self._log_path = Path(log_dir) / "synapse.log"
        self._ready_timeout_s = ready_timeout_s
        self._process: subprocess.Popen[bytes] | None = None
        self._home: Path | None = None
        self._port = 0
        self._shared_secret = ""
        self.owner: MatrixUser | None = None
        self.bots: list[MatrixUser] = []
        self._loopback = LoopbackWatch("synapse")
        self.ready_after_s: float | None = None
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via an http_proxy

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    @property
    def version(self) -> str:
        """The installed matrix-synapse's version."""
        return importlib.metadata.version("matrix-synapse")

    @property
    def port(self) -> int:
        return self._port

    @property
    def log_path(self) -> Path:
        return self._log_path

    @property
    def home(self) -> Path | None:
        return self._home

    @property
    def pid(self) -> int:
        if self._process is None:
            raise BackendError("Synapse is not running")
        return self._process.pid

    def session_pids(self) -> list[int]:
        return [] if self._process is None else session_pids(self._process.pid)

    # start

    def start(self) -> None:
        if self._process is not None:
            raise BackendError("Synapse is already running")
        if not synapse_installed():
            raise BackendError(f"Synapse is not installed in {sys.prefix} (the extra `matrix`: {INSTALL_HINT})")
        remove_orphaned_dirs(PRIVATE_DIR_KIND)
        self._home = private_dir(PRIVATE_DIR_KIND)
        self._port = free_port()
        self._shared_secret = secrets.token_urlsafe(32)
        config = self._home / "homeserver.yaml"
        config.write_text(yaml.safe_dump(homeserver_config(self._home, self._port, self._shared_secret)),
                          encoding="utf-8")
        self._log_path.parent.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        try:
            self._generate_keys(config)
            with self._log_path.open("ab") as log_file, signals_held():
                self._process = subprocess.Popen(
                    [sys.executable, "-m", "synapse.app.homeserver", "--config-path", str(config)],
                    cwd=self._home, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    start_new_session=True, preexec_fn=prepare_child)
            logger.info("synapse: pid %d on %s (log: %s)", self._process.pid, self.url, self._log_path)
            self._wait_ready(started)
            self.ready_after_s = time.monotonic() - started
            self.check_loopback_only("once ready")
            self.owner = self.register(OWNER, admin=True)
            self.bots = [self.register(f"bot{n:03d}") for n in range(1, self._bot_count + 1)]
        except BaseException:
            self.stop()
            raise
        logger.info("synapse ready after %.1f s with %d bots", self.ready_after_s, len(self.bots))

    def _generate_keys(self, config: Path) -> None:
        """The server's signing key, made by Synapse itself (it exits once the missing key files exist)."""
        with self._log_path.open("ab") as log_file:
            result = subprocess.run([sys.executable, "-m", "synapse.app.homeserver", "--config-path", str(config),
                                     "--generate-keys"], cwd=self._home, stdout=log_file, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, timeout=self._ready_timeout_s, check=False)
        if result.returncode != 0:
            raise BackendError(f"Synapse could not make its signing key (exit {result.returncode}): "
                               f"{self._log_tail()} (log: {self._log_path})")

    def _wait_ready(self, started: float) -> None:
        assert self._process is not None
        deadline = started + self._ready_timeout_s
        while True:
            code = self._process.poll()
            if code is not None:
                raise BackendError(f"Synapse exited with code {code} before it was ready: {self._log_tail()} "
                                   f"(log: {self._log_path})")
            self.check_loopback_only("while starting")
            if http_status(self._opener, f"{self.url}/_matrix/client/versions") == 200:
                return
            if time.monotonic() > deadline:
                raise BackendError(f"Synapse not ready after {self._ready_timeout_s:g} s (no 200 from "
                                   f"/_matrix/client/versions): {self._log_tail()} (log: {self._log_path})")
            time.sleep(0.2)

    # users

    def register(self, localpart: str, *, admin: bool = False) -> MatrixUser:
        """A new user through the shared-secret admin API (HMAC-SHA1 over nonce, user, password, admin flag)."""
        password = secrets.token_urlsafe(16)
        nonce = self.call("GET", "/_synapse/admin/v1/register")["nonce"]
        mac = hmac.new(self._shared_secret.encode(), digestmod=hashlib.sha1)
        mac.update(b"\x00".join([nonce.encode(), localpart.encode(), password.encode(),
                                 b"admin" if admin else b"notadmin"]))
        answer = self.call("POST", "/_synapse/admin/v1/register", {
            "nonce": nonce, "username": localpart, "password": password, "admin": admin, "mac": mac.hexdigest()})
        return MatrixUser(answer["user_id"], password, answer["access_token"], answer["device_id"])

    def call(self, method: str, path: str, body: dict[str, Any] | None = None,
             token: str | None = None) -> dict[str, Any]:
        """One request to the client or admin API; its JSON answer. An error answer is a BackendError naming it."""
        request = urllib.request.Request(f"{self.url}{path}", method=method,
                                         data=None if body is None else json.dumps(body).encode())
        request.add_header("Content-Type", "application/json")
        if token is not None:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with self._opener.open(request, timeout=REQUEST_TIMEOUT_S) as response:
                answer: dict[str, Any] = json.loads(response.read() or b"{}")
                return answer
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", "replace").strip()
            raise BackendError(f"Synapse answered {method} {path} with {exc.code}: {detail[:300]}") from None
        except (OSError, ValueError) as exc:
            raise BackendError(f"Synapse did not answer {method} {path}: {exc}") from None

    # loopback

    def check_loopback_only(self, when: str) -> list[str]:
        """Sockets beyond loopback in Synapse's session now (none are expected); warned about and kept."""
        return [] if self._process is None else self._loopback.check(self._process.pid, when)

    @property
    def external_sockets(self) -> list[str]:
        return self._loopback.found

    def log_text(self) -> str:
        try:
            return self._log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def _log_tail(self) -> str:
        lines = [line.strip() for line in self.log_text().splitlines() if line.strip()]
        return lines[-1] if lines else "(empty log)"

    # stop

    def stop(self) -> int | None:
        """SIGTERM to Synapse's group, SIGKILL after 15 s, nothing of its session left; its folder removed.
        Its exit code (None if it was not running)."""
        process, self._process = self._process, None
        try:
            return None if process is None else stop_service(process, STOP_GRACE_S, "synapse", self._loopback)[0]
        finally:
            if self._home is not None:
                shutil.rmtree(self._home, ignore_errors=True)
                self._home = None
