"""The simulator against the stub over real sockets on three cells of the calibration grid (docs/simulator.md).

The cells are away from the storm boundary and their figures do not hang on the host's speed: one account
whose connect costs more than the timer (storm), eleven behind the coordinator (converged, time to all
connected set by the costs), eleven under the backoff (storm, entries set by the backoff's schedule).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.sim_calibration import Cell, compare, figures, live, simulated

CELLS = [Cell(1, 15000, "shipped"), Cell(11, 2000, "coordinator"), Cell(11, 2000, "backoff")]
SEED, DURATION_S = 70641, 90.0


@pytest.mark.slow
@pytest.mark.parametrize("cell", CELLS, ids=[c.name for c in CELLS])
def test_the_simulator_agrees_with_the_stub_over_real_sockets(cell: Cell, tmp_path: Path) -> None:
    stub_run = live(cell, SEED, DURATION_S, tmp_path)
    if stub_run["verdict"] == "inconclusive":
        pytest.skip(f"the host was too busy for the stub's run: {stub_run['inconclusive_reason']}")
    row = compare(cell, figures([simulated(cell, SEED, DURATION_S)]), figures([stub_run]))
    assert row["same_verdict"], row
    assert row["storm_entries_within"], row
    assert row["time_to_all_connected_within"], row
