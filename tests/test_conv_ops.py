"""The im2col convolution equals `lax.conv_general_dilated` (values and gradients); the "auto"
policy and the `conv_impl` model option."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from jaxcnn import models
from jaxcnn.models import conv_ops

NHWC = ("NHWC", "HWIO", "NHWC")
CASES = {  # x shape, kernel shape (in the layout's order), strides, padding, groups, layout
    "stride_pad_7x7": ((2, 15, 15, 3), (7, 7, 3, 4), (4, 4), [(2, 2), (2, 2)], 1, NHWC),
    "valid_asym_stride": ((1, 9, 8, 4), (3, 2, 4, 6), (2, 1), "VALID", 1, NHWC),
    "uneven_padding": ((2, 5, 7, 4), (5, 1, 4, 3), (1, 2), [(2, 1), (0, 3)], 1, NHWC),
    "groups": ((2, 7, 7, 6), (3, 3, 3, 4), (1, 1), "SAME", 2, NHWC),
    "pointwise_2x2": ((3, 2, 2, 8), (1, 1, 8, 8), (1, 1), "SAME", 1, NHWC),
    "nchw": ((2, 4, 6, 6), (5, 4, 3, 3), (2, 2), "SAME", 1, ("NCHW", "OIHW", "NCHW")),
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
                   for c in (lax.conv_general_dilated, conv_ops.im2col_conv_general_dilated))
    np.testing.assert_allclose(im2col, xla, rtol=1e-5, atol=1e-5)
    cotangent = jax.random.normal(kc, xla.shape)

    def grads(conv):
        conv = _conv(conv, case)
        return jax.jit(jax.grad(lambda x, w: jnp.vdot(conv(x, w), cotangent), (0, 1)))(x, w)

    for got, want in zip(grads(conv_ops.im2col_conv_general_dilated),
                         grads(lax.conv_general_dilated)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_policy_uses_im2col_only_on_cpu_for_tiny_maps_and_pointwise_convs():
    def prefers(x_shape, k, backend="cpu", strides=(1, 1)):
        return conv_ops.prefers_im2col(x_shape, (k, k, 8, 8), strides, NHWC, backend=backend)

    assert prefers((64, 2, 2, 8), 3) and prefers((64, 1, 1, 8), 3)
    assert prefers((64, 4, 4, 8), 3, strides=(2, 2))
    assert prefers((64, 56, 56, 8), 1)
    assert not prefers((64, 8, 8, 8), 3)
    assert not prefers((64, 2, 2, 8), 3, backend="gpu")
    assert not prefers((64, 56, 56, 8), 1, backend="gpu")


def test_conv_impl_option_gives_the_same_model():
    x = jax.random.normal(jax.random.key(1), (2, 4, 4, 3))   # conv 2 sees 2×2 maps: "auto" → im2col
    outputs = []
    for impl in ("xla", "im2col", "auto"):
        model = models.create("convnet_cifar", 5, conv_impl=impl, width=8)
        variables = jax.jit(model.init)(jax.random.key(0), x)
        outputs.append(jax.jit(model.apply)(variables, x))
    for out in outputs[1:]:
        np.testing.assert_allclose(out, outputs[0], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="conv_impl"):
        models.create("convnet_cifar", 5, conv_impl="winograd").init(jax.random.key(0), x)
