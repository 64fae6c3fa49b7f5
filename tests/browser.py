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


# --- driving a page: the DevTools protocol over a pipe -------------------------------------

class BrowserSession:
    """Headless Chromium driven through the DevTools protocol on --remote-debugging-pipe (file
    descriptors 3 and 4, messages ended by NUL): navigate, evaluate, click with real mouse
    events, type, take screenshots, and collect console errors. No websocket library needed.

        with BrowserSession(window=(1280, 1000)) as browser:    # skips without Chromium
            browser.navigate("http://127.0.0.1:8000/")
            browser.wait_for("document.querySelectorAll('input').length > 3")
            browser.click("#run")
            browser.screenshot(tmp_path / "page.png")
    """

    def __init__(self, window: tuple[int, int] = (1280, 1000), timeout: float = 60):
        self.window, self.timeout = window, timeout
        self.errors: list[str] = []  # uncaught exceptions, console.error, CSP violations, failed loads
        self._next_id = 0
        self._buffer = b""

    def __enter__(self) -> "BrowserSession":
        binary = require_chromium()
        self._profile = tempfile.mkdtemp(prefix="kpi-engine-chromium-")
        to_browser, self._writer = os.pipe()
        self._reader, from_browser = os.pipe()

        def pipes_at_3_and_4() -> None:  # runs in the child before exec
            os.dup2(to_browser, 3)
            os.dup2(from_browser, 4)
            os.set_inheritable(3, True)
            os.set_inheritable(4, True)

        flags = [f for f in FLAGS if not f.startswith(("--enable-logging", "--v="))]
        self._log = tempfile.TemporaryFile()
        self.process = subprocess.Popen(
            [binary, *flags, "--remote-debugging-pipe", f"--user-data-dir={self._profile}",
             f"--window-size={self.window[0]},{self.window[1]}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log, preexec_fn=pipes_at_3_and_4,
            close_fds=False, start_new_session=True)
        os.close(to_browser)
        os.close(from_browser)
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable", session=True)
        self.call("Emulation.setDeviceMetricsOverride", session=True, width=self.window[0], height=self.window[1],
                  deviceScaleFactor=1, mobile=False)
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.call("Browser.close")
        except Exception:
            pass
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)  # the group we started
            self.process.wait()
        for fd in (self._reader, self._writer):
            os.close(fd)
        self._log.close()
        shutil.rmtree(self._profile, ignore_errors=True)

    # -- the protocol
    def call(self, method: str, session: bool = False, **params):
        import json as _json
        import select
        import time as _time

        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session
        os.write(self._writer, _json.dumps(message).encode() + b"\0")
        deadline = _time.monotonic() + self.timeout
        while True:
            while b"\0" in self._buffer:
                raw, self._buffer = self._buffer.split(b"\0", 1)
                reply = _json.loads(raw)
                if reply.get("id") == self._next_id:
                    if "error" in reply:
                        raise AssertionError(f"{method}: {reply['error']}")
                    return reply.get("result", {})
                self._event(reply)
            left = deadline - _time.monotonic()
            assert left > 0, f"Chromium did not answer {method} within {self.timeout:g} s"
            ready, _, _ = select.select([self._reader], [], [], left)
            if ready:
                chunk = os.read(self._reader, 1 << 20)
                assert chunk, f"Chromium closed the DevTools pipe during {method}"
                self._buffer += chunk

    def _event(self, event: dict) -> None:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            self.errors.append(details.get("exception", {}).get("description") or details.get("text", "exception"))
        elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
            self.errors.append(" ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", [])))
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            self.errors.append(params["entry"].get("text", ""))

    # -- what a person does
    def evaluate(self, expression: str):
        """The value of a JavaScript expression in the page (awaited if it is a promise)."""
        result = self.call("Runtime.evaluate", session=True, expression=expression, returnByValue=True,
                           awaitPromise=True)
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float | None = None):
        """Poll until ``expression`` is truthy; returns its value."""
        import time as _time

        deadline = _time.monotonic() + (timeout or self.timeout)
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            assert _time.monotonic() < deadline, f"timed out waiting for: {expression}"
            _time.sleep(0.1)

    def navigate(self, url: str) -> None:
        self.call("Page.navigate", session=True, url=url)
        self.wait_for("document.readyState === 'complete'")

    def click(self, selector: str) -> None:
        """A real left click (mouse pressed and released) at the middle of the element."""
        import json as _json

        box = self.evaluate(f"(() => {{ const e = document.querySelector({_json.dumps(selector)}); if (!e) return null;"
                            " e.scrollIntoView({block: 'center'}); const r = e.getBoundingClientRect();"
                            " return [r.left + r.width / 2, r.top + r.height / 2]; })()")
        assert box, f"no element matches {selector}"
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", session=True, type=kind, x=box[0], y=box[1], button="left",
                      clickCount=1)

    def type(self, selector: str, text: str) -> None:
        """Click into a field and type ``text`` as keyboard input."""
        self.click(selector)
        self.call("Input.insertText", session=True, text=text)

    def screenshot(self, path: Path) -> Path:
        import base64

        data = self.call("Page.captureScreenshot", session=True, format="png")["data"]
        Path(path).write_bytes(base64.b64decode(data))
        return Path(path)
