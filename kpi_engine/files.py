"""Writing output files atomically: a reader never sees a half-written file, a failure
(an error, a timeout, Ctrl-C, a full disk) leaves none, and an existing file is only ever
replaced whole. A file that cannot be written is an ``OutputError`` naming the path and why.

Only a regular file is ever replaced. A terminal, a pipe or another character device
(``-o /dev/stdout``, ``-o /dev/null``, a named pipe), or a symbolic link to one, is written
through, as the shell's ``>`` would: the device stays what it is. When the path is this
process's own standard output or error (``-o /dev/stdout`` with the output redirected to a
file), the complete result is written to that descriptor, after what was written before. A
symbolic link to a file stays a link; the file it points to is replaced. Anything else (a
folder, a block device, a socket) is refused.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import sys
import tempfile
from pathlib import Path
from typing import Iterator

from .errors import OutputError, UsageError

# What to do about the usual reasons a file cannot be written.
_REMEDIES = {
    errno.ENOSPC: "Free some space on that disk, or write elsewhere.",
    errno.EDQUOT: "Free some of your disk quota, or write elsewhere.",
    errno.EROFS: "That file system is mounted read-only: write elsewhere.",
    errno.EACCES: "Choose a folder you may write to, or change its permissions.",
    errno.EPERM: "Choose a folder you may write to, or change its permissions.",
    errno.ENAMETOOLONG: "Use a shorter file name.",
}


def _name_max(directory: Path) -> int:
    try:
        return os.pathconf(directory, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):  # not every system or file system says
        return 255


def cannot_write(path: Path, error: OSError) -> OutputError:
    """An OSError from writing ``path`` as one clear error; any file already there is unchanged."""
    cause = error.strerror or str(error)
    remedy = _REMEDIES.get(error.errno, "Check the path, its folder's permissions and the disk.")
    return OutputError(f"cannot write '{path}': {cause}.", None, f"{remedy} Any file already there is unchanged.")


def check_writable(path: str | Path) -> None:
    """Fail now, before a long query, when ``path`` cannot be written: its folder is missing,
    its name is too long for the file system, or the folder refuses a new file. (A terminal,
    a pipe or this process's own output is written through: nothing to check.)"""
    path = Path(path)
    if writes_through(path):
        return
    if _is_link(path):
        path = Path(os.path.realpath(path))
    _, temp = _temporary_beside(path)
    with contextlib.suppress(OSError):
        temp.unlink()


_OWN_DESCRIPTORS = (1, 2)  # standard output and standard error


@contextlib.contextmanager
def replacing(path: str | Path) -> Iterator[Path]:
    """A path to write: a temporary file beside ``path``, renamed onto it when the block ends
    normally and removed otherwise; ``path`` itself when it is a terminal, a pipe or another
    character device. The file is readable by all (0644), or keeps the mode of the file it
    replaces: results are meant to be shared."""
    path = Path(path)
    kind, descriptor = _kind(path)
    if kind == "device":
        yield path
        return
    if kind == "descriptor":
        with _copied_to(descriptor) as temp:
            yield temp
        return
    if _is_link(path):  # replace (or create) the file it points to; the link stays a link
        path = Path(os.path.realpath(path))
    mode, temp = _temporary_beside(path)
    try:
        yield temp
        os.chmod(temp, mode)
        os.replace(temp, path)
    except BaseException as failure:
        with contextlib.suppress(OSError):
            temp.unlink(missing_ok=True)
        if isinstance(failure, OSError):  # a full disk, a quota, the folder gone read-only
            raise cannot_write(path, failure) from None
        raise


def _kind(path: Path) -> tuple[str, int | None]:
    """('missing' | 'file' | 'device' | 'descriptor', the descriptor for 'descriptor').

    'device': a character device or a pipe (or a link to one), written through; 'descriptor':
    this process's standard output or error, whatever it is; anything else is refused."""
    try:
        info = path.stat()  # follows symbolic links
    except FileNotFoundError:  # (also a link to nothing: what it points to is created, as '>' does)
        return "missing", None
    except OSError as error:
        if error.errno == errno.ENAMETOOLONG:  # no such file can exist: _temporary_beside says why
            return "missing", None
        raise cannot_write(path, error) from None  # e.g. a folder that may not be entered
    if stat.S_ISCHR(info.st_mode) or stat.S_ISFIFO(info.st_mode):
        return "device", None
    descriptor = _own_descriptor(info)
    if descriptor is not None:
        return "descriptor", descriptor
    if stat.S_ISREG(info.st_mode):
        return "file", None
    what = "a folder" if stat.S_ISDIR(info.st_mode) else \
        "a block device" if stat.S_ISBLK(info.st_mode) else \
        "a socket" if stat.S_ISSOCK(info.st_mode) else "not a regular file"
    raise UsageError(f"cannot write '{path}': it is {what}.", None,
                     "Write to a file (it is replaced whole), a pipe or a terminal such as /dev/stdout.")


def writes_through(path: str | Path) -> bool:
    """True for a terminal, a pipe or this process's own output: written as it is, not a file."""
    return _kind(Path(path))[0] in ("device", "descriptor")


def _is_link(path: Path) -> bool:
    try:
        return path.is_symlink()
    except OSError:  # a name too long to be one: _temporary_beside says so
        return False


def _own_descriptor(info: os.stat_result) -> int | None:
    """1 or 2 when ``info`` is the file this process's standard output or error writes to."""
    for descriptor in _OWN_DESCRIPTORS:
        try:
            own = os.fstat(descriptor)
        except OSError:  # closed
            continue
        if (own.st_dev, own.st_ino) == (info.st_dev, info.st_ino):
            return descriptor
    return None


@contextlib.contextmanager
def _copied_to(descriptor: int) -> Iterator[Path]:
    """A temporary file whose content goes to ``descriptor`` when the block ends normally: the
    descriptor's position is shared with the shell, so output before and after stays in order;
    a failure writes nothing."""
    fd, name = tempfile.mkstemp(prefix=".kpi-engine-output.")
    os.close(fd)
    temp = Path(name)
    try:
        yield temp
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()  # what Python buffered for this descriptor goes first
        with open(temp, "rb") as source, os.fdopen(os.dup(descriptor), "wb") as target:
            shutil.copyfileobj(source, target)
    finally:
        temp.unlink(missing_ok=True)


def _temporary_beside(path: Path) -> tuple[int, Path]:
    """(the mode the file will have, a new empty temporary file in its folder)."""
    directory = path.parent if str(path.parent) else Path(".")
    try:
        os.stat(directory)
    except FileNotFoundError:
        raise UsageError(f"cannot write '{path}': folder '{directory}' does not exist.", None, "Create it first.") from None
    except OSError as error:  # a folder that may not be entered, a file where a folder should be
        raise cannot_write(path, error) from None
    size, limit = len(os.fsencode(path.name)), _name_max(directory)
    if size > limit:
        raise cannot_write(path, OSError(errno.ENAMETOOLONG, f"the file name is {size:,} bytes long; "
                                                             f"this file system allows {limit}"))
    try:
        mode = path.stat().st_mode & 0o777 if path.is_file() else 0o644
        # A short prefix: the temporary name must fit wherever the final one does.
        fd, name = tempfile.mkstemp(prefix=f".{path.name[:32]}.", dir=directory)
        os.close(fd)
    except OSError as error:
        raise cannot_write(path, error) from None
    return mode, Path(name)


def write_atomically(path: str | Path, content: str | bytes) -> None:
    with replacing(path) as temp:
        if isinstance(content, bytes):
            temp.write_bytes(content)
        else:
            with open(temp, "w", encoding="utf-8", newline="") as handle:
                handle.write(content)
