"""The report in a real browser: headless Chromium loads it offline, runs plotly.js, and we
check that no script failed and that every plot drew its SVG. A screenshot is kept for people.

Chromium is driven with plain command-line flags (`--dump-dom`, `--screenshot`), nothing to
download: a small script injected at the top of the page records JavaScript errors (and any
resource that fails to load) into an attribute of <html>, which `--dump-dom` prints after the
page has run. Skipped when no chromium is installed (`apt-get install -y chromium`).

Screenshots and the report go to $TUNER_TEST_ARTIFACTS when set, else to pytest's tmp dir.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import optuna
import pytest
from PIL import Image
from study_fixtures import make_study

from tuner.report import build_report

CHROMIUM = (
    os.environ.get("TUNER_CHROMIUM")
    or shutil.which("chromium")
    or shutil.which("chromium-browser")
    or shutil.which("google-chrome")
)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="needs chromium (apt-get install -y chromium)"),
]

# No network, no first-run work, no sandbox (CI runs as root), a throwaway profile per run.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--virtual-time-budget=15000",  # let timers and promises settle before dumping
)
WIDTH = 1280
SCREENSHOT_HEIGHT = 9000  # px; taller than the full report, cropped afterwards

ERROR_COLLECTOR = """<script>
(function () {
  var errors = [];
  var root = document.documentElement;
  function keep(message) {
    errors.push(String(message));
    root.setAttribute("data-js-errors", JSON.stringify(errors));
  }
  root.setAttribute("data-js-errors", "[]");
  window.addEventListener("error", function (event) {
    keep(event.message || "failed to load " + (event.target.src || event.target.href));
  }, true);
  window.addEventListener("unhandledrejection", function (event) {
    keep("unhandled rejection: " + event.reason);
  });
  var consoleError = console.error;
  console.error = function () {
    keep(Array.prototype.join.call(arguments, " "));
    consoleError.apply(console, arguments);
  };
  window.addEventListener("load", function () {
    var height = document.body.getBoundingClientRect().height;
    root.setAttribute("data-page-height", String(Math.ceil(height)));
  });
})();
</script>"""


class RenderedPage(HTMLParser):
    """Reads a DOM dump: which plot divs contain a drawn SVG, JS errors, page height."""

    def __init__(self, dom: str) -> None:
        super().__init__()
        self.open_divs: list[str | None] = []  # plot div id, or None for any other div
        self.plots: dict[str, bool] = {}  # plot div id -> drew an <svg class="main-svg">
        self.js_errors: list[str] | None = None
        self.height = 0
        self.feed(dom)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        classes = (attributes.get("class") or "").split()
        if tag == "html":
            self.js_errors = json.loads(attributes.get("data-js-errors") or "null")
            self.height = int(attributes.get("data-page-height") or 0)
        elif tag == "div":
            is_plot = "plotly-graph-div" in classes and "js-plotly-plot" in classes
            plot_id = attributes.get("id") if is_plot else None
            if plot_id:
                self.plots[plot_id] = False
            self.open_divs.append(plot_id)
        elif tag == "svg" and "main-svg" in classes:
            enclosing = next((div for div in reversed(self.open_divs) if div), None)
            if enclosing:
                self.plots[enclosing] = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "div" and self.open_divs:
            self.open_divs.pop()


def run_chromium(page: Path, *args: str) -> str:
    """Run headless chromium on `page` with a fresh profile; returns its stdout."""
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        result = subprocess.run(
            [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args, page.as_uri()],
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )
    assert result.returncode == 0, f"chromium failed ({result.returncode}):\n{result.stderr}"
    return result.stdout


def open_report(
    study: optuna.Study, directory: Path, screenshot: Path | None = None
) -> tuple[Path, RenderedPage]:
    """Write the report with the error collector injected, load it once, and read the DOM.

    With `screenshot`, the same run saves a PNG of the whole page (the window is made tall
    enough, then the picture is cropped to the page's height).
    """
    html = build_report(study)
    page = directory / "report-under-test.html"
    page.write_text(html.replace("<head>", "<head>" + ERROR_COLLECTOR, 1), encoding="utf-8")
    args = [f"--window-size={WIDTH},{SCREENSHOT_HEIGHT if screenshot else 1000}", "--dump-dom"]
    if screenshot:
        args.append(f"--screenshot={screenshot}")
    rendered = RenderedPage(run_chromium(page, *args))
    if screenshot and 0 < rendered.height < SCREENSHOT_HEIGHT:
        with Image.open(screenshot) as image:
            cropped = image.crop((0, 0, WIDTH, rendered.height))
        cropped.save(screenshot)
    return page, rendered


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where screenshots go: $TUNER_TEST_ARTIFACTS, else a pytest tmp dir."""
    configured = os.environ.get("TUNER_TEST_ARTIFACTS")
    if not configured:
        return tmp_path_factory.mktemp("artifacts")
    directory = Path(configured)
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def test_full_report_renders_every_plot_without_errors(tmp_path: Path, artifacts: Path) -> None:
    screenshot = artifacts / "report.png"
    page, rendered = open_report(make_study(40), tmp_path, screenshot)

    assert rendered.js_errors is not None, "the injected error collector did not run"
    assert rendered.js_errors == []
    assert len(rendered.plots) == 9, rendered.plots
    assert all(rendered.plots.values()), f"plots without an SVG: {rendered.plots}"
    with Image.open(screenshot) as image:
        assert image.size == (WIDTH, rendered.height)
        # a blank or unstyled page has very few colours; the plots and cards have many
        assert len(image.convert("RGB").getcolors(maxcolors=1 << 16) or range(1 << 16)) > 500
    shutil.copy(page, artifacts / "report.html")


def test_one_trial_page_loads_without_errors(tmp_path: Path) -> None:
    _, rendered = open_report(make_study(1), tmp_path)
    assert rendered.js_errors == []
    assert list(rendered.plots.values()) == [True]  # the only trial's training curves
