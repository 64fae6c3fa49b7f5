"""Rewrite a compiled kpi-engine query (a sqlglot tree) so that it runs on SQLite.

sqlglot renders some nodes for the ``sqlite`` dialect as functions SQLite does not
have (``TIMESTAMP_TRUNC``, ``YEAR``, ``DATE_ADD``...), or with SQLite's own semantics
where they differ from the other engines (``%`` truncates its operands to integers,
``+1 month`` overflows into the next month). ``to_sqlite`` replaces those nodes with
expressions built from SQLite's date functions, themselves sqlglot nodes:

=====================================  ==============================================================
node                                   SQLite
=====================================  ==============================================================
CAST(x AS DATE) / AS TIMESTAMP         DATE(x) / DATETIME(x); an ISO literal stays a literal
TIMESTAMP_TRUNC(x, MONTH)              DATETIME(x, 'start of month')   (also day, week, quarter, year)
x + INTERVAL n DAY / MONTH             DATETIME(x, '+n days') / months clamped to the month's end
DATE_DIFF(DAY, b, a)                   CAST(JULIANDAY(DATE(a)) - JULIANDAY(DATE(b)) AS INTEGER)
YEAR(x), MONTH(x)                      CAST(STRFTIME('%Y', x) AS INTEGER), ...
IF(c, a, b)                            CASE WHEN c THEN a ELSE b END   (IIF needs SQLite 3.32)
a % b                                  a - b * CAST(a / b AS INTEGER)  (keeps fractions, as elsewhere)
ROUND(x, -k)                           ROUND(x / 10.0^k) * 10.0^k  (SQLite reads negative digits as 0)
(VALUES ...) AS t(c)                   (SELECT column1 AS c FROM (VALUES ...)) AS t
CONVERT_TIMEZONE                       refused: SQLite has no time zones
=====================================  ==============================================================

Nested date calls are merged (``DATE(DATETIME(x, 'a'), 'b')`` is ``DATE(x, 'a', 'b')``),
so a month bucket reads ``DATE("leads"."created_at", 'start of month')``. Dates and
timestamps are ISO-8601 text in SQLite and compare correctly as text.
"""

from __future__ import annotations

import datetime as dt
import re

from kpi_engine.errors import QueryError
from sqlglot import exp

_DATE_TYPES = {exp.DataType.Type[name] for name in ("DATE", "DATE32") if name in exp.DataType.Type.__members__}
_TIMESTAMP_TYPES = {exp.DataType.Type[name] for name in (
    "DATETIME", "DATETIME2", "DATETIME64", "SMALLDATETIME", "TIMESTAMP", "TIMESTAMPNTZ", "TIMESTAMPLTZ",
    "TIMESTAMPTZ", "TIMESTAMP_S", "TIMESTAMP_MS", "TIMESTAMP_NS") if name in exp.DataType.Type.__members__}
_ISO_DATE = re.compile(r"^(\d{4}-\d{2}-\d{2})$")
_ISO_TIMESTAMP = re.compile(r"^(\d{4}-\d{2}-\d{2})[ T](\d{2}):(\d{2})(?::(\d{2})(?:\.\d+)?)?$")
_MIDNIGHT = re.compile(r"^(\d{4}-\d{2}-\d{2}) 00:00:00$")
_UTC_NAMES = {"UTC", "ETC/UTC", "GMT", "ETC/GMT", "Z", "ZULU", "UCT", "ETC/UCT", "UNIVERSAL"}
_WEEKDAYS = {"SUNDAY": 0, "MONDAY": 1, "TUESDAY": 2, "WEDNESDAY": 3, "THURSDAY": 4, "FRIDAY": 5, "SATURDAY": 6}
# Formats whose fields depend on the date only, so STRFTIME(f, DATE(x, m)) is STRFTIME(f, x, m).
_DATE_ONLY_FORMATS = re.compile(r"^(?:[^%]|%[Ymdwj%])*$")
# Marks an added month count whose result is truncated to a month, quarter or year next:
# the day of the month does not matter there, so it is added to the month's first day.
_MONTH_FLOOR = "kpi_engine_sqlite_month_floor"
# Marks an added month count whose operand is already a month's first day (a truncation back
# from a fiscal shift): plain '+n months' is exact there.
_FIRST_DAY = "kpi_engine_sqlite_first_day"
_MONTHS = ("MONTH", "QUARTER", "YEAR")
# Marks a node built here that is already SQLite (an integer %), so preparing twice changes nothing.
_FINAL = "kpi_engine_sqlite_final"

_ADD = (exp.DateAdd, exp.DatetimeAdd, exp.TimestampAdd, exp.TsOrDsAdd)
_SUB = (exp.DateSub, exp.DatetimeSub, exp.TimestampSub)
_DIFF = (exp.DateDiff, exp.DatetimeDiff, exp.TimestampDiff, exp.TsOrDsDiff)
_TRUNC = (exp.TimestampTrunc, exp.DatetimeTrunc, exp.DateTrunc)
_CLOCK_PARTS = {"HOUR": "%H", "MINUTE": "%M", "SECOND": "%S"}  # EXTRACT(unit FROM ts): STRFTIME


def to_sqlite(query: exp.Expression) -> exp.Expression:
    """A copy of ``query`` that SQLite can run (see the module documentation)."""
    root = query.copy()
    for node in root.find_all(*_ADD, *_SUB):
        if _unit(node) in _MONTHS:
            if isinstance(node.parent, _TRUNC) and node.arg_key == "this" and _unit(node.parent) in _MONTHS:
                node.meta[_MONTH_FLOOR] = True
            if isinstance(node.this, _TRUNC) and _unit(node.this) in _MONTHS:
                node.meta[_FIRST_DAY] = True
    # Children before parents: every rule sees operands that are already SQLite.
    for node in reversed(list(root.dfs())):
        new = _rewrite(node)
        if new is not node:
            if node is root:
                root = new
            else:
                node.replace(new)
    return root


def _rewrite(node: exp.Expression) -> exp.Expression:
    if isinstance(node, (exp.Cast, exp.TryCast)):
        return _cast(node)
    if isinstance(node, _TRUNC):
        return _truncate(node)
    if isinstance(node, (*_ADD, *_SUB)):
        return _add(node)
    if isinstance(node, _DIFF):
        return _diff(node)
    if isinstance(node, exp.Round) and _negative_digits(node.args.get("decimals")):
        scale = _number(10.0 ** _negative_digits(node.args["decimals"]))
        whole = exp.Round(this=exp.Div(this=exp.Paren(this=node.this), expression=scale, typed=False, safe=False))
        return exp.Paren(this=exp.Mul(this=whole, expression=scale.copy()))
    if isinstance(node, exp.Year):
        return _part("%Y", node.this)
    if isinstance(node, exp.Month):
        return _part("%m", node.this)
    if isinstance(node, exp.Day):
        return _part("%d", node.this)
    if isinstance(node, exp.Quarter):
        return exp.Paren(this=exp.Div(this=exp.Paren(this=exp.Add(this=_part("%m", node.this), expression=_number(2))),
                                      expression=_number(3), typed=True, safe=False))
    if isinstance(node, exp.DayOfWeek):
        return _part("%w", node.this)
    if isinstance(node, exp.Extract) and node.name.upper() in _CLOCK_PARTS:  # hour_of_day, sub-daily indexes
        return _part(_CLOCK_PARTS[node.name.upper()], node.expression)
    if isinstance(node, exp.ConvertTimezone):
        return _convert_timezone(node)
    if isinstance(node, exp.AtTimeZone):
        raise _timezone_error(node.args.get("zone"))
    if isinstance(node, exp.If) and not (isinstance(node.parent, exp.Case) and node.arg_key == "ifs"):
        return exp.Case(ifs=[exp.If(this=node.this, true=node.args.get("true"))], default=node.args.get("false"))
    if isinstance(node, exp.Mod) and not node.meta.get(_FINAL):
        return _modulo(node)
    if isinstance(node, exp.Values):
        return _values(node)
    if isinstance(node, (exp.GTE, exp.LT, exp.GT, exp.LTE)):
        return _compare(node)
    return node


# --- building blocks -------------------------------------------------------------------------------


def _call(name: str, *args: exp.Expression) -> exp.Anonymous:
    return exp.Anonymous(this=name, expressions=list(args))


def _is_call(node: exp.Expression | None, name: str) -> bool:
    return isinstance(node, exp.Anonymous) and str(node.this).upper() == name


def _negative_digits(digits: exp.Expression | None) -> int:
    """k when ROUND's digits are the literal -k (k > 0), else 0."""
    if isinstance(digits, exp.Neg) and isinstance(digits.this, exp.Literal) and digits.this.is_int:
        return int(digits.this.this)
    if isinstance(digits, exp.Literal) and digits.is_int and int(digits.this) < 0:
        return -int(digits.this)
    return 0


def _number(value) -> exp.Literal:
    return exp.Literal.number(str(value))


def _integer(value: exp.Expression) -> exp.Cast:
    return exp.Cast(this=value, to=exp.DataType(this=exp.DataType.Type.INT))


def _text(value: exp.Expression) -> exp.Cast:
    return exp.Cast(this=value, to=exp.DataType(this=exp.DataType.Type.TEXT))


def _paren(node: exp.Expression) -> exp.Expression:
    """Parenthesise an operand that is itself an operation: sqlglot renders trees as built."""
    if isinstance(node, (exp.Binary, exp.Not, exp.Neg, exp.Between, exp.In, exp.Case, exp.Is)):
        return exp.Paren(this=node)
    return node


def _unit(node: exp.Expression) -> str:
    """The unit of a date node, upper case; DAY when there is none."""
    unit = node.args.get("unit")
    if isinstance(node.args.get("expression"), exp.Interval) and unit is None:
        unit = node.expression.args.get("unit")
    if unit is None:
        return "DAY"
    name = unit.name if isinstance(unit, (exp.Var, exp.Literal, exp.Identifier, exp.Column)) else unit.sql()
    name = name.upper().strip()
    return {"DAYS": "DAY", "WEEKS": "WEEK", "MONTHS": "MONTH", "QUARTERS": "QUARTER", "YEARS": "YEAR",
            "HOURS": "HOUR", "MINUTES": "MINUTE", "SECONDS": "SECOND"}.get(name, name)


def _temporal(kind: str, value: exp.Expression, *modifiers: exp.Expression) -> exp.Expression:
    """DATE(value, modifiers...) or DATETIME(...), merging a DATETIME(...) value into the call."""
    if _is_call(value, "DATETIME"):
        inner = list(value.expressions)
        value, modifiers = inner[0], (*inner[1:], *modifiers)
    elif _is_call(value, kind) and not modifiers:
        return value
    kept: list[exp.Expression] = []
    for modifier in modifiers:  # 'start of month' twice in a row is once
        if kept and _is_start(modifier) and _is_start(kept[-1]) and modifier.this == kept[-1].this:
            continue
        kept.append(modifier)
    return _call(kind, value, *kept)


def _is_start(node: exp.Expression) -> bool:
    return isinstance(node, exp.Literal) and node.is_string and node.this.startswith("start of ")


def _strftime(fmt: str, value: exp.Expression) -> exp.Anonymous:
    """STRFTIME(fmt, value) on a copy of ``value``, which is usually also used elsewhere."""
    value = value.copy()
    if _is_call(value, "DATETIME") or (_is_call(value, "DATE") and _DATE_ONLY_FORMATS.match(fmt)):
        return _call("STRFTIME", exp.Literal.string(fmt), *value.expressions)
    return _call("STRFTIME", exp.Literal.string(fmt), value)


def _part(fmt: str, value: exp.Expression) -> exp.Expression:
    """A date part as an integer: CAST(STRFTIME('%Y', x) AS INTEGER)."""
    return _integer(_strftime(fmt, value))


def _as_date(value: exp.Expression) -> exp.Expression:
    if _is_call(value, "DATE") or (isinstance(value, exp.Literal) and value.is_string and _ISO_DATE.match(value.this)):
        return value
    return _temporal("DATE", value)


def _is_date_valued(value: exp.Expression) -> bool:
    return _is_call(value, "DATE") or (isinstance(value, exp.Literal) and value.is_string
                                       and bool(_ISO_DATE.match(value.this)))


def _modifier(amount: exp.Expression, factor: int, word: str) -> exp.Expression:
    """'+3 days' for a literal amount; CAST(amount * factor AS TEXT) || ' days' otherwise."""
    amount = amount.copy()
    if amount.is_number:
        value = amount.to_py() * factor
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        return exp.Literal.string(f"{'+' if value >= 0 else ''}{value} {word}")
    scaled = amount if factor == 1 else exp.Mul(this=_paren(amount), expression=_number(factor))
    return exp.DPipe(this=_text(scaled), expression=exp.Literal.string(f" {word}"))


# --- rules -----------------------------------------------------------------------------------------


def _cast(node: exp.Cast) -> exp.Expression:
    to = node.to
    if to.this in _DATE_TYPES:
        value = node.this
        if isinstance(value, exp.Literal) and value.is_string:
            folded = _date_literal(value.this)
            if folded is not None:
                return exp.Literal.string(folded)
        return _as_date(value)
    if to.this in _TIMESTAMP_TYPES:
        value = node.this
        if isinstance(value, exp.Literal) and value.is_string:
            folded = _timestamp_literal(value.this)
            if folded is not None:
                return exp.Literal.string(folded)
        if _is_call(value, "DATETIME"):
            return value
        return _call("DATETIME", value)
    return node


def _date_literal(text: str) -> str | None:
    """What DATE('text') gives for a well-formed ISO date or timestamp, or None."""
    match = _ISO_DATE.match(text) or _ISO_TIMESTAMP.match(text)
    if not match:
        return None
    try:
        return dt.date.fromisoformat(match.group(1)).isoformat()
    except ValueError:
        return None


def _timestamp_literal(text: str) -> str | None:
    """What DATETIME('text') gives for a well-formed ISO date or timestamp, or None."""
    day = _date_literal(text)
    if day is None:
        return None
    match = _ISO_TIMESTAMP.match(text)
    if not match:
        return f"{day} 00:00:00"
    hour, minute, second = int(match.group(2)), int(match.group(3)), int(match.group(4) or 0)
    if hour > 23 or minute > 59 or second > 59:
        return None
    return f"{day} {hour:02d}:{minute:02d}:{second:02d}"


def _truncate(node: exp.Expression) -> exp.Expression:
    kind = "DATE" if isinstance(node, exp.DateTrunc) else "DATETIME"
    value, unit = node.this, _unit(node)
    if unit == "DAY":
        return _temporal(kind, value, exp.Literal.string("start of day"))
    if unit == "WEEK" or unit.startswith("WEEK("):
        first = unit[5:-1] if unit.startswith("WEEK(") else "MONDAY"
        if first not in _WEEKDAYS:
            raise QueryError(f"SQLite cannot truncate to weeks starting on '{first}'.", None,
                             "Use a week start from monday to sunday.")
        # Back six days, then forward to the first week day: the week's first day, on or before.
        return _temporal(kind, value, exp.Literal.string("start of day"), exp.Literal.string("-6 days"),
                         exp.Literal.string(f"weekday {_WEEKDAYS[first]}"))
    if unit == "MONTH":
        return _temporal(kind, value, exp.Literal.string("start of month"))
    if unit == "QUARTER":
        # The month's first day, minus the months since the quarter began.
        back = exp.Mod(this=exp.Paren(this=exp.Sub(this=_part("%m", value), expression=_number(1))),
                       expression=_number(3))
        back.meta[_FINAL] = True  # integers: SQLite's own % is right
        modifier = exp.DPipe(this=exp.DPipe(this=exp.Literal.string("-"), expression=exp.Paren(this=back)),
                             expression=exp.Literal.string(" months"))
        return _temporal(kind, value, exp.Literal.string("start of month"), modifier)
    if unit == "YEAR":
        return _temporal(kind, value, exp.Literal.string("start of year"))
    if kind == "DATE":
        if unit in ("HOUR", "MINUTE", "SECOND"):
            return _temporal("DATE", value)
    elif unit == "HOUR":
        return _strftime("%Y-%m-%d %H:00:00", value)
    elif unit == "MINUTE":
        return _strftime("%Y-%m-%d %H:%M:00", value)
    elif unit == "SECOND":
        return _temporal("DATETIME", value)
    raise QueryError(f"SQLite cannot truncate a date to the unit '{unit}'.", None,
                     "Use day, week, month, quarter or year.")


def _add(node: exp.Expression) -> exp.Expression:
    value, amount, unit = node.this, node.expression, _unit(node)
    if isinstance(amount, exp.Interval):
        amount = amount.this
        if isinstance(amount, exp.Literal) and amount.is_string:
            amount = exp.Literal.number(amount.this)
    if isinstance(node, _SUB):
        amount = exp.Neg(this=_paren(amount)) if not amount.is_number else exp.Literal.number(str(-amount.to_py()))
    kind = "DATE" if _is_date_valued(value) and unit in ("DAY", "WEEK", "MONTH", "QUARTER", "YEAR") else "DATETIME"
    days = {"DAY": (1, "days"), "WEEK": (7, "days"), "HOUR": (1, "hours"), "MINUTE": (1, "minutes"),
            "SECOND": (1, "seconds")}
    if unit in days:
        factor, word = days[unit]
        return _temporal(kind, value, _modifier(amount, factor, word))
    months = {"MONTH": 1, "QUARTER": 3, "YEAR": 12}.get(unit)
    if months is None:
        raise QueryError(f"SQLite cannot add the date unit '{unit}'.", None,
                         "Use days, weeks, months, quarters or years.")
    start = exp.Literal.string("start of month")
    if node.meta.get(_FIRST_DAY):
        return _temporal(kind, value, _modifier(amount, months, "months"))
    if node.meta.get(_MONTH_FLOOR):  # truncated to a month or coarser next: add to the first day
        return _temporal(kind, value, start, _modifier(amount, months, "months"))
    # SQLite's '+1 months' turns Jan 31 into Mar 2 (or 3); other engines stop at the month's
    # last day. The earlier of the two is the right answer.
    shifted = _temporal(kind, value, _modifier(amount, months, "months"))
    next_month = exp.Add(this=_paren(amount.copy()), expression=_number(1)) if months == 1 else \
        exp.Add(this=exp.Mul(this=_paren(amount.copy()), expression=_number(months)), expression=_number(1))
    if amount.is_number:
        next_month = exp.Literal.number(str(amount.to_py() * months + 1))
    last_day = _temporal("DATE", value.copy(), start.copy(), _modifier(next_month, 1, "months"),
                         exp.Literal.string("-1 days"))
    if kind == "DATETIME":
        last_day = exp.DPipe(this=exp.DPipe(this=last_day, expression=exp.Literal.string(" ")),
                             expression=_call("TIME", value.copy()))
    return _call("MIN", shifted, last_day)


def _diff(node: exp.Expression) -> exp.Expression:
    """Whole units from the second argument (``expression``) to the first (``this``)."""
    later, earlier, unit = node.this, node.expression, _unit(node)
    if unit == "DAY":
        days = exp.Sub(this=_call("JULIANDAY", _as_date(later)), expression=_call("JULIANDAY", _as_date(earlier)))
        return _integer(days)
    per_year = {"YEAR": 1, "QUARTER": 4, "MONTH": 12}.get(unit)
    if per_year is None:
        raise QueryError(f"SQLite cannot count date differences in '{unit}'.", None,
                         "Use days, months, quarters or years.")

    def index(value: exp.Expression) -> exp.Expression:
        year = _part("%Y", value)
        if unit == "YEAR":
            return year
        within = _part("%m", value) if unit == "MONTH" else exp.Paren(this=exp.Div(
            this=exp.Paren(this=exp.Add(this=_part("%m", value), expression=_number(2))),
            expression=_number(3), typed=True, safe=False))
        return exp.Paren(this=exp.Add(this=exp.Mul(this=year, expression=_number(per_year)), expression=within))

    return exp.Paren(this=exp.Sub(this=index(later), expression=index(earlier)))


def _timezone_error(zone: exp.Expression | None) -> QueryError:
    name = zone.name if isinstance(zone, exp.Literal) else (zone.sql() if zone is not None else "")
    shown = f" ({name})" if name else ""
    return QueryError(f"the project's timezone setting{shown} is not supported on SQLite: SQLite has no time zones, "
                      "so timestamps cannot be converted to local time.", None,
                      "Remove 'timezone:' from kpi_engine.yaml (timestamps are then cut into periods as stored), "
                      "or store local times in the SQLite database.")


def _convert_timezone(node: exp.ConvertTimezone) -> exp.Expression:
    source, target = node.args.get("source_tz"), node.args.get("target_tz")
    names = [z.name.upper() for z in (source, target) if isinstance(z, exp.Literal)]
    if source is not None and target is not None and len(names) == 2 and set(names) <= _UTC_NAMES:
        return node.args["timestamp"]  # UTC to UTC: nothing to convert
    raise _timezone_error(target)


def _modulo(node: exp.Mod) -> exp.Expression:
    """a % b as on other engines (fractions kept, the sign of a): a - b * CAST(a / b AS INTEGER).
    SQLite's own % turns both operands into integers first."""
    left, right = _paren(node.this), _paren(node.expression)
    quotient = exp.Div(this=left.copy(), expression=right.copy(), typed=True, safe=False)
    return exp.Paren(this=exp.Sub(this=left, expression=exp.Mul(this=right, expression=_integer(quotient))))


def _values(node: exp.Values) -> exp.Expression:
    """(VALUES ...) AS t(a, b): SQLite names VALUES columns column1, column2, ... and takes
    no column list in an alias, so select them under their names in a subquery."""
    alias = node.args.get("alias")
    columns = list(alias.columns) if isinstance(alias, exp.TableAlias) else []
    if not columns:
        return node
    rows = exp.Values(expressions=[row.copy() for row in node.expressions])
    select = exp.select(*[exp.alias_(exp.column(exp.to_identifier(f"column{i + 1}", quoted=True)),
                                     exp.to_identifier(column.name, quoted=True), copy=False)
                          for i, column in enumerate(columns)], copy=False)
    select = select.from_(exp.Subquery(this=rows), copy=False)
    name = exp.to_identifier(alias.name, quoted=True) if alias.name else None
    return exp.Subquery(this=select, alias=exp.TableAlias(this=name) if name is not None else None)


def _compare(node: exp.Expression) -> exp.Expression:
    """``t >= '2025-01-01 00:00:00'`` -> ``t >= '2025-01-01'`` (and ``t < ...`` alike).

    Time ranges compare a column with midnight. As text, a date at that day ('2025-01-01')
    sorts before '2025-01-01 00:00:00', so a DATE column, or a time column stored as
    dates, would lose the first day of the range and gain the last one. Against the bare
    date the comparison is right for dates and for timestamps alike."""
    side = "expression" if isinstance(node, (exp.GTE, exp.LT)) else "this"
    bound = node.args.get(side)
    if isinstance(bound, exp.Literal) and bound.is_string:
        match = _MIDNIGHT.match(bound.this)
        if match:
            node.set(side, exp.Literal.string(match.group(1)))
    return node
