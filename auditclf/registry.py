"""A small name -> object registry, one per kind (datasets, models, probes, analyses).

``auditclf list`` prints them and the tests iterate them, so a new entry is
covered without anyone remembering to add it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

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

    def register(self, name: str, *, summary: str) -> Callable[[T], T]:
        def decorate(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = Entry(name, obj, summary)
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
