"""The articles' timing protocol (`time_tensorflow_run`) for any model, plus FLOPs and MFU.

Each mode is compiled ahead of time (compile time reported on its own), run `burn_in` times, then
timed over `num_batches` calls with `block_until_ready` around every call; the images are made
on the device once, so no host transfer is timed. Modes:
- forward: eval-mode logits;
- forward_backward: gradients of the L2 loss `sum(logits**2) / 2` (`tf.nn.l2_loss`) with respect
  to every parameter, in train mode (dropout, batch statistics), as the articles do;
- train_step: a full optimiser step, `jaxcnn.train.train_step`; with `pack=K`, one step of K
  members packed as one program (`jaxcnn.packing.train_step`), each on its own batch.
"""
from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn import optim, packing, programs, train
from jaxcnn.cpu.policy import Compute
from jaxcnn.config import DataConfig, OptimConfig, TrainConfig
from jaxcnn.models.summary import analytic_macs

MODES = ("forward", "forward_backward", "train_step")
BACKWARD_COST = 3   # model FLOPs of forward + backward = 3 × forward (the backward is two matmuls)

# Dense peak FLOP/s per device for the matmul units XLA uses: bfloat16, and float32, which XLA
# runs as TF32 on these GPUs by default. Matched on `device_kind`, most specific first.
PEAK_FLOPS = (
    ("H100 PCIe", {"bfloat16": 756e12, "float32": 378e12}),
    ("H100", {"bfloat16": 989e12, "float32": 494e12}),
    ("H200", {"bfloat16": 989e12, "float32": 494e12}),
    ("A100", {"bfloat16": 312e12, "float32": 156e12}),
)


@dataclasses.dataclass(frozen=True)
class Timing:
    """One mode's result. FLOPs are per image: `model_flops` from the analytic conv/dense count
    (2 × MACs, × 3 with the backward), `xla_flops` from XLA's cost analysis of the compiled step."""
    mode: str
    batch_size: int               # of one member
    compile_s: float
    mean_s: float
    std_s: float
    num_batches: int
    model_flops: float
    xla_flops: float | None
    peak_flops: float | None
    pack: int = 1                 # members trained as one program (train_step only)

    @property
    def images_per_s(self) -> float:
        """Of all members together."""
        return self.pack * self.batch_size / self.mean_s

    @property
    def member_images_per_s(self) -> float:
        return self.batch_size / self.mean_s

    @property
    def tflops(self) -> float:
        """Achieved model TFLOP/s."""
        return self.model_flops * self.images_per_s / 1e12

    @property
    def mfu(self) -> float | None:
        return None if self.peak_flops is None else self.tflops * 1e12 / self.peak_flops

    def as_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "images_per_s": self.images_per_s,
                "member_images_per_s": self.member_images_per_s, "tflops": self.tflops,
                "mfu": self.mfu}


def peak_flops(device: jax.Device, dtype) -> float | None:
    """The device's dense peak FLOP/s for `dtype`, or None where unknown (CPUs)."""
    for kind, peaks in PEAK_FLOPS:
        if kind in device.device_kind:
            return peaks.get(jnp.dtype(dtype).name)
    return None


def l2_loss(logits: jax.Array) -> jax.Array:
    """`tf.nn.l2_loss`: the articles' objective for the forward-backward timing."""
    return 0.5 * jnp.sum(jnp.square(logits.astype(jnp.float32)))


def forward(model: nn.Module) -> Callable:
    """(variables, images) -> eval-mode logits."""
    return lambda variables, images: model.apply(variables, images)


def forward_backward(model: nn.Module) -> Callable:
    """(variables, images) -> gradients of `l2_loss` with respect to every parameter (train mode)."""

    def grads(variables, images):
        def loss(params):
            logits, _ = model.apply({**variables, "params": params}, images, train=True,
                                    rngs={"dropout": jax.random.key(0)}, mutable=["batch_stats"])
            return l2_loss(logits)

        return jax.grad(loss)(variables["params"])

    return grads


def time_calls(*calls: Callable[[], Any], burn_in: int, num_batches: int) -> list[np.ndarray]:
    """Seconds of each of `num_batches` runs of every blocking `call`, after `burn_in` untimed runs.

    Several calls are interleaved (a, b, a, b, ...), so that all see the same machine load.
    """
    durations = [[] for _ in calls]
    for i in range(burn_in + num_batches):
        for call, seconds in zip(calls, durations):
            start = time.perf_counter()
            call()
            if i >= burn_in:
                seconds.append(time.perf_counter() - start)
    return [np.asarray(seconds) for seconds in durations]


def compile_step(fn: Callable, args: tuple, compute: Compute = Compute(),
                 donate_argnums: tuple[int, ...] = ()) -> tuple[Callable, float, float | None]:
    """`fn` jitted under `compute` (`jaxcnn.programs.jit`) and compiled for `args`: (compiled,
    trace+lower+compile seconds, XLA FLOPs). donate_argnums: as `jax.jit`'s (the trainer donates
    the train state)."""
    start = time.perf_counter()
    compiled = programs.jit(fn, compute, donate_argnums=donate_argnums).lower(*args).compile()
    seconds = time.perf_counter() - start
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):     # older jaxlibs: one dict per computation
        cost = cost[0] if cost else None
    flops = (cost or {}).get("flops")
    return compiled, seconds, flops if flops and flops > 0 else None


def train_step_and_args(model: nn.Module, images: jax.Array, seed: int = 0, pack: int = 1
                        ) -> tuple[Callable, tuple]:
    """`jaxcnn.train.train_step` with its (state, batch) arguments: SGD with momentum 0.9 at a
    constant learning rate (the `OptimConfig` defaults), random labels. pack=K: images
    [K, B, ...] and `jaxcnn.packing.train_step` of K members (seeds seed..seed+K-1) with its
    (states, batches, hyperparameters, alive) arguments."""
    cfg = OptimConfig()
    batch_shape = images.shape[:2] if pack > 1 else images.shape[:1]   # ([K,] B)
    batch_size, image_shape = batch_shape[-1], images.shape[len(batch_shape):]
    schedule = optim.learning_rate_schedule(cfg, steps_per_epoch=1, global_batch=batch_size,
                                            total_steps=1)
    tx = optim.create_optimizer(cfg, schedule, steps_per_epoch=1)
    state_key, label_key = jax.random.split(jax.random.key(seed))
    labels = jax.random.randint(label_key, batch_shape, 0, model.num_classes)
    init = functools.partial(train.create_train_state, model=model, input_shape=image_shape,
                             tx=tx, lr_fn=schedule)
    if pack == 1:
        return train.train_step, (init(state_key), {"image": images, "label": labels})
    train_cfg = TrainConfig(optim=cfg, data=DataConfig(batch_size=batch_size))
    state = jax.jit(jax.vmap(init))(jax.random.split(state_key, pack))
    values = packing.hyperparameter_values([train_cfg] * pack)
    return (functools.partial(packing.train_step, cfg=train_cfg, steps_per_epoch=1, total_steps=1),
            (state, {"image": images, "label": labels}, values, jnp.ones(pack, bool)))


@dataclasses.dataclass(frozen=True)
class CompiledMode:
    """One mode of a model compiled for its inputs: `call()` runs one batch and blocks."""
    mode: str
    batch_size: int
    call: Callable[[], None]
    compile_s: float
    model_flops: float
    xla_flops: float | None
    peak_flops: float | None
    pack: int = 1

    def timing(self, seconds: np.ndarray) -> Timing:
        return Timing(mode=self.mode, batch_size=self.batch_size, compile_s=self.compile_s,
                      mean_s=float(seconds.mean()), std_s=float(seconds.std()),
                      num_batches=len(seconds), model_flops=self.model_flops,
                      xla_flops=self.xla_flops, peak_flops=self.peak_flops, pack=self.pack)


def compile_mode(model: nn.Module, image_shape: tuple[int, int, int], batch_size: int, mode: str,
                 seed: int = 0, input_dtype=jnp.float32, compute: Compute = Compute(),
                 pack: int = 1) -> CompiledMode:
    """`mode` of `model` compiled under `compute` for random (batch_size, *image_shape) images made
    on the device; pack=K: K packed members' train step, each member on its own batch."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; valid: {', '.join(MODES)}")
    if pack > 1 and mode != "train_step":
        raise ValueError(f"packed members are timed in mode train_step only, not {mode}")
    image_key, init_key = jax.random.split(jax.random.key(seed))
    members = (pack,) if pack > 1 else ()
    images = jax.jit(lambda k: 0.1 * jax.random.normal(k, (*members, batch_size, *image_shape),
                                                       input_dtype))(image_key)
    if mode == "train_step":
        fn, args = train_step_and_args(model, images, seed, pack)
    else:
        variables = programs.jit(model.init, compute)(init_key, images[:1])
        fn, args = (forward if mode == "forward" else forward_backward)(model), (variables, images)
    donate = (0,) if mode == "train_step" else ()      # the state, as the trainer does
    compiled, compile_s, xla_flops = compile_step(fn, args, compute, donate)

    def call():
        nonlocal args
        out = jax.block_until_ready(compiled(*args))
        if mode == "train_step":       # the next step starts from the new state
            args = (out[0], *args[1:])

    macs = analytic_macs(model, image_shape)
    return CompiledMode(
        mode=mode, batch_size=batch_size, call=call, compile_s=compile_s,
        model_flops=2 * macs * (1 if mode == "forward" else BACKWARD_COST),
        xla_flops=None if xla_flops is None else xla_flops / (batch_size * pack),
        peak_flops=peak_flops(images.devices().pop(), getattr(model, "dtype", jnp.float32)),
        pack=pack)


def run(model: nn.Module, image_shape: tuple[int, int, int], batch_size: int,
        modes=("forward", "forward_backward"), burn_in: int = 10, num_batches: int = 100,
        seed: int = 0, input_dtype=jnp.float32, compute: Compute = Compute()) -> list[Timing]:
    """Times `modes` of `model` on random (batch_size, *image_shape) images, compiled under
    `compute`, one `Timing` each."""
    results = []
    for mode in modes:
        compiled = compile_mode(model, image_shape, batch_size, mode, seed, input_dtype, compute)
        seconds, = time_calls(compiled.call, burn_in=burn_in, num_batches=num_batches)
        results.append(compiled.timing(seconds))
    return results
