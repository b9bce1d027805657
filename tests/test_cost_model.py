"""The handshake cost model: CPU burned on the stub's one event loop, measured from outside the process.

Every test runs the stub as a child process so the client's own loop is never the one being blocked.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import Callable
from typing import Any

from conftest import FrameClient, StubProcess, connect_frame, handshake, recv_json, wait_closed, wait_until
from websockets.asyncio.client import ClientConnection, connect

StartStub = Callable[..., StubProcess]
# Idle latencies off: only the configured cost separates the measurements.
NO_IDLE = ("--challenge-latency-ms", "0", "--hello-latency-ms", "0")
N = 10
COST_MS = 40


async def open_with_challenge(url: str) -> ClientConnection:
    ws = await connect(url, compression=None)
    challenge = await recv_json(ws)
    assert challenge["event"] == "connect.challenge"
    return ws


async def simultaneous_connects(url: str, n: int = N) -> float:
    """Open n sockets and read their challenges, then send all connects at once.

    Returns seconds from sending the connects to the last hello-ok.
    """
    sockets = await asyncio.gather(*(open_with_challenge(url) for _ in range(n)))
    try:
        started = time.monotonic()
        await asyncio.gather(*(ws.send(connect_frame()) for ws in sockets))
        replies = await asyncio.gather(*(recv_json(ws, timeout=30) for ws in sockets))
        elapsed = time.monotonic() - started
        assert all(r["type"] == "res" and r["ok"] is True for r in replies), replies
        return elapsed
    finally:
        await asyncio.gather(*(ws.close() for ws in sockets))


def get_stats(proc: StubProcess) -> dict[str, Any]:
    with urllib.request.urlopen(proc.http_url + "stats", timeout=5) as response:
        stats: dict[str, Any] = json.loads(response.read())
        return stats


async def refreshes_over(proc: StubProcess, timeout: float = 10.0) -> dict[str, int]:
    """Wait until no health refresh runs or is queued in the stub; return its counters then."""
    def idle() -> bool:
        refresh = get_stats(proc)["health_refresh"]
        return not refresh["running"] and not refresh["pending"]

    await wait_until(idle, timeout)
    counters: dict[str, int] = get_stats(proc)["counters"]
    return counters


async def test_cost_before_timer_serialises_simultaneous_connects(stub_process: StartStub) -> None:
    costly = stub_process(*NO_IDLE, "--connect-cost-before-timer", f"fixed:{COST_MS}")
    free = stub_process(*NO_IDLE, "--connect-cost-before-timer", "0")
    with_cost = await simultaneous_connects(costly.url)
    without = await simultaneous_connects(free.url)
    total_s = N * COST_MS / 1000
    assert 0.8 * total_s <= with_cost <= total_s + 1.5
    assert without < with_cost / 3
    assert get_stats(costly)["counters"]["handshakes_succeeded"] == N


async def test_cost_after_timer_serialises_simultaneous_connects(stub_process: StartStub) -> None:
    costly = stub_process(*NO_IDLE, "--connect-cost-after-timer", f"fixed:{COST_MS}")
    free = stub_process(*NO_IDLE)
    with_cost = await simultaneous_connects(costly.url)
    without = await simultaneous_connects(free.url)
    total_s = N * COST_MS / 1000
    assert 0.8 * total_s <= with_cost <= total_s + 1.5
    assert without < with_cost / 3


async def test_time_scale_shrinks_the_cost(stub_process: StartStub) -> None:
    cost_ms = 400
    # The timeout scales too: keep it far away (100 s * 0.1 = 10 s).
    proc = stub_process(*NO_IDLE, "--time-scale", "0.1", "--handshake-timeout-ms", "100000",
                        "--connect-cost-before-timer", f"fixed:{cost_ms}")
    elapsed = await simultaneous_connects(proc.url)
    scaled_s = N * cost_ms * 0.1 / 1000  # 0.4 s, not the unscaled 4 s
    assert 0.8 * scaled_s <= elapsed <= scaled_s + 1.5
    assert elapsed < N * cost_ms / 1000 / 2


async def _idle_close_delay(proc: StubProcess) -> tuple[float, dict[str, Any]]:
    """A second client never sends connect while a first one's connect burns: when is it closed?

    Returns (seconds from the idle socket's open to its close, the first client's connect outcome).
    """
    opened = time.monotonic()  # before the stub can start the idle socket's timer
    idle = await open_with_challenge(proc.url)
    burner = await open_with_challenge(proc.url)
    await burner.send(connect_frame())
    code, reason = await wait_closed(idle, timeout=10)
    delay = time.monotonic() - opened
    assert (code, reason) == (1000, "")
    try:
        outcome: dict[str, Any] = {"frame": await recv_json(burner, timeout=5)}
    except Exception:
        outcome = {"frame": None}
    outcome["close"] = await wait_closed(burner, timeout=10) if outcome["frame"] is None else None
    await burner.close()
    return delay, outcome


async def test_blocking_cost_delays_other_sockets_timers_and_chunking_does_not(stub_process: StartStub) -> None:
    timeout = ("--handshake-timeout-ms", "200")
    blocking = stub_process(*NO_IDLE, *timeout, "--connect-cost-before-timer", "fixed:600")
    chunked = stub_process(*NO_IDLE, *timeout, "--connect-cost-before-timer", "fixed:600@10")

    late, _ = await _idle_close_delay(blocking)
    on_time, chunked_outcome = await _idle_close_delay(chunked)
    # Blocked: the 0.2 s timer can only run once the 0.6 s burn is over.
    assert late >= 0.55
    assert late < 3.0
    # Chunked: the loop keeps turning, the timer fires on time.
    assert 0.19 <= on_time < 0.5
    assert late - on_time >= 0.2
    # ...and the chunked connect itself outlived its own timer: closed, no hello.
    assert chunked_outcome["frame"] is None
    assert chunked_outcome["close"] == (1000, "")
    assert get_stats(blocking)["event_loop_lag_ms"]["max"] > get_stats(chunked)["event_loop_lag_ms"]["max"]


async def test_split_of_cost_around_the_timer_matters(stub_process: StartStub) -> None:
    timeout = ("--handshake-timeout-ms", "200")
    before = stub_process(*NO_IDLE, *timeout, "--connect-cost-before-timer", "fixed:400@10")
    after = stub_process(*NO_IDLE, *timeout, "--connect-cost-after-timer", "fixed:400")

    # Before the timer: the timer fires during the burn, the connect gets no hello.
    ws = await open_with_challenge(before.url)
    started = time.monotonic()
    await ws.send(connect_frame())
    assert await wait_closed(ws, timeout=10) == (1000, "")
    assert time.monotonic() - started < 0.4 + 1.0
    stats = get_stats(before)["counters"]
    assert stats["handshakes_timed_out"] == 1
    assert stats["handshakes_succeeded"] == 0

    # After the timer: the same cost, but the timer is already cleared, so hello-ok arrives.
    started = time.monotonic()
    ws, hello = await handshake(after.url)
    elapsed = time.monotonic() - started
    assert hello["ok"] is True
    assert hello["payload"]["type"] == "hello-ok"
    assert elapsed >= 0.38
    assert ws.close_code is None
    await ws.close()
    stats = get_stats(after)["counters"]
    assert stats["handshakes_timed_out"] == 0
    assert stats["handshakes_succeeded"] == 1


async def _concurrent_handshakes(url: str, n: int) -> float:
    async def one() -> ClientConnection:
        ws, hello = await handshake(url)
        assert hello["ok"] is True
        return ws

    started = time.monotonic()
    sockets = await asyncio.gather(*(one() for _ in range(n)))
    elapsed = time.monotonic() - started
    await asyncio.gather(*(ws.close() for ws in sockets))
    return elapsed


async def test_colocated_mode_slows_handshakes_and_lags_the_loop(stub_process: StartStub) -> None:
    plain = stub_process(*NO_IDLE)
    colocated = stub_process(*NO_IDLE, "--colocated-challenge-cost", "fixed:50")
    baseline = await _concurrent_handshakes(plain.url, N)
    slowed = await _concurrent_handshakes(colocated.url, N)
    # Ten 50 ms client-side burns on the gateway's loop: about 0.5 s in all.
    assert slowed >= 0.4
    assert slowed > baseline + 0.25
    stats = get_stats(colocated)
    assert stats["config"]["colocated_challenge_cost"] == "fixed:50"
    assert stats["event_loop_lag_ms"]["max"] > 40
    assert stats["handshake_ms"]["max"] > get_stats(plain)["handshake_ms"]["max"]


async def test_one_blocking_cost_longer_than_the_timeout_times_the_connect_out(stub_process: StartStub) -> None:
    # The real connect path awaits before registering the client, and Node runs the overdue timer
    # first: a connect whose own processing outlives the timer is cut with 1000, no hello.
    proc = stub_process(*NO_IDLE, "--handshake-timeout-ms", "200", "--connect-cost-before-timer", "fixed:400")
    ws = await open_with_challenge(proc.url)
    await ws.send(connect_frame())
    assert await wait_closed(ws, timeout=10) == (1000, "")
    counters = get_stats(proc)["counters"]
    assert (counters["handshakes_timed_out"], counters["handshakes_succeeded"]) == (1, 0)


# -- the post-hello health refresh (--health-refresh-cost) ----------------------------------------------------

REFRESH_MS = 400


async def test_health_refresh_is_coalesced_and_delays_other_sockets(stub_process: StartStub) -> None:
    # N hellos at once, each followed by a blocking 0.4 s refresh: coalesced, about one or two refreshes of loop
    # time (not N), and a socket opened meanwhile gets its challenge only once the loop is free again.
    refreshing = stub_process(*NO_IDLE, "--health-refresh-cost", f"fixed:{REFRESH_MS}")
    plain = stub_process(*NO_IDLE)

    async def wave_then_new_socket(url: str) -> tuple[float, float]:
        sockets = await asyncio.gather(*(open_with_challenge(url) for _ in range(N)))
        try:
            started = time.monotonic()
            await asyncio.gather(*(ws.send(connect_frame()) for ws in sockets))
            first = await recv_json(sockets[0], timeout=30)
            first_hello_s = time.monotonic() - started
            assert first["ok"] is True
            late = await open_with_challenge(url)  # its upgrade and challenge queue behind the refresh
            challenge_s = time.monotonic() - started
            await late.close()
            replies = await asyncio.gather(*(recv_json(ws, timeout=30) for ws in sockets[1:]))
            assert all(r["ok"] is True for r in replies), replies
            return first_hello_s, challenge_s
        finally:
            await asyncio.gather(*(ws.close() for ws in sockets))

    first_hello_s, challenge_s = await wave_then_new_socket(refreshing.url)
    _, plain_challenge_s = await wave_then_new_socket(plain.url)
    refresh_s = REFRESH_MS / 1000
    # The refresh runs after hello-ok is sent: the hello itself is not held back by it.
    assert first_hello_s < refresh_s
    # The new socket waited for (at least most of) a refresh, but not for one per hello.
    assert challenge_s >= 0.7 * refresh_s
    assert challenge_s < N * refresh_s / 2
    assert plain_challenge_s < 0.5 * refresh_s
    counters = await refreshes_over(refreshing)
    assert counters["handshakes_succeeded"] == N
    assert 1 <= counters["health_refreshes"] <= 3
    assert counters["health_refreshes"] + counters["health_refresh_joins"] == N
    assert get_stats(plain)["counters"]["health_refreshes"] == 0


async def _hellos_during_one_refresh(url: str, n: int) -> float:
    """One hello starts a sliced refresh; n - 1 more hellos complete while it runs. Returns the seconds taken."""
    started = time.monotonic()
    for _ in range(n):
        ws, hello = await handshake(url)
        assert hello["ok"] is True
        await ws.close()
    return time.monotonic() - started


async def test_health_refresh_join_and_rearm(stub_process: StartStub) -> None:
    # Sliced, so the loop keeps turning and the later hellos surely arrive while the first refresh runs: four
    # sequential hellos take ~40 ms idle, and up to a second or two on a machine busy with other work (at a
    # 1.5 s refresh, one such run saw a hello come after it ended), hence a 4 s refresh.
    cost = ("--health-refresh-cost", "fixed:4000@10")
    join = stub_process(*NO_IDLE, *cost)
    rearm = stub_process(*NO_IDLE, *cost, "--health-refresh-coalesce", "rearm")
    assert await _hellos_during_one_refresh(join.url, 4) < 3.0
    assert await _hellos_during_one_refresh(rearm.url, 4) < 3.0
    # join (openclaw 2026.4.24: the running refresh's promise is returned): one refresh for all four hellos.
    counters = await refreshes_over(join, timeout=30)
    assert (counters["health_refreshes"], counters["health_refresh_joins"]) == (1, 3)
    # rearm: three hellos during the refresh fold into one more, not three.
    counters = await refreshes_over(rearm, timeout=30)
    assert (counters["health_refreshes"], counters["health_refresh_joins"]) == (2, 3)
    stats = get_stats(rearm)["config"]
    assert (stats["health_refresh_cost"], stats["health_refresh_coalesce"]) == ("fixed:4000@10", "rearm")


def test_health_refresh_in_a_profile_reaches_the_stub() -> None:
    from harness.profile import parse_profile
    from harness.target import StubTarget

    data = {"name": "p", "accounts": {"count": 1, "channels": {"matrix": 1}},
            "target": {"kind": "stub", "health_refresh_cost": "fixed:6000", "health_refresh_coalesce": "rearm"}}
    target = parse_profile(data, environ={}).target
    assert isinstance(target, StubTarget)
    assert target.config.health_refresh_cost.describe() == "fixed:6000"
    assert target.config.health_refresh_coalesce == "rearm"
    args = target.args
    assert args[args.index("--health-refresh-cost") + 1] == "fixed:6000"
    assert args[args.index("--health-refresh-coalesce") + 1] == "rearm"


async def test_a_health_request_also_requests_a_refresh(stub_process: StartStub) -> None:
    # The real `health` handler answers from the cache, then refreshes in the background (coalesced too).
    proc = stub_process(*NO_IDLE, "--health-refresh-cost", "fixed:300@10")
    ws, hello = await handshake(proc.url)
    assert hello["ok"] is True
    counters = await refreshes_over(proc)  # the hello's refresh is over
    assert (counters["health_refreshes"], counters["health_refresh_joins"]) == (1, 0)
    client = FrameClient(ws)
    assert (await client.call("health"))["ok"] is True
    await client.call("health")  # while the second refresh runs: joins it
    counters = await refreshes_over(proc)
    await ws.close()
    assert (counters["health_refreshes"], counters["health_refresh_joins"]) == (2, 1)
