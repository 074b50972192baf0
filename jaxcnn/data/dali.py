"""NVIDIA DALI as the streamed loader of image folders (`DataConfig.loader == "dali"`): the files
jaxcnn.data.folders lists, read, decoded, augmented and batched by DALI pipelines, on the GPUs
where the batches go to GPUs (`device="mixed"`: nvJPEG and the GPU's hardware JPEG decoder) and
with DALI's CPU operators otherwise. DALI is optional (`pip install nvidia-dali-cuda120`); it is
imported only here, only when used.

Views: jaxcnn.data.tf_ops's, with its sizes and ranges (jaxcnn.data.sources), as uint8 normalised
on the device like the tf.data path's; not its pixels (other JPEG decoder and resampler; how close
the evaluation views are is measured in tests/test_dali.py). Resized shapes round halves up where
TensorFlow rounds them to even, DALI's random-resized crop falls back to a centre crop after its
tries, and scale jittering's crop offsets, drawn as fractions of the room, give the two edge
offsets half the weight of the others.

Order and sharding: each epoch every host draws the same permutation of the training files from
(seed, epoch), and DALI's reader gives shard i of S its contiguous S-th of it: one shard per GPU of
every host on GPUs, one per host on CPUs. Each pipeline's random operators are seeded from
(seed, epoch, shard), so step s is the same batch in every run. DALI's random state advances batch
by batch and cannot be set, so a run resumed mid-epoch rebuilds that epoch's pipelines and runs
them through the batches already trained on (at most one epoch of loading, once per resume).

Hand-over: where each local device has its own pipeline (every GPU), DALI's JAX plugin wraps the
pipelines' outputs in place as the devices' shards of the global batch, laid out with the train
step's sharding; otherwise (CPU devices) the host's numpy batch goes through
jaxcnn.data.device.to_device like tf.data's. Evaluation reads with one pipeline per host (on its
first GPU where there is one) and pads and masks the last batch as the tf.data path does.
"""
from __future__ import annotations

import importlib.util
import itertools
import os
from typing import Iterator

import jax
import numpy as np
from absl import logging
from jax.sharding import NamedSharding

from jaxcnn.config import DataConfig
from jaxcnn.data import device, sources
from jaxcnn.data.device import CIFAR_PAD
from jaxcnn.data.folders import folder_files
from jaxcnn.data.sources import Host

PACKAGE = "nvidia-dali-cuda120"   # CUDA 12 (its CPU operators need no GPU); nvidia-dali-cuda130: 13
_READER = "reader"
# DALI places a crop at round(pos * (W - size)); tf_ops centres it at floor((W - size) / 2).
_CENTRE = 0.5 - 1e-6


def available() -> bool:
    try:
        return importlib.util.find_spec("nvidia.dali") is not None
    except ModuleNotFoundError:   # no `nvidia` package at all
        return False


def check(cfg: DataConfig) -> None:
    """One clear error where `cfg` cannot be read with DALI."""
    if not cfg.dataset.startswith(sources.FOLDER_PREFIX):
        raise ValueError(f"loader dali reads image folders (folder:PATH), not {cfg.dataset!r}: "
                         f"use loader tf")
    if cfg.device_resident:
        raise ValueError("loader dali streams the files: it does not apply to device-resident "
                         "datasets (choose one)")
    if not available():
        raise ValueError(f"loader dali needs NVIDIA DALI, which is not installed here: "
                         f"pip install {PACKAGE}")


def train_batches(cfg: DataConfig, sharding: NamedSharding, start_step: int = 0
                  ) -> Iterator[dict]:
    """Endless {"image": float32 [B, H, W, C], "label": int32 [B]} global training batches from
    step `start_step` on, as jaxcnn.data.train_batches gives them."""
    check(cfg)
    host = Host(jax.process_index(), jax.process_count())
    local_batch = device.local_batch_size(cfg.batch_size, sharding)
    return device.to_device(host_train_batches(cfg, host, local_batch, start_step, sharding),
                            cfg, sharding)


def host_train_batches(cfg: DataConfig, host: Host, local_batch: int, start_step: int = 0,
                       sharding: NamedSharding | None = None) -> Iterator[dict]:
    """Endless uint8 training batches of `host`'s shards, local_batch examples a step, from step
    `start_step` on: global arrays where each of the sharding's local devices has a pipeline of
    its own (GPUs, or a single CPU device), else numpy arrays from one pipeline on the CPU (so
    always where `sharding` is None)."""
    paths, labels = _files(cfg).train
    steps = len(paths) // host.count // local_batch
    if steps == 0:
        raise ValueError(f"batch size {cfg.batch_size} exceeds the training split of {cfg.dataset}")
    device_ids = [None] if sharding is None else _pipeline_devices(sharding)
    per_host = len(device_ids)
    per_device = sharding is not None and per_host == len(sharding.addressable_devices)
    first_epoch, skip = divmod(start_step, steps)
    if skip:
        logging.info("resuming at step %d: DALI reads epoch %d's first %d batches again",
                     start_step, first_epoch, skip)
    for epoch in itertools.count(first_epoch):
        order = np.random.default_rng([cfg.seed, epoch]).permutation(len(paths))
        shards = [host.index * per_host + j for j in range(per_host)]
        pipes = [_pipeline(cfg, paths[order], labels[order], train=True,
                           batch=local_batch // per_host, shard=shard,
                           num_shards=host.count * per_host, device_id=device_id,
                           seed=sources.epoch_seed(cfg.seed, epoch, shard),
                           num_threads=_threads(per_host))
                 for shard, device_id in zip(shards, device_ids)]
        batches = _plugin_batches(pipes, sharding) if per_device else _numpy_batches(pipes[0])
        yield from itertools.islice(batches, skip if epoch == first_epoch else 0, steps)


def eval_batches(cfg: DataConfig, sharding: NamedSharding) -> Iterator[dict]:
    """One pass over the test split: {"image", "label", "mask"} global batches of
    cfg.eval_batch_size; every example appears exactly once with mask 1, padding has mask 0."""
    check(cfg)
    host = Host(jax.process_index(), jax.process_count())
    local_batch = device.local_batch_size(cfg.eval_batch_size, sharding)
    batches = host_eval_batches(cfg, host, local_batch, _pipeline_devices(sharding)[0])
    num_batches = device.num_eval_batches(len(_files(cfg).test[0]), local_batch, host.count)
    return device.to_device(device.padded_eval_batches(batches, local_batch, num_batches),
                            cfg, sharding)


def host_eval_batches(cfg: DataConfig, host: Host, local_batch: int,
                      device_id: int | None = None) -> Iterator[dict]:
    """`host`'s shard of the test split once, in the listing's order, as uint8 numpy batches
    (the last one partial), decoded on GPU `device_id` or on the CPU (None)."""
    paths, labels = _files(cfg).test
    size = shard_size(len(paths), host.index, host.count)
    if not size:
        return
    pipe = _pipeline(cfg, paths, labels, train=False, batch=local_batch, shard=host.index,
                     num_shards=host.count, device_id=device_id, seed=0, num_threads=_threads(1))
    for start, batch in zip(range(0, size, local_batch), _numpy_batches(pipe)):
        yield {k: v[:size - start] for k, v in batch.items()}


def shard_size(num_files: int, shard: int, num_shards: int) -> int:
    """The files DALI's reader gives `shard`: from num_files * shard // num_shards on."""
    return (num_files * (shard + 1) // num_shards) - (num_files * shard // num_shards)


def _files(cfg: DataConfig):
    return folder_files(cfg.dataset[len(sources.FOLDER_PREFIX):], cfg.cache_dir)


def _pipeline_devices(sharding: NamedSharding) -> list[int | None]:
    """The DALI device of each of this host's pipelines: one per local GPU of the sharding (its
    CUDA ordinal), or one for the host on its CPU (None)."""
    devices = sorted(sharding.addressable_devices, key=lambda d: d.id)
    if devices[0].platform == "gpu":
        return [d.local_hardware_id for d in devices]
    return [None]


def _threads(pipelines: int) -> int:
    """CPU threads of each of this host's pipelines: its cores (this process's) shared out."""
    return max(1, len(os.sched_getaffinity(0)) // pipelines)


def _pipeline(cfg: DataConfig, paths: np.ndarray, labels: np.ndarray, train: bool, batch: int,
              shard: int, num_shards: int, device_id: int | None, seed: int, num_threads: int):
    """A built pipeline of (uint8 images [batch, size, size, channels], int32 labels [batch]) over
    shard `shard` of `num_shards` of the files, in their order: decoding on GPU `device_id`, or on
    the CPU (None). Training batches stay on the GPU, for the plugin to wrap them there."""
    from nvidia.dali import fn, pipeline_def

    @pipeline_def(batch_size=batch, num_threads=num_threads, device_id=device_id, seed=seed)
    def pipeline():
        encoded, label = fn.readers.file(files=paths.tolist(), labels=labels.tolist(),
                                         shard_id=shard, num_shards=num_shards,
                                         stick_to_shard=True, name=_READER)
        decoder = "cpu" if device_id is None else "mixed"
        image = _train_view(encoded, cfg, decoder) if train else _eval_view(encoded, cfg, decoder)
        label = label[0]   # [1] per file -> a scalar
        return image, (label.gpu() if train and device_id is not None else label)

    pipe = pipeline()
    pipe.build()
    return pipe


def _decode(encoded, cfg: DataConfig, decoder: str, **random_crop):
    """The whole image, or with `random_crop` (area and aspect ranges, tries) a random window of
    it, decoded alone."""
    from nvidia.dali import fn, types
    output_type = types.RGB if cfg.channels == 3 else types.GRAY
    if random_crop:
        return fn.decoders.image_random_crop(encoded, device=decoder, output_type=output_type,
                                             **random_crop)
    return fn.decoders.image(encoded, device=decoder, output_type=output_type)


def _crop(image, size: int, x=_CENTRE, y=_CENTRE, mirror=False):
    """The size x size window at relative position (x, y), mirrored where `mirror`, as uint8 HWC."""
    from nvidia.dali import fn, types
    return fn.crop_mirror_normalize(image, crop=(size, size), crop_pos_x=x, crop_pos_y=y,
                                    mirror=mirror, dtype=types.UINT8, output_layout="HWC")


def _eval_view(encoded, cfg: DataConfig, decoder: str):
    """tf_ops.eval_image: the shorter side resized to size * EVAL_RESIZE, the centre crop."""
    from nvidia.dali import fn
    side = round(cfg.image_size * sources.EVAL_RESIZE[cfg.augment])
    return _crop(fn.resize(_decode(encoded, cfg, decoder), resize_shorter=side), cfg.image_size)


def _train_view(encoded, cfg: DataConfig, decoder: str):
    """tf_ops.train_image: cfg.augment's crop, then a horizontal flip with probability 1/2."""
    from nvidia.dali import fn
    size = cfg.image_size
    if cfg.augment == "none":
        return _eval_view(encoded, cfg, decoder)
    x = y = _CENTRE
    if cfg.augment == "random_resized_crop":
        image = fn.resize(_decode(encoded, cfg, decoder, random_area=sources.CROP_AREA,
                                  random_aspect_ratio=sources.CROP_ASPECT,
                                  num_attempts=sources.CROP_ATTEMPTS), size=(size, size))
    elif cfg.augment == "scale_jitter":
        low, high = sources.scale_jitter_sides(size)
        side = fn.random.uniform(values=[float(s) for s in range(low, high + 1)])
        image = fn.resize(_decode(encoded, cfg, decoder), resize_shorter=side)
        x, y = fn.random.uniform(range=(0, 1)), fn.random.uniform(range=(0, 1))
    else:   # cifar: the evaluation view zero-padded by CIFAR_PAD, a crop at offsets 0..2 * PAD
        padded = size + 2 * CIFAR_PAD
        image = fn.crop(_eval_view(encoded, cfg, decoder), crop=(padded, padded),
                        out_of_bounds_policy="pad")
        offsets = [k / (2 * CIFAR_PAD) for k in range(2 * CIFAR_PAD + 1)]
        x, y = fn.random.uniform(values=offsets), fn.random.uniform(values=offsets)
    return _crop(image, size, x, y, mirror=fn.random.coin_flip())


def _numpy_batches(pipe) -> Iterator[dict]:
    """A pipeline's batches as host numpy arrays, endless."""
    while True:
        images, labels = pipe.run()
        yield {"image": images.as_cpu().as_array(), "label": labels.as_cpu().as_array()}


def _plugin_batches(pipes: list, sharding: NamedSharding) -> Iterator[dict]:
    """One pipeline per local device: each batch's outputs, wrapped in place as the devices'
    shards of global arrays laid out with `sharding` (DALI's JAX plugin), until the shards' end."""
    from nvidia.dali.plugin.jax import DALIGenericIterator
    return iter(DALIGenericIterator(pipes, ["image", "label"], sharding=sharding,
                                    reader_name=_READER))
