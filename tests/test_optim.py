"""Schedules and the optimiser chain against hand-computed values."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn import optim
from jaxcnn.config import OptimConfig


def schedule(**kw):
    cfg = OptimConfig(**kw)
    return optim.learning_rate_schedule(cfg, steps_per_epoch=390, global_batch=128,
                                        total_steps=78_000)


def test_discexp_follows_paddle_samples_semantics():
    # lr = 0.1 * 0.1 ** floor(step * 128 / 5e6): the first decay is between steps 39062 and 39063.
    lr = schedule(learning_rate=0.1, schedule="discexp", discexp_rate=0.1, discexp_samples=5_000_000)
    for step, samples_done in [(0, 0), (39_062, 4_999_936), (39_063, 5_000_064),
                               (78_124, 9_999_872), (78_125, 10_000_000)]:
        expected = 0.1 * 0.1 ** (samples_done // 5_000_000)
        np.testing.assert_allclose(lr(step), expected, rtol=1e-5, err_msg=str(step))


def test_piecewise_divides_at_epoch_boundaries_and_warmup_ramps():
    lr = schedule(learning_rate=0.01, schedule="piecewise", boundaries_epochs=(2, 4))
    np.testing.assert_allclose([lr(779), lr(780), lr(1559), lr(1560)],
                               [0.01, 0.001, 0.001, 0.0001], rtol=1e-5)
    warm = schedule(learning_rate=0.4, schedule="constant", warmup_steps=10)
    np.testing.assert_allclose([warm(0), warm(5), warm(10), warm(500)], [0, 0.2, 0.4, 0.4],
                               rtol=1e-6)


def test_unknown_names_are_rejected():
    with pytest.raises(ValueError, match="unknown schedule 'exp'.*discexp"):
        schedule(schedule="exp")
    with pytest.raises(ValueError, match="unknown optimizer 'lamb'.*nesterov"):
        optim.create_optimizer(OptimConfig(optimizer="lamb"), lambda s: 0.1, 10)


def run_updates(cfg, params, grads, steps):
    tx = optim.create_optimizer(cfg, optax_constant(cfg.learning_rate), steps_per_epoch=10)
    state = tx.init(params)
    history = []
    for _ in range(steps):
        updates, state = tx.update(grads, state, params)
        params = jax.tree.map(jnp.add, params, updates)
        history.append(params)
    return history


def optax_constant(value):
    return lambda step: value


PARAMS = {"conv": {"kernel": jnp.array([1.0, -2.0]), "bias": jnp.array([3.0])}}
ZERO_GRADS = jax.tree.map(jnp.zeros_like, PARAMS)


def test_coupled_l2_goes_through_momentum_and_skips_biases():
    lr, l2, mu = 0.1, 0.01, 0.9
    cfg = OptimConfig(optimizer="sgd", learning_rate=lr, momentum=mu, l2=l2)
    p1, p2 = run_updates(cfg, PARAMS, ZERO_GRADS, 2)
    w0 = PARAMS["conv"]["kernel"]
    w1 = w0 - lr * l2 * w0                               # v1 = l2 w0
    w2 = w1 - lr * (mu * l2 * w0 + l2 * w1)              # v2 = mu v1 + l2 w1
    np.testing.assert_allclose(p1["conv"]["kernel"], w1, rtol=1e-6)
    np.testing.assert_allclose(p2["conv"]["kernel"], w2, rtol=1e-6)
    np.testing.assert_array_equal(p2["conv"]["bias"], PARAMS["conv"]["bias"])


def test_decoupled_weight_decay_bypasses_momentum():
    lr, wd, mu = 0.1, 0.01, 0.9
    cfg = OptimConfig(optimizer="sgd", learning_rate=lr, momentum=mu, weight_decay=wd)
    p1, p2 = run_updates(cfg, PARAMS, ZERO_GRADS, 2)
    w0 = PARAMS["conv"]["kernel"]
    w1 = w0 - lr * wd * w0
    w2 = w1 - lr * wd * w1                               # momentum of zero gradients stays zero
    np.testing.assert_allclose(p1["conv"]["kernel"], w1, rtol=1e-6)
    np.testing.assert_allclose(p2["conv"]["kernel"], w2, rtol=1e-6)
    np.testing.assert_array_equal(p2["conv"]["bias"], PARAMS["conv"]["bias"])


def test_nesterov_and_clipping():
    grads = {"conv": {"kernel": jnp.array([3.0, 4.0]), "bias": jnp.array([0.0])}}
    cfg = OptimConfig(optimizer="nesterov", learning_rate=1.0, momentum=0.5, grad_clip_norm=1.0)
    (p1,) = run_updates(cfg, PARAMS, grads, 1)
    # clipped g = (0.6, 0.8); nesterov update = g + mu * (mu * 0 + g) = 1.5 g
    np.testing.assert_allclose(p1["conv"]["kernel"], PARAMS["conv"]["kernel"] - 1.5 * jnp.array(
        [0.6, 0.8]), rtol=1e-6)


def test_plateau_divides_learning_rate_after_flat_epochs():
    cfg = OptimConfig(optimizer="sgd", momentum=0.0, learning_rate=1.0, schedule="plateau",
                      plateau_patience=1, decay_factor=10.0)
    tx = optim.create_optimizer(cfg, optax_constant(1.0), steps_per_epoch=2)
    state = tx.init(PARAMS)
    lrs = []
    for step in range(8):
        _, state = tx.update(ZERO_GRADS, state, PARAMS, value=jnp.array(1.0))   # a flat loss
        lrs.append(float(optim.current_learning_rate(optax_constant(1.0), state, step)))
    assert lrs[0] == 1.0 and lrs[-1] < 1.0
