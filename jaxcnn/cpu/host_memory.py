"""Host memory on CPU: keep freed blocks for the next step instead of handing them back.

XLA:CPU allocates each execution's buffers with `posix_memalign` from its worker threads. glibc
gives those threads arenas of their own, and such an arena holds no block above 64 MB: it maps
each one with mmap and unmaps it when freed. So every training step faults all its large buffers
in again, page by page, and the kernel zeroes them: per VGG-16 train step (batch 4, 2 cores,
docs/perf_history.md) 1.1 GB of page faults and ~0.47 s of system time, per AlexNet forward-backward
(batch 16) 0.28 GB. One arena that never maps and never trims (glibc's `mallopt`) keeps those
blocks in the process, and the steps reuse them without a fault. PyTorch's CPU steps pay the same
faults and gain the same from this.

One arena is not free, though: small buffers that one core's cache held now move between cores.
On LeNet-5 (buffers of a few MB) it cost 15–30% a step, and the CIFAR-size models gained nothing
measurable, so the programs keep memory only for large inputs (`reuse_freed_memory_for`).

The arena of a thread is fixed by its first allocation, so this works only before JAX starts its
CPU backend: the experiments' programs call it before their first use of JAX. Memory freed after
the peak is kept for reuse, not returned to the system, as accelerator allocators do.
"""
from __future__ import annotations

import ctypes
import importlib.metadata
import importlib.util
import os

# <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
_INT_MAX = 2**31 - 1
_applied = False

LARGE_IMAGE_SIDE = 128     # ImageNet-size inputs: AlexNet's and VGG's buffers reach 32 MB and more

# Set by a user who chose glibc's behaviour (or another allocator): then we leave it alone.
USER_CHOICES = ("LD_PRELOAD", "GLIBC_TUNABLES", "MALLOC_ARENA_MAX", "MALLOC_MMAP_MAX_",
                "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")


def cpu_only() -> bool:
    """Whether JAX will run on the CPU, decided without starting a backend: JAX_PLATFORMS names
    cpu first, or it is unset and no accelerator plugin (CUDA, ROCm, TPU) is installed."""
    platforms = os.environ.get("JAX_PLATFORMS", "").strip()
    if platforms:
        return platforms.split(",")[0].strip() == "cpu"
    return not (importlib.metadata.entry_points(group="jax_plugins")
                or importlib.util.find_spec("jax_plugins") is not None
                or importlib.util.find_spec("libtpu") is not None)


def reuse_freed_memory() -> bool:
    """One glibc arena with no mmap and no trimming, on a CPU-only process whose user set no
    allocator variable (`USER_CHOICES`); returns whether it was applied."""
    global _applied
    if not cpu_only() or any(name in os.environ for name in USER_CHOICES):
        return False
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version       # glibc only: mallopt's option numbers are its own
    except (OSError, AttributeError):
        return False
    _applied = all(libc.mallopt(option, value) == 1 for option, value in (
        (_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, _INT_MAX)))
    return _applied


def reuse_freed_memory_for(image_size: int) -> bool:
    """`reuse_freed_memory` for inputs of `LARGE_IMAGE_SIDE` pixels a side or more, where it was
    measured to pay (module docstring); returns whether it was applied."""
    return image_size >= LARGE_IMAGE_SIDE and reuse_freed_memory()


def reusing() -> bool:
    """Whether `reuse_freed_memory` was applied in this process."""
    return _applied
