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
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

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
    STOP_GRACE_S,
    cache_root,
    ensure_node,
    ensure_openclaw,
    install_lock,
    path_with,
)
from harness.errors import BackendError
from harness.stop_signals import signals_held

logger = logging.getLogger(__name__)

STAGE_FOLDER = "matrix-runtime-deps"
STAGED_MARKER = ".harness-matrix-staged"
BUNDLED_CHANNEL = Path("node_modules") / "openclaw" / "dist" / "extensions" / "matrix"
# What the channel imports that the npm package does not bring (its package.json's dependencies).
REQUIRED_PACKAGES = ("matrix-js-sdk", "fake-indexeddb", "music-metadata")
PRIVATE_DIR_KIND = "openclaw-matrix-stage"


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
