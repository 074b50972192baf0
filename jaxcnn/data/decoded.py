"""A folder dataset's split decoded once with Pillow, in parallel threads, and cached on disk.

The device-resident path holds a split as one uint8 array at the evaluation geometry. Decoding
CIFAR-10's 50,000 JPEGs takes tens of seconds on two cores; the decoded array is therefore saved
under `DataConfig.cache_dir` (default ~/.cache/jaxcnn) keyed by everything that determines its
pixels (the files' paths, sizes and modification times, the labels, the size, channels and the
evaluation scale), so the next start loads it in about a second. A cache that cannot be written
(read-only or full disk) costs only that: a warning, and the run goes on.
"""
from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os

import numpy as np
from absl import logging

from jaxcnn.config import DataConfig
from jaxcnn.data import folders, pil_ops, sources
from jaxcnn.data.sources import Host

_FORMAT = 1   # bump when the decoding changes, so that old cache entries are not reused


def folder_arrays(cfg: DataConfig, split: str, host: Host) -> tuple[np.ndarray, np.ndarray]:
    """Host's slice of a folder split ("train" or "test"): uint8 [n, size, size, channels] images at
    the evaluation geometry of cfg.augment, and int32 labels, in the split's fixed order."""
    files = folders.folder_files(cfg.dataset[len(sources.FOLDER_PREFIX):], cfg.cache_dir)
    paths, labels = files.train if split == "train" else files.test
    part = sources.host_slice(len(paths), host, drop_remainder=split == "train")
    paths, labels = paths[part], labels[part]
    path = os.path.join(os.path.expanduser(cfg.cache_dir), "decoded",
                        f"{_cache_key(cfg, paths, labels)}.npy")
    if os.path.exists(path):
        return np.load(path), labels
    images = decode(paths, (cfg.image_size, cfg.image_size, cfg.channels), cfg.augment)
    _save(path, images)
    return images, labels


def decode(paths, shape: tuple[int, int, int], augment: str = "none") -> np.ndarray:
    """uint8 [len(paths), *shape] images read with pil_ops.read_image in a thread per core (Pillow
    releases the GIL while it decodes and resizes)."""
    images = np.empty((len(paths), *shape), np.uint8)
    with concurrent.futures.ThreadPoolExecutor(os.cpu_count()) as pool:
        for i, image in enumerate(pool.map(lambda p: pil_ops.read_image(p, shape, augment), paths)):
            images[i] = image
    return images


def _cache_key(cfg: DataConfig, paths, labels: np.ndarray) -> str:
    stats = [(p, s.st_size, s.st_mtime_ns) for p, s in zip(paths, map(os.stat, paths))]
    geometry = [cfg.image_size, cfg.channels, sources.EVAL_RESIZE[cfg.augment], _FORMAT]
    digest = hashlib.sha256(json.dumps([geometry, stats]).encode())
    digest.update(np.ascontiguousarray(labels, np.int32).tobytes())
    return digest.hexdigest()[:32]


def _save(path: str, images: np.ndarray) -> None:
    """Writes atomically (a partial file never has the final name)."""
    temporary = f"{path}.{os.getpid()}.tmp"
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(temporary, "wb") as f:
            np.save(f, images)
        os.replace(temporary, path)
    except OSError as e:
        logging.warning("could not cache the decoded images in %s (%s); they will be decoded "
                        "again next time", path, e.strerror or e)
        if os.path.exists(temporary):
            os.remove(temporary)
