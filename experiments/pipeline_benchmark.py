"""Input-pipeline throughput on the real CIFAR-10 JPEG folder, next to the rate a model step
consumes images.

    python -m experiments.pipeline_benchmark [--cifar10_dir=DIR | --cifar10_tar=FILE] \\
        [--batch_size=256] [--num_batches=40] [--models=convnet_cifar,vgg_cifar] [--json]

Images/s of
  tf.data host      the folder pipeline alone: read + decode JPEG, pad-4 crop + flip, uint8 batches;
  tf.data → device  jaxcnn.data.train_batches: the above, transferred and normalised on device;
  device-resident   train_batches with device_resident=True: gather + crop + flip + normalise in one
                    jitted op per batch (after a one-off load of the split, reported separately);
  <model> train step  `jaxcnn.benchmark`'s train_step mode: one jaxcnn.train.train_step (SGD with
                    momentum) of the model at its design input size.
Without --cifar10_dir the archive is extracted to a temporary directory (in /dev/shm if present).
"""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterator

import jax
from absl import app, flags
from jax.sharding import NamedSharding

from experiments import cli
from jaxcnn import benchmark, data, models, parallel
from jaxcnn.config import DataConfig
from jaxcnn.data import tf_host
from jaxcnn.data.sources import Host

_TAR = Path(__file__).resolve().parents[1].parent / "shared/data/cifar10_jpg.tar.gz"
flags.DEFINE_string("cifar10_dir", None, "extracted CIFAR-10 folder (train/<class>, test/<class>)")
flags.DEFINE_string("cifar10_tar", str(_TAR), "archive to extract when --cifar10_dir is not set")
flags.DEFINE_integer("batch_size", 256, "global batch size", lower_bound=1)
flags.DEFINE_integer("num_batches", 40, "timed batches per pipeline", lower_bound=1)
flags.DEFINE_integer("model_batches", 5, "timed steps per model", lower_bound=1)
flags.DEFINE_integer("burn_in", 3, "untimed batches first (compilation, buffers filling)",
                     lower_bound=0)
flags.DEFINE_list("models", ["convnet_cifar", "vgg_cifar"], "models whose step rate is measured")
flags.DEFINE_bool("json", False, "print one JSON object instead of the table")
FLAGS = flags.FLAGS


def images_per_second(batches: Iterator, num_batches: int, batch_size: int) -> float:
    """Rate of `num_batches` batches after FLAGS.burn_in untimed ones, each waited for."""
    for _ in range(FLAGS.burn_in):
        jax.block_until_ready(next(batches))
    start = time.perf_counter()
    for _ in range(num_batches):
        jax.block_until_ready(next(batches))
    return num_batches * batch_size / (time.perf_counter() - start)


def measure(cfg: DataConfig, sharding: NamedSharding) -> dict[str, float]:
    rates = {"tf.data host": images_per_second(tf_host.host_train_batches(
        cfg, Host(), cfg.batch_size), FLAGS.num_batches, cfg.batch_size)}
    rates["tf.data → device"] = images_per_second(data.train_batches(cfg, sharding),
                                                  FLAGS.num_batches, cfg.batch_size)
    start = time.perf_counter()
    resident = data.train_batches(dataclasses.replace(cfg, device_resident=True), sharding)
    jax.block_until_ready(next(resident))
    rates["device-resident: load + first batch (s)"] = time.perf_counter() - start
    rates["device-resident"] = images_per_second(resident, 10 * FLAGS.num_batches, cfg.batch_size)
    for name in FLAGS.models:
        step = benchmark.compile_mode(models.create(name, num_classes=10), models.input_shape(name),
                                      cfg.batch_size, "train_step")
        seconds, = benchmark.time_calls(step.call, burn_in=1, num_batches=FLAGS.model_batches)
        rates[f"{name} train step"] = step.timing(seconds).images_per_s
    return rates


def report(rates: dict[str, float], cfg: DataConfig, load: tuple[float, float]) -> None:
    """Prints the rates with the 1-minute load averages before / after (other processes count)."""
    if FLAGS.json:
        print(json.dumps({"batch_size": cfg.batch_size, "devices": jax.device_count(),
                          "cpus": os.cpu_count(), "load_before_after": load, **rates}))
        return
    print(f"CIFAR-10 folder, batch {cfg.batch_size}, augment {cfg.augment}, "
          f"{jax.device_count()} {jax.devices()[0].platform} device(s), {os.cpu_count()} CPUs, "
          f"load average {load[0]:.1f} before / {load[1]:.1f} after\n")
    print("| what | images/s |\n|---|---:|")
    for what, value in rates.items():
        print(f"| {what} | {value:,.1f} |" if what.endswith("(s)") else f"| {what} | {value:,.0f} |")


def main(argv):
    cli.check_no_arguments(argv)
    cli.quiet()
    with cli.user_errors():
        sharding = parallel.batch_sharding(parallel.data_mesh())
        parallel.check_batch_size(FLAGS.batch_size, sharding.mesh)
        scratch = "/dev/shm" if Path("/dev/shm").is_dir() else None
        with tempfile.TemporaryDirectory(dir=scratch) as tmp:
            root = FLAGS.cifar10_dir
            if root is None:
                if subprocess.run(["tar", "xzf", FLAGS.cifar10_tar, "-C", tmp]).returncode:
                    raise ValueError(f"cannot extract --cifar10_tar={FLAGS.cifar10_tar} (tar's "
                                     f"message above); or give --cifar10_dir")
                root = tmp
            cfg = DataConfig(dataset=f"folder:{root}", image_size=32, channels=3,
                             batch_size=FLAGS.batch_size, augment="cifar")
            load = os.getloadavg()[0]
            rates = measure(cfg, sharding)
            report(rates, cfg, (load, os.getloadavg()[0]))


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_flags)
