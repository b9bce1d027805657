"""Profiles: the shipped ones load; every bad field gets one line that names it."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.errors import BadInput
from harness.profile import load_profile, parse_profile
from harness.target import OpenClawTarget

PROFILES = Path(__file__).resolve().parent.parent / "profiles"
MINIMAL: dict[str, Any] = {"name": "t", "accounts": {"count": 2}}


@pytest.mark.parametrize("path", sorted(PROFILES.glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_profiles_load(path: Path) -> None:
    profile = load_profile(path, environ={})
    assert profile.name == path.stem
    assert len(profile.channels) == profile.account_count
    for arm in profile.arms:
        assert profile.thresholds_for(arm), f"{path.name}: arm {arm} asserts nothing"


def test_defaults() -> None:
    profile = parse_profile(MINIMAL, environ={})
    assert profile.arms == ("shipped", "coordinator")
    assert profile.channels == ("matrix", "matrix")
    assert profile.target.kind == "stub" and profile.target.protocol == 3
    assert (profile.coordinator.start_jitter_ms, profile.coordinator.max_concurrent_starts) == (2000, 3)


def test_coordinator_settings_come_from_the_prs_env_vars_unless_the_profile_says() -> None:
    env = {"OPENCLAW_APPROVAL_HANDLER_MAX_CONCURRENT_STARTS": "5", "OPENCLAW_APPROVAL_HANDLER_START_JITTER_MS": "2.5"}
    assert parse_profile(MINIMAL, environ=env).coordinator.max_concurrent_starts == 5
    assert parse_profile(MINIMAL, environ=env).coordinator.start_jitter_ms == 2000  # "2.5" is invalid: default
    explicit = {**MINIMAL, "coordinator": {"max_concurrent_starts": 1}}
    assert parse_profile(explicit, environ=env).coordinator.max_concurrent_starts == 1


def with_(path: str, value: Any) -> dict[str, Any]:
    data = copy.deepcopy(MINIMAL)
    node = data
    keys = path.split(".")
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    node[keys[-1]] = value
    return data


@pytest.mark.parametrize(("data", "message"), [
    ({"accounts": {"count": 2}}, "name: required"),
    (with_("nmae", "x"), "nmae: unknown key"),
    (with_("accounts.count", "eleven"), "accounts.count: expected an integer, got a string"),
    (with_("accounts.count", 0), "accounts.count: expected a number >= 1, got 0"),
    (with_("accounts.count", True), "accounts.count: expected an integer, got a boolean"),
    (with_("accounts.channels", {"matrix": 1}), "accounts.channels: the counts add up to 1, expected count (2)"),
    (with_("accounts.channels", {"irc": 2}), "accounts.channels.irc: unknown channel"),
    (with_("arms", ["shipped", "jitter-only"]), "arms[1]: unknown arm 'jitter-only'"),
    (with_("time_scale", 0), "time_scale: expected a number > 0, got 0"),
    (with_("duration_s", 10), "windows.final_s: expected at most duration_s (10), got 30"),
    (with_("target.kind", "docker"), "target.kind: expected stub, url or openclaw, got 'docker'"),
    (with_("target.connect_cost_before_timer", "gauss:3"), "target.connect_cost_before_timer: expected fixed:MS"),
    (with_("target.profile", "may-2026"), "target: expected one of april-2026, current"),
    (with_("target.url", "ws://127.0.0.1:1/"), "target.url: only with kind: url"),
    ({**MINIMAL, "target": {"kind": "url", "url": "ws://10.0.0.5:18789/", "token": "t"}},
     "target.url: refused '10.0.0.5': load goes to loopback only"),
    ({**MINIMAL, "target": {"kind": "url", "url": "http://127.0.0.1:1/", "token": "t"}},
     "target.url: expected a ws:// URL"),
    ({**MINIMAL, "target": {"kind": "openclaw"}}, "target.version: required"),
    ({**MINIMAL, "target": {"kind": "openclaw", "version": "latest"}},
     "target.version: expected an npm version such as 2026.4.24, got 'latest'"),
    ({**MINIMAL, "target": {"kind": "openclaw", "version": "2026.4.24", "cpu_quota": 0}},
     "target.cpu_quota: expected a number > 0, got 0"),
    ({**MINIMAL, "target": {"kind": "openclaw", "version": "2026.4.24", "cpu_quota": 64}},
     "target.cpu_quota: expected a number <="),
    ({**MINIMAL, "target": {"kind": "openclaw", "version": "2026.4.24", "connect_cost_before_timer": "fixed:5"}},
     "target.connect_cost_before_timer: not an option of kind: openclaw"),
    ({**MINIMAL, "target": {"kind": "openclaw", "version": "2026.4.24"}, "time_scale": 0.1},
     "time_scale: the real gateway runs in real time; expected 1 with target kind openclaw, got 0.1"),
    (with_("coordinator.max_concurrent_starts", 0), "coordinator.max_concurrent_starts: expected a number >= 1"),
    (with_("assert", {"backoff": {"verdict": "storm"}}), "assert.backoff: not an arm of this profile"),
    (with_("assert", {"all": {"storms": "== 0"}}), "assert.all.storms: unknown metric"),
    (with_("assert", {"shipped": {"verdict": "stormy"}}), "assert.shipped.verdict: expected a verdict"),
])
def test_bad_profiles_name_the_field(data: dict[str, Any], message: str) -> None:
    with pytest.raises(BadInput) as caught:
        parse_profile(data, environ={})
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(("version", "protocol"), [("2026.4.24", 3), ("2026.4.29", 3), ("2026.9.6", 4)])
def test_openclaw_targets_speak_their_versions_protocol_and_sign_by_default(version: str, protocol: int) -> None:
    profile = parse_profile({**MINIMAL, "target": {"kind": "openclaw", "version": version, "cpu_quota": 0.1}},
                            environ={})
    target = profile.target
    assert isinstance(target, OpenClawTarget)
    assert target.protocol == protocol and target.device_signed and target.cpu_quota == 0.1
    assert target.effective_handshake_timeout_ms == (10_000 if protocol == 3 else 15_000)
    with pytest.raises(BadInput, match="^--time-scale: the real gateway runs in real time"):
        profile.with_overrides(time_scale=0.5)


def test_yaml_syntax_errors_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\naccounts: {count: 2\n", encoding="utf-8")
    with pytest.raises(BadInput, match=r"broken.yaml: not valid YAML at line \d+"):
        load_profile(path)


def test_shipped_profiles_round_trip_through_yaml() -> None:
    data = yaml.safe_load((PROFILES / "matrix-11-accounts.yaml").read_text(encoding="utf-8"))
    assert data["target"]["connect_cost_before_timer"] == "fixed:2000@10"
