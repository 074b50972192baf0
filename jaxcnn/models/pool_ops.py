"""Max pooling whose gradient XLA:CPU runs fast: the same values and gradients as `nn.max_pool`.

JAX differentiates `reduce_window(max)` through select-and-scatter, which XLA:CPU lowers to a
reduce-window that carries an int32 iota index per window dimension, then a scatter: the largest
non-convolution cost of VGG-16's train step in a jax.profiler trace. Here the backward pass
compares each window tap with the pooled maximum instead, all elementwise: a tap receives the
output gradient if it is the first maximum of its window in row-major order, as in XLA's
select-and-scatter (so ties, e.g. windows of ReLU zeros, go where they went before). The forward
pass is the maximum of the taps' strided slices, also elementwise. BENCHMARKS.md has the model
timings before and after.
"""
from __future__ import annotations

import functools
import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from jaxcnn.models import conv_ops


def _pads(shape, window, strides, padding):
    if isinstance(padding, str):
        return lax.padtype_to_pads(shape, window, strides, padding)
    return [tuple(p) for p in padding]


def _padded(x, pads):
    low = jnp.array(-jnp.inf, x.dtype)
    return lax.pad(x, low, ((0, 0, 0), *[(lo, hi, 0) for lo, hi in pads], (0, 0, 0)))


def _reduce_max(x, window, strides, pads):
    """The maximum of the window taps' strided slices: elementwise, 2-3× faster on XLA:CPU than
    its reduce-window."""
    taps = conv_ops.window_taps(_padded(x, pads), window, strides)
    return functools.reduce(jnp.maximum, (tap for _, tap in taps))


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def _max_pool(x, window, strides, pads):
    return _reduce_max(x, window, strides, pads)


def _max_pool_fwd(x, window, strides, pads):
    y = _reduce_max(x, window, strides, pads)
    return y, (x, y)


def _tiled_max_pool_bwd(x, y, dy, window):
    """The backward pass where the windows tile the input exactly (stride = window, no padding):
    each input gets its window's gradient or zero, with no sum over overlapping windows."""
    n, *sizes, c = x.shape
    tiles = [a for size, k in zip(sizes, window) for a in (size // k, k)]
    x = x.reshape(n, *tiles, c)                               # (N, H/kh, kh, W/kw, kw, C)
    expand = lambda a: jnp.expand_dims(a, tuple(range(2, 2 * len(window) + 1, 2)))
    y, dy = expand(y), expand(dy)
    claimed = jnp.zeros(y.shape, bool)
    pieces = {}
    for offset in itertools.product(*map(range, window)):
        index = (slice(None), *[v for o in offset for v in (slice(None), slice(o, o + 1))])
        first = (x[index] == y) & ~claimed
        claimed = claimed | first
        pieces[offset] = jnp.where(first, dy, jnp.zeros((), dy.dtype))
    # reassemble the tiles: concatenate along each window axis, innermost offset first
    def assemble(prefix, axis):
        if len(prefix) == len(window):
            return pieces[prefix]
        return jnp.concatenate([assemble((*prefix, o), axis + 2)
                                for o in range(window[len(prefix)])], axis=axis)
    return assemble((), 2).reshape(n, *sizes, c)


def _max_pool_bwd(window, strides, pads, residuals, dy):
    x, y = residuals
    if window == strides and not any(lo or hi for lo, hi in pads) and all(
            n % k == 0 for n, k in zip(x.shape[1:-1], window)):
        return (_tiled_max_pool_bwd(x, y, dy, window),)
    xp = _padded(x, pads)
    claimed = jnp.zeros(y.shape, bool)
    dxp = jnp.zeros(xp.shape, dy.dtype)
    zero = jnp.zeros((), dy.dtype)
    for offset, tap in conv_ops.window_taps(xp, window, strides):
        first = (tap == y) & ~claimed
        claimed = claimed | first
        # put this tap's share back where it was read: interior padding undoes the stride
        config = [(0, 0, 0), *[(o, size - o - (n - 1) * s - 1, s - 1) for o, size, n, s in
                               zip(offset, xp.shape[1:-1], y.shape[1:-1], strides)], (0, 0, 0)]
        dxp = dxp + lax.pad(jnp.where(first, dy, zero), zero, config)
    starts = [lo for lo, _ in pads]
    return (lax.slice(dxp, (0, *starts, 0), (xp.shape[0], *[s + n for s, n in zip(
        starts, x.shape[1:-1])], xp.shape[-1])),)


_max_pool.defvjp(_max_pool_fwd, _max_pool_bwd)


def max_pool(x: jax.Array, window: tuple[int, int], strides: tuple[int, int],
             padding="VALID", backend: str | None = None) -> jax.Array:
    """`nn.max_pool(x, window, strides, padding)` for NHWC `x`: on CPU with the elementwise
    gradient; on GPU / TPU XLA's own."""
    window, strides = tuple(window), tuple(strides)
    if (backend or jax.default_backend()) != "cpu":
        return nn.max_pool(x, window, strides, padding)
    return _max_pool(x, window, strides, tuple(_pads(x.shape[1:-1], window, strides, padding)))
