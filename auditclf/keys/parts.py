"""Names as metric-key parts: the one place a class or group name becomes part of a key.

``performance.class.<class>.recall`` and ``fairness.<attribute>.group.<value>.*``
carry names taken from the data. :func:`key_part` keeps ordinary names as they
are (``0``..``9``, ``circle``, ``stroke``) and maps any other to the key
alphabet: lower case, every run of characters outside ``a-z 0-9 _ -`` becomes
``_``, leading and trailing ``_`` dropped. That mapping is not one-to-one
(``a.1`` and ``a_1`` both give ``a_1``; ``Cat`` and ``cat`` both ``cat``), so
:func:`check_distinct_key_parts` refuses such a pair before any work is done,
instead of letting one name's metrics overwrite the other's.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from auditclf.errors import DataError


def key_part(name: str) -> str:
    """A class or group name as a metric-key part: lower-case, [a-z0-9_-] only."""
    cleaned = re.sub(r"[^a-z0-9_-]+", "_", str(name).strip().lower()).strip("_")
    return cleaned or "_"


def check_distinct_key_parts(names: Iterable[str], what: str, source: str) -> None:
    """Raise :class:`DataError` (exit 3) when two of ``names`` give the same key part.

    ``what`` says whose names they are in the message ("classes", "values of
    attribute 'age'"); ``source`` is the file or data set they came from.
    """
    seen: dict[str, str] = {}
    for name in names:
        part = key_part(name)
        if part not in seen:
            seen[part] = name
            continue
        first = seen[part]
        if first == name:
            raise DataError(f"{source}: {what}: {name!r} is named twice")
        raise DataError(
            f"{source}: {what} {first!r} and {name!r} would share the metric key part "
            f"{part!r} (their metrics would overwrite each other); rename one of them"
        )
