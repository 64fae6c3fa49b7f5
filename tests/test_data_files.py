"""DuckDB data folders with real-world files: declared types, date formats, markers of no value,
and a value that does not read reported at its file, row and column."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from kpi_engine.cli import cli
from kpi_engine.engine import open_project
from kpi_engine.errors import QueryFailed, WarehouseError

SPECS = {"s.yaml": """
    sources:
      costs: {table: costs, time: day, dimensions: [platform]}
    kpis:
      spend: {formula: sum(costs.cost)}
      paid_days: {formula: count(costs where paid)}
    """}


def project(make_project, csv_text: str, warehouse: str, name: str = "project"):
    root = make_project(SPECS, config=f"name: t\nwarehouse:\n  adapter: duckdb\n  data: data\n{warehouse}", name=name)
    (root / "data" / "costs.csv").write_text(csv_text)
    return root


US = """\
day,platform,cost,paid
01/31/2025,google,10.50,yes
02/01/2025,n/a,n/a,no
02/11/2025,meta,4,yes
"""
US_SETTINGS = """\
  csv: {date_format: "%m/%d/%Y", null: ["", "n/a"]}
  tables:
    costs: {types: {day: date, cost: number, paid: boolean}}
"""


def test_us_dates_markers_of_no_value_and_declared_types(make_project):
    with open_project(project(make_project, US, US_SETTINGS)) as kpis:
        rows = kpis.evaluate(["spend", "paid_days"], grain="month").to_dicts()
        by_platform = kpis.evaluate(["spend"], by=["platform"]).to_dicts()
    # 01/31 is January, not the 1st of a 31st month; 'n/a' is no value, not text.
    assert [(str(r["period"]), r["spend"], r["paid_days"]) for r in rows] == \
        [("2025-01-01", 10.5, 1), ("2025-02-01", 4.0, 1)]
    assert {r["platform"]: r["spend"] for r in by_platform} == {"google": 10.5, "meta": 4.0, None: 0.0}


def test_a_declared_value_that_does_not_read_is_reported_at_its_file_row_and_column(make_project):
    root = project(make_project, US.replace("02/11/2025,meta,4", "02/11/2025,meta,4.0 USD"), US_SETTINGS)
    result = CliRunner().invoke(cli, ["evaluate", str(root), "spend", "--grain", "month"])
    assert result.exit_code == QueryFailed.exit_code
    assert result.stderr.startswith("Error: data file 'costs.csv', row 3 (line 4 of the file), column 'cost': "
                                    "'4.0 USD' is not a number (the column's type, declared in kpi_engine.yaml).")
    assert "declare '4.0 USD' a marker of no value" in result.stderr and "formula" not in result.stderr


def test_a_date_in_another_format_is_reported_with_the_format(make_project):
    root = project(make_project, US.replace("02/11/2025", "2025-02-11"), US_SETTINGS)
    with open_project(root) as kpis:
        with pytest.raises(QueryFailed) as info:
            kpis.evaluate(["spend"], grain="month")
    assert info.value.message == ("data file 'costs.csv', row 3 (line 4 of the file), column 'day': '2025-02-11' is "
                                  "not a date in the format %m/%d/%Y (the column's type, declared in kpi_engine.yaml).")


def test_a_bad_value_past_duckdbs_sample_is_found_in_an_undeclared_column(make_project):
    rows = "".join(f"2025-01-{1 + i % 28:02d},google,{i}.25,yes\n" for i in range(25_000))
    root = project(make_project, "day,platform,cost,paid\n" + rows + "2025-01-05,google,unknown,yes\n", "")
    with open_project(root) as kpis:
        with pytest.raises(QueryFailed) as info:
            kpis.evaluate(["spend"])
    assert info.value.message == ("data file 'costs.csv', row 25001 (line 25002 of the file), column 'cost': "
                                  "'unknown' is not a number (the column's type, detected by DuckDB from the first "
                                  "rows).")
    assert "types: {cost: number}" in info.value.hint


def test_text_summed_as_a_number_names_the_file_the_row_and_the_value(make_project):
    root = project(make_project, "day,platform,cost,paid\n2025-01-01,google,n/a,yes\n2025-01-02,google,5,yes\n", "")
    result = CliRunner().invoke(cli, ["validate", str(root)])
    assert result.exit_code == 1
    assert result.stderr.replace(str(root), "<p>") == (
        "Error: <p>/s.yaml:4:24 (kpi 'spend'): 'sum' needs numbers, but column 'cost' of data file 'costs.csv' is "
        "read as text: row 1 (line 2 of the file) holds 'n/a'. Declare 'n/a' a marker of no value and the column a "
        "number in kpi_engine.yaml: 'warehouse: {csv: {null: ['', 'n/a']}, tables: {costs: {types: {cost: number}}}}', "
        "or fix the value in the file (docs/specs.md, 'Reading a folder of CSV and Parquet files').\n"
        "    sum(costs.cost)\n        ^\n1 problem found.\n")
    # The advice, as written, reads the file (an empty field too): 5 is the one cost.
    fixed = project(make_project, "day,platform,cost,paid\n2025-01-01,google,n/a,yes\n2025-01-02,google,5,yes\n"
                                  "2025-01-03,google,,no\n",
                    "  csv: {null: ['', 'n/a']}\n  tables: {costs: {types: {cost: number}}}\n", name="fixed")
    spend = CliRunner().invoke(cli, ["evaluate", str(fixed), "spend", "--format", "csv"])
    assert spend.exit_code == 0 and spend.stdout == "spend,complete\n5.0,true\n"


def test_a_text_column_summed_keeps_the_formula_advice(make_project):
    """No value of 'platform' is a number: the column is text and the formula is what is wrong."""
    root = project(make_project, "day,platform,cost,paid\n2025-01-01,google,3,yes\n", "")
    (root / "s.yaml").write_text("kpis:\n  wrong: {formula: sum(costs.platform)}\n")
    (root / "sources.yaml").write_text("sources:\n  costs: {table: costs, time: day}\n")
    result = CliRunner().invoke(cli, ["validate", str(root)])
    assert "'sum' needs numbers, but this is a string. Use count or count_distinct for text" in result.stderr


def test_a_column_with_no_value_is_said_to_hold_none(make_project):
    root = project(make_project, "day,platform,cost,paid\n2025-01-01,google,,yes\n2025-01-02,meta,,no\n", "")
    result = CliRunner().invoke(cli, ["validate", str(root)])
    assert ("'sum' needs numbers, but column 'cost' of data file 'costs.csv' is read as text: it holds no value in "
            "any row. Declare its type in kpi_engine.yaml: 'warehouse: {tables: {costs: {types: {cost: number}}}}' "
            "(docs/specs.md") in result.stderr


def test_parquet_columns_are_cast_to_their_declared_types(make_project, tmp_path):
    import duckdb

    root = project(make_project, US, "  tables:\n    costs_pq: {types: {day: date, cost: number}, date_format: '%m/%d/%Y'}\n")
    (root / "data" / "costs.csv").unlink()
    target = root / "data" / "costs_pq.parquet"
    duckdb.sql("select * from (values ('01/31/2025', 'google', '10.5', true), ('02/11/2025', 'meta', '4', true)) "
               "as t(day, platform, cost, paid)").write_parquet(str(target))
    (root / "s.yaml").write_text((root / "s.yaml").read_text().replace("table: costs,", "table: costs_pq,"))
    with open_project(root) as kpis:
        rows = kpis.evaluate(["spend"], grain="month").to_dicts()
    assert [(str(r["period"]), r["spend"]) for r in rows] == [("2025-01-01", 10.5), ("2025-02-01", 4.0)]


@pytest.mark.parametrize("settings, message", [
    ("  csv: {dateformat: '%d'}\n", "unknown setting(s) dateformat in 'csv'."),
    ("  tables:\n    costz: {types: {day: date}}\n", "'tables.costz' names no CSV or Parquet file of the data folder"),
    ("  tables:\n    costs: {types: {day: datetime}}\n", "'tables.costs.types.day': 'datetime' is not a type."),
    ("  csv: {null: [1]}\n", "'csv.null' must be text or a list of texts."),
])
def test_settings_are_checked(make_project, settings, message):
    root = project(make_project, US, settings)
    with open_project(root) as kpis:
        with pytest.raises(WarehouseError) as info:
            kpis.evaluate(["spend"])
    assert f"kpi_engine.yaml, warehouse: {message}" in str(info.value)


def test_file_settings_need_a_data_folder(make_project):
    root = make_project(SPECS, config="name: t\nwarehouse: {adapter: duckdb, path: w.duckdb, csv: {null: ['-']}}\n")
    with open_project(root) as kpis:
        with pytest.raises(WarehouseError, match="describe the files of a data folder, but no 'data' folder is set"):
            kpis.evaluate(["spend"])
