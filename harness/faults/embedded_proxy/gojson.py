"""JSON as Toxiproxy's Go server writes and reads it, so its bodies and its decoding errors match byte for byte.

Go's json.Marshal writes compact UTF-8 with <, > and & escaped and float32 values in their shortest
form; its json.Decoder reads the first value of a body, matches keys to struct fields exactly and then
case-insensitively, treats null as "leave the default", and names the Go struct field and type when a
value does not fit. The field readers here do the same for the few structs the API decodes.
"""

from __future__ import annotations

import json
import struct
from typing import Any, NoReturn

from harness.faults.embedded_proxy.errors import ApiError, bad_body


def go_json(value: Any) -> bytes:
    """Like Go's json.Marshal: compact, UTF-8, with <, > and & escaped as Go does."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    for char, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                          ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(char, escaped)
    return text.encode()


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"invalid character '{name[0]}' looking for beginning of value")


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
        value, _ = json.JSONDecoder(parse_constant=_reject_constant).raw_decode(stripped)
    except ValueError as exc:
        raise bad_body(str(exc)) from exc
    return value


def json_kind(value: Any) -> str:
    """What Go's decoding errors call a JSON value ("number", "array", ...)."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
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
        kind = f"number {json.dumps(value)}"
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
    return value


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
        return float32(float(value))
    except (OverflowError, struct.error) as exc:
        raise unmarshal_error(value, f"{struct_name}.{key}", "float32") from exc
