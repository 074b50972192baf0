"""Max pooling whose gradient XLA:CPU runs fast: the same values and gradients as `nn.max_pool`.

JAX differentiates `reduce_window(max)` through select-and-scatter, which XLA:CPU lowers to a
reduce-window that carries an int32 iota index per window dimension, then a scatter: the largest
non-convolution cost of VGG-16's train step in a jax.profiler trace. Here the backward pass
sends each pooled gradient to its window's first maximum in row-major order, as XLA's
select-and-scatter does (so ties, e.g. windows of ReLU zeros, go where they went before), all
elementwise, one stride phase of the input at a time: for windows that tile the input (VGG's
2×2 / 2) each phase is one tap; for overlapping ones (AlexNet's 3×3 / 2) a sum of shifted slices
(a padded copy per tap, summed, was 4-5× slower). The forward pass is the maximum of the taps'
strided slices. docs/perf_history.md has the timings before and after.
"""
from __future__ import annotations

import functools
import itertools
import math

import jax
import jax.numpy as jnp
from jax import lax

from jaxcnn.cpu.taps import window_taps


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
    taps = window_taps(_padded(x, pads), window, strides)
    return functools.reduce(jnp.maximum, (tap for _, tap in taps))


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def _max_pool(x, window, strides, pads):
    return _reduce_max(x, window, strides, pads)


def _max_pool_fwd(x, window, strides, pads):
    y = _reduce_max(x, window, strides, pads)
    return y, (x, y)


def _first_max_tap(xp, y, window, strides):
    """Per pooled position, the row-major index of its window's first tap equal to the max."""
    taps = window_taps(xp, window, strides)
    first = jnp.full(y.shape, -1, jnp.int32)
    for index in reversed(range(len(taps))):
        first = jnp.where(taps[index][1] == y, index, first)
    return first


def _phased_max_pool_bwd(xp_shape, first, dy, window, strides):
    """The gradient of the padded input, one stride phase at a time. Input row p = r + s·j (phase
    r, position j) is read by the taps o ≡ r (mod s), as tap o = r + s·q of pooled row j − q; so
    each phase is an elementwise sum over its taps of shifted slices of dy and `first`, with no
    padded copy per tap. The phases are then interleaved by a stack and a reshape."""
    spatial = len(window)
    reach = [-(-k // s) for k, s in zip(window, strides)]            # taps per phase, at most
    phase_sizes = [-(-n // s) for n, s in zip(xp_shape[1:-1], strides)]
    pads = [(0, 0, 0), *[(q - 1, j - m, 0) for q, j, m in zip(reach, phase_sizes, dy.shape[1:-1])],
            (0, 0, 0)]
    zero = jnp.zeros((), dy.dtype)
    dy, first = lax.pad(dy, zero, pads), lax.pad(first, jnp.int32(-1), pads)
    n, c = dy.shape[0], dy.shape[-1]
    phases = []
    for phase in itertools.product(*map(range, strides)):
        total = jnp.zeros((n, *phase_sizes, c), dy.dtype)
        for shift in itertools.product(*map(range, reach)):
            offset = [r + s * q for r, s, q in zip(phase, strides, shift)]
            if any(o >= k for o, k in zip(offset, window)):
                continue
            tap = sum(o * math.prod(window[d + 1:]) for d, o in enumerate(offset))
            start = (0, *[q_max - 1 - q for q_max, q in zip(reach, shift)], 0)
            limit = (n, *[b + j for b, j in zip(start[1:], phase_sizes)], c)
            total = total + jnp.where(lax.slice(first, start, limit) == tap,
                                      lax.slice(dy, start, limit), zero)
        phases.append(total)
    grid = jnp.stack(phases, axis=1).reshape(n, *strides, *phase_sizes, c)
    order = [0, *[a for d in range(spatial) for a in (1 + spatial + d, 1 + d)], 1 + 2 * spatial]
    full = jnp.transpose(grid, order).reshape(n, *[j * s for j, s in zip(phase_sizes, strides)], c)
    return full[(slice(None), *[slice(0, size) for size in xp_shape[1:-1]])]


def _max_pool_bwd(window, strides, pads, residuals, dy):
    x, y = residuals
    xp = _padded(x, pads)
    dxp = _phased_max_pool_bwd(xp.shape, _first_max_tap(xp, y, window, strides), dy, window,
                               strides)
    starts = [lo for lo, _ in pads]
    return (lax.slice(dxp, (0, *starts, 0), (xp.shape[0], *[s + n for s, n in zip(
        starts, x.shape[1:-1])], xp.shape[-1])),)


_max_pool.defvjp(_max_pool_fwd, _max_pool_bwd)


def max_pool(x: jax.Array, window: tuple[int, int], strides: tuple[int, int],
             padding="VALID") -> jax.Array:
    """`nn.max_pool(x, window, strides, padding)` for NHWC `x`, with the elementwise gradient."""
    window, strides = tuple(window), tuple(strides)
    return _max_pool(x, window, strides, tuple(_pads(x.shape[1:-1], window, strides, padding)))
