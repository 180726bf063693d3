"""Write scikit-learn's 8×8 digits as an image folder with a metadata CSV, the layout of
your own data: ``ROOT/<class>/<name>.png`` plus ``ROOT/metadata.csv`` with one row per
image (``path`` relative to ROOT, then attribute columns).

The ``scanner`` attribute is synthetic: images from scanner "B" are made fainter, so the
audit has a subgroup gap to find. A fifth of the digits are kept out of ROOT and written,
all from scanner B, to ``ROOT-scanner-b`` (same layout, its own metadata.csv): a second
test set from another source, which the example config audits beside the test split as
the shift set ``scanner_b`` (keys ``shift.scanner_b.*``). Run:

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

FAINT = 0.45  # scanner B's contrast: its pixels are this fraction of scanner A's
SHIFT_SHARE = 0.2  # share of the digits written to the shift set instead of ROOT


def shift_folder(root: Path) -> Path:
    """The shift set's folder beside ``root``: ``ROOT-scanner-b``."""
    return root.with_name(f"{root.name}-scanner-b")


def write_folder(root: Path, seed: int = 0) -> Path:
    """Write the audited folder ``root`` (70% scanner A) and the shift set (every image from
    scanner B) to :func:`shift_folder`, each with its metadata.csv; → root's metadata.csv."""
    rng = np.random.default_rng(seed)
    digits = load_digits()
    rows: dict[Path, list[dict]] = {root: [], shift_folder(root): []}
    for i, (image, label) in enumerate(zip(digits.images, digits.target, strict=True)):
        held_out = rng.random() < SHIFT_SHARE
        scanner = "B" if held_out or rng.random() >= 0.7 else "A"
        folder = shift_folder(root) if held_out else root
        pixels = image / 16.0 * (FAINT if scanner == "B" else 1.0)
        relative = Path(str(label)) / f"digit{i:04d}.png"
        (folder / relative.parent).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.round(pixels * 255).astype(np.uint8), mode="L").save(folder / relative)
        rows[folder].append(
            {"path": relative.as_posix(), "scanner": scanner, "site": f"site-{i % 3}"}
        )
    for folder, written in rows.items():
        columns = ["path", "site"] if folder != root else ["path", "scanner", "site"]
        with (folder / "metadata.csv").open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(written)
    return root / "metadata.csv"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, nargs="?", default=Path("examples-data/digits-folder"))
    print(write_folder(parser.parse_args().root))
