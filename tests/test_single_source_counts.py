"""A count read from one source's own grouped rows is used as it is, without COALESCE(count, 0)
(compiler.py): each row of the result is a group of that source, so its counts are numbers, 0
where a filter lets no row through; and count(source) there is at least 1, so a division by it
has no NULLIF. Checked against plain Python over the rows written here, with the cases where a
count could be missing (several sources, no keys, --fill, a time function), which keep the
COALESCE, and the divisors that can be 0 (a filtered count, an interval source), which keep the
NULLIF."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict

import pytest
import sqlglot
from sqlglot import exp

from kpi_engine.engine import open_project

SPECS = """\
sources:
  answers: {table: answers, time: answered_at, dimensions: [channel]}
  visits: {table: visits, time: day, dimensions: [channel]}
  members: {table: members, time: joined, time_end: left_on, dimensions: [channel]}
kpis:
  nps: {formula: "100 * (count(answers where score >= 9) - count(answers where score <= 6)) / count(answers)"}
  promoters: {formula: "count(answers where score >= 9)"}
  scored: {formula: "count(answers.score)"}
  scores_seen: {formula: "count_distinct(answers.score)"}
  answers_per_visit: {formula: "count(answers) / count(visits)"}
  promoter_share: {formula: "count(answers where score >= 9) / count(answers where score is not null)"}
  pro_share: {formula: "count(members where plan = 'pro') / count(members)"}
"""
ANSWERS = [  # answered_at, channel, score ('' is NULL)
    ("2025-01-03 10:00:00", "ads", "10"), ("2025-01-09 23:59:59", "ads", "3"), ("2025-01-15 08:00:00", "ads", "7"),
    ("2025-01-20 08:00:00", "mail", "8"), ("2025-01-21 09:00:00", "mail", "7"),  # no promoter, no detractor
    ("2025-02-01 00:00:00", "mail", ""), ("2025-02-11 12:00:00", "", "9"), ("2025-03-05 09:00:00", "ads", "0"),
]
VISITS = [("2025-01-02", "ads"), ("2025-01-02", "ads"), ("2025-02-14", "web")]
MEMBERS = [("2025-01-05", "2025-02-10", "ads", "pro"), ("2025-01-20", "", "ads", "free"),
           ("2025-03-02", "2025-03-20", "mail", "free")]  # joined, left_on ('' still a member), channel, plan


@pytest.fixture
def project(make_project):
    return make_project({"specs.yaml": SPECS}, {
        "answers": [dict(zip(("answered_at", "channel", "score"), row)) for row in ANSWERS],
        "visits": [dict(zip(("day", "channel"), row)) for row in VISITS],
        "members": [dict(zip(("joined", "left_on", "channel", "plan"), row)) for row in MEMBERS]})


def reference() -> dict[tuple, dict]:
    groups = defaultdict(list)
    for at, channel, score in ANSWERS:
        groups[(dt.date(int(at[:4]), int(at[5:7]), 1), channel or None)].append(int(score) if score else None)
    rows = {}
    for key, scores in groups.items():
        promoters = sum(s is not None and s >= 9 for s in scores)
        detractors = sum(s is not None and s <= 6 for s in scores)
        scored = sum(s is not None for s in scores)
        rows[key] = {"nps": 100 * (promoters - detractors) / len(scores), "promoters": promoters,
                     "promoter_share": promoters / scored if scored else None,
                     "scored": sum(s is not None for s in scores),
                     "scores_seen": len({s for s in scores if s is not None})}
    return rows


KPIS = ["nps", "promoters", "scored", "scores_seen", "promoter_share"]


def test_counts_of_one_source_need_no_coalesce(project):
    with open_project(project) as kpi_project:
        result = kpi_project.evaluate(KPIS, by=["channel"], grain="month")
        sql = kpi_project.compile(KPIS, by=["channel"], grain="month", describe=False).sql()
    assert "COALESCE" not in sql
    # nps divides by count(answers), never 0 there; promoter_share by a filtered count, which can be
    # (on DuckDB the formulas sit beside the GROUP BY: the count is written where it is divided by)
    nullifs = list(sqlglot.parse_one(sql, read="duckdb").find_all(exp.Nullif))
    assert len(nullifs) == 1
    assert nullifs[0].this.sql("duckdb") == 'COUNT(*) FILTER(WHERE NOT "answers"."score" IS NULL)'
    got = {(row["period"], row["channel"]): {k: row[k] for k in KPIS} for row in result.to_dicts()}
    want = reference()
    assert set(got) == set(want)
    for key, values in want.items():
        for kpi, value in values.items():
            assert got[key][kpi] == (None if value is None else pytest.approx(value, rel=1e-12)), (key, kpi)
    # not vacuous: a group where the filters let no row through has counts of 0, not NULL
    assert got[(dt.date(2025, 1, 1), "mail")] == {"nps": 0, "promoters": 0, "scored": 2, "scores_seen": 2,
                                                  "promoter_share": 0}
    assert got[(dt.date(2025, 2, 1), "mail")]["scored"] == 0
    assert got[(dt.date(2025, 2, 1), "mail")]["promoter_share"] is None  # 0 / 0: empty, never an error


def test_a_divisor_counting_an_interval_source_keeps_its_nullif(project):
    # an interval source's rows are spans cut into periods, not events grouped by key: its counts
    # are not taken to be at least 1
    with open_project(project) as kpi_project:
        result = kpi_project.evaluate(["pro_share"], by=["channel"], grain="month", start="2025-01-01",
                                      end="2025-04-01")
        sql = kpi_project.compile(["pro_share"], by=["channel"], grain="month", start="2025-01-01",
                                  end="2025-04-01", describe=False).sql()
    assert "NULLIF" in sql
    got = {(row["period"], row["channel"]): row["pro_share"] for row in result.to_dicts()}
    assert got[(dt.date(2025, 1, 1), "ads")] == 0.5  # both active in January, one of them pro
    assert got[(dt.date(2025, 3, 1), "ads")] == 0  # the pro member left on 2025-02-10
    assert got[(dt.date(2025, 3, 1), "mail")] == 0


@pytest.mark.parametrize("options", [
    {"kpis": ["promoters"], "by": [], "grain": None, "start": "2026-01-01", "end": "2026-02-01"},  # no keys, no rows
    {"kpis": ["promoters"], "by": ["channel"], "grain": "month", "fill": True,
     "start": "2025-01-01", "end": "2025-05-01"},  # periods without rows
    {"kpis": ["promoters", "answers_per_visit"], "by": ["channel"], "grain": "month"},  # keys of two sources
])
def test_where_a_count_may_be_missing_it_is_zero(project, options):
    kpis = options.pop("kpis")
    with open_project(project) as kpi_project:
        result = kpi_project.evaluate(kpis, **options)
        sql = kpi_project.compile(kpis, describe=False, **options).sql()
    assert "COALESCE" in sql
    if "answers_per_visit" in kpis:  # several sources: a key of visits only has no answers, nor visits of answers
        assert "NULLIF" in sql
    rows = result.to_dicts()
    assert rows
    for row in rows:
        key = (row.get("period"), row.get("channel"))
        want = reference().get(key, {}).get("promoters", 0) if options.get("grain") else 0
        if "answers_per_visit" in kpis and key not in reference():  # a key of visits only: promoters
            assert row["answers_per_visit"] == 0 and row["promoters"] is None  # is empty there, answers count 0
            continue
        assert row["promoters"] == want, row
    if options.get("fill"):  # April has no answer in any channel: 0, not NULL
        assert {row["promoters"] for row in rows if row["period"] == dt.date(2025, 4, 1)} == {0}
