"""Flags that choose a model and its ablation options, and how its programs compute (the compute
options), shared by every program that builds one."""
from __future__ import annotations

from absl import flags

from jaxcnn import models
from jaxcnn.cpu.policy import Compute

flags.DEFINE_string("model", "lenet5", f"One of: {', '.join(models.names())}.")
flags.DEFINE_enum("norm", "none", ["none", "batch", "lrn"], "Normalisation in every conv block.")
flags.DEFINE_string("factorize", "none", "Conv layers made k×1 then 1×k: all, none or e.g. 2,3.")
flags.DEFINE_string("multi_branch", "none", "Conv layers made parallel 1/3/5/7 convs: all, none or list.")
flags.DEFINE_float("dropout", 0.5, "Dropout rate of the classifier.")
flags.DEFINE_float("bn_momentum", 0.9, "Batch-norm moving-average decay.")
flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Computation dtype (params stay float32).")
flags.DEFINE_enum("cpu_kernels", "auto", ["auto", "off"],
                  "auto: on CPU, the faster forms of jaxcnn.cpu (oneDNN's convolutions where "
                  "built, custom gradients); off: flax's layers and XLA's defaults everywhere.")
flags.DEFINE_enum("conv_impl", "auto", ["auto", "xla", "im2col", "onednn"],
                  "Convolutions' form on CPU: auto (per shape: oneDNN's where it is built, im2col "
                  "for tiny maps / 1x1 kernels; see jaxcnn.cpu.conv), xla, im2col or onednn.")

FLAGS = flags.FLAGS
MODEL_OPTION_FLAGS = ("norm", "factorize", "multi_branch", "dropout", "bn_momentum", "dtype")


def was_set(name: str) -> bool:
    return not FLAGS[name].using_default_value


def model_options() -> dict:
    """The model options given on the command line or in a flagfile; the others keep each
    architecture's own default (e.g. vgg_cifar's batch norm, LeNet-5's zero dropout)."""
    return {name: FLAGS[name].value for name in MODEL_OPTION_FLAGS if was_set(name)}


def compute() -> Compute:
    """The compute options of --cpu_kernels and --conv_impl."""
    return Compute(FLAGS.cpu_kernels, FLAGS.conv_impl)
