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
    (with_("time_scale", 0), "time_scale: expected a number >= 0.001, got 0"),
    ({**MINIMAL, "duration_s": 10, "windows": {"startup_s": 5}},
     "windows.final_s: the default (30 s) is not at most duration_s (10): set windows.final_s"),
    ({**MINIMAL, "duration_s": 10, "windows": {"startup_s": 5, "final_s": 20}},
     "windows.final_s: expected at most duration_s (10), got 20"),
    (with_("target.kind", "docker"), "target.kind: expected stub, url, openclaw or sim, got 'docker'"),
    (with_("target.connect_cost_before_timer", "gauss:3"), "target.connect_cost_before_timer: expected fixed:MS"),
    (with_("target.profile", "may-2026"),
     "target.profile: expected one of april-2026, april-2026.4.29, current, got 'may-2026'"),
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


@pytest.mark.parametrize(("version", "protocol", "handshake_timeout_ms"),
                         # each package's DEFAULT_PREAUTH_HANDSHAKE_TIMEOUT_MS: 1e4 in 4.24, 15e3 in 4.29 and 9.6
                         [("2026.4.24", 3, 10_000), ("2026.4.29", 3, 15_000), ("2026.9.6", 4, 15_000)])
def test_openclaw_targets_speak_their_versions_protocol_and_sign_by_default(version: str, protocol: int,
                                                                             handshake_timeout_ms: int) -> None:
    profile = parse_profile({**MINIMAL, "target": {"kind": "openclaw", "version": version, "cpu_quota": 0.1}},
                            environ={})
    target = profile.target
    assert isinstance(target, OpenClawTarget)
    assert target.protocol == protocol and target.device_signed and target.cpu_quota == 0.1
    assert target.effective_handshake_timeout_ms == handshake_timeout_ms
    with pytest.raises(BadInput, match="^--time-scale: the real gateway runs in real time"):
        profile.with_overrides(time_scale=0.5)


def test_yaml_syntax_errors_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\naccounts: {count: 2\n", encoding="utf-8")
    with pytest.raises(BadInput, match=r"broken.yaml:\d+: not valid YAML: "):
        load_profile(path)


def test_shipped_profiles_round_trip_through_yaml() -> None:
    data = yaml.safe_load((PROFILES / "matrix-11-accounts.yaml").read_text(encoding="utf-8"))
    assert data["target"]["connect_cost_before_timer"] == "fixed:2000@10"


def test_every_problem_in_a_file_is_reported_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: 'not a name!'\n"
                    "accounts: {count: 0}\n"
                    "arms: [shipped, jittery]\n"
                    "target:\n"
                    "  handshake_timeout_ms: -5\n"
                    "  cost_clock: bogus\n"
                    "windows: {startup_s: .nan}\n"
                    "surprise: 1\n", encoding="utf-8")
    with pytest.raises(BadInput) as caught:
        load_profile(path, environ={})
    lines = str(caught.value).splitlines()
    assert [line.split(": ", 2)[0:2] for line in lines] == [
        [f"{path}:1", "name"], [f"{path}:2", "accounts.count"], [f"{path}:3", "arms[1]"],
        [f"{path}:5", "target.handshake_timeout_ms"], [f"{path}:6", "target.cost_clock"],
        [f"{path}:7", "windows.startup_s"], [f"{path}:8", "surprise"]]


@pytest.mark.parametrize(("text", "message"), [
    ("name: x\naccounts: {count: 2}\naccounts: {count: 3}\n",
     ":3: not valid YAML: duplicate key 'accounts' (first on line 2)"),
    ("name: x\naccounts: {count: 2}\nfaults:\n  - {1: 2}\n", ":4: not valid YAML: expected a string key, got int"),
    ("name: x\naccounts: {count: 2}\ntime_scale: .inf\n", ":3: time_scale: expected a finite number, got inf"),
    ("name: x\naccounts: {count: 2}\n"
     "faults: [{at_s: 1, until_s: 2, toxic: {type: latency, attributes: {latency: .inf}}}]\n",
     ":3: faults[0].toxic.attributes.latency: expected a finite number, got inf"),
    ("name: x\naccounts: {count: 1, channels: {matrix: 300000000}}\n",
     ":2: accounts.channels.matrix: expected an integer from 0 to 10000, got 300000000"),
    ("name: x\naccounts: {count: 2}\ntarget: {kind: url, url: 'ws://[::1', token: t}\n",
     ":3: target.url: expected a ws:// URL with a host and a port"),
    ("name: x\naccounts: {count: 2}\ntarget: {kind: url, url: 'ws://127.0.0.1:abc/', token: t}\n",
     ":3: target.url: expected a ws:// URL with a host and a port"),
    ("name: x\naccounts: {count: 2}\narms: [[shipped]]\n", ":3: arms[0]: unknown arm a list"),
    ("name: x\naccounts: {count: 2}\ntarget: {challenge_latency_ms: -1}\n", ":3: target.challenge_latency_ms: "),
    ("name: x\naccounts: {count: 2}\nprobe: {interval_ms: 0.0001}\ntime_scale: 0.1\n",
     ":3: probe.interval_ms: expected 0 (off) or at least 1 ms of real time"),
])
def test_what_the_harness_or_the_stub_would_refuse_is_refused_when_the_profile_loads(
        tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(BadInput) as caught:
        load_profile(path, environ={})
    assert f"{path}{message}" in str(caught.value)


def test_a_profile_that_is_not_utf8_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"name: x\naccounts: {count: 2}\ndescription: caf\xe9\n")
    with pytest.raises(BadInput, match=r"latin1.yaml:3: not valid UTF-8"):
        load_profile(path, environ={})
