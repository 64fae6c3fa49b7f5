"""Queries of dimensions only (issue 15, item 8): `kpi-engine values PROJECT DIM...` and
``KpiProject.values``: the values a dimension takes where sources have rows, optionally per period
and filtered; checked against the example's CSV files read in plain Python."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from click.testing import CliRunner

import reference
from kpi_engine.cli import cli
from kpi_engine.engine import open_project

EXAMPLE = reference.DEFAULT_DATA_DIR.parent


@pytest.fixture(scope="module")
def data():
    return reference.load()


@pytest.fixture(scope="module")
def project():
    with open_project(EXAMPLE) as opened:
        yield opened


def _day(text: str) -> dt.date:
    return dt.date.fromisoformat(text[:10])


def test_channels_that_had_a_qualified_lead_each_month(project, data):
    start, end = dt.date(2024, 3, 10), dt.date(2024, 7, 1)
    # SQL's channel != 'email' drops the rows without a channel too.
    expected = {(_day(r["created_at"]).replace(day=1), r["channel"]) for r in data["leads"]
                if r["is_qualified"] == "true" and start <= _day(r["created_at"]) < end
                and r["channel"] and r["channel"] != "email"}
    result = project.values(["channel"], sources=["leads"], grain="month", start=start, end=end,
                            where="channel != 'email'")
    got = [(row["period"], row["channel"]) for row in result.to_dicts()]
    assert len(got) == len(set(got)), "one row per key"
    assert set(got) == expected
    assert result.names == ["period", "channel"]


def test_without_sources_the_values_of_every_source_that_has_the_dimension(project):
    everywhere = {row["channel"] for row in project.values("channel").to_dicts()}
    model = project.model()
    having = [name for name in model.sources if "channel" in {d.name for d in model.sources[name].dimensions}]
    assert len(having) >= 5
    union = set()
    for name in having:
        union |= {row["channel"] for row in project.values("channel", sources=name).to_dicts()}
    assert everywhere == union


def test_a_date_part_and_a_dimension_of_a_related_source(project, data):
    plans = {r["customer_id"]: r["plan"] or None for r in data["customers"]}
    expected = {(_day(r["ordered_at"]).isoweekday(), plans.get(r["customer_id"])) for r in data["orders"]
                if r["ordered_at"]}
    got = {(row["day_of_week"], row["plan"]) for row in project.values(["day_of_week", "plan"], sources="orders")}
    assert got == expected


def test_the_cli_prints_the_values_as_json():
    result = CliRunner().invoke(cli, ["values", str(EXAMPLE), "channel", "--source", "ad_spend", "--format", "json",
                                      "--from", "2024-01-01", "--to", "2024-02-01"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    data = reference.load()
    assert {row["channel"] for row in rows} == {r["channel"] for r in data["ad_spend"]
                                                  if "2024-01-01" <= r["spend_date"][:10] < "2024-02-01"}


@pytest.mark.parametrize("args, message", [
    (["chanel"], "unknown dimension 'chanel'. Did you mean 'channel'?"),
    (["channel", "--source", "leeds"], "unknown source 'leeds'."),
    ([], "name at least one dimension"),
    (["industry", "--source", "ad_spend"], "cannot slice by 'industry'"),
])
def test_bad_requests_are_one_clear_error(args, message):
    result = CliRunner().invoke(cli, ["values", str(EXAMPLE), *args])
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output
