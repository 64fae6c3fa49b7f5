"""The conformance kit: a ready test for adapter plugins.

A plugin author loads the standard fixture data set (the library's standard tables,
small and deterministic, shipped here) into their warehouse, points a project that
includes the marketing library at it, and checks every KPI against reference values
computed independently of the engine (a plain-Python implementation of each KPI's
textbook formula, run on the same rows)::

    from kpi_engine.testing import TABLES, fixture_rows, assert_conformance

    def test_my_adapter_conforms(tmp_path):
        for table, columns in TABLES.items():
            create_table(table, columns)                       # your DDL, using your types
            insert_rows(table, fixture_rows(table))            # typed Python values
        assert_conformance({"adapter": "mywarehouse", ...}, tmp_path)

DuckDB, PostgreSQL, Spark and the SQLite and MySQL plugins run this same check.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import json
import math
from dataclasses import dataclass
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

# Column types of the standard tables: integer, decimal, text, boolean, date, timestamp.
TABLES: dict[str, dict[str, str]] = {
    "ad_spend": {"spend_date": "date", "channel": "text", "campaign": "text", "spend": "decimal"},
    "customers": {"customer_id": "integer", "lead_id": "integer", "acquired_at": "date", "channel": "text",
                  "industry": "text", "plan": "text", "churned_at": "date"},
    "email_list": {"snapshot_date": "date", "subscribers": "integer", "new_subscribers": "integer",
                   "unsubscribes": "integer", "channel": "text"},
    "email_sends": {"send_id": "integer", "sent_at": "timestamp", "campaign": "text", "contact_id": "integer",
                    "delivered": "boolean", "inbox": "boolean", "opened": "boolean", "clicked": "boolean",
                    "unsubscribed": "boolean", "bounced": "boolean", "channel": "text"},
    "leads": {"lead_id": "integer", "created_at": "timestamp", "channel": "text", "campaign": "text",
              "industry": "text", "company_size": "text", "is_qualified": "boolean", "mql_at": "timestamp",
              "sql_at": "timestamp", "opportunity_at": "timestamp", "customer_at": "timestamp",
              "customer_id": "integer"},
    "nps_responses": {"response_id": "integer", "responded_at": "timestamp", "customer_id": "integer",
                      "channel": "text", "score": "integer"},
    "opportunities": {"opportunity_id": "integer", "lead_id": "integer", "created_at": "timestamp",
                      "channel": "text", "amount": "decimal", "stage": "text", "closed_at": "timestamp"},
    "orders": {"order_id": "integer", "customer_id": "integer", "ordered_at": "timestamp", "amount": "decimal",
               "status": "text", "product": "text"},
    "social_followers": {"snapshot_date": "date", "network": "text", "followers": "integer", "channel": "text"},
    "social_posts": {"post_id": "integer", "posted_at": "timestamp", "network": "text", "channel": "text",
                     "likes": "integer", "comments": "integer", "shares": "integer", "saves": "integer",
                     "clicks": "integer"},
    "subscriptions": {"snapshot_date": "date", "customer_id": "integer", "plan": "text", "mrr": "decimal",
                      "channel": "text"},
    "web_sessions": {"session_id": "integer", "started_at": "timestamp", "channel": "text",
                     "landing_page": "text", "pages_viewed": "integer", "duration_seconds": "integer",
                     "is_bounce": "boolean"},
}

#: The requests the kit checks: every library KPI by month and channel, and by month.
GROUPINGS = {"month_channel": dict(by=["channel"], grain="month"), "month": dict(grain="month")}

#: Formulas over the standard tables that use each function and time-intelligence feature of the
#: formula language once, for comparing an adapter with DuckDB (``assert_same_results``) on the
#: same data. (The rounded value is divided first: a value exactly halfway, such as 543.55,
#: rounds by its binary double on some engines and by its decimal digits on others.)
FUNCTION_FORMULAS = [
    "avg(days_between(leads.created_at, leads.customer_at))",
    "count(leads where created_at >= '2025-01-01' and created_at < '2025-02-01')",
    "count(leads where customer_at <= '2025-03-01')",
    "sum(opportunities.amount % 7)",
    "sum(ad_spend.spend % 2.5) / count(ad_spend)",
    "sum(if(orders.amount > 1000, orders.amount, 0))",
    "round(avg(opportunities.amount) / 7, 1) + abs(-1) + coalesce(nullif(count(leads), 0), 1)",
    "greatest(count(leads), count(opportunities)) - least(count(leads), count(opportunities))",
    "cumulative(count(leads), 'year')",
    "cumulative(count(leads), 'quarter')",
    "rolling(sum(ad_spend.spend), 3)",
    "previous(count(leads), 12)",
    "100 * share(count(leads))",
    "count(leads where count(opportunities per lead_id) > 1)",
    "sum(orders.amount where count(orders per customer_id) > 1)",
    "count(leads where is_qualified and not (channel in ('ppc', 'email')))",
    "count(email_sends where opened) / count(email_sends where delivered)",
]


def fixture_dir() -> Path:
    """The folder of the fixture CSV files (one per standard table)."""
    return Path(str(resources.files("kpi_engine.testing").joinpath("data")))


def _convert(value: str, kind: str) -> Any:
    if value == "":
        return None
    if kind == "integer":
        return int(value)
    if kind == "decimal":
        return Decimal(value)
    if kind == "boolean":
        return value == "true"
    if kind == "date":
        return dt.date.fromisoformat(value)
    if kind == "timestamp":
        return dt.datetime.fromisoformat(value)
    return value


def fixture_rows(table: str) -> list[tuple]:
    """The fixture rows of a standard table as typed Python values, in ``TABLES[table]`` column order."""
    columns = TABLES[table]
    with open(fixture_dir() / f"{table}.csv", newline="", encoding="utf-8") as handle:
        return [tuple(_convert(row[name], kind) for name, kind in columns.items()) for row in csv.DictReader(handle)]


def expected_values() -> dict[str, dict[str, dict[str, float | None]]]:
    """Reference values: {grouping: {kpi: {"2024-01-01|email": value}}}, computed by the
    independent plain-Python implementation in the kpi-engine repository (tests/reference_library.py)."""
    text = resources.files("kpi_engine.testing").joinpath("expected.json").read_text(encoding="utf-8")
    return json.loads(text)


def key_of(row: Mapping[str, Any]) -> str:
    """How a result row is keyed in ``expected_values``: period|channel."""
    period = row.get("period")
    parts = [period.isoformat() if isinstance(period, (dt.date, dt.datetime)) else str(period)]
    if "channel" in row:
        parts.append("" if row["channel"] is None else str(row["channel"]))
    return "|".join(parts)


@dataclass(frozen=True)
class Mismatch:
    grouping: str
    kpi: str
    key: str
    expected: float | None | str  # "missing" when the key is absent on that side
    actual: float | None | str

    def __str__(self) -> str:
        return f"{self.kpi} [{self.grouping} {self.key}]: expected {self.expected}, got {self.actual}"


def _same(expected: float | None, actual: Any, rel: float) -> bool:
    if expected is None or actual is None:
        return expected is None and actual is None
    return math.isclose(float(actual), expected, rel_tol=rel, abs_tol=1e-9)


def write_project(folder: Path, warehouse: str | Mapping[str, Any], *, timezone: str | None = None,
                  **settings: Any) -> Path:
    """A project in ``folder`` that includes the marketing library and reads ``warehouse``;
    ``settings`` adds project settings such as ``week_start`` or ``fiscal_year_start``."""
    folder.mkdir(parents=True, exist_ok=True)
    config = {"name": "conformance", "warehouse": warehouse, "include": ["builtin:marketing"], **settings}
    if timezone:
        config["timezone"] = timezone
    (folder / "kpi_engine.yaml").write_text(json.dumps(config, indent=2), encoding="utf-8")  # JSON is YAML
    return folder


def write_specs_project(folder: Path, warehouse: str | Mapping[str, Any], specs: Mapping[str, Any],
                        name: str = "project") -> Path:
    """A project in ``folder`` over ``warehouse`` with ``specs`` (sources and KPIs, as a YAML
    spec file would hold them) and nothing else."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "kpi_engine.yaml").write_text(json.dumps({"name": name, "warehouse": warehouse}), encoding="utf-8")
    (folder / "specs.yaml").write_text(json.dumps(specs), encoding="utf-8")  # JSON is YAML
    return folder


def check_conformance(warehouse: str | Mapping[str, Any], folder: Path, *, registry=None,
                      kpis: Iterable[str] | None = None, rel: float = 1e-9) -> list[Mismatch]:
    """Evaluate the library on ``warehouse`` (holding the fixture tables) and list every
    value that differs from the reference. Each grouping is one query for all KPIs."""
    from ..engine import KpiProject
    from ..spec import load_project

    expected = expected_values()
    names = list(kpis) if kpis is not None else sorted(expected["month_channel"])
    mismatches: list[Mismatch] = []
    with KpiProject(load_project(write_project(Path(folder), warehouse)), registry=registry) as project:
        for grouping, options in GROUPINGS.items():
            mismatches += _mismatches(grouping, names, project.evaluate(names, **options).to_dicts(), expected, rel)
    return mismatches


def _mismatches(grouping: str, names: list[str], rows: list[Mapping[str, Any]], expected, rel: float,
                some: bool = False) -> list[Mismatch]:
    """How ``rows`` differ from the reference; ``some``: only some KPIs asked, so a key where all
    of them are None may have no row."""
    keyed = {key_of(row): row for row in rows}
    mismatches = []
    for kpi in names:
        reference = expected[grouping][kpi]
        # The reference holds every key the whole library has rows for, as one query returns.
        for key in reference.keys() | keyed.keys():
            value = reference.get(key, "missing")
            actual = keyed[key][kpi] if key in keyed else "missing"
            if some and actual == "missing" and all(expected[grouping][name].get(key) is None for name in names):
                continue
            if value == "missing" or actual == "missing" or not _same(value, actual, rel):
                mismatches.append(Mismatch(grouping, kpi, key, value, actual))
    return mismatches


def result_differences(rows: list[Mapping[str, Any]], reference_rows: list[Mapping[str, Any]], names: Iterable[str],
                       *, engine: str = "adapter", reference: str = "DuckDB", rel: float = 1e-9) -> list[str]:
    """How two evaluations of one request differ (rows keyed by period and channel): rows on one
    side only, and values that differ beyond floating-point rounding or are None on one side only."""
    def keyed(side: list[Mapping[str, Any]], label: str, problems: list[str]) -> dict[tuple, Mapping[str, Any]]:
        found = {(row.get("period"), row.get("channel")): row for row in side}
        if len(found) != len(side):
            problems.append(f"{label} returned {len(side) - len(found)} rows with a key seen before")
        return found

    problems: list[str] = []
    actual, expected = keyed(rows, engine, problems), keyed(reference_rows, reference, problems)
    problems += [f"row {key} only on {engine}" for key in sorted(actual.keys() - expected.keys(), key=str)]
    problems += [f"row {key} only on {reference}" for key in sorted(expected.keys() - actual.keys(), key=str)]
    for key in expected.keys() & actual.keys():
        for name in names:
            want, got = expected[key][name], actual[key][name]
            if not _same(want, got, rel):
                problems.append(f"{name} {key}: {reference} {want!r}, {engine} {got!r}")
    return problems


def assert_same_results(rows: list[Mapping[str, Any]], reference_rows: list[Mapping[str, Any]], names: Iterable[str],
                        **options) -> None:
    """``result_differences`` that fails with the first differences listed."""
    problems = result_differences(rows, reference_rows, list(names), **options)
    assert not problems, f"{len(problems)} differences:\n" + "\n".join(problems[:20])


def assert_conformance(warehouse: str | Mapping[str, Any], folder: Path, **options) -> None:
    """``check_conformance`` that fails with the first mismatches listed."""
    mismatches = check_conformance(warehouse, folder, **options)
    if mismatches:
        shown = "\n".join(f"  {m}" for m in mismatches[:20])
        more = f"\n  ... and {len(mismatches) - 20} more" if len(mismatches) > 20 else ""
        raise AssertionError(f"{len(mismatches)} KPI values differ from the reference:\n{shown}{more}")


def assert_runs_rendered_text(warehouse: str | Mapping[str, Any], folder: Path, last_sent: Callable[[], str], *,
                              kpis: Iterable[str] = ("cost_per_lead", "new_contacts"), registry=None,
                              rel: float = 1e-9) -> None:
    """For an adapter that runs the text the engine rendered for the result (``hookspecs.query_text``,
    or ``rendered_text`` for one that prepares trees itself): evaluate ``kpis`` by month and channel
    on ``warehouse`` (holding the fixture tables) and check that the request's query was rendered
    once, that ``last_sent()`` (the SQL text the test saw the driver receive last) is the result's
    ``sql``, and that every value is the reference's."""
    from ..engine import KpiProject
    from ..spec import load_project

    names = list(kpis)
    with KpiProject(load_project(write_project(Path(folder), warehouse)), registry=registry) as project:
        project.model()  # described first: describing runs queries of its own
        with request_renders() as renders:
            result = project.evaluate(names, **GROUPINGS["month_channel"])
        sent = last_sent()
    if len(renders) != 1:
        raise AssertionError(f"the request's query was rendered {len(renders)} times, not once")
    if sent != result.sql:
        raise AssertionError(f"the driver received other SQL than the result shows:\n{sent}\n---\n{result.sql}")
    mismatches = _mismatches("month_channel", names, result.to_dicts(), expected_values(), rel, some=True)
    if mismatches:
        raise AssertionError(f"{len(mismatches)} values differ from the reference:\n"
                             + "\n".join(f"  {m}" for m in mismatches[:20]))


@contextlib.contextmanager
def request_renders() -> Iterator[list[str | None]]:
    """While inside, the dialect of each rendering of a request's query tree (the tree holding the
    KPIs asked, ``hookspecs.KPIS_META``; copies keep it). The engine renders it once per
    ``evaluate``, ``stream`` or ``values``, for the result's ``sql``; an adapter that runs that
    text (``hookspecs.query_text``, ``rendered_text``) adds none, so a test of one checks that
    the list holds one entry and that the text its driver received is the result's ``sql``."""
    from sqlglot.dialects.dialect import Dialect
    from sqlglot.generator import Generator

    from ..hookspecs import KPIS_META

    # Every rendering ends in Generator.generate: Expression.sql's and the engine's (kpi_engine/render.py).
    real = Generator.generate
    seen: list[str | None] = []

    def rendering(self, expression, *args, **kwargs):
        if (expression._meta or {}).get(KPIS_META) is not None:
            seen.append(next((name for name, kind in Dialect.classes.items() if kind is type(self.dialect)), None))
        return real(self, expression, *args, **kwargs)

    Generator.generate = rendering
    try:
        yield seen
    finally:
        Generator.generate = real
