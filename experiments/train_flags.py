"""Command-line flags of the training programs and their translation into a `TrainConfig`.

The defaults are the quick start (LeNet-5 on the embedded digits), so a bare
`python -m experiments.run` trains a real model in about a minute on a CPU.
"""
from __future__ import annotations

from absl import flags

from experiments import model_flags
from jaxcnn import models
from jaxcnn.data import dali, sources
from jaxcnn.config import DataConfig, ModelConfig, OptimConfig, TrainConfig

# Data.
flags.DEFINE_string("dataset", "digits", "TFDS name, folder:PATH, or digits (embedded, no download).")
flags.DEFINE_string("data_dir", None, "TFDS data_dir (and manual_dir for imagenet2012).")
flags.DEFINE_integer("image_size", None, "Input side; default: the model's own.")
flags.DEFINE_integer("channels", None, "1 or 3; default: the model's own.")
flags.DEFINE_integer("batch_size", 64, "Global training batch of one update (all devices, all "
                     "hosts); with --grad_accum_steps=K it is split into K micro-batches.")
flags.DEFINE_integer("eval_batch_size", 256, "Global evaluation batch.")
flags.DEFINE_enum("augment", "none", ["none", "cifar", "random_resized_crop", "scale_jitter"],
                  "Training augmentation.")
flags.DEFINE_bool("device_resident", False, "Keep the dataset on the accelerator (MNIST/CIFAR size); "
                  "folder datasets are then decoded with Pillow (no TensorFlow) and cached.")
flags.DEFINE_string("cache_dir", "~/.cache/jaxcnn", "Where device-resident folder datasets keep "
                    "their decoded splits.")
flags.DEFINE_enum("loader", "tf", ["tf", "dali"], "What streams the data: tf (tf.data on the host's "
                  "cores) or dali (NVIDIA DALI, folder:PATH datasets only, decoding on the GPUs "
                  f"where there are; pip install {dali.PACKAGE}).")

# Length and bookkeeping.
flags.DEFINE_float("epochs", 12, "Training epochs (ignored when --steps > 0).")
flags.DEFINE_integer("steps", 0, "Training steps; overrides --epochs.")
flags.DEFINE_integer("seed", 0, "Seed of initialisation, dropout and data order.")
flags.DEFINE_integer("seeds", 1, "Seeds 0..N-1: `run` trains them packed as one program, each a "
                     "run of its own in WORKDIR/seed=S/ (1: one run, seed --seed, in WORKDIR); "
                     "`ablate` trains every configuration with each.", lower_bound=1)
flags.DEFINE_string("workdir", "runs/quickstart", "Checkpoints, metrics, TensorBoard logs, figure.")
flags.DEFINE_integer("log_every", 50, "Steps between train-metric fetches (the only host syncs).")
flags.DEFINE_float("eval_every_epochs", 1.0, "Epochs between evaluations (and checkpoints).")
flags.DEFINE_integer("checkpoint_every", 0, "Steps between checkpoints; 0: at every evaluation.")
flags.DEFINE_integer("keep_checkpoints", 3, "Checkpoints kept.")
flags.DEFINE_integer("dense_eval_size", 0, "VGG dense evaluation on QxQ test images (paper 3.2); 0: off.")
flags.DEFINE_bool("eval_flip", False, "Dense evaluation: also average the horizontally flipped image.")
flags.DEFINE_string("profile_steps", None, "A:B: write a jax.profiler trace of training steps A "
                    "to B to WORKDIR/tensorboard (TensorBoard's Profile tab).")
flags.DEFINE_enum("nan_policy", "stop", ["stop", "skip"], "On a non-finite loss: stop, or skip the update.")

# Optimisation.
flags.DEFINE_enum("optimizer", "adam", ["sgd", "nesterov", "adam", "adamw"], "Optimizer.")
flags.DEFINE_float("learning_rate", 1e-3, "Base learning rate (mean-loss convention).")
flags.DEFINE_float("momentum", 0.9, "Momentum of sgd / nesterov.")
flags.DEFINE_float("l2", 0.0, "Coupled L2: l2 * w added to the gradient of every kernel.")
flags.DEFINE_float("weight_decay", 0.0, "Decoupled weight decay (AdamW / SGDW), kernels only.")
flags.DEFINE_enum("schedule", "constant", ["constant", "discexp", "piecewise", "cosine", "linear",
                                           "plateau"], "Learning-rate schedule.")
flags.DEFINE_integer("warmup_steps", 0, "Linear warm-up steps.")
flags.DEFINE_float("discexp_rate", 0.1, "discexp: lr = base * rate ** floor(samples / discexp_samples).")
flags.DEFINE_integer("discexp_samples", 5_000_000, "discexp: samples between decays.")
flags.DEFINE_list("boundaries_epochs", [], "piecewise: epochs at which lr /= decay_factor.")
flags.DEFINE_float("decay_factor", 10.0, "piecewise / plateau divisor.")
flags.DEFINE_integer("plateau_patience", 5, "plateau: flat epochs before dividing the lr.")
flags.DEFINE_float("label_smoothing", 0.0, "Label smoothing.")
flags.DEFINE_float("grad_clip_norm", 0.0, "Clip gradients to this global norm; 0: off.")
flags.DEFINE_integer("grad_accum_steps", 1, "Compute each update's gradient in this many "
                     "micro-batches of batch_size / K examples, one after the other: the same "
                     "update in less memory (batch norm: statistics per micro-batch). Steps, "
                     "epochs and the schedule count updates.")

FLAGS = flags.FLAGS
POSITIVE_FLAGS = ("batch_size", "eval_batch_size", "log_every", "keep_checkpoints",
                  "learning_rate", "eval_every_epochs", "discexp_rate", "discexp_samples",
                  "decay_factor", "plateau_patience", "grad_accum_steps")
NON_NEGATIVE_FLAGS = ("l2", "weight_decay", "label_smoothing", "grad_clip_norm", "warmup_steps",
                      "checkpoint_every", "dense_eval_size")
# Flags that only mean something with one of these schedules: given with another, a mistake.
SCHEDULE_FLAGS = {"boundaries_epochs": ("piecewise",), "discexp_rate": ("discexp",),
                  "discexp_samples": ("discexp",), "decay_factor": ("piecewise", "plateau"),
                  "plateau_patience": ("plateau",)}


def validate() -> None:
    """Rejects values that cannot mean anything, and flags that contradict each other, before
    any work is done."""
    sources.check_name(FLAGS.dataset)
    for name in POSITIVE_FLAGS:
        if FLAGS[name].value <= 0:
            raise ValueError(f"--{name} must be positive, got {FLAGS[name].value}")
    for name in NON_NEGATIVE_FLAGS:
        if FLAGS[name].value < 0:
            raise ValueError(f"--{name} must not be negative, got {FLAGS[name].value}")
    if FLAGS.steps < 0 or (FLAGS.steps == 0 and FLAGS.epochs <= 0):
        raise ValueError("--epochs (or --steps) must be positive")
    for name in ("dropout", "momentum"):
        if not 0 <= FLAGS[name].value < 1:
            raise ValueError(f"--{name} must be in [0, 1), got {FLAGS[name].value}")
    if FLAGS.image_size is not None and FLAGS.image_size <= 0:
        raise ValueError(f"--image_size must be positive, got {FLAGS.image_size}")
    if FLAGS.channels not in (None, 1, 3):
        raise ValueError(f"--channels must be 1 or 3, got {FLAGS.channels}")
    if FLAGS.schedule == "piecewise" and not FLAGS.boundaries_epochs:
        raise ValueError("--schedule=piecewise needs --boundaries_epochs")
    for name, schedules in SCHEDULE_FLAGS.items():
        if model_flags.was_set(name) and FLAGS.schedule not in schedules:
            raise ValueError(f"--{name} only applies to --schedule={' or '.join(schedules)}, "
                             f"not {FLAGS.schedule}")
    if FLAGS.batch_size % FLAGS.grad_accum_steps:
        raise ValueError(f"--batch_size={FLAGS.batch_size} must be a multiple of "
                         f"--grad_accum_steps={FLAGS.grad_accum_steps}: it is the batch of one "
                         f"update, split into that many micro-batches")
    if FLAGS.eval_flip and not FLAGS.dense_eval_size:
        raise ValueError("--eval_flip applies to dense evaluation: set --dense_eval_size too")
    if FLAGS.optimizer in ("adam", "adamw") and model_flags.was_set("momentum"):
        raise ValueError(f"--momentum does not apply to --optimizer={FLAGS.optimizer}")


def step_range(text: str | None) -> tuple[int, int] | None:
    """'A:B' (1 <= A <= B) as (A, B), for --profile_steps."""
    if text is None:
        return None
    first, sep, last = text.partition(":")
    if not (sep and first.isdigit() and last.isdigit() and 1 <= int(first) <= int(last)):
        raise ValueError(f"--profile_steps must be A:B, the first and last step to trace with "
                         f"1 <= A <= B, got {text!r}")
    return int(first), int(last)


def config_from_flags() -> TrainConfig:
    validate()
    height, width, channels = models.input_shape(FLAGS.model)
    model = ModelConfig(FLAGS.model, model_flags.model_options())
    data = DataConfig(
        dataset=FLAGS.dataset, data_dir=FLAGS.data_dir, image_size=FLAGS.image_size or height,
        channels=FLAGS.channels or channels, batch_size=FLAGS.batch_size,
        eval_batch_size=FLAGS.eval_batch_size, augment=FLAGS.augment,
        device_resident=FLAGS.device_resident, loader=FLAGS.loader, cache_dir=FLAGS.cache_dir,
        seed=FLAGS.seed)
    if data.loader == "dali":
        dali.check(data)
    optim = OptimConfig(
        optimizer=FLAGS.optimizer, learning_rate=FLAGS.learning_rate, momentum=FLAGS.momentum,
        l2=FLAGS.l2, weight_decay=FLAGS.weight_decay, schedule=FLAGS.schedule,
        warmup_steps=FLAGS.warmup_steps, discexp_rate=FLAGS.discexp_rate,
        discexp_samples=FLAGS.discexp_samples,
        boundaries_epochs=tuple(float(e) for e in FLAGS.boundaries_epochs),
        decay_factor=FLAGS.decay_factor, plateau_patience=FLAGS.plateau_patience,
        grad_clip_norm=FLAGS.grad_clip_norm, label_smoothing=FLAGS.label_smoothing,
        grad_accum_steps=FLAGS.grad_accum_steps)
    return TrainConfig(
        model=model, data=data, optim=optim, compute=model_flags.compute(),
        workdir=FLAGS.workdir, epochs=FLAGS.epochs,
        steps=FLAGS.steps, seed=FLAGS.seed, log_every=FLAGS.log_every,
        eval_every_epochs=FLAGS.eval_every_epochs, checkpoint_every=FLAGS.checkpoint_every,
        keep_checkpoints=FLAGS.keep_checkpoints, nan_policy=FLAGS.nan_policy,
        dense_eval_size=FLAGS.dense_eval_size, eval_flip=FLAGS.eval_flip,
        profile_steps=step_range(FLAGS.profile_steps))
