"""Fuzzing profile loading and the command line's options: every input ends in a result or one `BadInput`.

Profiles are the shipped ones mutated (a value replaced by anything YAML can hold, a key dropped or added, a
section given the wrong shape) or their text damaged (bytes inserted, dropped or swapped, YAML bombs); each
is loaded as `harness run` loads it, and must give a Profile or a BadInput (never another exception) within a
time and memory bound. The command line gets random argument lists and must parse or exit 2. A bounded slice
runs in the suite; `HYPOTHESIS_PROFILE=campaign` runs the long one (see README, "Fuzzing").
"""

from __future__ import annotations

import contextlib
import io
import time
import tracemalloc
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import CAMPAIGN, report
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.cli import build_parser
from harness.errors import BadInput
from harness.profile import parse_profile
from harness.yaml_input import parse_yaml

SHIPPED = sorted((Path(__file__).resolve().parent.parent / "profiles").glob("*.yaml"))
SHIPPED_DATA = [yaml.safe_load(path.read_text(encoding="utf-8")) for path in SHIPPED]
SHIPPED_TEXT = [path.read_text(encoding="utf-8") for path in SHIPPED]
TIME_LIMIT_S = 2.0
inputs_tried: Counter[str] = Counter()  # profiles by outcome, reported by the campaign
inputs_argv: Counter[str] = Counter()
MEMORY_LIMIT_BYTES = 64 * 1024 * 1024

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=40),
    st.sampled_from(["shipped", "coordinator", "stub", "url", "openclaw", "matrix", "telegram", "fixed:2000@10",
                     "== 0", "converged in >= 9/10", "median < 30", "ws://127.0.0.1:1/", "ws://[::1", "2026.4.24",
                     "lognormal:40,0.5", "1e-300", ".nan", "latency", "gateway_down", "-5", "１２３"]),
)
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                        st.dictionaries(st.text(max_size=12), inner, max_size=4)),
                      max_leaves=12)


def _paths(data: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(data, dict):
        for key, value in data.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            found += _paths(value, (*prefix, index))
    return found


@st.composite
def mutated_profiles(draw: st.DrawFn) -> str:
    """A shipped profile with a few of its values replaced, dropped or added to, as YAML text."""
    data = yaml.safe_load(yaml.safe_dump(draw(st.sampled_from(SHIPPED_DATA))))  # a deep copy
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        paths = _paths(data)
        path = draw(st.sampled_from(paths))
        action = draw(st.sampled_from(["replace", "drop", "add"]))
        if not path:
            data = draw(values) if action == "replace" else data
            continue
        parent = data
        for step in path[:-1]:
            parent = parent[step]
        if action == "replace":
            parent[path[-1]] = draw(values)
        elif action == "drop":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(st.text(max_size=12))] = draw(values)
    return yaml.safe_dump(data, allow_unicode=True)


@st.composite
def damaged_texts(draw: st.DrawFn) -> bytes:
    """A shipped profile's text with bytes inserted, dropped or swapped (not always valid UTF-8 or YAML)."""
    text = bytearray(draw(st.sampled_from(SHIPPED_TEXT)).encode("utf-8"))
    for _ in range(draw(st.integers(min_value=1, max_value=6))):
        where = draw(st.integers(min_value=0, max_value=max(0, len(text) - 1)))
        action = draw(st.sampled_from(["insert", "drop", "swap"]))
        if action == "insert":
            text[where:where] = draw(st.sampled_from([b"[", b"{", b"&a ", b"*a", b"\xff", b": ", b"\n  ", b"- ",
                                                      b"!!python/object ", b".inf", b"9" * 40, b"<<: *a\n"]))
        elif action == "drop" and text:
            del text[where: where + draw(st.integers(min_value=1, max_value=20))]
        elif text:
            text[where] = draw(st.integers(min_value=0, max_value=255))
    return bytes(text)


def _load(text: str | bytes) -> None:
    """As `load_profile` does, from text: a Profile or BadInput, within the time and memory bound."""
    tracemalloc.start()
    started = time.perf_counter()
    try:
        if isinstance(text, bytes):
            try:
                text = text.decode("utf-8")
            except UnicodeDecodeError:
                inputs_tried["not utf-8"] += 1
                return  # read_yaml's own refusal, tested in test_profile.py
        data, lines = parse_yaml(text, "fuzz.yaml")
        parse_profile(data, path=Path("fuzz.yaml"), environ={}, lines=lines)
        inputs_tried["loaded"] += 1
    except BadInput as exc:
        inputs_tried["refused"] += 1
        assert str(exc).strip(), "an empty error line"
        assert all(len(line) < 600 for line in str(exc).splitlines()), "a value formatted whole"
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert time.perf_counter() - started < TIME_LIMIT_S
    assert peak < MEMORY_LIMIT_BYTES


@pytest.fixture(scope="module", autouse=True)
def campaign_figures(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if CAMPAIGN:
        report(request.config, f"\nfuzz_profiles: {sum(inputs_tried.values())} profiles "
                               f"({', '.join(f'{n} {k}' for k, n in sorted(inputs_tried.items()))}), "
                               f"{inputs_argv['argv']} argument lists")


@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large], deadline=None)
@given(mutated_profiles())
def test_a_mutated_profile_loads_or_is_refused_in_lines(text: str) -> None:
    _load(text)


@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(damaged_texts())
def test_a_damaged_profile_text_loads_or_is_refused_in_lines(text: bytes) -> None:
    _load(text)


@pytest.mark.parametrize("bomb", [
    # Nine levels of nine aliases each: 9**9 leaves if anything walked it.
    "name: x\naccounts: {count: 2}\na: &a [x,x,x,x,x,x,x,x,x]\n"
    + "".join(f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(9))
    + "assert: {all: {verdict: *j}}\n",
    "name: x\naccounts: {count: 2}\nassert: " + "[" * 10_000 + "]" * 10_000 + "\n",
    "name: x\naccounts: {count: 1, channels: {matrix: 300000000}}\n",
    "name: x\naccounts: {count: 2}\nseed: " + "9" * 5000 + "\n",
])
def test_bombs_are_refused_quickly_and_cheaply(bomb: str) -> None:
    with pytest.raises(BadInput):
        data, lines = parse_yaml(bomb, "bomb.yaml")
        parse_profile(data, path=Path("bomb.yaml"), environ={}, lines=lines)
    _load(bomb)


options = st.lists(st.one_of(
    st.sampled_from(["run", "compare", "demo", "toxiproxy", "openclaw-install", "--arm", "--seed", "--time-scale",
                     "--out", "--repeat", "--backend", "--profile", "--host", "--port", "docker", "embedded",
                     "profiles/matrix-11-accounts.yaml", "nan", "1e-300", "-1", "0", "１２３", "9" * 400,
                     "x" * 3000, "two\nlines"]),
    st.text(max_size=20)), max_size=8)


@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(options)
def test_any_argument_list_parses_or_exits_2(argv: list[str]) -> None:
    inputs_argv["argv"] += 1
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            build_parser().parse_args(argv)
    except SystemExit as exc:
        assert exc.code in (0, 2)  # 0: --help
        if exc.code == 2:  # one line, never the offending argument whole
            assert len(stderr.getvalue().splitlines()) == 1 and len(stderr.getvalue()) <= 400, stderr.getvalue()


@pytest.mark.parametrize("argv", [["x" * 3000], ["run", "profiles/single-account.yaml", "two\nlines", "y" * 3000]])
def test_an_option_error_is_one_short_line_whatever_the_argument(argv: list[str]) -> None:
    stderr = io.StringIO()
    with pytest.raises(SystemExit) as exited, contextlib.redirect_stderr(stderr):
        build_parser().parse_args(argv)
    assert exited.value.code == 2
    assert len(stderr.getvalue().splitlines()) == 1 and len(stderr.getvalue()) <= 320, stderr.getvalue()[:500]
