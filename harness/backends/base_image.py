"""The base image the stub's image is built FROM: a Python image to pull, or one made from Debian's packages.

`resolve_base_image()` takes the first that works: the requested image (`HARNESS_DOCKER_BASE_IMAGE`, default
python:3.11-slim) already present; the image made here before (`DEBOOTSTRAP_TAG`) present; the requested
image pulled; and, where no registry answers, a new one made from Debian's packages: `debootstrap
--variant=minbase` of bookworm with python3 into a temporary directory, imported as `DEBOOTSTRAP_TAG`
(`tar -C DIR -c . | docker import`), the directory removed. That needs root, the `debootstrap` package and
the Debian mirror the machine's apt is configured with (`HARNESS_DEBIAN_MIRROR` overrides it).

    python -m harness.backends.base_image      # make sure a base image exists; prints its tag
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from harness.backends.docker_daemon import docker_client, first_line
from harness.errors import BackendError, HarnessError

if TYPE_CHECKING:
    from docker import DockerClient

DEFAULT_BASE_IMAGE = "python:3.11-slim"
DEBOOTSTRAP_TAG = "gateway-storm-harness/base:bookworm-py3"
DEBOOTSTRAP_SUITE = "bookworm"  # Debian 12: python3 is 3.11, the project's Python
DEBOOTSTRAP_PACKAGES = ("python3", "python3-venv", "python3-pip", "ca-certificates")
DEBOOTSTRAP_TIMEOUT_S = 900.0
DEFAULT_DEBIAN_MIRROR = "http://deb.debian.org/debian"
APT_SOURCES = (Path("/etc/apt/sources.list"), Path("/etc/apt/sources.list.d"))
TEMP_PREFIX = "gateway-storm-harness-"  # every temporary directory of the Docker backend starts so


def requested_base_image() -> str:
    return os.environ.get("HARNESS_DOCKER_BASE_IMAGE") or DEFAULT_BASE_IMAGE


def resolve_base_image(client: DockerClient, requested: str | None = None) -> str:
    """The tag of a base image present in the daemon, pulling or making one if needed (see the module doc)."""
    import docker.errors

    requested = requested or requested_base_image()
    for present in (requested, DEBOOTSTRAP_TAG):
        if _has_image(client, present):
            return present
    try:
        client.images.pull(requested)
        return requested
    except docker.errors.DockerException as exc:
        pull_error = first_line(str(exc))
    print(f"harness: warning: cannot pull {requested} ({pull_error}); making {DEBOOTSTRAP_TAG} from Debian's "
          f"packages instead (about a minute, once)", file=sys.stderr)
    return build_debootstrap_image(client)


def build_debootstrap_image(client: DockerClient) -> str:
    """debootstrap bookworm with python3 into a temporary directory, `docker import` it as DEBOOTSTRAP_TAG."""
    import docker.errors

    if os.geteuid() != 0 or shutil.which("debootstrap") is None:
        raise BackendError(f"no base image: {requested_base_image()} cannot be pulled, and making "
                           f"{DEBOOTSTRAP_TAG} needs root and debootstrap (apt-get install debootstrap); "
                           f"or set HARNESS_DOCKER_BASE_IMAGE to a Python 3.11 image present locally")
    mirror = debian_mirror()
    work_dir = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX + "base-"))
    try:
        root = work_dir / "root"
        command = ["debootstrap", "--variant=minbase", f"--include={','.join(DEBOOTSTRAP_PACKAGES)}",
                   DEBOOTSTRAP_SUITE, str(root), mirror]
        _run_bounded(command, work_dir / "debootstrap.log", DEBOOTSTRAP_TIMEOUT_S)
        repository, _, tag = DEBOOTSTRAP_TAG.partition(":")
        with subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE) as tar:
            assert tar.stdout is not None
            try:
                client.api.import_image_from_data(tar.stdout, repository=repository, tag=tag)
            except docker.errors.DockerException as exc:
                raise BackendError(f"docker import of {DEBOOTSTRAP_TAG} failed: {first_line(str(exc))}") from None
            finally:
                tar.kill()
    finally:
        remove_tree(work_dir)
    return DEBOOTSTRAP_TAG


def _run_bounded(command: list[str], log_path: Path, timeout_s: float) -> None:
    """Run debootstrap; on timeout or Ctrl-C stop it with SIGTERM first, so that it unmounts what it mounted."""
    with log_path.open("w", encoding="utf-8") as log, subprocess.Popen(command, stdout=log, stderr=log,
                                                                        stdin=subprocess.DEVNULL) as process:
        try:
            code = process.wait(timeout_s)
        except BaseException:
            process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(30)
            raise
    if code != 0:
        tail = log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
        raise BackendError(f"debootstrap exited with code {code}: {tail[-1] if tail else '(no output)'}")


def remove_tree(path: Path) -> None:
    """Remove a debootstrap directory; what is still mounted inside it (proc, sys, dev) is unmounted first.

    rmtree must never descend into a mount: a bind-mounted /dev under it is the host's.
    """
    for mount_point in sorted(_mounts_under(path), key=lambda p: len(p.parts), reverse=True):
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True, check=False)
    if _mounts_under(path):
        print(f"harness: warning: left {path} in place: something is still mounted inside it", file=sys.stderr)
        return
    shutil.rmtree(path, ignore_errors=True)


def _mounts_under(path: Path) -> list[Path]:
    resolved = path.resolve()
    try:
        lines = Path("/proc/self/mounts").read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    points = [Path(line.split()[1].replace("\\040", " ")) for line in lines if len(line.split()) > 1]
    return [p for p in points if p == resolved or resolved in p.parents]


def debian_mirror() -> str:
    """The Debian archive apt uses here (the first `bookworm` source), else deb.debian.org."""
    if mirror := os.environ.get("HARNESS_DEBIAN_MIRROR"):
        return mirror
    files = [APT_SOURCES[0], *sorted(APT_SOURCES[1].glob("*.list")), *sorted(APT_SOURCES[1].glob("*.sources"))]
    for path in files:
        with contextlib.suppress(OSError):
            if found := mirror_in_sources(path.read_text(encoding="utf-8"), deb822=path.suffix == ".sources"):
                return found
    return DEFAULT_DEBIAN_MIRROR


def mirror_in_sources(text: str, *, deb822: bool) -> str | None:
    """The archive URI of the first `deb` source for DEBOOTSTRAP_SUITE in a sources.list or deb822 .sources text."""
    if not deb822:
        for line in text.splitlines():
            words = re.sub(r"\[[^]]*\]", "", line.split("#", 1)[0]).split()
            if len(words) >= 3 and words[0] == "deb" and words[2] == DEBOOTSTRAP_SUITE:
                return words[1]
        return None
    for stanza in re.split(r"\n\s*\n", text):
        fields = {}
        for line in stanza.splitlines():
            key, separator, value = line.partition(":")
            if separator and not line.startswith((" ", "#")):
                fields[key.strip().lower()] = value.split()
        if ("deb" in fields.get("types", []) and DEBOOTSTRAP_SUITE in fields.get("suites", [])
                and fields.get("uris")):
            return fields["uris"][0]
    return None


def _has_image(client: DockerClient, tag: str) -> bool:
    import docker.errors

    try:
        client.images.get(tag)
        return True
    except docker.errors.ImageNotFound:
        return False


def main() -> int:
    started = time.monotonic()
    try:
        tag = resolve_base_image(docker_client())
    except HarnessError as exc:
        print(f"base_image: error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(f"base_image: {tag} ({time.monotonic() - started:.1f} s)", file=sys.stderr)
    print(tag)
    return 0


if __name__ == "__main__":
    sys.exit(main())
