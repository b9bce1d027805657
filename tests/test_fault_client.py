"""The harness's Toxiproxy client (toxiproxy-python, bound per server, with timeouts) against the embedded proxy."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.backends.embedded import ChildService
from harness.faults.client import FaultError, ToxiproxyClient

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def proxy_server(tmp_path: Path) -> Iterator[str]:
    with ChildService("harness.faults.embedded_proxy", ["--host", "127.0.0.1", "--port", "0"],
                      log_path=tmp_path / "proxy.log") as child:
        yield str(child.ready["url"])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_library_api_against_one_server(proxy_server: str) -> None:
    client = ToxiproxyClient(proxy_server)
    assert client.version().startswith("2.")
    proxy = client.create(upstream="127.0.0.1:9", name="gateway", listen="127.0.0.1:0")
    host, port = proxy.listen.rsplit(":", 1)
    assert host == "127.0.0.1" and int(port) > 0
    assert set(client.proxies()) == {"gateway"}
    proxy.add_toxic(name="spike", type="latency", stream="downstream", toxicity=1.0, attributes={"latency": 50})
    assert set(proxy.toxics()) == {"spike"}
    proxy.disable()
    proxy.enable()
    client.reset()  # re-enables everything and removes every toxic
    assert proxy.toxics() == {}
    proxy.destroy()
    assert client.proxies() == {}


def test_errors_come_back_as_one_fault_error(proxy_server: str) -> None:
    client = ToxiproxyClient(proxy_server)
    proxy = client.create(upstream="127.0.0.1:9", name="gateway", listen="127.0.0.1:0")
    with pytest.raises(FaultError, match="ProxyExists"):
        client.create(upstream="127.0.0.1:9", name="gateway", listen="127.0.0.1:0")
    with pytest.raises(FaultError, match="NotFound"):
        proxy.destroy_toxic("never-added")
    with pytest.raises(FaultError, match="InvalidToxic"):
        proxy.add_toxic(type="earthquake")


def test_two_servers_in_one_process_do_not_talk_over_each_other(proxy_server: str, tmp_path: Path) -> None:
    with ChildService("harness.faults.embedded_proxy", ["--host", "127.0.0.1", "--port", "0"],
                      log_path=tmp_path / "second.log") as second:
        first_client, second_client = ToxiproxyClient(proxy_server), ToxiproxyClient(str(second.ready["url"]))
        first_client.create(upstream="127.0.0.1:9", name="only-on-first", listen="127.0.0.1:0")
        assert set(second_client.proxies()) == set()
        assert set(first_client.proxies()) == {"only-on-first"}


def test_a_dead_server_is_a_clear_error_not_a_hang() -> None:
    client = ToxiproxyClient(f"http://127.0.0.1:{free_port()}", timeout_s=2)
    started = time.monotonic()
    with pytest.raises(FaultError, match="did not answer"):
        client.proxies()
    assert time.monotonic() - started < 5


def test_a_bad_url_names_the_variable() -> None:
    with pytest.raises(FaultError, match="TOXIPROXY_URL: expected http://HOST:PORT"):
        ToxiproxyClient("toxiproxy")


def test_harness_toxiproxy_serves_until_stopped() -> None:
    process = subprocess.Popen([sys.executable, "-m", "harness.cli", "toxiproxy", "--port", "0"], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        ready = process.stdout.readline()
        assert '"event":"ready"' in ready.replace(" ", "")
        url = ready.split('"url":')[1].split('"')[1]
        assert ToxiproxyClient(url).version().startswith("2.")
        process.terminate()
        assert process.wait(10) == 0
    finally:
        if process.poll() is None:
            process.kill()
