"""The three oneDNN convolution calls as JAX functions (XLA FFI custom calls on CPU).

Each takes NHWC activations and an HWIO kernel of one dtype (float32, or bfloat16 where
`native_bfloat16`), with explicit strides, padding as ((top, bottom), (left, right)) and kernel
dilation, like `lax.conv_general_dilated`, and returns that dtype.
"""
from __future__ import annotations

import ctypes
import functools

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from jaxcnn.cpu.onednn import build

_TARGETS = {"forward": "JaxcnnConvForward", "backward_data": "JaxcnnConvBackwardData",
            "backward_weights": "JaxcnnConvBackwardWeights"}


@functools.cache
def _library() -> ctypes.CDLL | str:
    """The library, built, loaded and its calls registered with XLA; else why not: one line,
    logged once."""
    try:
        path = build.library_path()
        try:
            library = ctypes.CDLL(str(path))
        except OSError as e:
            raise build.Unavailable(f"cannot load {path}: {e}") from e
    except (build.Unavailable, OSError) as e:
        reason = " ".join(str(e).split())
        logging.warning("jaxcnn: oneDNN convolutions unavailable, XLA's are used: %s", reason)
        return reason
    for target in _TARGETS.values():
        jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(library, target)),
                                    platform="cpu")
    return library


def unavailable_reason() -> str | None:
    """None once the library is built, loaded and registered (on the first call); else why not."""
    library = _library()
    return library if isinstance(library, str) else None


def available() -> bool:
    """Whether the oneDNN convolutions can run here (built and registered on the first call)."""
    return unavailable_reason() is None


@functools.cache
def native_bfloat16() -> bool:
    """Whether oneDNN computes bfloat16 natively on this CPU (AVX512-BF16 or AMX), where its
    bfloat16 convolutions are several times faster than its float32 ones (BENCHMARKS.md)."""
    return available() and bool(_library().JaxcnnNativeBfloat16())


def dtypes() -> tuple:
    """The dtypes the calls take here: float32 where the library is available, and bfloat16
    where it is computed natively."""
    if not available():
        return ()
    return (jnp.float32, jnp.bfloat16) if native_bfloat16() else (jnp.float32,)


def _call(kind: str, out_shape, a, b, strides, padding, dilation):
    if not available():
        raise RuntimeError(f"oneDNN convolutions are unavailable: {unavailable_reason()}")
    if a.dtype != b.dtype or a.dtype not in dtypes():
        raise TypeError(f"oneDNN convolutions take one of {[jnp.dtype(d).name for d in dtypes()]}"
                        f" here, not {a.dtype} and {b.dtype}")
    call = jax.ffi.ffi_call(_TARGETS[kind], jax.ShapeDtypeStruct(out_shape, a.dtype),
                            vmap_method="sequential")
    return call(a, b, strides=np.asarray(strides, np.int64),
                dilation=np.asarray(dilation, np.int64),
                padding=np.asarray([p for pair in padding for p in pair], np.int64))


def _output_shape(x, w, strides, padding, dilation):
    """The shape XLA's own convolution gives: the one oneDNN's must fill."""
    return jax.eval_shape(lambda x, w: jax.lax.conv_general_dilated(
        x, w, strides, padding, rhs_dilation=dilation,
        dimension_numbers=("NHWC", "HWIO", "NHWC")), x, w).shape


def forward(x, w, strides, padding, dilation):
    """The convolution of x with w."""
    out_shape = _output_shape(x, w, strides, padding, dilation)
    return _call("forward", out_shape, x, w, strides, padding, dilation)


def backward_data(dy, w, x_shape, strides, padding, dilation):
    """The gradient with respect to the input (of shape `x_shape`), given the output's dy."""
    return _call("backward_data", tuple(x_shape), dy, w, strides, padding, dilation)


def backward_weights(x, dy, w_shape, strides, padding, dilation):
    """The gradient with respect to the kernel (of shape `w_shape`), given the output's dy."""
    return _call("backward_weights", tuple(w_shape), x, dy, strides, padding, dilation)
