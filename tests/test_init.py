"""kpi-engine init scaffolds a project that validates and evaluates straight away."""

import json
from pathlib import Path

import pytest
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


# Folder names that YAML reads as something else than text, or that break a line of YAML, and
# the project name each must give (the name as written, '-' as '_').
YAML_SIGNIFICANT = {
    "yes": "yes", "no": "no", "on": "on", "true": "true", "null": "null", "~": "~", "1e3": "1e3",
    "0x10": "0x10", "012": "012", ".inf": ".inf", "2025-01-01": "2025_01_01", "- x": "_ x", "a: b": "a: b",
    "[x]": "[x]", "{x}": "{x}", "#x": "#x", "x #y": "x #y", "'q'": "'q'", '"dq"': '"dq"', "it's": "it's",
    "&anchor": "&anchor", "*alias": "*alias", "!tag": "!tag", "%x": "%x", "@x": "@x", "`x": "`x", "|": "|",
    ">": ">", "?x": "?x", ",x": ",x", "x:": "x:", " lead": "lead", "trail ": "trail", "tab\tx": "tab_x",
    "new\nline": "new_line", "back\\slash": "back\\slash", "ünïcødé": "ünïcødé", "---": "___", "...": "...",
    "{name}": "{name}", "x" * 240: "x" * 200,
}


@pytest.mark.parametrize("folder_name", list(YAML_SIGNIFICANT))
def test_init_with_a_yaml_significant_folder_name_validates_and_evaluates(tmp_path, folder_name):
    from kpi_engine.spec import load_project

    folder = tmp_path / folder_name
    runner = CliRunner()
    created = runner.invoke(cli, ["init", str(folder)])
    assert created.exit_code == 0, created.output
    assert runner.invoke(cli, ["validate", str(folder)]).exit_code == 0
    assert load_project(folder).config.name == YAML_SIGNIFICANT[folder_name]
    result = runner.invoke(cli, ["evaluate", str(folder), "--all", "--grain", "month", "--format", "json"])
    assert result.exit_code == 0, result.output
    assert [(r["period"], r["revenue"]) for r in json.loads(result.stdout)] == [("2025-01-01", 200.0),
                                                                                ("2025-02-01", 350.0)]


def test_init_with_a_folder_name_that_is_not_utf8(tmp_path):
    import os

    folder = Path(os.fsdecode(bytes(tmp_path) + b"/caf\xe9"))  # Latin-1 bytes: not UTF-8
    runner = CliRunner()
    assert runner.invoke(cli, ["init", str(folder)]).exit_code == 0
    assert "name: caf_\n" in (folder / "kpi_engine.yaml").read_text(encoding="utf-8")
    # Offline: DuckDB cannot open a data file whose path is not UTF-8 (a clear error of its own).
    assert runner.invoke(cli, ["validate", str(folder), "--offline"]).exit_code == 0


def test_init_in_a_folder_that_cannot_be_created(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = CliRunner().invoke(cli, ["init", str(blocker / "project")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.stderr.startswith(f"Error: cannot create the project in '{blocker / 'project'}': Not a directory.")
