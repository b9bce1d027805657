"""JSON as Toxiproxy's Go server writes and reads it, so its bodies and its decoding errors match byte for byte.

Go's json.Marshal writes compact UTF-8 with <, > and & escaped and float32 values in their shortest
form; its json.Decoder reads the first value of a body, matches keys to struct fields exactly and then
case-insensitively, treats null as "leave the default", and names the Go struct field and type when a
value does not fit. The field readers here do the same for the few structs the API decodes.

Bodies are untrusted, so the reader also does what Go's does where Python's would fail: nesting deeper
than Python's recursion limit is read without recursion, up to Go's limit of 10 000 levels ("exceeded max
depth" beyond); a number keeps its literal text for the error that names it and may be of any size
(`1e400`, ten thousand digits); a lone UTF-16 surrogate escape in a string becomes U+FFFD. Every failure
is an `ApiError` 400, never another exception.
"""

from __future__ import annotations

import json
import math
import re
import struct
from typing import Any, NoReturn

from harness.faults.embedded_proxy.errors import ApiError, bad_body

MAX_DEPTH = 10_000  # encoding/json's maxNestingDepth
# Longer integer literals stay text (`BigNumber`): no Go field holds one, and int() refuses past 4300 digits.
MAX_INT_DIGITS = 100
_WHITESPACE = re.compile(r"[ \t\n\r]*")
_SURROGATE = re.compile("[\ud800-\udfff]")


class GoFloat(float):
    """A JSON number with a fraction or exponent, keeping its literal as Go's errors quote it."""

    text: str

    def __new__(cls, text: str) -> GoFloat:
        number = super().__new__(cls, text)
        number.text = text
        return number


class BigNumber:
    """An integer literal too long for any Go field: kept as its text, a number to `json_kind`."""

    def __init__(self, text: str) -> None:
        self.text = text


def _go_int(text: str) -> int | BigNumber:
    return BigNumber(text) if len(text) > MAX_INT_DIGITS else int(text)


def go_json(value: Any) -> bytes:
    """Like Go's json.Marshal: compact, UTF-8, with <, > and & escaped as Go does."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    for char, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                          ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(char, escaped)
    return text.encode()


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"invalid character '{name[0]}' looking for beginning of value")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant, parse_float=GoFloat, parse_int=_go_int)


def parse_body(raw: bytes) -> Any:
    """The first JSON value of a request body, as Go's json.Decoder reads it (trailing data ignored)."""
    try:
        text = raw.decode()
    except UnicodeDecodeError as exc:
        raise bad_body("invalid UTF-8 in JSON") from exc
    stripped = text.lstrip(" \t\r\n")
    if not stripped:
        raise bad_body("EOF")
    try:
        try:
            value, _ = _DECODER.raw_decode(stripped)
        except RecursionError:
            # Python's decoder recurses once per level and gives up near 1000; Go reads 10 000.
            value = _decode_without_recursion(stripped)
    except ValueError as exc:
        raise bad_body(str(exc)) from exc
    return value


def _decode_without_recursion(text: str) -> Any:
    """The first JSON value of `text`, read with an explicit stack of open arrays and objects.

    Scalars (and object keys) are read by the ordinary decoder, which does not recurse for them.
    """
    open_values: list[list[Any] | dict[str, Any]] = []
    keys: list[str] = []  # the key being read in each open object ("" for an array)
    pos = 0
    while True:
        pos = _skip_whitespace(text, pos)
        char = text[pos:pos + 1]
        value: Any
        if char in ("[", "{"):
            if len(open_values) >= MAX_DEPTH:
                raise bad_body("exceeded max depth")
            pos = _skip_whitespace(text, pos + 1)
            if text[pos:pos + 1] == ("]" if char == "[" else "}"):
                value, pos = ([] if char == "[" else {}), pos + 1
            elif char == "[":
                open_values.append([])
                keys.append("")
                continue
            else:
                key, pos = _read_key(text, pos)
                open_values.append({})
                keys.append(key)
                continue
        else:
            value, pos = _DECODER.raw_decode(text, pos)
        # Attach the value to the innermost open array or object, closing those that end here.
        while True:
            if not open_values:
                return value
            top = open_values[-1]
            if isinstance(top, list):
                top.append(value)
            else:
                top[keys[-1]] = value
            pos = _skip_whitespace(text, pos)
            char = text[pos:pos + 1]
            if char == ",":
                if isinstance(top, dict):
                    keys[-1], pos = _read_key(text, _skip_whitespace(text, pos + 1))
                else:
                    pos += 1
                break
            if char != ("]" if isinstance(top, list) else "}"):
                raise ValueError(f"Expecting ',' delimiter: char {pos}")
            value, pos = open_values.pop(), pos + 1
            keys.pop()


def _skip_whitespace(text: str, pos: int) -> int:
    match = _WHITESPACE.match(text, pos)
    return match.end() if match else pos


def _read_key(text: str, pos: int) -> tuple[str, int]:
    if text[pos:pos + 1] != '"':
        raise ValueError(f"Expecting property name enclosed in double quotes: char {pos}")
    key, pos = _DECODER.raw_decode(text, pos)
    pos = _skip_whitespace(text, pos)
    if text[pos:pos + 1] != ":":
        raise ValueError(f"Expecting ':' delimiter: char {pos}")
    return str(key), pos + 1


def json_kind(value: Any) -> str:
    """What Go's decoding errors call a JSON value ("number", "array", ...)."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float | BigNumber):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def lookup(obj: dict[str, Any], key: str) -> tuple[bool, Any]:
    """Go matches JSON keys to struct fields exactly first, then case-insensitively."""
    if key in obj:
        return True, obj[key]
    for name, value in reversed(obj.items()):
        if name.lower() == key:
            return True, value
    return False, None


def unmarshal_error(value: Any, where: str, go_type: str) -> ApiError:
    kind = json_kind(value)
    if kind == "number":
        literal = value.text if isinstance(value, GoFloat | BigNumber) else json.dumps(value)
        kind = f"number {literal}"
    return bad_body(f"json: cannot unmarshal {kind} into Go struct field {where} of type {go_type}")


def as_object(value: Any, go_type: str) -> dict[str, Any]:
    if value is None:
        return {}  # Go: null decodes into a struct as a no-op
    if not isinstance(value, dict):
        raise bad_body(f"json: cannot unmarshal {json_kind(value)} into Go value of type {go_type}")
    return value


def string_field(obj: dict[str, Any], key: str, struct_name: str, default: str) -> str:
    present, value = lookup(obj, key)
    if not present or value is None:
        return default
    if not isinstance(value, str):
        raise unmarshal_error(value, f"{struct_name}.{key}", "string")
    # Go decodes a lone surrogate escape (\udc80) as U+FFFD; kept, it could not be written out as UTF-8.
    return _SURROGATE.sub("\ufffd", value)


def bool_field(obj: dict[str, Any], key: str, struct_name: str, default: bool) -> bool:
    present, value = lookup(obj, key)
    if not present or value is None:
        return default
    if not isinstance(value, bool):
        raise unmarshal_error(value, f"{struct_name}.{key}", "bool")
    return value


def int_field(obj: dict[str, Any], key: str, struct_name: str, default: int, go_type: str) -> int:
    present, value = lookup(obj, key)
    if not present or value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise unmarshal_error(value, f"{struct_name}.{key}", go_type)
    if not -(2**63) <= value < 2**63:
        raise unmarshal_error(value, f"{struct_name}.{key}", go_type)
    return value


def float32(value: float) -> float:
    packed: tuple[float] = struct.unpack("f", struct.pack("f", value))
    return packed[0]


def float32_json(value: float) -> float | int:
    """The number Go's json.Marshal writes for a float32: the shortest decimal that reads back the same."""
    if value.is_integer():
        return int(value)
    for digits in range(1, 10):
        text = f"{value:.{digits}g}"
        if float32(float(text)) == value:
            return float(text)
    return value


def float32_field(obj: dict[str, Any], key: str, struct_name: str, default: float) -> float:
    present, value = lookup(obj, key)
    if not present or value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise unmarshal_error(value, f"{struct_name}.{key}", "float32")
    try:
        number = float32(float(value))
    except (OverflowError, struct.error) as exc:
        raise unmarshal_error(value, f"{struct_name}.{key}", "float32") from exc
    if not math.isfinite(number):  # 1e400 reads as inf in Python; Go finds it out of range
        raise unmarshal_error(value, f"{struct_name}.{key}", "float32")
    return number
