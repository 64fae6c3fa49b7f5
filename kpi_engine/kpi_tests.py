"""KPI unit tests declared in YAML (``tests:``), run on embedded DuckDB whatever the warehouse.

    tests:
      cpl_article_example:
        description: $1,000 of paid social for 20 leads is a CPL of $50.
        kpis: [cost_per_lead]
        by: [channel]
        given:                                  # rows per source, in its own columns; _repeat makes copies
          ad_spend:
            - {spend_date: 2025-01-05, channel: paid_social, spend: 1000}
          contacts:
            - {_repeat: 20, created_at: 2025-01-10 10:00:00, channel: paid_social, is_qualified: true}
        expect:
          - {channel: paid_social, cost_per_lead: 50}

Rows are keyed by source and written in the source's columns (for a library source, its
standard columns), so a test reads the same whatever the project maps them to. The runner
runs them against the project's own definitions: its KPI formulas and each source's time
column, keys, dimensions, ``where:`` and relationships. Only where the rows come from is
replaced: each table (or query) a source reads becomes a test table, written in the
warehouse's column names of the project's ``map:`` (a column bound to a warehouse column of
another name is stored under that name, and read back through the map). A column bound to a
formula or a constant is computed by it, unless the test gives the column itself. Sources that
extend another share its test table. A test of a KPI that needs a source the project declares
unmapped is skipped.

Columns a test does not give are NULL. Their type comes from how the project uses them
(summed: a number; a condition: a boolean; a time column or an argument of days_between: a
timestamp; otherwise text).
"""

from __future__ import annotations

import datetime as dt
import math
import tempfile
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path
from typing import Any, Mapping

from . import nodes as n
from .errors import KpiEngineError, QueryError, SpecError, did_you_mean
from .spec import CONVERSION_COLUMNS, Project, SourceSpec, TestSpec

REPEAT = "_repeat"


@dataclass
class TestOutcome:
    name: str
    passed: bool
    problems: list[str] = field(default_factory=list)
    library: str | None = None
    skipped: str | None = None  # why the test did not run


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


def _expand(rows: list[dict]) -> list[dict]:
    result = []
    for row in rows:
        count = row.get(REPEAT, 1)
        result.extend([{k: v for k, v in row.items() if k != REPEAT}] * int(count))
    return result


_RANK = {"VARCHAR": 0, "BOOLEAN": 1, "DOUBLE": 2, "TIMESTAMP": 3}


def _reads(formula) -> set[str]:
    """The warehouse columns a map: formula reads (names, as written)."""
    from .parser import parse

    try:
        tree = parse(formula.text, formula.source)
    except KpiEngineError:
        return set()
    return {node.parts[-1] for node in tree.walk() if isinstance(node, n.Name)}


def _root(source: SourceSpec) -> str:
    """The source whose table the test writes: sources that extend another share its rows."""
    return source.rows_of or source.name


def _renamed(source: SourceSpec) -> dict[str, str]:
    """The map: entries that bind a column to a warehouse column of another name."""
    from .parser import parse

    found = {}
    for column, formula in source.column_map.items():
        try:
            tree = parse(formula.text, formula.source)
        except KpiEngineError:
            continue  # validate reports it; the test then fails on resolving the project
        if isinstance(tree, n.Name) and len(tree.parts) == 1 and tree.parts[0] != column:
            found[column] = tree.parts[0]
    return found


class _Tables:
    """The test's rows per test table (one per source that reads its own table or query), in the
    warehouse's column names, and the project with every source reading its test table."""

    def __init__(self, project: Project, test: TestSpec):
        self.project = project
        self.given = given = test.body["given"]
        sources = project.sources
        for key in given:
            if key in sources and sources[key].conversion is not None:
                spec = sources[key].conversion
                raise SpecError(f"the test gives rows for conversion source '{key}', whose rows are computed.",
                                test.where("given", key),
                                f"Give the rows of its sources instead: '{spec.from_}' and '{spec.to}'.")
            if key not in sources:
                readers = [s.name for s in sources.values() if s.table and s.table.rsplit(".", 1)[-1] == key]
                hint = (f"Test rows are keyed by source, in the source's columns: use {' or '.join(readers)}."
                        if readers else did_you_mean(key, sources) or None)
                raise SpecError(f"the test gives rows for '{key}', which is not a source.", test.where("given", key),
                                hint)
        by_root: dict[str, list[dict]] = {}
        for key, rows in given.items():
            by_root.setdefault(_root(sources[key]), []).extend(_expand(rows))
        self.renames: dict[str, dict[str, str]] = {}
        self.columns_given = {root: {c for row in rows for c in row} for root, rows in by_root.items()}
        replaced = {}
        for name, source in sources.items():
            root = _root(source)
            renames = _renamed(source)
            self.renames.setdefault(root, {}).update(renames)
            given_here = self.columns_given.get(root, set())
            # A formula (or constant) is computed from the warehouse columns the test gives; when the
            # test gives the column itself, or not every column the formula reads, the test's value is used.
            kept = {column: formula for column, formula in source.column_map.items()
                    if column in renames or (column not in given_here and _reads(formula) <= given_here)}
            replaced[name] = source if source.unmapped else \
                replace(source, table=root, sql=None, column_map=kept)
        self.test_project = replace(project, sources=replaced)
        self.rows = {root: [self.warehouse_row(root, row) for row in rows] for root, rows in by_root.items()}

    def intervals_without_ends(self) -> list[str]:
        """The given sources the project reads as intervals whose test rows have no end column
        (a library test written for snapshot rows, run on a project that maps intervals)."""
        sources = self.project.sources
        missing = []
        for name in self.given:
            end = sources[name].time_end
            root = _root(sources[name])
            if end and not {end, self.renames.get(root, {}).get(end)} & self.columns_given.get(root, set()):
                missing.append(f"'{name}'")
        return missing

    def warehouse_row(self, root: str, row: Mapping[str, Any]) -> dict[str, Any]:
        """A test row as the warehouse holds it: a renamed column under the warehouse's name
        (columns the test names by their warehouse name stay as given)."""
        stored = dict(row)
        stored.update({warehouse: row[column] for column, warehouse in self.renames.get(root, {}).items()
                       if column in row})
        return stored

    def usage(self, model) -> dict[tuple[str, str], str]:
        """(test table, warehouse column) -> a type implied by how the project uses the column;
        the most specific use wins (a column both compared and summed is a number)."""
        found: dict[tuple[str, str], str] = {}
        sources = self.test_project.sources

        def use(source_name: str, column: str, kind: str) -> None:
            source = sources[source_name]
            if source.unmapped or (source.conversion is not None and column in CONVERSION_COLUMNS):
                return  # no table, or a column the conversion source computes
            mapped = model.mapped(source_name, column)
            if mapped is not None and not isinstance(mapped, n.Column):
                return  # a formula kept for the test reads columns the test gives
            key = (_root(source), mapped.name if isinstance(mapped, n.Column) else column)
            if _RANK[kind] > _RANK[found.get(key, "VARCHAR")] or key not in found:
                found[key] = kind

        for source in sources.values():
            if source.unmapped:
                continue
            if source.time:
                use(source.name, source.time, "TIMESTAMP")
            for column in (*source.primary_key, *(d.column for d in source.dimensions)):
                use(source.name, column, "VARCHAR")
            for column in (source.valid_from, source.valid_to):
                if column:
                    use(source.name, column, "TIMESTAMP")
            for rel in source.relationships:
                for here, there in rel.columns:
                    use(source.name, here, "VARCHAR")
                    if rel.to in sources:
                        use(rel.to, there, "VARCHAR")
            condition = model.condition(source.name)
            if condition is not None:
                self._walk(condition, use)
            if source.conversion is not None:  # the columns its two sources are joined on
                for column in (source.conversion.per, *source.conversion.same):
                    use(source.conversion.from_, column, "VARCHAR")
                    use(source.conversion.to, column, "VARCHAR")
        for kpi in model.kpis.values():
            self._walk(kpi.expr, use)
        return found

    @staticmethod
    def _walk(expr: n.Node, use) -> None:
        """Types from one formula: summed or averaged columns are numbers, columns used as a
        condition booleans, arguments of days_between timestamps, the rest text."""
        for node in expr.walk():
            if isinstance(node, (n.Aggregate, n.EntityLookup)):
                if node.func in ("sum", "avg", "last", "first") and node.arg is not None:
                    for column in (c for c in node.arg.walk() if isinstance(c, n.Column)):
                        use(column.source, column.name, "DOUBLE")
                if isinstance(node.where, n.Column):
                    use(node.where.source, node.where.name, "BOOLEAN")
                if isinstance(node, n.Aggregate):
                    for lookup in (x for x in node.walk() if isinstance(x, n.EntityLookup)):
                        use(node.source, lookup.key, "VARCHAR")
                        use(lookup.source, lookup.key, "VARCHAR")
            elif isinstance(node, n.Logical) or (isinstance(node, n.Unary) and node.op == "not"):
                for operand in node.children():
                    if isinstance(operand, n.Column):
                        use(operand.source, operand.name, "BOOLEAN")
            elif isinstance(node, (n.Compare, n.Between, n.InList, n.Binary)):
                # Compared with numbers, or added up: a number.
                operands = list(node.children())
                if isinstance(node, n.Binary) or any(isinstance(o, n.NumberLit) for o in operands):
                    for operand in (o for o in operands if isinstance(o, n.Column)):
                        use(operand.source, operand.name, "DOUBLE")
            elif isinstance(node, n.Function) and node.name == "days_between":
                for column in (c for arg in node.args for c in arg.walk() if isinstance(c, n.Column)):
                    use(column.source, column.name, "TIMESTAMP")
            elif isinstance(node, n.Column):
                use(node.source, node.name, "VARCHAR")
        if isinstance(expr, n.Column):  # a where: condition that is a bare column
            use(expr.source, expr.name, "BOOLEAN")


def _load(database: Path, tables: _Tables, usage: dict[tuple[str, str], str], test: TestSpec) -> None:
    import duckdb

    connection = duckdb.connect(str(database))
    try:
        _create_tables(connection, tables, usage)
    except duckdb.Error as error:  # e.g. a text and a number in one column
        raise QueryError(f"cannot load the test's rows into DuckDB: {str(error).strip().splitlines()[0]}",
                         test.where("given"), "Give each column values of one kind (numbers, text or dates).") from None
    finally:
        connection.close()


def _create_tables(connection, tables: _Tables, usage: dict[tuple[str, str], str]) -> None:
    from sqlglot import exp

    for root in sorted({_root(s) for s in tables.test_project.sources.values() if not s.unmapped}):
        rows = tables.rows.get(root, [])
        columns = list(dict.fromkeys(key for row in rows for key in row))
        columns += sorted(c for (t, c) in usage if t == root and c not in columns)
        types = {}
        for column in columns:
            given = next((_sql_type(row.get(column)) for row in rows if row.get(column) is not None), None)
            types[column] = given or usage.get((root, column), "VARCHAR")
        schema = exp.Schema(this=exp.Table(this=exp.to_identifier(root, quoted=True)),
                            expressions=[exp.ColumnDef(this=exp.to_identifier(c, quoted=True),
                                                       kind=exp.DataType.build(types[c])) for c in columns])
        connection.execute(exp.Create(kind="TABLE", this=schema).sql("duckdb"))
        if rows:
            insert = exp.insert(exp.values([tuple(exp.convert(row.get(c)) for c in columns) for row in rows]),
                                exp.Table(this=exp.to_identifier(root, quoted=True)))
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
        tables = _Tables(project, test)
        checker = KpiProject(tables.test_project, warehouse={"adapter": "duckdb", "path": str(database)})
        model = checker.model(describe=False)
        needs = sorted({source for name in kpis if name in model.kpis for source in model.kpis[name].unavailable})
        if needs:
            return TestOutcome(test.name, True, [], test.library,
                               skipped=f"needs source{'s' if len(needs) > 1 else ''} {', '.join(needs)}, "
                                       "which the project declares unmapped")
        spans = tables.intervals_without_ends()
        if spans:
            return TestOutcome(test.name, True, [], test.library,
                               skipped=f"reads {', '.join(spans)} as intervals (time_end), and the test's rows "
                                       "have no end column: they are written for another reading")
        _load(database, tables, tables.usage(model), test)
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
        raise QueryError(f"unknown test '{unknown[0]}'.", None, did_you_mean(unknown[0], project.tests) or None)
    outcomes = []
    for name in selected:
        try:
            outcomes.append(run_test(project, project.tests[name]))
        except KpiEngineError as error:
            outcomes.append(TestOutcome(name, False, [str(error)], project.tests[name].library))
    return outcomes
