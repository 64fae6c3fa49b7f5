"""Output files that cannot be written: a read-only folder, a full disk, a name too long for the
file system. Each is one clear error (exit 1) naming the path and the cause, never a traceback;
a file already there keeps its content and no temporary file is left behind.

The read-only folder is real: as root (who may write anywhere) the command runs with 'nobody' as
its effective user. A
read-only file system and a full disk are real too, made with a small tmpfs mounted in a private
user and mount namespace (``unshare -rm``), so nothing outside the test sees it; a second test
simulates the full disk inside the process, for systems without unshare.
"""

from __future__ import annotations

import errno
import os
import pwd
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from kpi_engine.cli import cli

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "marketing"
# The example project by day: about 4,400 rows of CSV, far more than the 16 KB disk below.
BIG = ("evaluate", str(EXAMPLE), "cost_per_lead", "--by", "channel", "--grain", "day")
OLD = "the previous result\n"


def run(*args: str):
    result = CliRunner().invoke(cli, list(args))
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result


def assert_refused(stderr: str, path: Path, cause: str) -> None:
    assert "Traceback" not in stderr
    assert stderr.startswith(f"Error: cannot write '{path}': {cause}."), stderr
    assert "Any file already there is unchanged." in stderr


def _no_query(monkeypatch) -> None:
    """From here on, compiling a query fails the test: the error must come before any query."""
    from kpi_engine.engine import KpiProject

    def compile(*args, **kwargs):
        raise AssertionError("a query was compiled before the output path was checked")

    monkeypatch.setattr(KpiProject, "compile", compile)


def test_a_name_too_long_for_the_file_system(tmp_path, monkeypatch):
    limit = os.pathconf(tmp_path, "PC_NAME_MAX")
    long_name = tmp_path / ("r" * (limit - 4) + ".csv")  # exactly the limit: written
    result = run(*BIG[:3], "-o", str(long_name), "--format", "csv")
    assert result.exit_code == 0 and long_name.read_text().startswith("cost_per_lead,complete\n")
    _no_query(monkeypatch)
    too_long = tmp_path / ("r" * (limit - 3) + ".csv")
    for command in (BIG[:3], ("report", str(EXAMPLE), "cost_per_lead", "--as-of", "2025-06-01"),
                    ("docs", str(EXAMPLE))):
        result = run(*command, "-o", str(too_long))
        assert result.exit_code == 1
        assert_refused(result.stderr, too_long, f"the file name is {limit + 1:,} bytes long; this file system "
                                                f"allows {limit}")
    assert sorted(p.name for p in tmp_path.iterdir()) == [long_name.name]


def test_a_read_only_folder(tmp_path, monkeypatch):
    folder = tmp_path / "out"
    if os.geteuid() == 0:
        # Root writes anywhere: the command runs with the effective user 'nobody' (a folder it may
        # enter but not write), after a first run as root has imported every module it needs.
        try:
            nobody = pwd.getpwnam("nobody")
        except KeyError:
            pytest.skip("running as root and there is no 'nobody' account to run the command as")
        folder = Path(tempfile.mkdtemp(prefix="kpi-readonly-"))
        folder.chmod(0o755)
    else:
        folder.mkdir()
    try:
        (folder / "kpis.csv").write_text(OLD)
        assert run(*BIG, "-o", str(tmp_path / "first.csv"), "--format", "csv").exit_code == 0
        _no_query(monkeypatch)
        if os.geteuid() == 0:
            os.setegid(nobody.pw_gid)
            os.seteuid(nobody.pw_uid)
        else:
            folder.chmod(0o555)
        try:
            result = run(*BIG, "-o", str(folder / "kpis.csv"), "--format", "csv")
        finally:
            if os.getuid() == 0:
                os.seteuid(0)
                os.setegid(0)
            folder.chmod(0o755)
        assert result.exit_code == 1
        assert_refused(result.stderr, folder / "kpis.csv", "Permission denied")
        assert [p.name for p in folder.iterdir()] == ["kpis.csv"] and (folder / "kpis.csv").read_text() == OLD
    finally:
        if folder.parent != tmp_path:
            shutil.rmtree(folder, ignore_errors=True)


def _private_mount_available() -> str | None:
    """Why a tmpfs cannot be mounted in a private namespace here, or None when it can."""
    if not shutil.which("unshare"):
        return "no 'unshare' command"
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=16k tmpfs /mnt"],
                           capture_output=True, text=True)
    return None if probe.returncode == 0 else f"cannot mount a tmpfs in a private namespace: {probe.stderr.strip()}"


def in_private_tmpfs(folder: Path, options: str, then: str, *command: str) -> subprocess.CompletedProcess:
    """Mount a tmpfs (``options``) on ``folder`` where only this command sees it, write the old
    result there, run ``then`` (e.g. remount it read-only), then the command; list the folder
    and print the old file afterwards, from inside the namespace (the mount goes with it)."""
    cli_line = " ".join(shlex.quote(part) for part in (sys.executable, "-m", "kpi_engine.cli", *command))
    script = (f"mount -t tmpfs -o {options} tmpfs {shlex.quote(str(folder))} && "
              f"printf %s {shlex.quote(OLD)} > {shlex.quote(str(folder / 'kpis.csv'))} && {then} && "
              f"{{ {cli_line}; echo \"exit=$?\" >&2; ls -A {shlex.quote(str(folder))} >&2; "
              f"cat {shlex.quote(str(folder / 'kpis.csv'))} >&2; }}")
    return subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("fmt", ["csv", "table"])  # written batch by batch, and all at once
def test_a_full_disk(tmp_path, fmt):
    reason = _private_mount_available()
    if reason:
        pytest.skip(reason)
    folder = tmp_path / "small"
    folder.mkdir()
    done = in_private_tmpfs(folder, "size=16k", "true", *BIG, "-o", str(folder / "kpis.csv"), "--format", fmt)
    assert_refused(done.stderr, folder / "kpis.csv", "No space left on device")
    # Exit 1; only the old file is there, unchanged.
    assert done.stderr.endswith(f"exit=1\nkpis.csv\n{OLD}"), done.stderr


def test_a_read_only_file_system(tmp_path):
    reason = _private_mount_available()
    if reason:
        pytest.skip(reason)
    folder = tmp_path / "frozen"
    folder.mkdir()
    done = in_private_tmpfs(folder, "size=1m", f"mount -o remount,ro {shlex.quote(str(folder))}",
                            *BIG, "-o", str(folder / "kpis.csv"), "--format", "csv")
    assert_refused(done.stderr, folder / "kpis.csv", "Read-only file system")
    assert "That file system is mounted read-only" in done.stderr
    assert done.stderr.endswith(f"exit=1\nkpis.csv\n{OLD}"), done.stderr


@pytest.mark.parametrize("fmt", ["csv", "json", "table"])
def test_a_full_disk_simulated_in_the_writer(tmp_path, monkeypatch, fmt):
    """The same, where unshare is not available: every write to the temporary file fails with
    ENOSPC after the first 1,000 bytes, as the system call would."""
    import builtins

    real_open = builtins.open

    class FullDisk:
        def __init__(self, handle):
            self.handle, self.written = handle, 0

        def write(self, text):
            self.written += len(text)
            if self.written > 1000:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return self.handle.write(text)

        def __getattr__(self, name):
            return getattr(self.handle, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

    def opening(file, mode="r", *args, **kwargs):
        handle = real_open(file, mode, *args, **kwargs)
        return FullDisk(handle) if "w" in mode and Path(file).name.startswith(".kpis.csv.") else handle

    monkeypatch.setattr(builtins, "open", opening)
    (tmp_path / "kpis.csv").write_text(OLD)
    result = run(*BIG, "-o", str(tmp_path / "kpis.csv"), "--format", fmt)
    assert result.exit_code == 1
    assert_refused(result.stderr, tmp_path / "kpis.csv", "No space left on device")
    assert "Free some space on that disk" in result.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["kpis.csv"] and (tmp_path / "kpis.csv").read_text() == OLD
