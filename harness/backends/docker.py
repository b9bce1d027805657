"""The Docker backend: the gateway stub, and a Toxiproxy beside it, in throwaway containers via Testcontainers.

`DockerGateway` builds the stub's image from this checkout (the Dockerfile at its root, FROM the base image
of `harness.backends.base_image`; the build context is made in memory, so no directory is left behind),
creates a Docker network, and starts the stub on it under the alias `gateway`, its port published on
127.0.0.1 and its JSON log written into the run's folder (a bind mount), ready when `/healthz` answers.
`gateway.toxiproxy(...)` starts Toxiproxy on the same network: the pinned `ghcr.io/shopify/toxiproxy` image,
or, when that cannot be pulled, the project's embedded Toxiproxy-compatible proxy in the stub's image (a
warning line says so, and summary.json records it), ready when `/version` answers. The proxy listens on a
published port and dials the stub by its alias. On exit (also on Ctrl-C) each container is stopped (SIGTERM,
then SIGKILL), its log copied into the run's folder, and the containers and the network are removed.

Inside each container a service still binds loopback only and sees its clients on 127.0.0.1: the image's
entrypoint, `harness.backends.loopback_bridge`, forwards the container's ports to it.

Testcontainers' environment defaults are set here before it is imported, unless already set:
`TESTCONTAINERS_RYUK_DISABLED=true` (the Ryuk reaper is an image to pull, and this module removes what it
started itself), `TESTCONTAINERS_CONNECTION_MODE=docker_host` and `TC_HOST=127.0.0.1` (published ports are
bound to 127.0.0.1; inside a container-like host, a `/.dockerenv`, Testcontainers would otherwise reach them
by a bridge or gateway address, which is not loopback).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import secrets
import subprocess
import sys
import tarfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from harness.backends.base_image import resolve_base_image
from harness.backends.docker_daemon import docker_client, first_line
from harness.backends.embedded import exit_status
from harness.errors import BackendError
from harness.target import require_loopback_url

if TYPE_CHECKING:
    from docker import DockerClient
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.network import Network

SOURCE_ROOT = Path(__file__).resolve().parents[2]
STUB_IMAGE_REPOSITORY = "gateway-storm-harness/stub"
# Toxiproxy 2.12.0: the release whose API the embedded proxy follows (harness/faults/embedded_proxy/).
TOXIPROXY_IMAGE = "ghcr.io/shopify/toxiproxy:2.12.0"
GATEWAY_ALIAS = "gateway"
GATEWAY_PORT = 18789  # the stub's container port (the bridge; published)
STUB_LOOPBACK_PORT = 18790  # the stub itself, on its container's loopback
TOXIPROXY_API_PORT = 8474  # published
FAULT_PROXY_PORT = 18791  # the Toxiproxy proxy in front of the gateway (published)
EMBEDDED_API_PORT, EMBEDDED_PROXY_PORT = 8475, 18792  # the embedded proxy itself, on its container's loopback
RESULTS_MOUNT = "/results"  # the run's folder, inside the stub's container
READY_TIMEOUT_S = 60
READY_LINE = r'"event": ?"ready"'
BUILD_TIMEOUT_S = 900
STOP_GRACE_S = 5
LABEL = "gateway-storm-harness.out-dir"  # on every container and network: the run folder they belong to
BRIDGE = ["python", "-m", "harness.backends.loopback_bridge"]

_built_images: dict[str, str] = {}  # base image -> stub image, once per process
_toxiproxy_unavailable: list[str] = []  # why the pinned Toxiproxy image could not be had, once per process


@dataclass(frozen=True)
class ContainerToxiproxy:
    """A Toxiproxy server in a container, and the addresses to give it for the proxy in front of the gateway."""

    api_url: str
    backend: str  # "toxiproxy" or "embedded"
    image: str
    fallback: str | None  # why the pinned Toxiproxy image was not used
    listen: str  # the proxy's listen address, inside the container
    upstream: str  # the gateway, as the Toxiproxy server dials it
    client_url: str  # the proxy, as the harness's clients reach it


class DockerGateway:
    """`with DockerGateway(stub_args, out_dir) as gateway:` then `gateway.url`, `.token`, `.stats()`."""

    name = "gateway stub container"

    def __init__(self, stub_args: list[str], out_dir: Path) -> None:
        self._stub_args = stub_args
        self._out_dir = out_dir.resolve()
        self._stack = contextlib.ExitStack()
        self._client: DockerClient | None = None
        self._network: Network | None = None
        self.image = ""
        self.base_image = ""
        self.token = secrets.token_hex(16)
        self.url = ""
        self.http_url = ""
        self.toxiproxy_started: ContainerToxiproxy | None = None
        self._stub: DockerContainer | None = None

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self._client = docker_client()  # first: it sets Testcontainers' environment before its import

        from testcontainers.core.network import Network

        self._out_dir.mkdir(parents=True, exist_ok=True)
        self.base_image = resolve_base_image(self._client)
        self.image = build_stub_image(self._client, self.base_image)
        self._network = Network(docker_network_kw={"labels": self._labels()})
        self._network.create()
        self._stack.callback(self._network.remove)
        stub_command = [*BRIDGE, "--forward", f"0.0.0.0:{GATEWAY_PORT}=127.0.0.1:{STUB_LOOPBACK_PORT}", "--",
                        "python", "-m", "gateway_stub", "--host", "127.0.0.1", "--port", str(STUB_LOOPBACK_PORT),
                        "--token", self.token, "--log-file", f"{RESULTS_MOUNT}/stub.jsonl", *self._stub_args]
        stub = self._stub = self._container(self.image, stub_command, "stub", [GATEWAY_PORT], [GATEWAY_ALIAS])
        stub.with_volume_mapping(str(self._out_dir), RESULTS_MOUNT, "rw")
        self._start(stub, self._out_dir / "stub.log", GATEWAY_PORT, "/healthz", ready_line=True)
        port = stub.get_exposed_port(GATEWAY_PORT)
        self.url = require_loopback_url(f"ws://{stub.get_container_host_ip()}:{port}/", "TC_HOST")
        self.http_url = f"http://{stub.get_container_host_ip()}:{port}/"

    def stop(self) -> None:
        self._stack.close()
        self._stub = None

    def _state(self) -> dict[str, Any]:
        import docker.errors

        if self._stub is None:
            return {}
        try:
            wrapped = self._stub.get_wrapped_container()
            wrapped.reload()
            state: dict[str, Any] = wrapped.attrs.get("State") or {}
            return state
        except (docker.errors.DockerException, ValueError, AttributeError):
            return {"Status": "gone"}

    @property
    def pid(self) -> int | None:
        """The stub container's first process on this machine (the loopback bridge; the stub is its child)."""
        pid = self._state().get("Pid")
        return int(pid) if pid else None

    def ended(self) -> str | None:
        """None while the stub's container runs; else how it ended."""
        state = self._state()
        if not state or state.get("Status") == "running":
            return None
        if state.get("Status") == "exited":
            return f"exited with {exit_status(int(state.get('ExitCode') or 0))}"
        return f"is {state.get('Status')}"

    def log_text(self) -> str:
        import docker.errors

        try:
            return self._stub.get_wrapped_container().logs().decode(errors="replace") if self._stub else ""
        except (docker.errors.DockerException, ValueError, AttributeError):
            return ""
        if self._client is not None:
            self._client.close()
            self._client = None

    def stats(self, timeout_s: float = 5.0, *, collect: bool = False) -> dict[str, Any]:
        """The stub's /stats (with `collect`, after a full garbage collection: its live heap comparable)."""
        with urllib.request.urlopen(self.http_url + ("stats?collect=1" if collect else "stats"),
                                    timeout=timeout_s) as response:
            stats: dict[str, Any] = json.loads(response.read())
            return stats

    @contextlib.contextmanager
    def toxiproxy(self, log_path: Path) -> Iterator[ContainerToxiproxy]:
        """Toxiproxy on the gateway's network: the pinned image, else (loudly) the embedded proxy's."""
        assert self._client is not None, "the gateway is not running"
        fallback = _pull_toxiproxy(self._client)
        if fallback is None:
            command = ["-host=0.0.0.0"]
            image, backend = TOXIPROXY_IMAGE, "toxiproxy"
            listen, upstream = f"0.0.0.0:{FAULT_PROXY_PORT}", f"{GATEWAY_ALIAS}:{GATEWAY_PORT}"
        else:
            print(f"harness: warning: cannot pull {TOXIPROXY_IMAGE} ({fallback}); falling back to the embedded "
                  f"Toxiproxy-compatible proxy in {self.image}", file=sys.stderr)
            command = [*BRIDGE, "--forward", f"0.0.0.0:{TOXIPROXY_API_PORT}=127.0.0.1:{EMBEDDED_API_PORT}",
                       "--forward", f"0.0.0.0:{FAULT_PROXY_PORT}=127.0.0.1:{EMBEDDED_PROXY_PORT}",
                       "--forward", f"127.0.0.1:{GATEWAY_PORT}={GATEWAY_ALIAS}:{GATEWAY_PORT}", "--",
                       "python", "-m", "harness.faults.embedded_proxy", "--host", "127.0.0.1",
                       "--port", str(EMBEDDED_API_PORT)]
            image, backend = self.image, "embedded"
            listen, upstream = f"127.0.0.1:{EMBEDDED_PROXY_PORT}", f"127.0.0.1:{GATEWAY_PORT}"
        with contextlib.ExitStack() as stack:
            container = self._container(image, command, "toxiproxy", [TOXIPROXY_API_PORT, FAULT_PROXY_PORT], [])
            self._start(container, log_path, TOXIPROXY_API_PORT, "/version", ready_line=fallback is not None,
                        stack=stack)
            host = container.get_container_host_ip()
            started = ContainerToxiproxy(
                api_url=f"http://{host}:{container.get_exposed_port(TOXIPROXY_API_PORT)}", backend=backend,
                image=image, fallback=fallback, listen=listen, upstream=upstream,
                client_url=f"ws://{host}:{container.get_exposed_port(FAULT_PROXY_PORT)}/")
            self.toxiproxy_started = started
            yield started

    def _labels(self) -> dict[str, str]:
        return {LABEL: str(self._out_dir)}

    def _container(self, image: str, command: list[str], role: str, ports: list[int],
                   aliases: list[str]) -> DockerContainer:
        from testcontainers.core.container import DockerContainer

        assert self._network is not None
        container = DockerContainer(image, network=self._network, network_aliases=aliases or None,
                                    name=f"gateway-storm-harness-{role}-{uuid.uuid4().hex[:8]}")
        container.with_command(command)
        for port in ports:
            # Loopback only: a port published on every interface would expose the stub to the network.
            container.ports[f"{port}/tcp"] = ("127.0.0.1",)  # type: ignore[assignment]
        # The stub writes its log into the run's folder: as the harness's user, so the user can remove it.
        container.with_kwargs(labels=self._labels(), user=f"{os.getuid()}:{os.getgid()}")
        return container

    def _start(self, container: DockerContainer, log_path: Path, port: int, ready_path: str, *,
               ready_line: bool, stack: contextlib.ExitStack | None = None) -> None:
        """Start `container`, ready when GET `ready_path` answers 200; its removal is registered first.

        With `ready_line` (this project's services print `{"event":"ready",...}`), the ready line is awaited
        first: that wait ends at once, with the log, if the container exits instead.
        """
        from testcontainers.core.wait_strategies import CompositeWaitStrategy, HttpWaitStrategy, LogMessageWaitStrategy

        stack = stack or self._stack
        stack.callback(container.stop)  # runs last: remove (with the container's volumes)
        stack.callback(_save_log, container, log_path)  # runs first: stop gracefully, keep its log
        http = HttpWaitStrategy(port, ready_path)
        strategy = CompositeWaitStrategy(LogMessageWaitStrategy(READY_LINE), http) if ready_line else http
        container.waiting_for(strategy.with_startup_timeout(READY_TIMEOUT_S).with_poll_interval(0.2))
        try:
            container.start()
        except Exception as exc:  # noqa: BLE001  (docker, Testcontainers and the wait strategy each raise their own)
            tail = _log_tail(container)
            raise BackendError(f"{container.image} container not ready: {first_line(str(exc))}; log: {tail}") \
                from None


def _save_log(container: DockerContainer, log_path: Path) -> None:
    import docker.errors

    with contextlib.suppress(docker.errors.DockerException, ValueError):
        wrapped = container.get_wrapped_container()
        wrapped.stop(timeout=STOP_GRACE_S)
        log_path.write_bytes(wrapped.logs(stdout=False, stderr=True))


def _log_tail(container: DockerContainer) -> str:
    import docker.errors

    try:
        lines = container.get_wrapped_container().logs().decode(errors="replace").strip().splitlines()
    except (docker.errors.DockerException, ValueError, AttributeError):
        return "(no log)"
    return lines[-1] if lines else "(empty log)"


def _pull_toxiproxy(client: DockerClient) -> str | None:
    """None when the pinned Toxiproxy image is present or could be pulled, else why not (asked once)."""
    import docker.errors

    if _toxiproxy_unavailable:
        return _toxiproxy_unavailable[0]
    try:
        client.images.get(TOXIPROXY_IMAGE)
        return None
    except docker.errors.ImageNotFound:
        pass
    try:
        client.images.pull(TOXIPROXY_IMAGE)
        return None
    except docker.errors.DockerException as exc:
        _toxiproxy_unavailable.append(first_line(str(exc)))
        return _toxiproxy_unavailable[0]


def build_stub_image(client: DockerClient, base_image: str) -> str:
    """Build the stub's image FROM `base_image` out of this checkout (once per process); its tag."""
    import docker.errors

    if base_image in _built_images:
        return _built_images[base_image]
    tag = f"{STUB_IMAGE_REPOSITORY}:{_tag_for(base_image)}"
    started = time.monotonic()
    previous = _image_id(client, tag)
    try:
        client.images.build(fileobj=build_context(), custom_context=True, tag=tag,
                            buildargs={"BASE_IMAGE": base_image}, rm=True, forcerm=True, timeout=BUILD_TIMEOUT_S)
    except docker.errors.BuildError as exc:
        lines = [str(entry.get("stream") or entry.get("error") or "").strip() for entry in exc.build_log]
        detail = [line for line in lines if line][-3:]
        raise BackendError(f"building {tag} failed: {exc.msg}; last output: {' | '.join(detail)}") from None
    except docker.errors.DockerException as exc:
        raise BackendError(f"building {tag} failed: {first_line(str(exc))}") from None
    print(f"harness: built {tag} from {base_image} in {time.monotonic() - started:.1f} s", file=sys.stderr)
    if previous is not None and previous != _image_id(client, tag):
        # The image this tag named before (an older checkout's) is now nameless: left, each change of the
        # source would leave one more behind, hundreds of MB each.
        with contextlib.suppress(docker.errors.DockerException):  # a container still uses it: it stays
            client.images.remove(previous)
    _built_images[base_image] = tag
    return tag


def _image_id(client: DockerClient, name: str) -> str | None:
    import docker.errors

    try:
        return str(client.images.get(name).id)
    except docker.errors.DockerException:
        return None


def build_context() -> io.BytesIO:
    """The Dockerfile, the project's metadata and its three packages, and this machine's pip settings, as a tar."""
    if not (SOURCE_ROOT / "Dockerfile").is_file() or not (SOURCE_ROOT / "pyproject.toml").is_file():
        raise BackendError(f"the Docker backend builds the stub's image from a source checkout; no Dockerfile "
                           f"and pyproject.toml at {SOURCE_ROOT} (install with pip install -e)")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name in ("Dockerfile", "pyproject.toml", "README.md", "openclaw_wire", "gateway_stub", "harness"):
            tar.add(SOURCE_ROOT / name, arcname=name, filter=_reproducible)
        for name, data in pip_settings().items():
            entry = tarfile.TarInfo(name)
            entry.size, entry.mode = len(data), 0o644
            tar.addfile(entry, io.BytesIO(data))
    buffer.seek(0)
    return buffer


def _reproducible(entry: tarfile.TarInfo) -> tarfile.TarInfo | None:
    if "__pycache__" in entry.name.split("/") or entry.name.endswith(".pyc"):
        return None
    entry.mtime, entry.uid, entry.gid, entry.uname, entry.gname = 0, 0, 0, "", ""
    return entry


PIP_KEYS = ("index-url", "extra-index-url", "trusted-host", "cert")


def pip_settings() -> dict[str, bytes]:
    """`pip.conf` (and `pip-ca.crt`) for the image build, from this machine's pip configuration.

    The image installs the project's dependencies from the index this machine uses, trusting the same CA
    bundle (a TLS-inspecting proxy's, say). Local indexes and find-links (file:// or paths) do not exist
    inside the build and are left out.
    """
    try:
        listed = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True,
                                timeout=60, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    settings: dict[str, str] = {}
    for line in sorted(listed.splitlines(), key=lambda text: text.startswith(":env:")):  # the environment wins
        scope_key, _, value = line.partition("=")
        key = scope_key.rpartition(".")[2]
        if key in PIP_KEYS:
            settings[key] = value.strip().strip("'\"")
    files: dict[str, bytes] = {}
    lines = ["[global]"]
    for key in ("index-url", "extra-index-url"):
        urls = [url for url in settings.get(key, "").split() if url.startswith(("http://", "https://"))]
        if urls:
            lines.append(f"{key} = {' '.join(urls)}")
    if settings.get("trusted-host"):
        lines.append(f"trusted-host = {settings['trusted-host']}")
    with contextlib.suppress(OSError, KeyError):
        files["pip-ca.crt"] = Path(settings["cert"]).read_bytes()
        lines.append("cert = /src/pip-ca.crt")
    if len(lines) > 1:
        files["pip.conf"] = ("\n".join(lines) + "\n").encode()
    return files


def _tag_for(base_image: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "-" for c in base_image.rpartition("/")[2])

