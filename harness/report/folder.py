"""A results folder, read back: what the report draws, from the files a run, compare or sweep left behind.

  run / compare   <arm>/summary.json, accounts.csv, attempts.csv, disconnects.csv, intents.csv, prompts.csv;
                  compare.json beside the arms' folders for a compare; <arm>/run-NN/ and distribution.json for
                  a repeat (the report draws each arm's first run and tables the distribution)
  sweep           sweep.json, recommendation.json (and sweep.csv, cells.jsonl)
  soak            soak.json, samples.jsonl (and cycles.jsonl, cycle-NNN/ run folders)
  history         history.json (`harness history FILE --out DIR`)

A folder that is none of these, or a file that does not parse, is a `BadInput` naming the file.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from harness.errors import BadInput
from harness.summary import Distribution, Summary, SummaryError, read_summary

FolderKind = Literal["run", "compare", "sweep", "soak", "history"]


@dataclass(frozen=True)
class AttemptMark:
    """One handshake attempt as the swimlane draws it (a row of attempts.csv)."""

    account: str
    started_s: float
    ended_s: float
    outcome: str
    close_code: str


@dataclass(frozen=True)
class DisconnectMark:
    account: str
    handler: str
    at_s: float


@dataclass(frozen=True)
class Span:
    account: str
    from_s: float
    to_s: float


@dataclass(frozen=True)
class PromptMark:
    posted_s: float
    approval_id: str
    agent: str
    run: str


@dataclass(frozen=True)
class IntentRow:
    agent: str
    run: str
    command: str
    approval_ids: list[str]
    prompts: int
    decision: str
    decisions_lost: int


@dataclass(frozen=True)
class ArmRun:
    """One run of one arm: its summary and the events the charts draw."""

    summary: Summary
    folder: Path
    accounts: list[str]
    attempts: list[AttemptMark]
    hello_handlers: list[tuple[str, str, float]]  # (account, handler, at_s) of every hello
    disconnects: list[DisconnectMark]
    prompts: list[PromptMark]
    intents: list[IntentRow]
    attempts_recorded: bool  # False for a folder written before attempts.csv was
    files: list[str]  # the data files beside summary.json, for the report's links

    def connected_spans(self) -> Iterator[Span]:
        """Each session from its hello to its handler's disconnect (or the end of the run)."""
        ends: dict[tuple[str, str], list[float]] = {}
        for d in self.disconnects:
            ends.setdefault((d.account, d.handler), []).append(d.at_s)
        for account, handler, at_s in self.hello_handlers:
            later = [t for t in ends.get((account, handler), []) if t >= at_s]
            yield Span(account, at_s, min(later) if later else self.summary.duration_s)


@dataclass(frozen=True)
class RunFolder:
    """A run's or a compare's folder: each arm's (first) run, and the distributions of a repeat."""

    root: Path
    kind: FolderKind
    profile: str
    arms: list[ArmRun]  # one shown run per arm, in the order they ran
    runs_per_arm: int
    distributions: list[Distribution]


def folder_kind(root: Path) -> FolderKind:
    """What wrote the folder, from the files it holds; `BadInput` for a folder none of them wrote."""
    if not root.is_dir():
        raise BadInput(f"{root}: not a results folder (no such folder)")
    if (root / "sweep.json").is_file():
        return "sweep"
    if (root / "soak.json").is_file():
        return "soak"
    if (root / "history.json").is_file():
        return "history"
    if (root / "compare.json").is_file():
        return "compare"
    if (root / "summary.json").is_file() or _arm_folders(root):
        return "run"
    raise BadInput(f"{root}: not a results folder: expected summary.json, <arm>/summary.json, compare.json, "
                   "sweep.json, soak.json or history.json in it")


def read_run_folder(root: Path) -> RunFolder:
    """A run's or compare's folder, or one arm's folder (with or without repeats) given directly."""
    kind = folder_kind(root)
    if kind not in ("run", "compare"):
        raise BadInput(f"{root}: a {kind}'s folder, not a run's")
    one_arm = (root / "summary.json").is_file() or (root / "run-01" / "summary.json").is_file()
    arm_folders = [root] if one_arm else _arm_folders(root)
    if not arm_folders:
        raise BadInput(f"{root}: no arm's summary.json beside compare.json")
    arms, distributions, runs = [], [], 1
    for folder in arm_folders:
        repeats = sorted(p for p in folder.glob("run-*") if (p / "summary.json").is_file())
        if repeats:
            runs = max(runs, len(repeats))
            if (folder / "distribution.json").is_file():
                distributions.append(_read_distribution(folder / "distribution.json"))
        arms.append(read_arm(repeats[0] if repeats else folder))
    profiles = {a.summary.profile for a in arms}
    return RunFolder(root, kind, ", ".join(sorted(profiles)), arms, runs, distributions)


def read_arm(folder: Path) -> ArmRun:
    """One run of one arm, from its folder: summary.json and the CSVs beside it."""
    try:
        summary = read_summary(folder / "summary.json")
    except SummaryError as exc:
        raise BadInput(str(exc)) from None
    attempts = _rows(folder / "attempts.csv", "account", "handler", "started_s", "ended_s", "outcome", "close_code")
    disconnects = _rows(folder / "disconnects.csv", "account", "handler", "at_s")
    accounts = [r["account"] for r in _rows(folder / "accounts.csv", "account")]
    accounts += sorted({r["account"] for r in attempts} - set(accounts), key=_natural)  # every account drawn
    intent_rows = _rows(folder / "intents.csv", "agent", "run", "command", "approval_ids", "prompts", "decision",
                        "decisions_lost")
    intents = [IntentRow(r["agent"], r["run"], r["command"], r["approval_ids"].split(), _int(folder, r, "prompts"),
                         r["decision"], _int(folder, r, "decisions_lost")) for r in intent_rows]
    return ArmRun(
        summary=summary, folder=folder, accounts=accounts,
        attempts=[AttemptMark(r["account"], _float(folder, r, "started_s"), _float(folder, r, "ended_s"), r["outcome"],
                              r["close_code"])
                  for r in attempts],
        hello_handlers=[(r["account"], r["handler"], _float(folder, r, "ended_s")) for r in attempts
                        if r["outcome"] == "hello"],
        disconnects=[DisconnectMark(r["account"], r["handler"], _float(folder, r, "at_s")) for r in disconnects],
        prompts=[PromptMark(_float(folder, r, "posted_s"), r["approval_id"], r["agent"], r["run"])
                 for r in _rows(folder / "prompts.csv", "posted_s", "approval_id", "agent", "run")],
        intents=intents,
        attempts_recorded=(folder / "attempts.csv").is_file(),
        files=sorted(p.name for p in folder.iterdir() if p.is_file() and p.suffix in (".csv", ".json", ".jsonl",
                                                                                       ".log", ".html")),
    )


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise BadInput(f"{path}: cannot read: {exc.strerror or exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadInput(f"{path}: not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadInput(f"{path}: expected a JSON object")
    return data


def _read_distribution(path: Path) -> Distribution:
    try:
        return Distribution.model_validate_json(path.read_bytes())
    except ValueError as exc:
        raise BadInput(f"{path}: not a distribution of this schema: {str(exc).splitlines()[0]}") from None


def _arm_folders(root: Path) -> list[Path]:
    """The arms' folders in the profile's order (compare.json's), else by name."""
    found = {p.name: p for p in root.iterdir() if p.is_dir() and _first_summary(p).is_file()}
    order: list[str] = []
    if (root / "compare.json").is_file():
        arms = read_json(root / "compare.json").get("arms")
        order = [arm["arm"].replace("+", "_") for arm in arms if isinstance(arm, dict) and isinstance(arm.get("arm"),
                                                                                                     str)] \
            if isinstance(arms, list) else []
    ranked = {name: index for index, name in enumerate(dict.fromkeys(order))}
    return [found[name] for name in sorted(found, key=lambda name: (ranked.get(name, len(ranked)), name))]


def _first_summary(folder: Path) -> Path:
    return folder / "summary.json" if (folder / "summary.json").is_file() else folder / "run-01" / "summary.json"


def _rows(path: Path, *columns: str) -> list[dict[str, str]]:
    """The rows of a CSV the run wrote (none when it is absent, as in folders from before it was written)."""
    if not path.is_file() or path.stat().st_size == 0:
        return []
    try:
        with path.open(newline="", encoding="utf-8") as source:
            reader = csv.DictReader(source)
            missing = [c for c in columns if c not in (reader.fieldnames or [])]
            if missing:
                raise BadInput(f"{path}: expected the column {missing[0]!r} in its header")
            return [{k: v or "" for k, v in row.items() if k is not None} for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise BadInput(f"{path}: cannot read as CSV: {exc}") from None


def _float(folder: Path, row: dict[str, str], column: str) -> float:
    try:
        return float(row[column])
    except (KeyError, TypeError, ValueError):
        raise BadInput(f"{folder}: column {column!r}: expected a number, got {row.get(column)!r}") from None


def _int(folder: Path, row: dict[str, str], column: str) -> int:
    return int(_float(folder, row, column))


def _natural(name: str) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def soak_run_name(cycle: dict[str, Any]) -> str:
    """The run of a soak's cycle row (soaks before runs had names of their own: its profile's name)."""
    return str(cycle.get("run") or cycle["profile"])


def soak_run_label(cycle: dict[str, Any]) -> str:
    """A soak's run and arm as "run/arm"."""
    return f"{soak_run_name(cycle)}/{cycle['arm']}"


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The complete lines of a JSON-lines file (a line cut short by a kill is left out)."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows
