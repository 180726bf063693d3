"""Probes: the only code that runs the model during an audit."""

from auditclf.probes import clean  # noqa: F401, I001  (registers first: clean predictions)
from auditclf.probes import attacks  # noqa: F401  (registers the attack probe)
from auditclf.probes import attributions  # noqa: F401  (registers the attribution probe)
from auditclf.probes import corruption  # noqa: F401  (registers the corruption probe)
from auditclf.probes.base import PROBES, ProbeContext

__all__ = ["PROBES", "ProbeContext"]
