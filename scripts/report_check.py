#!/usr/bin/env python3
"""Render an ``llem report`` in headless Chromium, check it, and take a full-page screenshot.

    python scripts/report_check.py RESULTS_DIR --screenshot report.png   # build + check + picture
    python scripts/report_check.py report.html --screenshot report.png   # check an existing file

RESULTS_DIR is any run, study or results directory (the report is written to
``--out``, default ``RESULTS_DIR/report.html``). Exit 0 only when every chart the page
declares (``<meta name="llem-chart-count">``) rendered and the page logged no console error,
uncaught exception or failed resource load (a CDN fetch would be one); the details are
printed as JSON. Needs Debian's ``chromium`` (``scripts/ensure_chromium.sh`` installs it;
``LLEM_CHROMIUM`` overrides the binary) and the package's ``report`` extra.

Chromium is driven over the DevTools protocol on ``--remote-debugging-pipe`` (NUL-separated
JSON on fds 3 and 4): standard library only, no TCP port, no websocket, no playwright.
``tests/integration/test_report_render.py`` imports this file.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",  # we run as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--mute-audio",
    # plotly's Scattergl/WebGL needs software GL once --disable-gpu is set;
    # Chromium's automatic SwiftShader fallback is deprecated (and warns).
    "--enable-unsafe-swiftshader",
]


def find_chromium() -> str | None:
    """Real binary first: /usr/bin/chromium is Debian's shell wrapper, which
    adds flags (extensions, --enable-gpu-rasterization) and prints a harmless
    '[: ... unexpected operator' warning from its /dev/shm probe."""
    for c in (
        os.environ.get("LLEM_CHROMIUM"),
        "/usr/lib/chromium/chromium",
        shutil.which("chromium"),
        shutil.which("chromium-browser"),
        shutil.which("google-chrome"),
    ):
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    return None


# Evaluated in the page. A plotly chart counts as rendered when its div got the
# js-plotly-plot class, holds an <svg class="main-svg">, has >=1 trace in
# _fullData and >=1 drawn trace element (SVG g.trace, or a WebGL canvas).
CHECK_JS = r"""
(() => {
  const meta = document.querySelector('meta[name="llem-chart-count"]');
  const divs = [...document.querySelectorAll('.plotly-graph-div')];
  const charts = divs.map(d => {
    const r = d.getBoundingClientRect();
    const c = {
      id: d.id,
      plotted: d.classList.contains('js-plotly-plot'),
      svgs: d.querySelectorAll('svg.main-svg').length,
      data: (d._fullData || []).length,
      svg_traces: d.querySelectorAll('svg.main-svg g.trace').length,
      gl_canvases: d.querySelectorAll('canvas.gl-canvas').length,
      w: Math.round(r.width), h: Math.round(r.height),
    };
    c.rendered = c.plotted && c.svgs > 0 && c.data > 0 &&
                 (c.svg_traces > 0 || c.gl_canvases > 0) && c.w > 0 && c.h > 0;
    return c;
  });
  return {
    readyState: document.readyState,
    plotly: (typeof Plotly === 'undefined') ? null : Plotly.version,
    declared: meta ? Number(meta.content) : null,
    charts: charts,
    rendered: charts.filter(c => c.rendered).length,
  };
})()
"""

SETTLE_JS = """new Promise(r => document.fonts.ready.then(
  () => requestAnimationFrame(() => requestAnimationFrame(() => r(true)))))"""


class CDPError(RuntimeError):
    pass


def _high_fd(fd: int) -> int:
    new = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return new


class CDPPipe:
    """Minimal synchronous CDP client over --remote-debugging-pipe."""

    def __init__(self, chromium: str, extra_flags: list[str] | None = None):
        self.profile = tempfile.mkdtemp(prefix="llem-chromium-")
        # browser reads commands on fd 3, writes replies/events on fd 4
        # move every pipe end above 9 first, so that the dup2 onto 3/4 in the
        # child can never clobber (or be a no-op on) one of our own ends
        cmd_r, self._cmd_w, self._evt_r, evt_w = (_high_fd(fd) for fd in (*os.pipe(), *os.pipe()))

        def child_fds() -> None:  # runs in the child between fork and exec
            os.dup2(cmd_r, 3)
            os.dup2(evt_w, 4)

        args = [
            chromium,
            *CHROMIUM_FLAGS,
            *(extra_flags or []),
            f"--user-data-dir={self.profile}",
            "--remote-debugging-pipe",
            "about:blank",
        ]
        self.stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed in close())
        # close_fds=False: the dup2'ed 3/4 must survive exec; Python's own
        # fds are non-inheritable (O_CLOEXEC) so nothing else leaks.
        self.proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self.stderr,
            preexec_fn=child_fds,
            close_fds=False,
        )
        os.close(cmd_r)
        os.close(evt_w)
        self._buf = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []

    # -- transport ---------------------------------------------------------
    def _read_message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no CDP message before deadline")
            ready, _, _ = select.select([self._evt_r], [], [], left)
            if not ready:
                continue
            chunk = os.read(self._evt_r, 1 << 20)
            if not chunk:
                raise CDPError(f"chromium closed the pipe:\n{self.stderr_text()}")
            self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        return json.loads(raw)

    def send(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        session: str | None = None,
        timeout: float = 30.0,
    ) -> dict[str, Any]:
        self._next_id += 1
        msg_id = self._next_id
        msg = {"id": msg_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._cmd_w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            m = self._read_message(deadline)
            if m.get("id") == msg_id:
                if "error" in m:
                    raise CDPError(f"{method}: {m['error']}")
                return m.get("result", {})
            if "method" in m:
                self.events.append(m)

    def wait_event(self, method: str, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        for _i, e in enumerate(self.events):
            if e["method"] == method:
                return e
        while True:
            m = self._read_message(deadline)
            if "method" in m:
                self.events.append(m)
                if m["method"] == method:
                    return m

    def stderr_text(self) -> str:
        self.stderr.seek(0)
        return self.stderr.read().decode(errors="replace")[-4000:]

    def close(self) -> None:
        try:
            if self.proc.poll() is None:
                with contextlib.suppress(Exception):
                    self.send("Browser.close", timeout=5)
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()  # only the process we started
                    self.proc.wait()
        finally:
            for fd in (self._cmd_w, self._evt_r):
                with contextlib.suppress(OSError):
                    os.close(fd)
            self.stderr.close()
            shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> CDPPipe:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass
class PageReport:
    url: str
    state: dict[str, Any] = field(default_factory=dict)
    console_errors: list[str] = field(default_factory=list)
    exceptions: list[str] = field(default_factory=list)
    log_errors: list[str] = field(default_factory=list)
    console_other: list[str] = field(default_factory=list)
    timings: dict[str, Any] = field(default_factory=dict)
    screenshot: str | None = None

    @property
    def errors(self) -> list[str]:
        return self.exceptions + self.console_errors + self.log_errors

    def ok(self, expect: int | None = None) -> bool:
        want = expect if expect is not None else self.state.get("declared")
        charts = self.state.get("charts", [])
        return (
            not self.errors
            and want is not None
            and len(charts) == want
            and self.state.get("rendered") == want
        )


def _fmt_console(p: dict[str, Any]) -> str:
    parts = []
    for a in p.get("args", []):
        parts.append(str(a.get("value", a.get("description", a.get("type")))))
    frames = (p.get("stackTrace") or {}).get("callFrames") or [{}]
    f = frames[0]
    return f"{' '.join(parts)} ({f.get('url', '')}:{f.get('lineNumber', '?')})"


def _fmt_exception(d: dict[str, Any]) -> str:
    exc = d.get("exception") or {}
    return (
        f"{exc.get('description') or d.get('text')} ({d.get('url', '')}:{d.get('lineNumber', '?')})"
    )


def check_page(
    path: str | os.PathLike,
    screenshot: str | os.PathLike | None = None,
    width: int = 1400,
    height: int = 900,
    timeout: float = 120.0,
    render_timeout: float = 60.0,  # returns as soon as every chart rendered
    chromium: str | None = None,
) -> PageReport:
    chromium = chromium or find_chromium()
    if not chromium:
        raise FileNotFoundError("chromium not found (apt-get install -y chromium)")
    url = Path(path).resolve().as_uri()
    rep = PageReport(url=url)
    t0 = time.monotonic()
    with CDPPipe(chromium) as b:
        b.send("Browser.getVersion", timeout=timeout)
        rep.timings["browser_start_s"] = round(time.monotonic() - t0, 3)
        target = b.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        s = b.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for m in ("Page.enable", "Runtime.enable", "Log.enable"):
            b.send(m, session=s)
        b.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
            session=s,
        )
        t1 = time.monotonic()
        nav = b.send("Page.navigate", {"url": url}, session=s)
        if nav.get("errorText"):
            raise CDPError(f"navigate {url}: {nav['errorText']}")
        b.wait_event("Page.loadEventFired", timeout=timeout)
        rep.timings["load_s"] = round(time.monotonic() - t1, 3)

        # poll until every declared chart rendered; give up early on an
        # uncaught exception (after one more look), else after render_timeout
        deadline = time.monotonic() + render_timeout
        while True:
            r = b.send(
                "Runtime.evaluate",
                {"expression": CHECK_JS, "returnByValue": True},
                session=s,
            )
            rep.state = r["result"]["value"]
            want = rep.state.get("declared")
            if want is not None and rep.state["rendered"] >= want:
                break
            if time.monotonic() > deadline:
                break
            if any(e["method"] == "Runtime.exceptionThrown" for e in b.events):
                deadline = min(deadline, time.monotonic() + 1.0)
            time.sleep(0.1)
        b.send(
            "Runtime.evaluate",
            {"expression": SETTLE_JS, "awaitPromise": True, "returnByValue": True},
            session=s,
        )
        rep.timings["rendered_s"] = round(time.monotonic() - t1, 3)

        if screenshot:
            m = b.send("Page.getLayoutMetrics", session=s)
            cs = m.get("cssContentSize") or m["contentSize"]
            shot = b.send(
                "Page.captureScreenshot",
                {
                    "format": "png",
                    "captureBeyondViewport": True,
                    "clip": {
                        "x": 0,
                        "y": 0,
                        "scale": 1,
                        "width": max(width, int(cs["width"])),
                        "height": int(cs["height"]),
                    },
                },
                session=s,
                timeout=timeout,
            )
            Path(screenshot).write_bytes(base64.b64decode(shot["data"]))
            rep.screenshot = str(screenshot)
            rep.timings["screenshot_s"] = round(time.monotonic() - t1, 3)

        # drain anything still queued, then classify the events
        b.send("Runtime.evaluate", {"expression": "0"}, session=s)
        for e in b.events:
            p = e.get("params", {})
            if e["method"] == "Runtime.exceptionThrown":
                rep.exceptions.append(_fmt_exception(p["exceptionDetails"]))
            elif e["method"] == "Runtime.consoleAPICalled":
                if p.get("type") in ("error", "assert"):
                    rep.console_errors.append(_fmt_console(p))
                else:
                    rep.console_other.append(f"{p.get('type')}: {_fmt_console(p)}")
            elif e["method"] == "Log.entryAdded":
                entry = p["entry"]
                line = f"[{entry.get('source')}] {entry.get('text')} {entry.get('url', '')}"
                if entry.get("level") == "error":
                    rep.log_errors.append(line)
                else:
                    rep.console_other.append(f"log.{entry.get('level')}: {line}")
    rep.timings["total_s"] = round(time.monotonic() - t0, 3)
    return rep


def main(argv: list[str] | None = None) -> int:
    """Build the report when given a directory, check it, print JSON; 0 when it is good."""
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("path", help="results/study/run directory, or a report .html")
    ap.add_argument("--out", help="report file to write (default PATH/report.html)")
    ap.add_argument("--screenshot", help="full-page PNG to write")
    ap.add_argument("--expect", type=int, help="charts expected (default: as declared)")
    ap.add_argument("--title", help="report title")
    a = ap.parse_args(argv)
    page = Path(a.path)
    if page.is_dir() or page.name == "result.json":
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
        from llenergymeasure import report

        page = report(page, a.out, title=a.title)
        print(f"report: {page}", file=sys.stderr)
    rep = check_page(page, screenshot=a.screenshot)
    out = {
        "ok": rep.ok(a.expect),
        "report": str(page),
        "screenshot": rep.screenshot,
        "rendered": rep.state.get("rendered"),
        "declared": rep.state.get("declared"),
        "plotly": rep.state.get("plotly"),
        "errors": rep.errors,
        "other_console": rep.console_other,
        "timings": rep.timings,
        "charts": [
            {k: c.get(k) for k in ("id", "rendered", "svg_traces", "w", "h")}
            for c in rep.state.get("charts", [])
        ],
    }
    print(json.dumps(out, indent=1))
    return 0 if out["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
