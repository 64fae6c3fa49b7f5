"""Edits of the engine's SQL that measure what a change to the compiler would buy.

Each variant rewrites the SQL the engine generated for one query of the side-by-side suite into
the shape a proposed compiler change would produce; `python benchmarks/sidebyside.py --variants`
checks that its results equal the engine's and times it beside the engine's and the hand-written
query. The edits are exact text replacements: once the compiler generates another shape, a
variant reports that it no longer applies (which is what a fix should make it do).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable


class NotApplicable(Exception):
    pass


def _replace(sql: str, old: str, new: str) -> str:
    if old not in sql:
        raise NotApplicable(f"no {old[:70]!r}...")
    return sql.replace(old, new)


@dataclass(frozen=True)
class Variant:
    name: str
    query: str
    change: str                    # the compiler change it stands for
    edit: Callable[[str], str]     # engine SQL -> the SQL that change would produce


# --- engaged_30d: rolling(count_distinct(email_sends.contact_id where opened), '30 days') by month

def _no_period_distinct(sql: str) -> str:
    # The period's own COUNT(DISTINCT) is computed in email_sends_agg but never read: the output
    # reads the window CTE, and the range CTE is needed only for its `present` marker.
    return _replace(sql, 'COUNT(DISTINCT "email_sends"."contact_id") FILTER(WHERE "email_sends"."opened") AS '
                         '"count_distinct_contact_id_where_opened", ',
                    'NULL AS "count_distinct_contact_id_where_opened", ')


def _filter_in_where(sql: str) -> str:
    # The distinct values per day keep every row (a non-opened row groups as NULL): with one
    # filtered distinct count the filter can be a WHERE of the day read.
    sql = _no_period_distinct(sql)
    head = ('FROM "email_sends" AS "email_sends" WHERE "email_sends"."sent_at" IS NOT NULL AND '
            '"email_sends"."sent_at" >= ')
    return _replace(sql, head, head.replace("IS NOT NULL AND", 'IS NOT NULL AND "email_sends"."opened" AND'))


def _day_cast(sql: str) -> str:
    # The day of a TIMESTAMP as CAST(x AS DATE), as the day totals of other reads already do,
    # not CAST(DATE_TRUNC('DAY', CAST(x AS TIMESTAMP)) AS DATE).
    return _replace(_filter_in_where(sql), '''CAST(DATE_TRUNC('DAY', CAST("email_sends"."sent_at" AS TIMESTAMP)) AS DATE)''',
                    'CAST("email_sends"."sent_at" AS DATE)')


def _days_equi_join(sql: str) -> str:
    # Each period's window listed as its days, (period, day), and joined to the day rows on the
    # day (a hash join) instead of BETWEEN first_day AND last_day (a nested-loop range join).
    sql = _day_cast(sql)
    found = re.search(r'FROM \(VALUES .*?\) AS "windows"\("period", "first_day", "last_day"\) INNER JOIN '
                      r'"email_sends_agg_window_1_days" ON "email_sends_agg_window_1_days"."period" BETWEEN '
                      r'"windows"."first_day" AND "windows"."last_day"', sql)
    if found is None:
        raise NotApplicable("no VALUES list of windows joined with BETWEEN")
    values = found.group(0)[:found.group(0).index(" INNER JOIN")]
    return sql.replace(found.group(0),
                       'FROM (SELECT "period", CAST(unnest(generate_series("first_day", "last_day", INTERVAL 1 DAY)) '
                       f'AS DATE) AS "day" {values}) AS "windows" INNER JOIN "email_sends_agg_window_1_days" '
                       'ON "email_sends_agg_window_1_days"."period" = "windows"."day"')


# --- conversion_30d: count(lead_opportunities) / count(leads), per: lead_id (the leads' primary key)

_TOUCH = ('ROW_NUMBER() OVER (PARTITION BY "lead_opportunities__conversions"."__kpi_conversion" ORDER BY '
          '"lead_opportunities__from"."created_at" DESC, "lead_opportunities__from"."lead_id") AS "__kpi_touch"')
_NUMBERED = ('ROW_NUMBER() OVER (ORDER BY "lead_opportunities__to"."lead_id", "lead_opportunities__to"."created_at") '
             'AS "__kpi_conversion"')


def _no_attribution(sql: str) -> str:
    # per is the base source's whole primary key: a conversion joins at most one base event, so
    # every pair is its own touch (no numbering of the conversions, no ROW_NUMBER per conversion).
    return _replace(_replace(sql, _TOUCH, '1 AS "__kpi_touch"'), _NUMBERED, '1 AS "__kpi_conversion"')


def _grouped_then_stacked(sql: str) -> str:
    # ...and the conversion source's day totals as the pairs counted per (day, channel) stacked
    # with the base events' (day, channel) keys (count 0), instead of stacking 0.5M base rows
    # under the pairs and grouping the lot.
    _no_attribution(sql)  # applies only where the attribution step does
    start = sql.index('"lead_opportunities_agg_days" AS (')
    end = sql.index(', "lead_opportunities_agg" AS')
    leads = 'SELECT * FROM "leads" AS "f" WHERE "f"."is_qualified"'
    days = ('"lead_opportunities_agg_days" AS (SELECT "period", "channel", SUM("count") AS "count" FROM ('
            'SELECT CAST("f"."created_at" AS DATE) AS "period", "f"."channel" AS "channel", COUNT(*) AS "count" '
            f'FROM ({leads}) AS "f" INNER JOIN (SELECT "lead_id" AS "e", "created_at" AS "t" FROM "opportunities" '
            'WHERE "created_at" IS NOT NULL AND "lead_id" IS NOT NULL) AS "c" ON "f"."lead_id" = "c"."e" '
            'AND "f"."created_at" <= "c"."t" AND "c"."t" <= "f"."created_at" + INTERVAL \'30\' DAY '
            'WHERE "f"."created_at" IS NOT NULL GROUP BY ALL '
            f'UNION ALL SELECT CAST("f"."created_at" AS DATE), "f"."channel", 0 FROM ({leads}) AS "f" '
            'WHERE "f"."created_at" IS NOT NULL GROUP BY ALL) GROUP BY ALL)')
    return sql[:start] + days + sql[end:]


_EVENTS = ('UNION ALL SELECT "lead_opportunities__from".*, NULL AS "converted_at", NULL AS "seconds_to_convert", '
           'NULL AS "days_to_convert", 0 AS "__kpi_touch" FROM (SELECT * FROM "leads" AS "lead_opportunities__from" '
           'WHERE "lead_opportunities__from"."is_qualified") AS "lead_opportunities__from"')


def _pairs_only(sql: str) -> str:
    # ...and no base events stacked under the pairs at all: the request counts the same leads
    # (count(leads) with the same where), whose CTE puts their (month, channel) in the keys, so
    # the conversion source holds only the pairs (two scans of leads, as the hand-written query).
    return _replace(_no_attribution(sql), _EVENTS, "")


# --- quarter_by_group: the channel table joined on day totals instead of raw rows

def _channels_on_day_totals(sql: str) -> str:
    for source, alias, key, time in (("leads", "leads__channels", '"leads"."channel"', '"leads"."created_at"'),
                                     ("orders", "orders__customers__channels", '"orders__customers"."channel"',
                                      '"orders"."ordered_at"')):
        group, days = f'"{alias}"."channel_group"', f'"{source}_agg_days"'
        sql = _replace(sql, f'{group} AS "channel_group"', f'{key} AS "channel"')
        sql = _replace(sql, f'LEFT JOIN "channels" AS "{alias}" ON {key} = "{alias}"."channel" ', '')
        sql = _replace(sql, f'GROUP BY CAST({time} AS DATE), {group}', f'GROUP BY CAST({time} AS DATE), {key}')
        sql = _replace(sql, f'FROM {days} GROUP BY',
                       f'FROM {days} LEFT JOIN "channels" AS "{alias}" ON {days}."channel" = "{alias}"."channel" '
                       'GROUP BY')
        sql = re.sub(re.escape(f'{days}."channel_group"'), group, sql)
    return sql


VARIANTS = (
    Variant("no_period_distinct", "engaged_30d",
            "compiler.py: an aggregate read only through a window added up from days (rolling/cumulative of "
            "count_distinct, windows in days) is not computed in the source's range CTE (kept: its `present`)",
            _no_period_distinct),
    Variant("filter_in_where", "engaged_30d",
            "+ source_sql.py: a distinct-values read whose aggregates all have a filter puts "
            "(filter OR filter ...) in its WHERE", _filter_in_where),
    Variant("day_cast", "engaged_30d",
            "+ calendar/source_sql: a TIMESTAMP's day as CAST(x AS DATE) in the distinct-values read", _day_cast),
    Variant("days_equi_join", "engaged_30d",
            "+ compiler.py day_windows: the windows as (period, day) rows joined on the day, not BETWEEN",
            _days_equi_join),
    Variant("no_attribution", "conversion_30d",
            "conversions.py: when `per` is the base source's whole primary key, touch is 1 (no ROW_NUMBERs)",
            _no_attribution),
    Variant("grouped_then_stacked", "conversion_30d",
            "+ the pairs grouped by the keys, stacked with the base events' keys (not their rows)",
            _grouped_then_stacked),
    Variant("pairs_only", "conversion_30d",
            "+ compiler.py: no base events under the pairs when the request reads the base source itself "
            "(its keys come from that source's CTE)", _pairs_only),
    Variant("channels_on_day_totals", "quarter_by_group",
            "source_sql.py: a dimension table reached through a relationship joined to the day totals "
            "(grouped by the relationship's key) rather than to every row", _channels_on_day_totals),
)
