"""The im2col, single-channel and col2im-gradient convolutions (`jaxcnn.cpu.conv`) equal
`lax.conv_general_dilated` (values and gradients, to 1e-5); the "auto" choice and the `conv_impl`
compute option (the oneDNN form: tests/test_cpu_onednn.py)."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from jaxcnn import models, programs
from jaxcnn.cpu import conv as conv_forms
from jaxcnn.cpu import onednn
from jaxcnn.cpu.policy import Compute

NHWC = ("NHWC", "HWIO", "NHWC")
CASES = {  # x shape, kernel shape (in the layout's order), strides, padding, groups, layout
    "stride_pad_7x7": ((2, 15, 15, 3), (7, 7, 3, 4), (4, 4), [(2, 2), (2, 2)], 1, NHWC),
    "valid_asym_stride": ((1, 9, 8, 4), (3, 2, 4, 6), (2, 1), "VALID", 1, NHWC),
    "uneven_padding": ((2, 5, 7, 4), (5, 1, 4, 3), (1, 2), [(2, 1), (0, 3)], 1, NHWC),
    "groups": ((2, 7, 7, 6), (3, 3, 3, 4), (1, 1), "SAME", 2, NHWC),
    "pointwise_2x2": ((3, 2, 2, 8), (1, 1, 8, 8), (1, 1), "SAME", 1, NHWC),
    "nchw": ((2, 4, 6, 6), (5, 4, 3, 3), (2, 2), "SAME", 1, ("NCHW", "OIHW", "NCHW")),
}
SINGLE_CHANNEL_CASES = {  # x shape, kernel shape, strides, padding, kernel dilation, layout
    "lenet_5x5_valid": ((3, 12, 12, 1), (5, 5, 1, 6), (1, 1), "VALID", (1, 1), NHWC),
    "same_stride_2": ((2, 9, 8, 1), (3, 3, 1, 4), (2, 2), "SAME", (1, 1), NHWC),
    "padded_dilated": ((2, 10, 10, 1), (3, 2, 1, 5), (1, 2), [(2, 1), (0, 3)], (2, 1), NHWC),
    "nchw": ((2, 1, 7, 7), (4, 1, 3, 3), (1, 1), "SAME", (1, 1), ("NCHW", "OIHW", "NCHW")),
}

COL2IM_GRAD_CASES = {  # x shape, kernel shape, strides, padding, kernel dilation, layout
    "lenet_conv2_valid": ((3, 14, 14, 6), (5, 5, 6, 16), (1, 1), "VALID", (1, 1), NHWC),
    "alexnet_stride_4": ((2, 23, 23, 3), (11, 11, 3, 8), (4, 4), [(2, 1), (2, 1)], (1, 1), NHWC),
    "same_stride_2_uneven": ((2, 9, 8, 4), (3, 2, 4, 5), (2, 1), "SAME", (1, 1), NHWC),
    "padded_dilated": ((2, 10, 10, 2), (3, 2, 2, 5), (1, 2), [(2, 1), (0, 3)], (2, 1), NHWC),
    "nchw_3_channels": ((2, 3, 7, 7), (4, 3, 3, 3), (1, 1), "SAME", (1, 1),
                        ("NCHW", "OIHW", "NCHW")),
}


def _conv(conv, case):
    """`conv` for `case` as a jitted (x, w) -> y."""
    _, _, strides, padding, groups, layout = case
    return jax.jit(lambda x, w: conv(x, w, strides, padding, dimension_numbers=layout,
                                     feature_group_count=groups, precision=lax.Precision.HIGHEST))


@pytest.mark.parametrize("name", CASES)
def test_im2col_equals_xla_with_gradients(name):
    case = CASES[name]
    kx, kw, kc = jax.random.split(jax.random.key(0), 3)
    x, w = jax.random.normal(kx, case[0]), jax.random.normal(kw, case[1])
    xla, im2col = (_conv(c, case)(x, w)
                   for c in (lax.conv_general_dilated, conv_forms.im2col_conv_general_dilated))
    np.testing.assert_allclose(im2col, xla, rtol=1e-5, atol=1e-5)
    cotangent = jax.random.normal(kc, xla.shape)

    def grads(conv):
        conv = _conv(conv, case)
        return jax.jit(jax.grad(lambda x, w: jnp.vdot(conv(x, w), cotangent), (0, 1)))(x, w)

    for got, want in zip(grads(conv_forms.im2col_conv_general_dilated),
                         grads(lax.conv_general_dilated)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def _choice(x_shape, k, strides=(1, 1), groups=1, padding="SAME", onednn_dtypes=(),
            dtype=jnp.float32):
    kernel = (k, k, x_shape[-1] // groups, 8)
    return conv_forms.auto_choice(x_shape, kernel, strides, padding, NHWC, groups, dtype=dtype,
                                  onednn_dtypes=onednn_dtypes)


def test_auto_choice_single_channel_im2col_for_tiny_maps_col2im_grad_for_few_channels():
    choice = _choice

    assert choice((64, 2, 2, 8), 3) == choice((64, 1, 1, 8), 3) == "im2col"
    assert choice((64, 4, 4, 8), 3, strides=(2, 2)) == "im2col"
    assert choice((64, 56, 56, 8), 1) == "im2col"
    assert choice((64, 32, 32, 1), 5) == "single_channel"
    assert choice((64, 5, 5, 16), 5, padding="VALID") == "im2col"        # LeNet's conv3: 1×1 out
    assert choice((64, 14, 14, 6), 5, padding="VALID") == "col2im_grad"  # LeNet's conv2
    assert choice((64, 32, 32, 3), 3) == choice((64, 8, 8, 8), 3) == "col2im_grad"
    assert choice((64, 6, 6, 16), 3, padding=[(0, 0), (0, 0)]) == "xla"  # 4×4 out: 16 pixels
    assert choice((64, 8, 8, 9), 3) == "xla"
    assert choice((64, 8, 8, 8), 3, groups=8) == "xla"


def test_auto_choice_with_onednn_takes_every_2d_conv_above_4x4_out_in_the_dtypes_it_takes():
    choice = functools.partial(_choice, onednn_dtypes=(jnp.float32,))
    assert choice((64, 32, 32, 3), 3) == choice((64, 32, 32, 1), 5) == "onednn"
    assert choice((64, 14, 14, 6), 5, padding="VALID") == "onednn"       # LeNet's conv2: 10×10
    assert choice((16, 224, 224, 3), 11, strides=(4, 4)) == "onednn"
    assert choice((64, 5, 5, 64), 3, padding="VALID") == "xla"           # 3×3 out
    assert choice((64, 4, 4, 256), 3) == "xla"                           # 4×4 out: 16 pixels
    assert choice((64, 2, 2, 8), 3) == choice((64, 56, 56, 8), 1) == "im2col"
    assert choice((64, 8, 8, 8), 3, groups=8) == "xla"
    assert choice((64, 32, 32, 9), 3, dtype=jnp.bfloat16) == "xla"
    with_bfloat16 = (jnp.float32, jnp.bfloat16)                 # a CPU with AMX / AVX512-BF16
    assert _choice((64, 32, 32, 9), 3, dtype=jnp.bfloat16, onednn_dtypes=with_bfloat16) == "onednn"
    assert _choice((64, 4, 4, 256), 3, dtype=jnp.bfloat16, onednn_dtypes=with_bfloat16) == "xla"
    assert _choice((64, 32, 32, 9), 3, dtype=jnp.float16, onednn_dtypes=with_bfloat16) == "xla"
    assert choice((64, 32, 32, 9), 3, dtype=None) == "xla"             # operands' dtypes differ
    # where it is not said, oneDNN is used on one device only: XLA would run a custom call of a
    # program sharded over devices on the gathered batch (tests/conftest.py sets 8 devices)
    assert jax.device_count() == 8
    assert _choice((64, 32, 32, 9), 3, onednn_dtypes=None) == "xla"


@pytest.mark.parametrize("conv, case", [
    *[(conv_forms.single_channel_conv_general_dilated, c) for c in SINGLE_CHANNEL_CASES.values()],
    *[(conv_forms.col2im_grad_conv_general_dilated, c) for c in COL2IM_GRAD_CASES.values()]],
    ids=[*SINGLE_CHANNEL_CASES, *COL2IM_GRAD_CASES])
def test_single_channel_and_col2im_grad_equal_xla_with_gradients(conv, case):
    x_shape, w_shape, strides, padding, dilation, layout = case
    kx, kw, kc = jax.random.split(jax.random.key(0), 3)
    x, w = jax.random.normal(kx, x_shape), jax.random.normal(kw, w_shape)

    def value_and_grads(conv):
        f = jax.jit(lambda x, w: conv(x, w, strides, padding, rhs_dilation=dilation,
                                      dimension_numbers=layout, precision=lax.Precision.HIGHEST))
        y, vjp = jax.vjp(f, x, w)
        return (y, *vjp(jax.random.normal(kc, y.shape)))

    for got, want in zip(value_and_grads(conv), value_and_grads(lax.conv_general_dilated)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_conv_impl_option_gives_the_same_results():
    x = jax.random.normal(jax.random.key(1), (2, 4, 4, 3))   # conv 2 sees 2×2 maps: "auto" → im2col
    model = models.create("convnet_cifar", 5, width=8)
    variables = jax.jit(model.init)(jax.random.key(0), x)
    outputs = [programs.jit(model.apply, Compute(conv_impl=impl))(variables, x)
               for impl in ("xla", "im2col", "auto") + ("onednn",) * onednn.available()]
    for out in outputs[1:]:
        np.testing.assert_allclose(out, outputs[0], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="unknown conv_impl 'winograd'"):
        Compute(conv_impl="winograd")


@pytest.mark.parametrize("with_onednn, forms", [
    (False, ["single_channel", "col2im_grad", "im2col"]),
    pytest.param(True, ["onednn", "onednn", "im2col"], marks=pytest.mark.skipif(
        not onednn.available(), reason=f"oneDNN unavailable: {onednn.unavailable_reason()}"))])
def test_auto_gives_xlas_gradients_on_lenet5(monkeypatch, with_onednn, forms):
    """LeNet-5 under "auto" runs the CPU forms (without oneDNN: single-channel conv1,
    col2im-gradient conv2, im2col conv3; with it: oneDNN for conv1 and conv2); its parameter
    gradients equal those under XLA's conv."""
    monkeypatch.setattr(jax, "device_count", lambda *backend: 1)
    monkeypatch.setattr(onednn, "dtypes", lambda: (jnp.float32,) * with_onednn)
    x = jax.random.normal(jax.random.key(1), (3, 32, 32, 1))
    grads = []
    model = models.create("lenet5", 10)
    variables = jax.jit(model.init)(jax.random.key(0), x)
    loss = lambda params: jnp.sum(model.apply({"params": params}, x) ** 2)
    for impl in ("xla", "auto"):
        grads.append(programs.jit(jax.grad(loss), Compute(conv_impl=impl))(variables["params"]))
    assert [conv_forms.auto_choice((3, *shape), (5, 5, shape[-1], 8), (1, 1), "VALID", NHWC)
            for shape in ((32, 32, 1), (14, 14, 6), (5, 5, 16))] == forms
    jax.tree.map(lambda got, want: np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5),
                 grads[1], grads[0])


@pytest.mark.parametrize("conv, x_shape, w_shape, use", [
    (conv_forms.single_channel_conv_general_dilated, (8, 32, 32, 1), (5, 5, 1, 6), "output"),
    (conv_forms.col2im_grad_conv_general_dilated, (8, 14, 14, 6), (5, 5, 6, 16), "input_grad")],
    ids=["single_channel_output", "col2im_input_grad"])
def test_bfloat16_sums_over_taps_accumulate_in_float32_as_xla_does(conv, x_shape, w_shape, use):
    """In bfloat16, LeNet's conv1 output and conv2 input gradient (each a sum over 25 taps) are
    no further from the float32 result than XLA's own bfloat16 convolution's (summed in
    bfloat16 they were about twice as far)."""
    kx, kw, kc = jax.random.split(jax.random.key(0), 3)
    x, w = jax.random.normal(kx, x_shape), jax.random.normal(kw, w_shape)
    dy = jax.random.normal(kc, (x_shape[0], x_shape[1] - 4, x_shape[2] - 4, w_shape[-1]))

    def result(conv, dtype):
        f = lambda x: conv(x, w.astype(dtype), (1, 1), "VALID", dimension_numbers=NHWC)
        y, vjp = jax.vjp(f, x.astype(dtype))
        return y if use == "output" else vjp(dy.astype(dtype))[0]

    exact = result(lax.conv_general_dilated, jnp.float32)
    error = lambda got: float(jnp.max(jnp.abs(got.astype(jnp.float32) - exact))
                              / jnp.max(jnp.abs(exact)))
    ours = result(conv, jnp.bfloat16)
    assert ours.dtype == jnp.bfloat16 and error(ours) > 0
    assert error(ours) <= 1.1 * error(result(lax.conv_general_dilated, jnp.bfloat16))
