"""The real gateway's own Matrix channel: its runtime dependencies, staged once per version at install time.

OpenClaw 2026.4.x bundles its Matrix channel (`dist/extensions/matrix`) without the packages it needs
(matrix-js-sdk, the Matrix crypto bindings, fake-indexeddb, music-metadata, ...): a gateway with a Matrix account
enabled installs them with npm as it starts, into `OPENCLAW_PLUGIN_STAGE_DIR`. A run never reaches a registry
(the launcher blocks npm and every proxy), so `harness openclaw-install --matrix` lets the gateway stage them
itself, once, with npm online: it starts the version with one Matrix account enabled (on a homeserver address
where nothing listens), waits until it is ready, checks that the channel's packages are in place, and stops
it. Runs with Matrix accounts then point `OPENCLAW_PLUGIN_STAGE_DIR` at that folder (`stage_dir`). The other
plugins enabled by default are staged beside them, as on any online install.

From 2026.5 the channel is a separate npm package (`@openclaw/matrix`), not staged here yet.

`open_inprocess(target, out_dir)` runs a target's in-process accounts (`inprocess: true`): a local Synapse with a
bot user per account, and the gateway configured as openclaw#70641 describes, every account on that homeserver
with the owner in `dm.allowFrom` (`matrix_accounts_config`); the native-approvals handlers then start inside the
gateway and connect to it over loopback. The channel must have been staged at install time: a run never stages.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from harness.backends.embedded import prepare_child
from harness.backends.local_service import (
    free_port,
    http_status,
    private_dir,
    remove_orphaned_dirs,
    stop_service,
)
from harness.backends.openclaw import (
    ENTRY,
    NPM_INSTALL_TIMEOUT_S,
    READY_TIMEOUT_S,
    STOP_GRACE_S,
    OpenClawBackend,
    OpenClawGateway,
    cache_root,
    ensure_node,
    ensure_openclaw,
    install_lock,
    path_with,
)
from harness.backends.synapse import MatrixUser, SynapseHomeserver
from harness.errors import BackendError
from harness.stop_signals import signals_held
from harness.target import OpenClawTarget

logger = logging.getLogger(__name__)

STAGE_FOLDER = "matrix-runtime-deps"
STAGED_MARKER = ".harness-matrix-staged"
BUNDLED_CHANNEL = Path("node_modules") / "openclaw" / "dist" / "extensions" / "matrix"
# What the channel imports that the npm package does not bring (its package.json's dependencies).
REQUIRED_PACKAGES = ("matrix-js-sdk", "fake-indexeddb", "music-metadata")
PRIVATE_DIR_KIND = "openclaw-matrix-stage"
MAX_READY_TIMEOUT_S = 1800.0  # a gateway throttled from launch starts slowly: about 3 minutes at 0.04 of a core


def stage_dir(version: str) -> Path:
    """Beside the version's install, never inside it: the gateway's npm walks up from where it installs to the
    nearest package.json, and inside it would install into the version's own folder (it did: `npm install`
    there moved a caret-pinned openclaw 2026.4.24 to 2026.9.6)."""
    return cache_root() / f"{version}.{STAGE_FOLDER}"


def matrix_channel_staged(version: str) -> bool:
    return (stage_dir(version) / STAGED_MARKER).is_file()


def bundles_matrix_channel(version: str) -> bool:
    """The installed `version` carries the Matrix channel in its own package (the 2026.4.x releases)."""
    return (ensure_openclaw(version) / BUNDLED_CHANNEL).is_dir()


def ensure_matrix_channel(version: str) -> Path:
    """The folder holding the Matrix channel's runtime dependencies for `version` (staged once; see above)."""
    stage = stage_dir(version)
    if (stage / STAGED_MARKER).is_file():
        return stage
    project = next((folder for folder in stage.parents if (folder / "package.json").is_file()), None)
    if project is not None:
        raise BackendError(f"cannot stage the Matrix channel in {stage}: npm would install into the project at "
                           f"{project} (set HARNESS_CACHE_DIR outside it)")
    install_dir = ensure_openclaw(version)
    if not bundles_matrix_channel(version):
        raise BackendError(f"openclaw {version} does not bundle the Matrix channel (from 2026.5 it is the npm "
                           f"package @openclaw/matrix, which the harness does not install yet)")
    with install_lock(cache_root(), f"{version}.matrix"):
        if (stage / STAGED_MARKER).is_file():  # another process staged it while we waited
            return stage
        log_path = cache_root() / f"{version}.matrix-stage.log"
        logger.info("staging the Matrix channel's dependencies of openclaw %s into %s (console: %s)", version,
                    stage, log_path)
        started = time.monotonic()
        _stage_with_the_gateway(version, install_dir, stage, log_path)
        missing = [name for name in REQUIRED_PACKAGES if not _staged(stage, name)]
        if missing:
            raise BackendError(f"openclaw {version} started but did not stage {', '.join(missing)} for its Matrix "
                               f"channel (console: {log_path})")
        (stage / STAGED_MARKER).write_text(json.dumps({"version": version}) + "\n", encoding="utf-8")
        logger.info("staged the Matrix channel of openclaw %s in %.1f s", version, time.monotonic() - started)
    return stage


def _staged(stage: Path, package: str) -> bool:
    return any(stage.glob(f"*/node_modules/{package}/package.json"))


def _stage_with_the_gateway(version: str, install_dir: Path, stage: Path, log_path: Path) -> None:
    """Start the gateway once with a Matrix account enabled and npm online; stop it once it is ready."""
    node = ensure_node()
    remove_orphaned_dirs(PRIVATE_DIR_KIND)
    home = private_dir(PRIVATE_DIR_KIND)
    state = home / ".openclaw"
    state.mkdir()
    (state / "openclaw.json").write_text(json.dumps(_staging_config()) + "\n", encoding="utf-8")
    port = free_port()
    env = {key: value for key, value in os.environ.items()
           if not key.upper().startswith(("OPENCLAW_", "NPM_CONFIG_"))}
    env.update({"PATH": path_with(node.parent), "HOME": str(home), "OPENCLAW_STATE_DIR": str(state),
                "OPENCLAW_CONFIG_PATH": str(state / "openclaw.json"), "OPENCLAW_PLUGIN_STAGE_DIR": str(stage),
                "OPENCLAW_DISABLE_BONJOUR": "1", "OPENCLAW_NO_RESPAWN": "1", "OPENCLAW_TELEMETRY": "0",
                "OPENCLAW_GATEWAY_TOKEN": secrets.token_urlsafe(24), "npm_config_update_notifier": "false"})
    command = [str(node), str(ENTRY), "gateway", "run", "--port", str(port), "--bind", "loopback", "--auth", "token",
               "--allow-unconfigured"]
    process: subprocess.Popen[bytes] | None = None
    try:
        with log_path.open("wb") as console, signals_held():
            process = subprocess.Popen(command, cwd=install_dir, env=env, stdout=console, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=prepare_child)
        _wait_ready(process, port, log_path)
    finally:
        if process is not None:
            stop_service(process, STOP_GRACE_S, f"openclaw {version} (staging)")
        shutil.rmtree(home, ignore_errors=True)


def _wait_ready(process: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + NPM_INSTALL_TIMEOUT_S
    while http_status(opener, f"http://127.0.0.1:{port}/readyz") != 200:
        if process.poll() is not None:
            raise BackendError(f"the gateway exited with code {process.returncode} while staging its Matrix "
                               f"channel (console: {log_path})")
        if time.monotonic() > deadline:
            raise BackendError(f"the gateway was not ready {NPM_INSTALL_TIMEOUT_S:g} s into staging its Matrix "
                               f"channel (console: {log_path})")
        time.sleep(0.5)


def _staging_config() -> dict[str, object]:
    """One Matrix account, enabled, on a homeserver address where nothing listens: enough for the gateway to
    stage the channel's dependencies; it never logs in."""
    return {"channels": {"matrix": {"enabled": True, "defaultAccount": "staging", "accounts": {"staging": {
        "homeserver": "http://127.0.0.1:9", "network": {"dangerouslyAllowPrivateNetwork": True},
        "userId": "@staging:localhost", "accessToken": "staging", "deviceId": "STAGING", "encryption": False}}}}}


def matrix_accounts_config(homeserver_url: str, owner: MatrixUser, bots: list[MatrixUser], *,
                           exec_approvals: bool) -> dict[str, Any]:
    """The gateway's openclaw.json for Matrix accounts as in openclaw#70641: each bot an account on the homeserver,
    the owner the one allowed DM sender (whom the native-approvals handler falls back to as approver).

    `execApprovals.enabled` is written out: unset, 2026.4.24 logged `[matrix] disabled` and started no handler
    here (measured), where the report's install (execApprovals unset) ran them; `true` is what it ran.
    """
    accounts = {bot.localpart: {
        "homeserver": homeserver_url, "network": {"dangerouslyAllowPrivateNetwork": True},  # a loopback homeserver
        "userId": bot.user_id, "accessToken": bot.access_token, "deviceId": bot.device_id,
        "encryption": False,  # the crypto bindings' install script downloads from GitHub: not reachable here
        "autoJoin": "always", "dm": {"policy": "allowlist", "allowFrom": [owner.user_id]},
        "execApprovals": {"enabled": exec_approvals},
    } for bot in bots}
    return {"channels": {"matrix": {"enabled": True, "defaultAccount": bots[0].localpart, "accounts": accounts}}}


def staged_matrix_channel(version: str) -> Path:
    """The staged Matrix channel of `version`; a run never stages it (it would need npm online)."""
    if not matrix_channel_staged(version):
        raise BackendError(f"the Matrix channel of openclaw {version} is not staged: run `harness openclaw-install "
                           f"{version} --matrix` once (it needs the npm registry), then run again")
    return stage_dir(version)


class InProcessBackend(OpenClawBackend):
    """The real gateway running its own Matrix accounts' handlers, and the homeserver they are on."""

    def __init__(self, target: OpenClawTarget, gateway: OpenClawGateway, homeserver: SynapseHomeserver) -> None:
        super().__init__(target, gateway)
        self.homeserver = homeserver

    @property
    def gateway(self) -> OpenClawGateway:
        return self._gateway

    @property
    def target(self) -> OpenClawTarget:
        return self._target

    @property
    def account_names(self) -> list[str]:
        return [bot.localpart for bot in self.homeserver.bots]


HomeserverLink = Callable[[str], contextlib.AbstractContextManager[str]]


@contextlib.contextmanager
def open_inprocess(target: OpenClawTarget, out_dir: Path, link: HomeserverLink | None = None,
                   ) -> Iterator[InProcessBackend]:
    """Synapse with one bot per account, then the gateway with those accounts; both stopped on exit. `link`, given
    the homeserver's URL, yields the URL the gateway is to use instead (a proxy in between)."""
    stage = staged_matrix_channel(target.version)
    ready_timeout_s = READY_TIMEOUT_S
    if target.cpu_quota is not None and target.cpu_quota_from == "launch":
        ready_timeout_s = min(MAX_READY_TIMEOUT_S, READY_TIMEOUT_S / min(1.0, target.cpu_quota * 10))
    with contextlib.ExitStack() as stack:
        homeserver = stack.enter_context(SynapseHomeserver(bots=target.matrix_accounts, log_dir=out_dir))
        assert homeserver.owner is not None
        homeserver_url = stack.enter_context(link(homeserver.url)) if link else homeserver.url
        config = matrix_accounts_config(homeserver_url, homeserver.owner, homeserver.bots,
                                        exec_approvals=target.exec_approvals)
        with OpenClawGateway(target.version, handshake_timeout_ms=target.handshake_timeout_ms,
                             max_preauth_per_ip=target.max_preauth_per_ip, cpu_quota=target.cpu_quota,
                             cpu_quota_from=target.cpu_quota_from, log_dir=out_dir, config=config,
                             plugin_stage_dir=stage, ready_timeout_s=ready_timeout_s) as gateway:
            yield InProcessBackend(target, gateway, homeserver)
