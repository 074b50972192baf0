"""The host side of TFDS and folder datasets through tf.data: this host's slice of a split decoded,
resized / cropped and augmented (jaxcnn.data.tf_ops) and batched as uint8 numpy arrays.

Training order: each epoch shuffles with a seed derived from (cfg.seed, epoch, host index), and every
example's augmentation is seeded by that seed and its position in the epoch, so step s is the same
batch in every run and `start_step` resumes exactly.
"""
from __future__ import annotations

import itertools
import re
from typing import Iterator

import numpy as np

from jaxcnn.config import DataConfig
from jaxcnn.data import sources
from jaxcnn.data.sources import Host

_ARRAY_BATCH = 1024   # tf.data batch when loading a whole split into memory


def host_train_batches(cfg: DataConfig, host: Host, local_batch: int,
                       start_step: int = 0) -> Iterator[dict]:
    """Endless uint8 training batches of host's slice, starting after `start_step` steps."""
    source = sources.tf_source(cfg, "train", host, drop_remainder=True)
    steps = sources.dataset_info(cfg).num_train // host.count // local_batch
    if steps == 0:
        raise ValueError(f"batch size {cfg.batch_size} exceeds the training split of {cfg.dataset}")
    epoch, skip = divmod(start_step, steps)
    for epoch in itertools.count(epoch):
        yield from _numpy_batches(_train_epoch(cfg, source, host, epoch, skip * local_batch)
                                  .batch(local_batch, drop_remainder=True), cfg)
        skip = 0


def host_eval_batches(cfg: DataConfig, host: Host, local_batch: int) -> Iterator[dict]:
    """One pass of uint8 evaluation batches of host's slice, in a fixed order (last one partial)."""
    source = sources.tf_source(cfg, "test", host, drop_remainder=False)
    return _numpy_batches(_eval_examples(cfg, source).batch(local_batch), cfg)


def _train_epoch(cfg: DataConfig, source: sources.TFSource, host: Host, epoch: int, skip: int):
    """One epoch of preprocessed training examples, the first `skip` (after shuffling) left out."""
    from jaxcnn.data import tf_ops
    tf = tf_ops.tf
    seed = sources.epoch_seed(cfg.seed, epoch, host.index)

    def preprocess(index, example):
        key, label = example
        image = tf_ops.train_image(source.load(key), cfg.image_size, cfg.augment,
                                   tf.stack([tf.constant(seed, tf.int64), index]), cfg.channels)
        return _example(tf, cfg, image, label)

    examples = source.dataset(seed).shuffle(source.shuffle_buffer or cfg.shuffle_buffer, seed=seed)
    return examples.enumerate().skip(skip).map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)


def _eval_examples(cfg: DataConfig, source: sources.TFSource):
    from jaxcnn.data import tf_ops
    tf = tf_ops.tf

    def preprocess(key, label):
        image = tf_ops.decode(source.load(key), cfg.channels)
        return _example(tf, cfg, tf_ops.eval_image(image, cfg.image_size, cfg.augment), label)

    return source.dataset(None).map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)


def _example(tf, cfg: DataConfig, image, label) -> dict:
    return {"image": tf.ensure_shape(image, (cfg.image_size, cfg.image_size, cfg.channels)),
            "label": tf.cast(label, tf.int32)}


def _numpy_batches(batches, cfg: DataConfig) -> Iterator[dict]:
    """Iterates a batched tf.data pipeline as numpy; unreadable images fail with a clear error."""
    tf = sources.import_tf()
    try:
        yield from batches.prefetch(tf.data.AUTOTUNE).as_numpy_iterator()
    except tf.errors.InvalidArgumentError as e:
        reason = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", e.message).strip().splitlines()[0]
        raise ValueError(f"reading {cfg.dataset} failed: {reason} "
                         f"(broken or non-JPEG/PNG image files are not skipped: remove or re-encode "
                         f"them)") from e


def host_arrays(cfg: DataConfig, split: str, host: Host) -> tuple[np.ndarray, np.ndarray]:
    """Host's slice of a split in memory at the evaluation geometry: uint8 images, int32 labels."""
    source = sources.tf_source(cfg, split, host, drop_remainder=split == "train")
    batches = list(_numpy_batches(_eval_examples(cfg, source).batch(_ARRAY_BATCH), cfg))
    return (np.concatenate([b["image"] for b in batches]),
            np.concatenate([b["label"] for b in batches]))
