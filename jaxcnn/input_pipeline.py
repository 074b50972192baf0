"""Input pipelines: what the training loop calls.

    info = input_pipeline.dataset_info(data_cfg)             # classes, split sizes
    for batch in input_pipeline.train_batches(data_cfg, sharding, start_step):   # endless
    for batch in input_pipeline.eval_batches(data_cfg, sharding):                # one masked pass

Batches are dicts of global jax.Arrays laid out with `sharding` (a NamedSharding whose first spec
entry is the data axis); each process reads only its own slice of the data. TFDS and folder datasets
go through tf.data on the host (decode, resize / crop, augment and batch as uint8), are transferred
with prefetch and normalised on the device. With data_cfg.device_resident, and always for the tiny
"digits" dataset (which never imports TensorFlow), the split is held on the devices instead
(jaxcnn.device_data).

Training order: each epoch shuffles with a seed derived from (data_cfg.seed, epoch, process index),
and every example's augmentation is seeded by that seed and its position in the epoch, so step s is
the same batch in every run and `start_step` resumes exactly.
"""
from __future__ import annotations

import functools
import itertools
import re
from typing import Iterator

import jax
import numpy as np
from jax.sharding import NamedSharding

from jaxcnn import datasets, device_data
from jaxcnn.config import DataConfig
from jaxcnn.datasets import DatasetInfo, Host

AUGMENTS = ("none", "cifar", "random_resized_crop", "scale_jitter")
_ARRAY_BATCH = 1024   # tf.data batch when loading a whole split into memory


def dataset_info(cfg: DataConfig) -> DatasetInfo:
    return datasets.dataset_info(cfg)


def train_batches(cfg: DataConfig, sharding: NamedSharding, start_step: int = 0) -> Iterator[dict]:
    """Endless {"image": float32 [B, H, W, C], "label": int32 [B]} global batches from step
    `start_step` on (B = cfg.batch_size; incomplete batches are dropped)."""
    _check(cfg)
    host = _this_host()
    if _resident(cfg):
        images, labels = _host_arrays(cfg, "train", host)
        return device_data.train_batches(cfg, sharding, images, labels, start_step)
    local_batch = device_data.local_batch_size(cfg.batch_size, sharding)
    return device_data.to_device(host_train_batches(cfg, host, local_batch, start_step), cfg, sharding)


def eval_batches(cfg: DataConfig, sharding: NamedSharding) -> Iterator[dict]:
    """One pass over the test split: {"image", "label", "mask"} global batches of
    cfg.eval_batch_size; every example appears exactly once with mask 1, padding has mask 0."""
    _check(cfg)
    host, num_test = _this_host(), dataset_info(cfg).num_test
    if _resident(cfg):
        images, labels = _host_arrays(cfg, "test", host)
        return device_data.eval_batches(cfg, sharding, images, labels, num_test)
    local_batch = device_data.local_batch_size(cfg.eval_batch_size, sharding)
    batches = device_data.padded_eval_batches(host_eval_batches(cfg, host, local_batch), local_batch,
                                              device_data.num_eval_batches(num_test, local_batch, host.count))
    return device_data.to_device(batches, cfg, sharding)


def steps_per_epoch(cfg: DataConfig, sharding: NamedSharding) -> int:
    """Training steps in one pass over the data, as train_batches counts them."""
    host_examples = dataset_info(cfg).num_train // jax.process_count()
    if _resident(cfg):
        return device_data.steps_per_epoch(host_examples, cfg, sharding)
    return host_examples // device_data.local_batch_size(cfg.batch_size, sharding)


def _check(cfg: DataConfig) -> None:
    datasets.check_name(cfg.dataset)
    if cfg.augment not in AUGMENTS:
        raise ValueError(f"unknown augment {cfg.augment!r}; valid: {', '.join(AUGMENTS)}")
    if cfg.channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, not {cfg.channels}")


def _this_host() -> Host:
    return Host(jax.process_index(), jax.process_count())


def _resident(cfg: DataConfig) -> bool:
    return cfg.device_resident or cfg.dataset == datasets.DIGITS


# --- tf.data on the host (numpy batches of this host's slice) -----------------------------------

def host_train_batches(cfg: DataConfig, host: Host, local_batch: int,
                       start_step: int = 0) -> Iterator[dict]:
    """Endless uint8 training batches of host's slice, starting after `start_step` steps."""
    source = datasets.tf_source(cfg, "train", host, drop_remainder=True)
    steps = dataset_info(cfg).num_train // host.count // local_batch
    if steps == 0:
        raise ValueError(f"batch size {cfg.batch_size} exceeds the training split of {cfg.dataset}")
    epoch, skip = divmod(start_step, steps)
    for epoch in itertools.count(epoch):
        yield from _numpy_batches(_train_epoch(cfg, source, host, epoch, skip * local_batch)
                                  .batch(local_batch, drop_remainder=True), cfg)
        skip = 0


def host_eval_batches(cfg: DataConfig, host: Host, local_batch: int) -> Iterator[dict]:
    """One pass of uint8 evaluation batches of host's slice, in a fixed order (last one partial)."""
    source = datasets.tf_source(cfg, "test", host, drop_remainder=False)
    return _numpy_batches(_eval_examples(cfg, source).batch(local_batch), cfg)


def _epoch_seed(seed: int, epoch: int, host_index: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, host_index]).generate_state(1)[0] >> 1)


def _train_epoch(cfg: DataConfig, source: datasets.TFSource, host: Host, epoch: int, skip: int):
    """One epoch of preprocessed training examples, the first `skip` (after shuffling) left out."""
    from jaxcnn import tf_preprocess
    tf = tf_preprocess.tf
    seed = _epoch_seed(cfg.seed, epoch, host.index)

    def preprocess(index, example):
        key, label = example
        image = tf_preprocess.train_image(source.read(key), cfg.image_size, cfg.augment,
                                          tf.stack([tf.constant(seed, tf.int64), index]))
        return _example(tf, cfg, image, label)

    examples = source.dataset(seed).shuffle(source.shuffle_buffer or cfg.shuffle_buffer, seed=seed)
    return examples.enumerate().skip(skip).map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)


def _eval_examples(cfg: DataConfig, source: datasets.TFSource):
    from jaxcnn import tf_preprocess
    tf = tf_preprocess.tf

    def preprocess(key, label):
        return _example(tf, cfg, tf_preprocess.eval_image(source.read(key), cfg.image_size,
                                                          cfg.augment), label)

    return source.dataset(None).map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)


def _example(tf, cfg: DataConfig, image, label) -> dict:
    return {"image": tf.ensure_shape(image, (cfg.image_size, cfg.image_size, cfg.channels)),
            "label": tf.cast(label, tf.int32)}


def _numpy_batches(batches, cfg: DataConfig) -> Iterator[dict]:
    """Iterates a batched tf.data pipeline as numpy; unreadable images fail with a clear error."""
    tf = datasets.import_tf()
    try:
        yield from batches.prefetch(tf.data.AUTOTUNE).as_numpy_iterator()
    except tf.errors.InvalidArgumentError as e:
        reason = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", e.message).strip().splitlines()[0]
        raise ValueError(f"reading {cfg.dataset} failed: {reason} "
                         f"(broken or non-JPEG/PNG image files are not skipped: remove or re-encode "
                         f"them)") from e


@functools.lru_cache(maxsize=4)
def _host_arrays(cfg: DataConfig, split: str, host: Host) -> tuple[np.ndarray, np.ndarray]:
    """Host's slice of a split in memory at the evaluation geometry: uint8 images, int32 labels."""
    drop_remainder = split == "train"
    if cfg.dataset == datasets.DIGITS:
        images, labels = datasets.digits_arrays(split, cfg.image_size, cfg.channels)
        part = datasets.host_slice(len(labels), host, drop_remainder)
        return images[part], labels[part]
    source = datasets.tf_source(cfg, split, host, drop_remainder)
    batches = list(_numpy_batches(_eval_examples(cfg, source).batch(_ARRAY_BATCH), cfg))
    return (np.concatenate([b["image"] for b in batches]),
            np.concatenate([b["label"] for b in batches]))
