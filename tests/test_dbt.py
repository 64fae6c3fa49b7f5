"""The dbt world: a warehouse read from a dbt profiles.yml target (env_var as dbt renders it,
profiles.yml found as dbt finds it) and sources that name dbt models through manifest.json."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from dbt_fixture import build_warehouse, make_rows, write_manifest
from kpi_engine import open_project
from kpi_engine.cli import cli
from kpi_engine.dbt import DbtSettings, profile_warehouse, render
from kpi_engine.engine import check_project
from kpi_engine.errors import Location, SpecError, UsageError

pytest_plugins = ["pg"]

WHERE = Location("profiles.yml", 3)
PROFILE = """\
shop:
  target: dev
  outputs:
    dev:
      type: duckdb
      path: "{{{{ env_var('SHOP_DB', '{default}') }}}}"
    prod:
      type: postgres
      host: "{{{{ env_var('PGHOST_TEST') }}}}"
      port: "{{{{ env_var('PGPORT_TEST', '6543') | as_number }}}}"
      user: analyst
      password: "{{{{ env_var('DBT_ENV_SECRET_PW') }}}}"
      dbname: shop
      schema: marts
    lake:
      type: bigquery
      project: shop-prod
"""


@pytest.fixture
def clean_env(monkeypatch):
    for name in ("SHOP_DB", "PGHOST_TEST", "PGPORT_TEST", "DBT_ENV_SECRET_PW", "DBT_PROFILES_DIR", "DBT_TARGET"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", "/nonexistent-home-for-dbt-tests")
    return monkeypatch


def test_env_var_with_and_without_default(clean_env):
    assert render("{{ env_var('SHOP_DB', 'dev.duckdb') }}", WHERE) == "dev.duckdb"
    clean_env.setenv("SHOP_DB", "prod.duckdb")
    assert render("{{ env_var('SHOP_DB', 'dev.duckdb') }}", WHERE) == "prod.duckdb"
    assert render("data/{{ env_var(\"SHOP_DB\") }}.bak", WHERE) == "data/prod.duckdb.bak"
    clean_env.setenv("PGPORT_TEST", "5433")
    assert render("{{ env_var('PGPORT_TEST') | int }}", WHERE) == 5433
    assert render({"a": ["{{ env_var('PGPORT_TEST') | as_number }}"]}, WHERE) == {"a": [5433]}
    with pytest.raises(UsageError, match="PGHOST_TEST is not set.*no default"):
        render("{{ env_var('PGHOST_TEST') }}", WHERE)


@pytest.mark.parametrize("text", ["{{ target.name }}", "{% if true %}x{% endif %}", "{{ env_var('X') | upper }}",
                                  "{{ var('x') }}"])
def test_other_jinja_is_refused_not_guessed(clean_env, text):
    clean_env.setenv("X", "1")
    with pytest.raises(SpecError) as error:
        render(text, WHERE)
    assert str(error.value).startswith("profiles.yml:3:")


def _folders(tmp_path: Path, default: str = "shop.duckdb") -> tuple[Path, Path]:
    dbt_project = tmp_path / "dbt"
    dbt_project.mkdir()
    (dbt_project / "profiles.yml").write_text(PROFILE.format(default=default))
    return dbt_project, DbtSettings.of({"project_dir": str(dbt_project)}, tmp_path)


def test_targets_map_to_adapters(clean_env, tmp_path):
    dbt_project, settings = _folders(tmp_path)
    assert profile_warehouse({"dbt_profile": "shop"}, settings) == \
        ("duckdb", {"path": str(dbt_project / "shop.duckdb")})
    clean_env.setenv("PGHOST_TEST", "db.internal")
    clean_env.setenv("DBT_ENV_SECRET_PW", "s3cret")
    adapter, values = profile_warehouse({"dbt_profile": "shop", "target": "prod"}, settings)
    assert adapter == "postgres"
    assert values == {"host": "db.internal", "port": "6543", "user": "analyst", "password": "s3cret", "dbname": "shop"}
    clean_env.setenv("DBT_TARGET", "prod")  # dbt's own variable picks the target when kpi_engine.yaml does not
    assert profile_warehouse({"dbt_profile": "shop"}, settings)[0] == "postgres"


def test_unsupported_type_missing_target_and_profile(clean_env, tmp_path):
    _, settings = _folders(tmp_path)
    with pytest.raises(UsageError, match="dbt adapter type 'bigquery' is not supported"):
        profile_warehouse({"dbt_profile": "shop", "target": "lake"}, settings)
    with pytest.raises(UsageError, match="no target 'prd'") as error:
        profile_warehouse({"dbt_profile": "shop", "target": "prd"}, settings)
    assert "Did you mean 'prod'?" in str(error.value)
    with pytest.raises(UsageError, match="profile 'shp' is not in") as error:
        profile_warehouse({"dbt_profile": "shp"}, settings)
    assert "Did you mean 'shop'?" in str(error.value)


def test_profiles_are_found_as_dbt_finds_them(clean_env, tmp_path):
    dbt_project, settings = _folders(tmp_path, default="from_project.duckdb")
    env_dir, home = tmp_path / "env", tmp_path / "home"
    (env_dir).mkdir()
    (env_dir / "profiles.yml").write_text(PROFILE.format(default="from_env.duckdb"))
    (home / ".dbt").mkdir(parents=True)
    (home / ".dbt" / "profiles.yml").write_text(PROFILE.format(default="from_home.duckdb"))
    clean_env.setenv("HOME", str(home))
    path = lambda: Path(profile_warehouse({"dbt_profile": "shop"}, settings)[1]["path"]).name  # noqa: E731
    assert path() == "from_project.duckdb"  # the project folder before ~/.dbt
    (dbt_project / "profiles.yml").unlink()
    assert path() == "from_home.duckdb"
    clean_env.setenv("DBT_PROFILES_DIR", str(env_dir))
    assert path() == "from_env.duckdb"
    clean_env.setenv("DBT_PROFILES_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(UsageError, match="no profiles.yml in .*DBT_PROFILES_DIR"):
        path()


def _project(tmp_path: Path, sources: str, aliases=None, schema="main", database="warehouse") -> Path:
    """A kpi-engine project on a dbt project: profiles.yml (duckdb), a built warehouse, a manifest."""
    dbt_project = tmp_path / "dbt"
    dbt_project.mkdir(exist_ok=True)
    (dbt_project / "profiles.yml").write_text(PROFILE.format(default=f"{database}.duckdb"))
    build_warehouse(dbt_project / f"{database}.duckdb", make_rows(3), schema=schema, aliases=aliases)
    write_manifest(dbt_project / "target" / "manifest.json", database=database, schema=schema, aliases=aliases)
    project = tmp_path / "kpis"
    project.mkdir(exist_ok=True)
    (project / "kpi_engine.yaml").write_text("name: shop\ndbt: {project_dir: ../dbt}\n"
                                             "warehouse: {dbt_profile: shop, target: dev}\n")
    (project / "specs.yaml").write_text(sources)
    return project


SPECS = """\
sources:
  orders: {model: fct_orders, time: ordered_at, dimensions: [channel]}
kpis:
  revenue: {formula: sum(orders.amount)}
"""


def test_model_resolves_to_the_relation_of_the_target(clean_env, tmp_path):
    """A model built in another schema under an alias is read there, through the profile's database."""
    project = _project(tmp_path, SPECS, aliases={"fct_orders": "orders_v2"}, schema="marts")
    rows = make_rows(3)["fct_orders"]
    expected = {}
    for row in rows:
        expected[row["channel"]] = expected.get(row["channel"], 0) + row["amount"]
    with open_project(project) as kpis:
        assert kpis.project.sources["orders"].table == "warehouse.marts.orders_v2"
        got = {row["channel"]: row["revenue"] for row in kpis.evaluate(["revenue"], by=["channel"]).to_dicts()}
    assert got.keys() == expected.keys()
    assert all(abs(got[k] - expected[k]) < 1e-6 for k in expected)


def test_missing_model_and_manifest_are_clear_errors(clean_env, tmp_path):
    project = _project(tmp_path, SPECS.replace("fct_orders", "fct_order"))
    _, errors = check_project(project, describe=False)
    assert len(errors) == 1
    assert "specs.yaml:2" in str(errors[0]) and "dbt model 'fct_order' is not in the manifest" in str(errors[0])
    assert "Did you mean 'fct_orders'?" in str(errors[0])
    (tmp_path / "dbt" / "target" / "manifest.json").unlink()
    _, errors = check_project(project, describe=False)
    assert len(errors) == 1 and "does not exist" in errors[0].message and "dbt parse" in errors[0].hint


def test_model_and_table_together_are_refused(clean_env, tmp_path):
    project = _project(tmp_path, SPECS.replace("model: fct_orders", "model: fct_orders, table: x"))
    _, errors = check_project(project, describe=False)
    assert any("needs exactly one of 'table', 'sql' and 'model'" in e.message for e in errors)


def test_profiles_dir_option_wins_over_the_environment(clean_env, tmp_path):
    project = _project(tmp_path, SPECS)
    other = tmp_path / "other"
    other.mkdir()
    (other / "profiles.yml").write_text(PROFILE.format(default="missing.duckdb"))
    clean_env.setenv("DBT_PROFILES_DIR", str(tmp_path / "dbt"))
    ok = CliRunner().invoke(cli, ["evaluate", str(project), "revenue", "--format", "csv"])
    assert ok.exit_code == 0, ok.output
    total = sum(row["amount"] for row in make_rows(3)["fct_orders"])
    assert abs(float(ok.output.splitlines()[1].split(",")[0]) - total) < 1e-6
    # --profiles-dir names a profile whose database file does not exist: the option was used
    failed = CliRunner().invoke(cli, ["--profiles-dir", str(other), "evaluate", str(project), "revenue"])
    assert failed.exit_code == 3 and "missing.duckdb" in failed.output
    again = CliRunner().invoke(cli, ["evaluate", str(project), "revenue", "--format", "csv"])
    assert again.exit_code == 0, again.output  # the option does not outlive its run


def test_schema_refuses_mixed_warehouse_keys(tmp_path):
    project = tmp_path / "p"
    project.mkdir()
    (project / "kpi_engine.yaml").write_text("name: p\nwarehouse: {dbt_profile: shop, adapter: duckdb}\n")
    _, errors = check_project(project, describe=False)
    assert len(errors) == 1 and "kpi_engine.yaml:2" in str(errors[0]) and "unknown field 'adapter'" in str(errors[0])
    (project / "kpi_engine.yaml").write_text("name: p\nwarehouse: {dbt_profile: shop, targt: dev}\n")
    _, errors = check_project(project, describe=False)
    assert len(errors) == 1 and "Did you mean 'target'?" in str(errors[0])


def test_a_relation_that_is_not_plain_names_is_refused(clean_env, tmp_path):
    project = _project(tmp_path, SPECS, aliases={"fct_orders": "orders; drop table x"})
    _, errors = check_project(project, describe=False)
    assert len(errors) == 1 and "relation part 'orders; drop table x' is not a plain name" in errors[0].message


@pytest.mark.parametrize("output, expected", [
    ({"type": "sqlite", "schema": "main", "schemas_and_paths": {"main": "shop.db"}}, ("sqlite", {"path": "shop.db"})),
    ({"type": "mysql", "server": "db", "port": 3306, "username": "u", "password": "p", "schema": "shop"},
     ("mysql", {"host": "db", "port": "3306", "user": "u", "password": "p", "database": "shop"})),
    ({"type": "spark", "method": "session", "host": "NA", "schema": "analytics"},
     ("spark", {"database": "analytics"})),
    ({"type": "redshift", "host": "rs", "user": "u", "password": "p", "dbname": "dw", "port": 5439},
     ("postgres", {"host": "rs", "user": "u", "password": "p", "dbname": "dw", "port": "5439"})),
])
def test_other_adapter_types(clean_env, tmp_path, output, expected):
    (tmp_path / "profiles.yml").write_text(f"p:\n  target: t\n  outputs:\n    t: {output!r}\n".replace("'", '"'))
    adapter, values = profile_warehouse({"dbt_profile": "p"}, DbtSettings.of(None, tmp_path))
    if adapter == "sqlite":
        values = {"path": Path(values["path"]).relative_to(tmp_path).as_posix()}
    assert (adapter, values) == expected


@pytest.mark.parametrize("output, message", [
    ({"type": "spark", "method": "thrift", "host": "h"}, "connects by 'thrift'"),
    ({"type": "clickhouse", "host": "h"}, "ClickHouse server"),
    ({"type": "duckdb", "path": ":memory:"}, "no database file"),
    ({"type": "duckdb", "path": "x.duckdb", "attach": [{"path": "y.duckdb"}]}, "attaches other databases"),
])
def test_targets_kpi_engine_cannot_read_are_one_clear_error(clean_env, tmp_path, output, message):
    (tmp_path / "profiles.yml").write_text(f"p:\n  target: t\n  outputs:\n    t: {output!r}\n".replace("'", '"'))
    with pytest.raises(UsageError, match=message) as error:
        profile_warehouse({"dbt_profile": "p"}, DbtSettings.of(None, tmp_path))
    assert "profile 'p', target 't'" in str(error.value)


def test_postgres_target_with_a_secret_from_the_environment(clean_env, tmp_path, pg_server):
    """A dbt postgres target, its password in DBT_ENV_SECRET_PW, reads a model dbt built in a schema."""
    import dataclasses

    import psycopg
    from psycopg import sql

    database = dataclasses.replace(pg_server, dbname="kpi_dbt")
    with pg_server.admin_connect("postgres") as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(database.dbname)))
        admin.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(database.dbname),
                                                                   sql.Identifier(database.user)))
    rows = make_rows(9)["fct_orders"]
    with psycopg.connect(database.url, autocommit=True) as connection:
        connection.execute("CREATE SCHEMA marts")
        connection.execute("CREATE TABLE marts.fct_orders (order_id integer, ordered_at date, channel text, "
                           "amount double precision)")
        with connection.cursor() as cursor:
            cursor.executemany("INSERT INTO marts.fct_orders VALUES (%s, %s, %s, %s)",
                               [(r["order_id"], r["ordered_at"], r["channel"], r["amount"]) for r in rows])
    dbt_project = tmp_path / "dbt"
    dbt_project.mkdir()
    (dbt_project / "profiles.yml").write_text(f"""\
shop:
  target: prod
  outputs:
    prod:
      type: postgres
      host: {database.host}
      port: "{{{{ env_var('PGPORT_TEST') | int }}}}"
      user: {database.user}
      password: "{{{{ env_var('DBT_ENV_SECRET_PW') }}}}"
      dbname: {database.dbname}
      schema: marts
""")
    write_manifest(dbt_project / "target" / "manifest.json", database=database.dbname, schema="marts",
                   models=("fct_orders",))
    project = tmp_path / "kpis"
    project.mkdir()
    (project / "kpi_engine.yaml").write_text("name: shop\ndbt: {project_dir: ../dbt}\nwarehouse: {dbt_profile: shop}\n")
    (project / "specs.yaml").write_text(SPECS)
    clean_env.setenv("PGPORT_TEST", str(database.port))
    clean_env.setenv("DBT_ENV_SECRET_PW", database.password)
    expected: dict = {}
    for row in rows:
        expected[row["channel"]] = expected.get(row["channel"], 0) + row["amount"]
    with open_project(project) as kpis:
        got = {row["channel"]: row["revenue"] for row in kpis.evaluate(["revenue"], by=["channel"]).to_dicts()}
    assert got.keys() == expected.keys() and all(abs(got[k] - expected[k]) < 1e-6 for k in expected)
    clean_env.setenv("DBT_ENV_SECRET_PW", "wrong-" + database.password[::-1])
    failed = CliRunner().invoke(cli, ["evaluate", str(project), "revenue"])
    assert failed.exit_code == 3 and "wrong-" not in failed.output and database.password not in failed.output


def test_a_secret_holding_a_variable_reference_is_refused_not_read_twice(clean_env, tmp_path):
    _, settings = _folders(tmp_path)
    clean_env.setenv("PGHOST_TEST", "db")
    clean_env.setenv("DBT_ENV_SECRET_PW", "a${HOME}b")
    with pytest.raises(UsageError, match="'password' .* holds") as error:
        profile_warehouse({"dbt_profile": "shop", "target": "prod"}, settings)
    assert "a${HOME}b" not in str(error.value)


def test_profiles_with_anchors_and_merge_keys(clean_env, tmp_path):
    (tmp_path / "profiles.yml").write_text("""\
defaults: &pg
  type: postgres
  host: db.internal
  port: 5432
shop:
  target: "{{ env_var('SHOP_TARGET', 'prod') }}"
  outputs:
    prod:
      <<: *pg
      user: analyst
      dbname: shop
""")
    assert profile_warehouse({"dbt_profile": "shop"}, DbtSettings.of(None, tmp_path)) == \
        ("postgres", {"host": "db.internal", "port": "5432", "user": "analyst", "dbname": "shop"})
