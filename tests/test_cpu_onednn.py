"""oneDNN's convolutions through XLA's FFI (`jaxcnn.cpu.onednn`, the "onednn" form of `jaxcnn.cpu.conv`):
values and both gradients equal XLA's (float32: to 1e-5 of each array's largest magnitude, both
sum ~100 float32 products per output in different orders; bfloat16, where the CPU computes it
natively: as close to the exact result as XLA's own bfloat16 convolution), bitwise-reproducible
gradients, what the form refuses, and the library's build (from scratch into a cache folder, or a
reason why not)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from jaxcnn import models, programs
from jaxcnn.cpu import conv, onednn
from jaxcnn.cpu.onednn import build, ffi
from jaxcnn.cpu.policy import Compute

NHWC = ("NHWC", "HWIO", "NHWC")
needs_onednn = pytest.mark.skipif(not onednn.available(),
                                  reason=f"oneDNN unavailable: {onednn.unavailable_reason()}")
needs_native_bfloat16 = pytest.mark.skipif(
    not onednn.native_bfloat16(), reason="oneDNN does not compute bfloat16 natively on this CPU"
    f" ({onednn.unavailable_reason() or 'no AVX512-BF16 / AMX'})")
CASES = {  # x, kernel shape (in the layout's order), strides, padding, kernel dilation, layout
    "vgg_3x3_same": ((2, 8, 8, 16), (3, 3, 16, 32), (1, 1), "SAME", (1, 1), NHWC),
    "lenet_5x5_valid_one_channel": ((3, 12, 12, 1), (5, 5, 1, 6), (1, 1), "VALID", (1, 1), NHWC),
    "alexnet_11x11_stride_4": ((2, 23, 23, 3), (11, 11, 3, 8), (4, 4), [(2, 1), (2, 1)], (1, 1),
                               NHWC),
    "same_stride_2_uneven": ((2, 9, 8, 4), (3, 2, 4, 5), (2, 1), "SAME", (1, 1), NHWC),
    "padded_dilated": ((2, 10, 10, 2), (3, 2, 2, 5), (1, 2), [(2, 1), (0, 3)], (2, 1), NHWC),
    "nchw": ((2, 4, 7, 7), (6, 4, 3, 3), (1, 1), "SAME", (1, 1), ("NCHW", "OIHW", "NCHW")),
}


def _value_and_grads(conv, case, x, w, cotangent):
    _, _, strides, padding, dilation, layout = case
    f = jax.jit(lambda x, w: conv(x, w, strides, padding, rhs_dilation=dilation,
                                  dimension_numbers=layout, precision=lax.Precision.HIGHEST))
    y, vjp = jax.vjp(f, x, w)
    return (y, *vjp(cotangent))


@needs_onednn
@pytest.mark.parametrize("name", CASES)
def test_onednn_equals_xla_with_gradients(name):
    case = CASES[name]
    kx, kw, kc = jax.random.split(jax.random.key(0), 3)
    x, w = jax.random.normal(kx, case[0]), jax.random.normal(kw, case[1])
    cotangent = jax.random.normal(kc, jax.eval_shape(
        lambda: lax.conv_general_dilated(x, w, case[2], case[3], rhs_dilation=case[4],
                                         dimension_numbers=case[5])).shape)
    got = _value_and_grads(conv.onednn_conv_general_dilated, case, x, w, cotangent)
    want = _value_and_grads(lax.conv_general_dilated, case, x, w, cotangent)
    for g, v in zip(got, want):
        np.testing.assert_allclose(g, v, rtol=0, atol=1e-5 * float(jnp.max(jnp.abs(v))))


@needs_native_bfloat16
@pytest.mark.parametrize("name", ["vgg_3x3_same", "alexnet_11x11_stride_4", "same_stride_2_uneven",
                                  "nchw"])
def test_bfloat16_is_as_close_to_the_exact_result_as_xlas(name):
    """Both round bfloat16 inputs' float32 sums to bfloat16: each result within one bfloat16 ulp
    (2^-7 of the array's largest magnitude) of the float32 computation on the same inputs, and
    within twice XLA's own bfloat16 error."""
    case = CASES[name]
    kx, kw, kc = jax.random.split(jax.random.key(2), 3)
    x = jax.random.normal(kx, case[0]).astype(jnp.bfloat16)
    w = jax.random.normal(kw, case[1]).astype(jnp.bfloat16)
    shape = jax.eval_shape(lambda: lax.conv_general_dilated(
        x, w, case[2], case[3], rhs_dilation=case[4], dimension_numbers=case[5])).shape
    cotangent = jax.random.normal(kc, shape).astype(jnp.bfloat16)
    got = _value_and_grads(conv.onednn_conv_general_dilated, case, x, w, cotangent)
    xla = _value_and_grads(lax.conv_general_dilated, case, x, w, cotangent)
    exact = _value_and_grads(lax.conv_general_dilated, case, x.astype(jnp.float32),
                             w.astype(jnp.float32), cotangent.astype(jnp.float32))
    for g, v, e in zip(got, xla, exact):
        assert g.dtype == jnp.bfloat16
        error = lambda a: float(jnp.max(jnp.abs(a.astype(jnp.float32) - e)))
        assert error(g) <= 2 ** -7 * float(jnp.max(jnp.abs(e)))
        assert error(g) <= 2 * error(v) + 1e-6


@needs_onednn
def test_gradients_are_bitwise_reproducible_and_vmap_runs_per_example():
    """Resumed runs equal uninterrupted ones only if every step is deterministic."""
    case = CASES["vgg_3x3_same"]
    kx, kw, kc = jax.random.split(jax.random.key(1), 3)
    x, w = jax.random.normal(kx, case[0]), jax.random.normal(kw, case[1])
    cotangent = jax.random.normal(kc, (2, 8, 8, 32))
    first = _value_and_grads(conv.onednn_conv_general_dilated, case, x, w, cotangent)
    again = _value_and_grads(conv.onednn_conv_general_dilated, case, x, w, cotangent)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    one = lambda x: conv.onednn_conv_general_dilated(x[None], w, (1, 1), "SAME",
                                                         dimension_numbers=NHWC)[0]
    want = lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=NHWC)
    np.testing.assert_allclose(jax.jit(jax.vmap(one))(x), want, rtol=0,
                               atol=1e-5 * float(jnp.max(jnp.abs(want))))


@needs_onednn
def test_a_model_trains_with_onednn_as_with_xla():
    x = jax.random.normal(jax.random.key(1), (4, 12, 12, 3))
    grads = []
    for impl in ("xla", "onednn"):
        model = models.create("convnet_cifar", 5, width=8)
        variables = jax.jit(model.init)(jax.random.key(0), x)
        loss = lambda params: jnp.sum(model.apply({"params": params}, x) ** 2)
        grads.append(programs.jit(jax.grad(loss), Compute(conv_impl=impl))(variables["params"]))
    jax.tree.map(lambda got, want: np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5),
                 grads[1], grads[0])


@pytest.mark.parametrize("what, x_shape, w_shape, kwargs", [
    ("groups", (2, 6, 6, 4), (3, 3, 2, 4), {"feature_group_count": 2}),
    ("input dilation", (2, 6, 6, 4), (3, 3, 4, 4), {"lhs_dilation": (2, 2)}),
    ("float16", (2, 6, 6, 4), (3, 3, 4, 4), {"dtype": jnp.float16}),
    ("3-D maps", (2, 4, 4, 4, 2), (3, 3, 3, 2, 4), {})])
def test_onednn_form_refuses_what_it_does_not_compute(what, x_shape, w_shape, kwargs):
    dtype = kwargs.pop("dtype", jnp.float32)
    x, w = jnp.ones(x_shape, dtype), jnp.ones(w_shape, dtype)
    layout = ("NDHWC", "DHWIO", "NDHWC") if len(x_shape) == 5 else NHWC
    with pytest.raises(NotImplementedError, match="2-D maps in a dtype"):
        conv.onednn_conv_general_dilated(x, w, (1,) * (x.ndim - 2), "SAME",
                                             dimension_numbers=layout, **kwargs)


@needs_onednn
def test_the_calls_refuse_a_dtype_the_library_does_not_take():
    """Anything but float32 or bfloat16 of one type is refused before it reaches oneDNN."""
    x, w = jnp.ones((2, 6, 6, 4), jnp.float16), jnp.ones((3, 3, 4, 4), jnp.float16)
    with pytest.raises(TypeError, match="not float16 and float16"):
        ffi.forward(x, w, (1, 1), ((1, 1), (1, 1)), (1, 1))
    with pytest.raises(TypeError, match="not float32 and bfloat16"):
        ffi.backward_weights(x.astype(jnp.float32), x.astype(jnp.bfloat16), w.shape, (1, 1),
                             ((1, 1), (1, 1)), (1, 1))
    # and the handlers themselves, called past that check, refuse instead of misreading memory
    raw = jax.ffi.ffi_call("JaxcnnConvForward", jax.ShapeDtypeStruct((2, 6, 6, 4), jnp.float16))
    with pytest.raises(Exception, match="float32 or bfloat16 buffers of one type"):
        jax.block_until_ready(raw(x, w, strides=np.array([1, 1]), dilation=np.array([1, 1]),
                                  padding=np.array([1, 1, 1, 1])))


def test_bfloat16_is_refused_where_the_cpu_does_not_compute_it_natively(monkeypatch):
    monkeypatch.setattr(onednn, "dtypes", lambda: (jnp.float32,))
    x, w = jnp.ones((2, 6, 6, 4), jnp.bfloat16), jnp.ones((3, 3, 4, 4), jnp.bfloat16)
    with pytest.raises(NotImplementedError, match="bfloat16 where the CPU computes it natively"):
        conv.onednn_conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=NHWC)


@needs_onednn
def test_library_builds_from_scratch_once_into_the_cache_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXCNN_CACHE_DIR", str(tmp_path))
    path = build.library_path()
    assert path.parent == tmp_path and path.suffix == ".so"
    built = path.stat().st_mtime_ns
    assert build.library_path() == path and path.stat().st_mtime_ns == built


def test_without_a_compiler_the_reason_is_said(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXCNN_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    with pytest.raises(build.Unavailable, match="no C.. compiler"):
        build.library_path()
    assert list(tmp_path.iterdir()) == []
