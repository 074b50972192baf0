"""Compiles `conv.cc` into a shared library on first use, once per source, jaxlib and oneDNN.

oneDNN comes from the `onednn-cpu-gomp` / `onednn-devel-cpu-gomp` wheels (requirements.txt), which
put `libdnnl.so` and its headers under the environment's prefix; XLA's FFI headers come with jaxlib.
The library lands in `$JAXCNN_CACHE_DIR` (default `~/.cache/jaxcnn`) under a name that hashes all
three, built under a file lock so that parallel processes (pytest-xdist, a sweep's workers) build
it once. Anything missing raises `Unavailable` with the reason, and jaxcnn then keeps XLA's own
convolutions.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

import jax
import jaxlib

SOURCE = pathlib.Path(__file__).with_name("conv.cc")


class Unavailable(RuntimeError):
    """Why the oneDNN convolutions cannot be built or loaded here."""


def _onednn_prefix() -> pathlib.Path:
    """The prefix holding oneDNN 3's headers and library: this environment's, else the system's."""
    for prefix in (pathlib.Path(sys.prefix), pathlib.Path("/usr/local"), pathlib.Path("/usr")):
        if all((prefix / f).exists() for f in ("include/oneapi/dnnl/dnnl.hpp", "lib/libdnnl.so")):
            return prefix
    raise Unavailable("oneDNN's headers and libdnnl.so were not found (pip install "
                      "onednn-cpu-gomp onednn-devel-cpu-gomp)")


def _cache_dir() -> pathlib.Path:
    root = os.environ.get("JAXCNN_CACHE_DIR") or pathlib.Path.home() / ".cache" / "jaxcnn"
    return pathlib.Path(root)


def library_path() -> pathlib.Path:
    """The compiled library, built now if it is not in the cache yet."""
    if sys.platform != "linux":
        raise Unavailable(f"built on Linux only, not {sys.platform}")
    compiler = shutil.which(os.environ.get("CXX", "c++"))
    if compiler is None:
        raise Unavailable("no C++ compiler (c++ or $CXX) on PATH")
    prefix = _onednn_prefix()
    libdnnl = (prefix / "lib/libdnnl.so").resolve()
    key = hashlib.sha256(b"\0".join([SOURCE.read_bytes(), jaxlib.__version__.encode(),
                                     str(libdnnl).encode()])).hexdigest()[:16]
    cache = _cache_dir()
    target = cache / f"jaxcnn_onednn_conv-{key}.so"
    if target.exists():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / f"{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not target.exists():
            _compile(compiler, prefix, target)
    return target


def _compile(compiler: str, prefix: pathlib.Path, target: pathlib.Path) -> None:
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        out = pathlib.Path(tmp) / target.name
        command = [compiler, "-O2", "-std=c++17", "-shared", "-fPIC", "-w",
                   f"-I{jax.ffi.include_dir()}", f"-I{prefix / 'include'}", str(SOURCE),
                   "-o", str(out), f"-L{prefix / 'lib'}", "-ldnnl",
                   f"-Wl,-rpath,{prefix / 'lib'}"]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise Unavailable(f"compiling {SOURCE.name} failed: {last}")
        os.replace(out, target)
