"""Several time axes on one table (issue 15, item 7): a source lists its other time columns in
``time_axes``; an aggregate chooses one with ``at`` (``count(deals at won_at)``), a KPI with
``time:``, a request with ``--time-axis``. Values are checked against plain Python over the
generated rows; asking KPIs on different axes together changes none of them."""

from __future__ import annotations

import csv
import datetime as dt
import json
import random
from collections import defaultdict
from decimal import Decimal

import pytest
from click.testing import CliRunner

from kpi_engine.cli import cli
from kpi_engine.engine import open_project

SPECS = """\
sources:
  deals:
    table: deals
    time: created_at
    time_axes: [won_at, lost_at]
    dimensions: [channel]
  members:                       # an interval source whose ends are also events
    table: members
    time: joined_on
    time_end: left_on
    time_axes: [left_on]
kpis:
  deals_created: {formula: count(deals)}
  deals_won: {formula: count(deals at won_at)}
  deals_lost: {formula: count(deals at lost_at)}
  won_amount: {formula: sum(deals.amount), time: won_at, unit: currency}
  win_rate: {formula: 100 * deals_won / (deals_won + deals_lost), unit: percent}
  members: {formula: last(members)}
  unsubscribes: {formula: count(members at left_on)}
"""


def generate(seed: int = 3) -> dict[str, list[dict]]:
    rng = random.Random(seed)
    deals, members = [], []
    for i in range(1, 201):
        created = dt.datetime(2025, 1, 1) + dt.timedelta(days=rng.randrange(150), hours=rng.randrange(24))
        outcome = rng.random()
        closed = created + dt.timedelta(days=rng.randrange(0, 60), hours=rng.randrange(24))
        deals.append({"deal_id": i, "created_at": created, "won_at": closed if outcome < 0.35 else None,
                      "lost_at": closed if 0.35 <= outcome < 0.7 else None,
                      "channel": rng.choice(["ads", "email", None]), "amount": Decimal(rng.randrange(100, 9000))})
    for i in range(1, 81):
        joined = dt.date(2025, 1, 1) + dt.timedelta(days=rng.randrange(120))
        left = joined + dt.timedelta(days=rng.randrange(1, 90)) if rng.random() < 0.6 else None
        members.append({"member_id": i, "joined_on": joined, "left_on": left})
    return {"deals": deals, "members": members}


def _text(value) -> str:
    if value is None:
        return ""
    return value.strftime("%Y-%m-%d %H:%M:%S") if isinstance(value, dt.datetime) else str(value)


@pytest.fixture(scope="module")
def rows():
    return generate()


@pytest.fixture(scope="module")
def folder(rows, tmp_path_factory):
    root = tmp_path_factory.mktemp("axes")
    (root / "kpi_engine.yaml").write_text("name: axes\nwarehouse: {adapter: duckdb, data: data}\n")
    (root / "specs.yaml").write_text(SPECS)
    (root / "data").mkdir()
    for table, table_rows in rows.items():
        with open(root / "data" / f"{table}.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(table_rows[0]))
            writer.writeheader()
            writer.writerows({k: _text(v) for k, v in row.items()} for row in table_rows)
    return root


@pytest.fixture(scope="module")
def project(folder):
    with open_project(folder) as opened:
        yield opened


def month(value) -> dt.date:
    return (value.date() if isinstance(value, dt.datetime) else value).replace(day=1)


def per_month(rows, column, value=lambda row: 1, by_channel=False) -> dict:
    totals: dict = defaultdict(int)
    for row in rows:
        if row[column] is not None:
            totals[(month(row[column]),) + ((row["channel"],) if by_channel else ())] += value(row)
    return dict(totals)


def engine(project, names, by_channel=False, **options) -> dict[str, dict]:
    result = project.evaluate(names, grain="month", by=["channel"] if by_channel else [], **options)
    keys = ["period"] + (["channel"] if by_channel else [])
    return {name: {tuple(r[k] for k in keys): r[name] for r in result.to_dicts()} for name in names}


@pytest.mark.parametrize("by_channel", [False, True], ids=["month", "month-channel"])
def test_each_axis_counts_the_rows_in_the_period_of_its_own_column(project, rows, by_channel):
    deals = rows["deals"]
    expected = {
        "deals_created": per_month(deals, "created_at", by_channel=by_channel),
        "deals_won": per_month(deals, "won_at", by_channel=by_channel),
        "deals_lost": per_month(deals, "lost_at", by_channel=by_channel),
        "won_amount": per_month(deals, "won_at", lambda r: r["amount"], by_channel),
    }
    together = engine(project, list(expected), by_channel)
    for name, want in expected.items():
        alone = engine(project, [name], by_channel)[name]
        assert alone == pytest.approx(want), name
        assert {k: v for k, v in together[name].items() if k in want} == pytest.approx(want), name
        assert all(v is None for k, v in together[name].items() if k not in want), name


def test_a_ratio_over_two_axes(project, rows):
    won, lost = per_month(rows["deals"], "won_at"), per_month(rows["deals"], "lost_at")
    got = engine(project, ["win_rate"])["win_rate"]
    assert set(got) == set(won) | set(lost)
    for key, value in got.items():
        assert value == pytest.approx(100 * won.get(key, 0) / (won.get(key, 0) + lost.get(key, 0)))


def test_the_request_chooses_the_axis(project, rows):
    got = engine(project, ["deals_created"], time_axis="won_at")["deals_created"]
    assert got == pytest.approx(per_month(rows["deals"], "won_at"))
    # An aggregate that chose its axis keeps it.
    assert engine(project, ["deals_lost"], time_axis="won_at")["deals_lost"] == \
        pytest.approx(per_month(rows["deals"], "lost_at"))


def test_an_interval_sources_ends_are_events_on_their_own_axis(project, rows):
    got = engine(project, ["unsubscribes"], end=dt.date(2025, 9, 1))["unsubscribes"]
    assert got == pytest.approx({k: v for k, v in per_month(rows["members"], "left_on").items()
                                 if k[0] < dt.date(2025, 9, 1)})


def test_list_and_validate_show_one_source_with_its_axes(folder):
    runner = CliRunner()
    listed = json.loads(runner.invoke(cli, ["list", str(folder), "--format", "json"]).stdout)
    deals = [s for s in listed["sources"] if s["name"].startswith("deals")]
    assert deals == [dict(deals[0], name="deals", time="created_at", time_axes=["won_at", "lost_at"])]
    assert "2 sources, 7 KPIs" in runner.invoke(cli, ["validate", str(folder)]).stdout


@pytest.mark.parametrize("kpis, message", [
    ("bad: {formula: count(deals at closed_at)}", "source 'deals' has no time axis 'closed_at'"),
    ("bad: {formula: abs(count(deals) at won_at)}", "'at' places an aggregate's rows in time"),
    ("bad: {formula: count(deals), time: closed_at}", "no source this KPI aggregates has the time axis 'closed_at'"),
])
def test_axis_mistakes_in_formulas_are_one_clear_error(folder, tmp_path, kpis, message):
    root = tmp_path / "p"
    root.mkdir()
    (root / "kpi_engine.yaml").write_text((folder / "kpi_engine.yaml").read_text().replace("data: data",
                                                                                          f"data: {folder / 'data'}"))
    (root / "specs.yaml").write_text(SPECS + "  " + kpis + "\n")
    result = CliRunner().invoke(cli, ["validate", str(root)])
    assert result.exit_code == 1
    assert message in result.output
    assert result.output.count("Error:") == 1, result.output
    assert "Traceback" not in result.output


def test_an_unknown_request_axis_is_one_clear_error(folder):
    result = CliRunner().invoke(cli, ["evaluate", str(folder), "deals_created", "--grain", "month",
                                      "--time-axis", "closed_at"])
    assert result.exit_code == 1
    assert "--time-axis closed_at: no source of this request has that time axis." in result.output
    assert "Axes of its sources: created_at, lost_at, won_at." in result.output


@pytest.mark.parametrize("source, message", [
    ("  other:\n    table: deals\n    time_axes: [won_at]\n", "declares 'time_axes' but no 'time'"),
    ("  other:\n    table: deals\n    time: won_at\n    time_axes: [won_at]\n", "'won_at' is already the time column"),
])
def test_axis_mistakes_in_sources_are_one_clear_error(tmp_path, source, message):
    (tmp_path / "kpi_engine.yaml").write_text("name: t\nwarehouse: {adapter: duckdb}\n")
    (tmp_path / "specs.yaml").write_text("sources:\n" + source + "kpis:\n  n: {formula: count(other)}\n")
    result = CliRunner().invoke(cli, ["validate", str(tmp_path), "--offline"])
    assert result.exit_code == 1
    assert message in result.output


def test_the_catalogue_and_explain_name_an_axis_as_written_and_link_to_its_source(folder, tmp_path):
    import re

    from kpi_engine.catalog import reads

    runner = CliRunner()
    explained = runner.invoke(cli, ["explain", str(folder), "win_rate"]).stdout
    assert "- source deals at won_at (deals, time won_at)" in explained
    assert "- source deals at lost_at (deals, time lost_at)" in explained
    page = tmp_path / "catalogue.html"
    assert runner.invoke(cli, ["docs", str(folder), "--format", "html", "-o", str(page)]).exit_code == 0
    html = page.read_text()
    targets = set(re.findall(r'href="#([^"]+)"', html))
    assert targets <= set(re.findall(r'id="([^"]+)"', html)), "every link has its anchor"
    assert "<code>deals at won_at</code>" in html
    with open_project(folder) as opened:
        assert reads(opened.model(), "won_amount") == {"deals": {"won_at", "amount"}}


def test_values_read_each_source_once_not_again_on_its_axes(folder, rows):
    with open_project(folder) as opened:
        got = {(r["period"], r["channel"]) for r in opened.values(["channel"], grain="month").to_dicts()}
    created = {(month(r["created_at"]), r["channel"]) for r in rows["deals"]}
    assert got == created  # not also the months deals were won or lost in
