"""The oneDNN library's build where clusters run it (`jaxcnn.cpu.onednn.build`): one build when
processes start together (the file lock), one warning where no lock can be taken, a cache key that
changes with the compiler, its flags and the C++ standard library, and a one-line reason, logged
once, with XLA's convolutions used instead, where the cache folder cannot be written, no compiler
is found or compiling fails (whose full log stays next to the cache); importing jaxcnn needs no
`fcntl`; and malformed calls come back from the library as errors, not crashes.

The library's own build is ~5 s: only the two-process test builds one (into a fresh folder); the
others compute keys, fail before compiling, or stand a fake compile in for the real one."""
import errno
import functools
import logging
import os
import pathlib
import shutil
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn.cpu import conv, onednn
from jaxcnn.cpu.onednn import build, ffi

REPO = pathlib.Path(__file__).resolve().parents[1]


def _toolchain_missing() -> str | None:
    """Why no library can be built here (no compiler, no oneDNN wheel); None where one can."""
    try:
        build.build_inputs()
    except build.Unavailable as e:
        return str(e)
    return None


needs_toolchain = pytest.mark.skipif(_toolchain_missing() is not None,
                                     reason=f"no oneDNN build here: {_toolchain_missing()}")
needs_onednn = pytest.mark.skipif(not onednn.available(),
                                  reason=f"oneDNN unavailable: {onednn.unavailable_reason()}")


@pytest.fixture
def fresh_library(monkeypatch):
    """`ffi._library` without the process's cached answer (restored after the test): the reason
    the next call finds, and how often it is logged."""
    monkeypatch.setattr(ffi, "_library", functools.cache(ffi._library.__wrapped__))


@pytest.fixture
def warnings_logged(caplog):
    caplog.set_level(logging.WARNING)
    return lambda text: [r.getMessage() for r in caplog.records
                         if r.levelno == logging.WARNING and text in r.getMessage()]


def _assert_xla_is_used(reason_part, warnings_logged, monkeypatch):
    """onednn is unavailable for a one-line reason containing `reason_part`, logged once however
    often it is asked, and `jaxcnn.cpu.conv`'s "auto" choice picks no oneDNN convolution."""
    for _ in range(3):
        assert not onednn.available()
    assert onednn.dtypes() == ()
    reason = onednn.unavailable_reason()
    assert reason_part in reason and "\n" not in reason
    logged = warnings_logged("oneDNN convolutions unavailable, XLA's are used")
    assert logged == [f"jaxcnn: oneDNN convolutions unavailable, XLA's are used: {reason}"]
    monkeypatch.setattr(jax, "device_count", lambda: 1)   # auto picks oneDNN on one device only
    assert conv.auto_choice((2, 32, 32, 16), (3, 3, 16, 16), (1, 1), "SAME",
                            ("NHWC", "HWIO", "NHWC")) != "onednn"
    return reason


def test_importing_jaxcnn_needs_no_fcntl():
    """Windows has no fcntl: the build imports it only where it locks."""
    code = textwrap.dedent("""
        import sys
        sys.modules["fcntl"] = None        # `import fcntl` now raises ImportError
        import jaxcnn.models, jaxcnn.cpu.onednn.build
        print("imported")
    """)
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and "imported" in done.stdout, done.stderr


@pytest.mark.parametrize("failure", ["ENOLCK", "EOPNOTSUPP", "no fcntl"])
def test_a_lock_that_cannot_be_taken_is_warned_once_and_the_build_goes_on(
        failure, tmp_path, monkeypatch, warnings_logged):
    """NFS homes without lockd (ENOLCK), Lustre without flock (EOPNOTSUPP / ENOSYS), platforms
    without fcntl: one warning, then a build without the lock (a fake one here)."""
    import fcntl

    monkeypatch.setenv("JAXCNN_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(build, "build_inputs", lambda: {"a": "fixed"})
    builds = []
    monkeypatch.setattr(build, "_compile",
                        lambda inputs, target, log: builds.append(target.write_bytes(b"so")))
    if failure == "no fcntl":
        monkeypatch.setitem(sys.modules, "fcntl", None)
    else:
        code = getattr(errno, failure)

        def flock(*args):
            raise OSError(code, os.strerror(code))
        monkeypatch.setattr(fcntl, "flock", flock)
    path = build.library_path()
    assert path.read_bytes() == b"so" and len(builds) == 1
    logged = warnings_logged("without the lock")
    assert len(logged) == 1, logged
    assert str(path) + ".lock" in logged[0]
    why = "no fcntl" if failure == "no fcntl" else os.strerror(getattr(errno, failure))
    assert why in logged[0]
    assert build.library_path() == path and len(builds) == 1       # built: no lock needed again
    assert len(warnings_logged("without the lock")) == 1


def test_a_build_removes_other_keys_built_long_ago_unless_their_lock_is_held(tmp_path,
                                                                             monkeypatch):
    """A new key's build (a fake one) removes the library, build log and lock of other keys built
    more than a week ago. It keeps younger ones (other kinds of node sharing the folder use them),
    an old failed build that another process is trying again (holding its lock: here another open
    file of this process, which flock tells apart alike), and whatever else the folder holds."""
    monkeypatch.setenv("JAXCNN_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(build, "build_inputs", lambda: {"a": "fixed"})
    monkeypatch.setattr(build, "_compile", lambda inputs, target, log: target.write_bytes(b"so"))
    now, long_ago = time.time(), time.time() - build._KEEP_OTHER_KEYS_S - 60
    library = "jaxcnn_onednn_conv-{}.so".format
    old, young, failed, retried = "a" * 16, "b" * 16, "c" * 16, "d" * 16
    removed = {library(old): long_ago, library(old) + ".lock": long_ago,
               f"build-{failed}.log": long_ago, library(failed) + ".lock": long_ago}
    kept = {library(young): now, library(young) + ".lock": now,
            f"build-{retried}.log": long_ago, library(retried) + ".lock": long_ago,
            "cifar10-decoded.npz": long_ago, library("notakey"): long_ago}
    for name, mtime in {**removed, **kept}.items():
        (tmp_path / name).write_bytes(b"")
        os.utime(tmp_path / name, (mtime, mtime))
    import fcntl
    with open(tmp_path / (library(retried) + ".lock")) as retrying:
        fcntl.flock(retrying, fcntl.LOCK_EX)
        path = build.library_path()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [*kept, path.name, path.name + ".lock"])
    assert path.read_bytes() == b"so"


@needs_toolchain
def test_two_processes_building_at_once_build_once_and_both_work(tmp_path):
    """Both start into one fresh cache folder; the compiler (a wrapper that records its calls)
    builds the library once, and both processes load it and convolve with it."""
    calls = tmp_path / "compiler-calls"
    compiler = tmp_path / "c++"
    compiler.write_text(f'#!/bin/sh\necho "$@" >> {calls}\nexec {shutil.which("c++")} "$@"\n')
    compiler.chmod(0o755)
    env = dict(os.environ, CXX=str(compiler), JAXCNN_CACHE_DIR=str(tmp_path / "cache"))
    env.pop("CXXFLAGS", None)
    code = textwrap.dedent("""
        import jax, jax.numpy as jnp, numpy as np
        from jaxcnn.cpu import onednn
        from jaxcnn.cpu.onednn import build, ffi
        assert onednn.available(), onednn.unavailable_reason()
        x = jax.random.normal(jax.random.key(0), (2, 8, 8, 3))
        w = jax.random.normal(jax.random.key(1), (3, 3, 3, 4))
        got = ffi.forward(x, w, (1, 1), ((1, 1), (1, 1)), (1, 1))
        want = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"))
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
        print("library", build.library_path())
    """)
    processes = [subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=env, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                 for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in processes]
    for p, (out, err) in zip(processes, outputs):
        assert p.returncode == 0, err
    libraries = {line for out, _ in outputs for line in out.splitlines()
                 if line.startswith("library ")}
    assert len(libraries) == 1
    builds = [line for line in calls.read_text().splitlines() if " -shared " in f" {line} "]
    assert len(builds) == 1, builds
    files = sorted(p.name for p in (tmp_path / "cache").iterdir())   # no temporary folder left
    assert len(files) == 2 and files[0].endswith(".so") and files[1] == files[0] + ".lock"


@needs_toolchain
def test_an_unwritable_cache_folder_says_so_and_xla_is_used(
        tmp_path, monkeypatch, fresh_library, warnings_logged):
    """We run as root, whom permission bits do not stop (chmod a-w would not fail here): the cache
    folder lies under a regular file, which no one can make folders in (ENOTDIR)."""
    (tmp_path / "a-file").write_text("")
    cache = tmp_path / "a-file" / "cache"
    monkeypatch.setenv("JAXCNN_CACHE_DIR", str(cache))
    reason = _assert_xla_is_used("cannot write the library into the cache folder",
                                 warnings_logged, monkeypatch)
    assert str(cache) in reason and "Not a directory" in reason


@pytest.mark.parametrize("how", ["CXX names no file", "PATH holds no c++"])
def test_without_a_compiler_the_reason_is_logged_once_and_xla_is_used(
        how, tmp_path, monkeypatch, fresh_library, warnings_logged):
    monkeypatch.setenv("JAXCNN_CACHE_DIR", str(tmp_path / "cache"))
    if how == "CXX names no file":
        monkeypatch.setenv("CXX", "/nonexistent/c++")
    else:
        monkeypatch.delenv("CXX", raising=False)
        monkeypatch.setenv("PATH", str(tmp_path))
    reason = _assert_xla_is_used("no C++ compiler", warnings_logged, monkeypatch)
    assert ("/nonexistent/c++" if how == "CXX names no file" else "'c++'") in reason
    assert not (tmp_path / "cache").exists()


@needs_toolchain
def test_a_failed_compile_keeps_its_full_log_next_to_the_cache_and_names_it(
        tmp_path, monkeypatch, fresh_library, warnings_logged):
    cache = tmp_path / "cache"
    monkeypatch.setenv("JAXCNN_CACHE_DIR", str(cache))
    monkeypatch.setenv("CXXFLAGS", "--no-such-flag-for-jaxcnn")   # fails at once, no compiling
    log = cache / f"build-{build.cache_key()}.log"
    reason = _assert_xla_is_used(f"(full log: {log})", warnings_logged, monkeypatch)
    assert reason.startswith("compiling conv.cc failed: ") and "no-such-flag" in reason
    text = log.read_text()
    compiler_output = text.split("# exit status ")[1]
    assert "error" in compiler_output and "--no-such-flag-for-jaxcnn" in compiler_output
    assert any(line.startswith("$ ") and "conv.cc" in line for line in text.splitlines())
    assert "# compiler: " in text and "# exit status " in text
    assert sorted(p.name for p in cache.iterdir()) == sorted(
        [log.name, log.name.replace("build-", "jaxcnn_onednn_conv-").replace(".log", ".so.lock")])


@needs_toolchain
def test_the_cache_key_changes_with_compiler_flags_compiler_and_standard_library(
        tmp_path, monkeypatch):
    monkeypatch.delenv("CXXFLAGS", raising=False)
    key = build.cache_key()
    assert build.cache_key() == key                               # stable while nothing changes
    monkeypatch.setenv("CXXFLAGS", "-O3 -march=x86-64-v2")
    with_flags = build.cache_key()
    assert with_flags != key
    assert "-O3 -march=x86-64-v2" in build.build_inputs()["command"]
    monkeypatch.setenv("CXXFLAGS", "-O3")
    assert build.cache_key() not in (key, with_flags)
    monkeypatch.delenv("CXXFLAGS")
    monkeypatch.setattr(build, "FLAGS", build.FLAGS + ("-DNDEBUG",))   # build.py's own flags
    assert build.cache_key() != key
    monkeypatch.undo()
    monkeypatch.delenv("CXXFLAGS", raising=False)
    assert build.cache_key() == key
    # another compiler: another program, even one that answers --version alike
    other = tmp_path / "g++"
    other.write_text(f'#!/bin/sh\nexec {shutil.which("c++")} "$@"\n')
    other.chmod(0o755)
    monkeypatch.setenv("CXX", str(other))
    assert build.cache_key() != key
    monkeypatch.delenv("CXX")
    # another libstdc++ loaded (a node whose runtime differs)
    monkeypatch.setattr(build, "_runtime_stdlibs", lambda: ["/other/libstdc++.so.6.0.28 (1 bytes)"])
    assert build.cache_key() != key
    # -march=native ties the library to this CPU's kind
    monkeypatch.setenv("CXXFLAGS", "-march=native")
    assert "cpu" in build.build_inputs()
    native_here = build.cache_key()
    monkeypatch.setattr(build, "_cpu", lambda: "another CPU")
    assert build.cache_key() != native_here


@needs_onednn
@pytest.mark.parametrize("what, shapes, attrs", [
    ("3-D buffers", ((2, 6, 4), (3, 4, 4), (2, 6, 4)), {}),
    ("three strides", ((2, 6, 6, 4), (3, 3, 4, 4), (2, 6, 6, 4)), {"strides": [1, 1, 1]}),
    ("two paddings", ((2, 6, 6, 4), (3, 3, 4, 4), (2, 6, 6, 4)), {"padding": [1, 1]}),
])
def test_malformed_calls_come_back_as_errors_not_crashes(what, shapes, attrs):
    x, w, y = shapes
    call = jax.ffi.ffi_call("JaxcnnConvForward", jax.ShapeDtypeStruct(y, jnp.float32))
    kwargs = {"strides": [1, 1], "dilation": [1, 1], "padding": [1, 1, 1, 1], **attrs}
    with pytest.raises(Exception, match="4-D buffers, 2 strides, 2 dilations and 4 paddings"):
        jax.block_until_ready(call(jnp.ones(x), jnp.ones(w),
                                   **{k: np.asarray(v, np.int64) for k, v in kwargs.items()}))
