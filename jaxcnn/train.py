"""Train state and the pure train / eval steps. Read top to bottom; no I/O, no global state.

Both steps are ordinary single-device functions: jitted over a device mesh with the batch sharded
on its "data" axis (`jaxcnn.parallel`), XLA turns them into a data-parallel program whose batch-norm
statistics and gradients are over the global batch (batch-norm statistics over each global
micro-batch with gradient accumulation).
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct
from flax.training import train_state

from jaxcnn import optim


class TrainState(train_state.TrainState):
    """params, opt_state and step (from flax), plus BN statistics and the dropout key."""
    batch_stats: Any = None
    rng: jax.Array = None
    lr_fn: Callable = struct.field(pytree_node=False, default=None)


def create_train_state(rng: jax.Array, model: nn.Module, input_shape: tuple[int, ...],
                       tx: optax.GradientTransformation, lr_fn: Callable) -> TrainState:
    """Initialises the model on a dummy batch of one `input_shape` (H, W, C) image."""
    init_rng, dropout_rng = jax.random.split(rng)
    variables = model.init(init_rng, jnp.zeros((1, *input_shape), jnp.float32))
    return TrainState.create(apply_fn=model.apply, params=variables["params"], tx=tx,
                             batch_stats=variables.get("batch_stats", {}), rng=dropout_rng,
                             lr_fn=lr_fn)


def cross_entropy(logits, labels, label_smoothing: float = 0.0):
    targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), label_smoothing)
    return optax.softmax_cross_entropy(logits, targets)


def correct_topk(logits, labels, k: int):
    """1.0 where the label is among the k largest logits."""
    k = min(k, logits.shape[-1])
    return jnp.any(jax.lax.top_k(logits, k)[1] == labels[:, None], axis=-1).astype(jnp.float32)


def all_finite(tree) -> jax.Array:
    """Whether every element of every array in `tree` is finite: exact, unlike a global norm that
    overflows for large finite values, and one read of each array."""
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def train_step(state: TrainState, batch: dict, label_smoothing: float = 0.0,
               grad_accum_steps: int = 1, tx: optax.GradientTransformation | None = None,
               lr_fn: Callable | None = None) -> tuple[TrainState, dict]:
    """One optimizer update on the global batch. A non-finite loss or gradient leaves the state
    unchanged; `nonfinite` in the metrics reports it, so the caller decides whether to stop or go on.

    tx, lr_fn: the optimizer and schedule to use instead of the state's (a packed run's member
    builds them from its own, traced, hyperparameters: `jaxcnn.packing`).

    grad_accum_steps=K > 1 computes the gradient in K micro-batches of B/K examples (see
    `accumulate_gradients`): the same update in less memory, but batch norm normalises each
    micro-batch with its own statistics and updates its running averages K times.
    """
    tx, lr_fn = tx or state.tx, lr_fn or state.lr_fn
    dropout_rng = jax.random.fold_in(state.rng, state.step)

    def loss_fn(params, batch_stats, batch, rng):
        logits, updates = state.apply_fn(
            {"params": params, "batch_stats": batch_stats}, batch["image"], train=True,
            rngs={"dropout": rng}, mutable=["batch_stats"])
        loss = jnp.mean(cross_entropy(logits, batch["label"], label_smoothing))
        metrics = {"loss": loss, "top1": jnp.mean(correct_topk(logits, batch["label"], 1)),
                   "top5": jnp.mean(correct_topk(logits, batch["label"], 5))}
        return loss, (metrics, updates.get("batch_stats", {}))

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    (loss, (metrics, batch_stats)), grads = accumulate_gradients(
        grad_fn, state.params, state.batch_stats, batch, dropout_rng, grad_accum_steps)
    finite = jnp.isfinite(loss) & all_finite(grads)

    def update(state):
        updates, opt_state = tx.update(grads, state.opt_state, state.params, value=loss)
        return state.replace(params=optax.apply_updates(state.params, updates),
                             opt_state=opt_state, batch_stats=batch_stats)

    # A branch, not a select per array: the skipped update costs nothing and the taken one runs
    # as optax's own fused pass (a select per array doubled AlexNet's update time on CPU).
    new_state = jax.lax.cond(finite, update, lambda state: state, state)
    new_state = new_state.replace(step=state.step + 1)
    metrics = {
        **metrics,
        "learning_rate": optim.current_learning_rate(lr_fn, state.opt_state, state.step),
        "nonfinite": (~finite).astype(jnp.int32),
        # First step whose update was dropped (int32 max when none): survives summing as a min.
        "first_nonfinite_step": jnp.where(finite, jnp.iinfo(jnp.int32).max, state.step),
    }
    return new_state, metrics


def accumulate_gradients(grad_fn: Callable, params: Any, batch_stats: Any, batch: dict,
                         rng: jax.Array, steps: int):
    """grad_fn(params, batch_stats, batch, rng) -> ((loss, (metrics, batch_stats)), grads), over
    the whole batch when steps is 1, else as the mean over `steps` equal micro-batches, one after
    the other (a scan: activations of one micro-batch in memory at a time).

    Micro-batch k holds examples k, k + steps, k + 2 * steps, ...: with the batch sharded over
    devices in contiguous blocks, every device holds its share of every micro-batch, so the split
    moves no data. Each micro-batch gets its own dropout key; batch statistics are threaded
    through, so the returned ones are those after the last micro-batch.
    """
    if steps == 1:
        return grad_fn(params, batch_stats, batch, rng)
    micro_batches = jax.tree.map(
        lambda x: x.reshape(x.shape[0] // steps, steps, *x.shape[1:]).swapaxes(0, 1), batch)

    def micro_step(carry, micro_batch_and_index):
        grad_sum, batch_stats = carry
        micro_batch, index = micro_batch_and_index
        (_, (metrics, batch_stats)), grads = grad_fn(params, batch_stats, micro_batch,
                                                     jax.random.fold_in(rng, index))
        return (jax.tree.map(jnp.add, grad_sum, grads), batch_stats), metrics

    (grad_sum, batch_stats), metrics = jax.lax.scan(
        micro_step, (jax.tree.map(jnp.zeros_like, params), batch_stats),
        (micro_batches, jnp.arange(steps)))
    metrics = jax.tree.map(lambda m: jnp.mean(m, axis=0), metrics)
    grads = jax.tree.map(lambda g: g / steps, grad_sum)
    return (metrics["loss"], (metrics, batch_stats)), grads


def eval_step(state: TrainState, batch: dict, logits_fn: Callable | None = None) -> dict:
    """Sums over the real (mask > 0) examples of the batch; padding contributes nothing.

    logits_fn(variables, images) replaces the plain forward pass, e.g. VGG dense evaluation.
    """
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    logits = (logits_fn or functools.partial(state.apply_fn, train=False))(variables, batch["image"])
    mask = batch["mask"].astype(jnp.float32)
    return {"loss": jnp.sum(cross_entropy(logits, batch["label"]) * mask),
            "top1": jnp.sum(correct_topk(logits, batch["label"], 1) * mask),
            "top5": jnp.sum(correct_topk(logits, batch["label"], 5) * mask),
            "count": jnp.sum(mask)}
