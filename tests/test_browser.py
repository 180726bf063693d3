"""The pages as a reviewer meets them, in a real browser: Debian's Chromium driven by Playwright.

report.html, compare.html and the notebook view load with no console error and no network
request, carry their CSP and show the verdict and the key numbers; a report made from
hostile strings (class names, file names, metadata values, the data folder's name) runs
none of them; axe-core finds no serious or critical accessibility violation; ``report
--pdf`` prints a PDF whose first page renders and holds the verdict. Screenshots at 1280
and 390 px wide go to ``$AUDITCLF_ARTIFACTS/screenshots`` (else a temporary folder); the
folder is printed.

Chromium is never downloaded (no ``playwright install``): the tests launch the system's
``chromium`` and skip, saying so, when it or the Python packages are missing.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from auditclf.api import Audit
from auditclf.report.pdf import print_variant
from tests.conftest import MINIMAL_CONFIG, cli

CHROMIUM = shutil.which("chromium")
try:
    from axe_playwright_python.sync_playwright import Axe
    from playwright.sync_api import sync_playwright
except ImportError:  # the [test] extra not installed
    sync_playwright = None

needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="no `chromium` on PATH (apt-get install chromium; .ci/run does)"
)
needs_browser = pytest.mark.skipif(
    CHROMIUM is None or sync_playwright is None,
    reason="needs `chromium` on PATH and playwright + axe-playwright-python (pip install "
    "-e '.[test]'); .ci/run installs both",
)
CSP = "default-src 'none'"
WIDTHS = (1280, 390)
# Runs JavaScript that adds <div id="pwned"> (or opens a dialog): never may it run.
MARK = "document.body.appendChild(Object.assign(document.createElement('div'),{id:'pwned'}))"
HOSTILE = [
    f'<img src=x onerror="{MARK}">',
    f"<script>{MARK}</script>",
    f"javascript:{MARK}",
    f'"><svg onload="{MARK}">',
    "</style></title><script>alert(1)</script>",
]


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium for the module's tests."""
    with sync_playwright() as driver:
        launched = driver.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
        )
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    """Where the screenshots go: ``$AUDITCLF_ARTIFACTS/screenshots``, else a temp folder."""
    root = os.environ.get("AUDITCLF_ARTIFACTS")
    folder = Path(root) / "screenshots" if root else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    print(f"\nbrowser screenshots: {folder}")
    return folder


class Visit:
    """A page opened from a local file with every request routed: what it asked the
    network for (anything but the file itself), its console errors, uncaught errors and
    dialogs."""

    def __init__(self, browser, path: Path, width: int, *, bypass_csp: bool = False) -> None:
        self.url = path.resolve().as_uri()
        self.requests: list[str] = []
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.context = browser.new_context(
            viewport={"width": width, "height": 900}, bypass_csp=bypass_csp
        )
        self.page = self.context.new_page()
        self.page.route("**/*", self._route)
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda error: self.errors.append(f"uncaught: {error}"))
        self.page.on("dialog", self._dialog)
        self.page.goto(self.url, wait_until="load")

    def _route(self, route) -> None:
        if route.request.url == self.url:
            route.continue_()
        else:
            self.requests.append(route.request.url)
            route.abort()

    def _console(self, message) -> None:
        if message.type in ("error", "warning"):
            self.errors.append(f"console {message.type}: {message.text}")

    def _dialog(self, dialog) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def assert_quiet(self) -> None:
        assert self.requests == [], f"network requests from {self.url}: {self.requests[:5]}"
        assert self.errors == [], self.errors
        assert self.dialogs == []

    def close(self) -> None:
        self.context.close()


def _visits(browser, path: Path, shots: Path, stem: str, **kwargs):
    """The page opened at each width of WIDTHS, its first screen saved as a screenshot."""
    for width in WIDTHS:
        visit = Visit(browser, path, width, **kwargs)
        try:
            visit.page.screenshot(path=shots / f"{stem}-{width}.png")
            yield visit
        finally:
            visit.close()


def _csp(page) -> str:
    meta = page.locator('meta[http-equiv="Content-Security-Policy"]')
    assert meta.count() == 1
    return meta.get_attribute("content")


@needs_browser
def test_report_loads_offline_with_verdict_and_key_numbers_visible(browser, digits_run, shots):
    verdict = json.loads((digits_run / "report.json").read_text())["verdict"]
    for visit in _visits(browser, digits_run / "report.html", shots, "report"):
        page = visit.page
        visit.assert_quiet()
        assert CSP in _csp(page)
        banner = page.locator("#verdict .banner .verdict").first
        assert banner.is_visible() and banner.inner_text().strip()
        assert verdict in page.locator("#verdict .banner").first.inner_text().lower()
        values = page.locator("#verdict .tile .value")
        assert values.count() >= 5
        for i in range(values.count()):
            assert values.nth(i).is_visible()
            assert values.nth(i).inner_text().rstrip("%").replace(".", "").isdigit()
        assert page.evaluate("[...document.images].every(i => i.complete && i.naturalWidth > 0)")


# Under print media: whether any element stays sticky or fixed, and whether the content of
# every <details> (open or closed) takes room on the page.
PRINT_CHECK = """() => {
  const pinned = [...document.querySelectorAll('body *')].filter(
    e => ['sticky', 'fixed'].includes(getComputedStyle(e).position)).map(e => e.tagName);
  const hidden = [...document.querySelectorAll('details')].filter(d =>
    [...d.children].some(c => c.tagName !== 'SUMMARY' && c.getClientRects().length === 0));
  return {pinned, hidden: hidden.length, details: document.querySelectorAll('details').length};
}"""


@needs_browser
def test_print_stylesheet_pins_nothing_and_shows_details(browser, digits_run):
    visit = Visit(browser, digits_run / "report.html", 1280)
    try:
        visit.page.emulate_media(media="print")
        printed = visit.page.evaluate(PRINT_CHECK)
    finally:
        visit.close()
    assert printed["details"] > 0, "the fixture's report has no <details> to check"
    assert printed["pinned"] == [] and printed["hidden"] == 0, printed


@needs_browser
def test_compare_page_loads_offline(browser, digits_run, gated_run, tmp_path, shots):
    out = tmp_path / "cmp"
    assert cli("compare", digits_run, gated_run, "--out", out).status in (0, 1)
    regressions = len(json.loads((out / "compare.json").read_text())["regressions"])
    for visit in _visits(browser, out / "compare.html", shots, "compare"):
        page = visit.page
        visit.assert_quiet()
        assert CSP in _csp(page)
        banner = page.locator(".banner .verdict").first
        assert banner.is_visible() and banner.inner_text().startswith(str(regressions))
        first = page.locator("table.cmp tbody tr td.num").first
        assert first.is_visible() and first.inner_text().strip()


def _notebook_page(audit: Audit, folder: Path) -> Path:
    """The notebook view as Jupyter shows it: the summary fragment inside a page."""
    path = folder / "notebook.html"
    path.write_text(
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>notebook</title>'
        f"</head><body><main>{audit._repr_html_()}</main></body></html>",
        encoding="utf-8",
    )
    return path


@needs_browser
def test_notebook_view_loads_offline(browser, digits_run, tmp_path, shots):
    audit = Audit.load(digits_run / "report.json")
    fragment = audit._repr_html_()
    assert "<script" not in fragment and "http" not in fragment  # nothing to run or fetch
    page_file = _notebook_page(audit, tmp_path)
    report = Visit(browser, digits_run / "report.html", 1280)
    try:  # one verdict, worded the same everywhere
        said = report.page.locator("#verdict .banner .verdict").first.inner_text().strip()
    finally:
        report.close()
    for visit in _visits(browser, page_file, shots, "notebook"):
        page = visit.page
        visit.assert_quiet()
        verdict = page.locator("main > div > div").first
        assert verdict.is_visible() and verdict.inner_text().strip() == said
        numbers = page.locator("main table tr td:nth-child(2)")
        assert numbers.count() >= 5
        assert all(numbers.nth(i).is_visible() for i in range(numbers.count()))
        assert "performance.accuracy" in page.inner_text("main")


# MINIMAL_CONFIG of conftest, with subgroups: the hostile metadata values are groups.
HOSTILE_CONFIG = MINIMAL_CONFIG.replace(
    "fairness:\n  enabled: false\n", "fairness:\n  min_group_size: 5\n  n_boot: 20\n"
)
assert HOSTILE_CONFIG != MINIMAL_CONFIG


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory) -> Path:
    """A minimal audit whose class names, file names, metadata values, data folder and
    manifest names are script payloads, with a gate it fails; its output folder."""
    from PIL import Image

    root = tmp_path_factory.mktemp("hostile")
    data = root / HOSTILE[3]  # a folder named '"><svg onload=...>'
    data.mkdir()
    table = io.StringIO()
    rows = csv.writer(table)
    rows.writerow(["path", "label", "scanner"])
    for i in range(40):
        for k, label in enumerate(HOSTILE[:4]):
            # pairs of equal images under hostile names: listed as duplicates in the report
            name = f"{HOSTILE[0]}_{k}_{i}.png" if i % 2 else f"img{k}_{i}.png"
            Image.new("L", (8, 8), 30 + 60 * k + i // 2).save(data / name)
            rows.writerow([name, label, HOSTILE[1 + i % 2]])
    manifest = data / f"{HOSTILE[0]}.csv"  # the dataset's name
    manifest.write_text(table.getvalue())
    config = root / "hostile.yaml"
    config.write_text(HOSTILE_CONFIG)
    out = root / "out"
    gate = "performance.accuracy>=0.99"
    result = cli(
        "run", "--config", config, "--dataset", manifest, "--gate", gate, "--out", out, "--quiet"
    )
    assert result.status == 1, result
    return out


@needs_browser
def test_payloads_run_when_nothing_escapes_them(browser, tmp_path):
    """The control: unescaped and without the CSP, the marker does appear."""
    page_file = tmp_path / "raw.html"
    page_file.write_text(f"<!DOCTYPE html><title>raw</title><body>{HOSTILE[0]}</body>")
    visit = Visit(browser, page_file, 1280)
    try:
        visit.page.wait_for_selector("#pwned", state="attached", timeout=5000)
    finally:
        visit.close()


@needs_browser
def test_hostile_strings_run_nothing(browser, hostile_run, tmp_path, shots):
    notebook = _notebook_page(Audit.load(hostile_run / "report.json"), tmp_path)
    pages = {  # each page, and the payloads it shows (the notebook names only the data)
        "xss-report": (hostile_run / "report.html", HOSTILE[:4]),
        "xss-notebook": (notebook, HOSTILE[:1]),
    }
    for stem, (path, shown) in pages.items():
        for visit in _visits(browser, path, shots, stem):
            page = visit.page
            page.wait_for_timeout(200)  # time for any handler that slipped through to fire
            visit.assert_quiet()  # an <img src=x> that became markup would request x
            assert page.locator("#pwned").count() == 0
            text = page.inner_text("body")
            for payload in shown:  # shown as text, so escaped, not dropped
                assert payload in text, (stem, payload)


def _serious_violations(browser, path: Path) -> dict[str, list]:
    """axe-core's serious and critical violations on the page: rule -> first elements. At
    390 px: what overflows (rows that scroll sideways) shows only on a narrow screen, and
    the other rules do not depend on the width."""
    visit = Visit(browser, path, 390, bypass_csp=True)  # axe is injected as a script
    try:
        found = Axe().run(visit.page).response["violations"]
    finally:
        visit.close()
    return {
        v["id"]: [n["target"] for n in v["nodes"][:3]]
        for v in found
        if v["impact"] in ("serious", "critical")
    }


@needs_browser
def test_report_has_no_serious_accessibility_violation(browser, digits_run):
    assert _serious_violations(browser, digits_run / "report.html") == {}


@needs_browser
def test_axe_finds_what_it_should(browser, tmp_path):
    """The control: an image without alt text, faint text, no lang, no title."""
    page = tmp_path / "bad.html"
    page.write_text(
        '<html><body><img src="data:image/gif;base64,R0lGODlhAQABAAAAACw=">'
        '<p style="color:#ddd;background:#fff">faint</p></body></html>'
    )
    found = _serious_violations(browser, page)
    assert {"image-alt", "color-contrast", "html-has-lang", "document-title"} <= set(found)


def test_the_print_variant_opens_every_details_block():
    page = (
        '<details class="long"><summary>rows</summary></details><details open>'
        "<details>x</details><p>&lt;details&gt; is text</p><detailsx>"
    )
    assert print_variant(page) == (
        '<details open class="long"><summary>rows</summary></details><details open>'
        "<details open>x</details><p>&lt;details&gt; is text</p><detailsx>"
    )


def _pdf_text(pdf: Path, tmp_path: Path) -> str:
    subprocess.run(
        ["pdftoppm", "-png", "-r", "50", "-f", "1", "-l", "1", pdf, tmp_path / "page"],
        check=True,
        capture_output=True,
    )
    assert [p.stat().st_size > 1000 for p in tmp_path.glob("page*.png")] == [True]
    return subprocess.run(
        ["pdftotext", "-f", "1", "-l", "1", pdf, "-"], check=True, capture_output=True, text=True
    ).stdout


@needs_chromium
@pytest.mark.skipif(shutil.which("pdftoppm") is None, reason="no pdftoppm (poppler-utils)")
def test_report_pdf_has_the_verdict_on_page_one(hostile_run, tmp_path):
    out = tmp_path / "out"
    result = cli("report", hostile_run, "--out", out, "--pdf")
    assert result.status == 0, result
    assert f"pdf: {out / 'report.pdf'}" in result.out
    pdf = out / "report.pdf"
    assert pdf.read_bytes().startswith(b"%PDF")
    assert json.loads((hostile_run / "report.json").read_text())["verdict"] == "fail"
    page_one = _pdf_text(pdf, tmp_path)
    assert "FAIL" in page_one.upper() and "onerror=" in page_one  # printed as text
    assert not list(out.parent.glob(".*staging*"))


def test_pdf_without_chromium_is_a_usage_error(digits_run, tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.delenv("AUDITCLF_CHROMIUM", raising=False)
    result = cli("report", digits_run, "--out", tmp_path / "out", "--pdf")
    assert result.status == 2 and result.err.count("\n") == 1, result
    assert "Chromium" in result.err and "AUDITCLF_CHROMIUM" in result.err
    assert not (tmp_path / "out").exists()  # refused before any work
    monkeypatch.setenv("AUDITCLF_CHROMIUM", str(empty / "chrome"))
    result = cli("report", digits_run, "--out", tmp_path / "out", "--pdf")
    assert result.status == 2 and result.err.count("\n") == 1, result
    assert str(empty / "chrome") in result.err and "Traceback" not in result.err
