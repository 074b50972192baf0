"""Helpers the CPU forms share (`conv`, `pool`, `norm`, `bias`): the strided slices a sliding
window reads, and a channel sum written as a matmul."""
from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
from jax import lax


def window_taps(x, window, strides, dilation=None
                ) -> list[tuple[tuple[int, ...], jax.Array]]:
    """(offset, the strided slice of padded NHWC `x` that window tap `offset` reads) for every tap
    of a `window` (dilated by `dilation`) slid with `strides`, in row-major tap order: the
    building block of im2col, the single-channel conv and `pool`'s max pool."""
    dilation = tuple(dilation or (1,) * len(window))
    out_sizes = [(n - (k - 1) * d - 1) // s + 1
                 for n, k, d, s in zip(x.shape[1:-1], window, dilation, strides)]
    taps = []
    for offset in itertools.product(*map(range, window)):
        start = [o * d for o, d in zip(offset, dilation)]
        limit = [b + (n - 1) * s + 1 for b, n, s in zip(start, out_sizes, strides)]
        taps.append((offset, lax.slice(x, (0, *start, 0), (x.shape[0], *limit, x.shape[-1]),
                                       (1, *strides, 1))))
    return taps


def channel_sum(x: jax.Array) -> jax.Array:
    """The sum over every axis but the last, as (ones @ x.reshape(-1, C))."""
    rows = x.reshape(-1, x.shape[-1])
    return jnp.ones(rows.shape[0], rows.dtype) @ rows
