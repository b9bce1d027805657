"""Reading a run's summary.json the way a user's tooling would: checked against the published JSON Schema."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "docs" / "summary.schema.json"


@cache
def _validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def validated(summary: Any) -> dict[str, Any]:
    """`summary` (a summary.json's content) if it validates against the schema; the first error otherwise."""
    errors = sorted(_validator().iter_errors(summary), key=lambda e: list(e.path))
    assert not errors, f"summary.json does not match {SCHEMA_PATH.name}: {errors[0].message} at {list(errors[0].path)}"
    assert isinstance(summary, dict)
    return summary


def load_summary(path: Path) -> dict[str, Any]:
    return validated(json.loads(path.read_text(encoding="utf-8")))


def load_comparison(path: Path) -> dict[str, dict[str, Any]]:
    """compare.json's summaries by arm, each validated."""
    loaded = json.loads(path.read_text(encoding="utf-8"))
    return {s["arm"]: validated(s) for s in loaded["arms"]}
