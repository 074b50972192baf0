"""The device-resident path: augmentation semantics, epochs, determinism, resuming, the digits data."""
import collections

import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from jaxcnn import data
from jaxcnn.data import device, sources
from jaxcnn.config import DataConfig

NUM_EXAMPLES = 64


@pytest.fixture(scope="module")
def sharding():
    return NamedSharding(jax.make_mesh((8,), ("data",)), P("data"))


@pytest.fixture(scope="module")
def split():
    """Example i: a 6x6x3 image of random values in [1, 255] (0 marks padding), label i."""
    images = np.random.default_rng(0).integers(1, 256, (NUM_EXAMPLES, 6, 6, 3), dtype=np.uint8)
    return images, np.arange(NUM_EXAMPLES, dtype=np.int32)


def _cfg(**kw):
    return DataConfig(**{"dataset": "cifar10", "image_size": 6, "channels": 3, "batch_size": 16,
                         "eval_batch_size": 16, "device_resident": True, **kw})


def _epochs(cfg, sharding, split, steps, start_step=0):
    batches = device.train_batches(cfg, sharding, *split, start_step=start_step)
    return [jax.tree.map(np.asarray, next(batches)) for _ in range(steps)]


def test_normalize_uses_the_channel_statistics():
    images = np.full((2, 1, 1, 3), 255, np.uint8)
    np.testing.assert_allclose(device.normalize(images, [0.5, 0.5, 0.0], [0.5, 0.25, 1.0]),
                               np.broadcast_to([1.0, 2.0, 1.0], (2, 1, 1, 3)), rtol=1e-6)


def test_crop_offsets_are_within_the_padding_and_flip_rate_is_half():
    offsets, flips = device.random_crop_flip_params(jax.random.key(0), 20_000)
    offsets = np.asarray(offsets)
    assert offsets.min() == 0 and offsets.max() == 2 * device.CIFAR_PAD
    assert set(np.unique(offsets)) == set(range(2 * device.CIFAR_PAD + 1))
    assert abs(np.asarray(flips).mean() - 0.5) < 0.02


def test_crop_and_flip_matches_numpy(split):
    images = split[0][:4]
    offsets, flips = np.array([[0, 0], [8, 8], [3, 5], [4, 4]]), np.array([False, True, True, False])
    out = np.asarray(device.crop_and_flip(images, offsets, flips))
    padded = np.pad(images, ((0, 0), (4, 4), (4, 4), (0, 0)))
    for i, ((r, c), flip) in enumerate(zip(offsets, flips)):
        expected = padded[i, r:r + 6, c:c + 6]
        np.testing.assert_array_equal(out[i], expected[:, ::-1] if flip else expected)
    np.testing.assert_array_equal(out[3], images[3])   # offset (4, 4) unflipped: the original


def test_batches_are_sharded_with_the_right_shapes_and_values(sharding, split):
    cfg = _cfg(augment="none")
    batch = next(device.train_batches(cfg, sharding, *split))
    assert batch["image"].shape == (16, 6, 6, 3) and batch["image"].dtype == np.float32
    assert batch["label"].shape == (16,) and batch["label"].dtype == np.int32
    assert batch["image"].sharding.is_equivalent_to(sharding, 4)
    labels = np.asarray(batch["label"])
    np.testing.assert_allclose(np.asarray(batch["image"]), np.asarray(
        device.normalize(split[0][labels], *sources.normalization(cfg))), atol=1e-6)


def test_cifar_augmentation_only_moves_pixels_and_pads_with_zeros(sharding, split):
    cfg = _cfg(augment="cifar")
    mean, std = sources.normalization(cfg)
    batches = _epochs(cfg, sharding, split, 8)
    images = np.concatenate([b["image"] for b in batches]) * std + mean
    labels = np.concatenate([b["label"] for b in batches])
    pixels = np.round(images * 255).astype(int)
    assert pixels.min() >= 0 and pixels.max() <= 255
    padding = pixels == 0
    assert 0 < padding.mean() < 0.7   # some crops reach into the padding, most pixels are real
    for image, label, pad in zip(pixels, labels, padding):   # every real pixel from its own image
        assert set(image[~pad].ravel()) <= set(split[0][label].ravel())


def test_every_example_once_per_epoch_and_epochs_reshuffle(sharding, split):
    batches = _epochs(_cfg(augment="cifar"), sharding, split, 8)   # 4 steps per epoch
    assert device.steps_per_epoch(NUM_EXAMPLES, _cfg(), sharding) == 4
    epochs = [np.concatenate([b["label"] for b in batches[i:i + 4]]) for i in (0, 4)]
    for labels in epochs:
        assert sorted(labels) == list(range(NUM_EXAMPLES))
    assert np.any(epochs[0] != epochs[1])


def test_same_seed_same_batches_and_resume_is_exact(sharding, split):
    cfg = _cfg(augment="cifar")
    full = _epochs(cfg, sharding, split, 7)
    for a, b in zip(full[5:], _epochs(cfg, sharding, split, 2, start_step=5)):
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(a["label"], b["label"])
    other = _epochs(_cfg(augment="cifar", seed=1), sharding, split, 1)
    assert np.any(other[0]["label"] != full[0]["label"])


def test_resize_augmentations_are_refused(sharding, split):
    with pytest.raises(ValueError, match="tf.data path"):
        next(device.train_batches(_cfg(augment="scale_jitter"), sharding, *split))


def test_eval_covers_every_example_once(sharding, split):
    images, labels = split[0][:50], split[1][:50]   # 50: not a multiple of 16
    batches = list(device.eval_batches(_cfg(), sharding, images, labels, 50))
    assert len(batches) == 4
    mask = np.concatenate([np.asarray(b["mask"]) for b in batches])
    seen = np.concatenate([np.asarray(b["label"]) for b in batches])[mask > 0]
    assert mask.sum() == 50 and sorted(seen) == list(range(50))


def test_digits_split_is_fixed_disjoint_and_upsampled():
    train, test = (sources.digits_arrays(s, 32, 3) for s in ("train", "test"))
    assert train[0].shape == (1497, 32, 32, 3) and test[0].shape == (300, 32, 32, 3)
    assert train[0].dtype == np.uint8 and train[0].max() > 200 and train[0].min() == 0
    assert collections.Counter(test[1]).keys() == set(range(10))
    flat = lambda images: {image.tobytes() for image in images[..., 0]}
    assert len(flat(train[0]) & flat(test[0])) <= 2   # a few digits are exact duplicates in the data
    mean, std = sources.normalization(DataConfig(dataset="digits", image_size=32, channels=1))
    assert 0.25 < mean[0] < 0.35 and 0.25 < std[0] < 0.4


def test_digits_through_the_public_interface(sharding):
    cfg = DataConfig(dataset="digits", batch_size=64, eval_batch_size=128)
    batch = next(data.train_batches(cfg, sharding))
    assert batch["image"].shape == (64, 32, 32, 1)
    assert abs(float(np.asarray(batch["image"]).mean())) < 0.3
    assert data.steps_per_epoch(cfg, sharding) == 1497 // 8 // 8
    mask = sum(np.asarray(b["mask"]).sum() for b in data.eval_batches(cfg, sharding))
    assert mask == 300
