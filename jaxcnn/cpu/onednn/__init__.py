"""oneDNN's convolutions, the kernels PyTorch runs on CPU, inside jitted JAX programs through XLA's
FFI: the "onednn" form of `jaxcnn.cpu.conv`, in float32 and, on CPUs that compute it
natively, bfloat16. On this project's CPU XLA's own convolutions ran 1.3–4× slower than oneDNN's
on most zoo shapes in float32, and oneDNN's bfloat16 (AMX) ones 3–10× faster than its float32
ones (BENCHMARKS.md)."""
from jaxcnn.cpu.onednn.ffi import available, dtypes, native_bfloat16, unavailable_reason

__all__ = ["available", "dtypes", "native_bfloat16", "unavailable_reason"]
