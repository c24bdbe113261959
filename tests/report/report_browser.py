"""Open a report in a real browser: Debian's headless Chromium, driven from Python through the
DevTools protocol over a pipe (`--remote-debugging-pipe`: no port, no websocket library).

Network off (the page is offline, and the proxy and name resolver lead nowhere), a fresh profile
per page, the viewport set exactly (a headless window cannot be narrower than 500 px, so a phone
is emulated with Emulation.setDeviceMetricsOverride). `render()` returns what the page says about
itself once its script ran (the attributes report.js puts on <body>: charts, rendered, errors,
overflow), every console message, exception and log error, and optionally a full-page screenshot.
"""

import base64
import json
import os
import re
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--hide-scrollbars",
    "--proxy-server=127.0.0.1:9",
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--remote-debugging-pipe",
]


def need_chromium() -> str:
    if CHROMIUM:
        return CHROMIUM
    if os.environ.get("CI"):
        pytest.fail("chromium is not installed; .ci/run installs it with apt-get install chromium")
    pytest.skip("chromium is not installed (apt-get install chromium)")


@dataclass
class Rendered:
    body: dict
    console: list[str]  # console messages, uncaught exceptions and error log entries
    width: int = 0  # window.innerWidth as the page saw it
    screenshot: Path | None = None
    svgs: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def charts(self) -> int:
        return int(self.body.get("charts", -1))

    @property
    def rendered(self) -> int:
        return int(self.body.get("rendered", -1))

    @property
    def errors(self) -> int:
        return int(self.body.get("errors", -1))


class Browser:
    """One headless Chromium, spoken to in DevTools protocol messages (JSON, NUL-terminated)."""

    def __init__(self, timeout: float = 60):
        self.timeout = timeout
        self.profile = tempfile.mkdtemp(prefix="ember-chromium-")
        cmd_r, self._cmd_w = os.pipe()  # we write commands, Chromium reads them on fd 3
        self._out_r, out_w = os.pipe()  # Chromium writes answers on fd 4

        def fds():  # in the child: the pipe ends become fds 3 and 4, kept open across exec
            a, b = os.dup(cmd_r), os.dup(out_w)  # first out of the way of 3 and 4
            os.dup2(a, 3)
            os.dup2(b, 4)
            os.set_inheritable(3, True)
            os.set_inheritable(4, True)

        self.proc = subprocess.Popen(
            [need_chromium(), *FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=fds,
            close_fds=False,
        )
        os.close(cmd_r)
        os.close(out_w)
        self._buf, self._id, self.events = b"", 0, []

    def _read(self, deadline: float) -> dict:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._out_r], [], [], left)[0]:
                raise TimeoutError("chromium did not answer in time")
            chunk = os.read(self._out_r, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium closed the pipe")
            self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        return json.loads(msg)

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._cmd_w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str) -> dict:
        for i, e in enumerate(self.events):
            if e.get("method") == method:
                return self.events.pop(i)
        deadline = time.monotonic() + self.timeout
        while True:
            e = self._read(deadline)
            if e.get("method") == method:
                return e
            self.events.append(e)

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except Exception:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._cmd_w)
        os.close(self._out_r)
        shutil.rmtree(self.profile, ignore_errors=True)


def render(
    path: Path, width: int = 1280, height: int = 900, screenshot: Path | None = None, script: str | None = None
) -> Rendered:
    """`script`: a JavaScript expression run once the page has drawn (a promise is awaited); its
    value (JSON-able) lands in `Rendered.extra["script"]`, before the screenshot is taken."""
    browser = Browser()
    try:
        target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        s = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for method in ("Page.enable", "Runtime.enable", "Log.enable", "Network.enable"):
            browser.send(method, session=s)
        browser.send(
            "Network.emulateNetworkConditions",
            {"offline": True, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1},
            s,
        )
        browser.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600},
            s,
        )
        browser.send("Page.navigate", {"url": Path(path).resolve().as_uri()}, s)
        browser.wait_for("Page.loadEventFired")
        state = browser.send(
            "Runtime.evaluate",
            {
                "expression": (
                    "JSON.stringify({body: Object.assign({}, document.body.dataset), width: window.innerWidth, svgs: "
                    "document.querySelectorAll('figure svg').length})"
                ),
                "returnByValue": True,
            },
            s,
        )
        page = json.loads(state["result"]["value"])
        extra = {}
        if script is not None:
            done = browser.send(
                "Runtime.evaluate", {"expression": script, "returnByValue": True, "awaitPromise": True}, s
            )
            extra["script"] = done.get("result", {}).get("value")
            if "exceptionDetails" in done:
                extra["script_error"] = done["exceptionDetails"].get("exception", {}).get("description") or done[
                    "exceptionDetails"
                ].get("text")
        shot = None
        if screenshot is not None:
            full = min(int(page["body"].get("height", height)), 16000)
            clip = {"x": 0, "y": 0, "width": width, "height": max(full, height), "scale": 1}
            data = browser.send(
                "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip}, s
            )["data"]
            Path(screenshot).write_bytes(base64.b64decode(data))
            shot = Path(screenshot)
        console = []
        for e in browser.events:
            p = e.get("params", {})
            if e.get("method") == "Runtime.consoleAPICalled":
                console.append(
                    f"console.{p['type']}: "
                    + " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", []))
                )
            elif e.get("method") == "Runtime.exceptionThrown":
                d = p.get("exceptionDetails", {})
                console.append("exception: " + (d.get("exception", {}).get("description") or d.get("text", "")))
            elif e.get("method") == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                console.append("log: " + p["entry"].get("text", ""))
        return Rendered(
            body=page["body"], console=console, width=page["width"], screenshot=shot, svgs=page["svgs"], extra=extra
        )
    finally:
        browser.close()


def external_references(html: str) -> list[str]:
    """Anything the page would fetch from elsewhere: src/href to http(s) or //, <link>, @import."""
    refs = re.findall(r"""(?:src|href)\s*=\s*["']((?:https?:)?//[^"']*)""", html, flags=re.I)
    refs += re.findall(r"<link\b[^>]*>", html, flags=re.I)
    refs += re.findall(r"@import[^;]*;", html)
    refs += re.findall(r"""url\(\s*["']?(?:https?:)?//[^)]*\)""", html)
    return refs


def png_size(path: Path) -> tuple[int, int]:
    data = Path(path).read_bytes()[:24]
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
