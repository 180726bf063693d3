"""A small name -> object registry, one per kind (datasets, models, probes, analyses).

``auditclf list`` prints them and the tests iterate them, so a new entry is
covered without anyone remembering to add it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

from auditclf.catalog import CATALOG
from auditclf.errors import UsageError

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    obj: T
    summary: str


class Registry(Generic[T]):
    """Maps user-facing names (``mnist5k``, ``basic-cnn``) to factories."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Register ``obj`` under ``name``, a name of :data:`auditclf.catalog.CATALOG`
        (which gives its summary and its place in the order)."""
        summary = CATALOG[self.kind].get(name)
        if summary is None:
            raise ValueError(f"{self.kind} {name!r} is not in auditclf.catalog.CATALOG")

        def decorate(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = Entry(name, obj, summary)
            order = list(CATALOG[self.kind])
            self._entries = dict(sorted(self._entries.items(), key=lambda e: order.index(e[0])))
            return obj

        return decorate

    def get(self, name: str) -> T:
        try:
            return self._entries[name].obj
        except KeyError:
            known = ", ".join(self.names())
            raise UsageError(f"unknown {self.kind} {name!r}; known: {known}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def names(self) -> list[str]:
        return list(self._entries)

    def __iter__(self) -> Iterator[Entry[T]]:
        return iter(self._entries.values())
