"""Regression tests for the defects of issue 12, and the ``complete`` flag, against values computed
here by plain Python from the CSV files (tests/reference.py for the example project,
tests/second_reference.py and the raw rows for the bike_rentals project).

1. A companion with a time function (growth, cumulative, share, rolling) must not move a
   mid-period --from back to the period start for the other KPIs.
2. --where on a dimension of a related source that is not in --by works and filters like Python.
3. last()/first() in a period without any snapshot is null (after the data ends, between weekly
   counts), and growth over it is null, not -100%.
4. A KPI's rows do not depend on the KPIs asked with it (revenue growth alone and with --all).
5. A per-entity aggregate nested in another per-entity aggregate's filter is refused by validate.

Complete flag: a week that holds only Jan 1-5 of data, a month cut by --to, months fully inside,
a request over two sources with different coverage, no grain, and --complete-only.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections import defaultdict
from decimal import Decimal

import pytest
from click.testing import CliRunner, Result

import reference
import second_project
from kpi_engine.cli import cli
from kpi_engine.engine import open_project
from second_project import bike_folder  # noqa: F401  (a fixture)
from second_reference import Reference, Request, Where, dimensions_of

EXAMPLE = reference.DEFAULT_DATA_DIR.parent
D = dt.date


def run(*args) -> Result:
    return CliRunner().invoke(cli, [str(arg) for arg in args])


def by_key(rows, *names) -> dict[tuple, dict]:
    return {tuple(row[name] for name in names): row for row in rows}


@pytest.fixture(scope="module")
def example():
    with open_project(EXAMPLE) as project:
        yield project


@pytest.fixture(scope="module")
def data():
    return reference.load()


@pytest.fixture(scope="module")
def bike(bike_folder):  # noqa: F811
    with open_project(bike_folder) as project:
        yield project


@pytest.fixture(scope="module")
def bike_tables(bike_folder):  # noqa: F811
    return second_project.read_tables(bike_folder / "data")


@pytest.fixture(scope="module")
def bike_truth(bike_tables):
    return Reference(bike_tables)


# --- plain Python over the example CSV files ---------------------------------------------------------


def _month(day: dt.date) -> dt.date:
    return day.replace(day=1)


def paid_revenue(data, start: dt.date, end: dt.date, channel: str | None = "*") -> dict[tuple, Decimal]:
    """Paid order amounts by (month, customer channel) (or by (month,) when channel is None)
    for orders placed in [start, end); ``channel`` other than "*" keeps that channel only."""
    channel_of = {row["customer_id"]: row["channel"] for row in data["customers"]}
    totals: dict[tuple, Decimal] = defaultdict(Decimal)
    for row in data["orders"]:
        day = dt.date.fromisoformat(row["ordered_at"][:10])
        customer_channel = channel_of.get(row["customer_id"])
        if not start <= day < end or (channel not in ("*", None) and customer_channel != channel):
            continue
        key = (_month(day),) + ((customer_channel,) if channel == "*" else ())
        totals[key] += Decimal(row["amount"]) if row["status"] == "paid" else Decimal(0)
    return dict(totals)


def month_end_snapshot(data, table: str, column: str, start: dt.date, end: dt.date) -> dict[dt.date, Decimal]:
    """Sum of ``column`` on the last day of each month (within [start, end)) that has rows."""
    rows = [row for row in data[table] if start <= dt.date.fromisoformat(row["snapshot_date"]) < end]
    last_day: dict[dt.date, str] = {}
    for row in rows:
        month = _month(dt.date.fromisoformat(row["snapshot_date"]))
        last_day[month] = max(last_day.get(month, ""), row["snapshot_date"])
    totals: dict[dt.date, Decimal] = defaultdict(Decimal)
    for row in rows:
        month = _month(dt.date.fromisoformat(row["snapshot_date"]))
        if row["snapshot_date"] == last_day[month]:
            totals[month] += Decimal(row[column])
    return dict(totals)


def growth(current, before) -> float | None:
    if current is None or before is None or before == 0:
        return None
    return float(100 * (Decimal(current) - Decimal(before)) / Decimal(before))


# --- 1. companions do not change values ------------------------------------------------------------------


@pytest.mark.parametrize("companions", [
    dict(kpis=[]),
    dict(kpis=["revenue_growth_rate"]),
    dict(kpis=["customer_lifetime_value"]),
    dict(kpis=["lead_share"]),
    dict(kpis=[], formulas=["rolling(count(leads), 3)"]),
], ids=["alone", "growth", "cumulative", "share", "rolling"])
@pytest.mark.parametrize("by_channel", [False, True], ids=["total", "by_channel"])
def test_new_contacts_from_mid_january_count_only_the_leads_from_the_15th(example, data, companions, by_channel):
    # Issue 12, defect 1: with revenue_growth_rate beside it, January read 301 instead of 166.
    start, end = D(2025, 1, 15), D(2025, 3, 1)
    rows = example.evaluate(["new_contacts", *companions["kpis"]], formulas=companions.get("formulas", ()),
                            by=["channel"] if by_channel else [], grain="month", start=start, end=end).to_dicts()
    expected = reference.contact_count(data, by_channel=by_channel, by_month=True, start=start, end=end)
    got = {key: row["new_contacts"] for key, row in
           by_key(rows, "period", *(["channel"] if by_channel else [])).items()}
    assert got == expected
    if not by_channel:
        january = sum(1 for row in data["leads"] if "2025-01-15" <= row["created_at"][:10] <= "2025-01-31")
        assert got[(D(2025, 1, 1),)] == january


def test_growth_compares_the_part_of_the_month_asked_for_with_the_whole_month_before(example, data):
    start, end = D(2025, 1, 15), D(2025, 3, 1)
    rows = by_key(example.evaluate(["revenue_growth_rate", "new_contacts"], grain="month", start=start,
                                   end=end).to_dicts(), "period")
    current = paid_revenue(data, start, end, channel=None)
    december = paid_revenue(data, D(2024, 12, 1), D(2025, 1, 1), channel=None)[(D(2024, 12, 1),)]
    january = current[(D(2025, 1, 1),)]
    assert rows[(D(2025, 1, 1),)]["revenue_growth_rate"] == pytest.approx(growth(january, december), rel=1e-9)
    # February is whole and compared with the whole of January (not only from the 15th).
    whole_january = paid_revenue(data, D(2025, 1, 1), D(2025, 2, 1), channel=None)[(D(2025, 1, 1),)]
    assert rows[(D(2025, 2, 1),)]["revenue_growth_rate"] == pytest.approx(
        growth(current[(D(2025, 2, 1),)], whole_january), rel=1e-9)


# --- 2. --where on a related dimension not in --by ------------------------------------------------------


@pytest.mark.parametrize("channel", ["ppc", "email"])
def test_where_on_the_customers_channel_of_orders_equals_a_python_filter(example, data, channel):
    start, end = D(2025, 1, 1), D(2025, 7, 1)
    result = run("evaluate", EXAMPLE, "revenue", "--grain", "month", "--from", start, "--to", end,
                 "--where", f"channel = '{channel}'", "--format", "json")
    assert result.exit_code == 0, result.output
    got = {(D.fromisoformat(row["period"]),): row["revenue"] for row in json.loads(result.stdout)}
    expected = paid_revenue(data, start, end, channel=channel)
    assert set(got) == set(expected) and len(got) >= 3
    for (month,), value in expected.items():
        assert got[(month,)] == pytest.approx(float(value), rel=1e-9)


def test_where_on_the_shop_region_not_in_by_equals_a_python_filter(bike, bike_tables):
    region_of = {shop["code"]: shop["region"] for shop in bike_tables["shops"]}
    expected: dict[tuple, int] = defaultdict(int)
    for row in bike_tables["rentals"]:
        if region_of.get(row["shop_code"]) == "north":
            expected[(_month(row["started_at"].date()), row["bike_type"])] += 1
    rows = bike.evaluate(["rentals"], by=["bike_type"], grain="month", where="region = 'north'").to_dicts()
    assert {key: row["rentals"] for key, row in by_key(rows, "period", "bike_type").items()} == expected


def test_where_on_the_shop_region_not_in_by_matches_the_reference_for_every_kpi(bike, bike_truth):
    request = Request(grain="quarter", by=("channel",), where=Where("region", "in", ("south", "east")))
    for name in bike_truth.kpis:
        if any("channel" not in dimensions_of(source) for source in bike_truth.sources_of(name)):
            continue  # repairs and fleet counts have no booking channel
        rows = bike.evaluate([name], **request.options()).to_dicts()
        got = {key: row[name] for key, row in by_key(rows, "period", "channel").items()}
        expected = bike_truth.evaluate(name, request)
        assert got.keys() == expected.keys(), name
        assert got == {key: pytest.approx(value, rel=1e-9, abs=1e-9) if value is not None else None
                       for key, value in expected.items()}, name


# --- 3. no snapshot means null ------------------------------------------------------------------------------


def test_snapshots_after_the_data_ends_are_null_and_growth_over_them_too(example, data):
    mrr_growth = "100 * (mrr - previous(mrr)) / previous(mrr)"
    rows = by_key(example.evaluate(["mrr", "email_list_size", "customer_retention_rate"], formulas=[mrr_growth],
                                   grain="month", start=D(2025, 11, 1), end=D(2026, 3, 1), fill=True).to_dicts(),
                  "period")
    assert set(rows) == {(D(2025, 11, 1),), (D(2025, 12, 1),), (D(2026, 1, 1),), (D(2026, 2, 1),)}
    mrr = month_end_snapshot(data, "subscriptions", "mrr", D(2025, 11, 1), D(2026, 1, 1))
    subscribers = month_end_snapshot(data, "email_list", "subscribers", D(2025, 11, 1), D(2026, 1, 1))
    for month in (D(2025, 11, 1), D(2025, 12, 1)):
        assert rows[(month,)]["mrr"] == pytest.approx(float(mrr[month]), rel=1e-9)
        assert rows[(month,)]["email_list_size"] == pytest.approx(float(subscribers[month]), rel=1e-9)
    assert rows[(D(2025, 12, 1),)]["formula"] == pytest.approx(growth(mrr[D(2025, 12, 1)], mrr[D(2025, 11, 1)]),
                                                             rel=1e-9)
    for month in (D(2026, 1, 1), D(2026, 2, 1)):  # no snapshot at all: null, and null growth (not -100%)
        assert rows[(month,)]["mrr"] is None
        assert rows[(month,)]["email_list_size"] is None
        assert rows[(month,)]["formula"] is None
        assert rows[(month,)]["customer_retention_rate"] is None


def _fleet_total(bike_tables, day: dt.date) -> Decimal:
    return sum((row["book_value"] for row in bike_tables["fleet_snapshots"] if row["snapshot_day"] == day),
               Decimal(0))


def test_fleet_value_between_weekly_counts_is_null_day_by_day(bike, bike_tables):
    rows = by_key(bike.evaluate(["fleet_value", "fleet_value_growth", "fleet_at_start"], grain="day",
                                start=D(2025, 3, 1), end=D(2025, 3, 31), fill=True).to_dicts(), "period")
    assert len(rows) == 30
    sundays = {D(2025, 3, 2), D(2025, 3, 9), D(2025, 3, 16), D(2025, 3, 23), D(2025, 3, 30)}
    for (day,), row in rows.items():
        if day in sundays:
            assert row["fleet_value"] == pytest.approx(float(_fleet_total(bike_tables, day)), rel=1e-9)
            count = sum(1 for r in bike_tables["fleet_snapshots"] if r["snapshot_day"] == day)
            assert row["fleet_at_start"] == count > 0
        else:
            assert row["fleet_value"] is None and row["fleet_at_start"] is None, day
        # The day before has no count (Saturday) or is itself without one: growth is never -100%.
        assert row["fleet_value_growth"] is None, day


def test_a_week_whose_count_never_happened_is_null_and_so_is_growth_around_it(bike, bike_tables):
    rows = by_key(bike.evaluate(["fleet_value", "fleet_value_growth"], grain="week", start=D(2025, 5, 5),
                                end=D(2025, 6, 2), fill=True).to_dicts(), "period")
    value = {day: _fleet_total(bike_tables, day) for day in (D(2025, 5, 4), D(2025, 5, 11), D(2025, 5, 25),
                                                             D(2025, 6, 1))}
    assert rows[(D(2025, 5, 5),)]["fleet_value"] == pytest.approx(float(value[D(2025, 5, 11)]), rel=1e-9)
    assert rows[(D(2025, 5, 5),)]["fleet_value_growth"] == pytest.approx(
        growth(value[D(2025, 5, 11)], value[D(2025, 5, 4)]), rel=1e-9)
    assert rows[(D(2025, 5, 12),)]["fleet_value"] is None  # Sunday 2025-05-18 was never counted
    assert rows[(D(2025, 5, 12),)]["fleet_value_growth"] is None
    assert rows[(D(2025, 5, 19),)]["fleet_value"] == pytest.approx(float(value[D(2025, 5, 25)]), rel=1e-9)
    assert rows[(D(2025, 5, 19),)]["fleet_value_growth"] is None  # nothing to compare with
    assert rows[(D(2025, 5, 26),)]["fleet_value_growth"] == pytest.approx(
        growth(value[D(2025, 6, 1)], value[D(2025, 5, 25)]), rel=1e-9)


def test_fleet_value_after_the_counts_stop_is_null(bike, bike_tables):
    rows = by_key(bike.evaluate(["fleet_value", "fleet_value_growth", "rentals"], grain="month",
                                start=D(2025, 8, 1), end=D(2025, 12, 1), fill=True).to_dicts(), "period")
    assert rows[(D(2025, 9, 1),)]["fleet_value"] == pytest.approx(float(_fleet_total(bike_tables, D(2025, 9, 28))),
                                                                 rel=1e-9)
    for month in (D(2025, 10, 1), D(2025, 11, 1)):
        assert rows[(month,)]["fleet_value"] is None
        assert rows[(month,)]["fleet_value_growth"] is None


# --- 4. a KPI's rows do not depend on its companions ----------------------------------------------------------


def _json_rows(result) -> list[dict]:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_revenue_growth_has_the_same_rows_alone_and_with_all_kpis(data):
    options = ["--grain", "month", "--by", "channel", "--format", "json"]
    alone = {(row["period"], row["channel"]): row["revenue_growth_rate"]
             for row in _json_rows(run("evaluate", EXAMPLE, "revenue_growth_rate", *options))}
    together = {(row["period"], row["channel"]): row["revenue_growth_rate"]
                for row in _json_rows(run("evaluate", EXAMPLE, "--all", *options))}
    # Its rows: the (month, customer channel) pairs with at least one order, paid or not.
    revenue = paid_revenue(data, D(2024, 1, 1), D(2026, 1, 1))
    assert set(alone) == {(month.isoformat(), channel) for month, channel in revenue}
    assert any(value == 0 for value in revenue.values())  # a month whose orders were all refunded or pending
    assert set(together) > set(alone)  # other KPIs have rows where there is no order
    for key, value in together.items():
        if key in alone:
            assert value == (None if alone[key] is None else pytest.approx(alone[key], rel=1e-9)), key
        else:
            assert value is None, key
    for (month, channel), value in alone.items():
        month = D.fromisoformat(month)
        before = revenue.get((shift_month(month, -1), channel), Decimal(0))
        expected = growth(revenue[(month, channel)], before)
        assert value == (None if expected is None else pytest.approx(expected, rel=1e-9)), (month, channel)


def shift_month(month: dt.date, months: int) -> dt.date:
    index = month.year * 12 + month.month - 1 + months
    return D(index // 12, index % 12 + 1, 1)


def test_revenue_growth_in_a_month_without_rentals_is_no_row_not_minus_100(bike_folder, bike_truth):  # noqa: F811
    options = ["--grain", "month", "--by", "bike_type", "--format", "json"]
    alone = {(row["period"], row["bike_type"]): row["revenue_growth"]
             for row in _json_rows(run("evaluate", bike_folder, "revenue_growth", *options))}
    together = {(row["period"], row["bike_type"]): row["revenue_growth"]
                for row in _json_rows(run("evaluate", bike_folder, "--all", *options))}
    expected = bike_truth.evaluate("revenue_growth", Request(grain="month", by=("bike_type",)))
    assert set(alone) == {(month.isoformat(), bike_type) for month, bike_type in expected}
    assert not any(month == "2025-08-01" for month, _ in alone)  # the shops were closed
    assert any(month == "2025-08-01" for month, _ in together)  # repairs and counts went on
    for key, value in together.items():
        want = expected.get((D.fromisoformat(key[0]), key[1]))
        assert value == (None if want is None else pytest.approx(want, rel=1e-9)), key
    # Cargo in March 2025: rentals, all cancelled, so a row with no revenue (and, from no revenue
    # in February, no growth rate either); April grows from 0, which is no growth rate.
    assert alone[("2025-03-01", "cargo")] is None and together[("2025-04-01", "cargo")] is None


# --- 5. nested per-entity aggregates ------------------------------------------------------------------------------

NESTED = """\
kpis:
  nested_repeat_revenue:
    formula: >
      sum(rentals.fee where count(rentals where count(rentals per member_id) > 1 per member_id) > 0)
"""


def test_a_per_entity_aggregate_nested_in_another_is_refused_by_validate(tmp_path):
    folder = second_project.make_folder(tmp_path / "nested", {"nested.yaml": NESTED})
    result = run("validate", folder)
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert result.exit_code == 1, result.output
    problems = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(problems) == 1, result.stderr
    assert "nested.yaml:" in problems[0] and "nested_repeat_revenue" in problems[0], problems[0]
    assert "per" in problems[0]


def test_a_nested_per_entity_aggregate_on_the_command_line_is_one_clear_error(bike_folder):  # noqa: F811
    formula = NESTED.split(">\n", 1)[1].strip()
    result = run("evaluate", bike_folder, "--formula", formula)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert len([line for line in result.stderr.splitlines() if line.startswith("Error:")]) == 1, result.stderr


# --- the complete flag ---------------------------------------------------------------------------------------


def test_a_week_that_holds_only_january_1_to_5_is_incomplete(bike):
    result = bike.evaluate(["repair_cost"], grain="week")
    assert result.names[-1] == "complete"
    rows = result.to_dicts()
    # Repairs run from Wednesday 2025-01-01 to Sunday 2025-11-30: the first week (labelled Monday
    # 2024-12-30) holds only January 1-5; the last week ends on the last day of data.
    assert rows[0]["period"] == D(2024, 12, 30) and rows[0]["complete"] is False
    assert rows[-1]["period"] == D(2025, 11, 24) and rows[-1]["complete"] is True
    assert all(row["complete"] is True for row in rows[1:])


def test_a_month_cut_by_to_is_incomplete_and_whole_months_are_complete(bike):
    rows = by_key(bike.evaluate(["rentals"], grain="month", start=D(2025, 1, 1), end=D(2025, 3, 15)).to_dicts(),
                  "period")
    assert {key: row["complete"] for key, row in rows.items()} == {
        (D(2025, 1, 1),): True, (D(2025, 2, 1),): True, (D(2025, 3, 1),): False}
    rows = bike.evaluate(["rentals"], grain="month", start=D(2025, 1, 10), end=D(2025, 3, 1)).to_dicts()
    assert [row["complete"] for row in rows] == [False, True]  # January from the 10th only


def test_complete_needs_every_source_of_the_request_to_cover_the_period(bike):
    # Rentals cover 2024-10-01 .. 2025-12-31, repairs 2025-01-01 .. 2025-11-30.
    rows = by_key(bike.evaluate(["repair_cost_per_rental"], grain="month").to_dicts(), "period")
    for (month,), row in rows.items():
        assert row["complete"] is (D(2025, 1, 1) <= month <= D(2025, 11, 1)), month
    assert (D(2024, 10, 1),) in rows and (D(2025, 12, 1),) in rows
    # The same months for rentals alone are complete: the flag is about the sources read.
    rentals = by_key(bike.evaluate(["rentals"], grain="month").to_dicts(), "period")
    assert rentals[(D(2024, 10, 1),)]["complete"] is True and rentals[(D(2025, 12, 1),)]["complete"] is True


def test_complete_without_a_grain_is_about_the_range(bike):
    inside = bike.evaluate(["rentals"], start=D(2025, 1, 1), end=D(2025, 7, 1)).to_dicts()
    assert [row["complete"] for row in inside] == [True]
    before_repairs = bike.evaluate(["repair_cost"], start=D(2024, 12, 1), end=D(2025, 2, 1)).to_dicts()
    assert [row["complete"] for row in before_repairs] == [False]


def test_complete_only_drops_the_incomplete_rows_and_csv_ends_with_complete(bike_folder):  # noqa: F811
    options = ["rentals", "repair_cost", "--grain", "month", "--from", "2024-12-15", "--to", "2025-04-20"]
    result = run("evaluate", bike_folder, *options, "--format", "csv")
    assert result.exit_code == 0, result.output
    table = list(csv.reader(io.StringIO(result.stdout)))
    assert table[0][-1] == "complete"
    assert [row[0] for row in table[1:]] == ["2024-12-01", "2025-01-01", "2025-02-01", "2025-03-01", "2025-04-01"]
    every = _json_rows(run("evaluate", bike_folder, *options, "--format", "json"))
    kept = _json_rows(run("evaluate", bike_folder, *options, "--format", "json", "--complete-only"))
    # December starts before --from (and before repairs), April ends after --to.
    assert [row["period"] for row in kept] == ["2025-01-01", "2025-02-01", "2025-03-01"]
    # the same rows and values (within float noise: the narrower range is summed in another order)
    complete = [row for row in every if row["complete"]]
    assert [(row["period"], row["complete"]) for row in kept] == [(row["period"], True) for row in complete]
    for got, want in zip(kept, complete):
        assert [got["rentals"], got["repair_cost"]] == pytest.approx([want["rentals"], want["repair_cost"]], rel=1e-12)


def test_a_time_function_over_a_kpi_with_one_validates_and_gives_the_shifted_growth(tmp_path):
    # Issue 13, item 7: previous(revenue_growth_rate) passed validate and crashed evaluate (KeyError);
    # issue 15 item 5 made it a time function over a time function: last month's growth rate.
    folder = tmp_path / "growth"
    folder.mkdir()
    (folder / "kpi_engine.yaml").write_text(
        f"name: growth\nwarehouse: {{adapter: duckdb, data: '{EXAMPLE / 'data'}'}}\ninclude: [builtin:marketing]\n")
    (folder / "k.yaml").write_text("kpis:\n  growth_before:\n    formula: previous(revenue_growth_rate)\n")
    result = run("validate", folder)
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output
    evaluated = run("evaluate", folder, "growth_before", "--grain", "month", "--from", "2024-03-01", "--to",
                    "2024-09-01", "--format", "json")
    assert evaluated.exit_code == 0, evaluated.stderr
    got = {row["period"]: row["growth_before"] for row in json.loads(evaluated.stdout)}
    revenue: dict = {}
    with open(EXAMPLE / "data" / "orders.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            if row["status"] == "paid":
                month = dt.date.fromisoformat(row["ordered_at"][:10]).replace(day=1)
                revenue[month] = revenue.get(month, Decimal(0)) + Decimal(row["amount"])

    def month_back(month: dt.date, n: int) -> dt.date:
        index = month.year * 12 + month.month - 1 - n
        return dt.date(index // 12, index % 12 + 1, 1)

    want = {}
    for month in [dt.date(2024, m, 1) for m in range(3, 9)]:
        now, before = revenue.get(month_back(month, 1), 0), revenue.get(month_back(month, 2), 0)
        want[month.isoformat()] = float(100 * (now - before) / before) if before else None
    assert got == pytest.approx(want, rel=1e-12)
    everything = run("evaluate", EXAMPLE, "--all", "--grain", "quarter", "--format", "json")
    assert everything.exit_code == 0 and json.loads(everything.stdout), everything.stderr


def test_a_sum_over_rows_whose_values_are_all_null_is_0_as_with_no_rows(make_project):
    """docs/semantics.md, "Empty versus zero": inside a KPI's rows, sum reads 0 where the rows have
    no value (as where there are no rows), avg/min/max null, count(column) 0; the same alone and
    asked with a KPI of another source."""
    root = make_project({"s.yaml": """
        sources:
          deals: {table: deals, time: opened_on, dimensions: [team]}
          calls: {table: calls, time: called_on, dimensions: [team]}
        kpis:
          amount: {formula: sum(deals.amount)}
          average: {formula: avg(deals.amount)}
          largest: {formula: max(deals.amount)}
          priced: {formula: count(deals.amount)}
          calls_n: {formula: count(calls)}
        """}, {"deals": [{"opened_on": "2025-01-05", "team": "a", "amount": ""},
                         {"opened_on": "2025-01-20", "team": "a", "amount": ""},
                         {"opened_on": "2025-01-07", "team": "b", "amount": "12.5"},
                         {"opened_on": "2025-01-09", "team": "b", "amount": ""}],
               "calls": [{"called_on": "2025-01-03", "team": "a"}, {"called_on": "2025-01-04", "team": "c"}]})
    expected = {"a": (0, None, None, 0), "b": (12.5, 12.5, 12.5, 1)}
    kpis = ["amount", "average", "largest", "priced"]
    with open_project(root) as project:
        for asked in (kpis, kpis + ["calls_n"]):
            rows = {row["team"]: row for row in project.evaluate(asked, by=["team"])}
            for team, values in expected.items():
                assert tuple(rows[team][k] for k in kpis) == values, (asked, team)
            if "calls_n" in asked:  # team c has calls only: the deal KPIs are outside their rows there
                assert [rows["c"][k] for k in kpis] == [None] * 4 and rows["c"]["calls_n"] == 1
