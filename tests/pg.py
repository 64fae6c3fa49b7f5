"""A throwaway PostgreSQL server for the tests, as a pytest plugin.

Use it from a test module with ``pytest_plugins = ["pg"]``; it provides

- ``pg_server`` (session scope): a running ``PgServer`` with a database and a login user
  that authenticates with a password over TCP (scram-sha-256), so a wrong password is
  really refused;
- ``pg_url``: that server's ``postgresql://user:password@127.0.0.1:port/dbname`` URL;

and marks every test that uses them with the ``postgres`` marker (``-m postgres`` or
``-m "not postgres"``).

The server binaries (``initdb``, ``pg_ctl``, ``postgres``) are looked up on ``PATH``, then in
``/usr/lib/postgresql/*/bin`` (newest first). A cluster is created in a temporary folder with
``initdb``, started with ``pg_ctl`` on ``127.0.0.1`` and a free port (its unix socket stays in
the temporary folder), and at the end of the session stopped and deleted. PostgreSQL refuses to
run as root, so under root the server commands run as the ``postgres`` user (or ``nobody``),
which owns the temporary folder.

Without server binaries or psycopg the tests are skipped, unless ``KPI_ENGINE_REQUIRE_POSTGRES``
is set (CI sets it), in which case they fail.
"""

from __future__ import annotations

import atexit
import glob
import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import pytest

REQUIRE_ENV = "KPI_ENGINE_REQUIRE_POSTGRES"
SERVER_PROGRAMS = ("initdb", "pg_ctl", "postgres")
SEARCH_GLOB = "/usr/lib/postgresql/*/bin"
UNPRIVILEGED_USERS = ("postgres", "nobody")
MARKER = "postgres"
FIXTURES = {"pg_server", "pg_url"}


class Unavailable(Exception):
    """PostgreSQL cannot be used here (no binaries, no psycopg): skip, or fail when required."""


def required() -> bool:
    return os.environ.get(REQUIRE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def find_bin_dir() -> Path:
    """The folder holding initdb, pg_ctl and postgres: from PATH, then /usr/lib/postgresql/*/bin."""
    on_path = shutil.which("initdb")
    if on_path:
        folder = Path(os.path.realpath(on_path)).parent  # /usr/local/bin/initdb may be a symlink
        if all((folder / program).is_file() for program in SERVER_PROGRAMS):
            return folder
        if all(shutil.which(program) for program in SERVER_PROGRAMS):
            return Path(on_path).parent

    def version(folder: str) -> tuple:
        return tuple(int(part) for part in re.findall(r"\d+", Path(folder).parent.name)) or (0,)

    for folder in sorted(glob.glob(SEARCH_GLOB), key=version, reverse=True):
        if all((Path(folder) / program).is_file() for program in SERVER_PROGRAMS):
            return Path(folder)
    raise Unavailable("no PostgreSQL server binaries (initdb, pg_ctl, postgres) on PATH or in "
                      f"{SEARCH_GLOB}; install them, e.g. apt-get install postgresql")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class PgServer:
    """A running throwaway cluster: one database and one password-authenticated login user."""

    bin_dir: Path
    root: Path
    port: int
    user: str = "kpi_tester"
    password: str = field(default_factory=lambda: "pw-" + secrets.token_urlsafe(12) + "/@:x")
    dbname: str = "kpi_test"
    host: str = "127.0.0.1"
    run_as: str | None = None  # the unprivileged account the server runs as, when we are root

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root / "socket"

    @property
    def log_file(self) -> Path:
        return self.root / "server.log"

    @property
    def url(self) -> str:
        """postgresql://user:password@127.0.0.1:port/dbname, the password percent-encoded."""
        return f"postgresql://{self.user}:{quote(self.password, safe='')}@{self.host}:{self.port}/{self.dbname}"

    def admin_connect(self, dbname: str | None = None):
        """A psycopg connection as the cluster's superuser, over the unix socket (trusted)."""
        import psycopg

        return psycopg.connect(host=str(self.socket_dir), port=self.port, user="postgres",
                               dbname=dbname or self.dbname, autocommit=True)

    def connect(self):
        """A psycopg connection as the test user over TCP (password), with write access."""
        import psycopg

        return psycopg.connect(host=self.host, port=self.port, user=self.user, password=self.password,
                               dbname=self.dbname, autocommit=True)

    # -- life cycle
    def _run(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
        env.update(LC_ALL="C", LANG="C")
        kwargs = {}
        if self.run_as:
            account = pwd.getpwnam(self.run_as)
            kwargs = dict(user=account.pw_uid, group=account.pw_gid, extra_groups=[])
            env.update(HOME=str(self.root), USER=self.run_as, LOGNAME=self.run_as)
        result = subprocess.run([str(self.bin_dir / args[0]), *args[1:]], cwd=self.root, env=env,
                                capture_output=True, text=True, timeout=timeout, **kwargs)
        if check and result.returncode != 0:
            raise RuntimeError(f"{args[0]} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}\n"
                               f"{self.log_tail()}")
        return result

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "server log:\n" + "\n".join(self.log_file.read_text().splitlines()[-lines:])
        except OSError:
            return ""

    def init(self) -> None:
        self.socket_dir.mkdir()
        superuser_password = self.root / "superuser.pw"
        superuser_password.write_text(secrets.token_urlsafe(16) + "\n")
        if self.run_as:
            account = pwd.getpwnam(self.run_as)
            for path in (self.root, self.socket_dir, superuser_password):
                os.chown(path, account.pw_uid, account.pw_gid)
        # TCP needs a password (scram-sha-256); the unix socket in our private folder is trusted.
        self._run("initdb", "-D", str(self.data_dir), "-U", "postgres", f"--pwfile={superuser_password}",
                  "--auth-local=trust", "--auth-host=scram-sha-256", "--encoding=UTF8", "--locale=C",
                  "--no-sync")

    def start(self) -> None:
        options = " ".join([
            "-h", self.host, "-p", str(self.port), "-k", str(self.socket_dir),
            "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
            "-c", "max_connections=60", "-c", "password_encryption=scram-sha-256",
        ])
        self._run("pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_file), "-o", options, "-w", "-t", "60",
                  "start")

    def setup_database(self) -> None:
        from psycopg import sql

        with self.admin_connect("postgres") as admin:
            admin.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(self.user), sql.Literal(self.password)))
            admin.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(self.dbname), sql.Identifier(self.user)))

    def stop(self) -> None:
        if self.data_dir.is_dir() and (self.data_dir / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data_dir), "-m", "immediate", "-w", "-t", "30", "stop", check=False)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def _unprivileged_account() -> str | None:
    """None when we are not root; otherwise an account the server may run as."""
    if os.geteuid() != 0:
        return None
    for name in UNPRIVILEGED_USERS:
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise RuntimeError(f"running as root and none of the accounts {', '.join(UNPRIVILEGED_USERS)} exists; "
                       "PostgreSQL refuses to run as root (create a 'postgres' user, or run the tests unprivileged)")


def start_server() -> PgServer:
    """initdb + pg_ctl start + a database and a user. Raises Unavailable, or RuntimeError on failure."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        raise Unavailable("psycopg is not installed (pip install 'kpi-engine[test]')") from None
    bin_dir = find_bin_dir()
    run_as = _unprivileged_account()
    last_error: Exception | None = None
    for _ in range(3):  # the free port can be taken between choosing it and starting
        root = Path(tempfile.mkdtemp(prefix="kpi-pg-"))
        server = PgServer(bin_dir=bin_dir, root=root, port=free_port(), run_as=run_as)
        atexit.register(server.remove)  # also when the session is interrupted
        try:
            server.init()
            server.start()
            server.setup_database()
            return server
        except Exception as error:  # noqa: BLE001 - reported below
            last_error = error
            server.remove()
            time.sleep(0.2)
    raise RuntimeError(f"could not start a throwaway PostgreSQL server with {bin_dir}: {last_error}")


# --- pytest plugin ---------------------------------------------------------------------------------------


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", f"{MARKER}: needs a PostgreSQL server (a throwaway one is started "
                                       f"from the local binaries; set {REQUIRE_ENV}=1 to fail instead of skipping)")


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        if FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(MARKER)


@pytest.fixture(scope="session")
def pg_server():
    try:
        server = start_server()
    except Unavailable as reason:
        if required():
            pytest.fail(f"PostgreSQL is required ({REQUIRE_ENV} is set) but unavailable: {reason}", pytrace=False)
        pytest.skip(f"PostgreSQL unavailable: {reason} (set {REQUIRE_ENV}=1 to fail instead of skipping)")
    try:
        yield server
    finally:
        server.remove()


@pytest.fixture(scope="session")
def pg_url(pg_server) -> str:
    return pg_server.url
