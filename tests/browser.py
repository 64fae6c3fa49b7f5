"""Load a local HTML file in headless Chromium: console messages, rendered DOM, screenshot.

    from browser import load_page, require_chromium, distinct_colours

    page = load_page(Path("report.html"), tmp_path)     # skips the test when Chromium is missing
    assert "kpi-report-ready" in " ".join(page.console) and not page.errors
    assert distinct_colours(page.screenshot) > 20

Chromium runs with a fresh profile, no network services and no GPU. Without Chromium the
test is skipped with the reason, unless KPI_ENGINE_REQUIRE_BROWSER is set (CI): then it fails.
KPI_ENGINE_CHROMIUM names the browser binary to use.

Console messages are read from Chromium's log on stderr (--enable-logging=stderr --v=1),
lines like ``[...:INFO:CONSOLE:12] "message", source: file:///page.html (12)``. That log does
not say whether a message came from console.log or console.error, so ``errors`` recognises
them by text: uncaught exceptions, Content-Security-Policy violations, failed loads, and
messages the pages under test log with an ``-error:`` marker (``kpi-report-error: ...``).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import struct
import subprocess
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import pytest

NAMES = ("chromium", "chromium-browser", "google-chrome")
FALLBACKS = ("/usr/bin/chromium",)
REQUIRE = "KPI_ENGINE_REQUIRE_BROWSER"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--enable-logging=stderr", "--v=1")
_CONSOLE = re.compile(r'CONSOLE[^\]]*\]\s*"(?P<message>.*)", source: (?P<source>.*?)(?: \(\d+\))?\s*$')
_ERROR_TEXT = re.compile(r"^Uncaught\b|Content Security Policy|Failed to load|net::ERR_|^[\w-]*-error:|"
                         r"Refused to", re.IGNORECASE)


def find_chromium() -> str | None:
    """The Chromium binary: $KPI_ENGINE_CHROMIUM, a known name on PATH, or /usr/bin/chromium."""
    explicit = os.environ.get("KPI_ENGINE_CHROMIUM")
    if explicit:
        return explicit if shutil.which(explicit) else None
    for name in NAMES:
        found = shutil.which(name)
        if found:
            return found
    return next((path for path in FALLBACKS if os.access(path, os.X_OK)), None)


def require_chromium() -> str:
    """The Chromium binary, or skip the test (fail it when KPI_ENGINE_REQUIRE_BROWSER is set)."""
    binary = find_chromium()
    if binary is None:
        explicit = os.environ.get("KPI_ENGINE_CHROMIUM")
        looked = (f"KPI_ENGINE_CHROMIUM={explicit} is not an executable" if explicit else
                  f"looked for {', '.join(NAMES)} on PATH and {', '.join(FALLBACKS)}")
        reason = f"headless Chromium not found ({looked}); install it with 'apt-get install chromium' to run the browser tests"
        if os.environ.get(REQUIRE):
            pytest.fail(f"{reason}; {REQUIRE} is set, so the browser tests must run.")
        pytest.skip(reason)
    return binary


@dataclass
class PageLoad:
    console: list[str]  # console messages of the screenshot run, in order
    dom: str  # the DOM after the page's scripts ran (--dump-dom)
    dom_console: list[str]  # console messages of the --dump-dom run
    screenshot: Path  # PNG of the first 1200x2000 pixels
    log: str  # Chromium's stderr, for failure messages

    @property
    def errors(self) -> list[str]:
        """Console messages that are errors (see the module docstring)."""
        return [message for message in self.console + self.dom_console if _ERROR_TEXT.search(message)]


def console_messages(stderr: str) -> list[str]:
    """The console messages in Chromium's stderr log."""
    return [match.group("message") for line in stderr.splitlines() if "CONSOLE" in line
            for match in [_CONSOLE.search(line)] if match]


def _run(binary: str, extra: list[str], url: str, timeout: float) -> subprocess.CompletedProcess:
    """Run Chromium once with a new, throw-away profile; kill its process group on a timeout."""
    profile = tempfile.mkdtemp(prefix="kpi-engine-chromium-")
    command = [binary, *FLAGS, f"--user-data-dir={profile}", *extra, url]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                               start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # the group we started: Chromium and its helpers
        process.communicate()
        raise AssertionError(f"Chromium did not finish within {timeout:g} s: {' '.join(command)}") from None
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    return subprocess.CompletedProcess(command, process.returncode, stdout.decode("utf-8", "replace"),
                                       stderr.decode("utf-8", "replace"))


def load_page(path: Path, workdir: Path, *, window: tuple[int, int] = (1200, 2000),
              timeout: float = 120) -> PageLoad:
    """Open the file ``path`` twice in headless Chromium: once for a screenshot (written to
    ``workdir``) and once for the rendered DOM; the console messages of both runs are kept."""
    binary = require_chromium()
    url = Path(path).resolve().as_uri()
    screenshot = Path(workdir) / (Path(path).stem + ".png")
    shot = _run(binary, [f"--screenshot={screenshot}", f"--window-size={window[0]},{window[1]}"], url, timeout)
    assert shot.returncode == 0 and screenshot.is_file(), (
        f"Chromium could not take a screenshot (exit {shot.returncode}):\n{shot.stderr[-4000:]}")
    dump = _run(binary, ["--dump-dom"], url, timeout)
    assert dump.returncode == 0 and dump.stdout.strip(), (
        f"Chromium could not dump the DOM (exit {dump.returncode}):\n{dump.stderr[-4000:]}")
    return PageLoad(console=console_messages(shot.stderr), dom=dump.stdout,
                    dom_console=console_messages(dump.stderr), screenshot=screenshot, log=shot.stderr + dump.stderr)


# --- PNG, in pure Python ---------------------------------------------------------------

_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # colour type -> samples per pixel


def _add_bytes(a: bytes, b: bytes) -> bytes:
    """a + b byte by byte, modulo 256, all at once on big integers (the PNG 'Up' filter)."""
    n = len(a)
    low, high = int.from_bytes(b"\x7f" * n, "big"), int.from_bytes(b"\x80" * n, "big")
    x, y = int.from_bytes(a, "big"), int.from_bytes(b, "big")
    return (((x & low) + (y & low)) ^ ((x ^ y) & high)).to_bytes(n, "big")


def png_rows(path: Path) -> tuple[int, int, int, list[bytes]]:
    """(width, height, bytes per pixel, unfiltered rows) of an 8-bit, non-interlaced PNG."""
    data = Path(path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    pos, idat, header = 8, [], None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", chunk)
        elif kind == b"IDAT":
            idat.append(chunk)
        elif kind == b"IEND":
            break
    assert header, f"{path} has no IHDR chunk"
    width, height, depth, colour, _, _, interlace = header
    assert depth == 8 and interlace == 0 and colour in _CHANNELS, f"unsupported PNG {header}"
    bpp = _CHANNELS[colour]
    raw = zlib.decompress(b"".join(idat))
    stride = width * bpp
    rows, previous = [], bytes(stride)
    for r in range(height):
        start = r * (stride + 1)
        kind, line = raw[start], raw[start + 1:start + 1 + stride]
        if kind == 0:
            row = bytes(line)
        elif kind == 2:
            row = _add_bytes(line, previous)
        else:
            out = bytearray(line)
            for i in range(stride):
                left = out[i - bpp] if i >= bpp else 0
                up = previous[i]
                if kind == 1:
                    out[i] = (out[i] + left) & 0xFF
                elif kind == 3:
                    out[i] = (out[i] + ((left + up) >> 1)) & 0xFF
                elif kind == 4:
                    up_left = previous[i - bpp] if i >= bpp else 0
                    p = left + up - up_left
                    pa, pb, pc = abs(p - left), abs(p - up), abs(p - up_left)
                    predictor = left if pa <= pb and pa <= pc else (up if pb <= pc else up_left)
                    out[i] = (out[i] + predictor) & 0xFF
                else:
                    raise AssertionError(f"bad PNG filter {kind} in row {r}")
            row = bytes(out)
        rows.append(row)
        previous = row
    return width, height, bpp, rows


def distinct_colours(path: Path) -> int:
    """How many different pixel values a PNG holds (a blank page has one or two)."""
    _, _, bpp, rows = png_rows(path)
    colours: set = set()
    for row in rows:
        colours.update(zip(*(row[c::bpp] for c in range(bpp))))
    return len(colours)
