"""Hostile strings in formulas, filters, names and values: rejected or safely quoted. A canary
table must survive every attempt, on DuckDB and on PostgreSQL."""

import datetime as dt

import duckdb
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kpi_engine.cli import cli
from kpi_engine.engine import KpiProject
from kpi_engine.errors import KpiEngineError
from kpi_engine.spec import load_project

pytest_plugins = ["pg"]

SPEC = """
sources:
  leads: {table: leads, time: created_at, dimensions: [channel]}
kpis:
  n: {formula: count(leads)}
  quoted: {formula: "count(leads where channel = 'x''); drop table canary; --')"}
"""
LEADS = [("2025-01-01 10:00:00", "ppc"), ("2025-01-02 10:00:00", "x'); drop table canary; --"),
         ("2025-01-03 10:00:00", 'email"; delete from canary')]
# Each is fed to --where or --having; the engine must refuse it or treat every quote as data.
HOSTILE_FILTERS = [
    "channel = 'ppc'; drop table canary",
    "channel = 'ppc' -- and 1 = 1",
    "channel = 'ppc' /* */ or 1 = 1",
    "channel = \"ppc\"",
    "channel = `ppc`",
    "channel = 'x''); drop table canary; --'",
    "channel in ('a', 'b''); delete from canary; --')",
    "drop(canary)",
    "pg_sleep(5) = 1",
    "channel = 'ppc' union select * from canary",
]
HOSTILE_HAVING = ["n > 0; drop table canary", "n > (select 1)", "n > 0 -- x"]


def _run(root, *args):
    return CliRunner().invoke(cli, ["evaluate", str(root), "n", *args])


def _check_attacks(root):
    quoted_channel = "x'); drop table canary; --"
    for text in HOSTILE_FILTERS:
        result = _run(root, "--by", "channel", "--where", text)
        assert "Traceback" not in result.output
        if result.exit_code == 0:  # accepted: quotes were data, only matching rows counted
            assert "canary" not in result.stdout or quoted_channel in text.replace("''", "'"), (text, result.stdout)
        else:
            assert result.exit_code == 1 and result.stderr.startswith("Error: ")
    for text in HOSTILE_HAVING:
        result = _run(root, "--having", text)
        assert result.exit_code == 1 and "Traceback" not in result.output
    # A value holding SQL is a literal: it matches exactly the row that holds it.
    result = _run(root, "--where", f"channel = '{quoted_channel.replace(chr(39), chr(39) * 2)}'", "--format", "csv")
    assert result.exit_code == 0 and result.stdout == "n,complete\n1,true\n"
    quoted = CliRunner().invoke(cli, ["evaluate", str(root), "quoted", "--format", "csv"])
    assert quoted.exit_code == 0 and quoted.stdout == "quoted,complete\n1,true\n"


@pytest.mark.parametrize("table", ['leads"; drop table canary; --', "leads; drop", "leads --"])
def test_hostile_table_names_are_rejected_by_the_schema(make_project, table):
    root = make_project({"s.yaml": f"sources:\n  leads: {{table: '{table}'}}\n"})
    result = CliRunner().invoke(cli, ["validate", str(root), "--offline"])
    assert result.exit_code == 1 and "is not a valid table name" in result.stderr


@pytest.mark.parametrize("name", ["n; drop", "n--", "\"n\"", "n or 1"])
def test_hostile_kpi_and_column_names_are_rejected(make_project, name):
    root = make_project({"s.yaml": f"kpis:\n  '{name}': {{formula: '1'}}\n"})
    result = CliRunner().invoke(cli, ["validate", str(root), "--offline"])
    assert result.exit_code == 1 and "is not a valid name" in result.stderr


def test_canary_survives_on_duckdb(make_project, tmp_path):
    database = tmp_path / "warehouse.duckdb"
    connection = duckdb.connect(str(database))
    connection.execute("CREATE TABLE canary (alive INTEGER)")
    connection.execute("INSERT INTO canary VALUES (1)")
    connection.execute("CREATE TABLE leads (created_at TIMESTAMP, channel VARCHAR)")
    connection.executemany("INSERT INTO leads VALUES (?, ?)", LEADS)
    connection.close()
    root = make_project({"s.yaml": SPEC}, config=f"name: t\nwarehouse: {{adapter: duckdb, path: '{database}'}}\n")
    _check_attacks(root)
    with duckdb.connect(str(database), read_only=True) as check:
        assert check.execute("SELECT * FROM canary").fetchall() == [(1,)]


def test_canary_survives_on_postgres(make_project, pg_server):
    from psycopg import sql

    with pg_server.connect() as connection:
        for table in ("canary", "leads"):
            connection.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table)))
        connection.execute("CREATE TABLE canary (alive integer)")
        connection.execute("INSERT INTO canary VALUES (1)")
        connection.execute("CREATE TABLE leads (created_at timestamp, channel text)")
        with connection.cursor() as cursor:
            cursor.executemany("INSERT INTO leads VALUES (%s, %s)", LEADS)
    root = make_project({"s.yaml": SPEC}, config=f"name: t\nwarehouse: '{pg_server.url}'\n")
    _check_attacks(root)
    with pg_server.connect() as connection:
        assert connection.execute("SELECT * FROM canary").fetchall() == [(1,)]


def test_the_engine_cannot_write_through_its_connection(make_project, tmp_path):
    database = tmp_path / "w.duckdb"
    duckdb.connect(str(database)).close()
    root = make_project({"s.yaml": "sources:\n  s: {table: s}\n"},
                        config=f"name: t\nwarehouse: {{adapter: duckdb, path: '{database}'}}\n")
    with KpiProject(load_project(root)) as project:
        from sqlglot import exp

        create = exp.Create(kind="TABLE", this=exp.Table(this=exp.to_identifier("x")),
                            expression=exp.select(exp.Literal.number(1)))
        with pytest.raises(KpiEngineError):
            project.connection().execute(create)


# --- PostgreSQL with standard_conforming_strings off --------------------------------------------------
# With standard_conforming_strings off, PostgreSQL reads a backslash in '...' as an escape: the
# literal 'a\' does not end at its closing quote, and what follows becomes SQL. Each attack below
# is a valid filter or formula for the engine; the secret table is declared by no source.

SECRET = "TOPSECRET"
PG_DATABASE = "kpi_injection"
PG_LEADS = [("2025-01-01 10:00:00", "ppc"), ("2025-01-02 10:00:00", "a\\"), ("2025-01-03 10:00:00", "email"),
            ("2025-01-04 10:00:00", "a\\")]
PG_SPEC = """
sources:
  leads: {table: leads, time: created_at, dimensions: [channel]}
kpis:
  n: {formula: count(leads)}
"""
#: The tail of the query is commented out: the having condition ends the query.
HAVING_ATTACK = "n > 0 and 'a\\' = ' IS NOT NULL) UNION ALL SELECT s, 1 FROM secret -- '"
#: These write the rest of the query themselves, in the shape the engine compiles.
WHERE_ATTACK = ("channel = 'a\\' or channel = ' IS NOT NULL)) GROUP BY \"leads\".\"channel\" UNION ALL SELECT s, 1 "
                "FROM secret) SELECT \"leads_agg\".\"channel\" AS \"channel\", CAST(\"leads_agg\".\"count\" AS "
                "DOUBLE PRECISION) AS \"n\" FROM \"leads_agg\" -- '")
FORMULA_ATTACK = ("count(leads where channel = 'a\\' or channel = ' IS NOT NULL)) AS \"count_where_channel\" FROM "
                  "\"leads\" AS \"leads\" GROUP BY \"leads\".\"channel\" UNION ALL SELECT s, 1 FROM secret) SELECT "
                  "\"leads_agg\".\"channel\" AS \"channel\", CAST(\"leads_agg\".\"count_where_channel\" AS DOUBLE "
                  "PRECISION) AS \"formula\" FROM \"leads_agg\" -- ')")


def _pg_literal(text: str) -> str:
    """A formula string literal for ``text``."""
    return "'" + text.replace("'", "''") + "'"


def _channel_counts(condition) -> dict[str, float]:
    """Plain Python: per channel, how many rows of PG_LEADS satisfy ``condition(channel)``."""
    counts: dict[str, float] = {}
    for _, channel in PG_LEADS:
        counts[channel] = counts.get(channel, 0.0) + (1.0 if condition(channel) else 0.0)
    return counts


@pytest.fixture(scope="module")
def injection_db(pg_server):
    """A database of its own (its settings can be changed) with leads and a secret table."""
    from psycopg import sql

    with pg_server.admin_connect("postgres") as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(PG_DATABASE)))
        admin.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(PG_DATABASE),
                                                                    sql.Identifier(pg_server.user)))
    with _pg_connect(pg_server) as connection:
        connection.execute("CREATE TABLE secret (s text)")
        connection.execute("INSERT INTO secret VALUES (%s)", (SECRET,))
        connection.execute("CREATE TABLE leads (created_at timestamp, channel text)")
        with connection.cursor() as cursor:
            cursor.executemany("INSERT INTO leads VALUES (%s, %s)", PG_LEADS)
    return pg_server


def _pg_connect(server, **settings):
    import psycopg

    return psycopg.connect(host=server.host, port=server.port, user=server.user, password=server.password,
                           dbname=PG_DATABASE, autocommit=True, **settings)


def _pg_url(server) -> str:
    return server.url.rsplit("/", 1)[0] + "/" + PG_DATABASE


@pytest.fixture(params=["server default (on)", "role", "database", "PGOPTIONS"])
def conforming_strings_off(request, injection_db, monkeypatch):
    """standard_conforming_strings off for the role, the database or through PGOPTIONS (or left
    on). Yields the setting a plain psycopg session of the test user gets."""
    from psycopg import sql

    server, how = injection_db, request.param
    target = {"role": sql.SQL("ROLE {}").format(sql.Identifier(server.user)),
              "database": sql.SQL("DATABASE {}").format(sql.Identifier(PG_DATABASE))}.get(how)
    if target is not None:
        with server.admin_connect("postgres") as admin:
            admin.execute(sql.SQL("ALTER {} SET standard_conforming_strings = off").format(target))
    if how == "PGOPTIONS":
        monkeypatch.setenv("PGOPTIONS", "-c standard_conforming_strings=off")
    try:
        with _pg_connect(server) as connection:
            yield connection.execute("SHOW standard_conforming_strings").fetchone()[0]
    finally:
        if target is not None:
            with server.admin_connect("postgres") as admin:
                admin.execute(sql.SQL("ALTER {} RESET standard_conforming_strings").format(target))


@pytest.fixture
def injection_project(make_project, injection_db):
    return make_project({"s.yaml": PG_SPEC}, config=f"name: t\nwarehouse: '{_pg_url(injection_db)}'\n")


def _csv_rows(output: str) -> dict[str, float]:
    """channel -> n from the CSV output of --by channel (channel, n, complete)."""
    return {channel: float(value) for channel, value, _ in (line.rsplit(",", 2) for line in output.splitlines()[1:])}


#: Each attack, the engine's arguments for it, and the right answer computed in plain Python.
ATTACKS = {
    # 'a\' = '...' compares two different strings: false, so no row.
    "having": (dict(kpis=["n"], having=HAVING_ATTACK), {}),
    # where filters the rows: only the channel equal to 'a\' is left.
    "where": (dict(kpis=["n"], where=WHERE_ATTACK), {c: n for c, n in _channel_counts(lambda c: c == "a\\").items() if n}),
    # a filtered count is 0 for the channels it does not match.
    "formula": (dict(kpis=[], formulas=[FORMULA_ATTACK]), _channel_counts(lambda c: c == "a\\")),
}


def _cli_args(kpis, having=None, where=None, formulas=()):
    args = list(kpis)
    for option, value in (("--having", having), ("--where", where)):
        if value is not None:
            args += [option, value]
    for formula in formulas:
        args += ["--formula", formula]
    return args


def _project(root) -> KpiProject:
    return KpiProject(load_project(root))


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_postgres_literals_keep_their_meaning_whatever_standard_conforming_strings(
        injection_project, conforming_strings_off, request, attack):
    how = request.node.callspec.params["conforming_strings_off"]
    assert conforming_strings_off == ("on" if how.startswith("server") else "off")  # the attack's premise holds
    options, expected = ATTACKS[attack]
    result = CliRunner().invoke(cli, ["evaluate", str(injection_project), *_cli_args(**options), "--by", "channel",
                                      "--format", "csv"])
    assert result.exit_code == 0, result.output
    assert SECRET not in result.output
    assert _csv_rows(result.stdout) == expected


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_the_attacks_are_real_with_plain_literals(injection_project, injection_db, attack):
    """The premise of the test above: rendered with plain '...' literals and run on a session
    with the setting off, each compiled query reads the secret."""
    from kpi_engine.adapters.postgres import PostgresAdapter

    options, _ = ATTACKS[attack]
    options = dict(options)
    with _project(injection_project) as project:
        query = project.compile(options.pop("kpis"), by=["channel"], describe=False, **options).expression
    plain = PostgresAdapter.prepare(query).sql(dialect="postgres")
    with _pg_connect(injection_db, options="-c standard_conforming_strings=off") as connection:
        rows = connection.execute(plain).fetchall()
    assert (SECRET, 1.0) in rows, f"the {attack} attack no longer fits the compiled query; rewrite it for: {plain}"


def _evaluate_attacks(root) -> dict[str, dict[str, float]]:
    with _project(root) as project:
        results = {}
        for attack, (options, _) in ATTACKS.items():
            options = dict(options)
            result = project.evaluate(options.pop("kpis"), by=["channel"], **options)
            results[attack] = {channel: value for channel, value, _complete in result.rows}
        return results


def _set_for_role(server, value: str | None) -> None:
    from psycopg import sql

    statement = "ALTER ROLE {} SET standard_conforming_strings = off" if value else \
        "ALTER ROLE {} RESET standard_conforming_strings"
    with server.admin_connect("postgres") as admin:
        admin.execute(sql.SQL(statement).format(sql.Identifier(server.user)))


def test_escape_strings_alone_keep_literals_safe(injection_project, injection_db, monkeypatch):
    """One layer alone: in a session where the setting is off (the engine not pinning it),
    literals written as E'...' mean what they say."""
    from sqlglot import exp

    from kpi_engine.adapters import postgres as pg_adapter

    monkeypatch.setitem(pg_adapter.PINNED_SETTINGS, "standard_conforming_strings", "off")
    with _project(injection_project) as project:
        setting = exp.Anonymous(this="current_setting", expressions=[exp.Literal.string("standard_conforming_strings")])
        assert project.connection().execute(exp.select(setting)).rows == [("off",)]
    assert _evaluate_attacks(injection_project) == {attack: expected for attack, (_, expected) in ATTACKS.items()}


def test_plain_literals_are_safe_where_the_setting_is_pinned(injection_project, injection_db, monkeypatch):
    """The other layer alone: with the role's setting off but pinned on when connecting, plain
    '...' literals (no escape strings) mean what they say."""
    from kpi_engine.adapters import postgres as pg_adapter

    monkeypatch.setattr(pg_adapter, "render", lambda query: pg_adapter.PostgresAdapter.prepare(query).sql("postgres"))
    _set_for_role(injection_db, "off")
    try:
        results = _evaluate_attacks(injection_project)
    finally:
        _set_for_role(injection_db, None)
    assert results == {attack: expected for attack, (_, expected) in ATTACKS.items()}


def test_a_session_that_does_not_keep_the_settings_is_refused(injection_project, injection_db, monkeypatch):
    """A connection pooler may drop the startup options that pin the settings: the session is
    checked, and refused with one clear error, before any query runs."""
    from kpi_engine.adapters import postgres as pg_adapter

    monkeypatch.setattr(pg_adapter, "pinned_options", lambda: "")  # as if the options were dropped
    _set_for_role(injection_db, "off")
    try:
        result = CliRunner().invoke(cli, ["evaluate", str(injection_project), "n", "--having", HAVING_ATTACK])
    finally:
        _set_for_role(injection_db, None)
    assert result.exit_code == 3 and "Traceback" not in result.output
    assert "standard_conforming_strings = 'off'" in result.stderr and "no query is run" in result.stderr
    assert SECRET not in result.output


# --- fuzzing: a string literal matches exactly the rows holding that string ------------------------------

FUZZ_SPEC = """
sources:
  leads: {{table: {table}, time: created_at, dimensions: [channel]}}
kpis:
  n: {{formula: count(leads)}}
"""
#: Pieces that mean something to some SQL dialect, shell, glob or terminal, and random characters.
PIECES = ["\\", "\\\\", "'", "''", "\\'", "'\\", '"', "$", "$$", "${env:HOME}", "{", "}", "[1]", "*", "?", "%", "_",
          "--", "/*", "*/", ";", "E'", "\n", "\r", "\t", "\x1b", "\u009b", "\u202e", "é", "\U0001f600", " ", "a"]
LITERAL_TEXT = st.lists(st.one_of(st.sampled_from(PIECES),
                                  st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=2)),
                        max_size=8).map("".join)
FUZZ = settings(max_examples=60, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def _fuzz_rows(text: str) -> list[tuple[dt.datetime, str]]:
    """The string twice and near misses of it (one character more, a quote, a backslash)."""
    values = [text, text, text + "\\", "\\" + text, text + "'", "'" + text, text[:-1], "x"]
    return [(dt.datetime(2025, 1, 1 + i, 10), value) for i, value in enumerate(values)]


class _DuckDBFolder:
    """A data folder whose Parquet file is rewritten for each example (read at each query)."""

    def __init__(self, root):
        self.file = root / "data" / "leads.parquet"
        self.table = "leads"
        self.config = "name: t\nwarehouse: {adapter: duckdb, data: data}\n"

    def load(self, rows):
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({"created_at": [r[0] for r in rows], "channel": [r[1] for r in rows]}), self.file)


class _SQLiteFile:
    """A SQLite file written by the test; the engine's read-only connection sees each commit."""

    def __init__(self, root):
        import sqlite3

        self.file = root / "warehouse.sqlite"
        self.writer = sqlite3.connect(self.file)
        self.writer.execute("CREATE TABLE leads (created_at TIMESTAMP, channel TEXT)")
        self.table = "leads"
        self.config = f"name: t\nwarehouse: {{adapter: sqlite, path: '{self.file}'}}\n"

    def load(self, rows):
        self.writer.execute("DELETE FROM leads")
        self.writer.executemany("INSERT INTO leads VALUES (?, ?)",
                                [(time.isoformat(" "), value) for time, value in rows])
        self.writer.commit()


class _PostgresTable:
    def __init__(self, server):
        self.writer = _pg_connect(server)
        self.writer.execute("DROP TABLE IF EXISTS fuzz_leads")
        self.writer.execute("CREATE TABLE fuzz_leads (created_at timestamp, channel text)")
        self.table = "fuzz_leads"
        self.config = f"name: t\nwarehouse: '{_pg_url(server)}'\n"

    def load(self, rows):
        with self.writer.transaction():
            self.writer.execute("DELETE FROM fuzz_leads")
            self.writer.cursor().executemany("INSERT INTO fuzz_leads VALUES (%s, %s)", rows)


@pytest.fixture(params=["duckdb", "sqlite", "postgres", "postgres, setting off: escape strings alone"])
def literal_warehouse(request, tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    if request.param == "duckdb":
        warehouse = _DuckDBFolder(tmp_path)
    elif request.param == "sqlite":
        pytest.importorskip("kpi_engine_sqlite", reason="the SQLite plugin (plugins/kpi-engine-sqlite) is not installed")
        warehouse = _SQLiteFile(tmp_path)
    else:
        warehouse = _PostgresTable(request.getfixturevalue("injection_db"))
        if "off" in request.param:
            from kpi_engine.adapters import postgres as pg_adapter

            monkeypatch.setitem(pg_adapter.PINNED_SETTINGS, "standard_conforming_strings", "off")
    warehouse.load(_fuzz_rows("seed"))
    (tmp_path / "kpi_engine.yaml").write_text(warehouse.config)
    (tmp_path / "s.yaml").write_text(FUZZ_SPEC.format(table=warehouse.table))
    with _project(tmp_path) as project:
        yield warehouse, project
    if isinstance(warehouse, _PostgresTable):
        warehouse.writer.close()


@FUZZ
@given(text=LITERAL_TEXT)
def test_a_string_literal_matches_exactly_the_rows_holding_it(literal_warehouse, text):
    warehouse, project = literal_warehouse
    rows = _fuzz_rows(text)
    warehouse.load(rows)
    # Plain Python, exact equality: the filter keeps the rows equal to the text or to 'x'; of
    # those, the formula counts the ones equal to the text.
    kept = [value for _, value in rows if value in (text, "x")]
    expected = (float(len(kept)), float(sum(value == text for value in kept)), True)  # True: complete
    literal = _pg_literal(text)
    result = project.evaluate(["n"], where=f"channel = {literal} or channel = 'x'",
                              formulas=[f"count(leads where channel = {literal})"])
    assert result.rows == [expected], (text, result.sql)
