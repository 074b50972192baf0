"""What the training loop calls: global batches on the devices.

    info = data.dataset_info(data_cfg)                              # classes, split sizes
    for batch in data.train_batches(data_cfg, sharding, start_step):   # endless
    for batch in data.eval_batches(data_cfg, sharding):                # one masked pass

Batches are dicts of global jax.Arrays laid out with `sharding` (a NamedSharding whose first spec
entry is the data axis); each process reads only its own slice of the data. Two routes:
* streamed: TFDS and folder datasets through tf.data on the host (jaxcnn.data.tf_host), transferred
  with prefetch and normalised on the device (jaxcnn.data.device); or, with loader "dali", folders
  through NVIDIA DALI, decoded on the GPUs where there are (jaxcnn.data.dali);
* device-resident (data_cfg.device_resident, and always the tiny "digits"): the host's slice is
  decoded once at the evaluation geometry (folders with Pillow, cached on disk: jaxcnn.data.decoded;
  digits from numpy; TFDS through tf.data) and held on the devices, which shuffle, augment and
  normalise each batch (jaxcnn.data.device). Digits and folders never import TensorFlow here.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Iterator, Sequence

import jax
import numpy as np
from jax.sharding import NamedSharding

from jaxcnn.config import DataConfig
from jaxcnn.data import dali, decoded, device, sources, tf_host
from jaxcnn.data.sources import Host

AUGMENTS = ("none", "cifar", "random_resized_crop", "scale_jitter")
LOADERS = ("tf", "dali")


def train_batches(cfg: DataConfig, sharding: NamedSharding, start_step: int = 0,
                  seeds: Sequence[int] | None = None) -> Iterator[dict]:
    """Endless {"image": float32 [B, H, W, C], "label": int32 [B]} global batches from step
    `start_step` on (B = cfg.batch_size; incomplete batches are dropped).

    seeds: a packed run's members (`jaxcnn.packing`): batches [K, B, ...], member k's being what a
    standalone run with seed seeds[k] reads (device-resident: gathered from one copy of the split;
    streamed: K host pipelines)."""
    _check(cfg)
    if cfg.loader == "dali":
        if seeds is not None:
            raise ValueError("loader dali does not read for packed runs: use loader tf or a "
                             "device-resident dataset")
        return dali.train_batches(cfg, sharding, start_step)
    host = _this_host()
    if _resident(cfg):
        images, labels = _host_arrays(cfg, "train", host)
        return device.train_batches(cfg, sharding, images, labels, start_step, seeds)
    local_batch = device.local_batch_size(cfg.batch_size, sharding)
    if seeds is None:
        return device.to_device(tf_host.host_train_batches(cfg, host, local_batch, start_step),
                                cfg, sharding)
    members = [tf_host.host_train_batches(dataclasses.replace(cfg, seed=seed), host, local_batch,
                                          start_step) for seed in seeds]
    stacked = ({k: np.stack([b[k] for b in batches]) for k in batches[0]}
               for batches in zip(*members))
    return device.to_device(stacked, cfg, device.member_sharding(sharding))


def eval_batches(cfg: DataConfig, sharding: NamedSharding) -> Iterator[dict]:
    """One pass over the test split: {"image", "label", "mask"} global batches of
    cfg.eval_batch_size; every example appears exactly once with mask 1, padding has mask 0."""
    _check(cfg)
    if cfg.loader == "dali":
        return dali.eval_batches(cfg, sharding)
    host, num_test = _this_host(), sources.dataset_info(cfg).num_test
    if _resident(cfg):
        images, labels = _host_arrays(cfg, "test", host)
        return device.eval_batches(cfg, sharding, images, labels, num_test)
    local_batch = device.local_batch_size(cfg.eval_batch_size, sharding)
    batches = device.padded_eval_batches(tf_host.host_eval_batches(cfg, host, local_batch),
                                         local_batch,
                                         device.num_eval_batches(num_test, local_batch, host.count))
    return device.to_device(batches, cfg, sharding)


def steps_per_epoch(cfg: DataConfig, sharding: NamedSharding) -> int:
    """Training steps in one pass over the data, as train_batches counts them."""
    host_examples = sources.dataset_info(cfg).num_train // jax.process_count()
    if _resident(cfg):
        return device.steps_per_epoch(host_examples, cfg, sharding)
    return host_examples // device.local_batch_size(cfg.batch_size, sharding)


def _check(cfg: DataConfig) -> None:
    sources.check_name(cfg.dataset)
    if cfg.augment not in AUGMENTS:
        raise ValueError(f"unknown augment {cfg.augment!r}; valid: {', '.join(AUGMENTS)}")
    if cfg.channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, not {cfg.channels}")
    if cfg.loader not in LOADERS:
        raise ValueError(f"unknown loader {cfg.loader!r}; valid: {', '.join(LOADERS)}")


def _this_host() -> Host:
    return Host(jax.process_index(), jax.process_count())


def _resident(cfg: DataConfig) -> bool:
    return cfg.device_resident or cfg.dataset == sources.DIGITS


@functools.lru_cache(maxsize=4)
def _host_arrays(cfg: DataConfig, split: str, host: Host) -> tuple[np.ndarray, np.ndarray]:
    """Host's slice of a split in memory at the evaluation geometry: uint8 images, int32 labels."""
    if cfg.dataset == sources.DIGITS:
        images, labels = sources.digits_arrays(split, cfg.image_size, cfg.channels)
        part = sources.host_slice(len(labels), host, drop_remainder=split == "train")
        return images[part], labels[part]
    if cfg.dataset.startswith(sources.FOLDER_PREFIX):
        return decoded.folder_arrays(cfg, split, host)
    return tf_host.host_arrays(cfg, split, host)
