"""Where jaxcnn's programs are compiled: `jit(fn, compute)`, the one place that applies the compute
options (`jaxcnn.cpu.policy.Compute`), both where they act.

    step = programs.jit(train.train_step, Compute(cpu_kernels="off"), donate_argnums=0)

The ops' forms are chosen while `fn` is traced (`policy.using`), and XLA's compiler options for
them (`xla_options.compiler_options`) are given to its compilation. `jax.jit` traces at the first
call, `.trace`, `.lower` or `jax.export`, so the options are entered inside the traced function,
where every one of these paths runs it. (A plain `jax.jit` takes the options in effect where it
is first traced, and its cache keeps them.)
"""
from __future__ import annotations

import functools
from typing import Callable

import jax

from jaxcnn.cpu import policy, xla_options


def jit(fn: Callable, compute: policy.Compute = policy.Compute(), **jit_kwargs):
    """`jax.jit(fn, **jit_kwargs)` traced under `compute` and compiled with its options."""
    @functools.wraps(fn)
    def traced(*args, **kwargs):
        with policy.using(compute):
            return fn(*args, **kwargs)

    return jax.jit(traced, compiler_options=xla_options.compiler_options(compute), **jit_kwargs)
