"""The fault timeline: parsing (one line naming the field), time scaling, and the scheduler's record."""

from __future__ import annotations

from typing import Any

import pytest

from harness.errors import BadInput
from harness.faults.client import FaultError
from harness.faults.scheduler import FaultScheduler
from harness.faults.timeline import ToxicSpec, parse_faults


def test_windows_parse_with_toxiproxy_defaults() -> None:
    [spike, down, restart] = parse_faults([
        {"at_s": 10, "until_s": 20, "toxic": {"type": "latency", "attributes": {"latency": 12000}}},
        {"at_s": 30, "gateway_down": True},
        {"at_s": 40, "until_s": 42, "gateway_restart": True},
    ], duration_s=60)
    assert (spike.kind, spike.toxic, spike.toxic_name) == (
        "toxic", ToxicSpec("latency", "downstream", 1.0, {"latency": 12000}), "fault-0")
    assert (down.kind, down.end_s) == ("gateway_down", None)
    assert (restart.kind, restart.restart) == ("gateway_restart", True)


def test_time_attributes_follow_the_time_scale_and_rates_are_divided_by_it() -> None:
    latency = ToxicSpec("latency", attributes={"latency": 12000, "jitter": 100})
    assert latency.scaled_attributes(0.1) == {"latency": 1200, "jitter": 10}
    assert ToxicSpec("bandwidth", attributes={"rate": 100}).scaled_attributes(0.1) == {"rate": 1000}
    assert ToxicSpec("slicer", attributes={"delay": 500, "average_size": 64}).scaled_attributes(0.5) == {
        "delay": 250, "average_size": 64}


@pytest.mark.parametrize(("raw", "message"), [
    ({"faults": "soon"}, "faults: expected a list"),
    ([{"until_s": 5, "gateway_down": True}], "faults[0].at_s: required"),
    ([{"at_s": 70, "gateway_down": True}], "faults[0].at_s: expected 0 <= at_s < duration_s (60)"),
    ([{"at_s": 10, "until_s": 5, "gateway_down": True}], "faults[0].until_s: expected a time after at_s"),
    ([{"at_s": 1}], "faults[0]: expected exactly one of toxic, gateway_down"),
    ([{"at_s": 1, "gateway_down": True, "toxic": {"type": "latency"}}], "expected exactly one of"),
    ([{"at_s": 1, "gateway_restart": True}], "faults[0].until_s: a gateway_restart needs"),
    ([{"at_s": 1, "toxic": {"type": "lag"}}], "faults[0].toxic.type: expected one of latency, bandwidth"),
    ([{"at_s": 1, "toxic": {"type": "latency", "stream": "sideways"}}], "faults[0].toxic.stream"),
    ([{"at_s": 1, "toxic": {"type": "latency", "toxicity": 2}}],
     "faults[0].toxic.toxicity: expected a number <= 1, got 2"),
    ([{"at_s": 1, "toxic": {"type": "latency", "attributes": {"rate": 5}}}],
     "faults[0].toxic.attributes.rate: not an attribute of latency (expected latency, jitter)"),
    ([{"at_s": 1, "toxic": {"type": "timeout", "attributes": {"timeout": -1}}}],
     "faults[0].toxic.attributes.timeout: expected a number >= 0"),
    ([{"at_s": 1, "when": 3, "gateway_down": True}], "faults[0].when: unknown key"),
])
def test_bad_windows_name_the_field(raw: Any, message: str) -> None:
    with pytest.raises(BadInput) as caught:
        parse_faults(raw["faults"] if isinstance(raw, dict) else raw, duration_s=60)
    assert message in str(caught.value)


class RecordingProxy:
    def __init__(self, fail_on: str | None = None) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.fail_on = fail_on

    def _record(self, name: str, detail: Any = None) -> None:
        if name == self.fail_on:
            raise FaultError(f"{name} refused")
        self.calls.append((name, detail))

    def add_toxic(self, **toxic: Any) -> None:
        self._record("add_toxic", toxic)

    def destroy_toxic(self, name: str) -> None:
        self._record("destroy_toxic", name)

    def disable(self) -> None:
        self._record("disable")

    def enable(self) -> None:
        self._record("enable")


def test_the_scheduler_applies_and_removes_in_time_order_and_records_it() -> None:
    windows = parse_faults([
        {"at_s": 20, "until_s": 50, "toxic": {"type": "latency", "attributes": {"latency": 1000}}},
        {"at_s": 30, "until_s": 40, "gateway_restart": True},
        {"at_s": 50, "gateway_down": True},
    ], duration_s=100)
    restarted: list[float] = []
    proxy = RecordingProxy()
    scheduler = FaultScheduler(proxy, windows, 0.5, on_restart=lambda: restarted.append(now_s))  # type: ignore[arg-type]
    steps = scheduler.steps()
    # At 50 s the latency toxic's removal and the outage's start are due together: applies go first.
    assert [(s.at_s, s.window.index, s.apply) for s in steps] == [
        (20, 0, True), (30, 1, True), (40, 1, False), (50, 2, True), (50, 0, False)]
    for step in steps:
        now_s = step.at_s + 0.25  # the driver wakes a little late
        scheduler.carry_out(step, now_s)
    assert [name for name, _ in proxy.calls] == ["add_toxic", "disable", "enable", "disable", "destroy_toxic"]
    assert proxy.calls[0][1]["attributes"] == {"latency": 500}  # scaled by 0.5
    assert restarted == [40.25]  # the accounts re-register when the restarted gateway is back
    described = scheduler.describe()
    assert [(d.kind, d.applied_at_s, d.removed_at_s) for d in described] == [
        ("toxic", 20.25, 50.25), ("gateway_restart", 30.25, 40.25), ("gateway_down", 50.25, None)]
    assert described[0].type == "latency" and described[1].type is None


def test_a_refused_fault_is_recorded_and_the_run_goes_on() -> None:
    windows = parse_faults([{"at_s": 0.01, "until_s": 0.02, "toxic": {"type": "timeout"}}], duration_s=1)
    scheduler = FaultScheduler(RecordingProxy(fail_on="add_toxic"), windows, 1.0)  # type: ignore[arg-type]
    for step in scheduler.steps():
        scheduler.carry_out(step, step.at_s)
    [described] = scheduler.describe()
    assert described.applied_at_s is None and described.errors == ["add_toxic refused"]
    assert described.removed_at_s == 0.02  # the removal was still carried out
