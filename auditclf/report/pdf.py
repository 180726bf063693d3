"""report.pdf: the report page printed by headless Chromium (``auditclf report DIR --pdf``).

A reviewer attaches the PDF to a release decision, so it must hold what the page
holds: the page is printed in its print variant, where every ``<details>`` block
is open (paper cannot be clicked), with the print stylesheet of the templates
(``_print.css``: no sticky elements, a page per section). No JavaScript is
involved: the page has none and its CSP (``default-src 'none'``) allows none (Chromium's
own switch for scripts, ``--blink-settings=scriptEnabled=false``, cannot be used: headless
printing then writes no file).

Which Chromium: ``$AUDITCLF_CHROMIUM`` when set (a path or a command name), else
the first of ``chromium``, ``chromium-browser``, ``google-chrome`` on ``PATH``.
None found is a usage error (exit 2) saying how to install one.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from auditclf.errors import AuditError, UsageError

PDF_FILE = "report.pdf"
CHROMIUM_ENV = "AUDITCLF_CHROMIUM"
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
PRINT_TIMEOUT_S = 300.0
# A <details> tag of the template; the page's text is autoescaped, so a "<details" in it
# is always markup, never a string from the audited data.
_DETAILS = re.compile(r"<details(?=[\s>])(?![^>]*\sopen[\s>=])")


def find_chromium() -> str:
    """The Chromium executable to print with (see the module doc); a usage error if none."""
    override = os.environ.get(CHROMIUM_ENV)
    if override:
        found = shutil.which(override)
        if found is None:
            raise UsageError(f"{override}: no such Chromium executable ({CHROMIUM_ENV}; --pdf)")
        return found
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found is not None:
            return found
    raise UsageError(
        f"--pdf prints through headless Chromium and none of {', '.join(CHROMIUM_NAMES)} is on "
        f"PATH: install it (apt-get install chromium) or set {CHROMIUM_ENV} to its path"
    )


def print_variant(page: str) -> str:
    """``page`` with every ``<details>`` block open, for paper."""
    return _DETAILS.sub("<details open", page)


def print_pdf(page: str, chromium: str) -> bytes:
    """The PDF of the report page ``page`` (HTML), printed by ``chromium`` in a private
    profile folder; an internal error (exit 6) naming what Chromium said if it printed none."""
    with tempfile.TemporaryDirectory(prefix="auditclf-pdf-") as tmp:
        source, target = Path(tmp) / "report.html", Path(tmp) / PDF_FILE
        source.write_text(print_variant(page), encoding="utf-8")
        command = [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-pdf-header-footer",
            f"--user-data-dir={Path(tmp) / 'profile'}",
            f"--print-to-pdf={target}",
            source.as_uri(),
        ]
        try:
            done = subprocess.run(command, capture_output=True, timeout=PRINT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise AuditError(f"{chromium}: printed no PDF in {PRINT_TIMEOUT_S:.0f} s") from None
        pdf = target.read_bytes() if target.is_file() else b""
        if not pdf.startswith(b"%PDF"):
            said = done.stderr.decode("utf-8", "replace").strip().splitlines()
            raise AuditError(
                f"{chromium}: printed no PDF (exit {done.returncode})"
                + (f": {said[-1][:200]}" if said else "")
            )
        return pdf
