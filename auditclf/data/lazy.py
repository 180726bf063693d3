"""Images decoded from their files when read, and blocks of any image array.

A folder of 40,000 images at 128 px is 2 GB of uint8 pixels. Folders and CSV
manifests are therefore held as their file paths (:class:`LazyImages`) and
decoded block by block by a ``torch.utils.data.DataLoader`` with worker
processes: an audit's memory does not grow with the number of images, only
the sample table and small per-image arrays (labels, ids, hashes) do. The
built-in sets are small and stay in memory as ``(N, C, H, W)`` uint8 arrays.
Every consumer reads both kinds the same way: a stream of blocks through
:func:`image_blocks`, or a few rows through ``np.asarray(images[rows])``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from functools import partial

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from auditclf.data.images import decode_image, to_chw
from auditclf.errors import DataError
from auditclf.threads import available_cpus

SCAN_BLOCK = 256  # images per block when a pass reads a whole set
MIN_IMAGES_FOR_WORKERS = 512  # fewer are decoded in the process: workers cost more to start
MAX_WORKERS = 8


def decode_to(path: str, shape: tuple[int, int, int], max_pixels: int) -> np.ndarray:
    """One image file as ``(C, H, W)`` uint8 of the set's common ``shape``."""
    return to_chw(decode_image(path, max_pixels=max_pixels), shape)


def decoded_shape(path: str, max_pixels: int) -> np.ndarray:
    """The ``(H, W, C)`` of one image file as decoded, before any resizing."""
    return np.array(decode_image(path, max_pixels=max_pixels).shape, dtype=np.int64)


class LazyImages:
    """``(N, C, H, W)`` uint8 images decoded from ``paths`` only when read.

    ``images[i]`` decodes image ``i`` to ``(C, H, W)``; ``images[rows]`` (a slice,
    integer array or boolean mask) is another LazyImages over those files and
    decodes nothing; ``np.asarray(images)`` decodes them all, so it is meant for
    a block or a subset. Each file is decoded by :func:`decode_image` and brought
    to ``image_shape`` by :func:`to_chw`: the pixels of a decode into memory.
    """

    dtype = np.dtype(np.uint8)
    ndim = 4

    def __init__(self, paths: Sequence[str], image_shape: tuple[int, int, int], max_pixels: int):
        self.paths = np.asarray(paths, dtype=object)
        self.image_shape = tuple(int(d) for d in image_shape)
        self.max_pixels = max_pixels

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.paths), *self.image_shape)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key) -> np.ndarray | LazyImages:
        if isinstance(key, int | np.integer):
            return self.reader()(self.paths[key])
        if isinstance(key, tuple):
            raise TypeError("LazyImages are indexed by rows only: images[rows]")
        return LazyImages(self.paths[key], self.image_shape, self.max_pixels)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        if copy is False:
            raise ValueError("LazyImages cannot be read without decoding (a copy)")
        out = np.empty(self.shape, dtype=np.uint8)
        start = 0
        for block in image_blocks(self, row_blocks(len(self), SCAN_BLOCK)):
            out[start : start + len(block)] = block.numpy()
            start += len(block)
        return out if dtype is None else out.astype(dtype)

    def reader(self) -> Callable[[str], np.ndarray]:
        """path -> (C, H, W) uint8; picklable, for worker processes."""
        return partial(decode_to, shape=self.image_shape, max_pixels=self.max_pixels)


def row_blocks(count: int, size: int) -> list[np.ndarray]:
    """Rows 0..count-1 in consecutive blocks of ``size`` (the last one shorter)."""
    return [np.arange(start, min(start + size, count)) for start in range(0, count, size)]


def image_blocks(
    images: np.ndarray | LazyImages,
    blocks: Sequence[np.ndarray],
    *,
    device: torch.device | None = None,
) -> Iterator[torch.Tensor]:
    """``images[rows]`` as a uint8 CPU tensor for each ``rows`` of ``blocks``, in order.

    Lazy images are decoded by DataLoader workers a few blocks ahead; when
    ``device`` is CUDA, into pinned memory, so that ``.to(device,
    non_blocking=True)`` overlaps the copy with the work on the device.
    """
    if not isinstance(images, LazyImages):
        for rows in blocks:
            yield torch.from_numpy(images[rows])
        return
    pin = device is not None and device.type == "cuda"
    yield from read_files(images.paths, images.reader(), blocks, pin=pin)


class _FileBlocks(Dataset):
    """Blocks of files, each file read by ``read``; a DataError comes back as a value.

    The DataLoader would re-raise a worker's exception with the worker's
    traceback in its message; the user must see the DataError's one line.
    """

    def __init__(self, paths: np.ndarray, read: Callable[[str], np.ndarray]) -> None:
        self.paths, self.read = paths, read

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, rows: np.ndarray) -> np.ndarray | DataError:
        try:
            return np.stack([self.read(self.paths[i]) for i in rows])
        except DataError as exc:
            return exc


def read_files(
    paths: np.ndarray,
    read: Callable[[str], np.ndarray],
    blocks: Sequence[np.ndarray],
    *,
    pin: bool = False,
) -> Iterator[torch.Tensor]:
    """``stack([read(paths[i]) for i in rows])`` for each ``rows`` of ``blocks``, in order.

    Raises the DataError of the first file that fails, in the order of ``blocks``.
    The loader draws its workers' base seed from a generator of its own: from
    the global one, it would shift dropout and every later global draw.
    """
    loader = DataLoader(
        _FileBlocks(paths, read),
        sampler=blocks,
        batch_size=None,
        num_workers=_workers(sum(len(rows) for rows in blocks)),
        pin_memory=pin,
        generator=torch.Generator(),
    )
    for block in loader:
        if isinstance(block, DataError):
            raise block
        yield block


def _workers(images: int) -> int:
    """Worker processes for decoding ``images`` files: one per CPU this process may use
    (its affinity and cgroup quota), and no more than the run's compute threads (``--threads``).
    Each worker runs torch on one thread (the DataLoader sets it), so the workers never ask
    for more cores than the run has."""
    if images < MIN_IMAGES_FOR_WORKERS:
        return 0
    cpus = min(available_cpus()[0], torch.get_num_threads())
    return min(cpus, MAX_WORKERS) if cpus > 1 else 0


def scan_shapes(paths: Sequence[str], max_pixels: int) -> np.ndarray:
    """``(N, 3)`` decoded ``(H, W, C)`` of every file, decoding each once and keeping no pixels.

    Raises the DataError of the first bad file, in the order of ``paths``.
    """
    files = np.asarray(paths, dtype=object)
    read = partial(decoded_shape, max_pixels=max_pixels)
    parts = list(read_files(files, read, row_blocks(len(files), SCAN_BLOCK)))
    return torch.cat(parts).numpy() if parts else np.zeros((0, 3), dtype=np.int64)
