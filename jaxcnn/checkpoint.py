"""Orbax checkpoints of the train state: keep the latest N, save asynchronously, resume the latest
readable one.

Each checkpoint holds the state (arrays only: Orbax never pickles, so loading executes no code) and
a JSON `meta` item naming the model and its options, so that a checkpoint written for another model
is refused with a clear message instead of a shape error (the meta also holds the run's whole
configuration, which `runs.load` reads back). The meta also lists every array of the
state with its shape and a checksum: Orbax stores float arrays without one (flipped bits in its
data files load silently as other numbers), so the checksums are what catches damaged array data.

Orbax writes a step into a temporary directory and renames it when complete, so a process killed
mid-save leaves the previous checkpoints intact; the unfinished `<step>.orbax-checkpoint-tmp*`
directory is ignored and deleted by the next run. A complete checkpoint that cannot be read (or
whose arrays fail their checksums) is moved aside to `corrupt-<step>` and the one before it is used.
"""
from __future__ import annotations

import contextlib
import logging as std_logging
import os
import re
import sys
from typing import Any

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils


class CheckpointError(RuntimeError):
    pass


def silence_failed_io_aftermath() -> None:
    """Drops the tracebacks that follow a failed Orbax read or write: TensorStore completes the
    other operations in flight on an event loop that Orbax has already closed, and each prints
    "Event loop is closed", "Task exception was never retrieved" or, at exit, "sys.meta_path is
    None", none of which says more than the error Orbax raised. The programs call it at start
    (not with --debug), and `reading` before any read (`runs.load` in a notebook, say: installed
    only after a failure, it lost the race with TensorStore's threads now and then). Idempotent."""
    if getattr(sys.unraisablehook, "drops_failed_io_aftermath", False):
        return
    default_hook = sys.unraisablehook

    def hook(unraisable):
        code = getattr(unraisable.object, "cr_code", None)
        closed_loop = (isinstance(unraisable.exc_value, RuntimeError)
                       and str(unraisable.exc_value) == "Event loop is closed")
        if not (closed_loop or (code and "/orbax/" in code.co_filename)):
            default_hook(unraisable)

    hook.drops_failed_io_aftermath = True
    sys.unraisablehook = hook
    std_logging.getLogger("asyncio").addFilter(lambda record: "/orbax/" not in record.getMessage())


class Unreadable(Exception):
    """A checkpoint that is damaged (as opposed to one written for another model or optimizer)."""


@contextlib.contextmanager
def reading(what: str):
    """Turns the storage errors of an Orbax read inside into `Unreadable("WHAT: cause")` (and
    silences their aftermath); any other error passes through."""
    silence_failed_io_aftermath()
    try:
        yield
    except Exception as e:
        if not _is_storage_error(e):
            raise
        raise Unreadable(f"{what}: {_storage_error_cause(e)}") from e


def read_meta(manager: ocp.CheckpointManager, step: int) -> dict:
    """The JSON meta of checkpoint `step` (model, options, input shape, class names, array
    checksums), as this version writes it (`current_meta`); `Unreadable` when its file is
    damaged."""
    with reading("meta"):
        meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    return current_meta(meta)


# Written before 2026-12, a checkpoint's meta lists the compute options (now the config's
# `compute`, `jaxcnn.cpu.policy.Compute`) among its model options, and so does its config.
COMPUTE_OPTIONS = ("cpu_kernels", "conv_impl")


def current_meta(meta: dict) -> dict:
    """`meta` with any compute options moved out of its model options into its config's
    `compute`: older checkpoints load and resume as new ones."""
    options = meta.get("model_options", {})
    compute = {k: v for k, v in options.items() if k in COMPUTE_OPTIONS}
    if not compute:
        return meta
    meta = {**meta, "model_options": {k: v for k, v in options.items() if k not in compute}}
    if "config" in meta:
        config = meta["config"]
        meta["config"] = {**config, "compute": compute,
                          "model": {**config["model"], "options": meta["model_options"]}}
    return meta


def _is_storage_error(error: Exception) -> bool:
    """What Orbax and TensorStore raise for a missing, truncated, damaged or unwritable file: JSON
    and TensorStore errors are ValueErrors, a missing item a KeyError, file errors OSErrors, and
    Orbax wraps a failed array read in a bare Exception."""
    return isinstance(error, (ValueError, KeyError, OSError)) or type(error) is Exception


def _storage_error_cause(error: Exception) -> str:
    """The gist of an Orbax/TensorStore error in one line: the OS error when there is one (e.g.
    "No space left on device"), else the first line without TensorStore's spec dump."""
    code = re.search(r"os_error_code='(\d+)'", str(error))
    if code:
        return os.strerror(int(code.group(1)))
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    cause = error.__cause__ if type(error) is Exception and error.__cause__ else error
    line = str(cause).strip().partition("\n")[0].split(" [tensorstore_spec")[0]
    return f"{type(cause).__name__}: {line}"


@jax.jit
def _checksums(state: Any) -> list[jax.Array]:
    """Per array, the sum of its words weighted by odd position numbers, modulo 2**32: a change of
    any one word (any flipped bit) changes it, and so does a swap of two words."""
    def checksum(x):
        if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
            x = jax.random.key_data(x)
        if x.dtype == jnp.bool_:
            x = x.astype(jnp.uint8)
        words = jax.lax.bitcast_convert_type(x, jnp.dtype(f"uint{8 * x.dtype.itemsize}"))
        weights = 2 * jnp.arange(x.size, dtype=jnp.uint32) + 1
        return jnp.sum(words.ravel().astype(jnp.uint32) * weights, dtype=jnp.uint32)
    return [checksum(x) for x in jax.tree.leaves(state)]


def _arrays(state: Any) -> dict[str, list]:
    """Path -> [shape, dtype] of every array of the state: what must match for a restore."""
    return {jax.tree_util.keystr(path): [list(x.shape), str(x.dtype)]
            for path, x in jax.tree_util.tree_flatten_with_path(state)[0]}


class Checkpointer:
    def __init__(self, directory: str, keep: int, meta: dict):
        self.directory = os.path.abspath(directory)
        self.meta = meta
        self._started = None   # the step of the last save started
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
        meta = {**self.meta, "arrays": _arrays(state),
                "checksums": [int(c) for c in jax.device_get(_checksums(state))]}
        self.wait()   # Orbax would wait too, but blame a failure of that save on this step
        self._started = step
        with self._write_errors():
            self.manager.save(step, args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=True)

    def restore_latest(self, abstract_state: Any) -> Any | None:
        """The newest readable checkpoint restored into `abstract_state`'s structure and shardings,
        or None when there is none. Damaged ones are moved aside with a warning; one written for
        another model or optimizer stops the run (CheckpointError)."""
        moved = []
        for step in sorted(self.manager.all_steps(), reverse=True):
            try:
                return self._restore(abstract_state, step)
            except Unreadable as e:
                moved.append(self._move_aside(step))
                logging.warning("checkpoint step %d is unreadable (%s): moved to %s; trying the "
                                "one before", step, e, moved[-1])
        if moved:
            raise CheckpointError(f"no readable checkpoint in {self.directory} (damaged ones moved "
                                  f"to {', '.join(map(os.path.basename, moved))}); run again to "
                                  f"start from step 0")
        return None

    def _restore(self, abstract_state: Any, step: int) -> Any:
        where = f"checkpoint {os.path.join(self.directory, str(step))}"
        saved = read_meta(self.manager, step)
        # The compute options are not compared: a run may resume under others, e.g. a CPU run
        # on a GPU node or with --cpu_kernels=off (same variables, same results to rounding).
        for key in ("model", "model_options", "num_classes"):
            if saved.get(key) != self.meta.get(key):
                raise CheckpointError(f"{where} was written for {key}={saved.get(key)!r}, this run "
                                      f"has {key}={self.meta.get(key)!r}; use another --workdir")
        expected = _arrays(abstract_state)
        arrays = saved.get("arrays", expected)   # checkpoints written before 2026-11 lack both
        if arrays != expected:                   # "arrays" and "checksums"
            path = next(p for p in sorted({*arrays, *expected}) if arrays.get(p) != expected.get(p))
            raise CheckpointError(
                f"{where} has other arrays than this run's state (at {path}: {arrays.get(path)} "
                f"vs {expected.get(path)}): it was written with another optimizer or input size; "
                f"use another --workdir")
        with reading("state"):
            state = self.manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state)))["state"]
        saved_checksums = saved.get("checksums", [])
        for path, now, then in zip(expected, jax.device_get(_checksums(state)), saved_checksums):
            if int(now) != then:
                raise Unreadable(f"the array data of {path} does not match its checksum")
        return state

    def _move_aside(self, step: int) -> str:
        """Renames a damaged step to `corrupt-<step>` (process 0 renames, the others wait)."""
        target = os.path.join(self.directory, f"corrupt-{step}")
        if jax.process_index() == 0:
            n = 1
            while os.path.exists(target):
                n += 1
                target = os.path.join(self.directory, f"corrupt-{step}.{n}")
            os.rename(os.path.join(self.directory, str(step)), target)
        multihost_utils.sync_global_devices(f"moved checkpoint {step} aside")
        self.manager.reload()
        return target

    @contextlib.contextmanager
    def _write_errors(self):
        """A failed write (disk full, quota, permissions) as one CheckpointError naming the step
        of the last save started: Orbax reports the failure of an asynchronous save only at the
        next save or wait."""
        try:
            yield
        except Exception as e:
            if not _is_storage_error(e):
                raise
            self.manager.reload()
            kept = self.manager.latest_step()
            kept = ("none is complete yet" if kept is None
                    else f"the last complete one, step {kept}, is kept")
            raise CheckpointError(
                f"writing checkpoint step {self._started} to {self.directory} failed: "
                f"{_storage_error_cause(e)}; {kept}: free some space and run the same command "
                f"again to resume") from e

    def wait(self) -> None:
        with self._write_errors():
            self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()

    def __enter__(self) -> "Checkpointer":
        return self

    def __exit__(self, *exc_info) -> None:
        """Finishes pending saves (also when training failed) and stops Orbax's threads, which
        would otherwise print tracebacks at interpreter exit."""
        try:
            self.wait()
        finally:
            self.close()


def saved_steps(directory: str) -> tuple[int, ...]:
    """The steps of the complete checkpoints in `directory`, read from its folder names alone
    (no Orbax, no JAX): e.g. to tell which runs can resume together."""
    if not os.path.isdir(directory):
        return ()
    return tuple(sorted(int(name) for name in os.listdir(directory) if name.isdigit()))


def abstract_like(state: Any) -> Any:
    """Shape/dtype/sharding skeleton of `state`, the restore target Orbax needs."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
                        if isinstance(x, jax.Array) else x, state)
