"""Convolutions in forms that run faster on CPU than XLA:CPU's own, and the per-shape "auto"
choice among them.

On this project's CPU, oneDNN's convolutions (the kernels PyTorch runs; `jaxcnn.cpu.onednn`,
called through XLA's FFI) ran 1.3–4× faster than XLA:CPU's forward, input gradient and kernel gradient
on most zoo shapes in float32, and "auto" takes them wherever they are built; on CPUs that compute
bfloat16 natively (AMX, AVX512-BF16) it takes them for bfloat16 too, where oneDNN's AMX kernels
ran 3–10× faster than its float32 ones and the zoo's bfloat16 programs with XLA's convolutions
ran slower than in float32 (BENCHMARKS.md). XLA:CPU's convolution is also
pathologically slow on tiny feature maps (a 3×3 512→512 conv on 2×2 maps runs ~35× slower than
the same conv written as a matmul: im2col, which beats oneDNN there too); where oneDNN is not built,
two more forms stand in for it: one-channel inputs (LeNet's grayscale first conv: an elementwise
sum over kernel taps is ~4× faster) and input gradients onto few channels (LeNet's conv2: one
matmul and col2im; see BENCHMARKS.md). Every conv function here has the signature of
`jax.lax.conv_general_dilated`; `policy.conv_general_dilated` puts the chosen one into a program
lowered for CPU (on GPU cuDNN wins everywhere).
"""
from __future__ import annotations

import functools
import math
from typing import Callable

import jax
import jax.numpy as jnp
from jax import lax

from jaxcnn.cpu import onednn
from jaxcnn.cpu.onednn import ffi as onednn_ffi
from jaxcnn.cpu.taps import window_taps

# "auto" uses im2col on CPU when a conv's output map has at most this many pixels (measured in
# BENCHMARKS.md: XLA:CPU loses badly at 2×2 and 1×1, is level at 3×3-4×4, wins from 7×7 up).
IM2COL_MAX_OUTPUT_PIXELS = 4
# ... and oneDNN (where it is built) for maps with more output pixels than this: on vgg_cifar's
# 4×4 maps XLA's conv ran 10-15% faster than oneDNN's, from convnet_cifar's 6×6 up oneDNN led
# (BENCHMARKS.md).
XLA_MAX_OUTPUT_PIXELS = 16
# ... and the col2im input gradient for convs with at most this many input channels (measured on
# LeNet's 6-channel conv2 and 3-channel first convs; one-channel convs take the single-channel
# form instead).
COL2IM_MAX_INPUT_CHANNELS = 8
_NHWC = ("NHWC", "HWIO", "NHWC")


def _to_nhwc(lhs, rhs, dimension_numbers):
    """lhs as (N, spatial..., C) and rhs as (spatial..., I, O), whatever the layouts."""
    dn = lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
    x = jnp.transpose(lhs, (dn.lhs_spec[0], *dn.lhs_spec[2:], dn.lhs_spec[1]))
    w = jnp.transpose(rhs, (*dn.rhs_spec[2:], dn.rhs_spec[1], dn.rhs_spec[0]))
    return x, w, dn


def _explicit_padding(in_sizes, window, window_strides, padding, rhs_dilation):
    """`padding` as (low, high) per spatial axis, "SAME" / "VALID" resolved for the dilated
    window."""
    if not isinstance(padding, str):
        return tuple(tuple(p) for p in padding)
    window_sizes = [(k - 1) * d + 1 for k, d in zip(window, rhs_dilation)]
    return tuple(lax.padtype_to_pads(in_sizes, window_sizes, window_strides, padding))


def _padded_input(x, window, window_strides, padding, lhs_dilation, rhs_dilation):
    """x dilated and padded, so that the conv becomes VALID with undilated input."""
    in_sizes = [(n - 1) * d + 1 for n, d in zip(x.shape[1:-1], lhs_dilation)]
    padding = _explicit_padding(in_sizes, window, window_strides, padding, rhs_dilation)
    config = [(0, 0, 0), *[(lo, hi, d - 1) for (lo, hi), d in zip(padding, lhs_dilation)],
              (0, 0, 0)]
    return lax.pad(x, jnp.zeros((), x.dtype), config)


def _from_nhwc(y, dn):
    """(N, spatial..., C) `y` in the output layout of dimension numbers `dn`."""
    spatial = y.ndim - 2
    logical_axes = (0, spatial + 1, *range(1, spatial + 1))       # where N, C, spatial... sit in y
    perm = [0] * y.ndim
    for logical, axis in enumerate(dn.out_spec):
        perm[axis] = logical_axes[logical]
    return jnp.transpose(y, perm)


def im2col_conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                                rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
                                batch_group_count=1, precision=None, preferred_element_type=None):
    """`lax.conv_general_dilated` as strided slices (one per kernel tap) and one matmul."""
    if batch_group_count != 1:
        raise NotImplementedError("im2col convolution does not support batch_group_count")
    x, w, dn = _to_nhwc(lhs, rhs, dimension_numbers)
    spatial = lhs.ndim - 2
    window = w.shape[:spatial]
    ones = (1,) * spatial
    strides = tuple(window_strides)
    rhs_dilation = tuple(rhs_dilation or ones)
    x = _padded_input(x, window, strides, padding, tuple(lhs_dilation or ones), rhs_dilation)
    taps = [tap for _, tap in window_taps(x, window, strides, rhs_dilation)]
    groups = feature_group_count
    channels, features = w.shape[-2], w.shape[-1]
    patches = jnp.stack(taps, axis=-2)                            # (N, out..., taps, C)
    patches = patches.reshape(*patches.shape[:-1], groups, channels)
    w = w.reshape(len(taps), channels, groups, features // groups)
    tap_axis = spatial + 1
    y = lax.dot_general(patches, w, (((tap_axis, tap_axis + 2), (0, 1)), ((tap_axis + 1,), (2,))),
                        precision=precision, preferred_element_type=preferred_element_type)
    y = jnp.moveaxis(y, 0, -2).reshape(*y.shape[1:-1], features)  # (N, out..., O)
    return _from_nhwc(y, dn)


def _xla_conv(x, w, strides, padding, rhs_dilation):
    """XLA's own convolution of NHWC x and HWIO w with explicit padding: what the custom-VJP
    forms below keep for the parts XLA:CPU runs fast."""
    return lax.conv_general_dilated(x, w, strides, padding, rhs_dilation=rhs_dilation,
                                    dimension_numbers=_NHWC)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _single_channel_conv(x, w, strides, padding, rhs_dilation):
    """NHWC x with one channel, HWIO w: the sum over taps of tap × kernel row, elementwise, in
    float32 as XLA's convolution accumulates."""
    window = w.shape[:-2]
    xp = _padded_input(x, window, strides, padding, (1,) * len(window), rhs_dilation)
    taps = window_taps(xp.astype(jnp.float32), window, strides, rhs_dilation)
    w = w.astype(jnp.float32)
    return sum(tap * w[offset][0] for offset, tap in taps).astype(x.dtype)


def _single_channel_conv_fwd(x, w, strides, padding, rhs_dilation):
    return _single_channel_conv(x, w, strides, padding, rhs_dilation), (x, w)


def _single_channel_conv_bwd(strides, padding, rhs_dilation, residuals, dy):
    """XLA's own convolution gradients: fast here, where its forward pass is not."""
    x, w = residuals
    conv = lambda x, w: _xla_conv(x, w, strides, padding, rhs_dilation)
    return jax.vjp(conv, x, w)[1](dy)


_single_channel_conv.defvjp(_single_channel_conv_fwd, _single_channel_conv_bwd)


def _nhwc_form(core, needs: tuple[str, Callable], lhs, rhs, window_strides, padding,
               lhs_dilation, rhs_dilation, dimension_numbers, feature_group_count,
               batch_group_count, preferred_element_type):
    """`lax.conv_general_dilated`'s call as `core(x, w, strides, explicit padding, rhs_dilation)`
    on NHWC x and HWIO w, for a custom-VJP form that takes no groups, no input dilation and only
    inputs x for which `needs` = (what it needs, predicate of x) holds."""
    x, w, dn = _to_nhwc(lhs, rhs, dimension_numbers)
    what, holds = needs
    if not holds(x) or feature_group_count != 1 or batch_group_count != 1 or (
            lhs_dilation and set(lhs_dilation) != {1}):
        raise NotImplementedError(f"this convolution form needs {what}, no groups and no input "
                                  "dilation")
    rhs_dilation = tuple(rhs_dilation or (1,) * (x.ndim - 2))
    padding = _explicit_padding(x.shape[1:-1], w.shape[:-2], window_strides, padding,
                                rhs_dilation)
    y = core(x, w, tuple(window_strides), padding, rhs_dilation)
    if preferred_element_type is not None:
        y = y.astype(preferred_element_type)
    return _from_nhwc(y, dn)


def single_channel_conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                                        rhs_dilation=None, dimension_numbers=None,
                                        feature_group_count=1, batch_group_count=1,
                                        precision=None, preferred_element_type=None):
    """`lax.conv_general_dilated` for one input channel as an elementwise sum over kernel taps
    (forward) with XLA's own gradients (backward): for LeNet's grayscale first conv, XLA:CPU's
    convolution spends ~7 ms where the elementwise sum takes ~1 (docs/perf_history.md)."""
    one_channel = ("one input channel", lambda x: x.shape[-1] == 1)
    return _nhwc_form(_single_channel_conv, one_channel, lhs, rhs, window_strides, padding,
                      lhs_dilation, rhs_dilation, dimension_numbers, feature_group_count,
                      batch_group_count, preferred_element_type)


def _col2im(cols, padded_sizes, strides, rhs_dilation, dim=0):
    """The adjoint of im2col: (N, out..., window[dim:]..., C) `cols` summed into the input, padded
    (N, padded..., C), each tap's slice placed by `lax.pad` where that tap reads. Taps of later
    window axes are summed first, on slices indexed down to (N, spatial..., C): XLA:CPU ran one
    sum over all taps ~1.5× slower, and width placing on slices still holding the kernel-row axis
    ~4× slower (docs/perf_history.md)."""
    spatial = len(padded_sizes)
    if dim == spatial:
        return cols
    out_size, stride, step = cols.shape[1 + dim], strides[dim], rhs_dilation[dim]
    config = [(0, 0, 0)] * (spatial + 2)
    placed = []
    for tap in range(cols.shape[1 + spatial]):
        inner = _col2im(lax.index_in_dim(cols, tap, 1 + spatial, keepdims=False), padded_sizes,
                        strides, rhs_dilation, dim + 1)
        config[1 + dim] = (tap * step, padded_sizes[dim] - tap * step - (out_size - 1) * stride - 1,
                           stride - 1)
        placed.append(lax.pad(inner, jnp.zeros((), cols.dtype), config))
    return sum(placed)


_col2im_grad_conv = jax.custom_vjp(_xla_conv, nondiff_argnums=(2, 3, 4))


def _col2im_grad_conv_fwd(x, w, strides, padding, rhs_dilation):
    return _col2im_grad_conv(x, w, strides, padding, rhs_dilation), (x, w)


def _col2im_grad_conv_bwd(strides, padding, rhs_dilation, residuals, dy):
    """The input gradient as one matmul (each output pixel's share of its input window) and
    col2im, both in float32 as XLA's convolution accumulates; the kernel gradient is XLA's."""
    x, w = residuals
    window, (channels, features) = w.shape[:-2], w.shape[-2:]
    cols = jnp.matmul(dy.reshape(-1, features), w.reshape(-1, features).T,
                      preferred_element_type=jnp.float32).reshape(*dy.shape[:-1], *window, channels)
    padded = [n + lo + hi for n, (lo, hi) in zip(x.shape[1:-1], padding)]
    dx_padded = _col2im(cols, padded, strides, rhs_dilation)
    dx = lax.slice(dx_padded, (0, *[lo for lo, _ in padding], 0),
                   (x.shape[0], *[lo + n for n, (lo, _) in zip(x.shape[1:-1], padding)],
                    channels)).astype(x.dtype)
    conv = lambda w: _xla_conv(x, w, strides, padding, rhs_dilation)
    return dx, jax.vjp(conv, w)[1](dy)[0]


_col2im_grad_conv.defvjp(_col2im_grad_conv_fwd, _col2im_grad_conv_bwd)


def col2im_grad_conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                                     rhs_dilation=None, dimension_numbers=None,
                                     feature_group_count=1, batch_group_count=1, precision=None,
                                     preferred_element_type=None):
    """`lax.conv_general_dilated` (XLA's, forward and kernel gradient) whose input gradient is
    one matmul and col2im: XLA:CPU's transposed convolution onto few channels is slow (LeNet's
    6-channel conv2: forward-backward 16.6 ms with it, 7.5 with this; docs/perf_history.md)."""
    two_d = ("2-D maps", lambda x: x.ndim == 4)
    return _nhwc_form(_col2im_grad_conv, two_d, lhs, rhs, window_strides, padding, lhs_dilation,
                      rhs_dilation, dimension_numbers, feature_group_count, batch_group_count,
                      preferred_element_type)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _onednn_conv(x, w, strides, padding, rhs_dilation):
    return onednn_ffi.forward(x, w, strides, padding, rhs_dilation)


def _onednn_conv_fwd(x, w, strides, padding, rhs_dilation):
    return _onednn_conv(x, w, strides, padding, rhs_dilation), (x, w)


def _onednn_conv_bwd(strides, padding, rhs_dilation, residuals, dy):
    """oneDNN's input and kernel gradients (a first layer's unused input gradient is dropped by
    XLA, as for its own convolutions)."""
    x, w = residuals
    return (onednn_ffi.backward_data(dy, w, x.shape, strides, padding, rhs_dilation),
            onednn_ffi.backward_weights(x, dy, w.shape, strides, padding, rhs_dilation))


_onednn_conv.defvjp(_onednn_conv_fwd, _onednn_conv_bwd)


def onednn_conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                                rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
                                batch_group_count=1, precision=None, preferred_element_type=None):
    """`lax.conv_general_dilated` of 2-D maps by oneDNN (`jaxcnn.cpu.onednn`), forward and both
    gradients: the kernels PyTorch runs on CPU, in float32 1.3–4× faster than XLA:CPU's on most
    zoo shapes, in bfloat16 (on CPUs that compute it natively) several times faster again
    (BENCHMARKS.md)."""
    needs = ("2-D maps in a dtype the oneDNN library takes here (float32; bfloat16 where the CPU "
             "computes it natively)",
             lambda x: x.ndim == 4 and x.dtype == rhs.dtype and x.dtype in onednn.dtypes())
    return _nhwc_form(_onednn_conv, needs, lhs, rhs, window_strides, padding, lhs_dilation,
                      rhs_dilation, dimension_numbers, feature_group_count, batch_group_count,
                      preferred_element_type)


def auto_choice(lhs_shape, rhs_shape, window_strides, padding, dimension_numbers=None,
                feature_group_count=1, rhs_dilation=None, dtype=jnp.float32,
                onednn_dtypes: tuple | None = None) -> str:
    """The "auto" choice on CPU, measured in BENCHMARKS.md, as the name of a `FORMS` entry:
    oneDNN for 2-D convs whose output map has more than `XLA_MAX_OUTPUT_PIXELS` pixels, where
    oneDNN takes their `dtype` (both operands', None where they differ) and the program runs on
    one device (`onednn_dtypes`, default: `onednn.dtypes()` on one device, none on several);
    otherwise the single-channel form for one-channel inputs (grayscale first convs), im2col for
    convs whose output map is tiny and for pointwise (1×1) convs, which are a plain matmul, the
    col2im input gradient for few input channels and XLA's conv for the rest."""
    dn = lax.conv_dimension_numbers(lhs_shape, rhs_shape, dimension_numbers)
    channels = lhs_shape[dn.lhs_spec[1]]
    window = [rhs_shape[a] for a in dn.rhs_spec[2:]]
    in_sizes = [lhs_shape[a] for a in dn.lhs_spec[2:]]
    rhs_dilation = rhs_dilation or [1] * len(window)
    dilated = [(k - 1) * d + 1 for k, d in zip(window, rhs_dilation)]
    padding = _explicit_padding(in_sizes, window, window_strides, padding, rhs_dilation)
    out_pixels = math.prod((n + lo + hi - k) // s + 1 for n, (lo, hi), k, s in
                           zip(in_sizes, padding, dilated, window_strides))
    pointwise = set(window) == {1}
    if (out_pixels > XLA_MAX_OUTPUT_PIXELS and not pointwise and len(window) == 2
            and feature_group_count == 1):
        if onednn_dtypes is None:
            onednn_dtypes = onednn.dtypes() if jax.device_count() == 1 else ()
        if dtype in onednn_dtypes:
            return "onednn"
    if channels == 1 and feature_group_count == 1:
        return "single_channel"
    if out_pixels <= IM2COL_MAX_OUTPUT_PIXELS or pointwise:
        return "im2col"
    if channels <= COL2IM_MAX_INPUT_CHANNELS and feature_group_count == 1 and len(window) == 2:
        return "col2im_grad"
    return "xla"


FORMS: dict[str, Callable] = {      # what `auto_choice` picks from
    "xla": lax.conv_general_dilated,
    "im2col": im2col_conv_general_dilated,
    "single_channel": single_channel_conv_general_dilated,
    "col2im_grad": col2im_grad_conv_general_dilated,
    "onednn": onednn_conv_general_dilated,
}
