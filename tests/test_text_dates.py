"""date(x) and timestamp(x): a warehouse that stores its times as ISO text (common in tables
loaded from files or APIs) is read by mapping the time column through them. Checked against
plain Python over the rows written here, on DuckDB (the columns declared text) and on SQLite
(which keeps every date as text), and the errors that point there."""

from __future__ import annotations

import csv
import datetime as dt
from collections import Counter

import pytest

from kpi_engine.engine import open_project
from kpi_engine.errors import ProjectInvalid
from warehouse_loading import sqlite_warehouse

SPECS = """\
sources:
  tickets:
    table: tickets
    time: opened
    dimensions: [team]
    map: {opened: "timestamp(opened_txt)", solved: "date(solved_txt)"}
kpis:
  tickets_n: {formula: count(tickets)}
  solved_in_2_days: {formula: "count(tickets where days_between(opened, solved) <= 2)"}
  days_to_solve: {formula: "avg(days_between(tickets.opened, tickets.solved))"}
  growth: {formula: tickets_n - previous(tickets_n)}
"""
# opened_txt (ISO date and time), solved_txt (ISO date, '' open), team
TICKETS = [("2025-01-03 09:00:00", "2025-01-04", "a"), ("2025-01-31 23:59:59", "2025-02-03", "a"),
           ("2025-02-01 00:00:00", "2025-02-01", "b"), ("2025-02-14 12:30:00", "", "a"),
           ("2025-03-02 08:00:00", "2025-03-20", "b"), ("2025-03-31 18:00:00", "2025-04-01", "b")]
COLUMNS = {"opened_txt": "text", "solved_txt": "text", "team": "text"}


def write(folder):
    (folder / "data").mkdir(parents=True)
    with open(folder / "data" / "tickets.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        writer.writerows(TICKETS)
    (folder / "specs.yaml").write_text(SPECS)
    (folder / "kpi_engine.yaml").write_text(
        "name: text_dates\nwarehouse: {adapter: duckdb, data: data, tables: {tickets: {types: "
        "{opened_txt: string, solved_txt: string}}}}\n")
    return folder


def reference():
    """Per month: tickets, solved within 2 calendar days, average days to solve, growth."""
    month = lambda text: dt.date.fromisoformat(text[:10]).replace(day=1)  # noqa: E731
    days = {row: (dt.date.fromisoformat(row[1]) - dt.date.fromisoformat(row[0][:10])).days
            for row in TICKETS if row[1]}
    counts = Counter(month(row[0]) for row in TICKETS)
    expected = {}
    for period in sorted(counts):
        rows = [row for row in TICKETS if month(row[0]) == period]
        solved = [days[row] for row in rows if row in days]
        previous = counts.get((period.replace(day=1) - dt.timedelta(days=1)).replace(day=1), 0)
        expected[period] = {"tickets_n": counts[period], "solved_in_2_days": sum(d <= 2 for d in solved),
                            "days_to_solve": sum(solved) / len(solved) if solved else None,
                            "growth": counts[period] - previous}
    return expected


def check(project):
    kpis = ["tickets_n", "solved_in_2_days", "days_to_solve", "growth"]
    rows = {row["period"]: row for row in project.evaluate(kpis, grain="month")}
    expected = reference()
    assert set(rows) == set(expected)
    for period, values in expected.items():
        for kpi, value in values.items():
            assert rows[period][kpi] == (pytest.approx(value) if value is not None else None), (period, kpi)


def test_text_times_mapped_through_date_and_timestamp_on_duckdb(tmp_path):
    with open_project(write(tmp_path / "p")) as project:
        assert project.model().sources["tickets"].time  # the mapped time column is the source's axis
        check(project)
        # The ticket opened at 23:59:59 on 31 January is January's; --from cuts on the converted time.
        rows = project.evaluate(["tickets_n"], grain="day", start="2025-01-31", end="2025-02-02")
        assert [(row["period"], row["tickets_n"]) for row in rows] == [(dt.date(2025, 1, 31), 1),
                                                                         (dt.date(2025, 2, 1), 1)]


def test_text_times_mapped_through_date_and_timestamp_on_sqlite(tmp_path):
    folder = write(tmp_path / "p")
    url = sqlite_warehouse(tmp_path, "text_dates", {"tickets": COLUMNS}, folder / "data")
    with open_project(folder, warehouse=url) as project:
        check(project)


def test_a_text_time_column_error_names_date_and_a_number_is_refused(tmp_path):
    folder = write(tmp_path / "p")
    (folder / "specs.yaml").write_text(SPECS.replace('    map: {opened: "timestamp(opened_txt)", solved: '
                                                     '"date(solved_txt)"}\n', "    map: {opened: opened_txt}\n"))
    with open_project(folder) as project, pytest.raises(ProjectInvalid) as raised:
        project.model()
    message = str(raised.value)
    assert "time column 'opened' is a string, not a date or timestamp" in message
    assert "'map: {opened: date(opened_txt)}' for ISO dates stored as text" in message
    (folder / "specs.yaml").write_text(SPECS + "  bad: {formula: \"count(tickets where date(1) > date(2))\"}\n")
    with open_project(folder) as project, pytest.raises(ProjectInvalid) as raised:
        project.model()
    assert "date() reads text written as an ISO date or time, but this is a number" in str(raised.value)
    assert "read with 'date(from_unixtime(ts))'" in str(raised.value)


def test_text_times_are_local_times_in_a_project_with_a_time_zone(tmp_path):
    # Text carries no zone: it is read as written, the project's local time, never shifted from
    # UTC (Tokyo is 9 hours ahead: shifted, 31 January 23:59:59 would be February's).
    folder = write(tmp_path / "p")
    config = folder / "kpi_engine.yaml"
    config.write_text(config.read_text() + "timezone: Asia/Tokyo\n")
    with open_project(folder) as project:
        check(project)
        rows = project.evaluate(["tickets_n"], grain="day", start="2025-01-31", end="2025-02-02")
        assert [(row["period"], row["tickets_n"]) for row in rows] == [(dt.date(2025, 1, 31), 1),
                                                                         (dt.date(2025, 2, 1), 1)]
