"""Conversion sources on Spark (local[2], tests/spark_fixture.py) give what DuckDB gives on the same
CSV files (tests/test_conversions.py has the plain-Python references): one request holding every
conversion source of that project, by month and channel, and the conversions at their own time."""

from __future__ import annotations

import pytest

pytest_plugins = ["spark_fixture"]

import kpi_engine.adapters.duckdb  # noqa: E402
import kpi_engine.adapters.spark  # noqa: E402
from kpi_engine.engine import KpiProject  # noqa: E402
from kpi_engine.plugins import Registry  # noqa: E402
from kpi_engine.spec import load_project  # noqa: E402
from test_conversions import SPECS, assert_close, evaluate, generate, measures, write_folder  # noqa: E402

SOURCES = ("visit_signups", "first_touch_signups", "same_campaign_signups", "quick_signups")


def test_spark_equals_duckdb(spark, tmp_path):
    registry = Registry(load_entry_points=False)
    registry.register(kpi_engine.adapters.duckdb, "duckdb")
    registry.register(kpi_engine.adapters.spark, "spark")
    (tmp_path / "duckdb").mkdir()
    write_folder(tmp_path / "duckdb", generate())
    (tmp_path / "spark").mkdir()
    (tmp_path / "spark" / "kpi_engine.yaml").write_text(
        f"name: conversions\nwarehouse: {{adapter: spark, data: '{tmp_path / 'duckdb' / 'data'}'}}\n")
    (tmp_path / "spark" / "specs.yaml").write_text(SPECS)
    formulas = {f"{source}_{name}": text for source in SOURCES for name, text in measures(source).items()}
    formulas["at_conversion"] = "count(visit_signups at converted_at)"
    with KpiProject(load_project(tmp_path / "spark"), registry=registry) as on_spark, \
            KpiProject(load_project(tmp_path / "duckdb"), registry=registry) as on_duckdb:
        want = evaluate(on_duckdb, formulas, by_channel=True)
        assert any(row["visit_signups_count"] for row in want.values())
        assert_close(evaluate(on_spark, formulas, by_channel=True), want)



def test_spark_equals_duckdb_without_attribution_or_stacked_events(spark, tmp_path):
    """The shorter shapes (tests/test_conversion_shortcuts.py): per is the leads' key, so no
    attribution step, and each formula reads the leads too, so no base events stacked; beside a
    conversion per account, which keeps both."""
    import test_conversion_shortcuts as shortcuts

    registry = Registry(load_entry_points=False)
    registry.register(kpi_engine.adapters.duckdb, "duckdb")
    registry.register(kpi_engine.adapters.spark, "spark")
    (tmp_path / "duckdb").mkdir()
    data = shortcuts.generate()
    shortcuts.write_folder(tmp_path / "duckdb", data)
    (tmp_path / "spark").mkdir()
    (tmp_path / "spark" / "kpi_engine.yaml").write_text(
        f"name: shortcuts\nwarehouse: {{adapter: spark, data: '{tmp_path / 'duckdb' / 'data'}'}}\n")
    (tmp_path / "spark" / "specs.yaml").write_text(shortcuts.SPECS)
    formulas = {f"{source}_{name}": text for source in ("lead_opps", "lead_opps_same_region", "account_opps")
                for name, text in shortcuts.over_base(source).items()}
    with KpiProject(load_project(tmp_path / "spark"), registry=registry) as on_spark, \
            KpiProject(load_project(tmp_path / "duckdb"), registry=registry) as on_duckdb:
        text = on_spark.compile(formulas=[f"{k}={v}" for k, v in formulas.items()], grain="month",
                                by=["channel"]).sql()
        assert shortcuts.EVENTS not in text and text.count("ROW_NUMBER() OVER") == 2  # account_opps' two
        got = shortcuts.evaluate(on_spark, formulas)
        assert_close(got, shortcuts.evaluate(on_duckdb, formulas))
    want = shortcuts.reference(data)
    assert {k: v["lead_opps_rate"] for k, v in got.items()} == pytest.approx({k: v["rate"] for k, v in want.items()})
