"""torchrun sharding and gathering: the same audit split across processes, same numbers.

Under ``torchrun --nproc-per-node N -m auditclf run ...`` each process reads its place
from torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``; ``MASTER_ADDR`` and
``MASTER_PORT`` reach ``torch.distributed`` through its ``env://`` rendezvous).
:func:`init` starts the process group only when ``WORLD_SIZE`` > 1: gloo on CPU; on CUDA
NCCL for the GPU tensors (DDP's gradients) and gloo for everything else, with
``LOCAL_RANK`` picking the GPU. A single process never imports
``torch.distributed``: every function here then runs its work directly and returns it.

Rows are dealt like cards (:func:`shard`: rank ``r`` gets rows ``r, r + N, r + 2N...``),
so that data sorted by class, or by how hard an image is, loads every process alike; the
ranks' results are dealt back into row order (:func:`map_rows`). Per-image seeds and
passes of a fixed size make each row's result independent of the process that computes
it, so a sharded audit's numbers are the single process's, bit for bit.

Where the processes meet, and nowhere else:

- :func:`map_rows`: each rank runs the work on its share of the rows; the results are
  gathered to every rank (the clean, attack and corruption probes: every rank needs the
  clean predictions, and the attacks' ladders decide on every rank which images the next
  eps attacks).
- :func:`main_only`: rank 0 alone runs the work (the analyses, the export and its audit);
  the others wait for its outcome.
- :func:`exit_all`: every rank ends with rank 0's exit status.

A failure is shared at the meeting: a rank whose share raises sends its error instead of
its rows, and every rank raises it (:class:`~auditclf.errors.RankFailed`, with the failing
rank's exit status and message), so all processes exit with the same status and rank 0
alone prints the one line. A meeting that does not happen within ``distributed.timeout``
(a process killed or hung) raises on the ranks still waiting (exit 6). The gathers use
``all_gather_object`` (pickled numpy arrays, between the audit's own processes).

Data-parallel training meets in collectives of its own (``DistributedDataParallel``'s):
a failure there is told through the process group's store instead, printed by the
process it happened on, and every process ends at once with its status
(:func:`failing_alone`).
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from auditclf.errors import AuditError, ExitStatus, RankFailed, UsageError

if TYPE_CHECKING:
    import numpy as np

T = TypeVar("T")
_broken = False  # a meeting failed: the group can no longer be trusted to meet again
_alone = False  # inside main_only's work: rank 0 works as a single process, meeting no one
_unshared = False  # this process failed where the others could not hear of it
_met = [0, 0.0]  # meetings this process took part in, and the seconds it spent in them
_stranded: BaseException | None = None  # failed inside failing_alone(): never shared
_CLAIM = "auditclf/failed"  # the store's key: the first process failing inside failing_alone()


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    return int(value) if value.strip() else default


def rank() -> int:
    """This process's rank (torchrun's ``RANK``; 0 outside torchrun)."""
    return _env_int("RANK", 0)


def world() -> int:
    """The number of processes (torchrun's ``WORLD_SIZE``; 1 outside torchrun)."""
    return _env_int("WORLD_SIZE", 1)


def local_rank() -> int:
    """This process's rank on its machine (torchrun's ``LOCAL_RANK``): its GPU's index."""
    return _env_int("LOCAL_RANK", 0)


def is_main() -> bool:
    """Whether this process is rank 0, the one that analyses, writes the outputs and prints."""
    return rank() == 0


def active() -> bool:
    """Whether a process group of more than one process is running (and this process is
    not working alone for it: :func:`main_only`)."""
    if world() <= 1 or _alone:
        return False
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def init(device_type: str, timeout: float) -> None:
    """Start the process group when ``WORLD_SIZE`` > 1 (once): gloo on the CPU; when the
    audit runs on CUDA (this process's GPU set from ``LOCAL_RANK``), NCCL for tensors on
    the GPU and gloo for those on the CPU, where the meetings' pickled rows and outcomes
    go (torch's object collectives pick the CPU backend when the group has one): gloo
    raises on a timeout, where NCCL's watchdog would abort the process and its error line.
    ``timeout`` (seconds, ``distributed.timeout``) bounds every meeting."""
    if world() <= 1 or active():
        return
    import torch
    import torch.distributed as dist

    if device_type == "cuda":
        here, gpus = _env_int("LOCAL_WORLD_SIZE", 1), torch.cuda.device_count()
        if here > gpus:  # every process of this machine says so: rank 0 prints it once
            raise UsageError(
                f"torchrun started {here} processes on this machine, which has {gpus} GPU(s): "
                f"start one process per GPU (--nproc-per-node {gpus}), or audit with "
                "--device cpu"
            )
        torch.cuda.set_device(local_rank())
    dist.init_process_group(
        backend="cpu:gloo,cuda:nccl" if device_type == "cuda" else "gloo",
        timeout=timedelta(seconds=timeout),
    )


def card() -> dict:
    """How the audit was spread, for the run card: the number of processes, the backend
    that joined them (none in a single process), and rank 0's meetings with the others
    so far: how many, and the seconds spent in them (the gathers, and waiting for a slower
    process: what sharding costs)."""
    if not active():
        return {"world_size": 1, "backend": None}
    import torch.distributed as dist

    meetings, seconds = _met
    return {
        "world_size": world(),
        "backend": str(dist.get_backend()),
        "meetings": meetings,
        "meeting_seconds": round(seconds, 3),
    }


def device_index(device_type: str) -> int | None:
    """The GPU index a CUDA audit uses in this process: ``LOCAL_RANK`` under torchrun,
    none (the current device) otherwise."""
    return local_rank() if device_type == "cuda" and world() > 1 else None


def shard(rows: np.ndarray) -> np.ndarray:
    """This rank's share of ``rows``: every ``world()``-th row from row ``rank()`` (dealt
    like cards, so that rows sorted by class, or by how hard they are, are spread evenly);
    all of ``rows`` in a single process."""
    if not active():
        return rows
    return rows[rank() :: world()]


def map_rows(rows: np.ndarray, work: Callable[[np.ndarray], Any]) -> Any:
    """``work(share)`` on this rank's :func:`shard` of ``rows``, every rank's results
    dealt back into row order, on every rank (``work(rows)`` in a single process).

    ``work`` returns an array (rows first) or a dict of such arrays (put back key by key,
    :func:`_deal_back`); a rank whose share is empty contributes nothing. A failure on any
    rank is raised on every rank (:class:`~auditclf.errors.RankFailed`)."""
    if not active():
        return work(rows)
    mine = shard(rows)
    parts = _gather(_attempt(lambda: work(mine) if len(mine) else None))
    parts = [part for part in parts if part is not None]
    if not parts:  # no rows anywhere: the work's own empty result (or error, shared)
        return together(lambda: work(mine))
    if isinstance(parts[0], dict):
        return {key: _deal_back([part[key] for part in parts]) for key in parts[0]}
    return _deal_back(parts)


def _deal_back(parts: list[np.ndarray]) -> np.ndarray:
    """The rows :func:`shard` dealt out, back in their order: row ``i`` of rank ``r``'s part
    is row ``r + i * len(parts)`` (ranks with an empty share are left out of ``parts``, and
    hold the last places of the deal)."""
    import numpy as np  # here, not at the top: `auditclf list` and --help load no numpy

    whole = np.empty((sum(len(p) for p in parts), *parts[0].shape[1:]), dtype=parts[0].dtype)
    for r, part in enumerate(parts):
        whole[r :: len(parts)] = part
    return whole


def main_only(work: Callable[[], T]) -> T | None:
    """``work()`` on rank 0 alone → its result there, None on the other ranks, which wait
    for it; its failure is raised on every rank. In a single process, ``work()``."""
    if not active():
        return work()
    import torch.distributed as dist

    outcome = _attempt(lambda: _by_itself(work)) if is_main() else None
    failure = [outcome if isinstance(outcome, _Failure) else None]
    _meet(lambda: dist.broadcast_object_list(failure, src=0))
    if failure[0] is not None:
        raise failure[0].error()
    return outcome if is_main() else None


def _by_itself(work: Callable[[], T]) -> T:
    """``work()`` as a single process would run it: any sharded step inside it runs on all
    of its rows here (the other ranks are not there to share them)."""
    global _alone
    _alone = True
    try:
        return work()
    finally:
        _alone = False


def together(work: Callable[[], T]) -> T:
    """``work()`` on every rank, then a meeting: a failure on any rank (the data, the model
    refused) is raised on every rank, so the work every rank does alike fails as one."""
    if not active():
        return work()
    outcome = _attempt(work)
    _gather(outcome if isinstance(outcome, _Failure) else None)
    return outcome


def note_failure(exc: BaseException) -> None:
    """Record that this process ends with ``exc``. A failure the others heard of
    (:class:`~auditclf.errors.RankFailed`, raised on every rank) is printed by rank 0
    alone; one they did not (it happened on this rank only, outside the meetings: in DDP
    training, say, or rank 0's writing of the outputs) is printed by the rank it happened
    on, rank 0 included, which then ends at once (:func:`exit_all`) while torchrun or the
    timeout stops the others."""
    global _unshared
    _unshared = active() and not isinstance(exc, RankFailed)


def unshared() -> bool:
    """Whether this process failed where the others could not hear of it."""
    return _unshared


@contextmanager
def failing_alone() -> Iterator[None]:
    """Work whose processes meet in collectives the meetings here do not see
    (``DistributedDataParallel``'s in training). A failure inside cannot wait for the next
    meeting: the other processes are inside a collective this one left, and would meet its
    out of step, or wait out ``distributed.timeout``. So the first process to fail records
    its error in the process group's store, prints it and ends at once (:func:`note_failure`,
    :func:`exit_all`); the others, whose collective then breaks as it goes (or which failed
    alike), end with its status and print nothing (a ``told``
    :class:`~auditclf.errors.RankFailed`). Nothing changes in a single process."""
    global _stranded, _broken
    if not active():
        yield
        return
    try:
        yield
    except RankFailed:
        raise
    except Exception as exc:
        first = _claim(_Failure(exc))
        if first is None:  # this process came first, or no store to tell: it fails alone
            _stranded = exc
            raise
        _broken = True
        raise first from exc


def _store() -> Any:
    """The process group's key-value store (torchrun's rendezvous store)."""
    from torch.distributed import distributed_c10d

    return distributed_c10d._get_default_store()


def _claim(failure: _Failure) -> RankFailed | None:
    """Record ``failure`` in the store unless another process's came first → that one
    (``told``); None when this one is the first, or when the store cannot be reached."""
    try:
        store = _store()
        store.set(f"{_CLAIM}/{failure.rank}", failure.sent())
        first = store.compare_set(_CLAIM, "", str(failure.rank)).decode()
        if first == str(failure.rank):
            return None
        return _told(store.get(f"{_CLAIM}/{first}").decode())
    except Exception:  # noqa: BLE001 - no store (a process gone with it): fail alone
        return None


def _claimed() -> RankFailed | None:
    """The failure another process recorded inside :func:`failing_alone` (``told``), if
    any: why a meeting with it broke."""
    try:
        store = _store()
        if not store.check([_CLAIM]):
            return None
        first = store.get(_CLAIM).decode()
        return None if first == str(rank()) else _told(store.get(f"{_CLAIM}/{first}").decode())
    except Exception:  # noqa: BLE001 - no store (a process gone with it): nothing heard
        return None


def _told(sent: str) -> RankFailed:
    """The :class:`~auditclf.errors.RankFailed` of a failure recorded by :meth:`_Failure.sent`,
    printed already by the process it happened on."""
    failure = json.loads(sent)
    where = f"process {failure['rank']} of {failure['world']}"
    return RankFailed(f"{where}: {failure['message']}", failure["status"], told=True)


class _Failure:
    """One rank's error, sent to the others in place of its results."""

    def __init__(self, exc: BaseException) -> None:
        self.rank, self.world = rank(), world()
        if isinstance(exc, AuditError):
            self.status, self.message = int(exc.status), str(exc)
        else:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            self.status = int(ExitStatus.INTERNAL)
            self.message = f"internal error: {type(exc).__name__}: {first}"
        self.detail = "".join(traceback.format_exception(exc))

    def sent(self) -> str:
        """What the store keeps of it (:func:`_claim`): rank, world, status and message."""
        return json.dumps(
            {"rank": self.rank, "world": self.world, "status": self.status, "message": self.message}
        )

    def error(self) -> RankFailed:
        where = f"process {self.rank} of {self.world}"
        return RankFailed(f"{where}: {self.message}", self.status, self.detail)


def _attempt(work: Callable[[], T]) -> T | _Failure:
    """``work()``, or its error as a :class:`_Failure` to share (an interrupt is not shared:
    it ends the process, and the others time out or are stopped by torchrun; nor is a
    :class:`~auditclf.errors.RankFailed`, every process's already or a meeting that broke,
    nor a failure of :func:`failing_alone`, which the others cannot meet)."""
    try:
        return work()
    except Exception as exc:  # noqa: BLE001 - every rank must hear of any failure
        if isinstance(exc, RankFailed) or _is_stranded(exc):  # heard already, or never can
            raise
        return _Failure(exc)


def _is_stranded(exc: BaseException | None) -> bool:
    """Whether ``exc`` is (or was raised from) the failure of :func:`failing_alone`."""
    while exc is not None:
        if exc is _stranded:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _gather(part: Any) -> list[Any]:
    """Every rank's ``part`` in rank order; the first rank's failure raised on every rank."""
    import torch.distributed as dist

    parts: list[Any] = [None] * world()
    _meet(lambda: dist.all_gather_object(parts, part))
    for each in parts:
        if isinstance(each, _Failure):
            raise each.error()
    return parts


def _meet(collective: Callable[[], Any]) -> None:
    """Run a collective; a meeting that fails (a process gone, or none came within the
    timeout) becomes one line, exit 6, on the ranks still there."""
    global _broken
    started = time.perf_counter()
    try:
        collective()
        _met[0] += 1
        _met[1] += time.perf_counter() - started
    except Exception as exc:  # noqa: BLE001 - gloo and NCCL raise RuntimeError subclasses
        _broken = True
        heard = _claimed()  # a process that failed inside failing_alone() and left
        if heard is not None:
            raise heard from exc
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        first = re.sub(r"^\[[^\]]*\]\s*", "", text)[:200]  # gloo's source location
        raise RankFailed(
            f"process {rank()} of {world()}: the other processes did not meet it (one failed, "
            f"was killed or hangs past distributed.timeout): {first}",
            ExitStatus.INTERNAL,
        ) from exc


def exit_all(status: int) -> NoReturn:
    """End the process with rank 0's exit status on every rank (``status`` in a single
    process, when rank 0 can no longer be heard, or at once when this process failed
    where the others could not hear of it: :func:`note_failure`).

    Under torchrun the process group is closed and the process ends with ``os._exit``
    once the standard streams are flushed (the outputs are written and closed by then):
    gloo's worker threads can outlive ``destroy_process_group``, and the interpreter's
    teardown then aborts the process (SIGABRT, "terminate called without an active
    exception") about one run in two with torch 2.14."""
    if not active():
        sys.exit(status)
    import torch.distributed as dist

    if _unshared:  # the others are elsewhere (in a collective of their own, maybe): a
        # broadcast now would meet theirs out of step; torchrun or the timeout stops them
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(int(status))
    shared = [int(status)]
    if not _broken:  # after a failed meeting, a broadcast would only wait out the timeout
        try:
            dist.broadcast_object_list(shared, src=0)
            dist.destroy_process_group()
        except Exception:  # noqa: BLE001 - a process gone: end with this rank's own status
            shared = [int(status)]
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(int(shared[0]))


def broadcast(value: Any) -> Any:
    """Rank 0's ``value`` (any picklable object) on every rank: a decision rank 0 makes,
    such as early stopping; ``value`` itself in a single process."""
    if not active():
        return value
    import torch.distributed as dist

    shared = [value]
    _meet(lambda: dist.broadcast_object_list(shared, src=0))
    return shared[0]


def all_values(value: Any) -> list[Any]:
    """Every rank's ``value`` (any picklable object), in rank order, on every rank;
    ``[value]`` in a single process."""
    if not active():
        return [value]
    import torch.distributed as dist

    values: list[Any] = [None] * world()
    _meet(lambda: dist.all_gather_object(values, value))
    return values


def sum_all(tensor: Any) -> Any:
    """``tensor`` summed element by element over the ranks, in place, the same sum on
    every rank (it stays on its device: NCCL sums on the GPU); unchanged in a single
    process."""
    if active():
        import torch.distributed as dist

        _meet(lambda: dist.all_reduce(tensor))
    return tensor


def broadcast_tensors(tensors: Any) -> None:
    """Overwrite each tensor of ``tensors`` with rank 0's, in place (a module's buffers,
    say); nothing in a single process."""
    if not active():
        return
    import torch.distributed as dist

    for tensor in tensors:
        _meet(lambda tensor=tensor: dist.broadcast(tensor, src=0))
