"""Validating a user's mapping (a profile, later a sweep spec or a soak plan) field by field, every problem kept.

A `Fields` reads one mapping: `get` a typed value, `number` a finite number within bounds, `text` a bounded
string, `section` a nested mapping, `done` to refuse the keys nobody asked for. A problem does not stop the
reading: it is added to the shared `Problems` with the field's dotted path and, when the file is known, its
line (`harness.yaml_input.LineMap`), and the reader gets the default back, so one pass reports everything
wrong with the file. `Problems.check()` then raises one `BadInput` whose lines are the problems, each
`file:line: field: what was expected, got what` with the value cut short (a value is never formatted whole).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from harness.errors import BadInput
from harness.yaml_input import LineMap

MAX_PROBLEMS_SHOWN = 20
VALUE_SHOWN_CHARS = 60


def cut(value: Any, limit: int = VALUE_SHOWN_CHARS) -> str:
    """A value as an error line may show it: a scalar's repr cut to `limit` characters, a container's kind."""
    if isinstance(value, dict | list | tuple | set):
        return f"{kind_of(value)} of {len(value)}"
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**20:
        return "a very large integer"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def kind_of(value: Any) -> str:
    if value is None:
        return "nothing"
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
            dict: "a mapping"}.get(type(value), type(value).__name__)


def _names(kinds: tuple[type, ...]) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false", list: "a list",
             dict: "a mapping"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)


@dataclass
class Problems:
    """Every problem found in one input, in the order found."""

    source: str | None = None  # the file, when there is one
    lines: LineMap = field(default_factory=LineMap)
    items: list[tuple[float, str]] = field(default_factory=list)  # (line, or inf when unknown; the line)

    def add(self, path: str, message: str, line: int | None = None) -> None:
        where = f"{self.source}:{line}: " if self.source and line else (f"{self.source}: " if self.source else "")
        self.items.append((line or math.inf, f"{where}{path}: {message}"))

    def check(self) -> None:
        """`BadInput` with every problem, in the order of the file's lines, if there is any."""
        if not self.items:
            return
        shown = [text for _, text in sorted(self.items, key=lambda item: item[0])][:MAX_PROBLEMS_SHOWN]
        if len(self.items) > len(shown):
            shown.append(f"... and {len(self.items) - len(shown)} more problems")
        raise BadInput("\n".join(shown))


RESULTS_NAME_RE = re.compile(r"[A-Za-z0-9._-]+")  # a profile's, spec's or plan's name: it names a results folder
MAX_NAME_LENGTH = 100
MAX_DESCRIPTION_LENGTH = 10_000


class Fields:
    """One mapping of the input, read key by key; the keys it was asked for are the ones it knows."""

    def __init__(self, data: Any, path: str, problems: Problems, line: int | None = None) -> None:
        self.path = path
        self.problems = problems
        self._used: set[str] = set()
        if data is None:
            data = {}
        if not isinstance(data, dict):
            problems.add(path or "profile", f"expected a mapping, got {kind_of(data)}", line)
            data = {}
        self.data: dict[str, Any] = data

    def where(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def line(self, key: str) -> int | None:
        return self.problems.lines.line_of(self.data, key)

    def fail(self, key: str, message: str) -> None:
        self.problems.add(self.where(key), message, self.line(key))

    def has(self, key: str) -> bool:
        return self.data.get(key) is not None

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = None, *, required: bool = False) -> Any:
        self._used.add(key)
        if key not in self.data or self.data[key] is None:
            if required:
                self.fail(key, "required")
            return default
        value = self.data[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in kinds:
            self.fail(key, f"expected {_names(kinds)}, got a boolean")
            return default
        if not isinstance(value, kinds):
            self.fail(key, f"expected {_names(kinds)}, got {kind_of(value)}")
            return default
        return value

    def number(self, key: str, default: float | None, *, minimum: float | None = None, maximum: float,
               exclusive_minimum: bool = False, integer: bool = False, required: bool = False,
               why_maximum: str = "") -> Any:
        """A finite number (an integer if `integer`) within the bounds; `default` when absent or wrong.
        `why_maximum` says, in the message, why a larger one is refused."""
        value = self.get(key, int if integer else (int, float), None, required=required)
        if value is None:
            return default
        if not math.isfinite(value):
            self.fail(key, f"expected a finite number, got {cut(value)}")
            return default
        if minimum is not None and (value <= minimum if exclusive_minimum else value < minimum):
            self.fail(key, f"expected a number {'>' if exclusive_minimum else '>='} {minimum:g}, got {cut(value)}")
            return default
        if value > maximum:
            why = f" ({why_maximum})" if why_maximum else ""
            self.fail(key, f"expected a number <= {maximum:g}{why}, got {cut(value)}")
            return default
        return value

    def text(self, key: str, default: str | None, *, max_length: int, required: bool = False) -> Any:
        value = self.get(key, str, None, required=required)
        if value is None:
            return default
        if len(value) > max_length:
            self.fail(key, f"expected at most {max_length} characters, got {len(value)}")
            return default
        return value

    def name_and_description(self) -> tuple[str | None, str]:
        """An input's required `name` (it names the results folder) and optional `description`."""
        return self.results_name(required=True), self.text("description", "", max_length=MAX_DESCRIPTION_LENGTH)

    def results_name(self, *, required: bool) -> str | None:
        """A `name` that names a results folder: letters, digits, '.', '_' or '-'."""
        name: str | None = self.text("name", None, max_length=MAX_NAME_LENGTH, required=required)
        if name is not None and not RESULTS_NAME_RE.fullmatch(name):
            self.fail("name", f"expected letters, digits, '.', '_' or '-' (it names the results folder), got "
                              f"{cut(name)}")
            name = None
        return name

    def section(self, key: str) -> Fields:
        self._used.add(key)
        return Fields(self.data.get(key), self.where(key), self.problems, self.line(key))

    def done(self) -> None:
        unknown = [k for k in self.data if k not in self._used]
        known = ", ".join(sorted(self._used))
        for key in unknown:
            self.fail(str(key), f"unknown key (expected one of {known})")
