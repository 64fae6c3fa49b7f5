"""The library's 90-day cohort variant (issue 16) and the two recipes of docs/library.md (the
median time to conversion, 30-day active email contacts: not shipped, added by a team to its own
project) at their edges, on rows written here, each value worked out by hand: a lead won exactly 90
days after its creation and one won on day 91, medians of odd and even counts, a contact opening
twice in a window, months without opens. (The cohort rate over the whole example warehouse is
compared with tests/reference_library.py in tests/test_library_golden.py.)"""

import datetime as dt
import json
import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from kpi_engine.cli import cli
from kpi_engine.engine import open_project

CONFIG = "name: team\nwarehouse: {adapter: duckdb, data: data}\ninclude: [builtin:marketing]\n"
LIBRARY_MD = Path(__file__).resolve().parent.parent / "docs" / "library.md"


def recipes() -> str:
    """The recipes' YAML block of docs/library.md, as a team would paste it into its project."""
    section = LIBRARY_MD.read_text().split("### Recipes:", 1)[1]
    (block,) = [b for b in re.findall(r"```yaml\n(.*?)```", section, re.S) if "median_time_to_conversion:" in b]
    return block


JAN, FEB, MAR, APR = (dt.date(2025, month, 1) for month in (1, 2, 3, 4))


def contact(lead_id, created, customer_at="", qualified=True, channel="ppc"):
    return {"lead_id": lead_id, "created_at": created, "channel": channel, "campaign": "c", "industry": "retail",
            "company_size": "1-10", "is_qualified": "true" if qualified else "false", "mql_at": created, "sql_at": created,
            "opportunity_at": "", "customer_at": customer_at, "customer_id": lead_id if customer_at else ""}


def send(send_id, sent_at, contact_id, opened=False, clicked=False):
    return {"send_id": send_id, "sent_at": sent_at, "campaign": "em_nurture", "contact_id": contact_id,
            "delivered": "true", "inbox": "true", "opened": str(opened).lower(), "clicked": str(clicked).lower(),
            "unsubscribed": "false", "bounced": "false", "channel": "email"}


def by_period(make_project, tables, kpis, **options):
    root = make_project({"recipes.yaml": recipes()}, tables, config=CONFIG)
    with open_project(root) as project:
        rows = project.evaluate(kpis, **options).to_dicts()
    return {row["period"]: {name: value for name, value in row.items() if name != "complete"} for row in rows}


# --------------------------------------------------------------------------- lead_to_customer_rate_90d

CREATED = "2025-01-10 10:00:00"
WINDOW_LEADS = [
    contact(1, CREATED, "2025-04-10 10:00:00"),    # exactly 90 x 24 hours later: counts
    contact(2, CREATED, "2025-04-10 10:00:01"),    # one second later: does not
    contact(3, CREATED, "2025-04-11 09:00:00"),    # on day 91: does not
    contact(4, CREATED, CREATED),                  # at the instant of creation: counts (0 days)
    contact(5, CREATED),                           # never won
    contact(6, CREATED, "2025-01-05 10:00:00"),    # "won" before it was created: a data error, not counted
    contact(7, CREATED, "2025-01-11 10:00:00", qualified=False),  # a contact, not a lead: in neither count
    contact(8, "2025-02-03 08:00:00", "2025-03-01 08:00:00"),     # February's only lead, won in 26 days
]


def test_a_lead_won_on_day_90_counts_and_one_won_on_day_91_does_not(make_project):
    rows = by_period(make_project, {"leads": WINDOW_LEADS}, ["lead_to_customer_rate_90d", "close_rate"],
                     grain="month")
    # January's leads are 1-6 (7 is not qualified); 1 and 4 are won within 90 days.
    assert rows[JAN]["lead_to_customer_rate_90d"] == pytest.approx(100 * 2 / 6)
    # close_rate counts every lead with a customer_at, whenever: 1, 2, 3, 4 and 6.
    assert rows[JAN]["close_rate"] == pytest.approx(100 * 5 / 6)
    assert rows[FEB]["lead_to_customer_rate_90d"] == 100
    assert set(rows) == {JAN, FEB}  # placed by the lead's creation, not by the month it was won


def test_the_90_day_rate_is_by_the_leads_channel_and_null_without_leads(make_project):
    leads = [contact(1, CREATED, "2025-02-01 00:00:00", channel="ppc"),
             contact(2, CREATED, channel="organic"), contact(3, CREATED, channel="organic"),
             contact(4, CREATED, "2025-01-12 10:00:00", qualified=False, channel="email")]
    root = make_project({}, {"leads": leads}, config=CONFIG)
    with open_project(root) as project:
        rows = project.evaluate(["lead_to_customer_rate_90d"], by=["channel"], grain="month").to_dicts()
    # email has a contact but no lead: no row (as every lead-based KPI), never a rate of 0
    assert {row["channel"]: row["lead_to_customer_rate_90d"] for row in rows} == {"ppc": 100, "organic": 0}


def test_the_90_day_rate_matures_90_days_after_the_period(make_project):
    root = make_project({}, {"leads": WINDOW_LEADS}, config=CONFIG)
    with open_project(root) as project:
        assert project.project.kpis["lead_to_customer_rate_90d"].matures_after_days == 90


# --------------------------------------------------------------------------- the recipes


def test_the_recipes_are_not_in_the_shipped_library(make_project):
    """Without the recipe file the KPIs are unknown: the library evaluates whole on SQLite and
    MySQL (no median) and needs no recipient column on the sends (an adopted warehouse without one
    validates: tests/test_adoption.py, warehouse_db)."""
    root = make_project({}, {"leads": WINDOW_LEADS}, config=CONFIG)
    with open_project(root) as project:
        names, sources = set(project.project.kpis), set(project.project.sources)
    assert "lead_to_customer_rate_90d" in names and {"won_contacts", "lead_conversions_90d"} <= sources
    assert not names & {"median_time_to_conversion", "active_contacts_30d"}
    assert "email_sends_by_contact" not in sources


def test_the_recipes_on_the_example_project_and_all_without_a_grain(tmp_path):
    """Pasted into the example project (whose sends have a contact_id), the recipes validate, and
    evaluate --all without a grain leaves out the rolling one and says so, as the docs say."""
    root = tmp_path / "marketing"
    shutil.copytree(Path(__file__).resolve().parent.parent / "examples" / "marketing", root)
    (root / "recipes.yaml").write_text(recipes())
    assert CliRunner().invoke(cli, ["validate", str(root)]).exit_code == 0
    result = CliRunner().invoke(cli, ["evaluate", str(root), "--all", "--format", "json"])
    assert result.exit_code == 0, result.output
    assert "active_contacts_30d (needs --grain)" in result.stderr
    (row,) = json.loads(result.stdout)
    assert "median_time_to_conversion" in row and "active_contacts_30d" not in row


# --------------------------------------------------------------------------- median_time_to_conversion (recipe)

MEDIAN_CONTACTS = [
    # won in February after 3, 10, 40 and 41 whole days: the median is (10 + 40) / 2 = 25
    contact(1, "2025-01-29 10:00:00", "2025-02-01 09:00:00"),
    contact(2, "2025-01-22 10:00:00", "2025-02-01 09:00:00"),
    contact(3, "2024-12-23 10:00:00", "2025-02-01 09:00:00"),
    contact(4, "2024-12-22 23:59:00", "2025-02-01 00:01:00", qualified=False),  # a contact who bought counts
    # won in March after 5, 1 and 100 days: the median is 5, the average 35.33
    contact(5, "2025-02-24 12:00:00", "2025-03-01 12:00:00"),
    contact(6, "2025-03-01 23:00:00", "2025-03-02 01:00:00"),  # two hours, across midnight: 1 whole day
    contact(7, "2024-11-20 12:00:00", "2025-02-28 12:00:00"),  # 100 days, won in February
    contact(8, "2024-12-10 08:00:00", "2025-03-20 08:00:00"),  # 100 days, won in March
    # April: created, never won; no median there
    contact(9, "2025-04-02 08:00:00"),
]


def test_median_time_to_conversion_by_the_month_the_customer_was_won(make_project):
    rows = by_period(make_project, {"leads": MEDIAN_CONTACTS},
                     ["median_time_to_conversion", "time_to_conversion_days"], grain="month")
    # February: 3, 10, 40, 41 and 100 days: the middle one of five
    assert rows[FEB]["median_time_to_conversion"] == 40
    assert rows[FEB]["time_to_conversion_days"] == pytest.approx((3 + 10 + 40 + 41 + 100) / 5)
    # March: 5, 1 and 100 days
    assert rows[MAR]["median_time_to_conversion"] == 5
    assert rows[MAR]["time_to_conversion_days"] == pytest.approx(106 / 3)
    assert APR not in rows and JAN not in rows  # no contact became a customer there


def test_the_median_of_an_even_count_is_the_mean_of_the_middle_two(make_project):
    rows = by_period(make_project, {"leads": MEDIAN_CONTACTS[:4]}, ["median_time_to_conversion"], grain="month")
    assert rows == {FEB: {"period": FEB, "median_time_to_conversion": 25.0}}


# --------------------------------------------------------------------------- active_contacts_30d (recipe)

SENDS = [
    send(1, "2025-01-01 08:00:00", 4, opened=True),     # before January's window (January 2 to 31)
    send(2, "2025-01-05 08:00:00", 1, opened=True),
    send(3, "2025-01-20 08:00:00", 1, opened=True),     # contact 1 again: still one contact
    send(4, "2025-01-25 08:00:00", 2),                  # sent, never opened: not active
    send(5, "2025-01-28 08:00:00", 3, clicked=True),    # a click without a recorded open: active
    send(6, "2025-01-31 23:30:00", 6, opened=True),     # in the windows of January and February
    send(7, "2025-02-10 08:00:00", 5),                  # February's only send: no open
    send(8, "2025-04-15 08:00:00", 7, opened=True),
]


def test_active_contacts_count_each_contact_once_per_window(make_project):
    rows = by_period(make_project, {"email_sends": SENDS}, ["active_contacts_30d", "emails_sent"], grain="month")
    assert rows[JAN]["active_contacts_30d"] == 3               # contacts 1, 3 and 6
    # February has no open; its window (January 30 to February 28) still holds contact 6
    assert rows[FEB]["active_contacts_30d"] == 1
    assert rows[APR]["active_contacts_30d"] == 1
    assert MAR not in rows                                     # no send at all in March: no row


def test_a_month_without_sends_is_zero_when_filled(make_project):
    rows = by_period(make_project, {"email_sends": SENDS}, ["active_contacts_30d"], grain="month",
                     start="2025-01-01", end="2025-05-01", fill=True)
    assert {period: row["active_contacts_30d"] for period, row in rows.items()} == {JAN: 3, FEB: 1, MAR: 0, APR: 1}


def test_the_window_reaches_before_the_requested_range(make_project):
    rows = by_period(make_project, {"email_sends": SENDS}, ["active_contacts_30d"], grain="month",
                     start="2025-02-01", end="2025-03-01")
    assert rows == {FEB: {"period": FEB, "active_contacts_30d": 1}}  # contact 6, active on January 31


def test_active_contacts_by_day_are_the_30_days_ending_that_day(make_project):
    rows = by_period(make_project, {"email_sends": SENDS}, ["active_contacts_30d"], grain="day",
                     start="2025-01-30", end="2025-02-11", fill=True)  # filled: January 30 has no send
    jan_30, jan_31, feb_10 = dt.date(2025, 1, 30), dt.date(2025, 1, 31), dt.date(2025, 2, 10)
    assert rows[jan_30]["active_contacts_30d"] == 3    # contacts 4 (January 1), 1 and 3
    assert rows[jan_31]["active_contacts_30d"] == 3    # contact 4 left the window, contact 6 came in
    assert rows[feb_10]["active_contacts_30d"] == 3    # January 12 to February 10: 1, 3 and 6
