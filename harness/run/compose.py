"""Compose: from a profile and an arm to the parts of a live run, decided before anything starts."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from harness.client.connect_shape import ClientShape
from harness.policy.arms import ARMS, Arm
from harness.profile import Profile
from harness.target import OpenClawTarget, StubTarget, Target
from openclaw_wire.device_auth import DeviceIdentity


@dataclass(frozen=True)
class MasterSettings:
    """`--master`: this process is a Locust master whose workers are started elsewhere (`harness run --worker`)."""

    bind_host: str = "127.0.0.1"
    port: int = 5557


@dataclass(frozen=True)
class Parts:
    profile: Profile
    arm: Arm
    out_dir: Path
    stub_args: tuple[str, ...]  # the run's own options for a stub target: time scale, seed, the dedup switch
    shape: ClientShape  # how the fake clients connect: protocol, approver access, device key
    handshake_timeout_ms: int  # the clients' socket-level upgrade timeout, as the reference client's
    target: Target  # the target as this arm runs it (in-process: the arm sets the gateway's execApprovals)
    master: MasterSettings | None = None  # --master: the workers connect from elsewhere
    start_barrier: Path | None = None  # a fleet member: wait here for the fleet's start (harness.run.fleet)


def compose(profile: Profile, arm_name: str, out_dir: Path, master: MasterSettings | None = None,
            start_barrier: Path | None = None) -> Parts:
    arm = ARMS[arm_name]
    target = profile.target
    device = DeviceIdentity.generate() if target.device_signed else None
    return Parts(profile=profile, arm=arm, out_dir=out_dir, stub_args=_stub_args(profile, arm),
                 shape=ClientShape(target.protocol, device),
                 handshake_timeout_ms=target.effective_handshake_timeout_ms, target=_arm_target(target, arm),
                 master=master, start_barrier=start_barrier)


def _arm_target(target: Target, arm: Arm) -> Target:
    if isinstance(target, OpenClawTarget) and target.inprocess:
        return replace(target, exec_approvals=arm.name != "approvals-off")
    return target


def _stub_args(profile: Profile, arm: Arm) -> tuple[str, ...]:
    if not isinstance(profile.target, StubTarget):
        return ()
    args = ["--time-scale", str(profile.time_scale)]
    if arm.approval_fix == "gateway-dedup":
        args += ["--approval-dedup", "intent"]
    if profile.seed is not None:
        args += ["--seed", str(profile.seed)]
    return tuple(args)
