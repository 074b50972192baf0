"""XLA compiler options for jaxcnn's jitted programs, which `jaxcnn.programs.jit` applies.

One setting so far, on CPU only: no YNNPACK fusion. jax 0.10.2's XLA:CPU fuses with YNNPACK by
default, and in VGG-16 it fuses the last max-pool with the whole FC head into one kernel that takes
~600 ms per batch of 4, against 15 ms for the same head without it (docs/perf_history.md). Set per
program, not via XLA_FLAGS, so that it holds however jaxcnn is launched; an
`--xla_cpu_experimental_ynn_fusion_type` given in XLA_FLAGS is left to win, to compare the two.
"""
from __future__ import annotations

import os

from jaxcnn.cpu import policy

YNN_FUSION_TYPE = "xla_cpu_experimental_ynn_fusion_type"
NO_YNN_FUSION = {YNN_FUSION_TYPE: ""}     # empty list: no YNNPACK fusion of any type


def compiler_options(compute: policy.Compute | None = None) -> dict[str, str]:
    """The options for a program compiled here under `compute` (default: the options in effect):
    no YNNPACK fusion where `policy.offered` (cpu_kernels "auto" on CPU) unless XLA_FLAGS sets
    it; XLA's defaults otherwise. `jaxcnn.programs.jit` applies them."""
    if not policy.offered(compute) or YNN_FUSION_TYPE in os.environ.get("XLA_FLAGS", ""):
        return {}
    return dict(NO_YNN_FUSION)
