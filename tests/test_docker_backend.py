"""The Docker backend: the same profiles in containers give the same verdicts as embedded, and leave nothing behind.

The tests marked `docker` need a daemon: each A/B runs the real CLI twice, `--backend embedded` and
`--backend docker`, one after the other (the two share this machine's two cores). They are skipped with the
reason where no Docker daemon answers, and fail instead when CI sets HARNESS_REQUIRE_DOCKER=1. Their fixture
builds the stub's image first (and, with no registry, the base image: about a minute and a half, once per
machine), so the runs reuse it. The tests at the end need no daemon.
"""

from __future__ import annotations

import os
import signal
import socket
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import skip_unless_available
from schema_check import load_comparison
from test_fault_scenarios import storm_seconds
from test_harness_e2e import PROFILES, ROOT, harness, interrupt_mid_run, judged

from harness.errors import BackendError


@pytest.fixture(scope="module")
def docker() -> Iterator[Any]:
    """A client for the daemon, with the stub's image built; skips the module where no daemon answers."""
    from harness.backends.base_image import resolve_base_image
    from harness.backends.docker import build_stub_image, docker_client

    try:
        client = docker_client()
    except BackendError as exc:
        skip_unless_available("docker", str(exc))
    build_stub_image(client, resolve_base_image(client))
    yield client
    client.close()


def leftovers(client: Any, out: Path) -> list[str]:
    """Containers and networks of the runs under `out`, and the Docker backend's temporary directories."""
    from harness.backends.base_image import TEMP_PREFIX
    from harness.backends.docker import LABEL

    def ours(labels: dict[str, str] | None) -> bool:
        return (labels or {}).get(LABEL, "").startswith(str(out.resolve()))

    found = [f"container {c.name}" for c in client.containers.list(all=True, filters={"label": LABEL})
             if ours(c.labels)]
    found += [f"network {n.name}" for n in client.networks.list(filters={"label": LABEL}) if ours(n.attrs["Labels"])]
    return found + [f"temporary directory {p}" for p in Path(tempfile.gettempdir()).glob(TEMP_PREFIX + "*")]


@dataclass
class Compared:
    arms: dict[str, dict[str, Any]]  # arm -> summary.json
    stderr: str
    wall_s: float

    @property
    def verdicts(self) -> dict[str, str]:
        return {arm: s["verdict"] for arm, s in self.arms.items()}


def compare_both(profile: Path, out: Path, client: Any) -> dict[str, Compared]:
    """`harness compare` on each backend, one after the other; nothing of either run left behind."""
    compared = {}
    for backend in ("embedded", "docker"):
        started = time.monotonic()
        result = judged("compare", str(profile), "--backend", backend, out=out / backend, timeout=600)
        assert result.returncode == 0, f"{backend}: " + result.stdout[-3000:] + result.stderr[-3000:]
        arms = load_comparison(out / backend / "compare.json")
        compared[backend] = Compared(arms, result.stderr, time.monotonic() - started)
        print(f"{profile.stem} --backend {backend}: {compared[backend].verdicts}, "
              f"{compared[backend].wall_s:.1f} s wall")
    assert leftovers(client, out) == []
    return compared


@pytest.mark.docker
def test_matrix_11_storms_and_converges_in_containers_as_embedded(docker: Any, tmp_path: Path) -> None:
    both = compare_both(PROFILES / "matrix-11-accounts.yaml", tmp_path, docker)
    assert both["docker"].verdicts == both["embedded"].verdicts == {"shipped": "storm", "coordinator": "converged"}
    for arm, s in both["docker"].arms.items():
        assert s["target"]["backend"] == "docker" and s["target"]["image"].startswith("gateway-storm-harness/stub:")
        assert s["sources_agree"] is True, arm  # the stub's JSON log, written from the container, was counted
        assert all(t["passed"] for t in s["thresholds"]), arm
    assert both["docker"].arms["shipped"]["storm_entries_by_kind"]["handshake_timeout"] >= 11
    assert both["docker"].arms["coordinator"]["storm_entries_after_startup"] == 0
    assert "handshake timeout conn=" in (tmp_path / "docker" / "shipped" / "stub.log").read_text(encoding="utf-8")


@pytest.mark.docker
def test_duplicate_prompts_and_their_fix_in_containers_as_embedded(docker: Any, tmp_path: Path) -> None:
    # A shorter cascade (as tests/test_duplicates.py runs it), A/B: as shipped, and the stub's own dedup arm.
    text = (PROFILES / "heartbeat-failover-telegram.yaml").read_text(encoding="utf-8")
    short = text.replace("duration_s: 300", "duration_s: 110").replace("heartbeat_ms: 120000", "heartbeat_ms: 60000")
    short = short.replace("decisions_lost: \">= 11\"", "decisions_lost: \">= 3\"")
    short = short.replace("arms: [none, stable-id, cancel-on-failover, gateway-dedup]", "arms: [none, gateway-dedup]")
    short = short.split("\n  stable-id:")[0] + "\n  gateway-dedup:" + short.split("\n  gateway-dedup:")[1]
    profile = tmp_path / "failover.yaml"
    profile.write_text(short, encoding="utf-8")
    both = compare_both(profile, tmp_path, docker)
    assert both["docker"].verdicts == both["embedded"].verdicts
    for backend, compared in both.items():
        arms = compared.arms
        none, dedup = arms["none"]["duplicates"], arms["gateway-dedup"]["duplicates"]
        assert none["max_prompts_per_intent"] == 3 and none["intents_decided"] == 0, backend
        assert dedup["max_prompts_per_intent"] == 1 and dedup["decisions_lost"] == 0, backend
        assert arms["gateway-dedup"]["approval_fix_applies"] is True, backend  # the stub in the container coalesced


@pytest.mark.docker
def test_a_fault_scenario_through_toxiproxy_in_containers_as_embedded(docker: Any, tmp_path: Path) -> None:
    both = compare_both(PROFILES / "handshake-stall.yaml", tmp_path, docker)
    assert both["docker"].verdicts == both["embedded"].verdicts == {"shipped": "recovered", "coordinator": "recovered"}
    for arm, s in both["docker"].arms.items():
        seconds = storm_seconds(s)
        assert seconds and min(seconds) >= 60 and max(seconds) < 140, (arm, seconds)  # confined to the stall
        assert s["storm_entries_by_kind"]["connect_error"] >= 11, arm
        assert [(f["kind"], f.get("error")) for f in s["faults"]] == [("toxic", None), ("gateway_restart", None)], arm
        fallback = s["target"]["toxiproxy_fallback"]
        if fallback is None:  # the pinned Toxiproxy image could be had
            assert s["target"]["toxiproxy_image"].startswith("ghcr.io/shopify/toxiproxy:2.")
            assert s["fault_backend"].startswith("toxiproxy 2.")
        else:  # no registry: the embedded proxy's image, said loudly
            assert s["target"]["toxiproxy_image"] == s["target"]["image"]
            assert s["fault_backend"].startswith("embedded 2.12.0+embedded at http://127.0.0.1:")
            assert "harness: warning: cannot pull ghcr.io/shopify/toxiproxy:2." in both["docker"].stderr
        assert "in container" in s["fault_backend"]


@pytest.mark.docker
def test_ctrl_c_removes_every_container_and_the_network_and_exits_130(docker: Any, tmp_path: Path) -> None:
    from harness.backends.docker import LABEL

    def containers_running() -> None:
        assert docker.containers.list(filters={"label": LABEL}), "no container running mid-run"

    code, stderr = interrupt_mid_run(PROFILES / "matrix-11-accounts.yaml", tmp_path, "--backend", "docker",
                                     started=(tmp_path / "shipped" / "stub.jsonl").exists, start_timeout_s=120,
                                     mid_run_s=3, before_interrupt=containers_running)
    assert code == 130, stderr[-2000:]
    assert "interrupted" in stderr
    assert leftovers(docker, tmp_path) == []
    assert "handshake timeout conn=" in (tmp_path / "shipped" / "stub.log").read_text(encoding="utf-8")


# Without a daemon: the parts that run on the host or inside the image, and the errors.


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(4096):
            self.request.sendall(data)


@pytest.mark.docker
def test_a_rebuilt_stub_image_leaves_no_nameless_image_behind(docker: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    import docker as docker_sdk

    from harness.backends import docker as backend
    from harness.backends.base_image import resolve_base_image

    base = resolve_base_image(docker)
    tag = backend.build_stub_image(docker, base)
    # An older checkout's image under the same tag: a different image, named only by that tag.
    older, _ = docker.images.build(fileobj=io.BytesIO(f"FROM {tag}\nLABEL older=checkout\n".encode()), tag=tag, rm=True)
    monkeypatch.setattr(backend, "_built_images", {})  # as a new process would
    assert backend.build_stub_image(docker, base) == tag
    assert docker.images.get(tag).id != older.id
    with pytest.raises(docker_sdk.errors.ImageNotFound):
        docker.images.get(older.id)


def test_the_loopback_bridge_forwards_a_port_and_passes_sigterm_to_its_command() -> None:
    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo) as echo:
        threading.Thread(target=echo.serve_forever, daemon=True).start()
        with socket.socket() as probe:  # a free port for the bridge to listen on
            probe.bind(("127.0.0.1", 0))
            listen_port = probe.getsockname()[1]
        bridge = subprocess.Popen(
            [sys.executable, "-m", "harness.backends.loopback_bridge", "--forward",
             f"127.0.0.1:{listen_port}=127.0.0.1:{echo.server_address[1]}", "--",
             sys.executable, "-c", "import time; time.sleep(60)"], cwd=ROOT)
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    client = socket.create_connection(("127.0.0.1", listen_port), timeout=5)
                    break
                except ConnectionRefusedError:
                    assert time.monotonic() < deadline, "the bridge never listened"
                    time.sleep(0.05)
            with client:
                client.sendall(b"ping")
                assert client.recv(4) == b"ping"
            bridge.send_signal(signal.SIGTERM)
            assert bridge.wait(10) == 128 + signal.SIGTERM  # the command got the signal; its end is the bridge's
        finally:
            bridge.kill()
            echo.shutdown()


def test_debootstrap_takes_the_mirror_apt_uses() -> None:
    from harness.backends.base_image import mirror_in_sources

    deb822 = ("Types: deb\n# a comment\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\n"
              "Components: main\n\nTypes: deb\nURIs: http://security.example/debian-security\n"
              "Suites: bookworm-security\n")
    assert mirror_in_sources(deb822, deb822=True) == "http://mirror.example/debian"
    one_line = "deb http://security.example/debian-security bookworm-security main\n" \
               "deb [arch=amd64] http://mirror.example/debian bookworm main contrib\n"
    assert mirror_in_sources(one_line, deb822=False) == "http://mirror.example/debian"
    assert mirror_in_sources("deb http://mirror.example/debian trixie main\n", deb822=False) is None


def test_no_daemon_is_one_line_and_exit_3(tmp_path: Path) -> None:
    env = {**os.environ, "DOCKER_HOST": f"unix://{tmp_path}/no-docker.sock"}
    result = subprocess.run([sys.executable, "-m", "harness.cli", "run", str(PROFILES / "single-account.yaml"),
                             "--backend", "docker", "--out", str(tmp_path / "out")], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 3, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"harness: error: no Docker daemon answers at unix://{tmp_path}/no-docker.sock (")
    assert last.endswith("start one (ci/docker-up) or use --backend embedded") and "Traceback" not in result.stderr


@pytest.mark.parametrize(("target", "args", "expected"), [
    ("{kind: stub, backend: dockr}", [], "harness: error: PROFILE:2: target.backend: expected embedded or docker, "
                                         "got 'dockr'"),
    ("{kind: url, url: 'ws://127.0.0.1:9/', token: t}", ["--backend", "docker"],
     "harness: error: --backend: only with target kind stub, this profile's is url"),
    ("{kind: stub}", ["--backend", "podman"], "harness: error: argument --backend: invalid choice: 'podman' "
                                              "(choose from 'embedded', 'docker')"),
])
def test_a_bad_backend_exits_2_naming_it(target: str, args: list[str], expected: str, tmp_path: Path) -> None:
    profile = tmp_path / "p.yaml"
    profile.write_text(f"name: p\ntarget: {target}\naccounts: {{count: 1}}\n", encoding="utf-8")
    result = harness("run", str(profile), *args, "--out", str(tmp_path / "out"))
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [expected.replace("PROFILE", str(profile))]
