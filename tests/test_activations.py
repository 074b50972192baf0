"""Layer outputs by name, against the same layers computed by hand."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn import activations, models


@pytest.fixture(scope="module")
def tiny():
    model = models.create("convnet_cifar", 3, width=4)
    images = jax.random.normal(jax.random.key(1), (2, 8, 8, 3))
    return model, model.init(jax.random.key(0), images), images


def test_every_layer_by_name_equals_the_layer_computed_by_hand(tiny):
    model, variables, images = tiny
    outputs = activations.capture(model, variables, images)
    assert list(outputs) == ["conv1/conv", "conv1", "conv2/conv", "conv2", "logits"]
    conv1 = variables["params"]["conv1"]["conv"]
    expected = jax.lax.conv_general_dilated(images, conv1["kernel"], (1, 1), [(2, 2), (2, 2)],
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"))
    np.testing.assert_allclose(outputs["conv1/conv"], expected + conv1["bias"], atol=1e-5)
    np.testing.assert_array_equal(outputs["conv1"], jax.nn.relu(outputs["conv1/conv"]))
    assert outputs["conv2"].shape == (2, 4, 4, 4) and outputs["logits"].shape == (2, 2, 2, 3)
    np.testing.assert_allclose(outputs["logits"].mean(axis=(1, 2)),
                               model.apply(variables, images), atol=1e-6)


def test_only_the_layers_asked_for_in_their_order_and_an_unknown_name_is_one_error(tiny):
    model, variables, images = tiny
    assert list(activations.capture(model, variables, images, ["conv2", "conv1"])) == [
        "conv2", "conv1"]
    with pytest.raises(ValueError) as error:
        activations.capture(model, variables, images, ["conv1", "conv3"])
    assert str(error.value) == ("ConvNetCifar has no layer 'conv3'; layers: conv1/conv, conv1, "
                                "conv2/conv, conv2, logits")


def test_batch_norm_models_are_captured_in_eval_mode():
    model = models.create("convnet_cifar", 3, width=4, norm="batch")
    images = jax.random.normal(jax.random.key(1), (2, 8, 8, 3))
    variables = model.init(jax.random.key(0), images)
    outputs = activations.capture(model, variables, images, ["conv1/bn", "conv1"])
    bn = variables["params"]["conv1"]["bn"]            # fresh statistics: mean 0, variance 1
    conv = activations.capture(model, variables, images, ["conv1/conv"])["conv1/conv"]
    np.testing.assert_allclose(outputs["conv1/bn"],
                               conv / jnp.sqrt(1 + 1e-5) * bn["scale"] + bn["bias"], atol=1e-6)
    np.testing.assert_array_equal(outputs["conv1"], jax.nn.relu(outputs["conv1/bn"]))
