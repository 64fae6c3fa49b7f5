"""Large results go to files batch by batch, atomically; the Python API's conversions."""

import csv
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from kpi_engine.cli import cli
from kpi_engine.engine import open_project
from kpi_engine.output import write_stream

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "marketing"
ARGS = ["cost_per_lead", "nps", "mrr", "--by", "channel", "--grain", "month"]


@pytest.fixture(scope="module")
def expected():
    with open_project(EXAMPLE) as project:
        return project.evaluate(["cost_per_lead", "nps", "mrr"], by=["channel"], grain="month").to_dicts()


def run(*args):
    return CliRunner().invoke(cli, ["evaluate", str(EXAMPLE), *ARGS, *args])


def test_csv_and_json_files_hold_the_same_rows_as_the_api(tmp_path, expected):
    assert run("--format", "csv", "--output", str(tmp_path / "out.csv")).exit_code == 0
    with open(tmp_path / "out.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(expected)
    for row, want in zip(rows, expected):
        assert row["period"] == want["period"].isoformat() and (row["channel"] or None) == want["channel"]
        assert (float(row["mrr"]) if row["mrr"] else None) == pytest.approx(want["mrr"])  # DuckDB sums in parallel
    assert run("--format", "json", "--output", str(tmp_path / "out.json")).exit_code == 0
    loaded = json.loads((tmp_path / "out.json").read_text())
    assert [r["nps"] for r in loaded] == pytest.approx([w["nps"] for w in expected])


def test_parquet_file(tmp_path, expected):
    pq = pytest.importorskip("pyarrow.parquet")
    assert run("--format", "parquet", "--output", str(tmp_path / "out.parquet")).exit_code == 0
    table = pq.read_table(tmp_path / "out.parquet").to_pylist()
    assert [r["cost_per_lead"] for r in table] == pytest.approx([w["cost_per_lead"] for w in expected])
    assert run("--format", "parquet").exit_code == 2  # binary: needs --output


def test_batches_are_written_as_they_come_and_a_failure_leaves_nothing(tmp_path):
    seen = []

    def batches():
        for i in range(3):
            seen.append(i)
            yield [(i, f"row{i}")]
        raise RuntimeError("connection lost")

    target = tmp_path / "out.csv"
    with pytest.raises(RuntimeError):
        write_stream("csv", ["n", "label"], batches(), target)
    assert seen == [0, 1, 2] and not target.exists() and list(tmp_path.iterdir()) == []
    assert write_stream("csv", ["n"], iter([[(1,)], [(2,)]]), target) == 2
    assert target.read_text() == "n\n1\n2\n"


def test_to_pandas_and_arrow(expected):
    pd = pytest.importorskip("pandas")
    with open_project(EXAMPLE) as project:
        result = project.evaluate(["cost_per_lead", "nps", "mrr"], by=["channel"], grain="month")
    frame = result.to_pandas()
    assert isinstance(frame, pd.DataFrame) and list(frame.columns) == ["period", "channel", "cost_per_lead", "nps", "mrr",
                                                                      "complete"]
    # empty cells (a channel without subscriptions has no MRR row of its own) are NaN in pandas
    assert [None if pd.isna(v) else v for v in frame["mrr"].tolist()] == pytest.approx([w["mrr"] for w in expected])
    assert frame["complete"].tolist() == [w["complete"] for w in expected]
    assert result.to_arrow().num_rows == len(expected)
