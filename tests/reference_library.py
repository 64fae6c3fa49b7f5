"""Plain-Python reference values for the 39 KPIs of the marketing library.

Written from the textbook readings of docs/library.md ("What each KPI means") and the CSV files
alone, without the engine, SQL or the library's YAML: rows are read with ``reference.load()``,
counted and summed in dictionaries with exact arithmetic (``int``, ``Decimal``, ``Fraction``) and
converted to ``float`` only at the end, in :func:`compute`.

Grouping and keys
-----------------
Periods are calendar months: ``month`` is a ``datetime.date`` on the first day of the month of a
row's own time column, read as written (no time zones). With ``by_channel`` a key is
``(month, channel)``, otherwise ``(month,)`` (all rows of the month, NULL channel included).
``channel`` is the row's own ``channel`` column (``None`` when empty, a group of its own); an order
takes the channel of its customer.

Each source places rows of a table by a time column (the "Standard sources" table of the docs);
rows whose time column is empty belong to no period and are ignored. ``contacts`` are every row of
the leads table; ``leads`` only the qualified ones (``ROW_FILTERS``). A KPI has a value for every
key where at least one row of any source it reads exists (for a KPI built on others: of any source
they read); growth rates, retention and lifetime value, which look at other months, have the keys
of their sources in the month itself.

Conventions: counts and sums over no rows are 0; a ratio with a zero (or missing) denominator is
``None``; an average over no rows is ``None``. Snapshot values of a month are taken on the last
snapshot day of the month among *all* rows of that table in the month, summed per group (a group
without rows on that day has 0; a month without snapshot rows has 0).
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from decimal import Decimal
from fractions import Fraction
from typing import Callable

from reference import Data, Row, load  # noqa: F401  (load is re-exported for the tests)

Key = tuple

# source name -> (table, time column)
SOURCES = {
    "contacts": ("leads", "created_at"),
    "leads": ("leads", "created_at"),
    "mqls": ("leads", "mql_at"),
    "sqls": ("leads", "sql_at"),
    "conversions": ("leads", "customer_at"),
    "opportunities": ("opportunities", "created_at"),
    "customers": ("customers", "acquired_at"),
    "subscriptions": ("subscriptions", "snapshot_date"),
    "orders": ("orders", "ordered_at"),
    "ad_spend": ("ad_spend", "spend_date"),
    "web_sessions": ("web_sessions", "started_at"),
    "email_sends": ("email_sends", "sent_at"),
    "email_list": ("email_list", "snapshot_date"),
    "social_posts": ("social_posts", "posted_at"),
    "social_followers": ("social_followers", "snapshot_date"),
    "nps_responses": ("nps_responses", "responded_at"),
}


def _day(value: str) -> dt.date:
    """The calendar day of a date or timestamp as written (``YYYY-MM-DD...``)."""
    return dt.date.fromisoformat(value[:10])


def _true(value: str | None) -> bool:
    return value is not None and value.strip().lower() in ("true", "t", "1", "yes")


# The rows a source keeps of its table: a lead is a contact that meets the qualification
# criteria (``is_qualified``); a contact who cannot buy is not a lead.
ROW_FILTERS: dict[str, Callable[[Row], bool]] = {"leads": lambda row: _true(row["is_qualified"])}


def _previous_month(month: dt.date) -> dt.date:
    return (month - dt.timedelta(days=1)).replace(day=1)


def ratio(numerator, denominator, scale: int = 1) -> Fraction | None:
    """``scale * numerator / denominator``, exactly; ``None`` if either is ``None`` or the
    denominator is 0."""
    if numerator is None or denominator is None or denominator == 0:
        return None
    return Fraction(scale) * Fraction(numerator) / Fraction(denominator)


class Library:
    """The data with a grouping: placing rows into keys and the basic measures over them."""

    def __init__(self, data: Data, by_channel: bool, only_keys=None):
        self.data = data
        self.by_channel = by_channel
        self.only_keys = None if only_keys is None else set(only_keys)
        self.customer_channel = {row["customer_id"]: row["channel"]
                                 for row in data.get("customers", [])}

    # -- keys ---------------------------------------------------------------------------------

    def key(self, month: dt.date, channel: str | None) -> Key:
        return (month, channel) if self.by_channel else (month,)

    def channel(self, table: str, row: Row) -> str | None:
        if table == "orders":  # orders -> customers
            return self.customer_channel.get(row["customer_id"])
        return row.get("channel")

    def rows(self, source: str):
        """Yield ``(key, row)`` for every row of ``source`` with a time."""
        table, time_column = SOURCES[source]
        keep = ROW_FILTERS.get(source, lambda row: True)
        for row in self.data.get(table, []):
            if row[time_column] is None or not keep(row):
                continue
            month = _day(row[time_column]).replace(day=1)
            yield self.key(month, self.channel(table, row)), row

    def keys(self, *sources: str) -> set[Key]:
        """Keys where at least one row of one of ``sources`` exists (or the keys asked for)."""
        if self.only_keys is not None:
            return set(self.only_keys)
        return {key for source in sources for key, _ in self.rows(source)}

    @staticmethod
    def previous(key: Key) -> Key:
        """The same key one calendar month earlier."""
        return (_previous_month(key[0]),) + key[1:]

    # -- generic measures (every missing key reads 0) ------------------------------------------

    def count(self, source: str, where: Callable[[Row], bool] = lambda row: True
              ) -> defaultdict[Key, int]:
        counts: defaultdict[Key, int] = defaultdict(int)
        for key, row in self.rows(source):
            counts[key] += bool(where(row))
        return counts

    def total(self, source: str, value: Callable[[Row], Decimal],
              where: Callable[[Row], bool] = lambda row: True) -> defaultdict[Key, Decimal]:
        sums: defaultdict[Key, Decimal] = defaultdict(Decimal)
        for key, row in self.rows(source):
            if where(row):
                sums[key] += value(row)
        return sums

    def snapshot(self, source: str, value: Callable[[Row], Decimal]) -> defaultdict[Key, Decimal]:
        """Sum of ``value`` over the rows on the last snapshot day of each month (the latest
        snapshot day among all rows of the month, whatever their channel)."""
        table, time_column = SOURCES[source]
        last_day: dict[dt.date, dt.date] = {}
        for row in self.data.get(table, []):
            if row[time_column] is None:
                continue
            day = _day(row[time_column])
            month = day.replace(day=1)
            if month not in last_day or day > last_day[month]:
                last_day[month] = day
        sums: defaultdict[Key, Decimal] = defaultdict(Decimal)
        for key, row in self.rows(source):
            if _day(row[SOURCES[source][1]]) == last_day[key[0]]:
                sums[key] += value(row)
        return sums

    def cumulative(self, monthly: dict[Key, Decimal | int], key: Key) -> Decimal | int:
        """Sum of ``monthly`` over the months up to and including ``key``'s, same channel."""
        return sum((value for other, value in monthly.items()
                    if other[1:] == key[1:] and other[0] <= key[0]), 0)

    # -- helper values of the library ------------------------------------------------------------

    def new_contacts(self):
        return self.count("contacts")

    def leads(self):
        return self.count("leads")

    def ad_spend(self):
        return self.total("ad_spend", lambda row: Decimal(row["spend"]))

    def customers_won(self):
        return self.count("customers")

    def revenue(self, where: Callable[[Row], bool] = lambda row: True):
        return self.total("orders", lambda row: Decimal(row["amount"]),
                          lambda row: row["status"] == "paid" and where(row))

    def website_sessions(self):
        return self.count("web_sessions")

    def emails_sent(self):
        return self.count("email_sends")

    def email_list_size(self):
        return self.snapshot("email_list", lambda row: Decimal(row["subscribers"]))

    def unsubscribes(self):
        return self.total("email_list", lambda row: Decimal(row["unsubscribes"]))

    def followers(self):
        return self.snapshot("social_followers", lambda row: Decimal(row["followers"]))

    def active_subscriptions(self):
        return self.snapshot("subscriptions", lambda row: Decimal(1))

    def mrr(self):
        return self.snapshot("subscriptions", lambda row: Decimal(row["mrr"]))


# --- the 39 KPIs: each returns {key: exact value or None} over its key set -----------------------

def new_contacts(lib: Library):
    """#1 New contacts: contacts created in P, leads or not."""
    counts = lib.new_contacts()
    return {key: counts[key] for key in lib.keys("contacts")}


def qualified_leads(lib: Library):
    """#2 Leads: contacts created in P with ``is_qualified``."""
    counts = lib.leads()
    return {key: counts[key] for key in lib.keys("leads")}


def mql_count(lib: Library):
    """#3 MQLs: leads whose ``mql_at`` is in P."""
    counts = lib.count("mqls")
    return {key: counts[key] for key in lib.keys("mqls")}


def sql_count(lib: Library):
    """#4 SQLs: leads whose ``sql_at`` is in P."""
    counts = lib.count("sqls")
    return {key: counts[key] for key in lib.keys("sqls")}


def cost_per_lead(lib: Library):
    """#5 CPL = ad spend in P / leads in P (a free channel with leads: 0)."""
    spend, leads = lib.ad_spend(), lib.leads()
    return {key: ratio(spend[key], leads[key]) for key in lib.keys("ad_spend", "leads")}


def close_rate(lib: Library):
    """#6 Close rate = 100 x leads created in P that became customers (at any time so far)
    / leads created in P."""
    won = lib.count("leads", lambda row: row["customer_at"] is not None)
    leads = lib.leads()
    return {key: ratio(won[key], leads[key], 100) for key in lib.keys("leads")}


def lead_to_customer_rate(lib: Library):
    """#7 Lead-to-customer rate = 100 x customers won in P (customers.acquired_at in P)
    / leads created in P."""
    won, leads = lib.customers_won(), lib.leads()
    return {key: ratio(won[key], leads[key], 100) for key in lib.keys("customers", "leads")}


def lead_to_opportunity_rate(lib: Library):
    """#8 Lead-to-opportunity rate = 100 x leads created in P with at least one opportunity
    (any time) / leads created in P.

    The opportunities are only a lookup of lead ids over all time, not placed in periods: the
    keys are those of the leads.
    """
    with_opportunity = {row["lead_id"] for row in lib.data.get("opportunities", [])}
    hits = lib.count("leads", lambda row: row["lead_id"] in with_opportunity)
    leads = lib.leads()
    return {key: ratio(hits[key], leads[key], 100) for key in lib.keys("leads")}


def time_to_conversion_days(lib: Library):
    """#9 Time to conversion = average whole days from created_at to customer_at, over the
    contacts whose customer_at is in P."""
    days: defaultdict[Key, list[int]] = defaultdict(list)
    for key, row in lib.rows("conversions"):
        days[key].append((_day(row["customer_at"]) - _day(row["created_at"])).days)
    return {key: ratio(sum(days[key]), len(days[key])) for key in lib.keys("conversions")}


def traffic_to_lead_rate(lib: Library):
    """#10 Traffic-to-lead rate = 100 x leads / website_sessions."""
    leads, sessions = lib.leads(), lib.website_sessions()
    return {key: ratio(leads[key], sessions[key], 100) for key in lib.keys("leads", "web_sessions")}


def leads_per_customer(lib: Library):
    """#11 Leads per customer = leads / customers won in P."""
    leads, won = lib.leads(), lib.customers_won()
    return {key: ratio(leads[key], won[key]) for key in lib.keys("leads", "customers")}


def customer_acquisition_cost(lib: Library):
    """#12 CAC = ad spend in P / customers won in P."""
    spend, won = lib.ad_spend(), lib.customers_won()
    return {key: ratio(spend[key], won[key]) for key in lib.keys("ad_spend", "customers")}


def cost_per_sale(lib: Library):
    """#13 Cost per sale = cost_per_lead x leads_per_customer (spend per customer won).

    Null when either factor is null (no leads, or no customers won).
    """
    spend, leads, won = lib.ad_spend(), lib.leads(), lib.customers_won()
    result = {}
    for key in lib.keys("ad_spend", "leads", "customers"):
        cpl, lpc = ratio(spend[key], leads[key]), ratio(leads[key], won[key])
        result[key] = None if cpl is None or lpc is None else cpl * lpc
    return result


def _lifetime_value(lib: Library, revenue, won, key: Key):
    return ratio(lib.cumulative(revenue, key), lib.cumulative(won, key))


def customer_lifetime_value(lib: Library):
    """#14 Historical LTV = paid revenue from the start of data to the end of P / customers won
    from the start of data to the end of P."""
    revenue, won = lib.revenue(), lib.customers_won()
    return {key: _lifetime_value(lib, revenue, won, key) for key in lib.keys("orders", "customers")}


def ltv_to_cac(lib: Library):
    """#15 LTV:CAC = customer_lifetime_value / customer_acquisition_cost (target: at least 3)."""
    revenue, won, spend = lib.revenue(), lib.customers_won(), lib.ad_spend()
    result = {}
    for key in lib.keys("orders", "customers", "ad_spend"):
        ltv, cac = _lifetime_value(lib, revenue, won, key), ratio(spend[key], won[key])
        result[key] = ratio(ltv, cac)
    return result


def mrr(lib: Library):
    """#16 MRR = sum of subscriptions.mrr on the last snapshot day of P."""
    values = lib.mrr()
    return {key: values[key] for key in lib.keys("subscriptions")}


def arr(lib: Library):
    """#17 ARR = 12 x mrr."""
    values = lib.mrr()
    return {key: 12 * values[key] for key in lib.keys("subscriptions")}


def nps(lib: Library):
    """#18 NPS = 100 x (answers scoring 9-10 - answers scoring 0-6) / answers in P."""
    promoters = lib.count("nps_responses", lambda row: int(row["score"]) >= 9)
    detractors = lib.count("nps_responses", lambda row: int(row["score"]) <= 6)
    answers = lib.count("nps_responses")
    return {key: ratio(promoters[key] - detractors[key], answers[key], 100)
            for key in lib.keys("nps_responses")}


def roi(lib: Library):
    """#19 ROI = 100 x (revenue - ad spend) / ad spend."""
    revenue, spend = lib.revenue(), lib.ad_spend()
    return {key: ratio(revenue[key] - spend[key], spend[key], 100)
            for key in lib.keys("orders", "ad_spend")}


def revenue(lib: Library):
    """#20 Revenue = sum of orders.amount with status 'paid', ordered in P."""
    values = lib.revenue()
    return {key: values[key] for key in lib.keys("orders")}


def revenue_growth_rate(lib: Library):
    """#20 Revenue growth = 100 x (revenue in P - revenue in the previous period)
    / revenue in the previous period."""
    values = lib.revenue()
    return {key: ratio(values[key] - values[lib.previous(key)], values[lib.previous(key)], 100)
            for key in lib.keys("orders")}


def email_list_size(lib: Library):
    """#21 Email list size = email_list.subscribers on the last snapshot day of P."""
    values = lib.email_list_size()
    return {key: values[key] for key in lib.keys("email_list")}


def email_open_rate(lib: Library):
    """#22 Open rate = 100 x emails opened / emails sent in P."""
    opened, sent = lib.count("email_sends", lambda row: _true(row["opened"])), lib.emails_sent()
    return {key: ratio(opened[key], sent[key], 100) for key in lib.keys("email_sends")}


def email_click_through_rate(lib: Library):
    """#23 CTR = 100 x emails clicked / emails sent in P."""
    clicked, sent = lib.count("email_sends", lambda row: _true(row["clicked"])), lib.emails_sent()
    return {key: ratio(clicked[key], sent[key], 100) for key in lib.keys("email_sends")}


def inbox_placement_rate(lib: Library):
    """#24 Inbox placement rate = 100 x emails that reached the inbox / emails sent in P."""
    inbox, sent = lib.count("email_sends", lambda row: _true(row["inbox"])), lib.emails_sent()
    return {key: ratio(inbox[key], sent[key], 100) for key in lib.keys("email_sends")}


def unsubscribe_rate(lib: Library):
    """#25 Unsubscribe rate = 100 x unsubscribes in P (email_list.unsubscribes summed over the
    days of P) / email_list_size."""
    unsubscribes, size = lib.unsubscribes(), lib.email_list_size()
    return {key: ratio(unsubscribes[key], size[key], 100) for key in lib.keys("email_list")}


def list_growth_rate(lib: Library):
    """#26 List growth rate = 100 x (new subscribers in P - unsubscribes in P)
    / email_list_size."""
    new = lib.total("email_list", lambda row: Decimal(row["new_subscribers"]))
    unsubscribes, size = lib.unsubscribes(), lib.email_list_size()
    return {key: ratio(new[key] - unsubscribes[key], size[key], 100)
            for key in lib.keys("email_list")}


def list_churn_rate(lib: Library):
    """#27 List churn rate = 100 x (unsubscribes in P + emails bounced in P) / email_list_size."""
    unsubscribes, size = lib.unsubscribes(), lib.email_list_size()
    bounced = lib.count("email_sends", lambda row: _true(row["bounced"]))
    return {key: ratio(unsubscribes[key] + bounced[key], size[key], 100)
            for key in lib.keys("email_list", "email_sends")}


def website_sessions(lib: Library):
    """#28 Website sessions: sessions started in P."""
    counts = lib.website_sessions()
    return {key: counts[key] for key in lib.keys("web_sessions")}


def organic_sessions(lib: Library):
    """#29 Organic sessions: sessions started in P with channel 'organic'."""
    counts = lib.count("web_sessions", lambda row: row["channel"] == "organic")
    return {key: counts[key] for key in lib.keys("web_sessions")}


def bounce_rate(lib: Library):
    """#30 Bounce rate = 100 x single-page sessions / sessions."""
    single = lib.count("web_sessions", lambda row: int(row["pages_viewed"]) == 1)
    sessions = lib.website_sessions()
    return {key: ratio(single[key], sessions[key], 100) for key in lib.keys("web_sessions")}


def avg_session_duration(lib: Library):
    """#31 Average session duration = average duration_seconds of sessions started in P."""
    seconds = lib.total("web_sessions", lambda row: Decimal(row["duration_seconds"]))
    sessions = lib.website_sessions()
    return {key: ratio(seconds[key], sessions[key]) for key in lib.keys("web_sessions")}


def social_shares(lib: Library):
    """#32 Social shares = sum of shares of posts published in P."""
    values = lib.total("social_posts", lambda row: Decimal(row["shares"]))
    return {key: values[key] for key in lib.keys("social_posts")}


ENGAGEMENT_COLUMNS = ("likes", "comments", "shares", "saves", "clicks")


def social_engagement(lib: Library):
    """#33 Social engagement = sum of likes + comments + shares + saves + clicks of posts
    published in P."""
    values = lib.total("social_posts",
                       lambda row: sum(Decimal(row[column]) for column in ENGAGEMENT_COLUMNS))
    return {key: values[key] for key in lib.keys("social_posts")}


def follower_growth_rate(lib: Library):
    """#34 Follower growth = 100 x (followers on the last snapshot of P - followers on the last
    snapshot of the previous period) / the latter."""
    values = lib.followers()
    return {key: ratio(values[key] - values[lib.previous(key)], values[lib.previous(key)], 100)
            for key in lib.keys("social_followers")}


def customer_retention_rate(lib: Library):
    """#35 CRR = 100 x (active subscriptions on the last snapshot of P - customers won in P)
    / active subscriptions on the last snapshot of the previous period."""
    active, won = lib.active_subscriptions(), lib.customers_won()
    return {key: ratio(active[key] - won[key], active[lib.previous(key)], 100)
            for key in lib.keys("subscriptions", "customers")}


def repeat_customer_revenue(lib: Library):
    """#36 Repeat customer revenue = paid revenue in P from customers who have more than one
    paid order (ever)."""
    paid_orders: defaultdict[str, int] = defaultdict(int)
    for row in lib.data.get("orders", []):
        paid_orders[row["customer_id"]] += row["status"] == "paid"
    values = lib.revenue(lambda row: paid_orders[row["customer_id"]] > 1)
    return {key: values[key] for key in lib.keys("orders")}


def lead_value(lib: Library):
    """#37 Lead value = revenue / leads."""
    values, leads = lib.revenue(), lib.leads()
    return {key: ratio(values[key], leads[key]) for key in lib.keys("orders", "leads")}


def _timestamp(value: str) -> dt.datetime:
    """A date or timestamp as written (a date is its midnight)."""
    return dt.datetime.fromisoformat(value)


def lead_to_customer_rate_90d(lib: Library):
    """#7, cohort within a window = 100 x leads created in P that became customers at most 90 days
    (90 x 24 hours, both ends included) after their creation / leads created in P."""
    window = dt.timedelta(days=90)

    def won_in_time(row: Row) -> bool:
        if row["customer_at"] is None:
            return False
        created, won = _timestamp(row["created_at"]), _timestamp(row["customer_at"])
        return created <= won <= created + window

    won, leads = lib.count("leads", won_in_time), lib.leads()
    return {key: ratio(won[key], leads[key], 100) for key in lib.keys("leads")}


KPIS: dict[str, Callable[[Library], dict]] = {function.__name__: function for function in (
    new_contacts, qualified_leads, mql_count, sql_count, cost_per_lead, close_rate,
    lead_to_customer_rate, lead_to_opportunity_rate, time_to_conversion_days,
    traffic_to_lead_rate, leads_per_customer, customer_acquisition_cost, cost_per_sale,
    customer_lifetime_value, ltv_to_cac, mrr, arr, nps, roi, revenue, revenue_growth_rate,
    email_list_size, email_open_rate, email_click_through_rate, inbox_placement_rate,
    unsubscribe_rate, list_growth_rate, list_churn_rate, website_sessions, organic_sessions,
    bounce_rate, avg_session_duration, social_shares, social_engagement, follower_growth_rate,
    customer_retention_rate, repeat_customer_revenue, lead_value, lead_to_customer_rate_90d,
)}


def compute(data: Data, kpi_name: str, by_channel: bool, keys=None) -> dict[Key, float | None]:
    """The values of one KPI by month (and channel): ``{(month[, channel]): float | None}``.

    On the KPI's own keys, or on ``keys`` when given (the reading evaluated on keys where the
    KPI's sources may have no rows, as when it is evaluated together with other KPIs).
    """
    values = KPIS[kpi_name](Library(data, by_channel, keys))
    return {key: None if value is None else float(value) for key, value in values.items()}
