"""Saved queries (issue 19): named requests under `queries:` in a spec file, run by
`evaluate --query NAME`, `compile --query NAME` and the Python API (`query=NAME`); options given
with them replace the saved ones; `validate` compiles each one."""

from __future__ import annotations

import datetime as dt
import json
import shutil

import pytest
from click.testing import CliRunner

import reference
from kpi_engine.cli import cli
from kpi_engine.engine import open_project

EXAMPLE = reference.DEFAULT_DATA_DIR.parent
QUERIES = """\
queries:
  channel_efficiency:
    description: Cost per lead and close rate by channel, second half of 2025.
    kpis: [cost_per_lead, close_rate]
    by: [channel]
    grain: quarter
    from: 2025-07-01
    to: 2026-01-01
    where: "channel != 'organic'"
    order: [-cost_per_lead]
  last_two_quarters:
    kpis: [new_contacts]
    grain: quarter
    last: 2 quarters
  health: {kpis: [roi, nps], grain: quarter}
"""


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("saved") / "project"
    shutil.copytree(EXAMPLE, root)
    (root / "queries.yaml").write_text(QUERIES)
    return root


def run(*args) -> list[dict]:
    result = CliRunner().invoke(cli, [str(a) for a in args] + ["--format", "json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_a_saved_query_is_the_request_it_names(folder):
    saved = run("evaluate", folder, "--query", "channel_efficiency")
    explicit = run("evaluate", folder, "cost_per_lead", "close_rate", "--by", "channel", "--grain", "quarter",
                   "--from", "2025-07-01", "--to", "2026-01-01", "--where", "channel != 'organic'",
                   "--order", "-cost_per_lead")
    # (rows that tie on the order, two channels without spend, may come in either order)
    assert _by_key(saved) == _by_key(explicit) and len(saved) >= 8
    assert [row["cost_per_lead"] for row in saved] == sorted((row["cost_per_lead"] for row in saved), reverse=True)


def test_options_given_replace_the_saved_ones(folder):
    # KPIs replace its KPIs; --from replaces its whole range (so --to is gone too); --grain its grain.
    got = run("evaluate", folder, "new_contacts", "--query", "channel_efficiency", "--grain", "month",
              "--from", "2025-12-01")
    want = run("evaluate", folder, "new_contacts", "--by", "channel", "--grain", "month", "--from", "2025-12-01",
               "--where", "channel != 'organic'", "--order", "-cost_per_lead")
    assert _by_key(got) == _by_key(want) and {row["period"] for row in got} == {"2025-12-01"}


def test_the_python_api_runs_it_by_name_and_a_relative_range_is_reproducible(folder):
    with open_project(folder) as project:
        saved = project.evaluate(query="last_two_quarters", as_of="2025-07-15").to_dicts()
        explicit = project.evaluate(["new_contacts"], grain="quarter", start=dt.date(2025, 1, 1),
                                    end=dt.date(2025, 7, 1)).to_dicts()
        assert saved == explicit and [row["period"] for row in saved] == [dt.date(2025, 1, 1), dt.date(2025, 4, 1)]
        assert "channel" in project.compile(query="channel_efficiency").sql()


def test_compile_takes_a_saved_query(folder):
    result = CliRunner().invoke(cli, ["compile", str(folder), "--query", "channel_efficiency"])
    assert result.exit_code == 0, result.output
    assert "'organic'" in result.stdout and "DESC" in result.stdout


def test_an_unknown_name_is_one_clear_error(folder):
    result = CliRunner().invoke(cli, ["evaluate", str(folder), "--query", "channel_eficiency"])
    assert result.exit_code == 2
    assert "unknown saved query 'channel_eficiency'. Did you mean 'channel_efficiency'?" in result.output
    assert "Traceback" not in result.output


def test_validate_compiles_each_saved_query_and_names_its_place(folder, tmp_path):
    root = tmp_path / "project"
    shutil.copytree(folder, root)
    (root / "queries.yaml").write_text(QUERIES + "  broken:\n    kpis: [cost_per_lead]\n    by: [chanel]\n")
    result = CliRunner().invoke(cli, ["validate", str(root)])
    assert result.exit_code == 1
    assert f"{root / 'queries.yaml'}:16:3 (query 'broken'): cannot slice by 'chanel'" in result.output
    assert result.output.count("Error:") == 1


def test_the_report_of_a_saved_query_is_the_report_of_its_kpis_grain_and_by(folder, tmp_path):
    runner = CliRunner()
    saved, explicit = tmp_path / "saved.html", tmp_path / "explicit.html"
    assert runner.invoke(cli, ["report", str(folder), "--query", "channel_efficiency", "--as-of", "2025-07-15",
                               "-o", str(saved)]).exit_code == 0
    assert runner.invoke(cli, ["report", str(folder), "cost_per_lead", "close_rate", "--grain", "quarter",
                               "--by", "channel", "--as-of", "2025-07-15", "-o", str(explicit)]).exit_code == 0
    assert saved.read_bytes() == explicit.read_bytes()  # reproducible: the same page, byte for byte


def test_check_takes_the_saved_querys_kpis_and_grain(folder):
    runner = CliRunner()
    saved = runner.invoke(cli, ["check", str(folder), "--query", "health", "--as-of", "2025-07-15",
                                "--format", "json"])
    explicit = runner.invoke(cli, ["check", str(folder), "roi", "nps", "--grain", "quarter",
                                   "--as-of", "2025-07-15", "--format", "json"])
    # (DuckDB adds floats in parallel: two runs of one sum may differ in the last bits)
    assert (saved.exit_code, _rounded(json.loads(saved.stdout))) == \
        (explicit.exit_code, _rounded(json.loads(explicit.stdout)))
    checked = json.loads(saved.stdout)
    assert '"roi"' in json.dumps(checked) and '"nps"' in json.dumps(checked)
    assert "2025-04-01" in json.dumps(checked)  # the last quarter complete before 2025-07-15


def _rounded(value):
    """JSON with every float at 12 significant digits."""
    if isinstance(value, float):
        return float(f"{value:.12g}")
    if isinstance(value, dict):
        return {key: _rounded(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_rounded(item) for item in value]
    return value


def _by_key(rows: list[dict]) -> dict:
    return {(row["period"], row["channel"]): row for row in rows}
