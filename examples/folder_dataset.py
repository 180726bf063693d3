"""Write scikit-learn's 8×8 digits as an image folder with a metadata CSV, the layout of
your own data: ``ROOT/<class>/<name>.png`` plus ``ROOT/metadata.csv`` with one row per
image (``path`` relative to ROOT, then attribute columns).

The ``scanner`` attribute is synthetic: images from scanner "B" are made fainter, so the
audit has a subgroup gap to find. Run:

    python examples/folder_dataset.py examples-data/digits-folder
    auditclf run --config examples/folder-metadata.yaml
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits


def write_folder(root: Path, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    digits = load_digits()
    rows = []
    for i, (image, label) in enumerate(zip(digits.images, digits.target, strict=True)):
        scanner = "A" if rng.random() < 0.7 else "B"
        pixels = image / 16.0 * (0.45 if scanner == "B" else 1.0)
        relative = Path(str(label)) / f"digit{i:04d}.png"
        (root / relative.parent).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.round(pixels * 255).astype(np.uint8), mode="L").save(root / relative)
        rows.append({"path": relative.as_posix(), "scanner": scanner, "site": f"site-{i % 3}"})
    metadata = root / "metadata.csv"
    with metadata.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["path", "scanner", "site"])
        writer.writeheader()
        writer.writerows(rows)
    return metadata


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, nargs="?", default=Path("examples-data/digits-folder"))
    print(write_folder(parser.parse_args().root))
