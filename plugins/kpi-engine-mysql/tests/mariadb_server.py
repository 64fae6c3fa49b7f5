"""A throwaway MariaDB server for the tests (a pytest plugin, loaded by conftest.py).

``mariadb_server`` (session scope) is a running ``Server``: a data directory made by
``mariadb-install-db`` in a temporary folder, ``mariadbd`` listening on 127.0.0.1 and a free
port (its socket in the same folder), and databases with a password-authenticated user that
may write them, so the tests can load data and a wrong password is really refused. The server
reads no option file (``--no-defaults``), is stopped at the end of the session (or at exit)
and its folder deleted. Under root it runs as the ``mysql`` account (or ``nobody``), which owns
the folder.

The programs are looked up on PATH, then in /usr/sbin and /usr/bin. Without them (or without
pymysql) the tests are skipped, unless KPI_ENGINE_REQUIRE_MYSQL is set (CI sets it): then
they fail.
"""

from __future__ import annotations

import atexit
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import pytest

REQUIRE_ENV = "KPI_ENGINE_REQUIRE_MYSQL"
SERVERS = ("mariadbd", "mysqld")
INSTALLERS = ("mariadb-install-db", "mysql_install_db")
ACCOUNTS = ("mysql", "nobody")
DATABASES = ("kpi_marketing", "kpi_fixture", "kpi_scratch")
STARTUP_SECONDS = 60


class Unavailable(Exception):
    """No MariaDB here: skip, or fail when required."""


def required() -> bool:
    return os.environ.get(REQUIRE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def _program(names: tuple[str, ...]) -> str | None:
    for name in names:
        found = shutil.which(name) or next((str(Path(folder) / name) for folder in ("/usr/sbin", "/usr/bin")
                                            if (Path(folder) / name).is_file()), None)
        if found:
            return found
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _account() -> str | None:
    """None when not root; else the account the server runs as (mariadbd refuses root)."""
    if os.geteuid() != 0:
        return None
    for name in ACCOUNTS:
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise Unavailable(f"running as root and none of the accounts {', '.join(ACCOUNTS)} exists for mariadbd")


@dataclass
class Server:
    server: str
    installer: str
    root: Path
    port: int
    account: str | None
    user: str = "kpi_tester"
    # URL-hostile characters, to show that URLs with percent-encoding and redaction work.
    password: str = field(default_factory=lambda: "pw-" + secrets.token_urlsafe(10) + "/@:%x")
    host: str = "127.0.0.1"
    admin: str = "kpi_admin"  # all privileges: KILL, SET GLOBAL, the time zone tables
    admin_password: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    process: subprocess.Popen | None = None

    @property
    def socket_path(self) -> Path:
        return self.root / "mysqld.sock"

    @property
    def log_file(self) -> Path:
        return self.root / "error.log"

    def url(self, database: str = DATABASES[0]) -> str:
        return f"mysql://{self.user}:{quote(self.password, safe='')}@{self.host}:{self.port}/{database}"

    def settings(self, database: str = DATABASES[0], **more) -> dict:
        return {"adapter": "mysql", "host": self.host, "port": self.port, "user": self.user,
                "password": self.password, "database": database, **more}

    def connect(self, database: str = DATABASES[0], **options):
        """A writable pymysql connection as the test user (for loading data)."""
        import pymysql

        return pymysql.connect(host=self.host, port=self.port, user=self.user, password=self.password,
                               database=database, autocommit=True, charset="utf8mb4", **options)

    def admin_connect(self, **options):
        """A pymysql connection with all privileges (over TCP, no database selected)."""
        import pymysql

        return pymysql.connect(host=self.host, port=self.port, user=self.admin, password=self.admin_password,
                               autocommit=True, charset="utf8mb4", **options)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    # -- life cycle
    def _owned(self, path: Path) -> None:
        if self.account:
            account = pwd.getpwnam(self.account)
            os.chown(path, account.pw_uid, account.pw_gid)

    def start(self) -> None:
        data = self.root / "data"
        self._owned(self.root)
        account = ["--user=" + self.account] if self.account else []
        small = ["--innodb-log-file-size=8M", "--innodb-buffer-pool-size=32M"]
        installed = subprocess.run([self.installer, "--no-defaults", f"--datadir={data}", *account,
                                    "--skip-test-db", "--auth-root-authentication-method=socket", *small],
                                   capture_output=True, text=True, timeout=STARTUP_SECONDS)
        if installed.returncode != 0:
            raise RuntimeError(f"{self.installer} failed:\n{installed.stdout}\n{installed.stderr}")
        # The databases and the user, created by the server itself when it starts.
        init = self.root / "init.sql"
        escaped = self.password.replace("\\", "\\\\").replace("'", "\\'")
        lines = [f"CREATE USER '{self.user}'@'127.0.0.1' IDENTIFIED BY '{escaped}';",
                 f"CREATE USER '{self.user}'@'localhost' IDENTIFIED BY '{escaped}';",
                 f"CREATE USER '{self.admin}'@'127.0.0.1' IDENTIFIED BY '{self.admin_password}';",
                 f"GRANT ALL PRIVILEGES ON *.* TO '{self.admin}'@'127.0.0.1' WITH GRANT OPTION;"]
        for database in DATABASES:
            lines += [f"CREATE DATABASE `{database}` CHARACTER SET utf8mb4;",
                      f"GRANT ALL ON `{database}`.* TO '{self.user}'@'127.0.0.1', '{self.user}'@'localhost';"]
        init.write_text("\n".join(lines) + "\n", encoding="utf-8")
        init.chmod(0o600)
        self._owned(init)
        self.process = subprocess.Popen(
            [self.server, "--no-defaults", f"--datadir={data}", *account, f"--port={self.port}",
             f"--bind-address={self.host}", f"--socket={self.socket_path}", f"--pid-file={self.root / 'pid'}",
             f"--log-error={self.log_file}", f"--init-file={init}", "--skip-log-bin", "--skip-name-resolve",
             "--max-connections=60", "--innodb-flush-log-at-trx-commit=0", *small],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mariadbd exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                self.connect().close()
                return
            except Exception:  # noqa: BLE001 - not up yet
                time.sleep(0.2)
        raise RuntimeError(f"mariadbd did not accept connections within {STARTUP_SECONDS} s:\n{self.log_tail()}")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        shutil.rmtree(self.root, ignore_errors=True)


def start_server() -> Server:
    try:
        import pymysql  # noqa: F401
    except ImportError:
        raise Unavailable("pymysql is not installed (pip install plugins/kpi-engine-mysql)") from None
    server, installer = _program(SERVERS), _program(INSTALLERS)
    if not server or not installer:
        raise Unavailable("no MariaDB server programs (mariadbd and mariadb-install-db) on PATH, in /usr/sbin or "
                          "/usr/bin; install them, e.g. apt-get install mariadb-server")
    account = _account()
    failure: Exception | None = None
    for _ in range(3):  # the free port may be taken between choosing it and listening on it
        running = Server(server=server, installer=installer, root=Path(tempfile.mkdtemp(prefix="kpi-mysql-")),
                         port=_free_port(), account=account)
        atexit.register(running.stop)
        try:
            running.start()
            return running
        except Exception as error:  # noqa: BLE001 - reported below
            failure = error
            running.stop()
    raise RuntimeError(f"could not start a throwaway MariaDB server with {server}: {failure}")


@pytest.fixture(scope="session")
def mariadb_server():
    try:
        running = start_server()
    except Unavailable as reason:
        if required():
            pytest.fail(f"MariaDB is required ({REQUIRE_ENV} is set) but unavailable: {reason}", pytrace=False)
        pytest.skip(f"MariaDB unavailable: {reason} (set {REQUIRE_ENV}=1 to fail instead of skipping)")
    try:
        yield running
    finally:
        running.stop()
