"""``auditclf run --nproc N``: torchrun on this machine, for users who do not know it.

The same launch as ``torchrun --standalone --nproc-per-node N -m auditclf run ...``
(torch's elastic launcher with a local c10d rendezvous, no restarts), called in process
so that what the user sees is what one process would show: rank 0's output (the other
ranks print nothing, :mod:`auditclf.distributed`), its error line, and its exit status:
every rank exits with rank 0's, or with the failing rank's when a failure is shared.
A process that dies without a status (killed by a signal) makes the run exit 6 with one
line saying which.
"""

from __future__ import annotations

import logging
import os
import sys
import uuid
from typing import TextIO

from auditclf.errors import ExitStatus, UsageError

# set in the environment of the processes `run --nproc` starts: on Ctrl-C the launcher
# says "interrupted" once for them all (they may be stopped before they could say it)
LAUNCHED = "AUDITCLF_RUN_NPROC"


def without_nproc(argv: list[str]) -> list[str]:
    """``argv`` without its ``--nproc N`` (or ``--nproc=N``): what each process runs."""
    kept, skip = [], False
    for token in argv:
        if skip:
            skip = False
        elif token == "--nproc":
            skip = True
        elif not token.startswith("--nproc="):
            kept.append(token)
    return kept


def launch(nproc: int, argv: list[str], err: TextIO) -> int:
    """Run ``python -m auditclf <argv>`` in ``nproc`` processes joined by torchrun's
    launcher → the exit status they agree on (rank 0's)."""
    if os.environ.get("WORLD_SIZE"):
        raise UsageError("--nproc: this process already runs under torchrun; drop --nproc")
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=nproc,
        run_id=str(uuid.uuid4()),
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",  # torchrun --standalone: a free local port
        max_restarts=0,
        monitor_interval=0.1,
    )
    # the launcher's own log lines (worker starts, SIGTERMs) are not the user's business;
    # its modules' loggers have levels of their own (torch's LOGLEVEL, WARNING by default)
    for name in [*logging.root.manager.loggerDict, "torch.distributed.elastic"]:
        if name.startswith("torch.distributed.elastic"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    err.flush()
    before = os.environ.get(LAUNCHED)
    os.environ[LAUNCHED] = "1"  # inherited by the processes
    try:
        elastic_launch(config, entrypoint=sys.executable)("-m", "auditclf", *argv)
    except ChildFailedError as failed:
        return _agreed_status(failed.failures, nproc, err)
    except SignalException:  # the launcher stopped (Ctrl-C, SIGTERM) and stopped them
        raise KeyboardInterrupt from None
    finally:
        if before is None:
            del os.environ[LAUNCHED]
        else:
            os.environ[LAUNCHED] = before
    return int(ExitStatus.OK)


def _agreed_status(failures: dict, nproc: int, err: TextIO) -> int:
    """The status of the processes that ended with one (rank 0's first: the others share
    it); when every failed process was killed by a signal, exit 6 with a line naming it."""
    ranks = sorted(failures, key=lambda r: (r != 0, r))
    for rank in ranks:
        if failures[rank].exitcode > 0:
            return int(failures[rank].exitcode)
    rank = ranks[0]
    err.write(
        f"auditclf: error: process {rank} of {nproc} was killed by signal "
        f"{-failures[rank].exitcode}; no report was written\n"
    )
    return int(ExitStatus.INTERNAL)
