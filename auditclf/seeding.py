"""All randomness derives from the run seed.

Per-sample randomness (attack random starts, LIME perturbations) is derived
from (seed, sample id) so that a result does not depend on batch size, device
count or shard layout.
"""

from __future__ import annotations

import hashlib
import random

import numpy as np
import torch


def derive_seed(seed: int, *keys: object) -> int:
    """A stable 63-bit seed from the run seed and any keys (a phase name, a sample id)."""
    text = "\x1f".join([str(seed), *map(str, keys)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") >> 1


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch globally, and ask cuDNN for deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def torch_generator(seed: int, *keys: object) -> torch.Generator:
    """A CPU torch generator seeded from (seed, keys)."""
    return torch.Generator().manual_seed(derive_seed(seed, *keys))


def numpy_rng(seed: int, *keys: object) -> np.random.Generator:
    """A NumPy generator seeded from (seed, keys)."""
    return np.random.default_rng(derive_seed(seed, *keys))
