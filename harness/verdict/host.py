"""Whether the host let a run's figures mean anything: the rule that makes a verdict `inconclusive`.

A live run's verdict rests on timers (the gateway's handshake timer, the clients' timeouts and retries) that
the time scale shrinks, so CPU the host takes away from the run's own processes shows up as storm entries
that the gateway under test would not have caused. The rule below looks at what `harness.host` measured while
the accounts ran and says why the run is inconclusive, or None. Its limits come from measurements on this
project's 2-core machine, quiet and with one or two cores held by busy loops (see the README, "Verdicts").
"""

from __future__ import annotations

from collections.abc import Sequence

from harness.events import Attempt
from harness.host import HostTick, HostWindow, ProcessShare
from harness.summary import HostFigures, LoopLagFigures, ProcessCpuFigures
from harness.verdict.figures import percentile

# The share of the run a role's processes may spend runnable but without a CPU. The gateway's is the one that
# moves verdicts (its handshake cost is burned in slices; time without a CPU between them lengthens every
# handshake); the harness's clients tolerate more (runs with the harness waiting 14-28% gave the documented
# verdicts; a gateway waiting 19% and 27% did not).
MAX_WAITED_FRACTION = {"harness": 0.25, "gateway": 0.10}
# A hypervisor's steal over the run, as a share of all CPU time.
MAX_STEAL_FRACTION = 0.10
# How late the harness's own event loop may run its timers (p99, scenario ms), as a share of the clients'
# handshake timeout: past it, the clients' own timers are part of the experiment.
MAX_LOOP_LAG_SHARE_OF_HANDSHAKE_TIMEOUT = 0.10
# How long an unthrottled gateway's event loop may stall on its own work (its liveness warning), as a share of the
# clients' handshake timeout: past it, whatever the run measured waited on the gateway's own business.
MAX_OWN_STALL_SHARE_OF_HANDSHAKE_TIMEOUT = 0.5


def host_figures(window: HostWindow | None, harness_loop_lag_ms: Sequence[float],
                 gateway_cpu_quota: float | None = None) -> HostFigures | None:
    if window is None:
        return None
    return HostFigures(
        cores=window.cores, wall_s=round(window.wall_s, 3), harness=_cpu(window.harness, window.wall_s),
        gateway=_cpu(window.gateway, window.wall_s),
        steal_fraction=None if window.steal_fraction is None else round(window.steal_fraction, 4),
        cpu_pressure_fraction=None if window.cpu_pressure_fraction is None else round(window.cpu_pressure_fraction, 4),
        harness_loop_lag_ms=LoopLagFigures(p99=percentile(harness_loop_lag_ms, 0.99),
                                           max=round(max(harness_loop_lag_ms), 3) if harness_loop_lag_ms else None),
        gateway_cpu_quota=gateway_cpu_quota,
    )


def _cpu(share: ProcessShare | None, wall_s: float) -> ProcessCpuFigures | None:
    if share is None:
        return None
    return ProcessCpuFigures(cpu_s=round(share.cpu_s, 3), waited_s=round(share.waited_s, 3),
                             waited_fraction=round(share.waited_s / wall_s, 4))


def too_busy(host: HostFigures | None, handshake_timeout_ms: float, *, fleet_member: bool = False) -> str | None:
    """Why the host was too busy for this run's verdict to mean anything; None when it was not."""
    if host is None:
        return None
    # A gateway under a cpu_quota is meant to wait: the kernel counts its throttled time as run-queue wait, per
    # thread, and that cannot be told apart from the host's share (seen: 28.3 s of 30 s at quota 0.05, quiet).
    # A fleet's gateways wait for each other: sharing the host is what the fleet scenario is about.
    gateway = None if host.gateway_cpu_quota or fleet_member else host.gateway
    for role, cpu in (("harness", host.harness), ("gateway", gateway)):
        if cpu is not None and cpu.waited_fraction > MAX_WAITED_FRACTION[role]:
            return (f"the {role}'s processes waited for a CPU {cpu.waited_fraction:.0%} of the run "
                    f"(limit {MAX_WAITED_FRACTION[role]:.0%}): the host was busy with other work")
    if host.steal_fraction is not None and host.steal_fraction > MAX_STEAL_FRACTION:
        return f"the hypervisor stole {host.steal_fraction:.0%} of the CPU (limit {MAX_STEAL_FRACTION:.0%})"
    lag = host.harness_loop_lag_ms.p99
    limit_ms = MAX_LOOP_LAG_SHARE_OF_HANDSHAKE_TIMEOUT * handshake_timeout_ms
    if lag is not None and lag > limit_ms:
        return (f"the harness's event loop ran its timers {lag:.0f} ms late (p99, scenario time; limit {limit_ms:.0f} "
                f"ms, {MAX_LOOP_LAG_SHARE_OF_HANDSHAKE_TIMEOUT:.0%} of the handshake timeout)")
    return None


def stalled_on_its_own(stall_ms: float | None, handshake_timeout_ms: float, *,
                       gateway_throttled: bool) -> str | None:
    """Why an unthrottled real gateway's own stall leaves the run without a verdict; None when it does not.

    The real gateway now and then blocks its event loop for seconds with nothing of the run loading it (seen:
    13.6 s on 2026.4.29, 137.8 s once on 4.24 in the codex extension's model discovery). Under a cpu_quota a
    stall is what the run is about, so only an unthrottled gateway's count."""
    limit_ms = MAX_OWN_STALL_SHARE_OF_HANDSHAKE_TIMEOUT * handshake_timeout_ms
    if gateway_throttled or stall_ms is None or stall_ms <= limit_ms:
        return None
    return (f"the gateway's own event loop stalled for {stall_ms / 1000:.1f} s (its liveness warning; limit "
            f"{limit_ms / 1000:.1f} s, {MAX_OWN_STALL_SHARE_OF_HANDSHAKE_TIMEOUT:.0%} of the handshake timeout) with "
            "no quota holding it: its own work, not this run's")


def busy_while_storming(ticks: Sequence[HostTick], storm_attempts: Sequence[Attempt], time_scale: float, *,
                        gateway_throttled: bool = False) -> str | None:
    """Why the storm entries after startup may be the host's doing: over the span they happened in, from the
    first one's connect to the last one's end, a role's loop thread waited for a CPU more than its limit. An
    average over the whole run hides a burst of contention early in it (seen: the coordinator's first minute of
    scenario time timing out batch after batch while the gateway waited 8.7% of the run); None otherwise."""
    if not storm_attempts or len(ticks) < 2:
        return None
    from_s = min(a.started_ms for a in storm_attempts) * time_scale / 1000.0
    to_s = max(a.ended_ms for a in storm_attempts) * time_scale / 1000.0
    before = max((t for t in ticks if t.at_s <= from_s), key=lambda t: t.at_s, default=ticks[0])
    after = min((t for t in ticks if t.at_s >= to_s), key=lambda t: t.at_s, default=ticks[-1])
    span_s = after.at_s - before.at_s
    if span_s <= 0:
        return None
    roles = (("harness", before.harness_waited_s, after.harness_waited_s),
             ("gateway", before.gateway_waited_s, after.gateway_waited_s))
    for role, waited_before, waited_after in roles:
        if role == "gateway" and gateway_throttled:  # its quota's throttling counts as waiting (see too_busy)
            continue
        if waited_before is None or waited_after is None:
            continue
        fraction = (waited_after - waited_before) / span_s
        if fraction > MAX_WAITED_FRACTION[role]:
            return (f"the {role}'s processes waited for a CPU {fraction:.0%} of the {span_s:.1f} s in which the "
                    f"storm entries after startup happened (limit {MAX_WAITED_FRACTION[role]:.0%}): the host was "
                    f"busy with other work")
    return None
