"""VGG dense evaluation: the FC head slid over a larger test image, with the forward's parameters.

A VGG with tiny widths keeps the real geometry (five 2×2 pools, a 7×7 head window on 224 inputs).
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn.models import vgg
from jaxcnn.models.vgg import VGG

TINY = dict(cfg=(8, "M", 8, "M", 16, "M", 16, "M", 16, "M"), head=(32, 32), num_classes=5)
dense_eval_logits = jax.jit(vgg.dense_eval_logits, static_argnums=(0, 3))


class FeatureProbe(VGG):
    """The same VGG, with its feature map exposed as an `apply` method."""

    @nn.compact
    def feature_map(self, x):
        return self.features(x, train=False)


@pytest.fixture(scope="module")
def model_and_variables():
    """Random parameters and BN statistics in the model's variable tree (numpy is quicker than
    compiling `model.init`'s truncated-normal initialisers)."""
    model = VGG(**TINY, norm="batch")
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 224, 224, 3)))
    rng = np.random.default_rng(0)

    def fill(path, leaf):
        name = jax.tree_util.keystr(path[-1:], simple=True)
        if name == "var":
            return rng.uniform(0.5, 1.5, leaf.shape).astype(np.float32)
        scale = 1 / np.sqrt(np.prod(leaf.shape[:-1])) if name == "kernel" else 0.1
        return (scale * rng.standard_normal(leaf.shape)).astype(np.float32)

    return model, jax.tree_util.tree_map_with_path(fill, shapes)


def images(size, batch=2, seed=1):
    return jax.random.normal(jax.random.key(seed), (batch, *size, 3))


def test_equals_forward_pass_at_training_size(model_and_variables):
    model, variables = model_and_variables
    x = images((224, 224))
    np.testing.assert_allclose(dense_eval_logits(model, variables, x),
                               jax.jit(model.apply)(variables, x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("size", [(256, 256), (384, 384), (256, 320)])
def test_larger_images_give_per_class_scores(model_and_variables, size):
    model, variables = model_and_variables
    scores = dense_eval_logits(model, variables, images(size))
    assert scores.shape == (2, TINY["num_classes"])
    assert np.isfinite(scores).all()


def test_scores_are_the_head_averaged_over_every_7x7_window(model_and_variables):
    """256 → 8×8 feature map → 2×2 windows, each through the FC head as a plain numpy MLP."""
    model, variables = model_and_variables
    x = images((256, 256))
    fmap = np.asarray(FeatureProbe(**TINY, norm="batch").apply(variables, x,
                                                                method=FeatureProbe.feature_map))
    assert fmap.shape[1:3] == (8, 8)
    p = jax.tree.map(np.asarray, variables["params"])
    windows = [fmap[:, i:i + 7, j:j + 7].reshape(len(x), -1) for i in range(2) for j in range(2)]
    hidden = [np.maximum(w @ p["fc1"]["kernel"] + p["fc1"]["bias"], 0) for w in windows]
    hidden = [np.maximum(h @ p["fc2"]["kernel"] + p["fc2"]["bias"], 0) for h in hidden]
    expected = np.mean([h @ p["fc3"]["kernel"] + p["fc3"]["bias"] for h in hidden], axis=0)
    np.testing.assert_allclose(dense_eval_logits(model, variables, x), expected,
                               atol=1e-4, rtol=1e-4)


def test_flip_averages_the_posteriors_of_both_passes(model_and_variables):
    model, variables = model_and_variables
    x = images((256, 288))
    both = jax.nn.softmax(dense_eval_logits(model, variables, x, flip=True))
    plain = jax.nn.softmax(dense_eval_logits(model, variables, x))
    mirrored = jax.nn.softmax(dense_eval_logits(model, variables, x[:, :, ::-1]))
    np.testing.assert_allclose(both, (plain + mirrored) / 2, atol=1e-6)


def test_rejects_images_smaller_than_the_head_window(model_and_variables):
    model, variables = model_and_variables
    with pytest.raises(ValueError, match="at least 7x7"):
        dense_eval_logits(model, variables, images((192, 192)))
