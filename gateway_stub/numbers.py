"""Numbers read from text (options, environment variables, cost specs): ASCII digits only, and finite.

Python's `int()` and `float()` accept much more than a person setting a port or a timeout means: digits of
any script (`١٢`, full-width `１２３`), underscores (`1_000`), surrounding whitespace, `nan` and `infinity`,
and integers of any length (which then overflow when turned into seconds, or hit Python's 4300-digit
conversion limit). OpenClaw reads its integer variables with JavaScript's `^\\+?\\d+$`, whose `\\d` is ASCII.
Every number the stub reads from text goes through `parse_integer` or `parse_decimal`, which refuse all of
that with a ValueError saying what was expected; ranges are the caller's (config.py's option table).
"""

from __future__ import annotations

import math
import re

_INTEGER = re.compile(r"([+-]?)0*([0-9]+)")
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_NON_FINITE = re.compile(r"[+-]?(?:inf|infinity|nan)", re.IGNORECASE)
# More digits than any bound the stub has; the cap keeps int() clear of Python's 4300-digit limit.
MAX_INTEGER_DIGITS = 30
SHOWN_CHARS = 40


class NotFinite(ValueError):
    """The text is a number but not a finite one (`inf`, `nan`, `1e999`)."""


def shown(text: str) -> str:
    """`text` quoted for a one-line error message, cut short: an option's value may be any length."""
    if len(text) <= SHOWN_CHARS:
        return repr(text)
    return repr(text[:SHOWN_CHARS]) + f"... ({len(text)} characters)"


def parse_integer(text: str, *, signed: bool = True) -> int:
    """A decimal integer in ASCII digits, with an optional sign (`+` only unless `signed`)."""
    match = _INTEGER.fullmatch(text)
    if match is None or (match.group(1) == "-" and not signed):
        raise ValueError(f"expected an integer in ASCII digits, got {shown(text)}")
    sign, digits = match.groups()
    if len(digits) > MAX_INTEGER_DIGITS:
        raise ValueError(f"expected an integer of at most {MAX_INTEGER_DIGITS} digits, got {shown(text)}")
    value = int(digits)
    return -value if sign == "-" else value


def parse_decimal(text: str) -> float:
    """A finite decimal number in ASCII digits (`12`, `0.5`, `.5`, `2e3`)."""
    if _NON_FINITE.fullmatch(text):
        raise NotFinite(f"expected a finite number, got {shown(text)}")
    if _DECIMAL.fullmatch(text) is None:
        raise ValueError(f"expected a number in ASCII digits, got {shown(text)}")
    value = float(text)
    if not math.isfinite(value):
        raise NotFinite(f"expected a finite number, got {shown(text)}")
    return value
