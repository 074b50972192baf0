"""Image folders as users keep them (`jaxcnn.data.folders`): ImageNet's layout (val/, WordNet ids,
an unlabelled flat test/) and the cached listing, used while the folder is unchanged."""
import os
import time

import pytest

from jaxcnn.data import folders

WNIDS = ("n01440764", "n01443537", "n01484850")   # tench, goldfish, great white shark


def _touch(directory, count, start=0, ext=".JPEG"):
    directory.mkdir(parents=True, exist_ok=True)
    for i in range(start, start + count):
        (directory / f"{i:04d}{ext}").write_bytes(b"")   # the listing reads names only


def imagenet_like(root, train=4, val=2):
    for wnid in WNIDS:
        _touch(root / "train" / wnid, train)
        _touch(root / "val" / wnid, val)
    _touch(root / "test", 3)   # ImageNet's test set: flat, no labels
    return root


def listed(root, cache_dir=None):
    folders.folder_files.cache_clear()   # as a new process would
    return folders.folder_files(str(root), None if cache_dir is None else str(cache_dir))


def as_sets(files):
    return [{(str(p), int(label)) for p, label in zip(*split)} for split in (files.train,
                                                                          files.test)]


def test_val_is_the_test_split_beside_an_unlabelled_flat_test_folder(tmp_path):
    files = listed(imagenet_like(tmp_path))
    assert files.class_names == WNIDS
    train, test = as_sets(files)
    assert len(train) == 12 and len(test) == 6
    assert test == {(str(tmp_path / "val" / w / f"{i:04d}.JPEG"), k)
                    for k, w in enumerate(WNIDS) for i in range(2)}


def test_test_and_val_both_with_classes_is_refused_naming_both(tmp_path):
    imagenet_like(tmp_path)
    _touch(tmp_path / "test" / WNIDS[0], 1)
    with pytest.raises(ValueError, match=r"both .*/test and .*/val hold class folders"):
        listed(tmp_path)


def test_a_listing_is_cached_and_listed_again_when_the_folder_changes(tmp_path, monkeypatch):
    root, cache = imagenet_like(tmp_path / "imagenet"), tmp_path / "cache"
    monkeypatch.setattr(folders, "CACHE_MIN_FILES", 10)
    first = listed(root, cache)
    (entry,) = (cache / "file_lists").iterdir()

    real_list = folders._list
    monkeypatch.setattr(folders, "_list", lambda *a: pytest.fail("listed although cached"))
    assert as_sets(listed(root, cache)) == as_sets(first)
    assert listed(root, cache).train[0].tolist() == first.train[0].tolist()   # same order
    monkeypatch.setattr(folders, "_list", real_list)

    # A file added to a class folder, one removed from val/: both seen at the next start.
    time.sleep(0.05)   # past the file system's timestamp granularity (a few ms)
    _touch(root / "train" / WNIDS[1], 1, start=100)
    os.unlink(root / "val" / WNIDS[2] / "0001.JPEG")
    train, test = as_sets(listed(root, cache))
    assert (str(root / "train" / WNIDS[1] / "0100.JPEG"), 1) in train and len(train) == 13
    assert len(test) == 5
    # A damaged entry is listed again, and rewritten.
    entry.write_bytes(b"not gzip")
    assert len(as_sets(listed(root, cache))[0]) == 13
    assert entry.read_bytes()[:2] == b"\x1f\x8b"


def test_small_folders_and_no_cache_dir_keep_no_listing(tmp_path):
    root = imagenet_like(tmp_path / "imagenet")
    listed(root, tmp_path / "cache")   # 18 files, below CACHE_MIN_FILES
    listed(root)
    assert not (tmp_path / "cache").exists()
