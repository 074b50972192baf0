"""Device mesh and shardings for data parallelism over every local device and every host.

The batch is split along the mesh's "data" axis and the train state is replicated; a plain jitted
step over such arrays is what `jax.pmap` used to be, and batch norm sees the global batch.
"""
from __future__ import annotations

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


def initialize_distributed(coordinator_address: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None, from_environment: bool = False,
                           heartbeat_timeout_s: int = 100) -> None:
    """Joins a multi-host job: explicitly by coordinator address, or with `from_environment` by
    letting JAX read the cluster's environment (SLURM, Open MPI, TPU pods, ...).

    A process whose peer dies learns of it within `heartbeat_timeout_s` and is terminated by the
    coordination service instead of hanging in a collective forever.
    """
    if coordinator_address is None and not from_environment:
        return
    jax.distributed.initialize(coordinator_address, num_processes, process_id,
                               heartbeat_timeout_seconds=heartbeat_timeout_s)


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
