"""-o never replaces anything but a regular file: a terminal, a pipe, /dev/null or a named
pipe (or a link to one) is written through; a link to a file stays a link; this process's own
standard output works as standard output; a folder, a block device or a socket is refused."""

import os
import socket
import stat
import subprocess
import sys
import threading

import pytest
from click.testing import CliRunner

from kpi_engine.cli import cli
from kpi_engine.errors import UsageError
from kpi_engine.files import write_atomically

SPEC = "sources:\n  leads: {table: leads, time: created_at}\nkpis:\n  n: {formula: count(leads)}\n"
LEADS = [{"created_at": "2025-01-01"}, {"created_at": "2025-01-02"}]
CSV = "n,complete\n2,true\n"  # two leads (a count: a whole number); no range: the whole of the data, complete


@pytest.fixture
def project(make_project):
    return make_project({"s.yaml": SPEC}, {"leads": LEADS})


def kpi_engine(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "kpi_engine.cli", *map(str, args)], timeout=120, **kwargs)


def evaluate(project, output):
    return CliRunner().invoke(cli, ["evaluate", str(project), "n", "--format", "csv", "-o", str(output)])


# The standard output is named /dev/fd/1 here, the same link into /proc as /dev/stdout: a writer
# that regressed to replacing what it is given fails inside /proc instead of replacing the test
# machine's /dev/stdout (which it did, run as root). Devices are likewise reached through links
# in the test's own folder, or under /dev/pts, where no file can be created.
STDOUT = "/dev/fd/1"


def test_standard_output_on_a_pipe_is_written_through(project):
    streamed = kpi_engine("evaluate", project, "n", "--format", "csv", "-o", STDOUT, capture_output=True, text=True)
    assert streamed.returncode == 0 and streamed.stdout == CSV, streamed.stderr
    table = kpi_engine("evaluate", project, "n", "-o", STDOUT, capture_output=True, text=True)
    assert table.returncode == 0 and [line.rstrip() for line in table.stdout.splitlines()[-2:]] == [
        "2 │ yes", "1 row"], table.stderr
    docs = kpi_engine("docs", project, "-o", STDOUT, capture_output=True, text=True)
    assert docs.returncode == 0 and docs.stdout.startswith("# KPI catalogue")
    assert os.path.islink("/dev/stdout") and os.path.islink("/dev/fd")


def test_standard_output_redirected_to_a_file_gets_the_result_in_order(project, tmp_path):
    """'-o /dev/stdout > file': the result goes through the shell's descriptor, after what was
    written before; the file is not replaced (its inode stays)."""
    target = tmp_path / "out.csv"
    with open(target, "w") as handle:
        handle.write("before\n")
        handle.flush()
        inode = os.fstat(handle.fileno()).st_ino
        done = kpi_engine("evaluate", project, "n", "--format", "csv", "-o", STDOUT, stdout=handle,
                          stderr=subprocess.PIPE, text=True)
        handle.write("after\n")
    assert done.returncode == 0, done.stderr
    assert target.read_text() == "before\n" + CSV + "after\n"
    assert target.stat().st_ino == inode


def test_a_terminal_dev_null_and_a_named_pipe_are_written_through(project, tmp_path):
    master, slave = os.openpty()
    try:
        terminal = os.ttyname(slave)
        link = tmp_path / "tty"
        link.symlink_to(terminal)
        for output in (terminal, link):
            assert evaluate(project, output).exit_code == 0
            assert os.read(master, 4096).replace(b"\r\n", b"\n") == CSV.encode()  # the terminal got it
        assert link.is_symlink() and stat.S_ISCHR(os.stat(terminal).st_mode)
    finally:
        os.close(master)
        os.close(slave)
    null = tmp_path / "null"
    null.symlink_to("/dev/null")
    assert evaluate(project, null).exit_code == 0 and null.is_symlink()
    fifo = tmp_path / "results.pipe"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_text()), daemon=True)
    reader.start()
    result = evaluate(project, fifo)
    reader.join(timeout=60)
    assert result.exit_code == 0 and received == [CSV]
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_a_link_to_a_file_stays_a_link(project, tmp_path):
    target, link = tmp_path / "target.csv", tmp_path / "link.csv"
    target.write_text("old\n")
    target.chmod(0o600)
    link.symlink_to(target)
    assert evaluate(project, link).exit_code == 0
    assert link.is_symlink() and target.read_text() == CSV
    assert stat.S_IMODE(target.stat().st_mode) == 0o600  # the file's mode is kept
    dangling, missing = tmp_path / "dangling.csv", tmp_path / "created.csv"
    dangling.symlink_to(missing)
    assert evaluate(project, dangling).exit_code == 0
    assert dangling.is_symlink() and missing.read_text() == CSV  # created where the link points, as '>' does


def test_a_socket_is_refused(project, tmp_path):
    path = tmp_path / "s.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    try:
        result = evaluate(project, path)
    finally:
        server.close()
    assert result.exit_code == 2 and "it is a socket" in result.stderr
    assert stat.S_ISSOCK(os.lstat(path).st_mode)


def test_the_python_api_writer_follows_the_same_rules(tmp_path):
    link = tmp_path / "link.html"
    (tmp_path / "page.html").write_text("old")
    link.symlink_to(tmp_path / "page.html")
    write_atomically(link, b"<p>new</p>")
    assert link.is_symlink() and (tmp_path / "page.html").read_bytes() == b"<p>new</p>"
    folder_link = tmp_path / "to_folder"
    folder_link.symlink_to(tmp_path)
    with pytest.raises(UsageError, match="it is a folder"):
        write_atomically(folder_link, "x")
    assert folder_link.is_symlink()
