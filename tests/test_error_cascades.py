"""One mistake, one error: a misspelt section, a field indented one level too little, an empty
data file and a stray value in a CSV column of numbers are each reported once, at their cause,
without the errors they would cause further on."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from kpi_engine.cli import cli

SOURCES = """\
sources:
  orders:
    table: orders
    time: ordered_at
    dimensions: [channel]
  leads:
    table: leads
    time: created_at
  contacts:
    table: leads
    time: created_at
"""
KPIS = """\
kpis:
  revenue:
    unit: currency
    formula: sum(orders.amount)
  lead_count:
    formula: count(leads)
  revenue_per_lead:
    formula: revenue / lead_count
  average_order:
    formula: revenue / count(orders)
  contact_count:
    formula: count(contacts)
"""
ORDERS = [{"ordered_at": "2025-01-01", "channel": "ppc", "amount": 10}, {"ordered_at": "2025-01-02", "channel": "email",
                                                                         "amount": 20}]
LEADS = [{"created_at": "2025-01-01"}]


def validate(root, *more):
    result = CliRunner().invoke(cli, ["validate", str(root), *more])
    return result.exit_code, result.stderr.replace(str(root) + "/", "")


@pytest.fixture
def project(make_project):
    def make(sources=SOURCES, kpis=KPIS, orders=ORDERS, leads=LEADS):
        return make_project({"sources.yaml": sources, "kpis.yaml": kpis}, {"orders": orders, "leads": leads})
    return make


def test_the_project_is_valid_as_written(project):
    assert validate(project()) == (0, "")


def test_a_misspelt_sources_section_is_one_error(project):
    root = project(sources=SOURCES.replace("sources:", "sourses:"))
    # Before: an error for every formula that reads orders, leads or contacts, and the cause last.
    assert validate(root) == (1, "Error: sources.yaml:1:1: unknown field 'sourses' in the file. Did you mean "
                                 "'sources'?\n1 problem found.\n")
    evaluate = CliRunner().invoke(cli, ["evaluate", str(root), "lead_count"])
    assert evaluate.exit_code == 1 and evaluate.stderr.count("Error:") == 1


def test_a_misspelt_section_in_the_file_of_the_kpis(project):
    root = project(sources="", kpis=SOURCES.replace("sources:", "sorces:") + KPIS)
    assert validate(root) == (1, "Error: kpis.yaml:1:1: unknown field 'sorces' in the file. Did you mean 'sources'?\n"
                                 "Error: sources.yaml:1:1: the file is empty. Declare 'sources:' and/or 'kpis:' in it, "
                                 "or delete it.\n2 problems found.\n")  # the second is a mistake of its own


# Before: 'revenue' has no formula, 'kpis.formula must be an object', and the KPIs that use revenue
# did not know it. Each case: the spec files, then the line, the field and the object it belongs to.
DEDENTED = [
    (SOURCES, KPIS.replace("    formula: sum(orders.amount)", "  formula: sum(orders.amount)"),
     "kpis.yaml:4:3: 'formula:' is indented as a KPI of its own under 'kpis:', not as a field of the KPI 'revenue'"),
    (SOURCES, "kpis:\n  revenue:\n  formula: sum(orders.amount)\n  lead_count:\n    formula: count(leads)\n",
     "kpis.yaml:3:3: 'formula:' is indented as a KPI of its own under 'kpis:', not as a field of the KPI 'revenue'"),
    (SOURCES.replace("    time: created_at\n  contacts:", "  time: created_at\n  contacts:"), KPIS,
     "sources.yaml:8:3: 'time:' is indented as a source of its own under 'sources:', not as a field of the source "
     "'leads'"),
]


@pytest.mark.parametrize("sources, kpis, expected", DEDENTED)
def test_a_dedented_field_is_one_error_at_its_line(project, sources, kpis, expected):
    owner = expected.rsplit(" ", 1)[-1]
    assert validate(project(sources=sources, kpis=kpis)) == (
        1, f"Error: {expected} above it. Indent it under {owner} (to column 5, like its other fields).\n"
           "1 problem found.\n")


def test_a_file_that_is_not_yaml_hides_no_cause_behind_unknown_names(project):
    # A field dedented in the middle of a source breaks the YAML of the lines after it.
    root = project(sources=SOURCES.replace("    time: ordered_at", "  time: ordered_at"))
    code, errors = validate(root)
    assert code == 1 and errors.count("Error:") == 1 and errors.startswith("Error: sources.yaml:5:")
    assert "not valid YAML" in errors and "1 problem found." in errors


def test_an_empty_data_file_is_one_error_for_every_source_that_reads_it(project):
    root = project()
    (root / "data" / "leads.csv").write_text("")
    # leads and contacts both read it; before: their time columns, then every KPI over them.
    assert validate(root) == (1, "Error: data file 'leads.csv' is empty: it has no header row, so the table 'leads' "
                                 "has no columns. Write the column names on its first line and its rows below, or "
                                 "remove the file.\n1 problem found.\n")
    evaluate = CliRunner().invoke(cli, ["evaluate", str(root), "revenue", "--format", "csv"])
    assert evaluate.exit_code == 0 and evaluate.stdout == "revenue,complete\n30.0,true\n"  # others still answer


def test_a_data_file_with_a_header_and_no_rows(project, make_project):
    root = project()
    (root / "data" / "leads.csv").write_text("created_at,channel\n")
    assert validate(root) == (1, "Error: data file 'leads.csv' has a header but no rows, so DuckDB cannot tell the "
                                 "types of its columns (created_at, channel) and reads them as text. Add rows, or "
                                 "declare the types of the columns the sources read in kpi_engine.yaml, e.g. "
                                 "'warehouse: {tables: {leads: {types: {created_at: date}}}}' (types: number, "
                                 "integer, string, boolean, date, timestamp; docs/specs.md).\n1 problem found.\n")
    declared = make_project({"sources.yaml": SOURCES, "kpis.yaml": KPIS}, {"orders": ORDERS}, name="declared",
                            config="name: d\nwarehouse: {adapter: duckdb, data: data, tables: {leads: {types: "
                                   "{created_at: date, channel: string}}}}\n")
    (declared / "data" / "leads.csv").write_text("created_at,channel\n")
    assert validate(declared) == (0, "")  # an empty table whose types are known is a table
    counted = CliRunner().invoke(cli, ["evaluate", str(declared), "lead_count", "--format", "csv"])
    assert counted.exit_code == 0 and counted.stdout.startswith("lead_count,complete\n0,")


def test_a_stray_value_in_a_column_of_numbers_is_one_error(project):
    orders = ORDERS + [{"ordered_at": "2025-01-03", "channel": "ppc", "amount": "n/a"}]
    more = KPIS + "  paid_revenue:\n    formula: sum(orders.amount where channel = 'ppc')\n"
    code, errors = validate(project(orders=orders, kpis=more))
    assert code == 1 and errors == (
        "Error: kpis.yaml:4:18 (kpi 'revenue'): 'sum' needs numbers, but column 'amount' of data file 'orders.csv' is "
        "read as text: row 3 (line 4 of the file) holds 'n/a'. It is added up at kpis.yaml:14:18 (kpi "
        "'paid_revenue') too. Declare 'n/a' a marker of no value and the column a number in kpi_engine.yaml: "
        "'warehouse: {csv: {null: ['', 'n/a']}, tables: {orders: {types: {amount: number}}}}', or fix the value in the "
        "file (docs/specs.md, 'Reading a folder of CSV and Parquet files').\n"
        "    sum(orders.amount)\n        ^\n1 problem found.\n")
