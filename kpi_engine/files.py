"""Writing output files atomically: a reader never sees a half-written file, a failure
(an error, a timeout, Ctrl-C) leaves none, and an existing file is only ever replaced whole.

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
import os
import shutil
import stat
import sys
import tempfile
from pathlib import Path
from typing import Iterator

from .errors import UsageError

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
    if path.is_symlink():  # replace (or create) the file it points to; the link stays a link
        path = Path(os.path.realpath(path))
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise UsageError(f"cannot write '{path}': folder '{directory}' does not exist.", None, "Create it first.")
    mode = path.stat().st_mode & 0o777 if kind == "file" else 0o644
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", dir=directory)
    os.close(fd)
    temp = Path(name)
    try:
        yield temp
        os.chmod(temp, mode)
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
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
        raise UsageError(f"cannot write '{path}': {error.strerror or error}.", None,
                         "Choose another output file.") from None
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


def write_atomically(path: str | Path, content: str | bytes) -> None:
    with replacing(path) as temp:
        if isinstance(content, bytes):
            temp.write_bytes(content)
        else:
            with open(temp, "w", encoding="utf-8", newline="") as handle:
                handle.write(content)
