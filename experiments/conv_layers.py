"""Per-convolution timing: every distinct conv shape of a model, XLA's conv vs im2col vs oneDNN vs
PyTorch.

    python -m experiments.conv_layers [--layers_of=vgg16:224:4,vgg_cifar:32:64]
        [--num_batches=5 --burn_in=2] [--notorch]

Prints a markdown table: ms per call, forward and forward-backward (gradients of the input and
the kernel; torch: forward + backward), for the jitted `lax.conv_general_dilated`, the im2col and
oneDNN forms of `jaxcnn.cpu.conv` (oneDNN where it is built), the form its "auto" choice
picks (named in its own column) and a channels_last `torch.nn.Conv2d` without bias, timed
alternately call by call so that all see the same load (each call also inherits the spinning
threads of the one before it: compare rows within a column); then the machine and the load
average around each row (`experiments.machine`).
"""
from __future__ import annotations

import os
import sys
from typing import Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from jax import lax

from experiments import cli, machine, timing_flags
from jaxcnn import benchmark, models
from jaxcnn.cpu import conv, onednn, policy, xla_options
from jaxcnn.models import summary

flags.DEFINE_list("layers_of", ["vgg16:224:4", "vgg_cifar:32:64"],
                  "model:image_size:batch_size, whose distinct conv shapes are timed")
FLAGS = flags.FLAGS
FLAGS.set_default("num_batches", 5)
FLAGS.set_default("burn_in", 2)

NHWC = ("NHWC", "HWIO", "NHWC")


class ConvShape(NamedTuple):
    """One convolution as a model calls it (NHWC input, HWIO kernel)."""
    input_shape: tuple[int, int, int, int]
    kernel: tuple[int, int]
    features: int
    strides: tuple[int, int]
    padding: tuple[tuple[int, int], tuple[int, int]]


def conv_shapes(model: nn.Module, image_shape: tuple[int, int, int], batch_size: int
                ) -> dict[ConvShape, int]:
    """The model's distinct ungrouped conv shapes, in call order, with how often each occurs."""
    shapes: dict[ConvShape, int] = {}
    for module, in_shape, out_shape in summary.layer_calls(model, image_shape, batch_size):
        if not isinstance(module, nn.Conv) or module.feature_group_count != 1:
            continue
        strides = module.strides or 1
        strides = (strides,) * 2 if isinstance(strides, int) else tuple(strides)
        padding = module.padding
        if isinstance(padding, str):
            padding = lax.padtype_to_pads(in_shape[1:3], module.kernel_size, strides, padding)
        shape = ConvShape(tuple(in_shape), tuple(module.kernel_size), out_shape[-1], strides,
                          tuple(tuple(p) for p in padding))
        shapes[shape] = shapes.get(shape, 0) + 1
    return shapes


def jax_calls(shape: ConvShape, conv: Callable) -> tuple[Callable, Callable]:
    """Blocking (forward, forward-backward) calls of `conv` on random data of `shape`, compiled
    ahead (compilation is never timed)."""
    kx, kw, kc = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(kx, shape.input_shape)
    w = jax.random.normal(kw, (*shape.kernel, shape.input_shape[-1], shape.features))
    f = lambda x, w: conv(x, w, shape.strides, shape.padding, dimension_numbers=NHWC)
    cotangent = jax.random.normal(kc, jax.eval_shape(f, x, w).shape)
    g = jax.grad(lambda x, w: jnp.vdot(f(x, w), cotangent), (0, 1))
    forward, grads = (benchmark.compile_step(fn, (x, w))[0] for fn in (f, g))
    return (lambda: jax.block_until_ready(forward(x, w)),
            lambda: jax.block_until_ready(grads(x, w)))


def torch_calls(shape: ConvShape) -> tuple[Callable, Callable]:
    """Blocking (forward, forward + backward) calls of a channels_last torch Conv2d of `shape`."""
    import torch  # noqa: PLC0415  (torch is optional)

    n, h, w, c = shape.input_shape
    (top, bottom), (left, right) = shape.padding
    if top != bottom or left != right:
        raise ValueError(f"torch's Conv2d pads symmetrically, not {shape.padding}")
    conv = torch.nn.Conv2d(c, shape.features, shape.kernel, shape.strides, (top, left),
                           bias=False).to(memory_format=torch.channels_last)
    x = torch.randn(n, c, h, w).to(memory_format=torch.channels_last).requires_grad_()
    cotangent = torch.randn_like(conv(x))

    def forward():
        with torch.inference_mode():
            conv(x)

    def forward_backward():
        torch.autograd.grad(conv(x), (x, conv.weight), cotangent)

    return forward, forward_backward


def time_shape(shape: ConvShape, burn_in: int, num_batches: int, with_torch: bool) -> dict:
    """Median ms of forward and forward-backward per formulation, and the load around them."""
    impls = {"xla": jax_calls(shape, lax.conv_general_dilated),
             "im2col": jax_calls(shape, conv.im2col_conv_general_dilated)}
    if onednn.available():
        impls["onednn"] = jax_calls(shape, conv.onednn_conv_general_dilated)
    impls["auto"] = jax_calls(shape, policy.conv_general_dilated)
    if with_torch:
        impls["torch"] = torch_calls(shape)
    load_before, others = os.getloadavg(), machine.OtherProcesses().start()
    row = {}
    for i, mode in enumerate(("forward", "forward_backward")):
        seconds = benchmark.time_calls(*(calls[i] for calls in impls.values()), burn_in=burn_in,
                                       num_batches=num_batches)
        row.update({(impl, mode): 1e3 * float(np.median(s)) for impl, s in zip(impls, seconds)})
    choice = conv.auto_choice(shape.input_shape, (*shape.kernel, shape.input_shape[-1],
                                                  shape.features), shape.strides,
                              shape.padding, NHWC)
    load = machine.load_check(load_before, os.getloadavg(), os.cpu_count(), others.stop())
    return {"ms": row, "auto_choice": choice, **load}


def markdown(rows: list[tuple[str, ConvShape, int, dict]]) -> str:
    """The table: one line per (model, conv shape), ms forward / forward-backward per impl."""
    impls = list(dict.fromkeys(impl for *_, result in rows for impl, _ in result["ms"]))
    columns = " | ".join(f"{impl} fwd / fwd-bwd ms" for impl in impls)
    lines = [f"| model | input N×H×W×C | kernel, stride | out | × | {columns} "
             "| auto picks | load before → after |",
             "|---|---|---|--:|--:|" + "--:|" * len(impls) + "---|---|"]
    for model, shape, count, result in rows:
        ms = result["ms"]
        times = " | ".join(f"{ms[impl, 'forward']:.2f} / {ms[impl, 'forward_backward']:.2f}"
                           for impl in impls)
        mark = "" if result["reliable"] else " (unreliable)"
        lines.append(f"| {model} | {'×'.join(map(str, shape.input_shape))} | "
                     f"{'×'.join(map(str, shape.kernel))}/{shape.strides[0]} | {shape.features} | "
                     f"{count} | {times} | {result['auto_choice']} | "
                     f"{result['load_before'][0]:.2f} → "
                     f"{result['load_after'][0]:.2f}{mark} |")
    return "\n".join(lines)


def main(argv):
    cli.check_no_arguments(argv)
    cli.quiet()
    timing_flags.check_torch()
    with cli.user_errors():
        rows = []
        for spec in FLAGS.layers_of:
            try:
                name, size, batch = spec.split(":")
                size, batch = int(size), int(batch)
            except ValueError:
                raise ValueError(f"--layers_of takes model:image_size:batch_size, not "
                                 f"{spec!r}") from None
            model = models.create(name)
            image_shape = (size, size, models.input_shape(name)[-1])
            for shape, count in conv_shapes(model, image_shape, batch).items():
                result = time_shape(shape, FLAGS.burn_in, FLAGS.num_batches, FLAGS.torch)
                rows.append((name, shape, count, result))
                if not result["reliable"]:
                    print(f"{name} {shape.input_shape}: "
                          f"{machine.load_warning(result, 'this timing')}", file=sys.stderr)
        torch_threads = None
        if FLAGS.torch:
            import torch  # noqa: PLC0415
            torch_threads = torch.get_num_threads()
        host = machine.record(torch_threads)
        print(f"{machine.describe(host, xla_options.compiler_options())}; "
              f"torch threads {host['torch_threads']}; "
              f"median of {FLAGS.num_batches} after {FLAGS.burn_in} burn-in\n")
        print(markdown(rows))


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_flags)
