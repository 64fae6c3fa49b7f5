"""``kpi-engine map``: propose how the included libraries' sources read an unknown warehouse.

For each standard source the library reads from a table the warehouse does not have (or whose
columns it lacks), the warehouse's tables are scored by their name and by how many of the
columns the library reads (the source's contract) they have, with a type that fits: a time
column must be a date or timestamp, a summed column a number, a condition true/false. The best
table is proposed with a ``map:`` entry per column whose name differs, each guess commented with
why it was made; a column without a candidate is left as a commented TODO, so ``validate``
names it; a source without a fitting table is proposed ``unmapped: true``. Everything is a
guess to review: names say nothing about units (cents, micros) or meaning.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from typing import Iterable, Mapping

from sqlglot import exp

from . import nodes as n
from .errors import KpiEngineError, UsageError, WarehouseError
from .resolve import BOOLEAN, DATE, NUMBER, TIMESTAMP, column_type

# Words exports commonly use for a standard column (besides names close in spelling).
SYNONYMS: dict[str, tuple[str, ...]] = {
    "created_at": ("created", "createdate", "create_date", "date_created", "created_on", "signup_date", "opened_on",
                   "opened_at"),
    "lead_id": ("contact_id", "person_id", "id"),
    "is_qualified": ("is_lead", "qualified", "lead"),
    "customer_at": ("customer_date", "became_customer", "converted_at", "won_at", "closed_won"),
    "mql_at": ("mql_date", "became_mql"),
    "sql_at": ("sql_date", "became_sql"),
    "channel": ("source", "utm_source", "medium", "traffic_source", "source_channel", "platform", "network",
                "segment"),
    "subscribers": ("members", "size", "list_size"),
    "new_subscribers": ("joined", "subscribed", "new_members"),
    "unsubscribes": ("left", "left_count", "unsubscribed", "churned"),
    "plan": ("tier", "plan_tier", "plan_name"),
    "status": ("state", "outcome", "payment_status"),
    "landing_page": ("entry_page", "landing", "page", "url"),
    "campaign": ("utm_campaign", "campaign_name"),
    "spend": ("cost", "spent", "cost_usd", "amount"),
    "spend_date": ("date", "day", "report_date"),
    "acquired_at": ("won_on", "closed_won", "customer_since", "created"),
    "ordered_at": ("paid_at", "created", "order_date", "issued"),
    "amount": ("total", "amount_usd", "price", "value"),
    "started_at": ("visit_start", "session_start", "start_time", "ts"),
    "duration_seconds": ("duration", "time_on_site", "seconds"),
    "sent_at": ("sent", "send_time", "sent_ts"),
    "snapshot_date": ("as_of", "date", "day"),
    "responded_at": ("answered_at", "submitted_at", "created"),
    "score": ("rating", "nps", "answer"),
    "posted_at": ("published", "published_at", "created"),
    "likes": ("reactions",),
    "shares": ("reposts", "retweets"),
}
# Words exports commonly use in a table's name for a standard source.
TABLE_SYNONYMS: dict[str, tuple[str, ...]] = {
    "contacts": ("contact", "people", "person", "persons", "leads", "lead", "crm"),
    "opportunities": ("opportunity", "deals", "deal", "opps", "pipeline"),
    "customers": ("customer", "accounts", "account", "clients"),
    "subscriptions": ("subscription", "mrr", "plans", "recurring"),
    "orders": ("order", "payments", "payment", "invoices", "invoice", "transactions", "charges"),
    "ad_spend": ("ads", "ad", "costs", "cost", "spend", "campaign_costs"),
    "web_sessions": ("sessions", "session", "visits", "visit", "pageviews"),
    "email_sends": ("sends", "send", "emails", "email", "messages"),
    "email_list": ("list", "members", "subscribers", "audience"),
    "social_posts": ("posts", "post", "tweets", "updates"),
    "social_followers": ("followers", "follower", "audience"),
    "nps_responses": ("nps", "survey", "responses", "answers"),
}
# Words for the start and the end of an interval row (a subscription, a membership, a follower).
INTERVAL_STARTS = ("started", "start", "started_at", "start_date", "started_on", "subscribed", "subscribed_at",
                   "followed", "followed_at", "joined", "joined_at", "valid_from", "since", "created", "created_at")
INTERVAL_ENDS = ("ended", "end", "ended_at", "end_date", "ended_on", "cancelled", "canceled", "cancelled_at",
                 "canceled_at", "unsubscribed", "unsubscribed_at", "unfollowed", "unfollowed_at", "churned",
                 "churned_at", "left", "left_at", "valid_to", "until", "stopped", "stopped_at")
MIN_COLUMN_SCORE = 0.6
MIN_TABLE_SCORE = 0.45
REUSE_PENALTY = 0.25  # a table another standard source reads already is a worse fit


@dataclass
class ColumnGuess:
    column: str  # the library's name
    wanted: str | None  # a type category, or None for any
    found: str | None = None  # the warehouse column (or a condition on one)
    why: str = ""
    weak: bool = False  # found by elimination, not by its name


@dataclass
class SourceGuess:
    source: str
    table: str | None = None
    score: float = 0.0
    columns: list[ColumnGuess] = field(default_factory=list)
    readers: tuple[str, ...] = ()  # the sources that read this one's rows (it and those extending it)
    interval: tuple[str, str] | None = None  # (start, end) columns when the table holds intervals

    @property
    def missing(self) -> list[ColumnGuess]:
        return [guess for guess in self.columns if guess.found is None]


def _words(name: str) -> set[str]:
    return {w for w in re.split(r"[^a-z0-9]+", name.lower()) if w}


def _name_score(wanted: str, candidate: str, synonyms: Mapping[str, tuple[str, ...]] = SYNONYMS) -> float:
    """How much ``candidate`` looks like ``wanted``: 1 for the same name or a known synonym, a
    little less when a word of it is one (cost_cents for spend), else how alike they are written."""
    a, b = wanted.lower(), candidate.lower()
    known = synonyms.get(a, ())
    if a == b or b in known:
        return 1.0
    words_a, words_b = _words(a) - {"at", "is", "id"}, _words(b)
    if words_b & set(known):
        return 0.8
    flat = difflib.SequenceMatcher(None, a.replace("_", ""), b.replace("_", "")).ratio()
    covered = 0.8 * len(words_a & words_b) / len(words_a) if words_a else 0.0  # mrr_cents for mrr
    return max(flat, covered)


def _key_score(wanted: str, candidate: str, table: str) -> float:
    """A key column: an id-like name, better when it names the table's own entity
    (account_id in accounts) or the referenced one's (contact_id for lead_id)."""
    score = _name_score(wanted, candidate)
    name = candidate.lower()
    if not re.search(r"(^|_)(id|key|urn)$", name):
        return score / 2  # a key is an id
    entity = _words(name) - {"id", "key", "urn"}
    own = {w.rstrip("s") for w in _words(table.rsplit(".", 1)[-1])}
    return max(score, 0.75 if entity & own else 0.65)


def _fits(wanted: str | None, actual: str) -> bool:
    if wanted is None:
        return True
    if wanted in (DATE, TIMESTAMP):
        return actual in (DATE, TIMESTAMP)
    return actual == wanted


def contract(model, root: str) -> dict[str, str | None]:
    """The columns the library reads from the rows of ``root`` (through it and the sources that
    extend it), with the type each must have (None: any)."""
    readers = [s for s in model.sources.values() if (s.rows_of or s.name) == root]
    wanted: dict[str, str | None] = {}

    def want(column: str, kind: str | None) -> None:
        if wanted.get(column) is None:
            wanted[column] = kind

    names = {s.name for s in readers}
    for source in readers:
        if source.time:
            want(source.time, TIMESTAMP)
        links = [a for r in source.relationships for a, _ in r.columns]
        validity = [c for c in (source.valid_from, source.valid_to) if c]
        for column in (*source.primary_key, *(d.column for d in source.dimensions), *links, *validity):
            want(column, None)
    exprs = [kpi.expr for kpi in model.kpis.values()] + [model.condition(s) for s in names if model.condition(s)]
    for expr in exprs:
        for node in expr.walk():
            if isinstance(node, (n.Aggregate, n.EntityLookup)) and node.source in names:
                if isinstance(node, n.EntityLookup):
                    want(node.key, None)
                if node.func in ("sum", "avg", "last", "first") and node.arg is not None:
                    for column in (c for c in node.arg.walk() if isinstance(c, n.Column)):
                        want(column.name, NUMBER)
                if isinstance(node.where, n.Column):
                    want(node.where.name, BOOLEAN)
            elif isinstance(node, n.Aggregate):
                for lookup in (x for x in node.walk() if isinstance(x, n.EntityLookup) and x.source in names):
                    want(lookup.key, None)
            elif isinstance(node, n.Column) and node.source in names:
                want(node.name, None)
    for source in readers:  # a bare column as a where condition is a flag
        condition = model.condition(source.name)
        if isinstance(condition, n.Column):
            wanted[condition.name] = BOOLEAN
    return wanted


def snapshot_columns(model, root: str) -> set[str] | None:
    """The columns last()/first() read from the rows of ``root`` (empty for a whole-row count),
    or None when no KPI reads them as snapshots."""
    names = {s.name for s in model.sources.values() if (s.rows_of or s.name) == root}
    found = None
    for kpi in model.kpis.values():
        for node in kpi.expr.walk():
            if isinstance(node, n.Aggregate) and node.source in names and node.func in ("last", "first"):
                found = found or set()
                if node.arg is not None:
                    found |= {c.name for c in node.arg.walk() if isinstance(c, n.Column)}
    return found


def interval_columns(columns: Mapping[str, str]) -> tuple[str, str] | None:
    """The start and end columns of a table of intervals, by their names: both dates or times."""
    times = [c for c, t in columns.items() if t in (DATE, TIMESTAMP)]

    def best(words: tuple[str, ...], exclude: str | None = None) -> str | None:
        scored = sorted(((1.0 if c.lower() in words else 0.8 if _words(c) & set(words) else 0.0, c)
                         for c in times if c != exclude), key=lambda item: (-item[0], item[1]))
        return scored[0][1] if scored and scored[0][0] > 0 else None

    end = best(INTERVAL_ENDS)
    start = best(INTERVAL_STARTS, exclude=end) if end else None
    return (start, end) if start and end else None


def guess_columns(wanted: Mapping[str, str | None], columns: Mapping[str, str], table: str = "",
                  keys: Iterable[str] = ()) -> list[ColumnGuess]:
    """A warehouse column for each wanted one, each used once at most (in the contract's order)."""
    keys = set(keys)
    guesses = []
    taken = {name for name in wanted if name in columns}  # used under their own name
    for name, kind in wanted.items():
        guess = ColumnGuess(name, kind)
        if name in keys or name.endswith("_id"):
            def score_of(wanted_name, candidate):
                return _key_score(wanted_name, candidate, table)
        else:
            score_of = _name_score
        if name in columns and _fits(kind, columns[name]):
            guess.found, guess.why = name, "same name"
        else:
            scored = sorted(((score_of(name, c), c) for c, t in columns.items()
                             if _fits(kind, t) and c not in taken), key=lambda item: (-item[0], item[1]))
            if scored and scored[0][0] >= MIN_COLUMN_SCORE:
                score, found = scored[0]
                guess.found = found
                taken.add(found)
                guess.why = f"guess: name {'known synonym' if score == 1.0 else f'{score:.0%} alike'}" + \
                            (f", a {columns[found]}" if kind else "")
            elif kind == BOOLEAN:
                _flag_from_other_types(guess, columns, taken)
            elif kind == TIMESTAMP:
                times = [c for c, t in columns.items() if t in (DATE, TIMESTAMP) and c not in taken]
                if len(times) == 1:
                    guess.found, guess.why = times[0], "guess: the table's only date or time column"
                    guess.weak = True
                    taken.add(times[0])
        guesses.append(guess)
    return guesses


def _flag_from_other_types(guess: ColumnGuess, columns: Mapping[str, str], taken: set[str]) -> None:
    """A true/false column exported as the time of the event (opened_at) or as a 0/1 number
    (bounced): a condition on it."""
    scored = sorted(((_name_score(guess.column, c), c) for c, t in columns.items()
                     if t in (DATE, TIMESTAMP, NUMBER) and c not in taken), key=lambda item: (-item[0], item[1]))
    if scored and scored[0][0] >= MIN_COLUMN_SCORE:
        column = scored[0][1]
        is_time = columns[column] in (DATE, TIMESTAMP)
        guess.found = f"{column} is not null" if is_time else f"{column} = 1"
        guess.why = f"guess: {'the time it happened' if is_time else 'a 0/1 number'}, name {scored[0][0]:.0%} alike"
        taken.add(column)


def guess_source(root: str, library_table: str | None, time: str | None, keys: Iterable[str],
                 wanted: Mapping[str, str | None], tables: Mapping[str, Mapping[str, str]],
                 taken: set[str] = frozenset(), snapshot: set[str] | None = None) -> SourceGuess:
    """The table that fits a source best, by name and by the share of its contract it covers;
    it must have a candidate for the source's time column. A source read as snapshots
    (``snapshot``: the columns last()/first() read) may also read a table of intervals: then its
    time is the intervals' start, and a value last() sums that the table lacks counts each row
    once (followers: 1)."""
    best = SourceGuess(root)
    names = {root, (library_table or root).rsplit(".", 1)[-1]}
    for table, columns in tables.items():
        short = table.rsplit(".", 1)[-1]
        by_name = max(_name_score(name, short, TABLE_SYNONYMS) for name in names)
        penalty = REUSE_PENALTY if table in taken else 0.0
        guesses = guess_columns(wanted, columns, table, keys)
        covered = sum(g.found is not None for g in guesses) / len(guesses) if guesses else 0.0
        score = 0.5 * by_name + 0.5 * covered - penalty
        # The source's time column must be there, found by its name, or be the only one of a
        # table whose name fits.
        time_found = time is None or any(g.found and (not g.weak or by_name >= 0.6) for g in guesses
                                         if g.column == time)
        if score > best.score and score >= MIN_TABLE_SCORE and time_found:
            best = SourceGuess(root, table, score, guesses)
        interval = interval_columns(columns) if snapshot is not None and time else None
        if interval is not None:
            rest = {c: k for c, k in wanted.items() if c != time}
            # A column named for the entity (follower for followers) identifies a row: never summed.
            usable = {c: t for c, t in columns.items() if c not in interval and f"{c.lower()}s" not in snapshot}
            guesses = guess_columns(rest, usable, table, keys)
            for guess in guesses:
                if guess.found is None and guess.column in snapshot and guess.wanted == NUMBER:
                    guess.found, guess.why = "1", "guess: a table of intervals, each row counts once"
            covered = sum(g.found is not None for g in guesses) / len(guesses) if guesses else 1.0
            score = 0.5 * by_name + 0.5 * covered - penalty
            if score > best.score and score >= MIN_TABLE_SCORE:
                best = SourceGuess(root, table, score, guesses, interval=interval)
    return best


def warehouse_tables(connection) -> dict[str, dict[str, str]]:
    """Every table and view of the warehouse with its columns' type categories."""
    query = exp.select("table_schema", "table_name").from_(exp.to_table("information_schema.tables"))
    try:
        rows = connection.execute(query).rows
    except KpiEngineError as error:
        raise WarehouseError(f"cannot list the warehouse's tables: {error.message}", None,
                             "Map the sources by hand (docs/library.md, 'Adopting the library').") from None
    tables = {}
    for schema, name in sorted(rows):
        if schema in ("information_schema", "pg_catalog"):
            continue
        qualified = name if schema in ("main", "public", None) else f"{schema}.{name}"
        described = connection.columns(exp.to_table(qualified))
        if described:
            tables[qualified] = {column: column_type(raw) for column, raw in described.items()}
    return tables


def propose(kpi_project) -> list[SourceGuess]:
    """A guess for each library source whose rows the warehouse does not hold as the library
    expects them; the sources it reads already are left out."""
    model = kpi_project.model(describe=False)
    roots = [s for s in model.sources.values() if s.rows_of is None and (s.library or s.overrides)]
    if not roots:
        raise UsageError("the project includes no library sources to map.", None,
                         "Add 'include: [builtin:marketing]' to kpi_engine.yaml, or map your own sources by hand.")
    tables = warehouse_tables(kpi_project.connection())
    guesses = []
    taken: set[str] = set()
    for source in roots:
        wanted = contract(model, source.name)
        readers = tuple(s.name for s in model.sources.values() if (s.rows_of or s.name) == source.name)
        current = tables.get(source.table) if source.table and not source.column_map and not source.unmapped else None
        if current is not None and all(g.found == g.column for g in guess_columns(wanted, current, source.table)):
            continue  # the library's own table, complete
        if source.unmapped or source.overrides:
            continue  # the project already says how to read it
        keys = {*source.primary_key, *(a for r in source.relationships for a, _ in r.columns)} | \
            {c for c in wanted if c.endswith("_id")}
        guess = guess_source(source.name, source.table, source.time, keys, wanted, tables, taken,
                             snapshot_columns(model, source.name))
        guess.readers = readers
        if guess.table:
            taken.add(guess.table)
        if guess.table is None:
            guess.columns = [ColumnGuess(c, k) for c, k in wanted.items()]
        guesses.append(guess)
    return guesses


def _commented(text: str, comment: str) -> str:
    return f"{text.ljust(44)} # {comment}"


def _yaml_value(text: str) -> str:
    return text if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]*|[0-9]+", text) else f"'{text}'"


def render(guesses: Iterable[SourceGuess]) -> str:
    """The proposal as a spec file to review: every guess commented."""
    lines = ["# Proposed by `kpi-engine map`: how the library's standard sources read this warehouse.",
             "# Every entry is a guess from names and types: review each one (units such as cents or",
             "# micros, the meaning of flags and statuses), then run `kpi-engine validate` and",
             "# `kpi-engine test`. A commented TODO is a column no candidate was found for: map it to a",
             "# column, a formula over the table's columns, or a constant (its neutral value).",
             "sources:"]
    for guess in guesses:
        also = [r for r in guess.readers if r != guess.source]
        lines.append(_commented(f"  {guess.source}:", f"also read by {', '.join(also)}") if also
                     else f"  {guess.source}:")
        if guess.table is None:
            lines.append(_commented("    unmapped: true", "no table fits: its KPIs will be listed as unavailable"))
            continue
        lines.append(_commented(f"    table: {_yaml_value(guess.table)}",
                                f"guess: {guess.score:.0%} fit by name and columns"))
        if guess.interval:
            lines.append(_commented(f"    time: {_yaml_value(guess.interval[0])}",
                                    "guess: intervals, each row counts from here..."))
            lines.append(_commented(f"    time_end: {_yaml_value(guess.interval[1])}",
                                    "...until here (empty: still active); last() reads period ends"))
        entries = [g for g in guess.columns if g.found != g.column]
        if entries:
            lines.append("    map:")
        for column in entries:
            if column.found is None:
                kind = f"a {column.wanted}" if column.wanted else "a value"
                lines.append(_commented(f"      # {column.column}:", f"TODO: no column found ({kind})"))
            else:
                lines.append(_commented(f"      {column.column}: {_yaml_value(column.found)}", column.why))
        same = [g.column for g in guess.columns if g.found == g.column]
        if same:
            lines.append(f"    # same name, nothing to map: {', '.join(same)}")
    return "\n".join(lines) + "\n"
