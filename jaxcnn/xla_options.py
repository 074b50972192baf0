"""XLA compiler options for jaxcnn's jitted programs: `jax.jit(f, compiler_options=...)`.

One setting so far, on CPU only: no YNNPACK fusion. jax 0.10.2's XLA:CPU fuses with YNNPACK by
default, and in VGG-16 it fuses the last max-pool with the whole FC head into one kernel that takes
~600 ms per batch of 4, against 15 ms for the same head without it (docs/perf_history.md). Set per
program, not via XLA_FLAGS, so that it holds however jaxcnn is launched; an
`--xla_cpu_experimental_ynn_fusion_type` given in XLA_FLAGS is left to win, to compare the two.
"""
from __future__ import annotations

import os

import jax

YNN_FUSION_TYPE = "xla_cpu_experimental_ynn_fusion_type"
NO_YNN_FUSION = {YNN_FUSION_TYPE: ""}     # empty list: no YNNPACK fusion of any type


def compiler_options(backend: str | None = None) -> dict[str, str]:
    """The options for a program compiled for `backend` (default: JAX's default backend):
    no YNNPACK fusion on CPU unless XLA_FLAGS sets it; nothing on GPU / TPU."""
    if (backend or jax.default_backend()) != "cpu" or YNN_FUSION_TYPE in os.environ.get(
            "XLA_FLAGS", ""):
        return {}
    return dict(NO_YNN_FUSION)
