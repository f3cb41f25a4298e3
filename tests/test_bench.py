"""The benchmark's report code, on the committed quick-mode result (the benchmark itself is not run in CI)."""

import json
from pathlib import Path

import pytest
from PIL import Image

from bench import plot, sitting

RESULTS = sorted((Path(__file__).parent.parent / "bench" / "results").glob("*.json"))


@pytest.mark.parametrize("path", RESULTS, ids=[p.name for p in RESULTS])
def test_a_committed_result_renders_as_its_table_and_plot(path, tmp_path):
    report = json.loads(path.read_text())
    table = sitting.markdown(report)
    cells = [line.split("|")[1].strip() for line in table.splitlines() if line.startswith("| ")]
    numbers = [cell for cell in cells if cell.isdigit()]  # the rows' numbers: not the other tables' sizes
    assert numbers[:15] == ["1", "2", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14"]
    assert set(numbers[15:]) <= {"15"} and bool(numbers[15:]) == bool(report["rows"].get("families"))
    assert path.with_suffix(".md").read_text() == table, "the committed table is not the one this JSON renders"
    plot.latency_by_scenario(report, tmp_path / "plot.png")
    assert Image.open(tmp_path / "plot.png").size == (plot.WIDTH, plot.HEIGHT)


def test_there_is_a_committed_result_for_each_mode():
    assert {path.name.split("-")[0] for path in RESULTS} == {"quick", "full"}
