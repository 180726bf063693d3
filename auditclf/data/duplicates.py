"""Exact-duplicate and leakage scan by content hash of the decoded pixels.

Hashing the decoded pixels (not the file bytes) also catches one image saved
twice in different formats. Near-duplicates are not detected.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict

import numpy as np

from auditclf.data.lazy import SCAN_BLOCK, LazyImages, image_blocks, row_blocks
from auditclf.data.splits import SPLITS

MAX_EXAMPLES = 5


def content_hashes(
    images: np.ndarray | LazyImages, whole: hashlib._Hash | None = None
) -> list[str]:
    """One BLAKE2b digest per image of (N, C, H, W) uint8 images, read block by block.

    ``whole``, when given, is fed every image's bytes in order too: the data
    hash comes out of the same single pass.
    """
    hashes = []
    for block in image_blocks(images, row_blocks(len(images), SCAN_BLOCK)):
        for img in block.numpy():
            data = img.tobytes()
            if whole is not None:
                whole.update(data)
            hashes.append(hashlib.blake2b(data, digest_size=16).hexdigest())
    return hashes


def scan_duplicates(
    hashes: list[str], labels: np.ndarray, split: np.ndarray, ids: np.ndarray
) -> dict:
    """Count exact duplicates within each split, across splits (leakage), and label conflicts.

    ``hashes`` are the images' :func:`content_hashes`.

    Returns a JSON-ready dict:
    ``within``: {split: number of extra copies inside that split},
    ``across``: {"train-test": number of test images whose pixels also occur in train, ...},
    ``label_conflicts``: number of distinct images that carry more than one label,
    ``examples``: up to five id pairs per kind.
    """
    groups: dict[str, list[int]] = defaultdict(list)
    for index, digest in enumerate(hashes):
        groups[digest].append(index)
    within = dict.fromkeys(SPLITS, 0)
    across = {"train-val": 0, "train-test": 0, "val-test": 0}
    examples: dict[str, list[list[str]]] = defaultdict(list)
    conflicts = 0
    for members in groups.values():
        if len(members) < 2:
            continue
        by_split: dict[str, list[int]] = defaultdict(list)
        for index in members:
            by_split[split[index]].append(index)
        for name, idx in by_split.items():
            within[name] += len(idx) - 1
            if len(idx) > 1 and len(examples[name]) < MAX_EXAMPLES:
                examples[name].append([str(ids[idx[0]]), str(ids[idx[1]])])
        for pair in across:
            first, second = pair.split("-")
            if by_split.get(first) and by_split.get(second):
                across[pair] += len(by_split[second])
                if len(examples[pair]) < MAX_EXAMPLES:
                    examples[pair].append(
                        [str(ids[by_split[first][0]]), str(ids[by_split[second][0]])]
                    )
        if len({int(labels[i]) for i in members}) > 1:
            conflicts += 1
            if len(examples["label_conflicts"]) < MAX_EXAMPLES:
                examples["label_conflicts"].append([str(ids[i]) for i in members[:2]])
    return {
        "within": within,
        "across": across,
        "label_conflicts": conflicts,
        "examples": dict(examples),
    }
