"""The device side of the data: normalisation, host-to-device transfer with prefetch, and the
device-resident fast path (no TensorFlow here).

Device-resident training keeps a split on the accelerators as one uint8 array sharded over the data
axis: each device holds a fixed 1/num_devices of this host's examples (as hosts hold slices in the
tf.data path), permutes them each epoch and gathers, crops, flips and normalises its part of every
batch in one jitted shard_map. Augmentation semantics match the tf.data path ("none"; "cifar": zero
pad 4, uniform crop offset in [0, 8]^2, flip with probability 1/2); the images are stored at the
evaluation geometry, so the resize-based augmentations are the tf.data path's alone.
"""
from __future__ import annotations

import collections
import functools
import itertools
import math
from typing import Iterable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from jaxcnn.config import DataConfig
from jaxcnn.data.sources import normalization

CIFAR_PAD = 4
AUGMENTS = ("none", "cifar")


def normalize(images: jax.Array, mean, std) -> jax.Array:
    """uint8 images -> float32, per-channel (x / 255 - mean) / std."""
    return (images.astype(jnp.float32) / 255 - jnp.asarray(mean)) / jnp.asarray(std)


def random_crop_flip_params(key: jax.Array, n: int) -> tuple[jax.Array, jax.Array]:
    """Per image: (row, column) crop offsets into the padded image, uniform in [0, 2 * CIFAR_PAD],
    and whether to flip it horizontally (probability 1/2)."""
    crop_key, flip_key = jax.random.split(key)
    return (jax.random.randint(crop_key, (n, 2), 0, 2 * CIFAR_PAD + 1),
            jax.random.bernoulli(flip_key, 0.5, (n,)))


def crop_and_flip(images: jax.Array, offsets: jax.Array, flips: jax.Array) -> jax.Array:
    """Zero-pads [n, h, w, c] images by CIFAR_PAD, crops h x w at `offsets`, flips where `flips`."""
    _, h, w, c = images.shape
    padded = jnp.pad(images, ((0, 0), (CIFAR_PAD, CIFAR_PAD), (CIFAR_PAD, CIFAR_PAD), (0, 0)))
    crops = jax.vmap(lambda image, o: jax.lax.dynamic_slice(image, (o[0], o[1], 0), (h, w, c)))(
        padded, offsets)
    return jnp.where(flips[:, None, None, None], crops[:, :, ::-1], crops)


# --- host batches to global device arrays -------------------------------------------------------

def data_shards(sharding: NamedSharding) -> int:
    """How many ways the batch dimension is split (the size of the sharding's batch axis)."""
    axes = sharding.spec[0]
    return math.prod(sharding.mesh.shape[a] for a in ((axes,) if isinstance(axes, str) else axes))


def local_batch_size(global_batch: int, sharding: NamedSharding) -> int:
    if global_batch % data_shards(sharding):
        raise ValueError(f"batch size {global_batch} is not divisible by the "
                         f"{data_shards(sharding)} devices of the data axis")
    return global_batch // jax.process_count()


def to_device(batches: Iterable[dict], cfg: DataConfig, sharding: NamedSharding) -> Iterator[dict]:
    """Host-local numpy batches (uint8 images), or global arrays already laid out with `sharding`
    (DALI's on GPUs) -> global arrays laid out with `sharding`, images normalised on the device;
    cfg.prefetch batches are kept transferred ahead."""
    mean, std = normalization(cfg)
    # mean / std as arguments: the same compiled function serves every call (each evaluation).
    normalize_fn = jax.jit(normalize, out_shardings=sharding)

    def put(batch):
        arrays = {k: v if isinstance(v, jax.Array) else
                  jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}
        return {**arrays, "image": normalize_fn(arrays["image"], mean, std)}

    batches = iter(batches)
    queue = collections.deque(put(b) for b in itertools.islice(batches, max(cfg.prefetch, 1)))
    while queue:
        yield queue.popleft()
        queue.extend(put(b) for b in itertools.islice(batches, 1))


def padded_eval_batches(batches: Iterable[dict], local_batch: int, num_batches: int) -> Iterator[dict]:
    """Pads each host batch to local_batch with mask 0, then adds all-padding batches up to
    num_batches (every host must take part in every step of a multi-host evaluation)."""
    template = None
    for count, batch in enumerate(batches, 1):
        n = len(batch["label"])
        template = {k: np.zeros((local_batch, *v.shape[1:]), v.dtype) for k, v in batch.items()}
        for k, v in batch.items():
            template[k][:n] = v
        yield {**template, "mask": (np.arange(local_batch) < n).astype(np.float32)}
    if template is None:
        raise ValueError("this host's slice of the evaluation split is empty")
    padding = {k: np.zeros_like(v) for k, v in template.items()}
    for _ in range(num_batches - count):
        yield {**padding, "mask": np.zeros(local_batch, np.float32)}


def num_eval_batches(num_examples: int, local_batch: int, num_hosts: int) -> int:
    """Batches of the host holding the most examples (hosts get equal shares, first ones +1)."""
    return math.ceil(math.ceil(num_examples / num_hosts) / local_batch)


# --- the device-resident split ------------------------------------------------------------------

def steps_per_epoch(num_host_examples: int, cfg: DataConfig, sharding: NamedSharding) -> int:
    local_shards = data_shards(sharding) // jax.process_count()
    per_device = num_host_examples // local_shards
    return per_device // (cfg.batch_size // data_shards(sharding))


def member_sharding(sharding: NamedSharding) -> NamedSharding:
    """The layout of a packed run's batches [K, B, ...]: members replicated, each member's batch
    laid out as `sharding` lays out a standalone batch."""
    return NamedSharding(sharding.mesh, P(None, *sharding.spec))


def train_batches(cfg: DataConfig, sharding: NamedSharding, images: np.ndarray, labels: np.ndarray,
                  start_step: int = 0, seeds: Sequence[int] | None = None) -> Iterator[dict]:
    """Endless training batches from this host's uint8 images [n, H, W, C] and int32 labels [n],
    held on the devices. Step s of epoch e depends only on (cfg.seed, e, s): resuming at
    `start_step` yields what an uninterrupted run would have.

    seeds: a packed run's members. Batches then have a leading member axis [K, B, ...], member
    k's being the batch of a standalone run with seed seeds[k], gathered from the one copy of the
    split in the same program as the others'."""
    if cfg.augment not in AUGMENTS:
        raise ValueError(f"device_resident supports augment {' | '.join(AUGMENTS)}, not "
                         f"{cfg.augment!r}: use the tf.data path (device_resident=False)")
    local_batch_size(cfg.batch_size, sharding)
    steps = steps_per_epoch(len(labels), cfg, sharding)
    if steps == 0:
        raise ValueError(f"batch size {cfg.batch_size} exceeds the {len(labels)} training examples")
    local_shards = data_shards(sharding) // jax.process_count()
    keep = len(labels) // local_shards * local_shards
    images = jax.make_array_from_process_local_data(sharding, images[:keep])
    labels = jax.make_array_from_process_local_data(sharding, labels[:keep])
    seeds = None if seeds is None else jnp.asarray(seeds, jnp.int32)
    permute = _epoch_permutation_fn(cfg, sharding, keep // local_shards, seeds)
    gather = _batch_fn(cfg, sharding, seeds)
    epoch, step = divmod(start_step, steps)
    for epoch in itertools.count(epoch):
        permutation = permute(epoch)
        for step in range(step, steps):
            yield gather(permutation, images, labels, step, epoch * steps + step)
        step = 0


def _for_members(fn, seed: int, seeds: jax.Array | None, spec: P, member_args: int = 0):
    """`fn(seed, *args)` with the standalone `seed`, or mapped over the members' `seeds` (and
    over the first `member_args` of args); and the out spec that goes with it."""
    if seeds is None:
        return functools.partial(fn, seed), spec
    in_axes = (0, *[0] * member_args)
    return (lambda *args: jax.vmap(fn, in_axes + (None,) * (len(args) - member_args))(seeds, *args),
            P(None, *spec))


def _epoch_permutation_fn(cfg: DataConfig, sharding: NamedSharding, per_device: int,
                          seeds: jax.Array | None):
    """epoch -> each device's permutation of its `per_device` local indices, one sharded array
    ([K, ...] for the members' `seeds`)."""
    axis = sharding.spec[0]

    def local_permutation(seed, epoch):
        shuffle_key = jax.random.fold_in(jax.random.key(seed), 0)
        key = jax.random.fold_in(jax.random.fold_in(shuffle_key, epoch), jax.lax.axis_index(axis))
        return jax.random.permutation(key, per_device)

    fn, out_spec = _for_members(local_permutation, cfg.seed, seeds, P(axis))
    return jax.jit(jax.shard_map(fn, mesh=sharding.mesh, in_specs=P(), out_specs=out_spec))


def _batch_fn(cfg: DataConfig, sharding: NamedSharding, seeds: jax.Array | None):
    """(permutation, images, labels, step in epoch, global step) -> the step's normalised batch
    ([K, B, ...] for the members' `seeds`, each with its own permutation)."""
    axis = sharding.spec[0]
    device_batch = cfg.batch_size // data_shards(sharding)
    mean, std = normalization(cfg)

    def local_batch(seed, permutation, images, labels, step, global_step):
        indices = jax.lax.dynamic_slice_in_dim(permutation, step * device_batch, device_batch)
        batch = images[indices]
        if cfg.augment == "cifar":
            augment_key = jax.random.fold_in(jax.random.key(seed), 1)
            key = jax.random.fold_in(jax.random.fold_in(augment_key, global_step),
                                     jax.lax.axis_index(axis))
            batch = crop_and_flip(batch, *random_crop_flip_params(key, device_batch))
        return {"image": normalize(batch, mean, std), "label": labels[indices]}

    fn, out_spec = _for_members(local_batch, cfg.seed, seeds, P(axis), member_args=1)
    permutation_spec = P(axis) if seeds is None else P(None, axis)
    return jax.jit(jax.shard_map(fn, mesh=sharding.mesh,
                                 in_specs=(permutation_spec, P(axis), P(axis), P(), P()),
                                 out_specs=out_spec))


def eval_batches(cfg: DataConfig, sharding: NamedSharding, images: np.ndarray, labels: np.ndarray,
                 num_examples: int) -> Iterator[dict]:
    """One pass over this host's uint8 images / labels of a split of num_examples in all (masked)."""
    local_batch = local_batch_size(cfg.eval_batch_size, sharding)
    host_batches = ({"image": images[i:i + local_batch], "label": labels[i:i + local_batch]}
                    for i in range(0, len(labels), local_batch))
    return to_device(padded_eval_batches(host_batches, local_batch,
                                         num_eval_batches(num_examples, local_batch,
                                                          jax.process_count())),
                     cfg, sharding)
