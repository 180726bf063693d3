"""The report's budget: its size and how fast headless Chromium renders it.

    python benchmarks/bench_report.py RUN_FOLDER [--repeats 5] [--width 1280]

Re-renders ``report.html`` of a finished run (``auditclf report RUN_FOLDER --out TMP``,
the shipped templates) and loads it ``--repeats`` times in the system's ``chromium``
(Playwright; nothing downloaded), each time in a fresh browser context. It prints the
file size and the median of the browser's own timings: ``loadEventEnd`` of the
navigation entry (every inline image decoded), first contentful paint and largest
contentful paint, against the budgets of the default report: at most 1.5 MB and
fully rendered (load and largest paint) within 2 s. Measured on the machine it runs
on; other jobs on its cores slow it (the load average is printed). Exit 1 when a
budget is exceeded.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from playwright.sync_api import sync_playwright

from auditclf.cli import run

SIZE_BUDGET_MB = 1.5
TIME_BUDGET_S = 2.0
# The navigation's load end and the paints, in ms since navigation start; the largest
# contentful paint comes through an observer that replays the buffered entry.
TIMINGS = """() => new Promise(resolve => {
  const nav = performance.getEntriesByType('navigation')[0];
  const paint = name => (performance.getEntriesByName(name)[0] || {}).startTime ?? null;
  new PerformanceObserver(list => {
    const entries = list.getEntries();
    resolve({load: nav.loadEventEnd, fcp: paint('first-contentful-paint'),
             lcp: entries[entries.length - 1].startTime});
  }).observe({type: 'largest-contentful-paint', buffered: true});
  setTimeout(() => resolve({load: nav.loadEventEnd, fcp: paint('first-contentful-paint'),
                            lcp: null}), 1000);
})"""


def render(folder: Path, out: Path) -> Path:
    """report.html of ``folder`` re-rendered into ``out``."""
    status = run(["report", str(folder), "--out", str(out)], stdout=io.StringIO())
    if status != 0:
        raise SystemExit(f"auditclf report {folder} failed (exit {status})")
    return out / "report.html"


def measure(page_file: Path, repeats: int, width: int) -> dict[str, float | None]:
    """The median of each timing (seconds) over ``repeats`` fresh loads of the page."""
    chromium = shutil.which("chromium")
    if chromium is None:
        raise SystemExit("no `chromium` on PATH (apt-get install chromium)")
    samples = []
    with sync_playwright() as driver:
        browser = driver.chromium.launch(
            executable_path=chromium, args=["--no-sandbox", "--disable-gpu"]
        )
        for _ in range(repeats):
            context = browser.new_context(viewport={"width": width, "height": 900})
            page = context.new_page()
            page.goto(page_file.resolve().as_uri(), wait_until="load")
            samples.append(page.evaluate(TIMINGS))
            context.close()
        browser.close()
    return {
        name: (
            statistics.median(s[name] for s in samples) / 1000
            if all(s[name] is not None for s in samples)
            else None
        )
        for name in ("load", "fcp", "lcp")
    }


def verdict(value: float | None, budget: float) -> str:
    if value is None:
        return "not reported by this browser"
    return "within budget" if value <= budget else "OVER BUDGET"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="a finished run's folder (report.json ...)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--width", type=int, default=1280, help="viewport width in px")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-report-") as tmp:
        page_file = render(args.folder, Path(tmp) / "out")
        size_mb = page_file.stat().st_size / 1e6
        timings = measure(page_file, args.repeats, args.width)
    print(
        f"report.html of {args.folder}, {args.repeats} loads at {args.width} px, "
        f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    print(
        f"  size                      {size_mb:6.3f} MB  (budget {SIZE_BUDGET_MB} MB: "
        f"{verdict(size_mb, SIZE_BUDGET_MB)})"
    )
    labels = {
        "load": "loadEventEnd",
        "fcp": "first contentful paint",
        "lcp": "largest contentful paint",
    }
    for name, label in labels.items():
        value = timings[name]
        shown = "     —" if value is None else f"{value:6.3f}"
        print(
            f"  {label:<25} {shown} s   (budget {TIME_BUDGET_S} s: {verdict(value, TIME_BUDGET_S)})"
        )
    over = size_mb > SIZE_BUDGET_MB or any(
        v is not None and v > TIME_BUDGET_S for v in timings.values()
    )
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
