"""Exit statuses and the errors that map to them.

Only ``auditclf.cli`` turns these into exit codes; everything else raises.
Each error's message is the one line a user sees on stderr, so it names the
culprit (file, row, key) and, where there is one, the fix.
"""

from __future__ import annotations

from enum import IntEnum


class ExitStatus(IntEnum):
    """Process exit codes, as documented in DESIGN.md and the README."""

    OK = 0
    GATE_FAILED = 1
    USAGE = 2
    BAD_DATA = 3
    MODEL_REFUSED = 4
    UNRELIABLE = 5
    INTERNAL = 6
    INTERRUPTED = 130
    BROKEN_PIPE = 141  # stdout's reader went away (`| head`): 128 + SIGPIPE, as Unix tools


class AuditError(Exception):
    """Base class of every expected failure; carries its exit status."""

    status: ExitStatus = ExitStatus.INTERNAL


class UsageError(AuditError):
    """Bad flags, config keys, unknown names, missing paths."""

    status = ExitStatus.USAGE


class DataError(AuditError):
    """Input data that cannot be used: unreadable image, bad label, bad row."""

    status = ExitStatus.BAD_DATA


class ModelRefused(AuditError):
    """A checkpoint that is unsafe, corrupt, or does not fit the architecture."""

    status = ExitStatus.MODEL_REFUSED


class UnreliableEvaluation(AuditError):
    """The model's outputs cannot be trusted (non-finite logits, masked gradients)."""

    status = ExitStatus.UNRELIABLE


class RankFailed(AuditError):
    """A torchrun audit's failure, raised on every process: one process's error (its exit
    status and message, prefixed with its rank) or a meeting of the processes that did not
    happen (a process killed, hung past ``distributed.timeout``: exit 6). ``detail``: the
    failing process's traceback, shown with ``--debug``. ``told``: the process it happened
    on printed it already (a failure inside data-parallel training): no one else does."""

    def __init__(
        self,
        message: str,
        status: int = ExitStatus.INTERNAL,
        detail: str = "",
        *,
        told: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = ExitStatus(status)
        self.detail = detail
        self.told = told
