"""A corpus of bad inputs, each wrong in exactly one way, run through the command line.

Every case builds a small, otherwise valid project in ``tmp_path`` (kpi_engine.yaml, two
sources, three KPIs and tiny CSV tables read by embedded DuckDB), changes or adds one file,
runs one command through click's CliRunner and checks four things:

- the exit code (1: a problem in the project, the request or the warehouse; 2: a usage error;
  3: the warehouse cannot be opened, as docs/errors.md documents);
- that standard error names the place: ``file:line:column`` for spec files (the exact line and
  column the problem was written at), otherwise the object or option (``--where filter``,
  ``kpi 'x'``, ``formula``);
- that it says how to fix it (a key phrase of the hint);
- that no traceback appears and no exception other than SystemExit escapes.

Adding a case is one line in ``CASES``. A case whose ``bug`` is set documents an engine bug:
it runs as ``xfail(strict=True)`` with that text as the reason, so the day the engine is fixed
the test says so.
"""

from __future__ import annotations

import datetime as dt
import re
import signal
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from kpi_engine.cli import cli

CONFIG = "name: demo\nwarehouse: {adapter: duckdb, data: data}\n"
WAREHOUSE = "warehouse: {adapter: duckdb, data: data}\n"

SOURCES = """\
sources:
  ad_spend:
    table: ad_spend
    time: day
    dimensions: [channel]
  leads:
    table: leads
    time: created_at
    primary_key: id
    dimensions: [channel, industry]
"""

KPIS = """\
kpis:
  spend:
    formula: sum(ad_spend.spend)
  new_leads:
    formula: count(leads)
  cpl:
    formula: spend / new_leads
"""

AD_SPEND_CSV = """\
day,channel,spend
2025-01-01,ppc,600
2025-01-15,email,100
2025-02-10,email,50
"""

LEADS_CSV = """\
id,created_at,channel,industry,score,is_qualified,customer_at
1,2025-01-01 10:00:00,ppc,saas,9,true,2025-02-01 00:00:00
2,2025-01-20 11:00:00,email,retail,5,false,
3,2025-02-03 09:30:00,email,saas,7,true,
"""

BASE: dict[str, str | bytes] = {
    "kpi_engine.yaml": CONFIG,
    "sources.yaml": SOURCES,
    "kpis.yaml": KPIS,
    "data/ad_spend.csv": AD_SPEND_CSV,
    "data/leads.csv": LEADS_CSV,
}


@dataclass(frozen=True)
class Case:
    id: str
    files: Mapping[str, str | bytes | None]  # added or replaced files; None removes a base file
    args: tuple[str, ...]  # the command line; "{p}" is the project folder
    code: int
    fragments: tuple[str, ...]  # each must appear in stderr
    where: tuple[str, int, int] | None = None  # (file, line, column) that stderr must name exactly
    bug: str | None = None  # an engine bug: the case is a strict xfail with this reason


# --- one-line builders ------------------------------------------------------------------------


def spec(id: str, text: str | bytes, line: int, column: int, *fragments: str, bug: str | None = None,
         command: tuple[str, ...] = ("validate", "{p}", "--offline"), file: str = "bad.yaml") -> Case:
    """A spec file ``bad.yaml`` (added to the valid project) with one problem at line:column."""
    return Case(id, {file: text}, command, 1, fragments, (file, line, column), bug)


def online(id: str, text: str, line: int, column: int, *fragments: str, bug: str | None = None) -> Case:
    """Like ``spec``, but validated against the warehouse (tables and columns are checked)."""
    return spec(id, text, line, column, *fragments, bug=bug, command=("validate", "{p}"))


def config(id: str, text: str | bytes, line: int, column: int, *fragments: str, bug: str | None = None,
           command: tuple[str, ...] = ("validate", "{p}", "--offline")) -> Case:
    """kpi_engine.yaml replaced by ``text``, with one problem at line:column."""
    return Case(id, {"kpi_engine.yaml": text}, command, 1, fragments, ("kpi_engine.yaml", line, column), bug)


def kpi(formula: str) -> str:
    """A spec file whose one KPI 'bad' has this formula; the formula starts at line 3, column 14."""
    return f"kpis:\n  bad:\n    formula: {formula}\n"


def formula(id: str, text: str, *fragments: str, extra: tuple[str, ...] = ("--grain", "month"), code: int = 1,
            bug: str | None = None, command: str = "evaluate") -> Case:
    """An ad-hoc --formula on the valid project; stderr must name the formula."""
    return Case(id, {}, (command, "{p}", "--formula", text, *extra), code, ("formula", *fragments), None, bug)


def run(id: str, args: tuple[str, ...], code: int, *fragments: str, files: Mapping | None = None,
        bug: str | None = None) -> Case:
    """Any command line on the valid project (changed by ``files``)."""
    return Case(id, files or {}, args, code, fragments, None, bug)


EVAL = ("evaluate", "{p}", "cpl")
COMPILE = ("compile", "{p}", "cpl")
SQL_SOURCE = "sources:\n  derived:\n    sql: {}\n"
# A source whose declared time column holds text.
TEXT_TIME = "sources:\n  leads2:\n    table: leads\n    time: channel\n"

CASES: list[Case] = [
    # --- YAML syntax -----------------------------------------------------------------------
    spec("yaml_colon_in_plain_value", "kpis:\n  a:\n    formula: count(leads)\n    label: Leads: all\n", 4, 17,
         "mapping values are not allowed", "Check indentation and quoting"),
    spec("yaml_bad_indentation", "kpis:\n  a:\n    formula: count(leads)\n   label: x\n", 4, 4,
         "not valid YAML", "Check indentation and quoting"),
    spec("yaml_list_item_in_mapping", "kpis:\n  a:\n    formula: count(leads)\n  - b\n", 4, 3,
         "not valid YAML", "but found '-'", "Check indentation"),
    spec("yaml_unclosed_flow_mapping", "kpis:\n  a: {formula: count(leads)\n  b: 1\n", 3, 4,
         "expected ',' or '}'", "Check indentation and quoting"),
    spec("yaml_undefined_alias", "kpis:\n  a:\n    formula: count(leads)\n    label: *nope\n", 4, 12,
         "undefined alias 'nope'", "Check indentation and quoting"),
    spec("yaml_reserved_indicator", "kpis:\n  a:\n    formula: count(leads)\n    label: @x\n", 4, 12,
         "'@' that cannot start any token", "Check indentation and quoting"),
    spec("yaml_complex_key", "kpis:\n  ? [a, b]\n  : {formula: count(leads)}\n", 2, 5,
         "a mapping key must be a plain name", "Write names as plain words"),
    spec("yaml_unclosed_bracket", "kpis:\n  a:\n    tags: [x, y\n    formula: count(leads)\n", 3, 11,
         "not valid YAML", "']'"),
    spec("yaml_unclosed_quote", "kpis:\n  a:\n    formula: 'count(leads)\n  b:\n    formula: count(leads)\n", 3, 14,
         "not valid YAML", "quote"),
    spec("yaml_unclosed_bracket_at_end", "kpis:\n  a:\n    formula: count(leads)\n    tags: [x, y\n", 4, 11,
         "the '[' opened here is never closed", "Close it with ']'"),
    spec("yaml_missing_comma_in_flow_mapping", "kpis:\n  a: {formula: count(leads) label: x}\n", 2, 34,
         "expected ',' or '}'", "Check indentation and quoting"),
    spec("yaml_two_documents", "kpis:\n  a:\n    formula: count(leads)\n---\nkpis: {}\n", 4, 1,
         "single document", "remove the '---' line"),
    spec("yaml_unknown_tag", "kpis:\n  a:\n    formula: count(leads)\n    label: !custom abc\n", 4, 12,
         "cannot read the value 'abc'", "'!custom'", "quote it to keep it as text"),
    spec("yaml_bad_int_tag", "kpis:\n  a:\n    formula: count(leads)\n    label: !!int abc\n", 4, 12,
         "cannot read the value 'abc'", "Remove the '!!' tag"),
    spec("yaml_bad_timestamp_tag", "kpis:\n  a:\n    formula: count(leads)\n    label: !!timestamp 2025-99-99\n",
         4, 12, "cannot read the value '2025-99-99'", "Remove the '!!' tag"),
    spec("yaml_equals_value", "kpis:\n  a:\n    formula: count(leads)\n    label: =\n", 4, 12,
         "cannot read the value '='", "quote it to keep it as text"),
    spec("tab_indentation", "kpis:\n  a:\n\tformula: count(leads)\n", 3, 1, "'\\t'", "indent with spaces"),
    spec("tab_before_value", "kpis:\n\ta:\n    formula: count(leads)\n", 2, 1, "indent with spaces"),
    config("tab_in_project_file", "name: demo\nwarehouse:\n\tadapter: duckdb\n", 3, 1, "indent with spaces"),
    spec("duplicate_kpi", "kpis:\n  a:\n    formula: count(leads)\n  a:\n    formula: count(leads)\n", 4, 3,
         "duplicate key 'a'", "first defined at line 2", "Remove or rename one of them"),
    spec("duplicate_field", "kpis:\n  a:\n    formula: count(leads)\n    formula: sum(ad_spend.spend)\n", 4, 5,
         "duplicate key 'formula'", "Remove or rename one of them"),
    config("duplicate_project_key", "name: demo\nname: other\n" + WAREHOUSE, 2, 1,
           "duplicate key 'name'", "Remove or rename one of them"),
    spec("empty_file", "", 1, 1, "the file is empty", "Declare 'sources:' and/or 'kpis:'"),
    spec("comment_only_file", "# sources come later\n", 1, 1, "the file is empty", "Declare 'sources:'"),
    spec("blank_lines_only", "\n\n\n", 1, 1, "the file is empty", "Declare 'sources:'"),
    spec("not_utf8", b"kpis:\n  a:\n    label: caf\xe9\n    formula: count(leads)\n", 3, 15,
         "not valid UTF-8 (byte 0xe9)", "Save it as UTF-8"),
    spec("utf16_file", "kpis:\n  a:\n    formula: count(leads)\n".encode("utf-16"), 1, 1,
         "not valid UTF-8", "Save it as UTF-8"),
    config("project_file_not_utf8", b"name: d\xffmo\n" + WAREHOUSE.encode(), 1, 8,
           "not valid UTF-8 (byte 0xff)", "Save it as UTF-8"),
    spec("list_at_top_level", "- sources\n- kpis\n", 1, 1, "must be a mapping", "Start the file with 'sources:'"),
    spec("scalar_at_top_level", "cost per lead\n", 1, 1, "must be a mapping", "Start the file with 'sources:'"),
    config("project_file_is_a_list", "- name: demo\n", 1, 1, "must be a mapping", "Write at least 'name:"),
    config("project_file_empty", "", 1, 1, "the file is empty", "Write at least 'name: my_project'"),

    # --- schema: types --------------------------------------------------------------------
    spec("tags_string_not_list", "kpis:\n  a:\n    formula: count(leads)\n    tags: acquisition\n", 4, 11,
         "kpis.a.tags must be an array, not str", "Fix the value's type"),
    spec("formula_number", kpi("12"), 3, 14, "kpis.bad.formula must be a string, not int", "Fix the value's type"),
    spec("formula_missing_value", "kpis:\n  bad:\n    formula:\n", 3, 13, "must be a string, not nothing",
         "Fix the value's type"),
    spec("label_number", "kpis:\n  a:\n    formula: count(leads)\n    label: 12\n", 4, 12,
         "kpis.a.label must be a string, not int", "quote it if it should be text"),
    spec("label_date", "kpis:\n  a:\n    formula: count(leads)\n    label: 2025-01-01\n", 4, 12,
         "must be a string, not date", "quote it if it should be text"),
    spec("kpi_dimensions_string", "kpis:\n  a:\n    formula: count(leads)\n    dimensions: channel\n", 4, 17,
         "must be an array", "Fix the value's type"),
    spec("source_dimension_number", "sources:\n  s:\n    table: leads\n    dimensions: [channel, 12]\n", 4, 27,
         "sources.s.dimensions.1 must be a string, not int", "Fix the value's type"),
    spec("sources_is_a_list", "sources:\n  - leads\n", 2, 3, "sources must be an object, not list",
         "Fix the value's type"),
    spec("kpi_is_a_string", "kpis:\n  a: count(leads)\n", 2, 6, "kpis.a must be an object, not str",
         "Fix the value's type"),
    spec("columns_is_a_list", "sources:\n  s:\n    table: leads\n    columns: [score]\n", 4, 14,
         "must be an object", "Fix the value's type"),
    spec("target_number", "kpis:\n  a:\n    formula: count(leads)\n    target: 100\n", 4, 13,
         "kpis.a.target must be an object, not int", "Fix the value's type"),
    spec("target_min_text", "kpis:\n  a:\n    formula: count(leads)\n    target: {min: low}\n", 4, 19,
         "kpis.a.target.min must be a number, not str", "Fix the value's type"),
    config("project_name_boolean", "name: true\n" + WAREHOUSE, 1, 7, "name must be a string, not bool",
           "quote it if it should be text"),
    config("project_name_number", "name: 2025\n" + WAREHOUSE, 1, 7, "name must be a string, not int",
           "quote it if it should be text"),
    config("include_string_not_list", "name: demo\n" + WAREHOUSE + "include: builtin:marketing\n", 3, 10,
           "include must be an array, not str", "Fix the value's type"),
    config("fiscal_year_start_text", "name: demo\n" + WAREHOUSE + "fiscal_year_start: april\n", 3, 20,
           "must be an integer, not str", "Fix the value's type"),
    spec("primary_key_empty_list", "sources:\n  s:\n    table: leads\n    primary_key: []\n", 4, 18,
         "at least one"),
    spec("primary_key_repeated", "sources:\n  s:\n    table: leads\n    primary_key: [id, id]\n", 4, 18,
         "'id' is listed more than once", "Remove the repeated 'id'"),
    spec("tags_repeated", "kpis:\n  a:\n    formula: count(leads)\n    tags: [paid, paid]\n", 4, 11,
         "non-unique", "'paid' is listed more than once", "Remove"),

    # --- schema: unknown fields, with a suggestion ----------------------------------------
    spec("unknown_kpi_field", "kpis:\n  a:\n    formla: count(leads)\n", 3, 5,
         "unknown field 'formla' in kpis.a", "Did you mean 'formula'?"),
    spec("unknown_kpi_field_label", "kpis:\n  a:\n    formula: count(leads)\n    lable: Leads\n", 4, 5,
         "unknown field 'lable'", "Did you mean 'label'?"),
    spec("unknown_source_field", "sources:\n  s:\n    tabel: leads\n", 3, 5,
         "unknown field 'tabel' in sources.s", "Did you mean 'table'?"),
    spec("unknown_source_field_singular", "sources:\n  s:\n    table: leads\n    dimension: [channel]\n", 4, 5,
         "unknown field 'dimension'", "Did you mean 'dimensions'?"),
    spec("unknown_source_field_key", "sources:\n  s:\n    table: leads\n    primarykey: id\n", 4, 5,
         "unknown field 'primarykey'", "Did you mean 'primary_key'?"),
    spec("unknown_dimension_field", "sources:\n  s:\n    table: leads\n    dimensions:\n      - {name: channel, colum: channel}\n",
         5, 25, "unknown field 'colum'", "Did you mean 'column'?"),
    spec("dimension_object_bad_name", "sources:\n  s:\n    table: leads\n    dimensions:\n      - {name: sales-channel}\n",
         5, 16, "'sales-channel' is not a valid name", "Names start with a letter or '_'"),
    spec("unknown_relationship_field",
         "sources:\n  s:\n    table: leads\n    relationships:\n      - {to: leads, on: id, too_column: id}\n", 5, 29,
         "unknown field 'too_column'", "Did you mean 'to_column'?"),
    spec("unknown_relationship_field_block",
         "sources:\n  s:\n    table: leads\n    relationships:\n      - to: leads\n        onn: id\n", 6, 9,
         "unknown field 'onn'", "Did you mean 'on'?"),
    spec("unknown_target_field", "kpis:\n  a:\n    formula: count(leads)\n    target: {maximum: 3}\n", 4, 14,
         "unknown field 'maximum'", "Did you mean 'max'?"),
    spec("unknown_top_level_key", "kpi:\n  a:\n    formula: count(leads)\n", 1, 1,
         "unknown field 'kpi'", "Did you mean 'kpis'?"),
    config("unknown_project_field", CONFIG + "timezon: UTC\n", 3, 1,
           "unknown field 'timezon'", "Did you mean 'timezone'?"),
    config("unknown_project_field_warehouse", "name: demo\nwarehous: {adapter: duckdb, data: data}\n", 2, 1,
           "unknown field 'warehous'", "Did you mean 'warehouse'?"),

    # --- schema: names --------------------------------------------------------------------
    spec("kpi_name_dash", "kpis:\n  cost-per-lead:\n    formula: count(leads)\n", 2, 3,
         "'cost-per-lead' is not a valid name", "Names start with a letter or '_'"),
    spec("kpi_name_space", "kpis:\n  cost per lead:\n    formula: count(leads)\n", 2, 3,
         "'cost per lead' is not a valid name", "Names start with a letter or '_'"),
    spec("kpi_name_leading_digit", "kpis:\n  1st_touch:\n    formula: count(leads)\n", 2, 3,
         "'1st_touch' is not a valid name", "Names start with a letter or '_'"),
    spec("kpi_name_sql_quote", "kpis:\n  \"x'; drop table leads; --\":\n    formula: count(leads)\n", 2, 3,
         "is not a valid name", "contain only letters, digits and '_'"),
    spec("source_name_dash", "sources:\n  ad-spend2:\n    table: ad_spend\n", 2, 3,
         "'ad-spend2' is not a valid name", "Names start with a letter or '_'"),
    spec("dimension_name_dash", "sources:\n  s:\n    table: leads\n    dimensions: [sales-channel]\n", 4, 18,
         "'sales-channel' is not a valid name", "Names start with a letter or '_'",
         "renamed in the source's 'sql:'"),
    spec("time_column_with_sql", "sources:\n  s:\n    table: leads\n    time: \"created_at; drop\"\n", 4, 11,
         "is not a valid name", "Names start with a letter or '_'"),
    spec("column_name_space", "sources:\n  s:\n    table: leads\n    columns: {my score: number}\n", 4, 15,
         "'my score' is not a valid name", "Names start with a letter or '_'"),
    spec("kpi_name_dash_second", "kpis:\n  fine:\n    formula: count(leads)\n  cost-per-lead:\n    formula: count(leads)\n",
         4, 3, "'cost-per-lead' is not a valid name", "Names start with a letter or '_'"),
    spec("kpi_name_too_long", "kpis:\n  fine:\n    formula: count(leads)\n  " + "x" * 129 + ":\n    formula: count(leads)\n",
         4, 3, "the name is 129 characters long; the limit is 128", "Shorten it"),
    spec("table_name_space", "sources:\n  s:\n    table: my leads\n", 3, 12,
         "'my leads' is not a valid table name", "Write table, schema.table or catalog.schema.table",
         "is read with 'sql:' instead of 'table:'"),
    spec("table_name_sql", "sources:\n  s:\n    table: leads; drop table leads\n", 3, 12,
         "is not a valid table name", "Write table, schema.table"),

    # --- the project file -------------------------------------------------------------------
    run("missing_project_file", ("validate", "{p}"), 1, "has no kpi_engine.yaml", "Create kpi_engine.yaml",
        files={"kpi_engine.yaml": None}),
    run("missing_project_folder", ("validate", "{p}/nowhere"), 1, "nowhere' does not exist",
        "Pass the folder that holds kpi_engine.yaml"),
    config("missing_name", WAREHOUSE, 1, 1, "missing the required field 'name'", "Add 'name:'"),
    config("bad_timezone", CONFIG + "timezone: Mars/Olympus_Mons\n", 3, 11, "unknown time zone 'Mars/Olympus_Mons'",
           "Use an IANA name"),
    config("timezone_with_space", CONFIG + "timezone: Europe Paris\n", 3, 11, "'Europe Paris'", "IANA"),
    config("bad_week_start", CONFIG + "week_start: mon\n", 3, 13, "'mon' is not one of", "Did you mean 'monday'?"),
    config("fiscal_year_start_13", CONFIG + "fiscal_year_start: 13\n", 3, 20, "fiscal_year_start: 13",
           "maximum of 12"),
    config("fiscal_year_start_0", CONFIG + "fiscal_year_start: 0\n", 3, 20, "fiscal_year_start: 0", "minimum of 1"),
    config("include_missing_folder", CONFIG + "include: [libs/missing]\n", 3, 11,
           "included library 'libs/missing' does not exist", "relative to the project folder"),
    config("include_unknown_builtin", CONFIG + "include: [builtin:marketin]\n", 3, 11,
           "included library 'builtin:marketin' does not exist", "Built-in libraries: marketing"),
    config("currency_lowercase", CONFIG + "currency: usd\n", 3, 11, "'usd'", "USD"),
    config("unknown_dialect_in_project", CONFIG + "dialect: postgress\n", 3, 10, "postgress",
           "Did you mean 'postgres'?", command=("validate", "{p}")),
    run("unknown_dialect_in_project_evaluate", EVAL, 1, "kpi_engine.yaml:3:10", "Did you mean 'postgres'?",
        files={"kpi_engine.yaml": CONFIG + "dialect: postgress\n"}),
    run("unknown_adapter", ("validate", "{p}"), 1, "no adapter named 'duckbd'", "Did you mean 'duckdb'?",
        files={"kpi_engine.yaml": "name: demo\nwarehouse: {adapter: duckbd, data: data}\n"}),
    run("unknown_warehouse_setting", EVAL, 1, "unknown DuckDB setting(s): datas", "DuckDB takes 'path'",
        files={"kpi_engine.yaml": "name: demo\nwarehouse: {adapter: duckdb, datas: data}\n"}),
    run("warehouse_not_a_url", (*EVAL, "--warehouse", "notaurl"), 2, "the warehouse setting is not a URL",
        "Write it as scheme://"),

    # --- KPI and source fields ---------------------------------------------------------------
    spec("unknown_unit", "kpis:\n  a:\n    formula: count(leads)\n    unit: dollars\n", 4, 11,
         "'dollars' is not one of", "currency"),
    spec("unknown_unit_close", "kpis:\n  a:\n    formula: count(leads)\n    unit: percentage\n", 4, 11,
         "'percentage' is not one of", "Did you mean 'percent'?"),
    spec("bad_target_direction", "kpis:\n  a:\n    formula: count(leads)\n    target: {direction: up}\n", 4, 25,
         "'up' is not one of", "higher_is_better"),
    spec("bad_format", "kpis:\n  a:\n    formula: count(leads)\n    format: \",.2q\"\n", 4, 13,
         "',.2q' is not a number format", "Use a Python format spec"),
    spec("kpi_without_formula", "kpis:\n  a:\n    label: Leads\n", 2, 3, "KPI 'a' has no formula", "Add 'formula:'"),
    spec("kpi_defined_twice", "kpis:\n  spend:\n    formula: sum(ad_spend.spend)\n", 2, 3,
         "KPI 'spend' is defined twice", "names are unique across the project", file="more_kpis.yaml"),
    spec("source_defined_twice", "sources:\n  leads:\n    table: leads\n", 2, 3,
         "source 'leads' is defined twice", "names are unique across the project", file="zz_more.yaml"),
    spec("dimension_declared_twice", "sources:\n  s:\n    table: leads\n    dimensions: [channel, channel]\n", 4, 27,
         "dimension 'channel' is declared twice", "Remove the second one"),
    spec("table_and_sql", "sources:\n  s:\n    table: leads\n    sql: select * from leads\n", 2, 3,
         "needs exactly one of 'table' and 'sql'", "Use 'table: schema.name'"),
    spec("neither_table_nor_sql", "sources:\n  s:\n    time: created_at\n", 2, 3,
         "needs exactly one of 'table' and 'sql'", "'sql: select ...'"),
    online("sql_not_a_select", SQL_SOURCE.format("delete from leads"), 3, 10, "exactly one SELECT",
           "a source only reads data"),
    online("sql_two_statements", SQL_SOURCE.format("select 1; drop table leads"), 3, 10, "exactly one SELECT",
           "Remove any other statement"),
    online("sql_does_not_parse", SQL_SOURCE.format("select * from leads where"), 3, 10, "does not parse as duckdb SQL",
           "Write a single SELECT statement"),
    spec("sql_not_a_select_offline", SQL_SOURCE.format("delete from leads"), 3, 10, "exactly one SELECT",
         "a source only reads data"),
    run("sql_not_a_select_compile", ("compile", "{p}", "--offline", "--formula", "count(derived)"), 1,
        "bad.yaml:3:10", "exactly one SELECT", "Remove any other statement",
        files={"bad.yaml": SQL_SOURCE.format("select 1; drop table leads")}),

    # --- formula syntax (positions in the spec file) ------------------------------------------
    spec("unbalanced_open_paren", kpi("(count(leads)"), 3, 27, "the formula ends too early", "Expected ')'"),
    spec("unbalanced_close_paren", kpi("count(leads))"), 3, 26, "unexpected ')'", "Expected the end of the formula"),
    spec("trailing_operator", kpi("count(leads) +"), 3, 28, "the formula ends too early", "a number"),
    spec("missing_comma", kpi("if(count(leads) > 1 1, 2)"), 3, 34, "unexpected '1'", "Expected ')'"),
    spec("missing_operand", kpi("count(leads) * / 2"), 3, 29, "unexpected '/'", "a number"),
    spec("arrow_not_an_operator", kpi("count(leads where score => 3)"), 3, 39, "unexpected '>'", "a number"),
    spec("dangling_dot", kpi("count(leads.)"), 3, 26, "unexpected ')'", "Expected a name"),
    spec("empty_where", kpi("count(leads where)"), 3, 31, "unexpected ')'", "Expected '('"),
    spec("two_where_clauses", kpi("count(leads where score > 1 where score < 3)"), 3, 42, "unexpected 'where'",
         "Expected ')', 'per'"),
    spec("where_outside_aggregate", kpi("count(leads) where score > 1"), 3, 27, "unexpected 'where'",
         "Expected the end of the formula"),
    spec("unterminated_string", "kpis:\n  bad:\n    formula: \"count(leads where industry = 'saas)\"\n", 3, 44,
         "a 'string' is not closed", "End it with a single quote"),
    spec("semicolon", kpi("count(leads); drop"), 3, 26, "a ';' is not part of the formula language",
         "no comments or statements"),
    spec("block_scalar_error", "kpis:\n  bad:\n    formula: >\n      count(leads)\n        / count(leads where)\n",
         5, 28, "unexpected ')'", "Expected '('"),
    spec("empty_formula", kpi("\"\""), 3, 14, "the formula is empty", "Write an expression such as"),
    spec("blank_formula", kpi("\" \""), 3, 15, "the formula is empty", "Write an expression such as"),
    formula("empty_formula_option", "", "the formula is empty", "Write an expression such as"),
    formula("sql_comment_dashes", "count(leads) -- spend", "comment ('--') is not part of the formula language",
            "Put notes in the KPI's description"),
    formula("sql_comment_dashes_text", "count(leads) -- all leads", "comment ('--')", "with a space for a double minus"),
    formula("block_comment", "count(leads) /* all */", "comment ('/*') is not part of the formula language",
            "no comments or statements"),
    formula("hash_comment", "count(leads) # all", "comment ('#') is not part of the formula language",
            "Put notes in the KPI's description"),
    formula("backtick_identifier", "count(`leads`)", "a backtick is not part of the formula language",
            "quote text with single quotes"),
    formula("double_quoted_identifier", "count(\"leads\")", "a double quote is not part of the formula language",
            "quote text with single quotes"),
    formula("bare_where", "where", "unknown KPI 'where'", "Known names: cpl, new_leads, spend"),
    formula("two_dots_number", "1.2.3 + count(leads)", "unexpected '.3'", "Expected"),

    # --- functions ---------------------------------------------------------------------------
    spec("unknown_function", kpi("counts(leads)"), 3, 14, "unknown function 'counts'", "Did you mean 'count'?"),
    formula("unknown_function_sum", "summ(ad_spend.spend)", "unknown function 'summ'", "Did you mean 'sum'?"),
    formula("unknown_function_sql", "pg_sleep(1)", "unknown function 'pg_sleep'", "Known names: abs, approx_percentile, at_start, avg"),
    formula("if_two_arguments", "if(count(leads) > 1, 1)", "'if' takes 3 arguments, not 2",
            "Write 'if(condition, value_if_true, value_if_false)'"),
    formula("round_three_arguments", "round(spend, 1, 2)", "'round' takes 1 to 2 arguments, not 3",
            "Write 'round(value)' or 'round(value, digits)'"),
    formula("nullif_one_argument", "nullif(spend)", "'nullif' takes 2 arguments, not 1",
            "Write 'nullif(value, value_that_means_null)'"),
    formula("abs_two_arguments", "abs(spend, 1)", "'abs' takes 1 argument, not 2", "Write 'abs(value)'"),
    formula("coalesce_no_argument", "coalesce()", "'coalesce' takes 1 or more arguments, not 0", "Write 'coalesce("),
    formula("previous_no_argument", "previous()", "'previous' takes 1 or 2 arguments, not 0",
            "Write 'previous(x), previous(x, 12) or previous(x, '1 year')'"),
    formula("previous_three_arguments", "previous(spend, 1, 2)", "'previous' takes 1 or 2 arguments, not 3",
            "previous(x, 12)"),
    formula("rolling_one_argument", "rolling(spend)", "'rolling' takes 2 arguments, not 1", "Write 'rolling(x, 3) or rolling(x, '30 days')'"),
    formula("cumulative_three_arguments", "cumulative(spend, 'year', 1)",
            "'cumulative' takes 1 or 2 arguments, not 3", "cumulative(x, 'year')"),
    formula("share_two_arguments", "share(spend, 2)", "'share' takes 1 argument, not 2", "Write 'share(x)'"),
    formula("count_two_arguments", "count(leads, leads)", "'count' takes one argument, not 2",
            "Write 'count(source.column)' or 'count(source)'"),
    formula("rolling_zero_periods", "rolling(spend, 0)", "whole number of periods", "Write 'rolling(x, 3) or rolling(x, '30 days')'"),
    formula("cumulative_unknown_reset", "cumulative(spend, 'decade')", "the period it restarts at",
            "Write one of: 'week', 'month'"),
    formula("time_function_in_filter", "count(leads where previous(spend) > 1)", "works on KPI values, not on rows",
            "Use it outside aggregates"),
    formula("where_on_function", "abs(spend where channel = 'x')", "'where' only applies to aggregates",
            "Move the condition into an aggregate"),
    spec("aggregate_of_aggregate", kpi("sum(count(leads))"), 3, 18, "'count' is an aggregate inside another aggregate",
         "Aggregate once"),
    formula("max_of_sum", "max(sum(ad_spend.spend))", "'sum' is an aggregate inside another aggregate",
            "Aggregate once"),
    formula("per_outside_filter", "count(leads per id)", "only makes sense inside another aggregate's filter",
            "Use it in a 'where'"),

    # --- types ---------------------------------------------------------------------------------
    spec("sum_of_text", kpi("sum(leads.channel)"), 3, 18, "'sum' needs numbers, but this is a string",
         "Use count or count_distinct for text", command=("validate", "{p}")),
    formula("avg_of_text", "avg(leads.industry)", "'avg' needs numbers, but this is a string",
            "Use count or count_distinct"),
    formula("arithmetic_on_text", "count(leads where channel + 1 > 2)", "expected a number here, but this is a string",
            "Arithmetic works on numbers only"),
    formula("text_times_number", "spend * 'a'", "expected a number here, but this is a string",
            "Arithmetic works on numbers only"),
    formula("non_boolean_where", "count(leads where score)", "expected a condition (true/false) here",
            "Write a comparison such as"),
    formula("not_of_text", "count(leads where not channel)", "expected a condition (true/false) here",
            "Write a comparison"),
    formula("if_condition_number", "if(spend, 1, 2)", "expected a condition (true/false) here", "Write a comparison"),
    formula("text_compared_with_number", "count(leads where channel > 3)", "cannot compare a string with a number",
            "Compare values of the same kind"),
    formula("in_list_mixed_types", "count(leads where score in ('a'))", "cannot compare a number with a string",
            "Compare values of the same kind"),
    formula("between_mixed_types", "count(leads where score between 'a' and 3)",
            "cannot compare a number with a string", "quote text as 'text'"),
    formula("timestamp_compared_with_number", "count(leads where customer_at > 5)",
            "cannot compare a timestamp with a number", "Compare values of the same kind"),
    formula("days_between_number", "max(days_between(leads.score, leads.created_at))",
            "days_between needs dates or timestamps, but this is a number", "Pass two date or timestamp columns"),
    formula("days_between_text", "max(days_between(leads.created_at, leads.channel))",
            "days_between needs dates or timestamps, but this is a string", "is read with date() or timestamp()"),
    formula("greatest_text_and_number", "greatest(spend, 'a')", "cannot compare a number with a string",
            "Compare values of the same kind"),
    formula("nullif_text_and_number", "nullif(spend, 'a')", "cannot compare a number with a string",
            "Compare values of the same kind"),
    formula("if_branches_text_and_number", "if(spend > 1, spend, 'none')", "cannot compare a number with a string",
            "Compare values of the same kind"),
    formula("formula_gives_boolean", "count(leads) > 1", "must give a number, but this gives a boolean",
            "Aggregate or count it"),

    # --- names ---------------------------------------------------------------------------------
    formula("unknown_source", "count(lead)", "unknown source 'lead'", "Did you mean 'leads'?"),
    formula("unknown_source_column_form", "sum(ad_spnd.spend)", "unknown source 'ad_spnd'", "Did you mean 'ad_spend'?"),
    spec("unknown_column", kpi("sum(ad_spend.spnd)"), 3, 18, "source 'ad_spend' has no column 'spnd'",
         "Did you mean 'spend'?", command=("validate", "{p}")),
    spec("unknown_kpi", kpi("spnd / new_leads"), 3, 14, "unknown KPI 'spnd'", "Did you mean 'spend'?"),
    formula("unknown_kpi_option", "new_lead * 2", "unknown KPI 'new_lead'", "Did you mean 'new_leads'?"),
    formula("column_outside_aggregate", "leads.score", "column 'leads.score' is used outside an aggregate",
            "Wrap it in an aggregate"),
    formula("source_as_value", "leads", "'leads' is a source, not a value", "Aggregate it, e.g. 'count(leads)'"),
    formula("column_of_other_source", "sum(leads.score + ad_spend.spend)", "belongs to source 'ad_spend'",
            "compute the other part in its own aggregate"),
    formula("count_distinct_whole_source", "count_distinct(leads)", "'count_distinct(leads)' needs a column",
            "Write 'count_distinct(leads.column)'"),
    spec("kpi_references_itself", kpi("me + 1").replace("bad", "me"), 3, 14, "cycle: me -> me", "Break the cycle"),
    spec("cycle_of_two", "kpis:\n  a:\n    formula: b + 1\n  b:\n    formula: a * 2\n", 3, 14,
         "cycle: a -> b -> a", "Break the cycle"),
    spec("cycle_of_three", "kpis:\n  a:\n    formula: b + 1\n  b:\n    formula: c * 2\n  c:\n    formula: a - 1\n",
         3, 14, "cycle: a -> b -> c -> a", "Break the cycle"),
    spec("kpi_dimension_not_on_every_source",
         "kpis:\n  a:\n    formula: spend / new_leads\n    dimensions: [channel, industry]\n", 4, 27,
         "dimension 'industry' is not available on every source", "Declare 'industry' on ad_spend"),
    spec("kpi_dimension_unknown", "kpis:\n  a:\n    formula: count(leads)\n    dimensions: [regoin]\n", 4, 18,
         "dimension 'regoin' is not available", "remove it from the KPI's dimensions"),

    # --- the request -----------------------------------------------------------------------------
    run("unknown_kpi_name", ("evaluate", "{p}", "cpll"), 1, "project 'demo'", "unknown KPI 'cpll'",
        "Did you mean 'cpl'?"),
    run("by_unknown_dimension", (*EVAL, "--by", "chanel"), 1, "cannot slice by 'chanel'", "Did you mean 'channel'?"),
    run("by_dimension_missing_on_one_source", (*EVAL, "--by", "industry"), 1,
        "cannot slice by 'industry': sources ad_spend do not have it", "declare 'industry' on ad_spend"),
    run("by_period", (*EVAL, "--by", "period"), 1, "'period' is the time column", "use --grain"),
    run("where_not_a_dimension", (*EVAL, "--where", "score > 3"), 1, "--where filter", "'score'",
        "Filterable dimensions: channel"),
    run("where_dimension_missing_on_one_source", (*EVAL, "--where", "industry = 'saas'"), 1, "--where filter",
        "'industry', which is not a dimension of every source", "Filterable dimensions: channel"),
    run("where_aggregate", (*EVAL, "--where", "count(leads) > 3"), 1, "--where filter",
        "aggregates are not allowed in a dimension filter", "filter on KPI values with --having"),
    run("where_syntax_error", (*EVAL, "--where", "channel = "), 1, "--where filter", "the formula ends too early",
        "a 'string'"),
    run("where_not_a_condition", (*EVAL, "--where", "channel"), 1, "--where filter", "must be a condition",
        "Write a comparison such as"),
    run("where_text_compared_with_number", (*EVAL, "--where", "channel = 1"), 1, "--where filter",
        "cannot compare a string with a number", "Compare values of the same kind"),
    run("having_unknown_kpi", (*EVAL, "--having", "cpll > 3"), 1, "--having condition", "unknown KPI 'cpll'",
        "Did you mean 'cpl'?"),
    run("having_not_a_condition", (*EVAL, "--having", "cpl + 1"), 1, "--having condition", "must be a condition",
        "Write a comparison"),
    run("order_unknown_column", (*EVAL, "--order", "-cpll"), 1, "cannot order by 'cpll'", "Did you mean 'cpl'?"),
    run("order_unknown_key", (*EVAL, "--grain", "month", "--order", "period2"), 1, "cannot order by 'period2'",
        "Did you mean 'period'?"),
    run("limit_negative", (*EVAL, "--limit", "-1"), 2, "'--limit'", "x>=0"),
    run("limit_not_a_number", (*EVAL, "--limit", "ten"), 2, "'--limit'", "not a valid integer"),
    run("from_after_to", (*EVAL, "--from", "2025-03-01", "--to", "2025-01-01"), 1,
        "the time range is empty: --from 2025-03-01 is not before --to 2025-01-01", "pick a later --to"),
    run("from_equals_to", (*EVAL, "--from", "2025-03-01", "--to", "2025-03-01"), 1, "the time range is empty",
        "pick a later --to"),
    run("from_month_13", (*EVAL, "--from", "2025-13-01"), 2, "'--from'", "'2025-13-01' is not a date", "YYYY-MM-DD"),
    run("from_february_30", (*EVAL, "--from", "2025-02-30"), 2, "'--from'", "'2025-02-30' is not a date",
        "YYYY-MM-DD"),
    run("to_with_slashes", (*EVAL, "--to", "2025/01/01"), 2, "'--to'", "YYYY-MM-DD", "'last month'"),
    run("fill_without_range", (*EVAL, "--fill", "--grain", "month"), 1, "--fill needs --grain, --from and --to",
        "give the range and the grain"),
    run("fill_too_many_periods", (*EVAL, "--fill", "--grain", "day", "--from", "1700-01-01", "--to", "2025-01-01"), 1,
        "the limit is 100,000", "Use a coarser --grain"),
    # (cumulative() and rolling() of a count_distinct count the window's rows; adding up the
    # distinct counts of periods or of dimension values is what is refused)
    run("cumulative_of_previous_count_distinct", ("evaluate", "{p}", "--formula",
                                                  "cumulative(previous(count_distinct(leads.channel)))",
                                                  "--grain", "month"), 1,
        "count_distinct cannot be added up across periods", "count distinct over the whole range"),
    run("share_of_count_distinct_kpi", ("evaluate", "{p}", "cpl", "channels", "--grain", "month"), 1,
        "kpi 'channels'", "count_distinct cannot be added up across dimension values",
        files={"channels.yaml": "kpis:\n  channels:\n    formula: share(count_distinct(leads.channel))\n"}),
    run("previous_without_grain", ("evaluate", "{p}", "--formula", "previous(spend)"), 1,
        "previous() needs a time grain", "Add --grain"),
    run("previous_without_grain_kpi", ("evaluate", "{p}", "growth"), 1, "previous() needs a time grain", "Add --grain",
        files={"growth.yaml": "kpis:\n  growth:\n    formula: spend - previous(spend)\n"}),
    run("constant_formula", ("evaluate", "{p}", "--formula", "1 + 2"), 1, "the request reads no source",
        "Use at least one aggregate"),
    run("unknown_dialect", (*COMPILE, "--dialect", "postgress"), 1, "unknown SQL dialect 'postgress'",
        "Did you mean 'postgres'?"),
    run("unknown_format", (*EVAL, "--format", "xml"), 2, "unknown output format 'xml'", "Use one of: table, csv"),
    run("binary_format_to_terminal", (*EVAL, "--format", "parquet"), 2, "the parquet format is binary",
        "Write it to a file with --output"),
    run("unknown_grain", (*EVAL, "--grain", "decade"), 2, "'--grain'", "'decade' is not one of"),
    run("hour_grain_on_a_date_source", (*EVAL, "--grain", "hour"), 1, "--grain hour reads the time of day",
        "source 'ad_spend' has its time in column 'day', a DATE", "Use --grain day or coarser"),
    run("no_kpi_given", ("evaluate", "{p}"), 2, "no KPI given", "use --all, or pass --formula"),
    run("no_kpi_given_compile", ("compile", "{p}", "--grain", "month"), 2, "no KPI given", "use --all"),
    run("unknown_option", (*EVAL, "--bogus"), 2, "No such option '--bogus'", "--help"),
    run("unknown_option_close", (*EVAL, "--grian", "month"), 2, "No such option '--grian'", "--grain"),
    run("timeout_zero", (*EVAL, "--timeout", "0"), 2, "'--timeout'", "x>0"),
    run("output_folder_missing", (*EVAL, "--output", "{p}/nowhere/out.txt"), 2, "folder", "does not exist",
        "Create it first"),
    run("output_folder_missing_csv", (*EVAL, "--format", "csv", "--output", "{p}/nowhere/out.csv"), 2,
        "folder", "does not exist", "Create it first"),

    # --- the warehouse ---------------------------------------------------------------------------
    online("missing_table", "sources:\n  orders:\n    table: orders\n    time: ordered_at\n", 3, 12,
           "table 'orders' does not exist in the warehouse", "create the table"),
    run("missing_table_evaluate", ("evaluate", "{p}", "--formula", "count(orders)"), 1, "bad.yaml:3:12",
        "table 'orders' does not exist", "create the table",
        files={"bad.yaml": "sources:\n  orders:\n    table: orders\n"}),
    online("missing_formula_column", kpi("sum(leads.amount)"), 3, 18, "source 'leads' has no column 'amount'",
           "Known names: channel"),
    online("missing_dimension_column", "sources:\n  leads2:\n    table: leads\n    dimensions: [chanel]\n", 4, 18,
           "dimension column 'chanel' does not exist in leads", "Did you mean 'channel'?"),
    online("missing_time_column", "sources:\n  leads2:\n    table: leads\n    time: created\n", 4, 11,
           "time column 'created' does not exist in leads", "Did you mean 'created_at'?"),
    online("missing_key_column", "sources:\n  leads2:\n    table: leads\n    primary_key: lead_id\n", 4, 18,
           "primary key column 'lead_id' does not exist in leads", "Known names"),
    online("declared_column_missing", "sources:\n  leads2:\n    table: leads\n    columns: {revenue: number}\n",
           4, 15, "declared column 'revenue' does not exist in leads", "Known names: channel"),
    online("time_column_is_text", TEXT_TIME, 4, 11, "time column 'channel' is a string, not a date or timestamp",
           "Point 'time' at a DATE or TIMESTAMP column"),
    run("time_column_is_text_evaluate", ("evaluate", "{p}", "--formula", "count(leads2)", "--grain", "month"), 1,
        "bad.yaml:4:11", "is a string, not a date or timestamp", "Point 'time' at a DATE or TIMESTAMP column",
        files={"bad.yaml": TEXT_TIME}),
    spec("relationship_to_unknown_source",
         "sources:\n  s:\n    table: leads\n    relationships:\n      - {to: lead, on: id}\n", 5, 14,
         "relationship to unknown source 'lead'", "Did you mean 'leads'?"),
    spec("relationship_fans_out",
         "sources:\n  s:\n    table: leads\n    relationships:\n      - {to: ad_spend, on: channel}\n", 5, 9,
         "could fan out", "Point it at ad_spend's primary key"),
    run("data_folder_missing", ("validate", "{p}"), 1, "the data folder", "nodata' does not exist",
        "Fix 'data' in kpi_engine.yaml", files={"kpi_engine.yaml": "name: demo\nwarehouse: {adapter: duckdb, data: nodata}\n"}),
    run("data_folder_missing_evaluate", EVAL, 3, "the data folder", "nodata' does not exist",
        "Fix 'data' in kpi_engine.yaml", files={"kpi_engine.yaml": "name: demo\nwarehouse: {adapter: duckdb, data: nodata}\n"}),
    run("duckdb_file_missing", ("validate", "{p}"), 1, "missing.duckdb' does not exist", "Fix 'path' in kpi_engine.yaml",
        files={"kpi_engine.yaml": "name: demo\nwarehouse: {adapter: duckdb, path: missing.duckdb}\n"}),
    run("duckdb_file_missing_evaluate", EVAL, 3, "missing.duckdb' does not exist", "Fix 'path' in kpi_engine.yaml",
        files={"kpi_engine.yaml": "name: demo\nwarehouse: {adapter: duckdb, path: missing.duckdb}\n"}),
    run("duckdb_file_not_a_database", EVAL, 3, "cannot open the DuckDB database",
        "Check that the file is a DuckDB database",
        files={"kpi_engine.yaml": "name: demo\nwarehouse: {adapter: duckdb, path: junk.duckdb}\n",
               "junk.duckdb": "this is not a database\n"}),

    # --- limits -------------------------------------------------------------------------------------
    formula("ten_megabyte_formula", "1+" * 5_000_000 + "1", "10,000,001 characters long", "the limit is 10,000",
            "Split it into smaller KPIs"),
    spec("long_formula_in_spec", kpi("1+" * 5_000 + "count(leads)"), 3, 14, "the limit is 10,000",
         "Split it into smaller KPIs"),
    formula("nesting_beyond_limit", "(" * 101 + "count(leads)" + ")" * 101, "more than 100 deep",
            "Split it into smaller KPIs"),
    spec("nesting_beyond_limit_in_spec", kpi("(" * 101 + "1" + ")" * 101), 3, 14, "more than 100 deep",
         "Split it into smaller KPIs"),
    # Depth: one level per operator of a chain, one per call (count(leads) is 1, 1 + 1 is 1).
    formula("long_operator_chain", "+".join(["1"] * 4_000), "3,999 levels deep", "the limit is 100",
            "Split it into smaller KPIs"),
    formula("long_sum_chain", "+".join(["count(leads)"] * 700), "700 levels deep", "the limit is 100", "Split",
            "(a + b) + (c + d) is 2 levels deep"),
    formula("long_unary_minus_chain", "- " * 600 + "count(leads)", "601 levels deep", "the limit is 100", "Split"),
    formula("sum_of_200_aggregates", "+".join(["count(leads)"] * 200), "200 levels deep", "the limit is 100",
            "Split"),
    formula("sum_of_101_aggregates", "+".join(["count(leads)"] * 101), "101 levels deep", "Split"),
    formula("long_chain_in_compile", "+".join(["count(leads)"] * 200), "200 levels deep", "Split", extra=(),
            command="compile"),
    run("long_chain_in_where", ("evaluate", "{p}", "cpl", "--where", "not " * 101 + "channel = 'ppc'"), 1,
        "--where", "102 levels deep", "the limit is 100"),
    run("long_chain_in_having", ("evaluate", "{p}", "cpl", "--grain", "month", "--having",
                                 " and ".join(["cpl > 1"] * 101)), 1, "--having", "101 levels deep"),
    # k0 is count(leads), 1 level; each k{i} = k{i-1} + count(leads) adds one: k150 is the first past 150.
    spec("chain_of_kpis_too_deep", "kpis:\n  k0:\n    formula: count(leads)\n" + "".join(
        f"  k{i}:\n    formula: k{i - 1} + count(leads)\n" for i in range(1, 160)), 303, 14,
        "151 levels deep once the KPIs it references are written out", "'k149' is 150 by itself",
        "the limit is 150", "Make the KPIs it builds on less deep"),
]


def _materialise(root: Path, files: Mapping[str, str | bytes | None]) -> None:
    merged = {**BASE, **files}
    for relative, content in merged.items():
        if content is None:
            continue
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")


def _params():
    for case in CASES:
        marks = [pytest.mark.xfail(strict=True, reason=case.bug)] if case.bug else []
        yield pytest.param(case, id=case.id, marks=marks)


def test_the_corpus_is_large_and_ids_are_unique():
    ids = [case.id for case in CASES]
    assert len(ids) == len(set(ids)), [i for i in ids if ids.count(i) > 1]
    assert len(CASES) >= 110


def test_the_base_project_is_valid(tmp_path):
    """Every case changes exactly one thing of this project, so it must itself be valid."""
    root = tmp_path / "project"
    _materialise(root, {})
    result = CliRunner().invoke(cli, ["validate", str(root)])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(cli, ["evaluate", str(root), "cpl", "--by", "channel", "--grain", "month"])
    assert result.exit_code == 0, result.output


def _grouped_sum(terms: list[str]) -> str:
    """a + b + c + d as (a + b) + (c + d): as many terms, about log2(len) levels deep."""
    if len(terms) == 1:
        return terms[0]
    half = len(terms) // 2
    sides = (_grouped_sum(terms[:half]), _grouped_sum(terms[half:]))
    return "+".join(f"({side})" if "+" in side else side for side in sides)


def test_formulas_within_the_depth_limits_run(tmp_path):
    """The limits the cases above hit leave room: a chain of 100 levels in one formula, 150
    through references, and a long sum grouped in parentheses, as the hint suggests."""
    from kpi_engine import open_project

    chain = "kpis:\n  k0:\n    formula: count(leads)\n" + "".join(
        f"  k{i}:\n    formula: k{i - 1} + count(leads)\n" for i in range(1, 150))  # k149 is 150 levels deep
    root = tmp_path / "project"
    _materialise(root, {"chain.yaml": chain})
    # LEADS_CSV has two leads in January 2025 and one in February.
    jan, feb = dt.date(2025, 1, 1), dt.date(2025, 2, 1)
    grouped = _grouped_sum(["count(leads)"] * 500)
    assert len(grouped) <= 10_000
    formulas = ["+".join(["count(leads)"] * 100), "- " * 99 + "count(leads)", grouped, "k148 + 1"]
    with open_project(root) as project:
        rows = project.evaluate(["k149"], formulas=formulas, grain="month").to_dicts()
    assert [(r["period"], r["k149"], r["formula"], r["formula_2"], r["formula_3"], r["formula_4"]) for r in rows] == [
        (jan, 150 * 2, 100 * 2, -2, 500 * 2, 149 * 2 + 1),
        (feb, 150 * 1, 100 * 1, -1, 500 * 1, 149 * 1 + 1),
    ]


@pytest.mark.parametrize("case", list(_params()))
def test_bad_input(case: Case, tmp_path):
    root = tmp_path / "project"
    _materialise(root, case.files)
    args = [arg.replace("{p}", str(root)) for arg in case.args]
    result = CliRunner().invoke(cli, args)
    # The temporary folder's name holds the test id: keep it out of the fragment checks.
    stderr, output = result.stderr.replace(str(root), "<project>"), result.output

    assert "Traceback" not in output
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        f"{type(result.exception).__name__}: {result.exception}"
    assert result.exit_code == case.code, f"exit {result.exit_code}, expected {case.code}\n{output}"
    if case.where:
        file, line, column = case.where
        # The exact place: file:line:column, not followed by more digits (3:1 must not match 3:14).
        assert re.search(rf"{re.escape(file)}:{line}:{column}(?!\d)", stderr), \
            f"{file}:{line}:{column} not named in:\n{stderr}"
    for fragment in case.fragments:
        assert fragment in stderr, f"{fragment!r} missing from stderr:\n{stderr}"
    problems = [line for line in stderr.splitlines() if line.startswith("Error:")]
    assert len(problems) == len(set(problems)), f"a problem is reported twice:\n{stderr}"


NESTED_ALIASES = 8  # levels of ten-fold aliases: 10**8 strings once expanded


class _TookTooLong(BaseException):
    """Raised by the alarm; a BaseException so that CliRunner does not swallow it."""


@pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="needs SIGALRM")
def test_nested_yaml_aliases_fail_fast(tmp_path):
    """Ten-fold aliases nested eight deep: 10**8 strings once expanded, 900 bytes as written."""
    anchors = ["a0: &a0 [" + ", ".join(["lol"] * 10) + "]"]
    anchors += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, NESTED_ALIASES)]
    text = "kpis:\n  a:\n    formula: count(leads)\n    description: {" + ", ".join(anchors) + "}\n"
    root = tmp_path / "project"
    _materialise(root, {"bad.yaml": text})

    def alarm(signum, frame):
        raise _TookTooLong()

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, 5)
    try:
        result = CliRunner().invoke(cli, ["validate", str(root), "--offline"])
    except _TookTooLong:
        pytest.fail("validate was still expanding YAML aliases after 5 s")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert result.exit_code == 1
    assert "bad.yaml:4:" in result.stderr
    assert "through YAML aliases" in result.stderr and "split the file" in result.stderr
    assert "Traceback" not in result.output
