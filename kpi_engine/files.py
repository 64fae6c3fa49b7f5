"""Writing output files atomically: a reader never sees a half-written file, a failure
(an error, a timeout, Ctrl-C) leaves none, and an existing file is only ever replaced whole."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

from .errors import UsageError


@contextlib.contextmanager
def replacing(path: str | Path) -> Iterator[Path]:
    """A temporary file beside ``path`` to write; renamed onto ``path`` when the block ends
    normally, removed otherwise. The file is readable by all (0644), or keeps the mode of
    the file it replaces: results are meant to be shared."""
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise UsageError(f"cannot write '{path}': folder '{directory}' does not exist.", None, "Create it first.")
    mode = path.stat().st_mode & 0o777 if path.is_file() else 0o644
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


def write_atomically(path: str | Path, content: str | bytes) -> None:
    with replacing(path) as temp:
        if isinstance(content, bytes):
            temp.write_bytes(content)
        else:
            with open(temp, "w", encoding="utf-8", newline="") as handle:
                handle.write(content)
