"""Convolution as im2col + one matmul, and the per-shape policy that picks it over XLA's conv.

XLA:CPU's convolution is pathologically slow on tiny feature maps (a 3×3 512→512 conv on 2×2
maps runs ~35× slower than the same conv written as a matmul; see BENCHMARKS.md), while on GPU
cuDNN wins everywhere. Every function here has the signature of `jax.lax.conv_general_dilated`,
so it drops into `flax.linen.Conv(conv_general_dilated=...)`.
"""
from __future__ import annotations

import itertools
import math
from typing import Callable

import jax
import jax.numpy as jnp
from jax import lax

# "auto" uses im2col on CPU when a conv's output map has at most this many pixels (measured in
# BENCHMARKS.md: XLA:CPU loses badly at 2×2 and 1×1, is level at 3×3-4×4, wins from 7×7 up).
IM2COL_MAX_OUTPUT_PIXELS = 4


def _to_nhwc(lhs, rhs, dimension_numbers):
    """lhs as (N, spatial..., C) and rhs as (spatial..., I, O), whatever the layouts."""
    dn = lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
    x = jnp.transpose(lhs, (dn.lhs_spec[0], *dn.lhs_spec[2:], dn.lhs_spec[1]))
    w = jnp.transpose(rhs, (*dn.rhs_spec[2:], dn.rhs_spec[1], dn.rhs_spec[0]))
    return x, w, dn


def _padded_input(x, window, window_strides, padding, lhs_dilation, rhs_dilation):
    """x dilated and padded, so that the conv becomes VALID with undilated input."""
    if isinstance(padding, str):
        in_sizes = [(n - 1) * d + 1 for n, d in zip(x.shape[1:-1], lhs_dilation)]
        window_sizes = [(k - 1) * d + 1 for k, d in zip(window, rhs_dilation)]
        padding = lax.padtype_to_pads(in_sizes, window_sizes, window_strides, padding)
    config = [(0, 0, 0), *[(lo, hi, d - 1) for (lo, hi), d in zip(padding, lhs_dilation)],
              (0, 0, 0)]
    return lax.pad(x, jnp.zeros((), x.dtype), config)


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
    out_sizes = [(n - (k - 1) * d - 1) // s + 1
                 for n, k, d, s in zip(x.shape[1:-1], window, rhs_dilation, strides)]
    taps = []
    for offset in itertools.product(*map(range, window)):
        start = [o * d for o, d in zip(offset, rhs_dilation)]
        limit = [b + (n - 1) * s + 1 for b, n, s in zip(start, out_sizes, strides)]
        taps.append(lax.slice(x, (0, *start, 0), (x.shape[0], *limit, x.shape[-1]),
                              (1, *strides, 1)))
    groups = feature_group_count
    channels, features = w.shape[-2], w.shape[-1]
    patches = jnp.stack(taps, axis=-2)                            # (N, out..., taps, C)
    patches = patches.reshape(*patches.shape[:-1], groups, channels)
    w = w.reshape(len(taps), channels, groups, features // groups)
    tap_axis = spatial + 1
    y = lax.dot_general(patches, w, (((tap_axis, tap_axis + 2), (0, 1)), ((tap_axis + 1,), (2,))),
                        precision=precision, preferred_element_type=preferred_element_type)
    y = jnp.moveaxis(y, 0, -2).reshape(*y.shape[1:-1], features)  # (N, out..., O)
    logical_axes = (0, spatial + 1, *range(1, spatial + 1))       # where N, C, spatial... sit in y
    perm = [0] * y.ndim
    for logical, axis in enumerate(dn.out_spec):
        perm[axis] = logical_axes[logical]
    return jnp.transpose(y, perm)


def prefers_im2col(lhs_shape, rhs_shape, window_strides, dimension_numbers=None,
                   backend: str | None = None) -> bool:
    """The "auto" policy, measured in BENCHMARKS.md: on CPU, im2col for convs whose output map
    is tiny and for pointwise (1×1) convs, which are a plain matmul; XLA's conv everywhere else."""
    if (backend or jax.default_backend()) != "cpu":
        return False
    dn = lax.conv_dimension_numbers(lhs_shape, rhs_shape, dimension_numbers)
    window = [rhs_shape[a] for a in dn.rhs_spec[2:]]
    in_sizes = [lhs_shape[a] for a in dn.lhs_spec[2:]]
    out_pixels = math.prod(-(-n // s) for n, s in zip(in_sizes, window_strides))
    return out_pixels <= IM2COL_MAX_OUTPUT_PIXELS or set(window) == {1}


def auto_conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                              rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
                              batch_group_count=1, precision=None, preferred_element_type=None):
    """`lax.conv_general_dilated`, or its im2col form where `prefers_im2col` says it is faster."""
    plain = batch_group_count == 1 and set(lhs_dilation or [1]) == {1}
    use_im2col = plain and prefers_im2col(lhs.shape, rhs.shape, window_strides, dimension_numbers)
    conv = im2col_conv_general_dilated if use_im2col else lax.conv_general_dilated
    return conv(lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
                rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
                feature_group_count=feature_group_count, batch_group_count=batch_group_count,
                precision=precision, preferred_element_type=preferred_element_type)


CONV_IMPLS: dict[str, Callable] = {
    "auto": auto_conv_general_dilated,
    "xla": lax.conv_general_dilated,
    "im2col": im2col_conv_general_dilated,
}


def conv_fn(impl: str) -> Callable:
    """The convolution function for a model's `conv_impl` option."""
    if impl not in CONV_IMPLS:
        raise ValueError(f"unknown conv_impl {impl!r}; valid: {', '.join(CONV_IMPLS)}")
    return CONV_IMPLS[impl]
