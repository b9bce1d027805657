"""The storm's figures and the verdict: pure functions from what a run recorded to numbers.

All durations are in scenario (unscaled) time. Storm entries are failed handshake attempts of three
kinds (`harness.events.STORM_KINDS`), counted from the clients' ledger and, where the gateway's log can
show them, from that log too (read with `openclaw_wire.log_records`):
  handshake_timeout  connections the gateway's handshake timer closed (the stub's log and the real
                     gateway's JSON log have the same shape);
  preauth_rejected   the stub's 503s at the pre-auth budget (the real gateway logs no line for a 503);
  connect_error      clients only.
The two sources agree when, for each kind both can count, they differ by no more than the attempts
that can be in flight when the run stops (one per account); the gateway's count also holds the
harness's own health probe's timeouts, which are added to the clients' side.

Verdict: `storm` when storm entries continue into the final window; otherwise, when every account holds
an authenticated connection at the end, `recovered` if there were storm entries after the startup window
(with `recovered_at_s`: when every account held a connection again after the last of them) and `converged`
if there were none; `degraded` when someone is not connected at the end. Witnesses (Jepsen-style) name the
accounts and times that prove a storm. Whether the host let the figures mean anything is
`harness.verdict.host`'s to say.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from harness.events import STORM_KINDS, Attempt, HealthSample, Outcome, RunRecord
from harness.summary import (
    GatewayLogCounts,
    HandshakeDistribution,
    HealthRpcFigures,
    LatencyFigures,
    LoopLagFigures,
    ObservedVerdict,
    StormCounts,
    StormSources,
    TimelineRow,
    Witness,
)
from openclaw_wire.log_records import (
    closed_by_handshake_timer,
    conn_id_of,
    is_handshake_timeout_warning,
    is_preauth_rejected,
    written_by_stub,
)

WITNESSES = 10
TIMELINE_MAX_ROWS = 600


@dataclass(frozen=True)
class StormFigures:
    storm_entries: int
    storm_entries_by_kind: StormCounts
    storm_entries_by_source: StormSources
    sources_agree: bool | None
    final_window_storm_entries: int
    storm_entries_after_startup: int
    verdict: ObservedVerdict
    recovered_at_s: float | None
    time_to_all_connected_s: float | None
    connected_accounts_at_end: int
    handshake_attempts_total: int
    handshake_ms: LatencyFigures
    health_rpc_ms: HealthRpcFigures
    event_loop_lag_ms: LoopLagFigures
    witnesses: list[Witness]


def percentile(samples: Iterable[float], fraction: float) -> float | None:
    """Nearest-rank percentile, rounded to the microsecond; None for no samples."""
    ordered = sorted(samples)
    return round(ordered[max(1, math.ceil(fraction * len(ordered))) - 1], 3) if ordered else None


def p95_time(times: Sequence[float | None]) -> float | None:
    """Nearest-rank 95th percentile of times to all connected; None (never) when any run did not get every
    account connected."""
    if not times or any(t is None for t in times):
        return None
    return percentile([t for t in times if t is not None], 0.95)


def gateway_storm_counts(records: Sequence[Mapping[str, Any]]) -> GatewayLogCounts:
    """What the gateway's own log says: connections its handshake timer closed, and (stub) 503s at the budget.

    A timed-out connection is counted once by its conn id, from either of its two records: the `handshake
    timeout conn=…` warning, or `closed before connect …` with cause handshake-timeout. The first is the one
    that is always there: on a loaded real gateway a late timer can fire after the connect frame has arrived
    but before it was handled, and the close is then logged as `→ close … handshake=connected` instead.
    """
    closed = [conn_id_of(r) for r in records if closed_by_handshake_timer(r)]
    warned = [conn for r in records if is_handshake_timeout_warning(r) and (conn := conn_id_of(r))]
    timeouts = len(closed) + len(set(warned) - set(closed))
    rejected = sum(1 for r in records if is_preauth_rejected(r))
    is_stub = any(written_by_stub(r) for r in records)
    return GatewayLogCounts(handshake_timeout=timeouts, preauth_rejected=rejected if is_stub else None,
                            connect_error=None)


def connected_over_time(record: RunRecord) -> Iterator[tuple[float, int]]:
    """(time, accounts holding a connection just after it) at every hello and disconnect, in time order."""
    changes = sorted([(a.ended_ms, 0, a.account, a.handler_id) for a in record.attempts if a.outcome is Outcome.HELLO]
                     + [(d.at_ms, 1, d.account, d.handler_id) for d in record.disconnects])
    holding: dict[str, int] = {}
    for at_ms, kind, account, handler in changes:
        if kind == 0:
            holding[account] = handler
        elif holding.get(account) == handler:
            del holding[account]
        yield at_ms, len(holding)


def time_to_all_connected_ms(record: RunRecord) -> float | None:
    return next((t for t, n in connected_over_time(record) if n == len(record.accounts)), None)


def verdict_of(record: RunRecord, final_window_storm_entries: int, after_startup: int) -> ObservedVerdict:
    if final_window_storm_entries:
        return "storm"
    if len(record.connected_at_end) < len(record.accounts):
        return "degraded"
    return "recovered" if after_startup else "converged"


def recovered_at_ms(record: RunRecord, last_storm_ms: float) -> float:
    """When every account held a connection again after the storm entry at `last_storm_ms`."""
    return next((t for t, n in connected_over_time(record) if t >= last_storm_ms and n == len(record.accounts)),
                last_storm_ms)


def _sources_agree(record: RunRecord, clients: StormCounts, gateway: GatewayLogCounts | None) -> bool | None:
    if gateway is None:
        return None
    tolerance = len(record.accounts)
    seen_by_clients = clients.model_dump()
    seen_by_clients["handshake_timeout"] += record.probe_handshake_timeouts
    return all(abs(seen_by_clients[kind] - count) <= tolerance
               for kind, count in gateway.model_dump().items() if count is not None)


def storm_attempts_after_startup(record: RunRecord) -> list[Attempt]:
    """The storm entries that decide between `converged` and the rest: those ending after the startup window."""
    return [a for a in record.attempts if a.storm_kind is not None and a.ended_ms >= record.startup_window_ms]


def summarize(record: RunRecord) -> StormFigures:
    storms = [a for a in record.attempts if a.storm_kind is not None]
    by_kind = Counter(a.storm_kind for a in storms)
    clients = StormCounts(**{kind: by_kind.get(kind, 0) for kind in STORM_KINDS})
    final_from = record.duration_ms - record.final_window_ms
    final_window = [a for a in storms if a.ended_ms >= final_from]
    gateway = gateway_storm_counts(record.gateway_records) if record.gateway_records is not None else None
    after_startup = storm_attempts_after_startup(record)
    verdict = verdict_of(record, len(final_window), len(after_startup))
    recovered_ms = recovered_at_ms(record, max(a.ended_ms for a in after_startup)) if verdict == "recovered" else None
    all_connected_ms = time_to_all_connected_ms(record)
    hellos = [a.latency_ms for a in record.attempts if a.outcome is Outcome.HELLO]
    lag = record.event_loop_lag_ms or {}
    return StormFigures(
        storm_entries=len(storms),
        storm_entries_by_kind=clients,
        storm_entries_by_source=StormSources(clients=clients, gateway_log=gateway),
        sources_agree=_sources_agree(record, clients, gateway),
        final_window_storm_entries=len(final_window),
        storm_entries_after_startup=len(after_startup),
        verdict=verdict,
        recovered_at_s=None if recovered_ms is None else round(recovered_ms / 1000.0, 3),
        time_to_all_connected_s=None if all_connected_ms is None else round(all_connected_ms / 1000.0, 3),
        connected_accounts_at_end=len(record.connected_at_end),
        handshake_attempts_total=len(record.attempts),
        handshake_ms=LatencyFigures(p50=percentile(hellos, 0.5), p99=percentile(hellos, 0.99),
                                    max=round(max(hellos), 3) if hellos else None),
        health_rpc_ms=HealthRpcFigures(p50=percentile(record.health_rpc_ms, 0.5),
                                       p99=percentile(record.health_rpc_ms, 0.99), samples=len(record.health_rpc_ms)),
        event_loop_lag_ms=LoopLagFigures(p99=lag.get("p99"), max=lag.get("max")),
        witnesses=[Witness(account=a.account, handler=a.handler_id, at_s=round(a.ended_ms / 1000.0, 3),
                           kind=kind, close_code=a.close_code)
                   for a in final_window[-WITNESSES:] if (kind := a.storm_kind) is not None],
    )


def timeline(record: RunRecord, fault_spans: Sequence[tuple[int, float, float | None]] = (),
             max_rows: int = TIMELINE_MAX_ROWS) -> list[TimelineRow]:
    """Per bucket of scenario time (1 s, or coarser for long runs): attempts, hellos, storm entries, accounts
    connected at the bucket's end, the fault windows (index, from_s, to_s or None) active in it, the slowest
    health RPC sent in it and the worst event-loop delay the gateway reported in it."""
    bucket_ms = max(1000.0, record.duration_ms / max_rows)
    buckets = int(record.duration_ms // bucket_ms) + (record.duration_ms % bucket_ms > 0)
    attempts = [[0, 0, 0] for _ in range(buckets)]
    for a in record.attempts:
        index = min(buckets - 1, int(a.ended_ms // bucket_ms))
        attempts[index][0] += 1
        attempts[index][1] += a.outcome is Outcome.HELLO
        attempts[index][2] += a.storm_kind is not None
    health: list[list[HealthSample]] = [[] for _ in range(buckets)]
    for sample in record.health:
        health[min(buckets - 1, int(sample.at_ms // bucket_ms))].append(sample)
    changes = list(connected_over_time(record))
    rows, cursor, connected = [], 0, 0
    for index in range(buckets):
        end_ms = (index + 1) * bucket_ms
        while cursor < len(changes) and changes[cursor][0] < end_ms:
            connected = changes[cursor][1]
            cursor += 1
        start_s, end_s = index * bucket_ms / 1000.0, end_ms / 1000.0
        active = [i for i, from_s, to_s in fault_spans if from_s < end_s and (to_s is None or to_s > start_s)]
        delays = [d for sample in health[index] if (d := sample.event_loop_lag_ms) is not None]
        rows.append(TimelineRow(t_s=round(start_s, 3), attempts=attempts[index][0], hellos=attempts[index][1],
                                storm_entries=attempts[index][2], connected=connected, faults=active,
                                health_rpc_ms=round(max(s.rpc_ms for s in health[index]), 3) if health[index] else None,
                                event_loop_lag_ms=round(max(delays), 3) if delays else None))
    return rows


def handshake_distribution(attempts: Sequence[Attempt], timeout_ms: float) -> HandshakeDistribution:
    """Every attempt's duration, hello or failure (the report's `handshakeMs`), and how many outlasted the timer."""
    durations = [a.latency_ms for a in attempts]
    return HandshakeDistribution(
        count=len(durations), p10=percentile(durations, 0.1), p50=percentile(durations, 0.5),
        p90=percentile(durations, 0.9), p99=percentile(durations, 0.99),
        max=round(max(durations), 3) if durations else None,
        over_timeout=sum(1 for d in durations if d > timeout_ms))


def handler_errors_correlate(connect_errors: int, gateway: GatewayLogCounts | None, accounts: int) -> bool | None:
    """The handlers' connect errors match the gateway's handshake timeouts one to one, as the field report found
    (within one attempt in flight per account when the run stops); None without the gateway's log."""
    if gateway is None:
        return None
    return abs(connect_errors - gateway.handshake_timeout) <= accounts
