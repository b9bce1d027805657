"""What the embedded Toxiproxy costs: added latency and throughput with no toxics, and the latency toxic's accuracy.

The embedded proxy (`python -m harness.faults.embedded_proxy`) and a small asyncio TCP echo server run
as child processes on loopback; this process is the client, with blocking sockets. Everything is
measured in the same run against the same echo server, directly and through one proxy, alternating
(direct, proxy, direct, proxy, ...) so machine noise hits both alike; the figures to read are the
ratios and the added microseconds.

  latency:    round trips of one 64-byte message on one connection: p50 and p99 (µs), direct vs proxy;
  throughput: MB echoed through one connection (a sender thread, this thread reading), MB/s each way;
  accuracy:   a downstream latency toxic of a few sizes: the median round trip minus the proxy's own
              median, against what was asked.

Every phase is bounded by a count and a time limit.

    python benchmarks/toxiproxy_overhead.py [--rounds 3] [--round-trips 2000] [--mb 32]
                                            [--accuracy-samples 20] [--json]
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PHASE_TIME_LIMIT_S = 30.0
MESSAGE = b"x" * 64
ASKED_LATENCIES_MS = (1, 10, 50, 100)
ECHO_SERVER = """
import asyncio, json
class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
    def data_received(self, data):
        self.transport.write(data)
async def main():
    server = await asyncio.get_running_loop().create_server(Echo, "127.0.0.1", 0)
    print(json.dumps({"port": server.sockets[0].getsockname()[1]}), flush=True)
    await asyncio.Future()
asyncio.run(main())
"""


def start_child(argv: list[str]) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                               text=True, cwd=ROOT)
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        raise SystemExit(f"{argv[:3]} did not start (exit {process.wait()})")
    return process, json.loads(line)


def stop_child(process: subprocess.Popen[str]) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def api(url: str, method: str, path: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url + path, data=data, method=method)
    with urllib.request.urlopen(request, timeout=10) as response:
        raw = response.read()
    return json.loads(raw) if raw else None


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def recv_exact(sock: socket.socket, size: int) -> None:
    left = size
    while left:
        chunk = sock.recv(min(left, 1 << 20))
        if not chunk:
            raise RuntimeError("connection closed mid-measurement")
        left -= len(chunk)


def round_trips(port: int, count: int) -> list[float]:
    """Seconds per round trip of MESSAGE, `count` times (fewer if the time limit is hit)."""
    samples: list[float] = []
    deadline = time.monotonic() + PHASE_TIME_LIMIT_S
    with connect(port) as sock:
        for _ in range(10):  # warm-up
            sock.sendall(MESSAGE)
            recv_exact(sock, len(MESSAGE))
        while len(samples) < count and time.monotonic() < deadline:
            started = time.perf_counter()
            sock.sendall(MESSAGE)
            recv_exact(sock, len(MESSAGE))
            samples.append(time.perf_counter() - started)
    return samples


def throughput(port: int, megabytes: int) -> float:
    """MB/s echoed through one connection: `megabytes` sent by a thread while this one reads them back."""
    total = megabytes * 1024 * 1024
    block = b"\0" * (64 * 1024)
    with connect(port) as sock:
        sock.settimeout(PHASE_TIME_LIMIT_S)

        def send() -> None:
            left = total
            while left > 0:
                sock.sendall(block[:left])
                left -= len(block)

        started = time.perf_counter()
        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        recv_exact(sock, total)
        elapsed = time.perf_counter() - started
        sender.join(PHASE_TIME_LIMIT_S)
    return megabytes / elapsed


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(args: argparse.Namespace) -> dict[str, Any]:
    echo_process, echo = start_child([sys.executable, "-c", ECHO_SERVER])
    proxy_process, ready = start_child([sys.executable, "-m", "harness.faults.embedded_proxy", "--port", "0"])
    try:
        url = ready["url"]
        proxy = api(url, "POST", "/proxies", {"name": "bench", "listen": "127.0.0.1:0",
                                              "upstream": f"127.0.0.1:{echo['port']}"})
        direct_port, proxy_port = int(echo["port"]), int(proxy["listen"].rsplit(":", 1)[1])

        latency: dict[str, list[float]] = {"direct": [], "proxy": []}
        rates: dict[str, list[float]] = {"direct": [], "proxy": []}
        for _ in range(args.rounds):
            for target, port in (("direct", direct_port), ("proxy", proxy_port)):
                latency[target] += round_trips(port, args.round_trips)
            for target, port in (("direct", direct_port), ("proxy", proxy_port)):
                rates[target].append(throughput(port, args.mb))

        proxy_p50 = statistics.median(latency["proxy"])
        accuracy = []
        for asked_ms in ASKED_LATENCIES_MS:
            api(url, "POST", "/proxies/bench/toxics", {"name": "lat", "type": "latency",
                                                        "attributes": {"latency": asked_ms}})
            samples = round_trips(proxy_port, args.accuracy_samples)
            api(url, "DELETE", "/proxies/bench/toxics/lat")
            measured = [(s - proxy_p50) * 1000.0 for s in samples]
            accuracy.append({"asked_ms": asked_ms, "measured_p50_ms": round(statistics.median(measured), 3),
                             "measured_max_ms": round(max(measured), 3),
                             "error_p50_ms": round(statistics.median(measured) - asked_ms, 3),
                             "samples": len(samples)})
    finally:
        stop_child(proxy_process)
        stop_child(echo_process)

    def us(value: float) -> float:
        return round(value * 1e6, 1)

    result: dict[str, Any] = {
        "rounds": args.rounds, "round_trips_per_round": args.round_trips, "message_bytes": len(MESSAGE),
        "latency_us": {target: {"p50": us(statistics.median(s)), "p99": us(percentile(s, 0.99)), "samples": len(s)}
                       for target, s in latency.items()},
        "throughput_mb_s": {target: round(statistics.median(r), 1) for target, r in rates.items()},
        "mb_per_round": args.mb,
        "latency_toxic": accuracy,
    }
    lat = result["latency_us"]
    result["added_p50_us"] = round(lat["proxy"]["p50"] - lat["direct"]["p50"], 1)
    result["latency_ratio_p50"] = round(lat["proxy"]["p50"] / lat["direct"]["p50"], 2)
    result["latency_ratio_p99"] = round(lat["proxy"]["p99"] / lat["direct"]["p99"], 2)
    result["throughput_ratio"] = round(result["throughput_mb_s"]["proxy"] / result["throughput_mb_s"]["direct"], 2)
    return result


def print_table(r: dict[str, Any]) -> None:
    lat, tput = r["latency_us"], r["throughput_mb_s"]
    print(f"embedded Toxiproxy, no toxics: {r['rounds']} rounds x {r['round_trips_per_round']} round trips "
          f"of {r['message_bytes']} B, {r['mb_per_round']} MB echoed per round, loopback")
    print(f"{'':16}{'p50 µs':>10}{'p99 µs':>10}{'MB/s':>10}")
    for target, label in (("direct", "direct"), ("proxy", "through proxy")):
        print(f"{label:16}{lat[target]['p50']:>10.1f}{lat[target]['p99']:>10.1f}{tput[target]:>10.1f}")
    print(f"{'ratio':16}{r['latency_ratio_p50']:>10.2f}{r['latency_ratio_p99']:>10.2f}{r['throughput_ratio']:>10.2f}")
    print(f"added by the proxy at p50: {r['added_p50_us']:.1f} µs per round trip (two proxy hops)")
    print()
    print("latency toxic (downstream), round trip minus the proxy's own p50")
    print(f"{'asked ms':>10}{'measured p50':>14}{'max':>10}{'error p50':>12}")
    for row in r["latency_toxic"]:
        print(f"{row['asked_ms']:>10}{row['measured_p50_ms']:>14.3f}{row['measured_max_ms']:>10.3f}"
              f"{row['error_p50_ms']:>+12.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--round-trips", type=int, default=2000)
    parser.add_argument("--mb", type=int, default=32)
    parser.add_argument("--accuracy-samples", type=int, default=20)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = parser.parse_args()
    if min(args.rounds, args.round_trips, args.mb, args.accuracy_samples) < 1:
        parser.error("counts must be at least 1")
    result = run(args)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_table(result)


if __name__ == "__main__":
    main()
