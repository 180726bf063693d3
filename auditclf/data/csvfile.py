"""Reading the CSV files a user hands in (manifests, metadata) with errors that name a line.

Line numbers are those of the file (the header is line 1), counted by the
reader, so blank lines and quoted fields that span lines do not shift them.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from auditclf.errors import DataError


def read_csv_rows(path: Path) -> tuple[list[str], list[dict[str, str]], list[int]]:
    """(columns, rows, each row's line number) of a UTF-8 CSV (a BOM is allowed).

    Raises :class:`DataError` naming the line of the first byte that is not
    UTF-8 (a Latin-1 export, say) or of a row the CSV reader cannot parse.
    """
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read file: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise DataError(
            f"{path} line {line}: byte 0x{raw[exc.start]:02x} is not UTF-8 text; "
            "save the file as UTF-8"
        ) from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    rows, lines = [], []
    try:
        for row in reader:
            rows.append(row)
            lines.append(reader.line_num)
    except csv.Error as exc:
        raise DataError(f"{path} line {reader.line_num}: not a readable CSV row ({exc})") from None
    return list(reader.fieldnames or []), rows, lines
