"""How fast the input pipeline feeds a device, per loader and augmentation, and how many host
cores one device needs for a model.

    python -m experiments.pipeline_benchmark --dataset=folder:PATH | TFDS_NAME [--data_dir=DIR] \\
        [--image_size=224] [--augments=scale_jitter,random_resized_crop] [--eval] \\
        [--loaders=tf,resident,dali] [--feed=vgg16] [--dtype=bfloat16] \\
        [--batch_size=64] [--timed_batches=30] [--json]

For each loader and augmentation: training batches of `--image_size` delivered to the devices
(`jaxcnn.data.train_batches`, each batch waited for) in images/s, and per host core (the cores this
process may run on). With --eval, the evaluation views too (`eval_batches`). For each model fed, its
train step's rate on one device (`jaxcnn.benchmark`'s `train_step`, random images) and the host
cores one device needs to be fed by each pipeline: step images/s over the pipeline's images/s per
core.

Loaders: `tf` (tf.data on the host: decode, augment, batch; then transferred), `resident` (the
split decoded once into device memory, augmented there; the one-off load is reported separately)
and `dali` (NVIDIA DALI). Nothing else runs while it measures, so close other work first: the
1-minute load before and after is printed.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Iterator

import jax
import jax.numpy as jnp
from absl import app, flags

from experiments import cli, machine, train_flags  # noqa: F401  (train_flags: data flags, --dtype)
from jaxcnn import benchmark, data, models, parallel
from jaxcnn.config import DataConfig

LOADERS = ("tf", "resident", "dali")
DEFAULT_IMAGE_SIZE = 224
flags.DEFINE_list("augments", ["scale_jitter", "random_resized_crop"],
                  f"training augmentations to time ({', '.join(data.AUGMENTS)})")
flags.DEFINE_bool("eval", False, "also time the evaluation views")
flags.DEFINE_list("loaders", ["tf"], f"loaders to time ({', '.join(LOADERS)})")
flags.DEFINE_list("feed", [], "models whose train step rate is measured at --image_size, and the "
                  "host cores that feed one device at that rate")
flags.DEFINE_integer("timed_batches", 30, "timed batches per pipeline", lower_bound=1)
flags.DEFINE_integer("timed_steps", 5, "timed train steps per model", lower_bound=1)
flags.DEFINE_integer("untimed_batches", 3, "untimed batches first (compilation, buffers "
                     "filling)", lower_bound=0)
flags.DEFINE_bool("json", False, "print one JSON object instead of the tables")
FLAGS = flags.FLAGS


def images_per_second(batches: Iterator, num_batches: int, batch_size: int) -> float:
    """Rate of up to `num_batches` batches after --untimed_batches untimed ones, each waited
    for."""
    for _ in range(FLAGS.untimed_batches):
        jax.block_until_ready(next(batches))
    start, timed = time.perf_counter(), 0
    for batch in batches:
        jax.block_until_ready(batch)
        timed += 1
        if timed == num_batches:
            break
    if timed == 0:
        raise ValueError(f"the split has no batch of {batch_size} after --untimed_batches={FLAGS.untimed_batches}")
    return timed * batch_size / (time.perf_counter() - start)


def pipelines(base: DataConfig) -> Iterator[tuple[str, str, DataConfig]]:
    """(loader, view, config) for every loader and augmentation asked for; view "eval" for the
    evaluation views of the first augmentation (their geometry follows it)."""
    for loader in FLAGS.loaders:
        loaded = dataclasses.replace(base, device_resident=loader == "resident")
        if loader == "dali":
            loaded = dataclasses.replace(loaded, loader="dali")
        for augment in FLAGS.augments:
            yield loader, augment, dataclasses.replace(loaded, augment=augment)
        if FLAGS.eval:
            yield loader, "eval", dataclasses.replace(loaded, augment=FLAGS.augments[0])


def measure_pipelines(base: DataConfig) -> list[dict]:
    sharding = parallel.batch_sharding(parallel.data_mesh())
    parallel.check_batch_size(base.batch_size, sharding.mesh)
    rows = []
    for loader, view, cfg in pipelines(base):
        row = {"loader": loader, "view": view}
        start = time.perf_counter()
        if view == "eval":
            batches = data.eval_batches(cfg, sharding)
        else:
            batches = data.train_batches(cfg, sharding)
        if loader == "resident":     # the split's one-off load, then the batches
            jax.block_until_ready(next(batches))
            row["load_s"] = time.perf_counter() - start
        row["images_per_s"] = images_per_second(batches, FLAGS.timed_batches, cfg.batch_size)
        row["per_core"] = row["images_per_s"] / machine.usable_cores()
        rows.append(row)
    return rows


def measure_models(base: DataConfig, num_classes: int) -> dict[str, float]:
    """Train-step images/s of each model on one device at the batches' shape."""
    dtype = jnp.dtype(FLAGS.dtype)
    shape = (base.image_size, base.image_size, base.channels)
    rates = {}
    for name in FLAGS.feed:
        step = benchmark.compile_mode(models.create(name, num_classes=num_classes, dtype=dtype),
                                      shape, base.batch_size, "train_step", input_dtype=dtype)
        seconds, = benchmark.time_calls(step.call, burn_in=1, num_batches=FLAGS.timed_steps)
        rates[name] = step.timing(seconds).images_per_s
    return rates


def cores_needed(rows: list[dict], steps: dict[str, float]) -> dict[str, dict[str, float]]:
    """{model: {"loader view": host cores that feed one device at the model's step rate}}."""
    return {name: {f"{r['loader']} {r['view']}": rate / r["per_core"] for r in rows}
            for name, rate in steps.items()}


def report(rows: list[dict], steps: dict[str, float], base: DataConfig,
           load: tuple[float, float]) -> None:
    """The pipelines' table, then each model's step rate and the host cores per device it needs."""
    needed = cores_needed(rows, steps)
    if FLAGS.json:
        print(json.dumps({"dataset": base.dataset, "image_size": base.image_size,
                          "batch_size": base.batch_size, "device": jax.devices()[0].device_kind,
                          "devices": jax.device_count(), "host_cores": machine.usable_cores(),
                          "load_before_after": load, "pipelines": rows, "dtype": FLAGS.dtype,
                          "train_step_images_per_s": steps, "host_cores_per_device": needed}))
        return
    print(f"{base.dataset}, {base.image_size}x{base.image_size}, batch {base.batch_size}, "
          f"{jax.device_count()} {jax.devices()[0].device_kind} device(s), {machine.usable_cores()} host "
          f"cores, 1-minute load {load[0]:.1f} before / {load[1]:.1f} after\n")
    print("| loader | view | images/s | per host core |\n|---|---|---:|---:|")
    for row in rows:
        load_note = f" (after a {row['load_s']:.1f} s load)" if "load_s" in row else ""
        print(f"| {row['loader']} | {row['view']}{load_note} | {row['images_per_s']:,.0f} | "
              f"{row['per_core']:,.0f} |")
    for name, rate in steps.items():
        cores = ", ".join(f"{pipeline} {n:.1f}" for pipeline, n in needed[name].items())
        print(f"\n{name} train step ({FLAGS.dtype}): {rate:,.0f} images/s per device; host cores "
              f"one device needs: {cores}")


def main(argv):
    cli.check_no_arguments(argv)
    cli.quiet()
    with cli.user_errors():
        unknown = sorted(set(FLAGS.loaders) - set(LOADERS))
        if unknown or not FLAGS.loaders:
            raise ValueError(f"--loaders: unknown {', '.join(unknown) or 'empty list'}; valid: "
                             f"{', '.join(LOADERS)}")
        unknown = sorted(set(FLAGS.augments) - set(data.AUGMENTS))
        if unknown or not FLAGS.augments:
            raise ValueError(f"--augments: unknown {', '.join(unknown) or 'empty list'}; valid: "
                             f"{', '.join(data.AUGMENTS)}")
        base = DataConfig(dataset=FLAGS.dataset, data_dir=FLAGS.data_dir, cache_dir=FLAGS.cache_dir,
                          image_size=FLAGS.image_size or DEFAULT_IMAGE_SIZE,
                          channels=FLAGS.channels or 3, batch_size=FLAGS.batch_size,
                          eval_batch_size=FLAGS.batch_size, seed=FLAGS.seed)
        num_classes = data.dataset_info(base).num_classes
        load = os.getloadavg()[0]
        rows = measure_pipelines(base)
        steps = measure_models(base, num_classes)
        report(rows, steps, base, (load, os.getloadavg()[0]))


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_flags)
