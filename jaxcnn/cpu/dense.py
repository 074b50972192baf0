"""A matmul for `nn.Dense` whose input gradient XLA:CPU runs fast.

The input gradient of a dense layer, dy @ kernel.T, contracts the kernel over its minor
dimension, and XLA:CPU's dot runs that form several times slower than the forward product (for
VGG-16's fc1 at batch 4 it was the costliest single op of the train step in a jax.profiler
trace). Split into blocks of kernel rows as a batched dot, the same product runs near forward
speed. Values and gradients equal `lax.dot_general`'s to float32 rounding; docs/perf_history.md
has the model timings before and after.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

# Kernel rows per block of the batched input-gradient dot (256 was the best or near it among
# 64/256/1024 on the zoo's classifier shapes); kernels with fewer rows than MIN_BLOCKED_ROWS keep
# XLA's own dot, whose time there is within noise of the blocked one.
ROW_BLOCK = 256
MIN_BLOCKED_ROWS = 2048


def _input_grad(dy: jax.Array, kernel: jax.Array) -> jax.Array:
    """dy @ kernel.T as a batched dot over blocks of ROW_BLOCK kernel rows."""
    rows, features = kernel.shape
    blocks = kernel.reshape(rows // ROW_BLOCK, ROW_BLOCK, features)
    dx = lax.dot_general(blocks, jnp.broadcast_to(dy, (len(blocks), *dy.shape)),
                         (((2,), (2,)), ((0,), (0,))))          # (blocks, ROW_BLOCK, batch)
    return dx.reshape(rows, -1).T


@jax.custom_vjp
def blocked_matmul(x, kernel):
    """x @ kernel, whose input gradient is the blocked dot (`_input_grad`)."""
    return x @ kernel


def _matmul_fwd(x, kernel):
    return x @ kernel, (x, kernel)


def _matmul_bwd(residuals, dy):
    x, kernel = residuals
    return _input_grad(dy, kernel).astype(x.dtype), (x.T @ dy).astype(kernel.dtype)


blocked_matmul.defvjp(_matmul_fwd, _matmul_bwd)


def prefers_blocked(lhs, rhs, dimension_numbers, precision=None,
                    preferred_element_type=None) -> bool:
    """For `nn.Dense`'s call on a 2-D input and a kernel with at least MIN_BLOCKED_ROWS rows in
    whole blocks."""
    rows = rhs.shape[0]
    standard = (dimension_numbers == (((lhs.ndim - 1,), (0,)), ((), ())) and precision is None
                and preferred_element_type is None and lhs.dtype == rhs.dtype)
    return standard and lhs.ndim == 2 and rows >= MIN_BLOCKED_ROWS and rows % ROW_BLOCK == 0
