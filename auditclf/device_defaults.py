"""What the device decides when the config leaves it open: how many images the attacks and
explanations cover, how many are moved to the device at a time, and the images per model pass.

The CPU values are the long-standing defaults, sized for an audit of a few minutes on a
laptop. A GPU does the same work in a fraction of the time, so on CUDA the audit covers far
more of the test set: every test image up to 10,000 is attacked, and ten times more images
are bisected, attacked by Square and explained. A count the config gives is never changed;
the report lists every count that came from here (``run.device_defaults``).
"""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel

from auditclf.config import AuditConfig

S = TypeVar("S", bound=BaseModel)

# {section: {field: value}} per device type; a field here is null by default in the config.
DEVICE_DEFAULTS = {
    "cpu": {
        "analyses": {"batch_size": 256},
        "robustness": {
            "samples": 300,
            "square_samples": 100,
            "min_eps_samples": 100,
            "batch_size": 128,  # a multiple of the pass size: no padded passes in a full block
        },
        "explain": {"correct_per_class": 2, "errors_per_class": 1},
        "corruptions": {"samples": 500, "batch_size": 128},
    },
    "cuda": {
        "analyses": {"batch_size": 2048},
        "robustness": {
            "samples": 10_000,
            "square_samples": 1_000,
            "min_eps_samples": 1_000,
            "batch_size": 512,
        },
        "explain": {"correct_per_class": 10, "errors_per_class": 5},
        "corruptions": {"samples": 10_000, "batch_size": 512},
    },
}
# Images per model pass (see probes.base.FixedChunks): every logit is computed in a pass of
# exactly this size, so a number depends on the device type, never on a batch size.
CHUNKS = {"cpu": 32, "cuda": 256}


def device_kind(device_type: str) -> str:
    """The row of the tables above a device type uses: its own, else the CPU's."""
    return device_type if device_type in DEVICE_DEFAULTS else "cpu"


def forward_chunk(device_type: str) -> int:
    """Images per model pass on a device of this type."""
    return CHUNKS[device_kind(device_type)]


def section_for_device(section: str, settings: S, device_type: str) -> tuple[S, dict[str, int]]:
    """One config section (``robustness``, ...) with its null counts set to the device's
    defaults, and ``{"section.field": value}`` of the counts so set."""
    defaults = DEVICE_DEFAULTS[device_kind(device_type)][section]
    missing = {k: v for k, v in defaults.items() if getattr(settings, k) is None}
    filled = {f"{section}.{k}": v for k, v in missing.items()}
    return settings.model_copy(update=missing), filled


def for_device(config: AuditConfig, device_type: str) -> tuple[AuditConfig, dict[str, int]]:
    """``config`` with every count it leaves null set to the device's default, and
    ``{"section.field": value}`` of the counts so set (empty when the config gave them all)."""
    filled: dict[str, int] = {}
    update = {}
    for section in DEVICE_DEFAULTS["cpu"]:
        update[section], more = section_for_device(section, getattr(config, section), device_type)
        filled |= more
    return config.model_copy(update=update), filled


def describe_defaults(filled: dict[str, int], device_type: str) -> str:
    """One sentence for the report: which counts the device set, e.g. "robustness.samples 300
    (default for cpu)"; empty when the config set them all."""
    if not filled:
        return ""
    kind = device_kind(device_type)
    listed = ", ".join(f"{key} {value:,}" for key, value in filled.items())
    return f"counts left to the device (defaults for {kind}): {listed}"
