"""Plugins that add formula functions and output formats; broken ones are isolated."""

import json

import pytest
from click.testing import CliRunner
from sqlglot import exp

from kpi_engine.adapters import duckdb as duckdb_plugin
from kpi_engine.engine import KpiProject
from kpi_engine.errors import ProjectInvalid
from kpi_engine.hookspecs import FormulaFunction, ResultWriter, hookimpl
from kpi_engine.plugins import Registry
from kpi_engine.spec import load_project

SPEC = """
sources:
  orders: {table: orders, time: ordered_at, dimensions: [region]}
kpis:
  revenue: {formula: sum(orders.amount)}
  revenue_k: {formula: "thousands(sum(orders.amount), 1)"}
"""
ORDERS = [{"ordered_at": "2025-01-03", "region": "eu", "amount": 1500},
          {"ordered_at": "2025-01-04", "region": "us", "amount": 2250},
          {"ordered_at": "2025-02-01", "region": "eu", "amount": 4000}]


def _thousands(args, dialect):
    # round(x / 1000, digits): built from sqlglot nodes; one spelling for every dialect here.
    value = exp.Div(this=args[0], expression=exp.Literal.number(1000), typed=False, safe=False)
    return exp.Round(this=value, decimals=args[1] if len(args) > 1 else None)


class FunctionsPlugin:
    @hookimpl
    def kpi_engine_functions(self):
        return [FormulaFunction("thousands", 1, 2, _thousands, description="x / 1000, rounded")]


def _write_pipes(result, handle):  # raw values between pipes (the built-in markdown formats them)
    handle.write("| " + " | ".join(result.names) + " |\n")
    for row in result.to_dicts():
        handle.write("| " + " | ".join("" if v is None else str(v) for v in row.values()) + " |\n")


class WritersPlugin:
    @hookimpl
    def kpi_engine_writers(self):
        return [ResultWriter("pipes", _write_pipes)]


class BrokenPlugin:
    @hookimpl
    def kpi_engine_functions(self):
        raise RuntimeError("boom")

    @hookimpl
    def kpi_engine_writers(self):
        return [ResultWriter("markdown", _write_pipes)]  # clashes with a built-in format


def registry(*plugins):
    reg = Registry(load_entry_points=False)
    reg.register(duckdb_plugin, "duckdb")
    for i, plugin in enumerate(plugins):
        reg.register(plugin, f"plugin{i}")
    return reg


@pytest.fixture
def root(make_project):
    return make_project({"spec.yaml": SPEC}, {"orders": ORDERS})


def test_a_plugin_function_compiles_through_sqlglot(root):
    reg = registry(FunctionsPlugin(), BrokenPlugin())
    with KpiProject(load_project(root), registry=reg) as project:
        rows = project.evaluate(["revenue", "revenue_k"], by=["region"]).to_dicts()
        sql = project.compile(["revenue_k"], dialect="snowflake").sql()
    assert {r["region"]: r["revenue_k"] for r in rows} == {"eu": 5.5, "us": 2.3}  # 5500 -> 5.5; 2250 -> 2.25 -> 2.3
    assert "ROUND(" in sql
    assert "boom" in reg.plugins["plugin1"].error  # the broken plugin is reported, the other works


def test_without_the_plugin_the_function_is_unknown(root):
    with pytest.raises(ProjectInvalid, match="unknown function 'thousands'"):
        KpiProject(load_project(root), registry=registry()).model()


def test_a_plugin_output_format(root, monkeypatch):
    from kpi_engine import plugins as plugins_module
    from kpi_engine.cli import cli

    monkeypatch.setattr(plugins_module, "default_registry", lambda: registry(WritersPlugin(), BrokenPlugin(), FunctionsPlugin()))
    monkeypatch.setattr("kpi_engine.engine.default_registry", plugins_module.default_registry)
    result = CliRunner().invoke(cli, ["evaluate", str(root), "revenue", "--by", "region", "--format", "pipes"])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["| region | revenue | complete |", "| eu | 5500.0 | True |",
                                          "| us | 2250.0 | True |"]
    unknown = CliRunner().invoke(cli, ["evaluate", str(root), "revenue", "--format", "xlsx"])
    assert unknown.exit_code == 2 and "Use one of: table, csv, json, parquet, markdown, pipes." in unknown.stderr
    listing = json.loads(CliRunner().invoke(cli, ["plugins", "--format", "json"]).stdout)
    by_name = {row["plugin"]: row for row in listing}
    assert by_name["plugin0"]["formats"] == ["pipes"] and by_name["plugin0"]["status"] == "ok"
    assert "output format 'markdown' is built in" in by_name["plugin1"]["status"]
    built_in = CliRunner().invoke(cli, ["evaluate", str(root), "revenue", "--by", "region", "--format", "markdown"])
    assert built_in.stdout.splitlines() == ["| region | revenue | complete |", "|:---|---:|:---|",
                                            "| eu | 5,500.00 | yes |", "| us | 2,250.00 | yes |"]
