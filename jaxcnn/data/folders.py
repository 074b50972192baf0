"""Image folders as users keep them: `ROOT/train/<class>/*` with the test split in `ROOT/test/` or
`ROOT/val/` (torchvision's and ImageNet's layout, class folders named by WordNet id or anything
else), or held out of train/.

Listing ImageNet's 1.28 million files takes minutes on a network file system, and a job lists its
folder in every process that starts. So a local folder's listing is kept in `cache_dir/file_lists/`,
keyed by the folder's path, and used while the folder's signature is unchanged: the modification
times of train/, the test folder and every class folder, which change whenever a file is added,
removed or renamed in them (not when one is rewritten in place: its path stays, and the decode
cache keys by file). The signature costs one stat per class folder.
"""
from __future__ import annotations

import functools
import gzip
import hashlib
import json
import os
from typing import NamedTuple

import numpy as np
from absl import logging
from etils import epath

from jaxcnn.files import write_atomically

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
TEST_FOLDERS = ("test", "val")
TEST_FRACTION = 0.1
SPLIT_SEED = 0    # fixed seed of the held-out split and of the file order: not the run's seed
CACHE_MIN_FILES = 10_000   # smaller folders list in well under a second: not worth a cache entry
_FORMAT = 1       # bump when the cached listing changes meaning


class FolderFiles(NamedTuple):
    class_names: tuple[str, ...]
    train: tuple[np.ndarray, np.ndarray]   # (paths, int32 labels), in a fixed shuffled order
    test: tuple[np.ndarray, np.ndarray]


@functools.lru_cache(maxsize=8)   # a process lists a folder once
def folder_files(root: str, cache_dir: str | None = None) -> FolderFiles:
    """Lists `root/train/<class>/*.{jpg,jpeg,png}` and the test split's files (class names: the
    sorted train sub-folder names; other files are ignored). The test split is `root/test/` or
    `root/val/`, whichever has class sub-folders (ImageNet's unlabelled, flat test/ does not);
    without one, the first 10% (rounded down) of a seeded permutation of each class. Each split is
    put in a fixed shuffled order so that contiguous host slices hold all classes. Local paths
    and, through etils.epath, cloud storage paths (listed every time); the listing of a local
    folder of CACHE_MIN_FILES or more is cached under `cache_dir` when one is given (see the
    module's docstring)."""
    train_dir = epath.Path(root, "train")
    if not train_dir.is_dir():
        raise FileNotFoundError(f"folder dataset {root!r}: no {str(train_dir)!r}; expected "
                                f"{root}/train/<class>/*.jpg|png and optionally "
                                f"{root}/test/<class>/ or {root}/val/<class>/")
    class_names = tuple(sorted(d.name for d in train_dir.iterdir() if d.is_dir()))
    if not class_names:
        raise ValueError(f"folder dataset {root!r}: {str(train_dir)!r} has no class sub-folders")
    test_dir = _test_dir(root, class_names)
    cache = _cache_path(root, cache_dir)
    signature = _signature(train_dir, test_dir, class_names) if cache else None
    listing = _read_cache(cache, signature) if cache else None
    if listing is None:
        listing = _list(train_dir, test_dir, class_names)
        if cache and sum(map(len, listing[0] + (listing[1] or []))) >= CACHE_MIN_FILES:
            _write_cache(cache, signature, listing)
    train, test = listing
    if test is None:
        train, test = zip(*(_hold_out(files, seed=i) for i, files in enumerate(train)))
    return FolderFiles(class_names, _shuffled_split(train), _shuffled_split(test))


def _test_dir(root: str, class_names: tuple[str, ...]) -> epath.Path | None:
    """root/test or root/val, the one with class sub-folders; None if neither has any."""
    found = [epath.Path(root, name) for name in TEST_FOLDERS
             if epath.Path(root, name).is_dir()
             and any(d.is_dir() for d in epath.Path(root, name).iterdir())]
    if len(found) > 1:
        raise ValueError(f"folder dataset {root!r}: both {' and '.join(map(str, found))} hold "
                         f"class folders; keep the test split in one of them")
    if found:
        extra = sorted({d.name for d in found[0].iterdir() if d.is_dir()} - set(class_names))
        if extra:
            raise ValueError(f"folder dataset {root!r}: test classes {extra} are not in "
                             f"{str(epath.Path(root, 'train'))!r}")
    return found[0] if found else None


def _list(train_dir: epath.Path, test_dir: epath.Path | None, class_names: tuple[str, ...]
          ) -> tuple[list[list[str]], list[list[str]] | None]:
    """Each class's sorted file paths in train/ and in the test folder (None without one)."""
    train = [_list_images(train_dir / c) for c in class_names]
    test = None if test_dir is None else [_list_images(test_dir / c, required=False)
                                          for c in class_names]
    return train, test


def _list_images(directory: epath.Path, required: bool = True) -> list[str]:
    files = sorted(str(f) for f in directory.iterdir()
                   if f.name.lower().endswith(IMAGE_EXTENSIONS)) if directory.is_dir() else []
    if required and not files:
        raise ValueError(f"folder dataset: no {'/'.join(IMAGE_EXTENSIONS)} files in {str(directory)!r}")
    return files


def _hold_out(files: list[str], seed: int) -> tuple[list[str], list[str]]:
    """(train, test) of one class's files: test is a seeded TEST_FRACTION of them."""
    order = np.random.default_rng([SPLIT_SEED, seed]).permutation(len(files))
    num_test = int(len(files) * TEST_FRACTION)
    return ([files[j] for j in sorted(order[num_test:])], [files[j] for j in sorted(order[:num_test])])


def _shuffled_split(per_class: list[list[str]]) -> tuple[np.ndarray, np.ndarray]:
    paths = np.array([f for files in per_class for f in files], dtype=object)
    labels = np.concatenate([np.full(len(files), i, np.int32) for i, files in enumerate(per_class)])
    order = np.random.default_rng(SPLIT_SEED).permutation(len(paths))
    return paths[order].astype(str), labels[order]


# --- the listing cache --------------------------------------------------------------------------

def _cache_path(root: str, cache_dir: str | None) -> str | None:
    """Where a local folder's listing is kept; None for cloud paths or without a cache_dir."""
    if cache_dir is None or "://" in root:
        return None
    key = hashlib.sha256(f"{_FORMAT}:{os.path.realpath(root)}".encode()).hexdigest()[:16]
    return os.path.join(os.path.expanduser(cache_dir), "file_lists", f"{key}.json.gz")


def _signature(train_dir, test_dir, class_names: tuple[str, ...]) -> list:
    """Modification times (ns) of train/, the test folder and each class folder in both."""
    dirs = [train_dir, *(train_dir / c for c in class_names)]
    if test_dir is not None:
        dirs += [test_dir, *(test_dir / c for c in class_names)]
    return [[str(d), os.stat(d).st_mtime_ns if os.path.isdir(d) else None] for d in dirs]


def _read_cache(path: str, signature: list):
    """The cached listing if its signature is `signature`, else None (a damaged or unreadable
    entry is listed again)."""
    try:
        with gzip.open(path, "rt") as f:
            entry = json.load(f)
    except (OSError, ValueError, EOFError):
        return None
    if entry.get("signature") != signature:
        return None
    return entry["train"], entry["test"]


def _write_cache(path: str, signature: list, listing) -> None:
    """Keeps the listing; a cache that cannot be written only costs the next start a listing."""
    train, test = listing
    entry = json.dumps({"signature": signature, "train": train, "test": test})
    try:
        write_atomically(path, gzip.compress(entry.encode(), compresslevel=1))
    except OSError as e:
        logging.warning("file list not cached (%s): the next start lists the folder again", e)
