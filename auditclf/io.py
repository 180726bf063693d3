"""Atomic output: a killed run leaves the previous set of files or the new one, never a mix.

``--out`` is auditclf's folder. A writer (:class:`StagedOutput`) produces the whole
new set in a fresh sibling folder ``.<out>.auditclf-staging-<pid>-<random>``, then
swaps it with ``--out`` in one step (Linux ``renameat2(RENAME_EXCHANGE)``) and
deletes the folder it swapped out, which now holds the previous set. So at every
moment ``--out`` holds exactly the previous set or exactly the new one: every
file of the previous set that the new one lacks is gone with it.

- A missing or empty ``--out`` is created or used, and so is a folder holding only
  files auditclf writes (``auditclf train``'s model and sidecar). A folder holding
  other files but no auditclf report (``report.json`` or ``compare.json``) is
  refused (exit 2) rather than taken over: it is probably not meant to be one.
- Files of the user's own in a report folder (names auditclf never writes) are
  carried into the new set (hard links); a subfolder of the user's is refused
  (exit 2), as it cannot be carried over in one step.
- ``keep_others=True`` (re-rendering a report in place, ``compare`` into a run's
  folder) carries the previous set's files that the writer does not rewrite.
- Staging folders of killed writers are removed by the next writer, recognised by
  auditclf's own naming only, and only once their process is gone or they are an
  hour old.
- Where one-step swapping is not possible (not Linux, ``--out`` a mount point or the
  working directory, its parent not writable, a filesystem without
  ``RENAME_EXCHANGE``) the set is staged inside ``--out`` and moved in file by file
  (each ``os.replace`` atomic), then the previous set's other files are removed: a
  kill during that commit can leave a mix.

Test hook: ``AUDITCLF_TEST_SLOW_COMMIT=<seconds>`` sleeps that long right before
and again right after the swap, so a fault test can kill a run inside its commit.
Nothing else reads it.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import re
import shutil
import stat
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from auditclf.errors import UsageError

SLOW_COMMIT_ENV = "AUDITCLF_TEST_SLOW_COMMIT"
PROBE_PREFIX = ".auditclf-probe-"  # the preflight's writability probe, gone in a moment
ABANDONED_AFTER_S = 3600.0  # a staging folder this old is a dead writer's, whatever its pid says
REPORT_MARKERS = frozenset({"report.json", "compare.json"})
_OUTPUT_FILES = frozenset(
    {
        "report.html",
        "report.pdf",
        "report.json",
        "artifacts.npz",
        "samples.csv",
        "junit.xml",
        "summary.md",
        "model_card.md",
        "compare.html",
        "compare.json",
    }
)
# the one subfolder auditclf writes: the exported model files (auditclf export, run --export)
EXPORT_FOLDER = "export"
_INSIDE_STAGING = re.compile(r"\.auditclf-staging-(\d+)-[a-z0-9_]{8}")
_LEGACY_STAGING = re.compile(r"\.staging-[a-z0-9_]{8}")  # inside --out, by auditclf <= 0.x
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temp file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the usual mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _sibling_staging(out: Path) -> re.Pattern:
    return re.compile(rf"\.{re.escape(out.name)}\.auditclf-staging-(\d+)-[a-z0-9_]{{8}}")


def _is_staging(name: str) -> bool:
    return bool(_INSIDE_STAGING.fullmatch(name) or _LEGACY_STAGING.fullmatch(name))


def _written_by_auditclf(name: str, names: set[str]) -> bool:
    """Whether ``name`` in a report folder is an auditclf output: a report file, a model's
    weights, the ``.json`` sidecar beside those weights, or the export folder."""
    path = Path(name)
    return (
        name in _OUTPUT_FILES
        or name == EXPORT_FOLDER
        or path.suffix == ".safetensors"
        or (path.suffix == ".json" and f"{path.stem}.safetensors" in names)
    )


def check_out_folder(out: Path) -> None:
    """Refuse an ``--out`` that auditclf must not take over (exit 2); see the module doc."""
    out = Path(out)
    if not out.exists():
        return
    if not out.is_dir():
        raise UsageError(f"{out}: --out must be a folder, and this is not one")
    entries = [
        entry
        for entry in os.scandir(out)
        if not _is_staging(entry.name) and not entry.name.startswith(PROBE_PREFIX)
    ]
    names = {entry.name for entry in entries}
    ours = all(_written_by_auditclf(name, names) for name in names)  # train/harden's folder
    if names and not names & REPORT_MARKERS and not ours:
        raise UsageError(
            f"{out}: not empty and holds no auditclf report (report.json or compare.json); "
            "give a new or empty folder for --out"
        )
    for entry in entries:
        if not _written_by_auditclf(entry.name, names) and not entry.is_file(follow_symlinks=False):
            raise UsageError(
                f"{out}: holds {entry.name!r}, which auditclf did not write and cannot keep "
                "when it replaces the report (only files are kept); move it or give another "
                "folder for --out"
            )


def _process_alive(pid: int) -> bool:
    if os.name == "nt":  # os.kill(pid, 0) would send CTRL_C there: rely on the age alone
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _abandoned(path: Path, pid: int | None) -> bool:
    if pid == os.getpid():
        return False  # another writer of this process, still at work
    try:
        age = time.time() - path.lstat().st_mtime
    except FileNotFoundError:
        return False
    return age > ABANDONED_AFTER_S or (pid is not None and not _process_alive(pid))


def _staging_folders(out: Path) -> Iterator[tuple[Path, int | None]]:
    """Every staging folder of a writer to ``out``, with its process id where it has one."""
    for folder, pattern in (
        (out.parent, _sibling_staging(out)),
        (out, _INSIDE_STAGING),
        (out, _LEGACY_STAGING),
    ):
        if not folder.is_dir():
            continue
        for entry in os.scandir(folder):
            match = pattern.fullmatch(entry.name)
            if match and entry.is_dir(follow_symlinks=False):
                yield folder / entry.name, int(match.group(1)) if pattern.groups else None


def remove_abandoned_staging(out: Path) -> list[Path]:
    """Delete the staging folders of killed writers to ``out``; return the ones removed.

    Only auditclf's own names qualify: ``.<out>.auditclf-staging-<pid>-<random>`` beside
    ``out`` and ``.auditclf-staging-<pid>-<random>`` inside it once ``<pid>`` is no
    longer running, and any of them, or ``.staging-<random>`` inside ``out`` (older
    auditclf, no pid), once an hour old. One that cannot be deleted now is left for
    the next writer.
    """
    removed = []
    for path, pid in _staging_folders(Path(out)):
        if _abandoned(path, pid):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


@functools.cache
def _renameat2():
    if not sys.platform.startswith("linux"):
        return None
    return getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)


def _exchange(a: Path, b: Path) -> None:
    """Swap the two paths ``a`` and ``b`` in one step (Linux ``renameat2(RENAME_EXCHANGE)``)."""
    renameat2 = _renameat2()
    if renameat2 is None:
        raise OSError(errno.ENOSYS, "renameat2 is not available", str(a), None, str(b))
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE):
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), str(a), None, str(b))


def _swap_possible(out: Path) -> bool:
    return _renameat2() is not None and not os.path.ismount(out) and out != Path.cwd()


def _slow_commit_for_tests() -> None:
    """The test hook of the module doc; unset (always, outside tests) it does nothing."""
    seconds = os.environ.get(SLOW_COMMIT_ENV)
    if seconds:
        time.sleep(float(seconds))


def _link_or_copy(source: Path, target: Path) -> None:
    source = Path(source)
    if source.is_dir() and not source.is_symlink():  # the export folder, file by file
        shutil.copytree(source, target, copy_function=_link_or_copy)
        return
    try:
        os.link(source, target)
    except OSError:  # a filesystem without hard links
        shutil.copy2(source, target)


def _move(source: Path, target: Path) -> None:
    """``os.replace``, also from another mount (a bind-mounted ``--out``): copy, then rename."""
    try:
        os.replace(source, target)
    except OSError as error:
        if error.errno != errno.EXDEV:
            raise
        copy = target.with_name(f".{target.name}.{os.getpid()}.copy")
        shutil.copy2(source, copy)
        os.replace(copy, target)
        source.unlink()


class StagedOutput:
    """Collects a set of output files in a staging folder, then swaps the set into ``out_dir``.

    ``path(name)`` and ``write_text(name, text)`` write into the staging folder;
    ``commit()`` makes the staged files, and nothing else of auditclf's, ``out_dir``'s
    content (see the module doc for ``keep_others`` and the user's own files);
    ``abort()`` drops them and leaves ``out_dir`` as it was. As a context manager it
    commits on success and aborts on any exception.
    """

    def __init__(
        self, out_dir: Path, *, keep_others: bool = False, stale: frozenset[str] = frozenset()
    ) -> None:
        self.out_dir = Path(os.path.realpath(out_dir))  # a symlinked --out: write its target
        self.keep_others = keep_others
        self.stale = stale  # outputs the new set makes out of date: never kept
        check_out_folder(self.out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        remove_abandoned_staging(self.out_dir)
        self.staging, self.swap = self._make_staging()

    def _make_staging(self) -> tuple[Path, bool]:
        if _swap_possible(self.out_dir):
            prefix = f".{self.out_dir.name}.auditclf-staging-{os.getpid()}-"
            try:
                return Path(tempfile.mkdtemp(prefix=prefix, dir=self.out_dir.parent)), True
            except PermissionError:  # the parent is not ours to write: stage inside out_dir
                pass
        prefix = f".auditclf-staging-{os.getpid()}-"
        return Path(tempfile.mkdtemp(prefix=prefix, dir=self.out_dir)), False

    def path(self, name: str) -> Path:
        return self.staging / name

    def write_text(self, name: str, text: str) -> None:
        self.path(name).write_text(text, encoding="utf-8")

    def carry(self, source: Path) -> None:
        """Put the existing file ``source`` into the new set under its own name (a hard
        link, or a copy), unless the set already has a file of that name."""
        if not self.path(source.name).exists():
            _link_or_copy(source, self.path(source.name))

    def commit(self) -> list[Path]:
        """Put the staged set in place; return the paths of the files this writer wrote.
        A commit that fails drops the staged set (what it had moved in stays)."""
        written = sorted(item.name for item in self.staging.iterdir())
        try:
            if self.swap:
                self._swap_in(written)
            else:
                self._move_in(written)
        except BaseException:
            self.abort()
            raise
        return [self.out_dir / name for name in written]

    def _previous(self, written: list[str]) -> tuple[list[str], list[str]]:
        """out_dir's entries besides the written ones: (carried into the new set, dropped)."""
        names = {e.name for e in os.scandir(self.out_dir) if not _is_staging(e.name)}
        kept, dropped = [], []
        for name in sorted(names - set(written)):
            carry = name not in self.stale and (
                self.keep_others or not _written_by_auditclf(name, names)
            )
            (kept if carry else dropped).append(name)
        return kept, dropped

    def _swap_in(self, written: list[str]) -> None:
        kept, _ = self._previous(written)
        for name in kept:
            _link_or_copy(self.out_dir / name, self.staging / name)
        os.chmod(self.staging, stat.S_IMODE(self.out_dir.stat().st_mode))
        _slow_commit_for_tests()
        try:
            _exchange(self.staging, self.out_dir)
        except OSError:  # a failed exchange changed nothing: commit file by file instead
            for name in kept:
                (self.staging / name).unlink()
            self._move_in(written)
            return
        _slow_commit_for_tests()
        # The previous set, swapped out. The new one is in place whatever happens here:
        # what cannot be deleted now is the next writer's to remove, as after a kill.
        shutil.rmtree(self.staging, ignore_errors=True)

    def _move_in(self, written: list[str]) -> None:
        """The fallback commit: each file by ``os.replace``, then the previous set's rest goes."""
        _, dropped = self._previous(written)
        for name in written:
            if name == EXPORT_FOLDER and (self.out_dir / name).is_dir():  # replaced whole
                shutil.rmtree(self.out_dir / name)
            _move(self.staging / name, self.out_dir / name)
        for name in dropped:
            if name == EXPORT_FOLDER and (self.out_dir / name).is_dir():
                shutil.rmtree(self.out_dir / name)
            else:
                (self.out_dir / name).unlink(missing_ok=True)
        self.staging.rmdir()

    def abort(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)

    def __enter__(self) -> StagedOutput:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()
