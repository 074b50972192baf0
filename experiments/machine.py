"""What every timing figure is recorded with: the CPU, the threads of both frameworks, the load.

On a shared machine PyTorch's OpenMP threads lose far more to other processes than XLA's do
(../shared/PERF_NOTES.md: vgg_cifar read 0.66x at a load of 5-9, 1.45x idle), so a jaxcnn/torch
ratio is marked unreliable when other processes used more than half the cores during its timing:
the busy time of all CPUs (/proc/stat) minus this process's own. The 1-minute load averages
before and after are recorded too, but they cannot decide: they count the benchmark's own
threads and, for a minute, those of the benchmark run just before it (an idle 2-core machine
reads about 2 during a run of `experiments.torch_ratios`). Without /proc/stat (not Linux) the
load average before the timing decides.
"""
from __future__ import annotations

import os
import platform
import time
from typing import Sequence

from jaxcnn.cpu import host_memory
from jaxcnn.cpu.record import onednn_status

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


def usable_cores() -> int:
    """The CPUs this process may run on (its affinity mask: a SLURM or container limit counts)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def record(torch_threads: int | None = None) -> dict:
    """The machine and both frameworks' threads. XLA:CPU runs one thread per CPU this process may
    use (its affinity mask); torch's intra-op threads are `torch.get_num_threads()`. Whether
    jaxcnn's oneDNN convolutions are built (`jaxcnn.cpu.conv`'s "auto" runs them on one CPU device)."""
    return {"cpu": cpu_model(), "cpu_count": os.cpu_count(),
            "xla_threads": usable_cores(),
            "xla_flags": os.environ.get("XLA_FLAGS", ""), "torch_threads": torch_threads,
            "freed_host_memory": "kept" if host_memory.reusing() else "returned",
            "onednn_convolutions": onednn_status()}


def describe(host: dict, compiler_options: dict, freed_host_memory: str | None = None) -> str:
    """One line of `record`'s facts, for the head of a timing table (`freed_host_memory`: what
    to say of it instead of the host's own "kept" / "returned")."""
    return (f"{host['cpu']}, {host['cpu_count']} cores; XLA {host['xla_threads']} threads, "
            f"XLA_FLAGS={host['xla_flags']!r}, compiler options {compiler_options}; freed host "
            f"memory {freed_host_memory or host['freed_host_memory']} (jaxcnn.cpu.host_memory)"
            + (f"; oneDNN convolutions {host['onednn_convolutions']}"
               if "onednn_convolutions" in host else ""))


class OtherProcesses:
    """Cores' worth of CPU that processes other than this one used between start() and stop():
    the busy time of all CPUs (/proc/stat) minus this process's own (all its threads), per
    second of wall time. None where /proc/stat is missing (not Linux)."""

    def start(self) -> "OtherProcesses":
        self._start = self._read()
        return self

    def stop(self) -> float | None:
        end = self._read()
        if self._start is None or end is None:
            return None
        (busy0, own0, wall0), (busy1, own1, wall1) = self._start, end
        return max(0.0, ((busy1 - busy0) - (own1 - own0)) / (wall1 - wall0))

    @staticmethod
    def _read():
        try:
            with open("/proc/stat") as f:
                ticks = [int(x) for x in f.readline().split()[1:9]]
        except OSError:
            return None
        busy = sum(ticks) - ticks[3] - ticks[4]   # all but idle and iowait
        own = sum(os.times()[:2])                 # user + system of this process's threads
        return busy / os.sysconf("SC_CLK_TCK"), own, time.monotonic()


def load_check(before: Sequence[float], after: Sequence[float], cpu_count: int,
               others: float | None = None) -> dict:
    """The load averages (1, 5, 15 min) around a timing and the cores other processes used during
    it (`OtherProcesses`), and whether a ratio taken then is reliable: the others' use at most
    half the cores (without it, the 1-minute load before the timing)."""
    limit = LOAD_LIMIT_PER_CORE * cpu_count
    return {"load_before": [round(x, 2) for x in before],
            "load_after": [round(x, 2) for x in after],
            "others_during": None if others is None else round(others, 2),
            "load_limit": limit, "reliable": (before[0] if others is None else others) <= limit}


def load_warning(check: dict, what: str = "the jaxcnn/torch ratio") -> str | None:
    """One line for an unreliable timing, None for a reliable one."""
    if check["reliable"]:
        return None
    during = ("" if check["others_during"] is None
              else f", other processes used {check['others_during']:.2f} cores during it")
    return (f"warning: 1-minute load average {check['load_before'][0]:.2f} before, "
            f"{check['load_after'][0]:.2f} after the timing{during}; the limit is "
            f"{check['load_limit']:g} (half the cores): {what} is unreliable")
