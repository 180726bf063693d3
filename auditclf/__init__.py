"""auditclf: audit an image classifier before it ships.

``from auditclf import audit`` is the Python API (:func:`auditclf.api.audit`);
it is imported on first use, so ``import auditclf`` stays cheap (no torch).
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "audit"]


def __getattr__(name: str) -> Any:
    if name == "audit":
        from auditclf.api import audit

        return audit
    raise AttributeError(f"module 'auditclf' has no attribute {name!r}")
