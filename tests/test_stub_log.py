"""A stub's JSON log in a folder an earlier run used: the stub appends to it, and a run reads only its own records.

Reading the whole log gave a rerun into the same folder the earlier runs' records as well (the gateway's side of
the storm counts), and made a process that reruns into one folder grow its memory with the log, run after run
(about 0.16 MB a run with profiles/heartbeat-failover-telegram.yaml).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.backends import open_backend
from harness.backends.stub import STUB_LOG, stub_log_size
from harness.profile import load_profile

PROFILES = Path(__file__).resolve().parents[1] / "profiles"


def test_a_stub_started_in_a_used_folder_gives_the_run_only_its_own_records(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import harness.backends.embedded as embedded

    written = iter(['{"run": 1, "n": 1}\n{"run": 1, "n": 2}\n', '{"run": 2, "n": 1}\nnot json\n{"run": 2, "n": 2}\n'])

    @contextlib.contextmanager
    def stub_writing_its_records(args: list[str], **_: Any) -> Iterator[object]:
        log = Path(args[args.index("--log-file") + 1])
        with log.open("a", encoding="utf-8") as out:  # as gateway_stub.gateway_log: appended to, from its start on
            out.write(next(written))
        yield object()

    monkeypatch.setattr(embedded, "EmbeddedStub", stub_writing_its_records)
    target = load_profile(PROFILES / "heartbeat-failover-telegram.yaml").target
    runs = []
    for _ in range(2):
        with open_backend(target, tmp_path) as backend:
            runs.append(backend.gateway_records(tmp_path))
    assert runs == [[{"run": 1, "n": 1}, {"run": 1, "n": 2}], [{"run": 2, "n": 1}, {"run": 2, "n": 2}]]


def test_the_log_size_of_a_folder_without_a_log_is_zero(tmp_path: Path) -> None:
    assert stub_log_size(tmp_path) == 0
    (tmp_path / STUB_LOG).write_text('{"n": 1}\n')
    assert stub_log_size(tmp_path) == len('{"n": 1}\n')
