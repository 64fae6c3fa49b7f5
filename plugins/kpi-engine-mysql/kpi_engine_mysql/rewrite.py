"""Rewrite a compiled kpi-engine query (a sqlglot tree) so that MySQL and MariaDB run it and
give the numbers the other engines give.

sqlglot's MySQL rendering runs, but these mean something else there:

=====================================  ==============================================================
node                                   MySQL
=====================================  ==============================================================
a / b (true division)                  CAST(a AS DOUBLE) / b: MySQL divides exact numbers as DECIMAL
                                       with 4 more digits (2 / 3 = 0.6667)
AVG(x)                                 AVG(CAST(x AS DOUBLE)), for the same reason
TIMESTAMP_TRUNC(x, WEEK)               DATE_SUB(DATE(x), INTERVAL ((WEEKDAY(x) + 7) % 7) DAY): sqlglot
                                       writes WEEK(x, 1) with YEAR(x), which splits the week that spans
                                       New Year; months, quarters and years use DAYOFMONTH and MAKEDATE;
                                       hours, minutes and seconds CAST(DATE_FORMAT(x, ...) AS DATETIME)
CONVERT_TZ(x, 'UTC', zone)             CONVERT_TZ(x, '+00:00', zone): a zone name needs the server's
                                       time zone tables (``named_zones`` lists those a query needs)
ROUND(x, d)                            ROUND(CAST(x AS DECIMAL(65, 30)), d) below 1e30: a DOUBLE's ROUND
                                       breaks ties to even and reads its binary value (ROUND(2.5) = 2,
                                       ROUND(0.05, 1) = 0); the cast reads the number as it prints,
                                       which DECIMAL rounds half away from zero, the engine's rule
=====================================  ==============================================================

Rewriting a rewritten query changes nothing.
"""

from __future__ import annotations

from sqlglot import exp

_DOUBLE = exp.DataType.Type.DOUBLE
_TRUNC = (exp.TimestampTrunc, exp.DatetimeTrunc, exp.DateTrunc)
#: Names of UTC, which MySQL knows only from its time zone tables; '+00:00' needs none.
_UTC_NAMES = {"UTC", "ETC/UTC", "GMT", "ETC/GMT", "Z", "ZULU", "UCT", "ETC/UCT", "UNIVERSAL"}
UTC_OFFSET = "+00:00"
#: WEEKDAY() numbers the days from Monday (0) to Sunday (6).
#: --grain hour, minute, second: the time cut to the unit, read back as a DATETIME.
_CLOCK_FORMATS = {"HOUR": "%Y-%m-%d %H:00:00", "MINUTE": "%Y-%m-%d %H:%i:00", "SECOND": "%Y-%m-%d %H:%i:%s"}
_WEEKDAYS = {"MONDAY": 0, "TUESDAY": 1, "WEDNESDAY": 2, "THURSDAY": 3, "FRIDAY": 4, "SATURDAY": 5, "SUNDAY": 6}


def to_mysql(query: exp.Expression) -> exp.Expression:
    """A copy of ``query`` that MySQL and MariaDB run with the other engines' meaning."""
    return query.transform(_rewrite)  # a rule that builds a new node rewrites its operands itself


def _rewrite(node: exp.Expression) -> exp.Expression:
    if isinstance(node, _TRUNC):
        return _truncate(node)
    if isinstance(node, exp.Div) and not node.args.get("typed"):
        return _float_division(node)
    if isinstance(node, exp.Avg):
        return _float_average(node)
    if isinstance(node, exp.ConvertTimezone):
        return _convert_timezone(node)
    if isinstance(node, exp.Round) and not _exact(node.this):
        return _round_exactly(node)
    return node


def _double(value: exp.Expression) -> exp.Expression:
    """CAST(value AS DOUBLE), once."""
    if isinstance(value, exp.Cast) and value.to.this == _DOUBLE:
        return value
    return exp.Cast(this=value, to=exp.DataType(this=_DOUBLE))


def _float_division(node: exp.Div) -> exp.Expression:
    """a / b in floating point. MySQL divides exact numbers (integers, DECIMAL) as DECIMAL with
    ``div_precision_increment`` (4) more digits than the dividend: 2 / 3 is 0.6667."""
    node.set("this", _double(node.this))
    return node


def _float_average(node: exp.Avg) -> exp.Expression:
    """AVG(x) in floating point: MySQL averages integers and DECIMAL as DECIMAL with 4 more digits."""
    value = node.this
    if isinstance(value, exp.Distinct):
        value.set("expressions", [_double(e) for e in value.expressions])
    else:
        node.set("this", _double(value))
    return node


#: The largest magnitude rounded as a DECIMAL(65, 30) (35 digits before the point); a DOUBLE
#: above it has no fraction to round.
_EXACT_BELOW = "1e30"


def _exact(value: exp.Expression) -> bool:
    return isinstance(value, exp.Cast) and value.to.this == exp.DataType.Type.DECIMAL


def _round_exactly(node: exp.Round) -> exp.Expression:
    """round() half away from zero on the number as it prints. MariaDB casts a DOUBLE to DECIMAL
    through its shortest decimal form (78.55 is 78.55, not 78.5499...), and rounds a DECIMAL half
    away from zero; past 1e30 the cast would clip at the type's largest value, so the number is
    left as it is (a DOUBLE that large is a whole number)."""
    value = to_mysql(node.this)
    exact = exp.Cast(this=value, to=exp.DataType.build("DECIMAL(65, 30)"))
    rounded = exp.Round(this=exact, decimals=node.args.get("decimals"))
    small = exp.LT(this=exp.Abs(this=value.copy()), expression=exp.Literal.number(_EXACT_BELOW))
    return exp.Case(ifs=[exp.If(this=small, true=rounded)], default=value.copy())


# --- dates -----------------------------------------------------------------------------------


def _call(name: str, *args: exp.Expression) -> exp.Anonymous:
    return exp.Anonymous(this=name, expressions=list(args))


def _number(value: int) -> exp.Literal:
    return exp.Literal.number(str(value))


def _unit(node: exp.Expression) -> str:
    """The unit of a truncation, upper case: DAY, WEEK, WEEK(SUNDAY), MONTH..."""
    unit = node.args.get("unit")
    if unit is None:
        return "DAY"
    name = unit.name if isinstance(unit, (exp.Var, exp.Literal, exp.Identifier, exp.Column)) else unit.sql()
    return name.upper().strip()


def _truncate(node: exp.Expression) -> exp.Expression:
    """The first day of the day, week, month, quarter or year of a date or timestamp, with date
    functions every MySQL and MariaDB has. (sqlglot's MySQL SQL cuts weeks with WEEK(x, 1) and
    the calendar year, which puts the days of a week that spans New Year in two weeks.)"""
    value, unit = to_mysql(node.this), _unit(node)
    day = _call("DATE", value)
    if unit == "DAY":
        first = day
    elif unit == "WEEK" or (unit.startswith("WEEK(") and unit[5:-1] in _WEEKDAYS):
        start = _WEEKDAYS[unit[5:-1]] if unit.startswith("WEEK(") else 0
        back = exp.Mod(this=exp.Paren(this=exp.Add(this=_call("WEEKDAY", value.copy()), expression=_number(7 - start))),
                       expression=_number(7))
        first = exp.DateSub(this=day, expression=back, unit=exp.Var(this="DAY"))
    elif unit == "MONTH":
        back = exp.Sub(this=_call("DAYOFMONTH", value.copy()), expression=_number(1))
        first = exp.DateSub(this=day, expression=back, unit=exp.Var(this="DAY"))
    elif unit in ("QUARTER", "YEAR"):
        first = _call("MAKEDATE", exp.Year(this=value.copy()), _number(1))
        if unit == "QUARTER":
            months = exp.Mul(this=exp.Paren(this=exp.Sub(this=exp.Quarter(this=value.copy()), expression=_number(1))),
                             expression=_number(3))
            first = exp.DateAdd(this=first, expression=months, unit=exp.Var(this="MONTH"))
    elif unit in _CLOCK_FORMATS:  # sqlglot's DATE_ADD('0000-01-01 ...') comes back as text on MariaDB
        return exp.Cast(this=_call("DATE_FORMAT", value, exp.Literal.string(_CLOCK_FORMATS[unit])),
                        to=exp.DataType(this=exp.DataType.Type.DATETIME))
    else:
        return node  # milliseconds...: sqlglot's rendering
    if isinstance(node, exp.DateTrunc):
        return first
    return exp.Cast(this=first, to=exp.DataType(this=exp.DataType.Type.DATETIME))


def _convert_timezone(node: exp.ConvertTimezone) -> exp.Expression:
    """CONVERT_TZ(x, 'UTC', zone) with UTC written '+00:00', which MySQL knows without its time
    zone tables (a name it does not know makes CONVERT_TZ null: see ``named_zones``)."""
    for key in ("source_tz", "target_tz"):
        zone = node.args.get(key)
        if isinstance(zone, exp.Literal) and zone.is_string and zone.this.upper() in _UTC_NAMES:
            node.set(key, exp.Literal.string(UTC_OFFSET))
    source, target = node.args.get("source_tz"), node.args.get("target_tz")
    if all(isinstance(z, exp.Literal) and z.this == UTC_OFFSET for z in (source, target)):
        return to_mysql(node.args["timestamp"])  # UTC to UTC: nothing to convert
    return node


def named_zones(query: exp.Expression) -> set[str]:
    """The time zone names (not offsets such as '+02:00') a prepared query converts from or to."""
    names = set()
    for node in query.find_all(exp.ConvertTimezone):
        for key in ("source_tz", "target_tz"):
            zone = node.args.get(key)
            if isinstance(zone, exp.Literal) and zone.is_string and not zone.this.startswith(("+", "-")):
                names.add(zone.this)
    return names
