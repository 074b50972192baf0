"""Pretrained weights in, without downloads: Keras VGGs built with random weights, and
torchvision-layout state dicts of known arrays checked against an NCHW numpy forward pass."""
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy
from numpy.lib.stride_tricks import sliding_window_view

from jaxcnn import models, pretrained
from jaxcnn.models.alexnet import AlexNet
from jaxcnn.models.vgg import VGG

RNG = np.random.default_rng(0)


# --- Keras ------------------------------------------------------------------------------------

def test_import_does_not_load_tensorflow():
    code = "import sys, jaxcnn.pretrained; assert not {'keras', 'tensorflow'} & set(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=pathlib.Path(__file__).parents[1])


@pytest.fixture(scope="module")
def keras():
    return pytest.importorskip("keras")


def test_keras_vgg16_gives_the_same_logits(keras):
    keras_model = keras.applications.VGG16(weights=None, classifier_activation=None)
    x = 50 * RNG.standard_normal((2, 224, 224, 3), dtype=np.float32)
    expected = np.asarray(keras_model(x, training=False))
    logits = jax.jit(models.create("vgg16").apply)(pretrained.from_keras(keras_model), x)
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # Keras saving
def test_keras_h5_weights_without_top_are_vgg19_convs(keras, tmp_path):
    keras_model = keras.applications.VGG19(weights=None, include_top=False, input_shape=(32, 32, 3))
    path = str(tmp_path / "vgg19_notop.weights.h5")
    keras_model.save_weights(path)
    params = pretrained.load_keras(path, "vgg19", include_top=False)["params"]
    shapes = jax.eval_shape(models.create("vgg19").init, jax.random.key(0),
                            jnp.zeros((1, 224, 224, 3)))["params"]
    assert set(params) == {f"conv{i}" for i in range(1, 17)}
    for name, conv in params.items():
        assert conv["conv"]["kernel"].shape == shapes[name]["conv"]["kernel"].shape
    np.testing.assert_array_equal(params["conv16"]["conv"]["kernel"],
                                  keras_model.get_layer("block5_conv4").get_weights()[0])


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # Keras saving
def test_keras_model_archive_loads_in_safe_mode(keras, tmp_path):
    keras_model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3),
                                    keras.layers.Flatten(), keras.layers.Dense(2)])
    path = str(tmp_path / "small.keras")
    keras_model.save(path)
    params = pretrained.load_keras(path)["params"]
    np.testing.assert_array_equal(params["conv1"]["conv"]["kernel"], keras_model.weights[0])
    np.testing.assert_array_equal(params["fc1"]["kernel"], keras_model.weights[2])


# --- torchvision layout -------------------------------------------------------------------------

def test_layout_has_torchvision_module_indices():
    def indices(name):
        layout = pretrained.torchvision_layout(models.create(name))
        convs = [int(k.split(".")[1]) for k, path in layout.items() if path[-1] == "conv"]
        fcs = [int(k.split(".")[1]) for k in layout if k.startswith("classifier.")]
        return convs, fcs

    assert indices("vgg11") == ([0, 3, 6, 8, 11, 13, 16, 18], [0, 3, 6])
    assert indices("vgg16") == ([0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28], [0, 3, 6])
    assert indices("vgg16_bn") == ([0, 3, 7, 10, 14, 17, 20, 24, 27, 30, 34, 37, 40], [0, 3, 6])
    assert indices("vgg19")[0] == [0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34]
    assert indices("alexnet") == ([0, 3, 6, 8, 10], [1, 4, 6])
    assert pretrained.torchvision_layout(models.create("vgg11_bn"))["features.1"] == ("conv1", "bn")


@pytest.mark.parametrize("name", ["alexnet_lrn", "vgg11_lrn", "vgg_cifar"])
def test_layouts_torchvision_lacks_are_refused(name):
    with pytest.raises(ValueError):
        pretrained.torchvision_layout(models.create(name))


# Tiny models in torchvision's own terms: `features` and `classifier` as nn.Sequential module lists,
# so the index of a module is its position. Both keep the real 224 geometry (7×7 / 6×6 maps).
def conv(cin, cout, k=3, stride=1, pad=1):
    return ("conv", cin, cout, k, stride, pad)


def bn(c):
    return ("bn", c)


RELU, DROPOUT = ("relu",), ("dropout",)
POOL2, POOL3 = ("pool", 2, 2), ("pool", 3, 2)
VGG_BN_TORCH = (
    [conv(3, 8), bn(8), RELU, POOL2, conv(8, 8), bn(8), RELU, POOL2, conv(8, 16), bn(16), RELU,
     POOL2, conv(16, 16), bn(16), RELU, POOL2, conv(16, 16), bn(16), RELU, POOL2],
    [("linear", 16 * 7 * 7, 32), RELU, DROPOUT, ("linear", 32, 32), RELU, DROPOUT,
     ("linear", 32, 5)])
ALEXNET_TORCH = (
    [conv(3, 4, 11, 4, 2), RELU, POOL3, conv(4, 8, 5, 1, 2), RELU, POOL3, conv(8, 8), RELU,
     conv(8, 8), RELU, conv(8, 8), RELU, POOL3],
    [DROPOUT, ("linear", 8 * 6 * 6, 4096), RELU, DROPOUT, ("linear", 4096, 4096), RELU,
     ("linear", 4096, 5)])
TINY_MODELS = {
    "vgg_bn": (VGG(cfg=(8, "M", 8, "M", 16, "M", 16, "M", 16, "M"), head=(32, 32), num_classes=5,
                   norm="batch"), VGG_BN_TORCH),
    "alexnet": (AlexNet(widths=(4, 8, 8, 8, 8), num_classes=5), ALEXNET_TORCH),
}


def torch_state_dict(sequentials):
    """Known random arrays under torchvision's key names and shapes."""
    state = {}
    for part, modules in zip(("features", "classifier"), sequentials):
        for i, (kind, *args) in enumerate(modules):
            key = f"{part}.{i}"
            if kind == "conv":
                cin, cout, k = args[:3]
                scale = 1 / np.sqrt(cin * k * k)
                state[f"{key}.weight"] = scale * RNG.standard_normal((cout, cin, k, k))
                state[f"{key}.bias"] = 0.1 * RNG.standard_normal(cout)
            elif kind == "bn":
                state[f"{key}.weight"] = RNG.uniform(0.5, 1.5, args[0])
                state[f"{key}.bias"] = 0.1 * RNG.standard_normal(args[0])
                state[f"{key}.running_mean"] = 0.1 * RNG.standard_normal(args[0])
                state[f"{key}.running_var"] = RNG.uniform(0.5, 1.5, args[0])
                state[f"{key}.num_batches_tracked"] = np.array(100)
            elif kind == "linear":
                fan_in, fan_out = args
                state[f"{key}.weight"] = RNG.standard_normal((fan_out, fan_in)) / np.sqrt(fan_in)
                state[f"{key}.bias"] = 0.1 * RNG.standard_normal(fan_out)
    return {k: v.astype(np.float32) if v.dtype == np.float64 else v for k, v in state.items()}


def windows(x, k, stride):
    """(N, C, H', W', k, k) sliding k×k windows of an NCHW batch at `stride`."""
    return sliding_window_view(x, (k, k), axis=(2, 3))[:, :, ::stride, ::stride]


def torch_forward(sequentials, state, x):
    """The torch model's eval forward pass in numpy, NCHW, flattening (C, H, W) before the head."""
    for part, modules in zip(("features", "classifier"), sequentials):
        for i, (kind, *args) in enumerate(modules):
            p = {key.rsplit(".", 1)[1]: value for key, value in state.items()
                 if key.startswith(f"{part}.{i}.")}
            channel = {key: value[:, None, None] for key, value in p.items() if value.ndim == 1}
            if kind == "conv":
                k, stride, pad = args[2:]
                x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
                x = np.einsum("nchwij,ocij->nohw", windows(x, k, stride), p["weight"],
                              optimize=True)
                x = x + channel["bias"]
            elif kind == "bn":
                x = ((x - channel["running_mean"]) / np.sqrt(channel["running_var"] + 1e-5)
                     * channel["weight"] + channel["bias"])
            elif kind == "pool":
                x = windows(x, *args).max(axis=(-2, -1))
            elif kind == "relu":
                x = np.maximum(x, 0)
            elif kind == "linear":
                x = x @ p["weight"].T + p["bias"]
        x = x.reshape(len(x), -1)   # torch.flatten(x, 1) between features and classifier
    return x


@pytest.mark.parametrize("name", TINY_MODELS)
def test_torchvision_state_dict_gives_the_torch_forward_pass(name):
    model, sequentials = TINY_MODELS[name]
    state = torch_state_dict(sequentials)
    variables = pretrained.from_torchvision(state, model)
    x = RNG.standard_normal((2, 3, 224, 224), dtype=np.float32)
    expected = torch_forward(sequentials, state, x)
    logits = jax.jit(model.apply)(variables, x.transpose(0, 2, 3, 1))
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_torchvision_arrays_land_in_the_expected_tensors():
    model, sequentials = TINY_MODELS["vgg_bn"]
    state = torch_state_dict(sequentials)
    variables = pretrained.from_torchvision(state, model)
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 224, 224, 3)))
    assert jax.tree.map(np.shape, variables) == jax.tree.map(lambda s: s.shape, shapes)
    params, stats = variables["params"], variables["batch_stats"]
    assert params["conv3"]["conv"]["kernel"][2, 0, 5, 7] == state["features.8.weight"][7, 5, 2, 0]
    np.testing.assert_array_equal(params["conv3"]["bn"]["scale"], state["features.9.weight"])
    np.testing.assert_array_equal(stats["conv5"]["bn"]["var"], state["features.17.running_var"])
    np.testing.assert_array_equal(params["fc2"]["kernel"], state["classifier.3.weight"].T)
    # fc1 input (h, w, c) of the NHWC flatten is torch's input c*49 + h*7 + w
    h, w, c = 2, 3, 5
    assert params["fc1"]["kernel"][(h * 7 + w) * 16 + c, 9] == \
        state["classifier.0.weight"][9, c * 49 + h * 7 + w]


def test_first_fc_reads_an_nchw_flatten_as_nhwc():
    fmap = RNG.standard_normal((2, 6, 5, 5), dtype=np.float32)          # N, C, H, W
    torch_weight = RNG.standard_normal((3, 6 * 5 * 5), dtype=np.float32)  # (out, C*H*W)
    expected = fmap.reshape(2, -1) @ torch_weight.T
    kernel = pretrained.chw_to_hwc_rows(torch_weight.T, channels=6)
    np.testing.assert_allclose(fmap.transpose(0, 2, 3, 1).reshape(2, -1) @ kernel, expected,
                               rtol=1e-5, atol=1e-5)


def test_stray_state_dict_entries_are_refused():
    model, sequentials = TINY_MODELS["vgg_bn"]
    state = torch_state_dict(sequentials) | {"features.99.weight": np.zeros(3, np.float32)}
    with pytest.raises(ValueError, match="features.99.weight"):
        pretrained.from_torchvision(state, model)


# --- files and merging --------------------------------------------------------------------------

def test_state_dict_files_load_without_pickle(tmp_path):
    state = torch_state_dict(VGG_BN_TORCH)
    np.savez(tmp_path / "w.npz", **state)
    safetensors.numpy.save_file(state, str(tmp_path / "w.safetensors"))
    for path in ("w.npz", "w.safetensors"):
        loaded = pretrained.load_state_dict(str(tmp_path / path))
        assert loaded.keys() == state.keys()
        for key, value in state.items():
            np.testing.assert_array_equal(loaded[key], value)
    with pytest.raises(ValueError, match="pickle"):
        pretrained.load_state_dict(str(tmp_path / "w.pth"))


def test_merge_replaces_all_but_the_skipped_head():
    model, sequentials = TINY_MODELS["vgg_bn"]
    weights = pretrained.from_torchvision(torch_state_dict(sequentials), model)
    target = model.clone(num_classes=3)
    shapes = jax.eval_shape(target.init, jax.random.key(0), jnp.zeros((1, 224, 224, 3)))
    fresh = jax.tree.map(lambda s: jnp.full(s.shape, 7.0, s.dtype), shapes)
    merged = pretrained.merge(fresh, weights, skip=("fc3",))
    np.testing.assert_array_equal(merged["params"]["fc1"]["kernel"],
                                  weights["params"]["fc1"]["kernel"])
    np.testing.assert_array_equal(merged["batch_stats"]["conv2"]["bn"]["mean"],
                                  weights["batch_stats"]["conv2"]["bn"]["mean"])
    assert (merged["params"]["fc3"]["kernel"] == 7).all()
    with pytest.raises(ValueError, match="fc3/kernel"):
        pretrained.merge(fresh, weights)
