"""Orbax checkpoints of the train state: keep the latest N, save asynchronously, resume the latest.

Each checkpoint holds the state (arrays only: Orbax never pickles, so loading executes no code) and
a JSON `meta` item naming the model and its options, so that a checkpoint written for another model
is refused with a clear message instead of a shape error. Orbax writes a step into a temporary
directory and renames it when complete, so a process killed mid-save leaves the previous
checkpoints intact; the unfinished `<step>.orbax-checkpoint-tmp*` directory is ignored and deleted
by the next run.
"""
from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp


# What Orbax and TensorStore raise for a missing, truncated or mismatched item (JSON errors are
# ValueErrors, a missing item a KeyError, missing files OSErrors).
ORBAX_READ_ERRORS = (ValueError, KeyError, OSError)


class CheckpointError(RuntimeError):
    pass


def _first_line(error: Exception) -> str:
    """The gist of an Orbax/TensorStore error: its first line, without TensorStore's spec dump."""
    line = str(error).strip().partition("\n")[0].split(" [tensorstore_spec")[0]
    return f"{type(error).__name__}: {line}"


class Checkpointer:
    def __init__(self, directory: str, keep: int, meta: dict):
        self.directory = os.path.abspath(directory)
        self.meta = meta
        options = ocp.CheckpointManagerOptions(
            preservation_policy=ocp.checkpoint_managers.LatestN(keep),
            enable_async_checkpointing=True, create=True, cleanup_tmp_directories=True)
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, state: Any) -> None:
        """Starts an asynchronous save of `state` at its step (waits for the previous save)."""
        step = int(jax.device_get(state.step))
        if step in self.manager.all_steps():
            return
        self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(self.meta)), force=True)

    def restore(self, abstract_state: Any, step: int | None = None) -> Any:
        """Restores the checkpoint at `step` (default: latest) into `abstract_state`'s structure and
        shardings, after checking it was written for the same model."""
        step = self.latest_step() if step is None else step
        where = f"checkpoint {os.path.join(self.directory, str(step))}"
        try:
            meta = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        except ORBAX_READ_ERRORS as e:
            raise CheckpointError(f"{where} is unreadable ({_first_line(e)}); delete it to resume "
                                  f"from an earlier one") from e
        saved = meta["meta"]
        for key in ("model", "model_options", "num_classes"):
            if saved.get(key) != self.meta.get(key):
                raise CheckpointError(f"{where} was written for {key}={saved.get(key)!r}, this run "
                                      f"has {key}={self.meta.get(key)!r}; use another --workdir")
        try:
            # The step counter alone first: a checkpoint with a missing or truncated index fails
            # here cleanly, whereas a failing full restore leaves TensorStore reads in flight that
            # print "Event loop is closed" tracebacks after Orbax closes its event loop.
            probe = {"step": abstract_state.step}
            with ocp.PyTreeCheckpointer() as reader:
                reader.restore(os.path.join(self.directory, str(step), "state"),
                               args=ocp.args.PyTreeRestore(
                                   probe, ocp.checkpoint_utils.construct_restore_args(probe),
                                   partial_restore=True))
            restored = self.manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state)))
        except ORBAX_READ_ERRORS as e:
            raise CheckpointError(f"{where} is corrupt, incomplete or was written with another "
                                  f"optimizer ({_first_line(e)}); delete it to resume from an "
                                  f"earlier one") from e
        return restored["state"]

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()

    def __enter__(self) -> "Checkpointer":
        return self

    def __exit__(self, *exc_info) -> None:
        """Finishes pending saves (also when training failed) and stops Orbax's threads, which
        would otherwise print tracebacks at interpreter exit."""
        self.wait()
        self.close()


def abstract_like(state: Any) -> Any:
    """Shape/dtype/sharding skeleton of `state`, the restore target Orbax needs."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
                        if isinstance(x, jax.Array) else x, state)
