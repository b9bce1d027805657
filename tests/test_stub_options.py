"""The stub's options and environment variables cannot crash it: every bad value is one line naming it, exit 2.

Numbers are read in ASCII digits only (Python's int() and float() would take `１２３`, `1_000`, `nan`), every
number is finite, and every duration and the time scale has a range, a duration also a least real (scaled)
value, so no option can overflow, spin a core or bind a port nobody asked for. The table in config.py is the
one place these rules live; here they are checked through `config_from_args` (in process), through `main`
(the exit code and the one line) and, for the cases the issue reported, through `python -m gateway_stub`.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway_stub.__main__ import EXIT_BAD_OPTION, main
from gateway_stub.config import (
    MAX_DURATION_MS,
    MAX_TIME_SCALE,
    MIN_REAL_TIMER_MS,
    MIN_TIME_SCALE,
    OPTIONS,
    ConfigError,
    StubConfig,
    config_from_args,
)
from gateway_stub.cost import MAX_COST_MS, MIN_REAL_SLICE_MS

BY_FLAG = {option.flag: option for option in OPTIONS}
INTEGER_FLAGS = ("--port", "--handshake-timeout-ms", "--max-preauth-per-ip", "--max-pending-approvals", "--seed")
NUMBER_FLAGS = ("--time-scale", "--challenge-latency-ms", "--hello-latency-ms", "--tick-interval-ms",
                "--ping-interval-ms", "--ping-timeout-ms")
COST_FLAGS = tuple(option.flag for option in OPTIONS if option.metavar == "COST")


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENCLAW_", "GATEWAY_STUB_"))}
    return {**env, **extra}


def refused(argv: list[str], environ: dict[str, str] | None = None) -> str:
    """The ConfigError message for options that must be refused."""
    with pytest.raises(ConfigError) as caught:
        config_from_args(argv, environ or {})
    return str(caught.value)


def one_line(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """Run `main` (it stops at the bad option, before any socket) and return its one stderr line."""
    assert main(argv) == EXIT_BAD_OPTION
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("gateway_stub: error: ")
    return lines[0]


# ---------------------------------------------------------------------------------------------
# What the issue reported, through the real command line


@pytest.mark.parametrize(("args", "named", "expected"), [
    (["--handshake-timeout-ms", "9" * 400], "--handshake-timeout-ms", "at most 30 digits"),
    (["--port", "\uff11\uff12\uff13"], "--port", "ASCII digits"),
    (["--tick-interval-ms", "1e-300"], "--tick-interval-ms", "1..2147483647 ms"),
    (["--time-scale", "1e-300"], "--time-scale", "0.001..1000"),
    (["--time-scale", "nan"], "--time-scale", "finite"),
    (["--time-scale", "0.001", "--ping-interval-ms", "500"], "--ping-interval-ms", "once scaled"),
])
def test_the_reported_options_exit_2_with_one_line_and_no_traceback(args: list[str], named: str,
                                                                     expected: str) -> None:
    result = subprocess.run([sys.executable, "-m", "gateway_stub", "--port", "0", *args], capture_output=True,
                            text=True, timeout=20, env=clean_env())
    assert result.returncode == EXIT_BAD_OPTION
    assert result.stdout == "" and "Traceback" not in result.stderr
    [line] = result.stderr.splitlines()
    assert named in line and expected in line, line


def test_a_bad_environment_variable_names_the_variable_and_the_option() -> None:
    result = subprocess.run([sys.executable, "-m", "gateway_stub"], capture_output=True, text=True, timeout=20,
                            env=clean_env(GATEWAY_STUB_TICK_INTERVAL_MS="0.5"))
    assert result.returncode == EXIT_BAD_OPTION and "Traceback" not in result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith("gateway_stub: error: GATEWAY_STUB_TICK_INTERVAL_MS (--tick-interval-ms): "), line


# ---------------------------------------------------------------------------------------------
# Numbers: ASCII digits, finite


@pytest.mark.parametrize("flag", INTEGER_FLAGS)
@pytest.mark.parametrize("text", ["\uff11\uff12", "\u0661\u0662", "1_000", " 12", "12 ", "1.0", "1e3", "0x10", "",
                                  "\u00b2", "9" * 5000])
def test_integers_are_ascii_digits_only(capsys: pytest.CaptureFixture[str], flag: str, text: str) -> None:
    line = one_line(capsys, [flag, text])
    assert flag in line


@pytest.mark.parametrize("flag", NUMBER_FLAGS)
@pytest.mark.parametrize("text", ["nan", "NaN", "inf", "-inf", "Infinity", "1e999", "\uff11", "1_0", " 1", "0x1p3",
                                  ""])
def test_numbers_are_finite_and_ascii(capsys: pytest.CaptureFixture[str], flag: str, text: str) -> None:
    line = one_line(capsys, [flag, text])
    assert flag in line


@pytest.mark.parametrize("flag", COST_FLAGS)
@pytest.mark.parametrize("text", ["fixed:nan", "fixed:inf", "fixed:\uff11", "uniform:1_0,20", "fixed:1e999",
                                  f"fixed:{MAX_COST_MS * 2:.0f}", "lognormal:40,11", "fixed:100@1e-300",
                                  "fixed:100@nan"])
def test_costs_are_finite_bounded_and_sliced_sanely(capsys: pytest.CaptureFixture[str], flag: str, text: str) -> None:
    line = one_line(capsys, [flag, text])
    assert flag in line


# ---------------------------------------------------------------------------------------------
# Ranges, and the least a duration may become once scaled


@pytest.mark.parametrize(("argv", "fragment"), [
    (["--time-scale", "0.0009"], "expected 0.001..1000"),
    (["--time-scale", "1001"], "expected 0.001..1000"),
    (["--time-scale", "0"], "expected 0.001..1000"),
    (["--tick-interval-ms", "0.5"], "expected 1..2147483647 ms"),
    (["--ping-timeout-ms", str(MAX_DURATION_MS + 1)], "expected 1..2147483647 ms"),
    (["--handshake-timeout-ms", "0"], "expected 1..2147483647 ms"),
    (["--handshake-timeout-ms", str(MAX_DURATION_MS + 1)], "expected 1..2147483647 ms"),
    (["--time-scale", "0.01", "--handshake-timeout-ms", "99"], "0.99 ms"),
    (["--time-scale", "0.001", "--tick-interval-ms", "999"], "0.999 ms"),
    (["--challenge-latency-ms", "-1"], "expected 0..2147483647 ms"),
    (["--port", "65536"], "expected 0..65535"),
    (["--max-preauth-per-ip", "0"], "expected 1..2147483647"),
    (["--max-pending-approvals", "2147483648"], "expected 1..2147483647"),
    (["--seed", str(2**64)], "expected -18446744073709551615..18446744073709551615"),
    (["--time-scale", "0.01", "--connect-cost-before-timer", "fixed:2000@5"], "@SLICE_MS of at least 0.1 ms"),
])
def test_out_of_range_values_say_the_range(argv: list[str], fragment: str) -> None:
    message = refused(argv)
    assert message.startswith(argv[-2] + ": "), message
    assert fragment in message, message


def test_the_bounds_themselves_are_accepted() -> None:
    config = config_from_args(["--time-scale", str(MIN_TIME_SCALE), "--tick-interval-ms", "1000",
                               "--ping-interval-ms", "1000", "--ping-timeout-ms", "1000",
                               "--handshake-timeout-ms", "1000", "--challenge-latency-ms", "0",
                               "--connect-cost-before-timer", "fixed:2000@100"], {})
    assert config.scaled_s(config.tick_interval_ms) * 1000 == pytest.approx(MIN_REAL_TIMER_MS)
    assert config.scaled_s(config.connect_cost_before_timer.slice_ms) * 1000 == pytest.approx(MIN_REAL_SLICE_MS)
    top = config_from_args(["--time-scale", str(MAX_TIME_SCALE), "--handshake-timeout-ms", str(MAX_DURATION_MS),
                            "--port", "65535", "--seed", "-" + str(2**64 - 1), "--port", "+00080"], {})
    assert top.handshake_timeout_ms == MAX_DURATION_MS and top.port == 80 and top.seed == -(2**64 - 1)
    # Every default stays valid at the smallest time scale.
    assert config_from_args(["--time-scale", "0.001"], {}).tick_interval_ms == 30_000


def test_environment_values_get_the_same_checks_and_name_the_variable() -> None:
    message = refused([], {"GATEWAY_STUB_TIME_SCALE": "0.001", "GATEWAY_STUB_PING_INTERVAL_MS": "900"})
    assert message.startswith("GATEWAY_STUB_PING_INTERVAL_MS (--ping-interval-ms): expected at least 1 ms"), message
    message = refused([], {"OPENCLAW_GATEWAY_PORT": "\uff11\uff12\uff13"})
    assert message.startswith("OPENCLAW_GATEWAY_PORT (--port): expected an integer in ASCII digits"), message
    # The option still wins over a bad variable.
    assert config_from_args(["--port", "0"], {"OPENCLAW_GATEWAY_PORT": "x"}).port == 0


def test_a_config_built_in_code_is_held_to_the_same_ranges() -> None:
    for field, value in [("time_scale", math.nan), ("time_scale", math.inf), ("tick_interval_ms", -1.0),
                         ("handshake_timeout_ms", 10**400), ("ping_interval_ms", math.nan), ("port", 70000)]:
        with pytest.raises(ConfigError) as caught:
            StubConfig(**{field: value})
        assert caught.value.field == field


def test_help_shows_every_range() -> None:
    result = subprocess.run([sys.executable, "-m", "gateway_stub", "--help"], capture_output=True, text=True,
                            timeout=20, env=clean_env())
    text = " ".join(result.stdout.split())
    for option in OPTIONS:
        if option.limits is not None:
            assert f"accepts {option.limits.describe()}" in text, option.flag
    assert "0.001..1000" in text and "at least 1 ms once scaled" in text and "at least 0.1 ms once scaled" in text


# ---------------------------------------------------------------------------------------------
# Any text at all: a config or one ConfigError, never another exception

TEXT = st.text(max_size=30) | st.sampled_from(["nan", "inf", "1e-300", "1e300", "9" * 400, "0", "-0", "1e3",
                                               "fixed:1@0.00001", "lognormal:1,1e308", "\uff10"])


@given(flag=st.sampled_from(sorted(BY_FLAG)), text=TEXT, via_env=st.booleans(),
       time_scale=st.sampled_from([None, "0.001", "1", "1000"]))
def test_any_value_for_any_option_is_a_config_or_one_config_error(flag: str, text: str, via_env: bool,
                                                                  time_scale: str | None) -> None:
    if text.startswith("-") and not via_env:
        return  # argparse would read it as an option, not a value: that path is covered above
    option = BY_FLAG[flag]
    argv, environ = ([], {option.env: text}) if via_env else ([flag, text], {})
    if time_scale is not None and flag != "--time-scale":
        argv += ["--time-scale", time_scale]
    argv += ["--host", "127.0.0.1"] if flag != "--host" else []
    try:
        config: Any = config_from_args(argv, environ)
    except ConfigError as exc:
        message = str(exc)
        assert "\n" not in message and len(message) < 400, message
        assert message.startswith(f"{option.env} ({flag}): " if via_env else f"{flag}: "), message
        return
    # Accepted: then it is a config the stub can run with.
    assert config.time_scale >= MIN_TIME_SCALE
    assert config.scaled_s(config.tick_interval_ms) * 1000 >= MIN_REAL_TIMER_MS
    assert config.scaled_s(config.effective_handshake_timeout_ms) * 1000 >= MIN_REAL_TIMER_MS
