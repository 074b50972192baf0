"""The model zoo: exact parameter counts, input sizes, options, and forward passes checked against
plain lax / numpy computations with the same weights."""
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn import models
from jaxcnn.models import layers, vgg


def param_count(model, shape):
    variables = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, *shape)))
    return sum(x.size for x in jax.tree.leaves(variables["params"]))


def out_shape(model, shape, batch=2):
    variables = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, *shape)))
    return jax.eval_shape(model.apply, variables, jnp.zeros((batch, *shape))).shape


@pytest.mark.parametrize("name, count", [
    ("alexnet", 61_100_840), ("alexnet_lrn", 61_100_840), ("alexnet_v1", 60_965_224),
    ("vgg11", 132_863_336), ("vgg11_lrn", 132_863_336), ("vgg13", 133_047_848),
    ("vgg16c", 133_638_952), ("vgg16", 138_357_544), ("vgg19", 143_667_240),
    ("vgg11_bn", 132_868_840), ("vgg16_bn", 138_365_992), ("vgg19_bn", 143_678_248),
])
def test_parameter_counts_at_1000_classes(name, count):
    assert param_count(models.create(name), (224, 224, 3)) == count


def factorized_delta(cin, cout, k):
    """k×k conv (+bias) replaced by k×1 (+bias) then 1×k (+bias), both cout wide."""
    return (k * cin * cout + cout + k * cout * cout + cout) - (k * k * cin * cout + cout)


def test_factorize_all_changes_vgg16_count_by_the_expected_amount():
    widths = [w for w, _ in vgg.conv_layers(vgg.CFGS["D"])]
    expected = sum(factorized_delta(cin, cout, 3) for cin, cout in zip([3] + widths, widths))
    full = param_count(models.create("vgg16"), (224, 224, 3))
    factorized = param_count(models.create("vgg16", factorize="all"), (224, 224, 3))
    assert factorized - full == expected < 0


def test_factorize_chosen_layer_only():
    full = param_count(models.create("convnet_cifar", 10), (24, 24, 3))
    second = param_count(models.create("convnet_cifar", 10, factorize="2"), (24, 24, 3))
    assert second - full == factorized_delta(64, 64, 5)


def test_multi_branch_concatenates_four_branches():
    model = models.create("convnet_cifar", 10, multi_branch=[2])
    variables = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 24, 24, 3)))
    conv2 = variables["params"]["conv2"]
    assert sorted(conv2) == ["branch1x1", "branch3x3", "branch5x5", "branch7x7"]
    assert variables["params"]["logits"]["kernel"].shape == (5, 5, 256, 10)   # 4 × 64 channels in
    assert out_shape(model, (24, 24, 3)) == (2, 10)


@pytest.mark.parametrize("name, shape, classes", [
    ("lenet5", (32, 32, 1), 10), ("lenet5", (150, 150, 3), 2), ("vgg_mnist", (28, 28, 1), 10),
    ("convnet_cifar", (24, 24, 3), 10), ("vgg_cifar", (32, 32, 3), 10),
    ("vgg16", (64, 64, 3), 10), ("vgg16", (320, 256, 3), 7), ("alexnet", (127, 127, 3), 10),
    ("alexnet_v1", (256, 256, 3), 10), ("vgg11_bn", (32, 32, 3), 100),
])
def test_input_sizes(name, shape, classes):
    assert out_shape(models.create(name, classes), shape) == (2, classes)


@pytest.mark.parametrize("name, too_small, minimum", [
    ("vgg16", 31, 32), ("alexnet", 62, 63), ("lenet5", 28, 32), ("vgg_cifar", 16, 32),
])
def test_too_small_input_names_the_minimum(name, too_small, minimum):
    with pytest.raises(ValueError, match=f"at least {minimum}x{minimum}"):
        out_shape(models.create(name, 10), (too_small, too_small, 3))


def test_unknown_model_lists_valid_names():
    with pytest.raises(ValueError, match="unknown model 'vgg17'.*vgg16"):
        models.create("vgg17")


def test_unknown_option_and_bad_values_are_clear():
    with pytest.raises(ValueError, match="no option colour"):
        models.create("vgg16", colour="red")
    with pytest.raises(ValueError, match="unknown norm 'layer'"):
        models.create("vgg16", norm="layer")
    with pytest.raises(ValueError, match=r"out of range.*1\.\.2"):
        out_shape(models.create("convnet_cifar", 10, factorize="3"), (24, 24, 3))


def test_every_registered_model_builds():
    for name in models.names():
        shape = models.input_shape(name)
        assert out_shape(models.create(name, 3), shape) == (2, 3), name


# ---- numbers against independent computations -------------------------------------------------

def lax_conv(x, kernel, bias, stride=(1, 1), padding=((1, 1), (1, 1)), groups=1):
    y = jax.lax.conv_general_dilated(x, kernel, stride, padding,
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                     feature_group_count=groups,
                                     precision=jax.lax.Precision.HIGHEST)
    return y + bias


def test_small_vgg_forward_equals_plain_lax_composition():
    cfg = (4, "M", 8, (8, 1), "M")
    model = vgg.VGG(cfg=cfg, head=(16,), pool_to=(2, 2), num_classes=3, norm="batch")
    x = jax.random.normal(jax.random.key(1), (2, 16, 16, 3))
    variables = model.init(jax.random.key(0), x)
    # Non-trivial running statistics, so eval-mode BN is really exercised.
    variables = jax.tree.map(lambda a: a + 0.1 * jax.random.uniform(jax.random.key(2), a.shape),
                             variables)
    p, s = variables["params"], variables["batch_stats"]

    def block(h, name, k):
        pad = ((k // 2, k // 2),) * 2
        h = lax_conv(h, p[name]["conv"]["kernel"], p[name]["conv"]["bias"], padding=pad)
        bn, st = p[name]["bn"], s[name]["bn"]
        h = (h - st["mean"]) / jnp.sqrt(st["var"] + 1e-5) * bn["scale"] + bn["bias"]
        return jnp.maximum(h, 0)

    def pool(h, w):
        return jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, (1, w, w, 1), (1, w, w, 1), "VALID")

    h = pool(block(x, "conv1", 3), 2)
    h = pool(block(block(h, "conv2", 3), "conv3", 1), 2)                  # 4×4
    h = jax.lax.reduce_window(h, 0.0, jax.lax.add, (1, 2, 2, 1), (1, 2, 2, 1), "VALID") / 4
    h = h.reshape(2, -1)
    h = jnp.maximum(h @ p["fc1"]["kernel"] + p["fc1"]["bias"], 0)
    expected = h @ p["fc2"]["kernel"] + p["fc2"]["bias"]
    np.testing.assert_allclose(model.apply(variables, x), expected, atol=1e-5, rtol=1e-5)


def test_factorized_conv_equals_kx1_then_1xk():
    block = layers.ConvBlock(6, 5, stride=2, padding=1, factorize=True)
    x = jax.random.normal(jax.random.key(1), (2, 13, 11, 4))
    variables = block.init(jax.random.key(0), x)
    p = variables["params"]
    h = lax_conv(x, p["conv5x1"]["kernel"], p["conv5x1"]["bias"], (2, 1), ((1, 1), (0, 0)))
    h = lax_conv(jnp.maximum(h, 0), p["conv1x5"]["kernel"], p["conv1x5"]["bias"], (1, 2),
                 ((0, 0), (1, 1)))
    y = block.apply(variables, x)
    assert y.shape == (2, 6, 5, 6)   # same output size as the 5×5/2 conv it replaces
    np.testing.assert_allclose(y, jnp.maximum(h, 0), atol=1e-5)


def test_multi_branch_equals_concatenated_convs_and_keeps_valid_output_size():
    block = layers.ConvBlock(3, 5, padding=0, multi_branch=True)   # a LeNet-style VALID 5×5
    x = jax.random.normal(jax.random.key(1), (1, 12, 12, 2))
    variables = block.init(jax.random.key(0), x)
    p = variables["params"]
    outs = []
    for b in (1, 3, 5, 7):
        pad = b // 2 - 2
        xb = x[:, -pad:12 + pad, -pad:12 + pad] if pad < 0 else x
        pad = max(pad, 0)
        name = f"branch{b}x{b}"
        outs.append(lax_conv(xb, p[name]["kernel"], p[name]["bias"], padding=((pad, pad),) * 2))
    y = block.apply(variables, x)
    assert y.shape == (1, 8, 8, 12)
    np.testing.assert_allclose(y, jnp.maximum(jnp.concatenate(outs, -1), 0), atol=1e-5)


def test_lrn_matches_its_formula():
    x = np.random.default_rng(0).normal(size=(2, 3, 3, 11)).astype(np.float32)
    radius, bias, alpha, beta = 2, 2.0, 1e-2, 0.75
    expected = np.empty_like(x)
    for d in range(11):
        lo, hi = max(0, d - radius), min(11, d + radius + 1)
        expected[..., d] = x[..., d] / (bias + alpha * (x[..., lo:hi] ** 2).sum(-1)) ** beta
    got = layers.lrn(jnp.asarray(x), radius=radius, bias=bias, alpha=alpha, beta=beta)
    np.testing.assert_allclose(got, expected, rtol=1e-5)


@pytest.mark.parametrize("size, out", [(5, 3), (1, 7), (14, 7), (9, 4)])
def test_adaptive_avg_pool_matches_torch_definition(size, out):
    x = np.random.default_rng(0).normal(size=(1, size, size + 1, 2)).astype(np.float32)
    expected = np.empty((1, out, out, 2), np.float32)
    for i in range(out):
        for j in range(out):
            r0, r1 = i * size // out, -(-(i + 1) * size // out)
            c0, c1 = j * (size + 1) // out, -(-(j + 1) * (size + 1) // out)
            expected[0, i, j] = x[0, r0:r1, c0:c1].mean(axis=(0, 1))
    np.testing.assert_allclose(layers.adaptive_avg_pool(jnp.asarray(x), (out, out)), expected,
                               rtol=1e-5, atol=1e-6)


def test_grouped_alexnet_v1_kernels_are_split_in_two():
    variables = jax.eval_shape(models.create("alexnet_v1").init, jax.random.key(0),
                               jnp.zeros((1, 224, 224, 3)))
    assert variables["params"]["conv2"]["conv"]["kernel"].shape == (5, 5, 48, 256)
    assert variables["params"]["conv3"]["conv"]["kernel"].shape == (3, 3, 256, 384)


# ---- train / eval behaviour and dtype ---------------------------------------------------------

def test_train_mode_uses_dropout_and_updates_batch_stats():
    model = models.create("vgg_cifar", 10, groups=((8, (0.3, 0.0)), (16, (0.4, 0.0))))
    x = jax.random.normal(jax.random.key(1), (4, 8, 8, 3))
    variables = model.init(jax.random.key(0), x)
    eval_out = model.apply(variables, x)
    np.testing.assert_array_equal(eval_out, model.apply(variables, x))
    run = lambda seed: model.apply(variables, x, train=True, rngs={"dropout": jax.random.key(seed)},
                                   mutable=["batch_stats"])
    (a, updates), (b, _) = run(1), run(2)
    assert not np.allclose(a, b)
    before = variables["batch_stats"]["conv1"]["bn"]["mean"]
    assert not np.allclose(updates["batch_stats"]["conv1"]["bn"]["mean"], before)


def test_bfloat16_computation_keeps_float32_parameters():
    x = jax.random.normal(jax.random.key(1), (2, 24, 24, 3))
    model32 = models.create("convnet_cifar", 10, norm="batch")
    model16 = models.create("convnet_cifar", 10, norm="batch", dtype=jnp.bfloat16)
    variables = model32.init(jax.random.key(0), x)
    assert {a.dtype for a in jax.tree.leaves(model16.init(jax.random.key(0), x))} == {np.dtype("float32")}
    y16, y32 = model16.apply(variables, x), model32.apply(variables, x)
    assert y16.dtype == jnp.float32
    np.testing.assert_allclose(y16, y32, atol=0.05 * float(jnp.abs(y32).max()))


def test_importing_models_does_not_import_tensorflow():
    code = "import sys, jaxcnn.models; assert 'tensorflow' not in sys.modules, 'tensorflow imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_summary_prints_every_layer_shape_parameters_and_flops():
    out = subprocess.run([sys.executable, "-m", "experiments.summary", "--model=lenet5",
                          "--num_classes=10"], capture_output=True, text=True, check=True,
                         cwd=__file__.rsplit("/tests/", 1)[0]).stdout
    for shape in ("[1,28,28,6]", "[1,10,10,16]", "[1,1,1,120]", "[1,84]", "[1,10]"):
        assert shape in out
    assert "Total Parameters: 61,706" in out and "flops" in out
