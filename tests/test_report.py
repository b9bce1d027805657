"""report.html and its charts: built from a results folder alone, the chart data equal to what the run recorded.

The runs here are simulated (no sockets), so the figures they draw are deterministic for the seed.
"""

from __future__ import annotations

import csv
import io
import re
import subprocess
import sys
from pathlib import Path

import pytest
from matplotlib.collections import PathCollection

from harness import api
from harness.events import Outcome
from harness.profile import load_profile
from harness.report.charts import OUTCOME_GROUPS, prompts_chart, swimlane_chart, timeline_chart
from harness.report.folder import read_run_folder
from harness.report.html import write_report
from harness.report.table import render
from harness.run import run_profile
from harness.sim import simulated_summary

ROOT = Path(__file__).resolve().parent.parent
MATRIX_11 = ROOT / "profiles" / "matrix-11-accounts.yaml"
MAX_REPORT_BYTES = 2 * 1024 * 1024


@pytest.fixture(scope="module")
def matrix_11_compare(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return api.compare(MATRIX_11, target="sim", out=tmp_path_factory.mktemp("matrix-11")).out_dir


def test_a_compare_writes_one_self_contained_report_with_every_chart(matrix_11_compare: Path) -> None:
    page = matrix_11_compare / "report.html"
    text = page.read_text(encoding="utf-8")
    assert page.stat().st_size < MAX_REPORT_BYTES
    for chart in ("timeline", "swimlane"):
        assert f'data-chart="{chart}"' in text
        for suffix in ("png", "svg"):
            assert (matrix_11_compare / "charts" / f"{chart}.{suffix}").stat().st_size > 5_000
    assert text.count("<svg") == 2
    assert 'data-arm="shipped" data-verdict="storm"' in text
    assert 'data-arm="coordinator" data-verdict="converged"' in text
    # Nothing it would fetch: no script, no stylesheet or image from anywhere, and a policy that forbids it.
    assert "<script" not in text and "<link" not in text
    assert not re.search(r'(src|href)="(https?:)?//', text)
    assert "default-src 'none'" in text
    links = [link for link in re.findall(r'href="([^"#][^"]*)"', text)]  # "#…": the SVGs' own markers
    assert {"shipped/summary.json", "shipped/attempts.csv", "coordinator/accounts.csv", "compare.md",
            "charts/timeline.png", "charts/swimlane.svg"} <= set(links)
    for link in links:
        assert (matrix_11_compare / link).is_file(), link


def test_the_compare_table_is_saved_as_the_cli_prints_it_and_as_markdown(matrix_11_compare: Path) -> None:
    folder = read_run_folder(matrix_11_compare)
    summaries = [a.summary for a in folder.arms]
    assert [s.arm for s in summaries] == ["shipped", "coordinator"]
    text = (matrix_11_compare / "compare.txt").read_text()
    assert text == render(summaries, "matrix-11-accounts (11 accounts, seed 70641)") + "\n"
    markdown = (matrix_11_compare / "compare.md").read_text().splitlines()
    assert markdown[2] == "|  | shipped | coordinator |"
    assert "| storm entries | 170 | 0 |" in markdown
    assert "| verdict | storm | converged |" in markdown


def test_the_swimlane_marks_are_the_runs_attempts(tmp_path: Path) -> None:
    profile = load_profile(MATRIX_11).with_overrides(target="sim")
    _, record = simulated_summary(profile, "shipped")
    run_profile(profile, ["shipped"], tmp_path, progress_stream=io.StringIO())
    arm = read_run_folder(tmp_path).arms[0]
    chart = swimlane_chart([arm])
    axes = chart.figure.axes[0]
    drawn = {}
    for collection in axes.collections:
        if isinstance(collection, PathCollection):  # the marks; the LineCollections are the attempts in flight
            label = collection.get_label().rsplit(" (", 1)[0]
            drawn[label] = sorted((round(float(x), 3), int(y)) for x, y in collection.get_offsets())
    row = {name: index for index, name in enumerate(record.accounts)}
    for label, _, outcomes in OUTCOME_GROUPS:
        expected = sorted((round(a.ended_ms / 1000.0, 3), row[a.account]) for a in record.attempts
                          if a.outcome.value in outcomes)
        assert drawn[label] == expected, label
    assert len(drawn["handshake timeout"]) == 170 and drawn["hello"] == []
    assert sum(1 for a in record.attempts if a.outcome is Outcome.HANDSHAKE_TIMEOUT) == 170
    chart.close()


def test_the_timeline_bars_are_the_summarys_timeline(matrix_11_compare: Path) -> None:
    arms = read_run_folder(matrix_11_compare).arms
    chart = timeline_chart(arms)
    for index, arm in enumerate(arms):
        top = chart.figure.axes[index]  # the first row: attempts, storm entries, hellos
        attempts, storms = (container for container in top.containers)
        assert [bar.get_height() for bar in attempts] == [r.attempts for r in arm.summary.timeline]
        assert [bar.get_height() for bar in storms] == [r.storm_entries for r in arm.summary.timeline]
    chart.close()


def test_prompts_chart_marks_each_prompt_and_the_ones_under_a_new_id(tmp_path: Path) -> None:
    # A simulated run's folder, given the approval scenario's files by hand: the chart draws what they say.
    profile = load_profile(MATRIX_11).with_overrides(target="sim")
    run_profile(profile, ["shipped"], tmp_path, progress_stream=io.StringIO())
    shipped = tmp_path / "shipped"
    _write(shipped / "intents.csv", ["agent", "run", "command", "attempts", "approval_ids", "prompts", "decision",
                                     "decisions_lost", "first_requested_s"],
           [["agent-1", "run-a", "ls", 2, "id-1 id-2", 2, "allow-once", 1, 1.0],
            ["agent-2", "run-b", "ls", 1, "id-3", 1, "allow-once", 0, 2.0]])
    _write(shipped / "prompts.csv", ["posted_s", "chat", "approval_id", "agent", "run", "command"],
           [[1.0, "telegram-1", "id-1", "agent-1", "run-a", "ls"],
            [31.0, "telegram-1", "id-2", "agent-1", "run-a", "ls"],
            [2.0, "telegram-1", "id-3", "agent-2", "run-b", "ls"]])
    arm = read_run_folder(tmp_path).arms[0]
    chart = prompts_chart([arm])
    assert chart is not None
    first, again = chart.figure.axes[0].collections
    assert sorted(map(tuple, first.get_offsets().tolist())) == [(1.0, 0.0), (2.0, 1.0)]
    assert again.get_offsets().tolist() == [[31.0, 0.0]]
    labels = [t.get_text() for t in chart.figure.axes[0].get_yticklabels()]
    assert labels == ["agent-1/run-a (1 lost)", "agent-2/run-b"]
    chart.close()
    page = write_report(tmp_path).read_text()
    assert 'data-chart="prompts"' in page and "id-1, id-2" in page


def test_harness_report_rebuilds_from_the_folder_alone(matrix_11_compare: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-r", str(matrix_11_compare), str(copy)], check=True)
    (copy / "report.html").unlink()
    subprocess.run(["rm", "-r", str(copy / "charts")], check=True)
    done = subprocess.run([sys.executable, "-m", "harness.cli", "report", str(copy)], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == f"report: {copy / 'report.html'}"
    rebuilt, original = (copy / "report.html").read_text(), (matrix_11_compare / "report.html").read_text()
    assert _without_times(rebuilt).replace(str(copy), "X") == _without_times(original).replace(str(matrix_11_compare),
                                                                                             "X")


@pytest.mark.parametrize(("make", "expected"), [
    (lambda p: p / "missing", "not a results folder (no such folder)"),
    (lambda p: p, "not a results folder: expected summary.json"),
    (lambda p: _broken_summary(p), "summary.json: "),
])
def test_a_folder_that_is_not_a_results_folder_is_one_line_exit_2(tmp_path: Path, make, expected: str) -> None:  # type: ignore[no-untyped-def]
    folder = make(tmp_path)
    done = subprocess.run([sys.executable, "-m", "harness.cli", "report", str(folder)], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("harness: error: ") and expected in lines[0], done.stderr


def _broken_summary(folder: Path) -> Path:
    arm = folder / "shipped"
    arm.mkdir()
    (arm / "summary.json").write_text('{"schema_version": 2, "profile": 3}')
    return folder


def _write(path: Path, header: list[str], rows: list[list[object]]) -> None:
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(header)
        writer.writerows(rows)


def _without_times(page: str) -> str:
    page = re.sub(r"written \d{4}-\d\d-\d\d \d\d:\d\d UTC", "written T", page)
    return re.sub(r"<dc:date>[^<]*</dc:date>", "", page)
