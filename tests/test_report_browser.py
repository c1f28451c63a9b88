"""The HTML report and the MLflow UI in a real browser: headless Chromium over the DevTools protocol.

Chromium's ``--remote-debugging-pipe`` speaks CDP as NUL-separated JSON on file descriptors
3 (commands in) and 4 (events and replies out): no websocket client, no new dependency. The
test loads the report from file://, waits for the load event, asks the page (from outside,
the report itself carries no script) whether every table has rows and every image decoded,
collects console and log errors, and keeps a full-page screenshot in the test's tmp dir.

The MLflow UI part serves a tiny study's store with `mlflow server` (a free port, SIGTERM to its
process group at the end), opens the runs page that `borealis-eval ui` prints and waits for the
runs table. With BOREALIS_DOCS_SCREENSHOT=1 its screenshot also replaces docs/mlflow_runs.png.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from borealis_eval.report import build_report
from test_report import EXPERIMENT, make_store

CHROMIUM = os.environ.get("BOREALIS_CHROMIUM", "/usr/bin/chromium")
TIMEOUT = 60.0

pytestmark = pytest.mark.skipif(
    shutil.which(CHROMIUM) is None,
    reason=f"headless Chromium not found at {CHROMIUM} (scripts/install_chromium.sh installs it)",
)

PAGE_STATE = """(() => ({
  images: [...document.images].map(i => ({alt: i.alt, complete: i.complete,
                                          width: i.naturalWidth, height: i.naturalHeight})),
  tables: [...document.querySelectorAll('table')].map(t => t.querySelectorAll('tbody tr, tr').length),
  headings: [...document.querySelectorAll('h2')].map(h => h.textContent.trim()),
  diff: document.querySelectorAll('.diff .sub, .diff .del, .diff .ins').length,
}))()"""


def _above_4(fd: int) -> int:
    """Move ``fd`` to a number >= 10, so redirecting onto fds 3 and 4 cannot clobber it."""
    high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return high


class Chromium:
    """Minimal CDP client over Chromium's debugging pipe (flattened target sessions)."""

    def __init__(self, profile: Path):
        cmd_r, self._cmd_w = os.pipe()
        self._out_r, out_w = os.pipe()
        cmd_r, out_w = (_above_4(fd) for fd in (cmd_r, out_w))

        args = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--disable-dev-shm-usage", "--hide-scrollbars",
                "--remote-debugging-pipe", f"--user-data-dir={profile}", "about:blank"]
        # bash puts the pipe ends on fds 3 and 4, where Chromium expects them (dash: fds <= 9 only)
        self.proc = subprocess.Popen(
            [shutil.which("bash") or "/bin/bash", "-c", f'exec "$0" "$@" 3<&{cmd_r} 4>&{out_w} {cmd_r}<&- {out_w}>&-', *args],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            pass_fds=(cmd_r, out_w),
        )
        os.close(cmd_r)
        os.close(out_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict] = []

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._cmd_w, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._read()
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def new_page(self) -> str:
        """A blank tab with Page, Runtime and Log events on; returns its session id."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable", session=session)
        return session

    def wait_event(self, method: str) -> dict:
        for i, event in enumerate(self.events):
            if event.get("method") == method:
                return self.events.pop(i)
        while True:
            event = self._read()
            if event.get("method") == method:
                return event
            self.events.append(event)

    def _read(self) -> dict:
        deadline = time.monotonic() + TIMEOUT
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self._out_r], [], [], max(left, 0))
            if not ready:
                raise TimeoutError("no reply from Chromium within %.0f s" % TIMEOUT)
            chunk = os.read(self._out_r, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed the debugging pipe: "
                                   + self.proc.stderr.read().decode(errors="replace")[-2000:])
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

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
        self.proc.stderr.close()


def console_errors(events: list[dict]) -> list[str]:
    """Console errors, uncaught exceptions and browser log errors (e.g. failed resources)."""
    errors = []
    for e in events:
        method, params = e.get("method"), e.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            errors.append("console: " + " ".join(str(a.get("value", a.get("description")))
                                                 for a in params.get("args", [])))
        elif method == "Runtime.exceptionThrown":
            errors.append("exception: " + params["exceptionDetails"].get("text", ""))
        elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
            errors.append(f"log: {params['entry'].get('text')} {params['entry'].get('url', '')}")
    return errors


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("browser")
    uri = make_store(root)
    return build_report(EXPERIMENT, root / "report", tracking_uri=uri, log_artifact=False)


def test_html_report_in_headless_chromium(report, tmp_path):
    browser = Chromium(tmp_path / "profile")
    try:
        session = browser.new_page()
        browser.send("Emulation.setDeviceMetricsOverride",
                     {"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": False},
                     session=session)
        browser.send("Page.navigate", {"url": report.html.as_uri()}, session=session)
        browser.wait_event("Page.loadEventFired")
        state = browser.send("Runtime.evaluate", {"expression": PAGE_STATE, "returnByValue": True},
                             session=session)["result"]["value"]
        height = browser.send("Page.getLayoutMetrics", session=session)["cssContentSize"]["height"]
        shot = browser.send("Page.captureScreenshot",
                            {"format": "png", "captureBeyondViewport": True,
                             "clip": {"x": 0, "y": 0, "width": 1280, "height": min(height, 16000),
                                      "scale": 1}},
                            session=session)
        errors = console_errors(browser.events)
    finally:
        browser.close()

    screenshot = tmp_path / "report.png"
    screenshot.write_bytes(base64.b64decode(shot["data"]))
    print(f"\nscreenshot: {screenshot}")
    assert screenshot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert screenshot.stat().st_size > 50_000  # a rendered page, not a blank canvas

    assert errors == []
    images = state["images"]
    assert len(images) == len(report.plots) == 3
    for image in images:
        assert image["complete"] and image["width"] > 100 and image["height"] > 100, image
    assert len(state["tables"]) >= 10 and all(rows >= 2 for rows in state["tables"])
    for heading in ("WER per cell (%)", "Contrasts: text fraction", "Word error rate per run (WER, %)",
                    "Normalisation sensitivity", "Single-run paired tests: test_ru", "More plots", "Error analysis",
                    "WER by duration", "Worst utterances: test_ru"):
        assert heading in state["headings"]
    assert state["diff"] >= 3  # colour-coded substitutions, deletions and insertions


def test_broken_image_is_detected(report, tmp_path):
    """The checks above can fail: a report with an undecodable image and a missing one."""
    html = report.html.read_text(encoding="utf-8")
    start = html.index('src="data:image/png;base64,') + len('src="data:image/png;base64,')
    broken = html[:start] + "AAAA" + html[start + 4:]
    broken = broken.replace("</main>", '<img src="missing.png" alt="missing"></main>')
    page = tmp_path / "broken.html"
    page.write_text(broken, encoding="utf-8")
    browser = Chromium(tmp_path / "profile")
    try:
        session = browser.new_page()
        browser.send("Page.navigate", {"url": page.as_uri()}, session=session)
        browser.wait_event("Page.loadEventFired")
        state = browser.send("Runtime.evaluate", {"expression": PAGE_STATE, "returnByValue": True},
                             session=session)["result"]["value"]
        browser.send("Runtime.evaluate", {"expression": "1"}, session=session)  # flush log events
        errors = console_errors(browser.events)
    finally:
        browser.close()
    widths = [i["width"] for i in state["images"]]
    assert widths.count(0) == 2
    assert any("missing.png" in e for e in errors), errors


# ------------------------------------------------------------------ the MLflow UI on a tiny study
UI_TIMEOUT = 180.0  # a cold `mlflow server` and a first page load on a busy 2-core machine
DOCS_SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "mlflow_runs.png"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_ui(tmp_path_factory, corpus):
    """A tiny study (the harness' own records) served by `mlflow server`; stopped with SIGTERM."""
    from test_mlflow_native import tiny_study


    root = tmp_path_factory.mktemp("mlflow_ui")
    study = tiny_study(root, corpus)
    port = _free_port()
    with open(root / "server.log", "wb") as log:
        server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri", study["uri"],
                                   "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                                  stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + UI_TIMEOUT
        while True:
            assert server.poll() is None, (root / "server.log").read_text(errors="replace")[-2000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "mlflow server did not answer /health"
            time.sleep(1)
        yield {**study, "base": f"http://127.0.0.1:{port}"}
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server and its workers: their own process group
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def _wait_for(browser: Chromium, session: str, expression: str, what: str):
    """Evaluate `expression` until it is truthy (the UI renders after its API calls return)."""
    deadline = time.monotonic() + UI_TIMEOUT
    while True:
        value = browser.send("Runtime.evaluate", {"expression": expression, "returnByValue": True},
                             session=session)["result"].get("value")
        if value:
            return value
        assert time.monotonic() < deadline, f"the MLflow UI never showed {what}"
        time.sleep(0.5)


RUNS_TABLE = """(() => {
  const headers = [...document.querySelectorAll('.ag-header-cell')].map(h => h.innerText.trim());
  const rows = [...document.querySelectorAll('.ag-center-cols-container .ag-row, .ag-pinned-left-cols-container .ag-row')]
    .map(r => r.innerText.replace(/\\s+/g, ' '));
  return headers.includes('wer/test_en') && rows.length >= 3 ? {headers, rows, hash: location.hash,
    text: document.body.innerText} : null;
})()"""


def test_mlflow_ui_opens_the_runs_table_with_wer_datasets_and_models(mlflow_ui, tmp_path):
    from borealis_eval import records
    from borealis_eval.tracking import ui_experiment_path

    eid = mlflow_ui["exp"].experiment_id
    url = f"{mlflow_ui['base']}/#{ui_experiment_path(eid, records.WER_VIEW)}"  # what `borealis-eval ui` prints
    browser = Chromium(tmp_path / "profile")
    try:
        session = browser.new_page()
        browser.send("Emulation.setDeviceMetricsOverride",
                     {"width": 1800, "height": 560, "deviceScaleFactor": 1, "mobile": False}, session=session)
        browser.send("Page.navigate", {"url": url}, session=session)
        browser.wait_event("Page.loadEventFired")
        _wait_for(browser, session, "document.querySelectorAll('.ag-center-cols-container .ag-row').length >= 3",
                  "the runs table")
        # the assistant panel opens itself on a first visit and takes a third of the width (the grid
        # renders only the columns in view); the shared-view banner takes height
        for button in ("mlflow.assistant.chat_panel.close", "mlflow.experiment_page.shared_view.dismiss"):
            _wait_for(browser, session, f"!!document.querySelector('[data-component-id=\"{button}\"]')", button)
            browser.send("Runtime.evaluate", {"expression": f"document.querySelector('[data-component-id=\"{button}\"]')"
                                                            ".click()"}, session=session)
        table = _wait_for(browser, session, RUNS_TABLE, "the runs table with wer/test_en")
        time.sleep(1)  # the grid's last layout pass
        shot = browser.send("Page.captureScreenshot", {"format": "png"}, session=session)
    finally:
        browser.close()
    screenshot = tmp_path / "mlflow_runs.png"
    screenshot.write_bytes(base64.b64decode(shot["data"]))
    print(f"\nscreenshot: {screenshot}")
    if os.environ.get("BOREALIS_DOCS_SCREENSHOT") == "1":
        shutil.copyfile(screenshot, DOCS_SCREENSHOT)

    assert "/runs?" in table["hash"] and "No data available" not in table["text"]  # not the GenAI overview
    assert {"Dataset", "Models", "wer/test_en", "wer/dev"} <= set(table["headers"])
    rows = " | ".join(table["rows"])
    variants = [r.info.run_name for r in mlflow_ui["by_role"]["variant"]]
    for name in (*variants, "baseline-whisper"):
        assert name in rows, name
    assert "sweep-" not in rows  # the saved view lists the variants and the baseline, not the parent
    assert "text_fraction=0_25" in rows  # the variant's logged model, in the Models column
    digest = {d.dataset.name: d.dataset.digest for d in mlflow_ui["client"].get_run(
        mlflow_ui["by_role"]["baseline"][0].info.run_id).inputs.dataset_inputs}["test_en"]
    assert f"test_en ({digest})" in rows  # a dataset input, with its digest, in the Dataset column
    assert screenshot.stat().st_size > 30_000


def test_mlflow_ui_parent_run_shows_the_headline_and_links_the_report(mlflow_ui, tmp_path):
    (parent,) = mlflow_ui["by_role"]["parent"]
    eid = mlflow_ui["exp"].experiment_id
    browser = Chromium(tmp_path / "profile")
    try:
        session = browser.new_page()
        browser.send("Page.navigate", {"url": f"{mlflow_ui['base']}/#/experiments/{eid}/runs/{parent.info.run_id}"
                                              "?workflowType=machine_learning"}, session=session)
        browser.wait_event("Page.loadEventFired")
        href = _wait_for(browser, session, "[...document.querySelectorAll('a')].find(a => a.innerText.trim() === "
                                           "'report/report.html')?.href", "the report link in the description")
        text = browser.send("Runtime.evaluate", {"expression": "document.body.innerText", "returnByValue": True},
                            session=session)["result"]["value"]
        browser.send("Page.navigate", {"url": href}, session=session)
        viewer = _wait_for(browser, session, "document.body.innerText.includes('Path: file://') && "
                                             "document.body.innerText", "the report in the artifact viewer")
    finally:
        browser.close()
    assert "One training run per cell" in text and "tiny scale-out test" in text  # the description: answer, question
    assert "report/report.html" in viewer and "/artifacts/report/report.html" in viewer
