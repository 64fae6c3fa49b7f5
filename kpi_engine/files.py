"""Writing output files atomically: a reader never sees a half-written file, a failure
(an error, a timeout, Ctrl-C, a full disk) leaves none, and an existing file is only ever
replaced whole. A file that cannot be written is an ``OutputError`` naming the path and why."""

from __future__ import annotations

import contextlib
import errno
import os
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
    its name is too long for the file system, or the folder refuses a new file."""
    _, temp = _temporary_beside(Path(path))
    with contextlib.suppress(OSError):
        temp.unlink()


@contextlib.contextmanager
def replacing(path: str | Path) -> Iterator[Path]:
    """A temporary file beside ``path`` to write; renamed onto ``path`` when the block ends
    normally, removed otherwise. The file is readable by all (0644), or keeps the mode of
    the file it replaces: results are meant to be shared."""
    path = Path(path)
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
