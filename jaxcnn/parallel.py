"""Device mesh and shardings for data parallelism over every local device and every host.

The batch is split along the mesh's "data" axis and the train state is replicated; a plain jitted
step over such arrays is what `jax.pmap` used to be, and batch norm sees the global batch.
"""
from __future__ import annotations

import functools
import os
import re
import socket
import sys
import threading
from typing import Callable

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

# JAX's own deadline for joining comes this long after ours, so that ours names the reason first.
_JAX_GRACE_S = 30


def initialize_distributed(coordinator_address: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None, from_environment: bool = False,
                           heartbeat_timeout_s: int = 100, timeout_s: int = 300,
                           on_timeout: Callable[[str], object] | None = None) -> None:
    """Joins a multi-host job: explicitly by coordinator address, or with `from_environment` by
    letting JAX read the cluster's environment (SLURM, Open MPI, TPU pods, ...).

    Joining waits until every process has reached the coordinator (process 0 serves it). If that
    takes more than `timeout_s` (a wrong address or port, process 0 not started, a process that
    never came), `on_timeout(reason)` is called from a watchdog thread and the process then ends
    with exit status 1: JAX would otherwise wait `timeout_s` + 30 s and abort with a C++ stack
    trace. The default `on_timeout` prints `error: <reason>` to stderr.

    A process whose peer dies later learns of it within `heartbeat_timeout_s` and is terminated
    by the coordination service instead of hanging in a collective forever.
    """
    if coordinator_address is None and not from_environment:
        return
    # In a SLURM job step JAX gives each process only the accelerator numbered by its
    # SLURM_LOCALID: right for one process per GPU, wrong for one process per node (the launchers'
    # --ntasks-per-node=1), which drives all of the node's devices. [] is "all" to JAX.
    local_device_ids = [] if slurm_tasks_on_this_node() == 1 else None
    joined = threading.Event()
    reason = functools.partial(_join_failure, coordinator_address, num_processes, process_id,
                               timeout_s)
    threading.Thread(target=_watchdog, args=(joined, timeout_s, reason, on_timeout or _print_error),
                     name="join-watchdog", daemon=True).start()
    try:
        jax.distributed.initialize(coordinator_address, num_processes, process_id,
                                   local_device_ids=local_device_ids,
                                   initialization_timeout=timeout_s + _JAX_GRACE_S,
                                   heartbeat_timeout_seconds=heartbeat_timeout_s)
    finally:
        joined.set()


def _watchdog(joined: threading.Event, timeout_s: float, reason: Callable[[], str],
              on_timeout: Callable[[str], object]) -> None:
    if joined.wait(timeout_s):
        return
    try:
        on_timeout(reason())
    finally:   # SystemExit included (a program's fail()): it would end this thread only
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(1)


def _print_error(reason: str) -> None:
    print(f"error: {reason}", file=sys.stderr, flush=True)


def _join_failure(address: str | None, num_processes: int | None, process_id: int | None,
                  timeout_s: float) -> str:
    """Why joining did not finish, as far as this process can tell."""
    within = f"within {timeout_s:g} s"
    if address is None:   # read from the cluster's environment by JAX
        address, num_processes, process_id = _environment_parameters()
        if address is None:
            return f"the multi-host job of the cluster's environment did not start {within}"
    processes = f"all {num_processes} processes" if num_processes else "all processes"
    if process_id == 0:
        return f"not {processes} joined the coordinator at {address} (this process, 0) {within}"
    if not _answers(address):
        return (f"nothing answered at the coordinator address {address} {within}: is process 0 "
                f"running there, and are the host and port right?")
    return f"not {processes} joined the coordinator at {address} {within}"


def _answers(address: str) -> bool:
    """Whether something accepts TCP connections at HOST:PORT ([v6]:PORT too)."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=2):
            return True
    except (OSError, ValueError):
        return False


def _environment_parameters() -> tuple[str | None, int | None, int | None]:
    """(coordinator address, process count, process id) as JAX read them from the cluster's
    environment, for the error message only: JAX keeps them in a private place, and sets the
    address and id before it connects (None where it did not get that far)."""
    try:
        from jax._src import distributed
        state = distributed.global_state
        address = state.coordinator_address
    except (ImportError, AttributeError):
        return None, None, None
    if address is None:
        return None, None, None
    return address, getattr(state, "num_processes", None), getattr(state, "process_id", None)


def slurm_tasks_on_this_node() -> int | None:
    """How many processes of this SLURM job step run on this node (SLURM_STEP_TASKS_PER_NODE,
    e.g. "2(x3),1", at SLURM_NODEID), or None outside SLURM."""
    spec = os.environ.get("SLURM_STEP_TASKS_PER_NODE") or os.environ.get("SLURM_TASKS_PER_NODE")
    node = os.environ.get("SLURM_NODEID", "")
    if not spec or not node.isdigit():
        return None
    counts = []
    for part in spec.split(","):
        match = re.fullmatch(r"(\d+)(?:\(x(\d+)\))?", part.strip())
        if match is None:
            return None
        counts += [int(match[1])] * int(match[2] or 1)
    return counts[int(node)] if int(node) < len(counts) else None


def data_mesh() -> Mesh:
    """A 1-D mesh over all devices of all processes, axis "data"."""
    return jax.make_mesh((jax.device_count(),), ("data",),
                         axis_types=(jax.sharding.AxisType.Auto,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P("data"))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def check_batch_size(batch_size: int, mesh: Mesh, what: str = "batch_size") -> None:
    n = mesh.devices.size
    if batch_size <= 0 or batch_size % n:
        raise ValueError(f"{what}={batch_size} must be a positive multiple of the device count ({n})")
