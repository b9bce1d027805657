"""The soak history: one SQLite file that every night's soak appends its figures to, and reads its trend from.

One row per night, plan, arm (or process role, for resources) and figure, in `figures`, under a row of `soaks`
(when, which plan, which gateway, the soak's exit). The schema is versioned with SQLite's `user_version`:
`MIGRATIONS[i]` takes a file from version i to i + 1, so an old history is upgraded in place and a newer one
than this harness knows is refused (one line, exit 2) rather than misread.
"""

from __future__ import annotations

import contextlib
import sqlite3
import statistics
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.errors import BadInput
from harness.soak.plan import Tolerance

MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE soaks (
        id INTEGER PRIMARY KEY,
        night TEXT NOT NULL,          -- the UTC date the soak started
        started_at TEXT NOT NULL,     -- ISO 8601, UTC
        plan TEXT NOT NULL,
        gateway TEXT NOT NULL,        -- e.g. stub, stub-docker, openclaw@2026.4.24
        cycles INTEGER NOT NULL,
        exit_code INTEGER NOT NULL
    );
    CREATE TABLE figures (
        soak_id INTEGER NOT NULL REFERENCES soaks(id),
        arm TEXT NOT NULL,            -- a run's arm as "run/arm", or a process role as "resource/role"
        figure TEXT NOT NULL,
        value REAL,
        PRIMARY KEY (soak_id, arm, figure)
    );
    CREATE INDEX figures_by_name ON figures (figure, arm);
    """,
)


@dataclass(frozen=True)
class Night:
    soak_id: int
    night: str
    plan: str
    gateway: str
    figures: Mapping[tuple[str, str], float | None]  # (arm, figure) -> value


@dataclass(frozen=True)
class Regression:
    arm: str
    figure: str
    tonight: float
    median: float | None
    nights: int
    rule: str

    def line(self) -> str:
        before = "no earlier night" if self.median is None else f"median {self.median:g} over {self.nights} nights"
        return f"regression: {self.arm} {self.figure} {self.tonight:g} ({before}; tolerance {self.rule})"


@contextlib.contextmanager
def opened(path: Path) -> Iterator[sqlite3.Connection]:
    """The history at `path`, created or migrated to this harness's schema."""
    try:
        connection = sqlite3.connect(path)
    except sqlite3.Error as exc:
        raise BadInput(f"--history: cannot open {path}: {exc}") from None
    try:
        _migrate(connection, path)
        yield connection
    finally:
        connection.close()


def _migrate(connection: sqlite3.Connection, path: Path) -> None:
    try:
        version = connection.execute("PRAGMA user_version").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        raise BadInput(f"--history: {path} is not an SQLite history: {exc}") from None
    if version > len(MIGRATIONS):
        raise BadInput(f"--history: {path} has schema version {version}; this harness knows up to {len(MIGRATIONS)}")
    for index in range(version, len(MIGRATIONS)):
        with connection:
            connection.executescript(MIGRATIONS[index])
            connection.execute(f"PRAGMA user_version = {index + 1}")


def record(connection: sqlite3.Connection, night: str, started_at: str, plan: str, gateway: str, cycles: int,
           exit_code: int, figures: Mapping[tuple[str, str], float | None]) -> int:
    with connection:
        cursor = connection.execute(
            "INSERT INTO soaks (night, started_at, plan, gateway, cycles, exit_code) VALUES (?, ?, ?, ?, ?, ?)",
            (night, started_at, plan, gateway, cycles, exit_code))
        soak_id = int(cursor.lastrowid or 0)
        connection.executemany("INSERT INTO figures (soak_id, arm, figure, value) VALUES (?, ?, ?, ?)",
                               [(soak_id, arm, figure, value) for (arm, figure), value in figures.items()])
    return soak_id


def nights(connection: sqlite3.Connection, plan: str | None = None, gateway: str | None = None,
           before_id: int | None = None, limit: int | None = None) -> list[Night]:
    """The soaks recorded (of a plan and gateway, before a soak), oldest first, the last `limit` of them."""
    query = "SELECT id, night, plan, gateway FROM soaks WHERE 1 = 1"
    args: list[object] = []
    for column, value in (("plan", plan), ("gateway", gateway)):
        if value is not None:
            query += f" AND {column} = ?"
            args.append(value)
    if before_id is not None:
        query += " AND id < ?"
        args.append(before_id)
    rows = connection.execute(query + " ORDER BY id DESC" + (f" LIMIT {int(limit)}" if limit else ""), args)
    found = []
    for soak_id, night, plan_name, gateway_name in reversed(rows.fetchall()):
        values = connection.execute("SELECT arm, figure, value FROM figures WHERE soak_id = ?", (soak_id,))
        found.append(Night(soak_id, night, plan_name, gateway_name,
                           {(arm, figure): value for arm, figure, value in values}))
    return found


def regressions(tonight: Night, earlier: Sequence[Night],
                rule_for: Callable[[str, str], Tolerance | None]) -> list[Regression]:
    """Each figure of tonight outside its tolerance against the median of the same figure on earlier nights."""
    found = []
    for (arm, figure), value in sorted(tonight.figures.items()):
        rule = rule_for(figure, arm)
        if value is None or rule is None:
            continue
        history = [v for night in earlier if (v := night.figures.get((arm, figure))) is not None]
        median = statistics.median(history) if history else None
        if rule.exceeded(value, median):
            found.append(Regression(arm, figure, value, median, len(history), rule.text))
    return found

