"""NVIDIA DALI as the streamed folder loader (`jaxcnn.data.dali`, `--loader=dali`), on DALI's CPU
operators: the files and labels of the folder listing, each host's own shard, the same batches for
the same seed and after a resume, the plugin's hand-over on one device, evaluation views close to
tf.data's, and a training run that resumes exactly."""
import collections
import os
import shutil

import jax
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from PIL import Image

pytest.importorskip("nvidia.dali", reason="NVIDIA DALI is not installed (pip install "
                    "nvidia-dali-cuda120): the DALI loader is not tested")

from conftest import (assert_one_line_error, assert_same_batches, run_in_process,  # noqa: E402
                      take)
from experiments import run  # noqa: E402
from jaxcnn import data, runs  # noqa: E402
from jaxcnn.config import DataConfig  # noqa: E402
from jaxcnn.data import dali, device, folders, sources  # noqa: E402
from jaxcnn.data.device import CIFAR_PAD  # noqa: E402
from jaxcnn.data.sources import Host  # noqa: E402

CLASSES = ("ant", "bee", "cat")
NUM_TRAIN, NUM_TEST = 10, 3          # per class: 30 training files, 9 test files
# Evaluation views: DALI's pixels against tf_ops', mean absolute difference per image, in levels
# of 255. Measured 1.5-2.3 on these noisy JPEGs (another decoder and resampler); an image flipped
# or shifted by one pixel differs by 10 or more.
EVAL_VIEW_MAD = 4.0
# Sizes (height, width) of the photo-like files; none resizes to a half-pixel side at the
# evaluation sides used here (DALI rounds halves up, TensorFlow to even).
SHAPES = ((40, 52), (48, 36), (37, 45), (64, 50), (33, 33), (70, 41))


def _write_folder(root, write):
    """root/{train,test}/<class>/NNN.<ext>, `write(path, number, class index)` making each file."""
    number = 0
    for split, count in (("train", NUM_TRAIN), ("test", NUM_TEST)):
        for label, name in enumerate(CLASSES):
            os.makedirs(root / split / name)
            for _ in range(count):
                write(root / split / name / f"{number:03d}", number, label)
                number += 1
    return root


def _numbered(path, number, label):
    """A flat 8x8 PNG whose colour says its number (a view of it is flat too, and lossless)."""
    Image.new("RGB", (8, 8), (3 + 6 * number, 100, 50 * label)).save(f"{path}.png")


def _photo_like(path, number, label):
    """A JPEG of coloured blobs a few pixels wide: flips and one-pixel shifts show."""
    rng = np.random.default_rng(number)
    height, width = SHAPES[number % len(SHAPES)]
    coarse = rng.integers(0, 256, (height // 5 + 2, width // 5 + 2, 3), dtype=np.uint8)
    Image.fromarray(coarse).resize((width, height), Image.BILINEAR).save(f"{path}.jpg", quality=95)


@pytest.fixture(scope="module")
def numbered(tmp_path_factory):
    return _write_folder(tmp_path_factory.mktemp("numbered"), _numbered)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return _write_folder(tmp_path_factory.mktemp("photos"), _photo_like)


def _cfg(root, **kw):
    return DataConfig(**{"dataset": f"folder:{root}", "image_size": 8, "channels": 3,
                         "batch_size": 8, "eval_batch_size": 8, "loader": "dali",
                         "cache_dir": None, **kw})


def _numbers(batch):
    """The file numbers of a batch of _numbered views."""
    return np.rint((batch["image"][:, 4, 4, 0].astype(int) - 3) / 6).astype(int)


def _listing(root, split):
    """{file number: label} of the folder listing."""
    paths, labels = getattr(folders.folder_files(str(root)), split)
    return {int(os.path.basename(p)[:3]): int(label) for p, label in zip(paths, labels)}


def test_labels_and_files_are_the_listings_and_an_epoch_reads_each_file_once(numbered):
    cfg, train = _cfg(numbered, augment="random_resized_crop"), _listing(numbered, "train")
    epochs = take(dali.host_train_batches(cfg, Host(), 6), 10)    # 5 steps an epoch
    for epoch in (epochs[:5], epochs[5:]):
        numbers = np.concatenate([_numbers(b) for b in epoch])
        assert sorted(numbers) == sorted(train)
        np.testing.assert_array_equal(np.concatenate([b["label"] for b in epoch]),
                                      [train[n] for n in numbers])
    assert not np.array_equal(_numbers(epochs[0]), _numbers(epochs[5]))   # reshuffled
    batches = list(dali.host_eval_batches(cfg, Host(), 4))
    assert [len(b["label"]) for b in batches] == [4, 4, 1]
    paths, labels = folders.folder_files(str(numbered)).test
    assert [int(os.path.basename(p)[:3]) for p in paths] == list(
        np.concatenate([_numbers(b) for b in batches]))
    np.testing.assert_array_equal(np.concatenate([b["label"] for b in batches]), labels)


def test_each_host_reads_its_own_files(numbered):
    cfg = _cfg(numbered, augment="random_resized_crop")
    for epoch in range(2):
        hosts = [np.concatenate([_numbers(b) for b in take(
            dali.host_train_batches(cfg, Host(i, 2), 5, start_step=3 * epoch), 3)])
            for i in range(2)]
        assert len(set(hosts[0])) == len(set(hosts[1])) == 15
        assert not set(hosts[0]) & set(hosts[1])
    tests = [np.concatenate([_numbers(b) for b in dali.host_eval_batches(cfg, Host(i, 2), 4)])
             for i in range(2)]
    assert sorted(np.concatenate(tests)) == sorted(_listing(numbered, "test"))
    assert [len(t) for t in tests] == [dali.shard_size(9, i, 2) for i in range(2)] == [4, 5]


@pytest.mark.parametrize("augment", ["cifar", "scale_jitter", "random_resized_crop"])
def test_same_seed_same_batches_and_a_resume_reads_the_uninterrupted_ones(photos, augment):
    cfg = _cfg(photos, augment=augment, image_size=16)     # 3 steps an epoch
    full = take(dali.host_train_batches(cfg, Host(), 8), 7)
    assert_same_batches(full, take(dali.host_train_batches(cfg, Host(), 8), 7))
    for step in (2, 4):   # mid-epoch, in the first epoch and the next
        assert_same_batches(full[step:], take(dali.host_train_batches(cfg, Host(), 8, step),
                                                7 - step))
    other = take(dali.host_train_batches(_cfg(photos, augment=augment, image_size=16, seed=1),
                                          Host(), 8), 3)
    assert all(np.any(a["image"] != b["image"]) for a, b in zip(full, other))


def test_cifar_views_are_padded_shifted_and_flipped_evaluation_views(tmp_path):
    """Every training view is the evaluation view of its file zero-padded by CIFAR_PAD, cropped at
    offsets in 0..2 * CIFAR_PAD and maybe mirrored (test/ holds the training files here)."""
    for label, name in enumerate(CLASSES):
        os.makedirs(tmp_path / "train" / name)
        for i in range(4):
            _photo_like(tmp_path / "train" / name / f"{i:03d}", 10 * label + i, label)
    shutil.copytree(tmp_path / "train", tmp_path / "test")
    cfg, pad = _cfg(tmp_path, augment="cifar", image_size=32), CIFAR_PAD
    evaluation = np.concatenate([b["image"] for b in dali.host_eval_batches(cfg, Host(), 8)])
    padded = np.pad(evaluation, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    crops = {(dy, dx, flip): padded[:, dy:dy + 32, dx:dx + 32][:, :, ::-1 if flip else 1]
             for dy in range(2 * pad + 1) for dx in range(2 * pad + 1) for flip in (False, True)}
    seen = collections.Counter()
    for batch in take(dali.host_train_batches(cfg, Host(), 8), 3):
        for view in batch["image"]:
            found = [key for key, crop in crops.items() if (crop == view).all(axis=(1, 2, 3)).any()]
            assert found, "a training view is no padded crop of an evaluation view"
            seen.update(found[:1])
    assert {flip for _, _, flip in seen} == {False, True} and len(seen) > 10


def test_evaluation_views_are_tf_datas_within_a_small_difference(photos):
    tf_ops = pytest.importorskip("jaxcnn.data.tf_ops", reason="TensorFlow is not installed")
    paths, _ = folders.folder_files(str(photos)).test
    for size, augment in ((24, "random_resized_crop"), (32, "cifar"), (20, "scale_jitter")):
        cfg = _cfg(photos, image_size=size, augment=augment)
        ours = np.concatenate([b["image"] for b in dali.host_eval_batches(cfg, Host(), 4)])
        theirs = np.stack([tf_ops.eval_image(tf_ops.decode(tf_ops.tf.io.read_file(p), 3), size,
                                             augment).numpy() for p in paths])
        mad = lambda a, b: np.abs(a.astype(float) - b).mean(axis=(1, 2, 3))
        assert mad(ours, theirs).max() < EVAL_VIEW_MAD, (size, augment, mad(ours, theirs))
        for wrong in (ours[:, :, ::-1], ours[:, 1:, 1:]):   # flipped; shifted by one pixel
            assert mad(wrong, theirs[:, :wrong.shape[1], :wrong.shape[2]]).min() > EVAL_VIEW_MAD


@pytest.mark.parametrize("augment, channels", [("cifar", 3), ("random_resized_crop", 3),
                                               ("scale_jitter", 1), ("none", 1)])
def test_train_batches_are_global_normalised_arrays_of_the_train_steps_sharding(
        photos, augment, channels):
    sharding = NamedSharding(jax.make_mesh((8,), ("data",)), P("data"))
    cfg = _cfg(photos, augment=augment, channels=channels, batch_size=16, eval_batch_size=16)
    batch = next(data.train_batches(cfg, sharding))
    assert batch["image"].shape == (16, 8, 8, channels) and batch["image"].dtype == np.float32
    assert batch["label"].shape == (16,) and batch["label"].dtype == np.int32
    assert batch["image"].sharding == batch["label"].sharding == sharding
    evaluation = list(data.eval_batches(cfg, sharding))
    assert len(evaluation) == 1 and float(np.asarray(evaluation[0]["mask"]).sum()) == 9


def test_one_device_takes_the_plugins_arrays_in_place_the_same_batches(photos):
    """A pipeline per local device (on GPUs, and a one-device CPU mesh): DALI's JAX plugin hands
    over its outputs, the same batches as the host's numpy ones."""
    sharding = NamedSharding(Mesh(np.array(jax.devices()[:1]), ("data",)), P("data"))
    cfg = _cfg(photos, augment="cifar", batch_size=8)
    plugin = take(data.train_batches(cfg, sharding, start_step=2), 3)
    host = take(dali.host_train_batches(cfg, Host(), 8, start_step=2), 3)
    mean, std = sources.normalization(cfg)
    for a, b in zip(plugin, host):
        assert a["image"].sharding == sharding
        levels = np.rint((np.asarray(a["image"]) * np.asarray(std) + np.asarray(mean)) * 255)
        np.testing.assert_array_equal(levels, b["image"])   # the same uint8 pixels
        np.testing.assert_array_equal(a["label"], b["label"])


def test_a_run_resumed_mid_epoch_ends_with_the_uninterrupted_runs_parameters(photos, tmp_path,
                                                                           capsys):
    args = ("--model=lenet5", f"--dataset=folder:{photos}", "--loader=dali", "--augment=cifar",
            "--batch_size=8", "--eval_batch_size=8", "--optimizer=sgd", "--learning_rate=0.05",
            "--log_every=2", f"--cache_dir={tmp_path / 'cache'}")
    straight = run_in_process(capsys, run.main, *args, "--steps=7",
                              f"--workdir={tmp_path / 'straight'}")
    assert straight.returncode == 0, straight.stderr[-3000:]
    first = run_in_process(capsys, run.main, *args, "--steps=4",
                           f"--workdir={tmp_path / 'resumed'}")
    assert first.returncode == 0, first.stderr[-3000:]
    resumed = run_in_process(capsys, run.main, *args, "--steps=7",   # step 4: epoch 1, 1 batch in
                             f"--workdir={tmp_path / 'resumed'}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "test accuracy:" in resumed.stdout
    a, b = runs.load(str(tmp_path / "straight")), runs.load(str(tmp_path / "resumed"))
    jax.tree.map(np.testing.assert_array_equal, a.variables, b.variables)


@pytest.mark.parametrize("flags, expected", [
    (("--dataset=digits",), "loader dali reads image folders (folder:PATH), not 'digits'"),
    (("--device_resident",), "loader dali streams the files: it does not apply to device-resident"),
    (("--seeds=2", "--steps=1", "--batch_size=8"), "loader dali does not read for packed runs"),
])
def test_what_dali_cannot_read_ends_with_one_line(photos, tmp_path, capsys, flags, expected):
    result = run_in_process(capsys, run.main, f"--dataset=folder:{photos}", "--loader=dali",
                            f"--workdir={tmp_path}", *flags)
    assert_one_line_error(result, expected)


def test_without_dali_the_loader_says_what_to_install(photos, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(dali, "available", lambda: False)
    result = run_in_process(capsys, run.main, f"--dataset=folder:{photos}", "--loader=dali",
                            f"--workdir={tmp_path}")
    assert_one_line_error(result, "loader dali needs NVIDIA DALI, which is not installed here: "
                                  "pip install nvidia-dali-cuda120")
