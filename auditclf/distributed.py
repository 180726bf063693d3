"""torchrun sharding and gathering: the same audit split across processes, same numbers.

Under ``torchrun --nproc-per-node N -m auditclf run ...`` each process reads its place
from torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``; ``MASTER_ADDR`` and
``MASTER_PORT`` reach ``torch.distributed`` through its ``env://`` rendezvous).
:func:`init` starts the process group only when ``WORLD_SIZE`` > 1: gloo on CPU, NCCL on
CUDA, with ``LOCAL_RANK`` picking the GPU. A single process never imports
``torch.distributed``: every function here is then a no-op that returns its input.

Sharding is by contiguous blocks (:func:`shard`: ``np.array_split`` of the rows, rank
``r`` gets block ``r``), so concatenating the ranks' results in rank order restores the
original row order (:func:`gather_rows`). Per-image seeds and passes of a fixed size make
each row's result independent of the process that computes it.

What is sharded now: the clean probe's test rows and the corruption probe's subset; their
results are gathered to every rank (each needs the clean predictions, and the probes and
analyses after them run on the full table). The gather uses
``torch.distributed.all_gather_object`` (pickled numpy arrays through the backend): simple,
and cheap next to the probes for a first slice; tensor collectives are the faster next step.
Attacks and attributions still run in full on every rank (identical results, duplicated
work): sharding their subsets is the next step. Every rank runs the analyses; only rank 0
writes the outputs and prints, and every rank exits with rank 0's status
(:func:`exit_all`).
"""

from __future__ import annotations

import os
import sys
from typing import Any, NoReturn

import numpy as np


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
    """Whether this process is rank 0, the one that writes the outputs and prints."""
    return rank() == 0


def active() -> bool:
    """Whether a process group of more than one process is running."""
    if world() <= 1:
        return False
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def init(device_type: str) -> None:
    """Start the process group when ``WORLD_SIZE`` > 1 (once): NCCL when the audit runs on
    CUDA (this process's GPU set from ``LOCAL_RANK``), gloo otherwise."""
    if world() <= 1 or active():
        return
    import torch
    import torch.distributed as dist

    if device_type == "cuda":
        torch.cuda.set_device(local_rank())
    dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")


def card() -> dict:
    """How the audit was spread, for the run card: the number of processes and the
    backend that joined them (none in a single process)."""
    if not active():
        return {"world_size": 1, "backend": None}
    import torch.distributed as dist

    return {"world_size": world(), "backend": str(dist.get_backend())}


def device_index(device_type: str) -> int | None:
    """The GPU index a CUDA audit uses in this process: ``LOCAL_RANK`` under torchrun,
    none (the current device) otherwise."""
    return local_rank() if device_type == "cuda" and world() > 1 else None


def shard(rows: np.ndarray) -> np.ndarray:
    """This rank's share of ``rows``: contiguous block ``rank()`` of ``world()`` nearly
    equal blocks (the first ones one row longer); all of ``rows`` in a single process."""
    if not active():
        return rows
    return np.array_split(rows, world())[rank()]


def gather_rows(part: Any) -> Any:
    """Every rank's per-row results of its :func:`shard`, concatenated in row order, on
    every rank. ``part`` is an array (rows first) or a dict of such arrays (concatenated
    key by key); returned as it is in a single process."""
    if not active():
        return part
    import torch.distributed as dist

    parts: list[Any] = [None] * world()
    dist.all_gather_object(parts, part)
    if isinstance(part, dict):
        return {key: np.concatenate([p[key] for p in parts]) for key in part}
    return np.concatenate(parts)


def exit_all(status: int) -> NoReturn:
    """End the process with rank 0's exit status on every rank (``status`` in a single
    process).

    Under torchrun the process group is closed and the process ends with ``os._exit``
    once the standard streams are flushed (the outputs are written and closed by then):
    gloo's worker threads can outlive ``destroy_process_group``, and the interpreter's
    teardown then aborts the process (SIGABRT, "terminate called without an active
    exception") about one run in two with torch 2.14."""
    if not active():
        sys.exit(status)
    import torch.distributed as dist

    shared = [int(status)]
    dist.broadcast_object_list(shared, src=0)
    dist.destroy_process_group()
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
    dist.broadcast_object_list(shared, src=0)
    return shared[0]


def all_values(value: Any) -> list[Any]:
    """Every rank's ``value`` (any picklable object), in rank order, on every rank;
    ``[value]`` in a single process."""
    if not active():
        return [value]
    import torch.distributed as dist

    values: list[Any] = [None] * world()
    dist.all_gather_object(values, value)
    return values


def sum_all(tensor: Any) -> Any:
    """``tensor`` summed element by element over the ranks, in place, the same sum on
    every rank (it stays on its device: NCCL sums on the GPU); unchanged in a single
    process."""
    if active():
        import torch.distributed as dist

        dist.all_reduce(tensor)
    return tensor


def broadcast_tensors(tensors: Any) -> None:
    """Overwrite each tensor of ``tensors`` with rank 0's, in place (a module's buffers,
    say); nothing in a single process."""
    if not active():
        return
    import torch.distributed as dist

    for tensor in tensors:
        dist.broadcast(tensor, src=0)
