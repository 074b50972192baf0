"""Flags shared by the timing programs (`benchmark`, `conv_layers`, `torch_ratios`); each sets
its own defaults with `FLAGS.set_default`."""
from __future__ import annotations

import importlib.util

from absl import flags

from experiments import cli
from jaxcnn import benchmark

flags.DEFINE_integer("num_batches", 100, "timed batches (calls) per mode", lower_bound=1)
flags.DEFINE_integer("burn_in", 10, "untimed batches (calls) before timing", lower_bound=0)
flags.DEFINE_list("modes", list(benchmark.MODES), f"any of {', '.join(benchmark.MODES)}")
flags.register_validator("modes", lambda modes: set(modes) <= set(benchmark.MODES),
                         f"valid modes: {', '.join(benchmark.MODES)}")
flags.DEFINE_bool("torch", importlib.util.find_spec("torch") is not None,
                  "also time PyTorch (default: on when torch is importable)")
FLAGS = flags.FLAGS


def check_torch() -> None:
    """Ends the program with one line when --torch is asked for without PyTorch installed."""
    if FLAGS.torch and importlib.util.find_spec("torch") is None:
        cli.fail("--torch needs PyTorch (pip install torch), or pass --notorch")
