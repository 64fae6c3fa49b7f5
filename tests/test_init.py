"""kpi-engine init scaffolds a project that validates and evaluates straight away."""

import json

from click.testing import CliRunner

from kpi_engine.cli import cli


def test_init_creates_a_working_project(tmp_path):
    folder = tmp_path / "my-kpis"
    runner = CliRunner()
    assert runner.invoke(cli, ["init", str(folder)]).exit_code == 0
    assert runner.invoke(cli, ["validate", str(folder)]).exit_code == 0
    result = runner.invoke(cli, ["evaluate", str(folder), "--all", "--grain", "month", "--format", "json"])
    rows = json.loads(result.stdout)
    # January: 120 + 80 paid over 2 orders; February: 200 + 150 paid (the 50 was refunded) over 2.
    # The orders run from 2025-01-05 to 02-20, so neither month is wholly inside the data.
    assert rows == [{"period": "2025-01-01", "revenue": 200.0, "average_order_value": 100.0, "complete": False},
                    {"period": "2025-02-01", "revenue": 350.0, "average_order_value": 175.0, "complete": False}]


def test_init_never_overwrites(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    result = CliRunner().invoke(cli, ["init", str(tmp_path)])
    assert result.exit_code == 2 and "is not empty" in result.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]
