"""The articles' benchmark for any zoo model, side by side with PyTorch when it is installed.

    python -m experiments.benchmark --model=alexnet --batch_size=32 --image_size=224 \\
        --num_batches=100 --burn_in=10 [--dtype=bfloat16] [--modes=forward,forward_backward]
        [--pack=2,4,8] [--json] [--notorch] [--norm=batch --factorize=all --conv_impl=xla ...]

Prints, per mode, seconds per batch (mean ± sd over the timed batches), images/s, compile time,
FLOPs per image (analytic and XLA's), TFLOP/s and MFU; with torch, the same mode of the plain
PyTorch twin (`experiments.torch_reference`) is timed too, batch for batch in alternation with
jaxcnn so that both see the same machine load, and the ratio jaxcnn / torch is printed. Every
figure comes with the CPU, both frameworks' threads, XLA's flags and compiler options, whether
freed host memory is kept (`jaxcnn.cpu.host_memory`, as the training job does for large images; torch
shares it, being in the same process) and the load average before and after each mode; a ratio
taken under load is marked unreliable (`experiments.machine`).
"""
from __future__ import annotations

import functools
import json
import os
import sys
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
from absl import app, flags

from experiments import cli, machine, model_flags, timing_flags
from jaxcnn import benchmark, models
from jaxcnn.cpu import host_memory, record, xla_options
from jaxcnn.models import summary

flags.DEFINE_integer("num_classes", 1000, "classifier outputs", lower_bound=1)
flags.DEFINE_integer("batch_size", 32, "images per batch", lower_bound=1)
flags.DEFINE_integer("image_size", None, "square input side; default: the model's design size",
                     lower_bound=1)
flags.DEFINE_bool("json", False, "print one JSON object instead of the table")
flags.DEFINE_integer("seed", 0, "seed of the images and parameters")
flags.DEFINE_list("pack", ["1"], "K[,K...]: also time the train step of K members packed as one "
                  "program (jaxcnn.packing), each on its own batch of --batch_size; images/s are "
                  "of all members together, 'member' of one")
FLAGS = flags.FLAGS
FLAGS.set_default("model", "alexnet")


class TorchTwin(NamedTuple):
    params: int
    threads: int          # torch.get_num_threads()
    device: str           # "cpu" or "cuda"
    make_step: Callable   # (image_shape=, mode=) -> one blocking call of that mode


def torch_device() -> str | None:
    """Where the twin runs: on the CPU beside XLA:CPU, on CUDA beside XLA:GPU, else nowhere."""
    import torch  # noqa: PLC0415

    backend = jax.default_backend()
    if backend == "cpu":
        return "cpu"
    return "cuda" if backend == "gpu" and torch.cuda.is_available() else None


def torch_twin(name: str, image_shape: tuple[int, int, int]) -> TorchTwin | None:
    """The plain-PyTorch model of `name`, or None when there is none (or when model options it
    does not reproduce are set)."""
    from experiments import torch_reference  # noqa: PLC0415  (torch is optional)
    import torch  # noqa: PLC0415

    options = [o for o in model_flags.model_options() if o != "dtype"]
    device = torch_device()
    if device is None:
        print(f"no PyTorch device beside JAX's {jax.default_backend()}; timing jaxcnn only")
        return None
    if name not in torch_reference.BUILDERS or options:
        print(f"no PyTorch twin of {name} with {', '.join(options) or 'these options'}; "
              "timing jaxcnn only")
        return None
    torch.manual_seed(FLAGS.seed)
    model = torch_reference.create(name, FLAGS.num_classes, image_shape)
    return TorchTwin(torch_reference.num_params(model), torch.get_num_threads(), device,
                     functools.partial(torch_reference.make_step, model, FLAGS.num_classes,
                                       batch_size=FLAGS.batch_size,
                                       dtype=getattr(torch, FLAGS.dtype), device=device))


def table(header: str, rows: list[dict]) -> str:
    lines = [header, f"{'mode':<17}{'impl':<8}{'compile s':>10}{'s/batch mean ± sd':>24}"
                     f"{'images/s':>11}{'TFLOP/s':>9}{'MFU':>7}{'member img/s':>14}"]
    for row in rows:
        mfu = "-" if row.get("mfu") is None else f"{100 * row['mfu']:.1f}%"
        compile_s = "-" if row.get("compile_s") is None else f"{row['compile_s']:.1f}"
        tflops = "-" if row.get("tflops") is None else f"{row['tflops']:.3f}"
        mode = row["mode"] + (f" K={row['pack']}" if row.get("pack", 1) > 1 else "")
        lines.append(f"{mode:<17}{row['impl']:<8}{compile_s:>10}"
                     f"{row['mean_s']:>13.4f} ± {row['std_s']:<8.4f}{row['images_per_s']:>11.1f}"
                     f"{tflops:>9}{mfu:>7}{row['member_images_per_s']:>14.1f}")
        if row["impl"] == "torch":
            mark = "" if row["reliable"] else " UNRELIABLE (machine under load)"
            lines.append(f"{'':<17}jaxcnn / torch = {row['ratio']:.2f}x{mark}, load average "
                         f"{row['load_before'][0]:.2f} before, {row['load_after'][0]:.2f} after")
    return "\n".join(lines)


def main(argv):
    cli.check_no_arguments(argv)
    cli.quiet()
    timing_flags.check_torch()
    with cli.user_errors():
        run()


def run():
    options, compute = model_flags.model_options(), model_flags.compute()
    dtype = jnp.dtype(FLAGS.dtype)
    model = models.create(FLAGS.model, FLAGS.num_classes, **{**options, "dtype": dtype})
    h, w, c = models.input_shape(FLAGS.model)
    image_shape = (h, w, c) if FLAGS.image_size is None else (FLAGS.image_size,) * 2 + (c,)
    if compute.cpu_kernels != "off":                       # as the training job does
        host_memory.reuse_freed_memory_for(image_shape[0])
    twin = torch_twin(FLAGS.model, image_shape) if FLAGS.torch else None
    rows = []
    packs = [int(k) for k in FLAGS.pack]
    if any(k < 1 for k in packs):
        raise ValueError(f"--pack takes positive member counts, got {','.join(FLAGS.pack)}")
    for mode, pack in [(m, 1) for m in FLAGS.modes] + [("train_step", k) for k in packs if k > 1]:
        compiled = benchmark.compile_mode(model, image_shape, FLAGS.batch_size, mode, FLAGS.seed,
                                          input_dtype=dtype, compute=compute, pack=pack)
        twin_step = twin and pack == 1 and twin.make_step(image_shape=image_shape, mode=mode)
        calls = [compiled.call] + ([twin_step] if twin_step else [])
        load_before, others = os.getloadavg(), machine.OtherProcesses().start()
        seconds = benchmark.time_calls(*calls, burn_in=FLAGS.burn_in, num_batches=FLAGS.num_batches)
        load = machine.load_check(load_before, os.getloadavg(), os.cpu_count(), others.stop())
        timing = compiled.timing(seconds[0])
        rows.append({**timing.as_dict(), "impl": "jaxcnn", **load})
        if twin_step:
            torch_timing = compiled.timing(seconds[1])
            rows.append({**torch_timing.as_dict(), "impl": "torch", "compile_s": None,
                         "xla_flops": None, "ratio": timing.mean_s / torch_timing.mean_s, **load})
            if not load["reliable"]:
                print(f"{mode}: {machine.load_warning(load)}", file=sys.stderr)
    params = summary.parameter_count(model, image_shape)
    forward_flops = summary.flops_per_image(model, image_shape)
    config = {"model": FLAGS.model, "num_classes": FLAGS.num_classes, "options": options,
              "image_shape": image_shape,
              "batch_size": FLAGS.batch_size, "dtype": FLAGS.dtype,
              "num_batches": FLAGS.num_batches, "burn_in": FLAGS.burn_in,
              "device": jax.devices()[0].device_kind,
              "machine": machine.record(twin and twin.threads),
              "compiler_options": xla_options.compiler_options(compute), "params": params,
              "torch_params": twin and twin.params, "torch_device": twin and twin.device,
              "forward_flops_per_image": forward_flops,
              "kernels": record.record(model, image_shape, compute)}
    if FLAGS.json:
        print(json.dumps({"config": config, "results": rows}))
        return
    xla = ", ".join(f"{r['mode']} {r['xla_flops'] / 1e9:.3f}" for r in rows
                    if r["impl"] == "jaxcnn" and r["xla_flops"])
    host = config["machine"]
    print(table(
        f"{FLAGS.model} {options or ''} {'x'.join(map(str, image_shape))}, {compute}, batch "
        f"{FLAGS.batch_size}, {FLAGS.dtype}, {config['device']}, "
        f"{FLAGS.num_batches} batches after {FLAGS.burn_in} burn-in\n"
        f"{machine.describe(host, config['compiler_options'])}"
        + (f"; torch on {twin.device}, {host['torch_threads']} threads" if twin else "") + "\n"
        f"params {params:,}" + (f" (torch {twin.params:,})" if twin else "") +
        f"; forward {forward_flops / 2e9:.3f} GMACs = {forward_flops / 1e9:.3f} GFLOP/image "
        f"(analytic); XLA cost analysis GFLOP/image: {xla or 'n/a'}", rows))


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_flags)
