"""Progress of long phases: lines in a log, a bar on a terminal, nothing when quiet."""

from __future__ import annotations

import io

import pytest

from auditclf.progress import OFF_TASK, Progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


def test_lines_mode_prints_start_each_new_note_and_the_duration():
    stream = io.StringIO()
    with Progress("lines", stream, every=0).task("attacks on baseline", total=3) as task:
        task.advance(note="fgsm eps 0.1, 300 images")
        task.advance(note="fgsm eps 0.1, 300 images")  # the same note: no second line
        task.advance(note="pgd_linf eps 0.1, 300 images")
    lines = _lines(stream)
    assert lines[:3] == [
        "attacks on baseline: started (3 steps)",
        "attacks on baseline: 1/3, fgsm eps 0.1, 300 images",
        "attacks on baseline: 3/3, pgd_linf eps 0.1, 300 images",
    ]
    assert lines[3].startswith("attacks on baseline: done in ") and len(lines) == 4


def test_lines_mode_never_floods_a_log():
    stream = io.StringIO()
    with Progress("lines", stream).task("explanations of baseline") as task:
        for step in range(1000):
            task.advance(note=f"image {step}")
    lines = _lines(stream)
    assert lines[0] == "explanations of baseline: started" and len(lines) == 2


def test_a_failed_task_says_so():
    stream = io.StringIO()
    with pytest.raises(KeyError), Progress("lines", stream).task("analyses of baseline"):
        raise KeyError("x")
    assert _lines(stream)[-1].startswith("analyses of baseline: stopped after ")


def test_the_stream_picks_the_mode_and_quiet_prints_nothing():
    log, terminal = io.StringIO(), _Terminal()
    assert Progress.for_stream(True, log).mode == "lines"
    assert Progress.for_stream(True, terminal).mode == "bars"
    quiet = Progress.for_stream(False, terminal)
    assert quiet.mode == "off" and quiet.task("x", total=3) is OFF_TASK
    with quiet.task("attacks on baseline", total=3) as task:
        task.advance(note="fgsm")
    assert terminal.getvalue() == ""


def test_bars_mode_leaves_one_line_with_the_duration():
    terminal = _Terminal()
    with Progress("bars", terminal).task("clean pass of baseline", total=2) as task:
        task.advance(2, note="2 images")
    assert (
        terminal.getvalue()
        .rstrip("\n")
        .split("\r")[-1]
        .lstrip()
        .startswith("clean pass of baseline: done in ")
    )
