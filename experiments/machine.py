"""What every timing figure is recorded with: the CPU, the threads of both frameworks, the load.

On a shared machine PyTorch's OpenMP threads lose far more to other processes than XLA's do
(../shared/PERF_NOTES.md: vgg_cifar read 0.66x at a load of 5-9, 1.45x idle), so a jaxcnn/torch
ratio is marked unreliable when the 1-minute load average before or after its timing exceeds half
the cores. The benchmark's own threads count in the reading after it: a long run on an idle
2-core machine can read above 1 there by itself, which errs on the side of "unreliable".
"""
from __future__ import annotations

import os
import platform
from typing import Sequence

LOAD_LIMIT_PER_CORE = 0.5


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux, else what `platform` knows)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def record(torch_threads: int | None = None) -> dict:
    """The machine and both frameworks' threads. XLA:CPU runs one thread per CPU this process may
    use (its affinity mask); torch's intra-op threads are `torch.get_num_threads()`."""
    return {"cpu": cpu_model(), "cpu_count": os.cpu_count(),
            "xla_threads": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
            else os.cpu_count(),
            "xla_flags": os.environ.get("XLA_FLAGS", ""), "torch_threads": torch_threads}


def load_check(before: Sequence[float], after: Sequence[float], cpu_count: int) -> dict:
    """The load averages (1, 5, 15 min) around a timing, and whether a ratio taken then is
    reliable: both 1-minute readings at most half the cores."""
    limit = LOAD_LIMIT_PER_CORE * cpu_count
    return {"load_before": [round(x, 2) for x in before],
            "load_after": [round(x, 2) for x in after],
            "load_limit": limit, "reliable": max(before[0], after[0]) <= limit}


def load_warning(check: dict, what: str = "the jaxcnn/torch ratio") -> str | None:
    """One line for an unreliable timing, None for a reliable one."""
    if check["reliable"]:
        return None
    return (f"warning: 1-minute load average {check['load_before'][0]:.2f} before, "
            f"{check['load_after'][0]:.2f} after the timing exceeds {check['load_limit']:g} "
            f"(half the cores): {what} is unreliable")
