"""The Docker daemon the Docker backend talks to: a client that answered a ping, or one clear error.

Testcontainers' environment defaults are set here before it is imported, unless already set (see
`harness.backends.docker` for why each).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from harness.errors import BackendError

if TYPE_CHECKING:
    from docker import DockerClient

TESTCONTAINERS_DEFAULTS = {
    "TESTCONTAINERS_RYUK_DISABLED": "true",
    "TESTCONTAINERS_CONNECTION_MODE": "docker_host",
    "TC_HOST": "127.0.0.1",
}


def docker_client() -> DockerClient:
    """A client for the daemon at DOCKER_HOST (or the default socket) that answered a ping, else BackendError."""
    for name, value in TESTCONTAINERS_DEFAULTS.items():
        os.environ.setdefault(name, value)
    try:
        import docker
        import docker.errors
    except ImportError:
        raise BackendError("the Docker backend needs the testcontainers package: pip install -e .") from None
    try:
        client = docker.from_env(timeout=60)
        client.ping()
    except docker.errors.DockerException as exc:
        where = os.environ.get("DOCKER_HOST") or "the default socket"
        raise BackendError(f"no Docker daemon answers at {where} ({first_line(str(exc))}); start one "
                           f"(ci/docker-up) or use --backend embedded") from None
    return client


def first_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[0] if lines else "no reason given"


