"""Which form every op of a model takes, from the compute options in effect where a program is
traced (`Compute`, set by `using`; `jaxcnn.programs.jit` traces every program under its own).

cpu_kernels="auto": in a process whose JAX computes on CPU (its default backend), each op below is
staged in two forms, XLA's or flax's own and this wing's, joined by `lax.platform_dependent`: the
program takes the wing's form only where it is lowered for CPU, so a program exported or compiled
for GPU or TPU holds none of it (tests/test_cpu_policy.py exports a train step for CUDA on a CPU
host). In a process that computes on a GPU or TPU nothing of the wing is traced, and oneDNN is not
built. "off": flax's layers and XLA's defaults everywhere (`jaxcnn.models.layers`).

conv_impl picks the convolution form on CPU: "auto" chooses per shape (`conv.auto_choice`),
"xla", "im2col" or "onednn" take that form for every convolution (for benchmarks and tests).

They choose how a model is computed, not what (the same variables, the same results to float32
rounding), so they are no model's fields: a model is its architecture.
"""
from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import operator
from typing import Callable, Iterator

import flax.linen as nn
import jax
from jax import lax

from jaxcnn.cpu import bias, conv, dense, norm, pool

CPU_KERNELS = ("auto", "off")
CONV_IMPLS = ("auto", "xla", "im2col", "onednn")

# While `record.record` traces a model: the CPU form of each convolution and dense product, in
# call order.
FORMS_TRACED: list[str] | None = None


def check(cpu_kernels: str, conv_impl: str) -> None:
    """Raises one clear ValueError for an unknown or contradictory choice."""
    if cpu_kernels not in CPU_KERNELS:
        raise ValueError(f"unknown cpu_kernels {cpu_kernels!r}; valid: {', '.join(CPU_KERNELS)}")
    if conv_impl not in CONV_IMPLS:
        raise ValueError(f"unknown conv_impl {conv_impl!r}; valid: {', '.join(CONV_IMPLS)}")
    if cpu_kernels == "off" and conv_impl not in ("auto", "xla"):
        raise ValueError(f"conv_impl={conv_impl} is a CPU kernel form: it needs cpu_kernels=auto")


@dataclasses.dataclass(frozen=True)
class Compute:
    """The compute options of a program: `cpu_kernels` "auto" | "off", `conv_impl` "auto" |
    "xla" | "im2col" | "onednn" (see above)."""
    cpu_kernels: str = "auto"
    conv_impl: str = "auto"

    def __post_init__(self):
        check(self.cpu_kernels, self.conv_impl)


_IN_EFFECT = contextvars.ContextVar("compute", default=Compute())


def current() -> Compute:
    """The compute options programs traced now are traced under (default: `Compute()`)."""
    return _IN_EFFECT.get()


@contextlib.contextmanager
def using(compute: Compute) -> Iterator[None]:
    """Models traced inside take `compute`'s forms (as `jax.default_matmul_precision` sets the
    precision of the matmuls traced inside)."""
    token = _IN_EFFECT.set(compute)
    try:
        yield
    finally:
        _IN_EFFECT.reset(token)


def offered(compute: Compute | None = None) -> bool:
    """Whether programs traced under `compute` (default: `current()`) stage the wing's forms
    beside XLA's and flax's own."""
    return (compute or current()).cpu_kernels == "auto" and jax.default_backend() == "cpu"


def _per_platform(cpu_form: Callable, plain_form: Callable, *args):
    """`cpu_form(*args)` where the program is lowered for CPU, `plain_form(*args)` elsewhere."""
    return lax.platform_dependent(*args, cpu=cpu_form, default=plain_form)


def _note(form: str) -> None:
    if FORMS_TRACED is not None:
        FORMS_TRACED.append(form)


def conv_form(conv_impl: str, lhs, rhs, window_strides, padding, lhs_dilation=None,
              rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
              batch_group_count=1) -> str:
    """The name of the `conv.FORMS` entry a convolution takes on CPU."""
    if conv_impl != "auto":
        return conv_impl
    if batch_group_count != 1 or set(lhs_dilation or [1]) != {1}:
        return "xla"
    return conv.auto_choice(lhs.shape, rhs.shape, window_strides, padding, dimension_numbers,
                            feature_group_count, rhs_dilation,
                            dtype=lhs.dtype if lhs.dtype == rhs.dtype else None)


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
                         batch_group_count=1, precision=None, preferred_element_type=None):
    """A `lax.conv_general_dilated` for `nn.Conv`: where lowered for CPU in the form the
    `conv_impl` in effect names (`conv_form`), XLA's own elsewhere."""
    layout = dict(lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation,
                  dimension_numbers=dimension_numbers,
                  feature_group_count=feature_group_count, batch_group_count=batch_group_count)
    form = conv_form(current().conv_impl, lhs, rhs, window_strides, padding, **layout)
    _note(form)
    options = dict(window_strides=window_strides, padding=padding, precision=precision,
                   preferred_element_type=preferred_element_type, **layout)
    xla = functools.partial(lax.conv_general_dilated, **options)
    if form == "xla":
        return xla(lhs, rhs)
    return _per_platform(functools.partial(conv.FORMS[form], **options), xla, lhs, rhs)


def dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None):
    """A `lax.dot_general` for `nn.Dense`: where lowered for CPU with the blocked input gradient
    where `dense.prefers_blocked`, XLA's own elsewhere."""
    xla = functools.partial(lax.dot_general, dimension_numbers=dimension_numbers,
                            precision=precision, preferred_element_type=preferred_element_type)
    blocked = dense.prefers_blocked(lhs, rhs, dimension_numbers, precision, preferred_element_type)
    _note("blocked" if blocked else "xla")
    if not blocked:
        return xla(lhs, rhs)
    return _per_platform(dense.blocked_matmul, xla, lhs, rhs)


def bias_add(y: jax.Array, b: jax.Array) -> jax.Array:
    """y + b over the last axis: where lowered for CPU with `bias.bias_add`'s gradient."""
    return _per_platform(bias.bias_add, operator.add, y, b)


def max_pool(x: jax.Array, window: tuple[int, ...], strides: tuple[int, ...],
             padding="VALID") -> jax.Array:
    """`nn.max_pool`: where lowered for CPU with `pool.max_pool`'s gradient."""
    window, strides = tuple(window), tuple(strides)
    return _per_platform(lambda x: pool.max_pool(x, window, strides, padding),
                         lambda x: nn.max_pool(x, window, strides, padding), x)


def batch_norm_train(x, scale, offset, epsilon: float):
    """(y, mean, var) of training-mode batch norm in float32: where lowered for CPU by
    `norm.batch_norm_train`, elsewhere by `nn.BatchNorm`'s own arithmetic."""
    return _per_platform(lambda *a: norm.batch_norm_train(*a, epsilon),
                         lambda *a: norm.flax_batch_norm_train(*a, epsilon), x, scale, offset)
