"""Plain configuration objects. The library takes these; `experiments/` builds them from flags."""
from __future__ import annotations

import dataclasses
from typing import Any

from jaxcnn.cpu.policy import Compute


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    name: str = "lenet5"
    options: dict[str, Any] = dataclasses.field(default_factory=dict)  # see jaxcnn.models.create


@dataclasses.dataclass(frozen=True)
class DataConfig:
    dataset: str = "digits"          # a TFDS name, "folder:PATH" or "digits" (embedded)
    data_dir: str | None = None      # TFDS data_dir / manual_dir root
    image_size: int = 32             # square side fed to the model
    channels: int = 1                # 1 or 3: what the model takes (images are converted)
    batch_size: int = 128            # global, over all devices and hosts
    eval_batch_size: int = 256       # global
    augment: str = "none"            # none | cifar | random_resized_crop | scale_jitter
    device_resident: bool = False    # keep the split on the accelerator, augment with jitted ops
    loader: str = "tf"               # streamed: tf (tf.data) | dali (NVIDIA DALI, folders only)
    cache_dir: str = "~/.cache/jaxcnn"   # device-resident folder datasets: decoded splits
    shuffle_buffer: int = 10_000
    prefetch: int = 2
    seed: int = 0


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    optimizer: str = "sgd"           # sgd | nesterov | adam | adamw
    learning_rate: float = 0.1
    momentum: float = 0.9
    l2: float = 0.0                  # coupled: l2 * w added to the gradient of kernels
    weight_decay: float = 0.0        # decoupled: lr * wd * w subtracted from kernels
    schedule: str = "constant"       # constant | discexp | piecewise | cosine | linear | plateau
    warmup_steps: int = 0
    discexp_rate: float = 0.1        # discexp: lr = base * rate ** floor(samples / discexp_samples)
    discexp_samples: int = 5_000_000
    boundaries_epochs: tuple[float, ...] = ()   # piecewise: divide by `decay_factor` at these epochs
    decay_factor: float = 10.0
    plateau_patience: int = 5        # plateau: evaluations without improvement before lr /= factor
    grad_clip_norm: float = 0.0      # 0: off
    label_smoothing: float = 0.0
    grad_accum_steps: int = 1        # split each batch_size batch into this many micro-batches


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    compute: Compute = dataclasses.field(default_factory=Compute)   # how, not what: not the model's
    workdir: str = "runs/quickstart"
    epochs: float = 10.0
    steps: int = 0                   # overrides epochs when > 0
    seed: int = 0
    log_every: int = 50
    eval_every_epochs: float = 1.0
    checkpoint_every: int = 0        # steps; 0: at every evaluation
    keep_checkpoints: int = 3
    nan_policy: str = "stop"         # stop | skip
    dense_eval_size: int = 0         # VGG dense evaluation on Q×Q test images (paper 3.2); 0: off
    eval_flip: bool = False          # dense evaluation: also average the mirrored image
    plot: bool = True
    profile_steps: tuple[int, int] | None = None   # (A, B): jax.profiler trace of steps A..B
