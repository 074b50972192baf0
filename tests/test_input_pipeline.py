"""The host side of the data layer: TFDS (mocked) and folder datasets through tf.data (determinism,
resuming, per-host slices, masked evaluation, clear errors), and the Pillow-decoded, cached,
TensorFlow-free device-resident folder path."""
import collections
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P
from PIL import Image

from conftest import assert_same_batches, take

from jaxcnn import data
from jaxcnn.data import decoded, device, sources, tf_host
from jaxcnn.config import DataConfig
from jaxcnn.data.sources import Host

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


def test_folder_info_and_labels_match_folder_names(folder):
    cfg = _cfg(folder, channels=1)
    info = data.dataset_info(cfg)
    assert info == sources.DatasetInfo(3, list(CLASSES), 3 * NUM_TRAIN_PER_CLASS, 3 * NUM_TEST_PER_CLASS)
    for batch in tf_host.host_eval_batches(cfg, Host(), 8):
        assert batch["image"].dtype == np.uint8 and batch["image"].shape[1:] == (8, 8, 1)
        expected = [BRIGHTNESS[CLASSES[label]] for label in batch["label"]]
        np.testing.assert_allclose(batch["image"].mean(axis=(1, 2, 3)), expected, atol=8)


@pytest.mark.parametrize("augment", data.AUGMENTS)
def test_train_batches_are_global_normalised_arrays(folder, sharding, augment):
    cfg = _cfg(folder, augment=augment, channels=3)
    batch = next(data.train_batches(cfg, sharding))
    assert batch["image"].shape == (8, 8, 8, 3) and batch["image"].dtype == np.float32
    assert batch["label"].shape == (8,) and batch["label"].dtype == np.int32
    assert batch["image"].sharding.is_equivalent_to(sharding, 4)
    image, mean, std = np.asarray(batch["image"]), *sources.normalization(cfg)
    assert np.all(image >= (0 - mean) / std - 1e-5) and np.all(image <= (1 - mean) / std + 1e-5)
    assert set(np.asarray(batch["label"])) <= {0, 1, 2}


def test_same_seed_same_batches_different_seed_different(folder):
    run = lambda seed: take(tf_host.host_train_batches(
        _cfg(folder, augment="cifar", seed=seed), Host(), 8), 3)
    assert_same_batches(run(0), run(0))
    assert any(np.any(a["image"] != b["image"]) for a, b in zip(run(0), run(1)))


@pytest.mark.parametrize("augment", ["cifar", "scale_jitter"])
def test_resume_yields_the_uninterrupted_batches(folder, augment):
    cfg = _cfg(folder, augment=augment, batch_size=16)   # 2 steps per epoch
    full = take(tf_host.host_train_batches(cfg, Host(), 16), 5)
    assert_same_batches(full[3:], take(tf_host.host_train_batches(cfg, Host(), 16, 3), 2))
    assert np.any(full[0]["image"] != full[2]["image"])   # the next epoch is reshuffled


def test_each_training_epoch_sees_distinct_examples(folder):
    cfg = _cfg(folder, image_size=4, batch_size=12)
    epochs = take(tf_host.host_train_batches(cfg, Host(), 12), 6)
    for epoch in (epochs[:3], epochs[3:]):
        labels = np.concatenate([b["label"] for b in epoch])
        assert collections.Counter(labels) == {i: NUM_TRAIN_PER_CLASS for i in range(3)}


def test_eval_covers_every_example_once_with_padding(folder, sharding):
    cfg = _cfg(folder)
    batches = list(data.eval_batches(cfg, sharding))
    assert len(batches) == 2 and all(b["image"].shape == (8, 8, 8, 3) for b in batches)
    mask = np.concatenate([np.asarray(b["mask"]) for b in batches])
    labels = np.concatenate([np.asarray(b["label"]) for b in batches])[mask > 0]
    assert mask.sum() == 3 * NUM_TEST_PER_CLASS
    assert collections.Counter(labels) == {i: NUM_TEST_PER_CLASS for i in range(3)}


def test_host_slices_are_disjoint_and_cover_the_split(folder):
    cfg = _cfg(folder)
    keys = lambda split, host, drop: [k.decode() for k, _ in sources.tf_source(
        cfg, split, host, drop).dataset().as_numpy_iterator()]
    first, second = keys("test", Host(0, 2), False), keys("test", Host(1, 2), False)
    assert not set(first) & set(second) and (len(first), len(second)) == (8, 7)
    assert sorted(first + second) == sorted(keys("test", Host(), False))
    train = [keys("train", Host(i, 2), True) for i in range(2)]
    assert len(train[0]) == len(train[1]) == 18 and not set(train[0]) & set(train[1])


def test_every_host_takes_the_same_number_of_eval_steps(folder):
    num_batches = device.num_eval_batches(15, 4, num_hosts=2)
    hosts = [list(device.padded_eval_batches(tf_host.host_eval_batches(
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
    files = sources.folder_files(str(tmp_path))
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
        list(tf_host.host_eval_batches(_cfg(tmp_path), Host(), 8))


@pytest.mark.parametrize("dataset, error, message", [
    ("mnistt", ValueError, "valid datasets: mnist, fashion_mnist"),
    ("folder:/nonexistent/dir", FileNotFoundError, "/nonexistent/dir/train"),
])
def test_bad_names_fail_clearly(dataset, error, message):
    with pytest.raises(error, match=message):
        data.dataset_info(DataConfig(dataset=dataset))


def test_empty_class_folder_fails_clearly(tmp_path):
    (tmp_path / "train" / "ant").mkdir(parents=True)
    with pytest.raises(ValueError, match="no .jpg/.jpeg/.png files in .*ant"):
        data.dataset_info(_cfg(tmp_path))


def test_tfds_dataset_not_downloaded_says_how_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="tfds build imagenet2012 .*downloads/manual|"
                                                 "downloads/manual.*tfds build imagenet2012"):
        data.dataset_info(DataConfig(dataset="imagenet2012", data_dir=str(tmp_path)))


@pytest.mark.parametrize("name", list(sources.TFDS_SPLITS))
def test_tfds_datasets_with_mock_data(name, sharding):
    import tensorflow_datasets as tfds
    channels = 3 if name in ("mnist", "fashion_mnist") else 1   # exercise both conversions
    cfg = DataConfig(dataset=name, image_size=8, channels=channels, batch_size=8, eval_batch_size=8,
                     augment="random_resized_crop" if channels == 1 else "cifar", shuffle_buffer=16)
    with tfds.testing.mock_data(num_examples=12):
        info = data.dataset_info(cfg)
        assert (info.num_train, info.num_test) == (12, 12) and len(info.class_names) == info.num_classes
        batch = next(data.train_batches(cfg, sharding))
        assert batch["image"].shape == (8, 8, 8, channels)
        assert np.all((np.asarray(batch["label"]) >= 0) & (np.asarray(batch["label"]) < info.num_classes))
        masks = [np.asarray(b["mask"]) for b in data.eval_batches(cfg, sharding)]
        assert len(masks) == 2 and sum(m.sum() for m in masks) == 12


def test_importing_models_and_using_digits_never_imports_tensorflow():
    code = ("import sys, jax; from jaxcnn import models, data; from jaxcnn.config import "
            "DataConfig; cfg = DataConfig(dataset='digits', batch_size=8); sharding = "
            "jax.sharding.NamedSharding(jax.make_mesh((1,), ('data',)), "
            "jax.sharding.PartitionSpec('data')); "
            "next(data.train_batches(cfg, sharding)); "
            "print(data.dataset_info(cfg).num_train, 'tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""},
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.split() == ["1497", "False"]


def _noise_folder(root, sizes):
    """One class of random-noise PNGs of the given (width, height) sizes, train and test."""
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        (root / split / "noise").mkdir(parents=True)
        for i, (w, h) in enumerate(sizes):
            Image.fromarray(rng.integers(0, 256, (h, w, 3), np.uint8)).save(
                root / split / "noise" / f"{i}.png")
    return root


def test_pillow_decoding_equals_tf_data_at_the_evaluation_geometry(folder, tmp_path):
    # Solid images of every kind (gray, RGB, RGBA; PNG and JPEG; resized): identical pixels.
    cfg = _cfg(folder, cache_dir=str(tmp_path))
    for split in ("train", "test"):
        pil_images, pil_labels = decoded.folder_arrays(cfg, split, Host())
        tf_images, tf_labels = tf_host.host_arrays(cfg, split, Host())
        np.testing.assert_array_equal(pil_labels, tf_labels)
        np.testing.assert_array_equal(pil_images, tf_images)
    # Noise at the model's size is identical; resized noise differs only by the two libraries'
    # rounding of the antialiased resize (measured: at most 1 level, 0.17 on average).
    noise = _noise_folder(tmp_path / "noise", [(8, 8), (8, 8), (16, 12), (24, 24)])
    cfg = _cfg(noise, cache_dir=str(tmp_path))
    pil_images, _ = decoded.folder_arrays(cfg, "test", Host())
    tf_images, _ = tf_host.host_arrays(cfg, "test", Host())
    same_size = [i for i, p in enumerate(sources.folder_files(str(noise)).test[0])
                 if p.endswith(("0.png", "1.png"))]
    np.testing.assert_array_equal(pil_images[same_size], tf_images[same_size])
    assert np.abs(pil_images.astype(int) - tf_images.astype(int)).max() <= 1


def test_decoded_split_is_cached_and_a_changed_file_is_decoded_again(folder, tmp_path, monkeypatch):
    root = shutil.copytree(folder, tmp_path / "images")
    cfg = _cfg(root, cache_dir=str(tmp_path / "cache"))
    first, labels = decoded.folder_arrays(cfg, "test", Host())
    assert len(list((tmp_path / "cache/decoded").glob("*.npy"))) == 1

    def no_decoding(*args):
        raise AssertionError("decoded again although cached")
    monkeypatch.setattr(decoded, "decode", no_decoding)
    cached, cached_labels = decoded.folder_arrays(cfg, "test", Host())
    np.testing.assert_array_equal(cached, first)
    np.testing.assert_array_equal(cached_labels, labels)
    monkeypatch.undo()

    changed = sources.folder_files(str(root)).test[0][0]
    Image.new("L", (8, 8), 77).save(changed, format="PNG")
    os.utime(changed, ns=(0, os.stat(changed).st_mtime_ns + 10**9))
    again, _ = decoded.folder_arrays(cfg, "test", Host())
    assert (again[0] == 77).all() and not (first[0] == 77).all()
    np.testing.assert_array_equal(again[1:], first[1:])
    assert len(list((tmp_path / "cache/decoded").glob("*.npy"))) == 2


def test_an_unwritable_cache_only_warns(folder, tmp_path, caplog):
    (tmp_path / "not_a_directory").write_text("")
    cfg = _cfg(folder, cache_dir=str(tmp_path / "not_a_directory"))
    images, labels = decoded.folder_arrays(cfg, "test", Host())
    assert images.shape == (3 * NUM_TEST_PER_CLASS, 8, 8, 3) and len(labels) == len(images)
    assert "could not cache the decoded images" in caplog.text


def test_device_resident_folder_training_runs_without_tensorflow_or_tensorboardx(folder, tmp_path):
    """Only jax, flax, optax, orbax, absl, numpy and Pillow: TensorFlow, TFDS, tensorboardX and
    tensorboard are made unimportable, as on a GPU image that lacks them."""
    missing = ["tensorflow", "tensorflow_datasets", "tensorboardX", "tensorboard"]
    code = (f"import runpy, sys; sys.modules.update(dict.fromkeys({missing})); "
            f"sys.argv = ['run', '--dataset=folder:{folder}', '--device_resident', "
            f"'--cache_dir={tmp_path}/cache', '--workdir={tmp_path}/run', '--steps=4', "
            f"'--batch_size=8', '--eval_batch_size=8']; "
            f"runpy.run_module('experiments.run', run_name='__main__')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "XLA_FLAGS": ""}, cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stderr.count("tensorboardX is not installed") == 1
    rows = [line for line in (tmp_path / "run/metrics.jsonl").read_text().splitlines() if line]
    assert any('"split": "test"' in row for row in rows)
    assert (tmp_path / "run/curves.png").is_file() and not (tmp_path / "run/tensorboard").exists()
    assert len(list((tmp_path / "cache/decoded").glob("*.npy"))) == 2
