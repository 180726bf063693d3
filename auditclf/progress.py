"""What a long phase is doing, on stderr: a bar on a terminal, a few lines in a log.

An audit spends minutes in phases that print nothing of their own (attacks,
explanations, hardening). Each such phase is a :class:`Task` of the run's
:class:`Progress`:

    with progress.task("attacks on baseline", total=42) as task:
        task.advance(note="pgd_linf eps 0.1, 300 images")

``bars`` (a terminal): a tqdm bar while the task runs, then one line with its duration.
``lines`` (CI logs, files): a line when the task starts, at most one line per change of
note and never two within :data:`NOTE_EVERY_S`, and a line with its duration when it ends.
``off`` (``--quiet``): nothing, at no cost.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from tqdm.auto import tqdm

MODES = ("off", "lines", "bars")
NOTE_EVERY_S = 5.0  # seconds between two note lines in "lines" mode


def _seconds(elapsed: float) -> str:
    return f"{elapsed:.1f} s" if elapsed < 60 else f"{int(elapsed // 60)} min {elapsed % 60:.0f} s"


class Task:
    """One phase of the run; a context manager. The base class is the "off" task: it does
    nothing (``Progress("off")`` hands out one shared instance)."""

    def __enter__(self) -> Task:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None

    def advance(self, n: int = 1, note: str | None = None) -> None:
        """``n`` more steps done; ``note``: what the task is doing now (e.g. "pgd_linf eps
        0.1, 300 images")."""


class _LineTask(Task):
    """A task as lines: started (with its total), its notes (throttled), done in N s."""

    def __init__(self, what: str, total: int | None, stream: TextIO, every: float) -> None:
        self.what, self.total, self.stream, self.every = what, total, stream, every
        self.done, self.note = 0, None
        self.started = self.last_line = time.monotonic()

    def _write(self, text: str) -> None:
        self.stream.write(f"{self.what}: {text}\n")
        self.stream.flush()

    def _count(self) -> str:
        return f"{self.done}/{self.total}" if self.total is not None else f"{self.done}"

    def __enter__(self) -> Task:
        self._write("started" + (f" ({self.total} steps)" if self.total is not None else ""))
        return self

    def advance(self, n: int = 1, note: str | None = None) -> None:
        self.done += n
        now = time.monotonic()
        if note is not None and note != self.note and now - self.last_line >= self.every:
            self.note, self.last_line = note, now
            self._write(f"{self._count()}, {note}")

    def __exit__(self, exc_type: object, *_: object) -> None:
        elapsed = _seconds(time.monotonic() - self.started)
        self._write(f"stopped after {elapsed}" if exc_type else f"done in {elapsed}")


class _BarTask(_LineTask):
    """A task as a tqdm bar (its note beside it), then one line with its duration."""

    def __enter__(self) -> Task:
        self.bar = tqdm(
            total=self.total, desc=self.what, file=self.stream, leave=False, dynamic_ncols=True
        )
        return self

    def advance(self, n: int = 1, note: str | None = None) -> None:
        if note is not None and note != self.note:
            self.note = note
            self.bar.set_postfix_str(note, refresh=False)
        self.bar.update(n)

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self.bar.close()
        super().__exit__(exc_type, *exc)


OFF_TASK = Task()


class Progress:
    """The run's progress reporter: ``mode`` one of :data:`MODES`; output to ``stream``
    (default stderr, looked up when a task starts, so a redirected stderr is honoured)."""

    def __init__(
        self, mode: str = "off", stream: TextIO | None = None, *, every: float = NOTE_EVERY_S
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"progress mode {mode!r}: one of {', '.join(MODES)}")
        self.mode, self.stream, self.every = mode, stream, every

    @classmethod
    def for_stream(cls, enabled: bool, stream: TextIO | None = None) -> Progress:
        """``bars`` when ``stream`` (default stderr) is a terminal, ``lines`` when it is
        not, ``off`` when not ``enabled`` (``--quiet``)."""
        stream = stream or sys.stderr
        if not enabled:
            return cls("off")
        isatty = getattr(stream, "isatty", None)
        return cls("bars" if isatty is not None and isatty() else "lines", stream)

    def task(self, what: str, total: int | None = None) -> Task:
        """A phase named ``what`` (e.g. "attacks on baseline") of ``total`` steps (None:
        unknown); use it as ``with progress.task(...) as task:``."""
        if self.mode == "off":
            return OFF_TASK
        kind = _BarTask if self.mode == "bars" else _LineTask
        return kind(what, total, self.stream or sys.stderr, self.every)
