"""docs/dbt.md stays true: its console commands run, in order, on a copy of examples/ after a
(simulated) dbt build, and print what the page shows; the kpi_engine.yaml it shows is the one
written."""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import yaml
from click.testing import CliRunner

from dbt_fixture import CUBE_EXAMPLE, build_warehouse, make_rows, write_manifest
from kpi_engine.cli import cli

DOC = Path(__file__).resolve().parent.parent / "docs" / "dbt.md"


def _console_blocks(text: str) -> list[tuple[str, list[str]]]:
    """(command, output lines) of each ```console block."""
    blocks = []
    for body in re.findall(r"```console\n(.*?)```", text, re.S):
        lines = body.rstrip("\n").split("\n")
        assert lines[0].startswith("$ kpi-engine "), lines[0]
        blocks.append((lines[0][2:], lines[1:]))
    return blocks


def test_walkthrough_commands_print_what_the_page_shows(tmp_path, monkeypatch):
    examples = tmp_path / "examples"
    shutil.copytree(DOC.parent.parent / "examples" / "dbt_project", examples / "dbt_project")
    shutil.copytree(CUBE_EXAMPLE, examples / "cube_project")
    build_warehouse(examples / "dbt_project" / "shop.duckdb", make_rows(5))
    write_manifest(examples / "dbt_project" / "target" / "manifest.json", database="shop")
    monkeypatch.delenv("DBT_PROFILES_DIR", raising=False)
    monkeypatch.delenv("SHOP_DUCKDB_PATH", raising=False)
    monkeypatch.chdir(tmp_path)
    text = DOC.read_text()
    blocks = _console_blocks(text)
    assert [command.split()[1:3] for command, _ in blocks] == [
        ["import", "metricflow"], ["evaluate", "shop_kpis"], ["import", "cube"], ["export", "metricflow"]]
    for command, expected in blocks:
        result = CliRunner().invoke(cli, shlex.split(command)[1:])
        assert result.exit_code == 0, (command, result.output)
        if expected:
            assert result.output.rstrip("\n").split("\n") == expected, command
        if command.split()[1] == "evaluate":
            assert "revenue_growth" in result.output and "emea" in result.output
    # the project file the page shows is the one the import wrote
    shown = re.search(r"```yaml\n# shop_kpis/kpi_engine.yaml.*?\n(.*?)```", text, re.S).group(1)
    assert yaml.safe_load(shown) == yaml.safe_load((tmp_path / "shop_kpis" / "kpi_engine.yaml").read_text())
    # and so are the KPIs of its excerpt
    excerpt = yaml.safe_load(re.search(r"```yaml\n# shop_kpis/metricflow_kpis.yaml.*?\n(.*?)```", text, re.S).group(1))
    written = yaml.safe_load((tmp_path / "shop_kpis" / "metricflow_kpis.yaml").read_text())["kpis"]
    for name, body in excerpt["kpis"].items():
        assert written[name] == body, name
    exported = tmp_path / "examples" / "dbt_project" / "models" / "kpi_engine_export"
    assert (exported / "semantic_models.yml").is_file() and (exported / "metrics.yml").is_file()
