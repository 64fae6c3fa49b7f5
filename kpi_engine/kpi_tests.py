"""KPI unit tests declared in YAML (``tests:``), run on embedded DuckDB whatever the warehouse.

    tests:
      cpl_article_example:
        description: $1,000 of paid social for 20 leads is a CPL of $50.
        kpis: [cost_per_lead]
        by: [channel]
        given:                                  # rows per table; _repeat makes copies
          ad_spend:
            - {spend_date: 2025-01-05, channel: paid_social, spend: 1000}
          leads:
            - {_repeat: 20, created_at: 2025-01-10 10:00:00, channel: paid_social}
        expect:
          - {channel: paid_social, cost_per_lead: 50}

Columns a test does not give are NULL. Their type comes from how the KPIs use them (summed:
a number; a time column or an argument of days_between: a timestamp; otherwise text).
"""

from __future__ import annotations

import datetime as dt
import math
import tempfile
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from . import nodes as n
from .errors import KpiEngineError, QueryError
from .spec import Project, TestSpec

REPEAT = "_repeat"


@dataclass
class TestOutcome:
    name: str
    passed: bool
    problems: list[str] = field(default_factory=list)
    library: str | None = None


def _sql_type(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "BOOLEAN"
    if isinstance(value, int):
        return "BIGINT"
    if isinstance(value, (float, Decimal)):
        return "DOUBLE"
    if isinstance(value, dt.datetime):
        return "TIMESTAMP"
    if isinstance(value, dt.date):
        return "DATE"
    return "VARCHAR"


def _usage_types(project: Project, model) -> dict[tuple[str, str], str]:
    """(table, column) -> a type implied by how the KPIs and sources use the column."""
    found: dict[tuple[str, str], str] = {}

    def table_of(source_name: str) -> str | None:
        source = project.sources[source_name]
        return source.table.rsplit(".", 1)[-1] if source.table else None

    for source in project.sources.values():
        if source.table and source.time:
            found[(table_of(source.name), source.time)] = "TIMESTAMP"
    for kpi in model.kpis.values():
        for node in kpi.expr.walk():
            if isinstance(node, (n.Aggregate, n.EntityLookup)) and node.func in ("sum", "avg", "last", "first") \
                    and node.arg is not None:
                for column in node.arg.walk():
                    if isinstance(column, n.Column) and table_of(column.source):
                        found.setdefault((table_of(column.source), column.name), "DOUBLE")
            if isinstance(node, n.Function) and node.name == "days_between":
                for column in (c for arg in node.args for c in arg.walk() if isinstance(c, n.Column)):
                    if table_of(column.source):
                        found[(table_of(column.source), column.name)] = "TIMESTAMP"
            if isinstance(node, n.Column) and table_of(node.source):
                found.setdefault((table_of(node.source), node.name), "VARCHAR")
    return found


def _expand(rows: list[dict]) -> list[dict]:
    result = []
    for row in rows:
        count = row.get(REPEAT, 1)
        result.extend([{k: v for k, v in row.items() if k != REPEAT}] * int(count))
    return result


def _load(database: Path, test: TestSpec, usage: dict[tuple[str, str], str]) -> None:
    import duckdb

    connection = duckdb.connect(str(database))
    try:
        _create_tables(connection, test, usage)
    except duckdb.Error as error:  # e.g. a text and a number in one column
        raise QueryError(f"cannot load the test's rows into DuckDB: {str(error).strip().splitlines()[0]}",
                         test.where("given"), "Give each column values of one kind (numbers, text or dates).") from None
    finally:
        connection.close()


def _create_tables(connection, test: TestSpec, usage: dict[tuple[str, str], str]) -> None:
    from sqlglot import exp

    for table, rows in test.body["given"].items():
        rows = _expand(rows)
        columns = list(dict.fromkeys(key for row in rows for key in row))
        columns += [c for (t, c) in usage if t == table and c not in columns]
        types = {}
        for column in columns:
            given = next((_sql_type(row.get(column)) for row in rows if row.get(column) is not None), None)
            types[column] = given or usage.get((table, column), "VARCHAR")
        schema = exp.Schema(this=exp.Table(this=exp.to_identifier(table, quoted=True)),
                            expressions=[exp.ColumnDef(this=exp.to_identifier(c, quoted=True),
                                                       kind=exp.DataType.build(types[c])) for c in columns])
        connection.execute(exp.Create(kind="TABLE", this=schema).sql("duckdb"))
        if rows:
            insert = exp.insert(exp.values([tuple(exp.convert(row.get(c)) for c in columns) for row in rows]),
                                exp.Table(this=exp.to_identifier(table, quoted=True)))
            connection.execute(insert.sql("duckdb"))


def _same(expected: Any, actual: Any) -> bool:
    if expected is None or actual is None:
        return expected is None and actual is None
    if isinstance(expected, (int, float, Decimal)) and isinstance(actual, (int, float)):
        return math.isclose(float(actual), float(expected), rel_tol=1e-9, abs_tol=1e-9)
    return expected == actual


def run_test(project: Project, test: TestSpec) -> TestOutcome:
    """Load the test's rows into a fresh DuckDB file, evaluate, compare row by row."""
    from .engine import KpiProject

    body = test.body
    expect = body["expect"]
    kpis = body.get("kpis") or list(dict.fromkeys(k for row in expect for k in row if k in project.kpis))
    if not kpis:
        raise QueryError("the test names no KPI.", test.where(),
                         "List them in 'kpis:' or use KPI names as keys of the 'expect' rows.")
    keys = ["period"] * bool(body.get("grain")) + list(body.get("by", []))
    with tempfile.TemporaryDirectory(prefix="kpi-engine-test-") as folder:
        database = Path(folder) / "test.duckdb"
        checker = KpiProject(project, warehouse={"adapter": "duckdb", "path": str(database)})
        model = checker.model(describe=False)
        _load(database, test, _usage_types(project, model))
        with checker:
            rows = checker.evaluate(kpis, by=body.get("by", []), grain=body.get("grain"), start=body.get("from"),
                                    end=body.get("to"), describe=False).to_dicts()
    problems = []
    actual = {tuple(row[k] for k in keys): row for row in rows}
    for wanted in expect:
        key = tuple(_key_value(wanted.get(k)) for k in keys)
        label = ", ".join(f"{k}={v}" for k, v in zip(keys, key)) or "total"
        row = actual.pop(key, None)
        if row is None:
            problems.append(f"[{label}] expected a row, got none")
            continue
        for name, value in wanted.items():
            if name not in keys and not _same(value, row.get(name)):
                problems.append(f"[{label}] {name}: expected {value}, got {row.get(name)}")
    for key in actual:
        problems.append(f"[{', '.join(f'{k}={v}' for k, v in zip(keys, key)) or 'total'}] unexpected row")
    return TestOutcome(test.name, not problems, problems, test.library)


def _key_value(value: Any) -> Any:
    return value.date() if isinstance(value, dt.datetime) else value


def run_tests(project: Project, names: list[str] | None = None) -> list[TestOutcome]:
    selected = names or list(project.tests)
    unknown = [name for name in selected if name not in project.tests]
    if unknown:
        from .errors import did_you_mean

        raise QueryError(f"unknown test '{unknown[0]}'.", None, did_you_mean(unknown[0], project.tests) or None)
    outcomes = []
    for name in selected:
        try:
            outcomes.append(run_test(project, project.tests[name]))
        except KpiEngineError as error:
            outcomes.append(TestOutcome(name, False, [str(error)], project.tests[name].library))
    return outcomes
