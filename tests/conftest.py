from __future__ import annotations

import csv
import textwrap
from pathlib import Path

import pytest


def write_project(root: Path, files: dict[str, str], tables: dict[str, list[dict]] | None = None,
                  config: str = "name: test\nwarehouse: {adapter: duckdb, data: data}\n") -> Path:
    """A project folder: kpi_engine.yaml, spec files (dedented) and one CSV per table."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "kpi_engine.yaml").write_text(config)
    for name, text in files.items():
        (root / name).write_text(textwrap.dedent(text).lstrip("\n"))
    data = root / "data"
    data.mkdir(exist_ok=True)
    for table, rows in (tables or {}).items():
        with open(data / f"{table}.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return root


@pytest.fixture
def make_project(tmp_path):
    def make(files, tables=None, config=None, name="project"):
        kwargs = {"config": config} if config else {}
        return write_project(tmp_path / name, files, tables, **kwargs)

    return make



@pytest.fixture
def run_evaluate():
    """kpi-engine evaluate in-process: run_evaluate(root, 'n', '--format', 'csv', code=0) returns
    click's result after checking the exit code (the output is in the assertion message)."""
    from click.testing import CliRunner

    from kpi_engine.cli import cli

    def run(root, *args, code: int = 0):
        result = CliRunner().invoke(cli, ["evaluate", *(str(arg) for arg in (root, *args))])
        assert result.exit_code == code, result.output
        return result

    return run
