"""Data sources: which datasets exist, their classes and sizes, per-host slices and normalisation.

Three kinds of source, all giving uint8 images with the channel count the model takes:
* TFDS names, read with tensorflow_datasets (images stay encoded until the pipeline decodes them);
* "folder:PATH", class sub-folders of JPEG/PNG files (`PATH/train/<class>/*` and `PATH/test/<class>/*`
  or `PATH/val/<class>/*`; without either, a fixed 10% of each training class is held out; listed
  by jaxcnn.data.folders), decoded by tf.data when streamed and by Pillow when device-resident
  (jaxcnn.data.decoded);
* "digits", scikit-learn's bundled 8x8 digits held in numpy: the quick start needs no download and no
  TensorFlow.
TensorFlow is imported only by TFDS and the streamed folder path, and kept off the accelerators.
"""
from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import numpy as np

from jaxcnn.config import DataConfig
from jaxcnn.data.folders import SPLIT_SEED, folder_files

# TFDS name -> (train split, test split). cats_vs_dogs ships only "train": its last 10% is the test.
TFDS_SPLITS = {
    "mnist": ("train", "test"),
    "fashion_mnist": ("train", "test"),
    "cifar10": ("train", "test"),
    "cifar100": ("train", "test"),
    "cats_vs_dogs": ("train[:90%]", "train[90%:]"),
    "imagenette": ("train", "validation"),
    "imagenet2012": ("train", "validation"),
}
DIGITS = "digits"
FOLDER_PREFIX = "folder:"
DIGITS_NUM_TEST = 300        # of 1,797: a fixed seeded permutation leaves 1,497 for training

# Evaluation resizes the shorter side to size * this, then centre-crops `size`: the whole image for
# the small-image augmentations, the classic 0.875 crop for Inception-style training, and VGG's
# test scale Q = (S_min + S_max) / 2 = 384 (for 224 crops) for scale jittering.
EVAL_RESIZE = {"none": 1.0, "cifar": 1.0, "random_resized_crop": 1 / 0.875, "scale_jitter": 384 / 224}
# The training crops' ranges, for every loader: Inception-style crops as the Flax ImageNet example
# draws them (area fraction, width / height, tries before the whole image), and VGG's scale
# jittering (shorter side S in [256, 512] for 224 crops, relative to the crop size).
CROP_AREA = (0.08, 1.0)
CROP_ASPECT = (3 / 4, 4 / 3)
CROP_ATTEMPTS = 10
SCALE_JITTER = (256 / 224, 512 / 224)
_IMAGENET_MEAN_STD = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
# Per-channel mean / std in [0, 1] units, in the dataset's own channel count: the usual published
# figures. Photos of unknown statistics (cats_vs_dogs, imagenette, folders) use ImageNet's.
MEAN_STD = {
    "mnist": ((0.1307,), (0.3081,)),
    "fashion_mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "cats_vs_dogs": _IMAGENET_MEAN_STD,
    "imagenette": _IMAGENET_MEAN_STD,
    "imagenet2012": _IMAGENET_MEAN_STD,
}
_LUMA = (0.2989, 0.5870, 0.1140)   # tf.image.rgb_to_grayscale's weights


class DatasetInfo(NamedTuple):
    num_classes: int
    class_names: list[str]
    num_train: int
    num_test: int


class Host(NamedTuple):
    """This process's place among the processes reading the data (jax.process_index / count)."""
    index: int = 0
    count: int = 1


class TFSource(NamedTuple):
    """One host's slice of a split as tf.data: `dataset(shuffle_seed)` yields (key, label) pairs
    whose images `load(key)` returns encoded (JPEG or PNG bytes, decoded by jaxcnn.data.tf_ops,
    which decodes only the window a training view needs); keys are cheap to shuffle (encoded bytes
    or file paths). `shuffle_buffer`: None for "use the configured one", else the whole slice."""
    dataset: Callable
    load: Callable
    shuffle_buffer: int | None


def names() -> list[str]:
    return [*TFDS_SPLITS, FOLDER_PREFIX + "PATH", DIGITS]


def check_name(name: str) -> None:
    if name not in TFDS_SPLITS and name != DIGITS and not name.startswith(FOLDER_PREFIX):
        raise ValueError(f"unknown dataset {name!r}; valid datasets: {', '.join(names())}")


def scale_jitter_sides(size: int) -> tuple[int, int]:
    """VGG's range [S_min, S_max] of the shorter side for size x size crops."""
    low, high = (round(size * s) for s in SCALE_JITTER)
    return low, high


def epoch_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of one reader's epoch (index: a host's or a pipeline's), the same in every run."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1)[0] >> 1)


def host_slice(n: int, host: Host, drop_remainder: bool) -> slice:
    """Contiguous slice of host.index of n examples, like `tfds.even_splits`: equal sizes when
    dropping the remainder, else the first n % count hosts get one more."""
    if drop_remainder:
        size = n // host.count
        return slice(host.index * size, (host.index + 1) * size)
    size, extra = divmod(n, host.count)
    start = host.index * size + min(host.index, extra)
    return slice(start, start + size + (host.index < extra))


@functools.cache
def import_tf():
    """TensorFlow, imported on first use and hidden from the GPUs (JAX owns the accelerators)."""
    import tensorflow as tf
    tf.config.set_visible_devices([], "GPU")
    return tf


def dataset_info(cfg: DataConfig) -> DatasetInfo:
    check_name(cfg.dataset)
    if cfg.dataset == DIGITS:
        return DatasetInfo(10, [str(d) for d in range(10)], 1797 - DIGITS_NUM_TEST, DIGITS_NUM_TEST)
    if cfg.dataset.startswith(FOLDER_PREFIX):
        files = folder_files(cfg.dataset[len(FOLDER_PREFIX):], cfg.cache_dir)
        return DatasetInfo(len(files.class_names), list(files.class_names),
                           len(files.train[0]), len(files.test[0]))
    builder = _tfds_builder(cfg)
    label = builder.info.features["label"]
    train, test = TFDS_SPLITS[cfg.dataset]
    return DatasetInfo(label.num_classes, list(label.names),
                       _tfds_split_size(builder, train), _tfds_split_size(builder, test))


def normalization(cfg: DataConfig) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (mean, std) in [0, 1] units for cfg.channels channels. Known datasets use the
    published figures, digits its own training statistics, folders ImageNet's. Gray from RGB takes
    the luma-weighted mean, and the same weighting of the stds (exact only for perfectly correlated
    channels: near enough for photos)."""
    if cfg.dataset == DIGITS:
        images, _ = digits_arrays("train", cfg.image_size, 1)
        mean, std = (images.mean() / 255,), (images.std() / 255,)
    else:
        mean, std = MEAN_STD.get(cfg.dataset, _IMAGENET_MEAN_STD)
    mean, std = np.asarray(mean, np.float32), np.asarray(std, np.float32)
    if len(mean) != cfg.channels:
        mean, std = ((np.repeat(mean, 3), np.repeat(std, 3)) if cfg.channels == 3
                     else (np.asarray(_LUMA, np.float32) @ mean[:, None],
                           np.asarray(_LUMA, np.float32) @ std[:, None]))
    return mean, std


# --- digits: numpy only -------------------------------------------------------------------------

@functools.lru_cache(maxsize=4)
def digits_arrays(split: str, image_size: int, channels: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 [n, image_size, image_size, channels] images and int32 labels of scikit-learn's digits
    (values 0..16 scaled to 0..255, bilinearly upsampled). The test split is the first 300 of a
    permutation seeded with SPLIT_SEED, the training split the other 1,497, in permuted order."""
    import jax
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng(SPLIT_SEED).permutation(len(digits.target))
    order = order[:DIGITS_NUM_TEST] if split == "test" else order[DIGITS_NUM_TEST:]
    images = digits.images[order, :, :, None].astype(np.float32) * (255 / 16)
    images = jax.image.resize(images, (len(order), image_size, image_size, 1), "linear")
    images = np.clip(np.round(np.asarray(images)), 0, 255).astype(np.uint8)
    return np.repeat(images, channels, axis=-1), digits.target[order].astype(np.int32)


# --- TFDS ---------------------------------------------------------------------------------------

def _tfds_builder(cfg: DataConfig):
    import_tf()
    import tensorflow_datasets as tfds
    return tfds.builder(cfg.dataset, data_dir=cfg.data_dir)


def _tfds_read(builder, split, shuffle_seed: int | None = None):
    """(encoded image, label) pairs; a clear error when the data was never downloaded."""
    import tensorflow_datasets as tfds
    try:
        return builder.as_dataset(
            split=split, shuffle_files=shuffle_seed is not None, as_supervised=True,
            read_config=tfds.ReadConfig(shuffle_seed=shuffle_seed),
            decoders={"image": tfds.decode.SkipDecoding()})
    except AssertionError as e:   # TFDS asserts when it "could not find data"
        name = builder.name
        manual = (f"put ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar in "
                  f"{builder.data_dir_root}/downloads/manual, then " if name == "imagenet2012" else "")
        raise FileNotFoundError(
            f"TFDS dataset {name!r} is not prepared under {builder.data_dir_root} and there is no "
            f"network here: {manual}run `tfds build {name} --data_dir={builder.data_dir_root}` "
            f"(on a machine with network, then copy the directory) or set DataConfig.data_dir to "
            f"where it is prepared") from e


def _tfds_split_size(builder, split: str) -> int:
    if builder.info.splits:
        return builder.info.splits[split].num_examples
    # No split metadata: not prepared (reading raises the clear error) or mocked in tests: count.
    return int(_tfds_read(builder, split).reduce(0, lambda n, _: n + 1))


def _tfds_source(cfg: DataConfig, split: str, host: Host, drop_remainder: bool) -> TFSource:
    import tensorflow_datasets as tfds
    builder = _tfds_builder(cfg)
    host_split = tfds.even_splits(split, n=host.count, drop_remainder=drop_remainder)[host.index]
    return TFSource(functools.partial(_tfds_read, builder, host_split), lambda encoded: encoded,
                    None)


# --- folders (listed by jaxcnn.data.folders) ---------------------------------------------------

def _read_image_file(tf, path):
    """A JPEG/PNG file's bytes; a file with neither signature fails naming it (tf.data errors
    otherwise do not say which file). Broken files are not skipped: the splits keep their sizes."""
    contents = tf.io.read_file(path)
    signature_ok = tf.logical_or(tf.image.is_jpeg(contents),
                                 tf.strings.substr(contents, 0, 4) == b"\x89PNG")
    with tf.control_dependencies([tf.debugging.Assert(signature_ok, ["not a JPEG/PNG file:", path])]):
        return tf.identity(contents)


def _folder_source(cfg: DataConfig, split: str, host: Host, drop_remainder: bool) -> TFSource:
    tf = import_tf()
    files = folder_files(cfg.dataset[len(FOLDER_PREFIX):], cfg.cache_dir)
    paths, labels = files.train if split == "train" else files.test
    part = host_slice(len(paths), host, drop_remainder)
    paths, labels = paths[part], labels[part]
    return TFSource(lambda shuffle_seed=None: tf.data.Dataset.from_tensor_slices((paths, labels)),
                    lambda path: _read_image_file(tf, path), max(len(paths), 1))


def tf_source(cfg: DataConfig, split: str, host: Host, drop_remainder: bool) -> TFSource:
    """The tf.data source of host's slice of split ("train" or "test") of a TFDS or folder dataset."""
    check_name(cfg.dataset)
    if cfg.dataset.startswith(FOLDER_PREFIX):
        return _folder_source(cfg, split, host, drop_remainder)
    return _tfds_source(cfg, TFDS_SPLITS[cfg.dataset][split == "test"], host, drop_remainder)
