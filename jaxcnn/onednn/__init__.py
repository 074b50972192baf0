"""oneDNN's convolutions, the kernels PyTorch runs on CPU, inside jitted JAX programs through XLA's
FFI: the "onednn" form of `jaxcnn.models.conv_ops`. On this project's CPU XLA's own convolutions
ran 1.3–4× slower than oneDNN's on most zoo shapes (BENCHMARKS.md)."""
from jaxcnn.onednn.ffi import available, unavailable_reason

__all__ = ["available", "unavailable_reason"]
