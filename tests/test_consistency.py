"""One KPI, one number (issue 12): a KPI's values and rows do not depend on what else is asked.

Hypothesis draws random requests (2 to 6 KPIs, a grain or none, --from/--to often in the middle of
a period, an optional --where on one dimension, up to two --by dimensions, --fill when there is a
grain and a range) over two projects:

- the example project (examples/marketing, the KPI library), and
- the bike_rentals project (tests/projects/bike_rentals, see tests/second_project.py), laid out
  differently: a dimension table reached by a key, DATE and TIMESTAMP sources, weekly snapshots
  with gaps that end early, sparse months, NULL dimension values.

Each request is evaluated once with all its KPIs and once per KPI alone. Then, for every KPI:

- its row set is the keys of its result alone, and the combined result holds exactly the union of
  those row sets;
- at the keys of its row set, its combined values equal its values alone (floats to 1e-9);
- at the other keys of the combined result, its cell is null.

For bike_rentals, the values alone must also equal the plain-Python reference
(tests/second_reference.py), keys included, and each row's ``complete`` flag must equal the
reference's.

The full form runs on DuckDB; a smaller one on PostgreSQL (a throwaway server, tests/pg.py; fails
instead of skipping in CI) and on SQLite (the kpi-engine-sqlite plugin; CI installs it).
"""

pytest_plugins = ["pg"]

import dataclasses  # noqa: E402
import datetime as dt  # noqa: E402
import math  # noqa: E402
import re  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402
from hypothesis import HealthCheck, given, note, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import reference  # noqa: E402
import second_project  # noqa: E402
from kpi_engine import nodes as n  # noqa: E402
from kpi_engine.engine import KpiProject, open_project  # noqa: E402
from kpi_engine.resolve import aggregates_in, expand  # noqa: E402
from kpi_engine.testing import TABLES as EXAMPLE_TABLES  # noqa: E402
from second_project import bike_folder  # noqa: E402,F401  (a fixture)
from second_reference import Reference, Request, Where  # noqa: E402
from warehouse_loading import load_postgres, sqlite_warehouse  # noqa: E402

EXAMPLE = reference.DEFAULT_DATA_DIR.parent

FULL = settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
SMALL = settings(max_examples=8, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

WHERE_OPS = ("=", "!=", "in", "not in", "is null", "is not null")
ABSENT_VALUE = "no_such_value"  # a --where value no row has
NOT_TEXT = re.compile(r"^-?[0-9.]+$|^\d{4}-\d{2}-\d{2}")

# --- what can be asked of a project ----------------------------------------------------------------------


@dataclass(frozen=True)
class KpiFacts:
    sources: frozenset[str]
    dimensions: frozenset[str]  # what every source it reads can be sliced and filtered by
    needs_grain: bool  # previous() or rolling()
    cumulative: bool
    cumulative_reset: bool  # cumulative(x, 'year') and the like


class Catalog:
    """What can be asked of a project. (A plain class: hypothesis prints its repr, short, with
    a failing example's fixtures.)"""

    def __init__(self, kpis: dict[str, KpiFacts], grains: tuple[str | None, ...], first_day: dt.date,
                 last_day: dt.date, values: dict[str, tuple[str, ...]]):
        self.kpis = kpis
        self.grains = grains
        self.first_day, self.last_day = first_day, last_day  # of the data, to draw ranges around
        self.values = values  # dimension -> values seen in the data, for --where

    def __repr__(self) -> str:
        return f"Catalog({len(self.kpis)} KPIs)"


def catalog_of(project: KpiProject, grains, first_day, last_day, values) -> Catalog:
    model = project.model()
    kpis = {}
    for name in model.kpis:
        expr = expand(model, model.kpi(name).expr)
        sources = frozenset(agg.source for agg in aggregates_in(expr))
        time_ops = [node for node in expr.walk() if isinstance(node, n.TimeOp)]
        kpis[name] = KpiFacts(sources, frozenset(model.dimensions_of(sources)), model.needs_grain(name),
                              any(op.func == "cumulative" for op in time_ops),
                              any(op.func == "cumulative" and op.reset for op in time_ops))
    return Catalog(kpis, tuple(grains), first_day, last_day, values)


def answerable(facts: KpiFacts, request: Request) -> bool:
    """Whether a KPI can answer the request at all. Left out: previous()/rolling() without a
    grain, cumulative() without a grain together with --from (refused with a clear error), and
    cumulative(x, 'year') without a grain or by week (weeks straddle years: the restart of such a
    week is not specified)."""
    if request.grain is None and (facts.needs_grain or facts.cumulative_reset
                                  or (facts.cumulative and request.start is not None)):
        return False
    return not (request.grain == "week" and facts.cumulative_reset)


@st.composite
def requests(draw, catalog: Catalog) -> tuple[list[str], Request]:
    grain = draw(st.sampled_from(catalog.grains))
    lowest, highest = catalog.first_day - dt.timedelta(days=45), catalog.last_day + dt.timedelta(days=45)
    start = draw(st.none() | st.dates(lowest, highest)) if grain != "day" else draw(st.dates(lowest, highest))
    if start is not None and draw(st.booleans()):
        start = start.replace(day=1)  # now and then a range that starts with a period
    end = None
    if grain == "day":
        end = start + dt.timedelta(days=draw(st.integers(1, 92)))
    elif draw(st.booleans()):
        end = (start or lowest) + dt.timedelta(days=draw(st.integers(1, 500)))
    fill = bool(grain and start and end) and draw(st.booleans())
    base = Request(grain=grain, start=start, end=end, fill=fill)
    eligible = sorted(name for name, facts in catalog.kpis.items() if answerable(facts, base))
    kpis = draw(st.lists(st.sampled_from(eligible), min_size=2, max_size=6, unique=True))
    common = sorted(frozenset.intersection(*(catalog.kpis[name].dimensions for name in kpis)))
    by = tuple(draw(st.lists(st.sampled_from(common), max_size=2, unique=True))) if common else ()
    where = None
    filterable = [dim for dim in common if catalog.values.get(dim)]
    if filterable and draw(st.booleans()):
        dimension = draw(st.sampled_from(filterable))
        op = draw(st.sampled_from(WHERE_OPS))
        choices = catalog.values[dimension] + (ABSENT_VALUE,)
        count = {"=": 1, "!=": 1, "in": 2, "not in": 2}.get(op, 0)
        values = tuple(draw(st.lists(st.sampled_from(choices), min_size=count, max_size=count, unique=True)))
        where = Where(dimension, op, values)
    return kpis, dataclasses.replace(base, by=by, where=where)


# --- comparing results ----------------------------------------------------------------------------------


def keyed(result, request: Request) -> dict[tuple, dict[str, Any]]:
    """Result rows by key: (period, *by values), (*by values) or ()."""
    rows: dict[tuple, dict[str, Any]] = {}
    for row in result.to_dicts():
        key = ((row["period"],) if request.grain else ()) + tuple(row[dim] for dim in request.by)
        assert key not in rows, f"key {key} appears twice"
        rows[key] = row
    return rows


def same(expected: float | None, actual: Any) -> bool:
    if expected is None or actual is None:
        return expected is None and actual is None
    return math.isclose(float(actual), expected, rel_tol=1e-9, abs_tol=1e-9)


def shown(kpis: list[str], request: Request) -> str:
    return f"kpi-engine evaluate PROJECT {' '.join(kpis)} {request.command_line()}"


def evaluate_alone(project: KpiProject, kpis: list[str], request: Request) -> dict[str, dict[tuple, float | None]]:
    """Each KPI requested on its own: {kpi: {key: value}}."""
    return {name: {key: row[name] for key, row in keyed(project.evaluate([name], **request.options()),
                                                          request).items()}
            for name in kpis}


def assert_alone_equals_together(project: KpiProject, kpis: list[str], request: Request
                                 ) -> dict[str, dict[tuple, float | None]]:
    """Evaluate together and one by one; return {kpi: {key: value}} of the KPIs alone."""
    note(shown(kpis, request))
    together = keyed(project.evaluate(kpis, **request.options()), request)
    alone = evaluate_alone(project, kpis, request)
    problems = []
    union = set().union(*alone.values())
    if set(together) != union:
        problems.append(f"rows only together: {sorted(set(together) - union, key=repr)[:5]}; "
                        f"rows only alone: {sorted(union - set(together), key=repr)[:5]}")
    for name in kpis:
        for key, row in together.items():
            if key in alone[name] and not same(alone[name][key], row[name]):
                problems.append(f"{name} at {key}: alone {alone[name][key]}, together {row[name]}")
            elif key not in alone[name] and row[name] is not None:
                problems.append(f"{name} at {key}: no row alone, but {row[name]} together (should be null)")
    assert not problems, f"{shown(kpis, request)}\n" + "\n".join(problems[:15])
    return alone


def assert_equals_reference(truth: Reference, alone: dict[str, dict[tuple, float | None]], request: Request) -> None:
    problems = []
    for name, values in alone.items():
        expected = truth.evaluate(name, request)
        if set(values) != set(expected):
            problems.append(f"{name}: rows missing {sorted(set(expected) - set(values), key=repr)[:5]}, "
                            f"rows extra {sorted(set(values) - set(expected), key=repr)[:5]}")
        problems += [f"{name} at {key}: expected {value}, got {values[key]}"
                     for key, value in sorted(expected.items(), key=repr)
                     if key in values and not same(value, values[key])]
    assert not problems, f"{shown(list(alone), request)}\n" + "\n".join(problems[:15])


# --- the two projects -------------------------------------------------------------------------------------


def _example_values() -> dict[str, tuple[str, ...]]:
    """Values of the text columns of the example tables, by column name (the library's
    dimensions are columns of the same name); numbers, dates and timestamps are left out."""
    values: dict[str, set[str]] = {}
    for rows in reference.load(reference.DEFAULT_DATA_DIR).values():
        for row in rows:
            for column, value in row.items():
                if value is not None and not NOT_TEXT.match(value):
                    values.setdefault(column, set()).add(value)
    return {column: tuple(sorted(found)) for column, found in values.items() if len(found) <= 40}


def _bike_values(truth: Reference) -> dict[str, tuple[str, ...]]:
    values: dict[str, set[str]] = {}
    for rows in truth.rows.values():
        for row in rows:
            for dim, value in row["_dims"].items():
                if value is not None:
                    values.setdefault(dim, set()).add(value)
    return {dim: tuple(sorted(found)) for dim, found in values.items()}


@pytest.fixture(scope="module")
def example_duckdb():
    with open_project(EXAMPLE) as project:
        yield project


@pytest.fixture(scope="module")
def example_catalog(example_duckdb) -> Catalog:
    return catalog_of(example_duckdb, (None, "day", "week", "month", "quarter"), dt.date(2024, 1, 1),
                      dt.date(2025, 12, 31), _example_values())


@pytest.fixture(scope="module")
def bike_truth(bike_folder) -> Reference:
    return Reference(second_project.read_tables(bike_folder / "data"))


@pytest.fixture(scope="module")
def bike_duckdb(bike_folder):
    with open_project(bike_folder) as project:
        yield project


@pytest.fixture(scope="module")
def bike_catalog(bike_duckdb, bike_truth) -> Catalog:
    return catalog_of(bike_duckdb, (None, "day", "week", "month", "quarter", "year"), dt.date(2024, 10, 1),
                      dt.date(2025, 12, 31), _bike_values(bike_truth))


def test_the_catalog_reads_the_sources_the_reference_reads(bike_catalog, bike_truth):
    # The drawing of requests relies on the engine's view of each KPI; check it against the
    # reference's own list, so both speak of the same KPIs and sources.
    assert set(bike_catalog.kpis) == set(bike_truth.kpis)
    for name, facts in bike_catalog.kpis.items():
        assert facts.sources == set(bike_truth.sources_of(name)), name
    assert {name for name, facts in bike_catalog.kpis.items() if facts.needs_grain} == \
        {"revenue_growth", "fleet_value_growth", "rentals_3_periods"}
    assert bike_catalog.kpis["rentals"].dimensions == {"bike_type", "channel", "region", "tier"}
    assert bike_catalog.kpis["repair_cost_per_rental"].dimensions == {"bike_type", "region", "tier"}


# --- DuckDB: the full form ---------------------------------------------------------------------------------


@FULL
@given(data=st.data())
def test_example_project_kpis_alone_equal_kpis_together_on_duckdb(example_duckdb, example_catalog, data):
    kpis, request = data.draw(requests(example_catalog))
    assert_alone_equals_together(example_duckdb, kpis, request)


@FULL
@given(data=st.data())
def test_second_project_kpis_alone_equal_kpis_together_on_duckdb(bike_duckdb, bike_catalog, data):
    kpis, request = data.draw(requests(bike_catalog))
    assert_alone_equals_together(bike_duckdb, kpis, request)


@FULL
@given(data=st.data())
def test_second_project_kpis_equal_plain_python_on_duckdb(bike_duckdb, bike_catalog, bike_truth, data):
    kpis, request = data.draw(requests(bike_catalog))
    note(shown(kpis, request))
    assert_equals_reference(bike_truth, evaluate_alone(bike_duckdb, kpis, request), request)


@settings(FULL, max_examples=25)
@given(data=st.data())
def test_second_project_complete_flag_equals_plain_python_on_duckdb(bike_duckdb, bike_catalog, bike_truth, data):
    kpis, request = data.draw(requests(bike_catalog))
    if request.grain is None and (request.start is None or request.end is None):
        request = dataclasses.replace(request, start=dt.date(2025, 2, 1), end=dt.date(2025, 3, 1))
        kpis = [name for name in kpis if answerable(bike_catalog.kpis[name], request)] or ["rentals"]
    note(shown(kpis, request))
    result = bike_duckdb.evaluate(kpis, **request.options())
    assert result.names[-1] == "complete"
    problems = [f"{key}: expected {bike_truth.complete(kpis, request, key)}, got {row['complete']}"
                for key, row in keyed(result, request).items()
                if row["complete"] is not bike_truth.complete(kpis, request, key)]
    assert not problems, f"{shown(kpis, request)}\n" + "\n".join(problems[:15])


# --- PostgreSQL and SQLite: a smaller form -------------------------------------------------------------------


@pytest.fixture(scope="module")
def postgres_url(pg_server) -> str:
    """A database of its own on the throwaway server, holding both projects' tables."""
    from psycopg import sql

    database = dataclasses.replace(pg_server, dbname="kpi_consistency")
    with pg_server.admin_connect("postgres") as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(database.dbname)))
        admin.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(database.dbname),
                                                                   sql.Identifier(database.user)))
    return database.url


@pytest.fixture(scope="module")
def bike_postgres(postgres_url, bike_folder):
    import psycopg

    with psycopg.connect(postgres_url, autocommit=True) as connection:
        load_postgres(connection, second_project.TABLES, bike_folder / "data")
    with open_project(bike_folder, warehouse=postgres_url) as project:
        yield project


@pytest.fixture(scope="module")
def example_postgres(postgres_url):
    import psycopg

    with psycopg.connect(postgres_url, autocommit=True) as connection:
        load_postgres(connection, EXAMPLE_TABLES, reference.DEFAULT_DATA_DIR)
    with open_project(EXAMPLE, warehouse=postgres_url) as project:
        yield project


@pytest.fixture(scope="module")
def bike_sqlite(bike_folder, tmp_path_factory):
    url = sqlite_warehouse(tmp_path_factory.mktemp("sqlite"), "bike_rentals", second_project.TABLES,
                           bike_folder / "data")
    with open_project(bike_folder, warehouse=url) as project:
        yield project


@pytest.fixture(scope="module")
def example_sqlite(tmp_path_factory):
    url = sqlite_warehouse(tmp_path_factory.mktemp("sqlite"), "marketing", EXAMPLE_TABLES, reference.DEFAULT_DATA_DIR)
    with open_project(EXAMPLE, warehouse=url) as project:
        yield project


@SMALL
@given(data=st.data())
def test_example_project_kpis_alone_equal_kpis_together_on_postgres(example_postgres, example_catalog, data):
    kpis, request = data.draw(requests(example_catalog))
    assert_alone_equals_together(example_postgres, kpis, request)


@SMALL
@given(data=st.data())
def test_second_project_alone_together_and_plain_python_agree_on_postgres(bike_postgres, bike_catalog, bike_truth,
                                                                          data):
    kpis, request = data.draw(requests(bike_catalog))
    assert_equals_reference(bike_truth, assert_alone_equals_together(bike_postgres, kpis, request), request)


@SMALL
@given(data=st.data())
def test_example_project_kpis_alone_equal_kpis_together_on_sqlite(example_sqlite, example_catalog, data):
    kpis, request = data.draw(requests(example_catalog))
    assert_alone_equals_together(example_sqlite, kpis, request)


@SMALL
@given(data=st.data())
def test_second_project_alone_together_and_plain_python_agree_on_sqlite(bike_sqlite, bike_catalog, bike_truth, data):
    kpis, request = data.draw(requests(bike_catalog))
    assert_equals_reference(bike_truth, assert_alone_equals_together(bike_sqlite, kpis, request), request)
