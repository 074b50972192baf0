"""The tf.data path: TFDS (mocked) and folder datasets, determinism, resuming, per-host slices,
masked evaluation, clear errors."""
import collections
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P
from PIL import Image

from jaxcnn import datasets, device_data, input_pipeline
from jaxcnn.config import DataConfig
from jaxcnn.datasets import Host

CLASSES = ("ant", "bee", "cat")
BRIGHTNESS = {"ant": 30, "bee": 128, "cat": 220}   # each class recognisable after decoding
# (size, PIL mode, format) of the files, cycled per class: grayscale, RGB and RGBA, several shapes.
FILE_KINDS = [((20, 14), "L", "png"), ((12, 12), "RGB", "jpg"), ((9, 17), "RGBA", "png"),
              ((40, 30), "RGB", "jpeg")]
NUM_TRAIN_PER_CLASS, NUM_TEST_PER_CLASS = 12, 5       # 15 test examples: not a multiple of 8


def _write_images(directory, count, brightness):
    directory.mkdir(parents=True)
    for i in range(count):
        size, mode, fmt = FILE_KINDS[i % len(FILE_KINDS)]
        color = brightness if mode == "L" else (brightness,) * 3 + ((255,) if mode == "RGBA" else ())
        Image.new(mode, size, color).save(directory / f"{i:03d}.{fmt}")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    for name in CLASSES:
        _write_images(root / "train" / name, NUM_TRAIN_PER_CLASS, BRIGHTNESS[name])
        _write_images(root / "test" / name, NUM_TEST_PER_CLASS, BRIGHTNESS[name])
    (root / "train" / "ant" / "notes.txt").write_text("not an image: ignored")
    return root


@pytest.fixture(scope="module")
def sharding():
    return NamedSharding(jax.make_mesh((8,), ("data",)), P("data"))


def _cfg(root, **kw):
    return DataConfig(**{"dataset": f"folder:{root}", "image_size": 8, "channels": 3,
                         "batch_size": 8, "eval_batch_size": 8, **kw})


def _take(iterator, n):
    return [next(iterator) for _ in range(n)]


def _assert_same_batches(a, b):
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x["image"], y["image"])
        np.testing.assert_array_equal(x["label"], y["label"])


def test_folder_info_and_labels_match_folder_names(folder):
    cfg = _cfg(folder, channels=1)
    info = input_pipeline.dataset_info(cfg)
    assert info == datasets.DatasetInfo(3, list(CLASSES), 3 * NUM_TRAIN_PER_CLASS, 3 * NUM_TEST_PER_CLASS)
    for batch in input_pipeline.host_eval_batches(cfg, Host(), 8):
        assert batch["image"].dtype == np.uint8 and batch["image"].shape[1:] == (8, 8, 1)
        expected = [BRIGHTNESS[CLASSES[label]] for label in batch["label"]]
        np.testing.assert_allclose(batch["image"].mean(axis=(1, 2, 3)), expected, atol=8)


@pytest.mark.parametrize("augment", input_pipeline.AUGMENTS)
def test_train_batches_are_global_normalised_arrays(folder, sharding, augment):
    cfg = _cfg(folder, augment=augment, channels=3)
    batch = next(input_pipeline.train_batches(cfg, sharding))
    assert batch["image"].shape == (8, 8, 8, 3) and batch["image"].dtype == np.float32
    assert batch["label"].shape == (8,) and batch["label"].dtype == np.int32
    assert batch["image"].sharding.is_equivalent_to(sharding, 4)
    image, mean, std = np.asarray(batch["image"]), *datasets.normalization(cfg)
    assert np.all(image >= (0 - mean) / std - 1e-5) and np.all(image <= (1 - mean) / std + 1e-5)
    assert set(np.asarray(batch["label"])) <= {0, 1, 2}


def test_same_seed_same_batches_different_seed_different(folder):
    run = lambda seed: _take(input_pipeline.host_train_batches(
        _cfg(folder, augment="cifar", seed=seed), Host(), 8), 3)
    _assert_same_batches(run(0), run(0))
    assert any(np.any(a["image"] != b["image"]) for a, b in zip(run(0), run(1)))


@pytest.mark.parametrize("augment", ["cifar", "scale_jitter"])
def test_resume_yields_the_uninterrupted_batches(folder, augment):
    cfg = _cfg(folder, augment=augment, batch_size=16)   # 2 steps per epoch
    full = _take(input_pipeline.host_train_batches(cfg, Host(), 16), 5)
    _assert_same_batches(full[3:], _take(input_pipeline.host_train_batches(cfg, Host(), 16, 3), 2))
    assert np.any(full[0]["image"] != full[2]["image"])   # the next epoch is reshuffled


def test_each_training_epoch_sees_distinct_examples(folder):
    cfg = _cfg(folder, image_size=4, batch_size=12)
    epochs = _take(input_pipeline.host_train_batches(cfg, Host(), 12), 6)
    for epoch in (epochs[:3], epochs[3:]):
        labels = np.concatenate([b["label"] for b in epoch])
        assert collections.Counter(labels) == {i: NUM_TRAIN_PER_CLASS for i in range(3)}


def test_eval_covers_every_example_once_with_padding(folder, sharding):
    cfg = _cfg(folder)
    batches = list(input_pipeline.eval_batches(cfg, sharding))
    assert len(batches) == 2 and all(b["image"].shape == (8, 8, 8, 3) for b in batches)
    mask = np.concatenate([np.asarray(b["mask"]) for b in batches])
    labels = np.concatenate([np.asarray(b["label"]) for b in batches])[mask > 0]
    assert mask.sum() == 3 * NUM_TEST_PER_CLASS
    assert collections.Counter(labels) == {i: NUM_TEST_PER_CLASS for i in range(3)}


def test_host_slices_are_disjoint_and_cover_the_split(folder):
    cfg = _cfg(folder)
    keys = lambda split, host, drop: [k.decode() for k, _ in datasets.tf_source(
        cfg, split, host, drop).dataset().as_numpy_iterator()]
    first, second = keys("test", Host(0, 2), False), keys("test", Host(1, 2), False)
    assert not set(first) & set(second) and (len(first), len(second)) == (8, 7)
    assert sorted(first + second) == sorted(keys("test", Host(), False))
    train = [keys("train", Host(i, 2), True) for i in range(2)]
    assert len(train[0]) == len(train[1]) == 18 and not set(train[0]) & set(train[1])


def test_every_host_takes_the_same_number_of_eval_steps(folder):
    num_batches = device_data.num_eval_batches(15, 4, num_hosts=2)
    hosts = [list(device_data.padded_eval_batches(input_pipeline.host_eval_batches(
        _cfg(folder), Host(i, 2), 4), 4, num_batches)) for i in range(2)]
    assert [len(batches) for batches in hosts] == [2, 2]
    masks = [np.concatenate([b["mask"] for b in batches]) for batches in hosts]
    assert [m.sum() for m in masks] == [8, 7]
    labels = np.concatenate([np.concatenate([b["label"] for b in batches])[m > 0]
                             for batches, m in zip(hosts, masks)])
    assert collections.Counter(labels) == {i: NUM_TEST_PER_CLASS for i in range(3)}


def test_folder_without_test_holds_out_ten_percent_per_class(tmp_path):
    for name in CLASSES:
        _write_images(tmp_path / "train" / name, 20, BRIGHTNESS[name])
    files = datasets._folder_files(str(tmp_path))
    assert (len(files.train[0]), len(files.test[0])) == (54, 6)
    assert not set(files.train[0]) & set(files.test[0])
    assert collections.Counter(files.test[1]) == {0: 2, 1: 2, 2: 2}
    for paths, labels in (files.train, files.test):
        assert all(f"/{CLASSES[label]}/" in path for path, label in zip(paths, labels))


def test_corrupt_image_fails_naming_the_file(tmp_path):
    _write_images(tmp_path / "train" / "ant", 3, 50)
    _write_images(tmp_path / "test" / "ant", 3, 50)
    (tmp_path / "test" / "ant" / "broken.jpg").write_bytes(b"definitely not a jpeg")
    with pytest.raises(ValueError, match="broken.jpg"):
        list(input_pipeline.host_eval_batches(_cfg(tmp_path), Host(), 8))


@pytest.mark.parametrize("dataset, error, message", [
    ("mnistt", ValueError, "valid datasets: mnist, fashion_mnist"),
    ("folder:/nonexistent/dir", FileNotFoundError, "/nonexistent/dir/train"),
])
def test_bad_names_fail_clearly(dataset, error, message):
    with pytest.raises(error, match=message):
        input_pipeline.dataset_info(DataConfig(dataset=dataset))


def test_empty_class_folder_fails_clearly(tmp_path):
    (tmp_path / "train" / "ant").mkdir(parents=True)
    with pytest.raises(ValueError, match="no .jpg/.jpeg/.png files in .*ant"):
        input_pipeline.dataset_info(_cfg(tmp_path))


def test_tfds_dataset_not_downloaded_says_how_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="tfds build imagenet2012 .*downloads/manual|"
                                                 "downloads/manual.*tfds build imagenet2012"):
        input_pipeline.dataset_info(DataConfig(dataset="imagenet2012", data_dir=str(tmp_path)))


@pytest.mark.parametrize("name", list(datasets.TFDS_SPLITS))
def test_tfds_datasets_with_mock_data(name, sharding):
    import tensorflow_datasets as tfds
    channels = 3 if name in ("mnist", "fashion_mnist") else 1   # exercise both conversions
    cfg = DataConfig(dataset=name, image_size=8, channels=channels, batch_size=8, eval_batch_size=8,
                     augment="random_resized_crop" if channels == 1 else "cifar", shuffle_buffer=16)
    with tfds.testing.mock_data(num_examples=12):
        info = input_pipeline.dataset_info(cfg)
        assert (info.num_train, info.num_test) == (12, 12) and len(info.class_names) == info.num_classes
        batch = next(input_pipeline.train_batches(cfg, sharding))
        assert batch["image"].shape == (8, 8, 8, channels)
        assert np.all((np.asarray(batch["label"]) >= 0) & (np.asarray(batch["label"]) < info.num_classes))
        masks = [np.asarray(b["mask"]) for b in input_pipeline.eval_batches(cfg, sharding)]
        assert len(masks) == 2 and sum(m.sum() for m in masks) == 12


def test_importing_models_and_using_digits_never_imports_tensorflow():
    code = ("import sys, jax; from jaxcnn import models, input_pipeline; from jaxcnn.config import "
            "DataConfig; cfg = DataConfig(dataset='digits', batch_size=8); sharding = "
            "jax.sharding.NamedSharding(jax.make_mesh((1,), ('data',)), "
            "jax.sharding.PartitionSpec('data')); "
            "next(input_pipeline.train_batches(cfg, sharding)); "
            "print(input_pipeline.dataset_info(cfg).num_train, 'tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""},
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.split() == ["1497", "False"]
