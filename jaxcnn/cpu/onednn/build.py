"""Compiles `conv.cc` into a shared library on first use, once per everything the library depends on.

oneDNN comes from the `onednn-cpu-gomp` / `onednn-devel-cpu-gomp` wheels (requirements.txt), which
put `libdnnl.so` and its headers under the environment's prefix; XLA's FFI headers come with jaxlib.
The compiler is `$CXX` (default `c++` on PATH), with this module's flags and then `$CXXFLAGS`.

The library lands in `$JAXCNN_CACHE_DIR` (default `~/.cache/jaxcnn`) under a name that hashes all it
depends on (`build_inputs`): conv.cc, the compiler command and its flags, the compiler (its path
and `--version`), the C++ standard library it links and the one this process runs with, jaxlib's
version and oneDNN's (library path, size and version headers), and the CPU where a flag says
`=native`. A home folder shared by cluster nodes with other compilers or libstdc++ thus holds one
library per kind of node, each rebuilt where it would not load.

It is built under a file lock, so that parallel processes (pytest-xdist, a sweep's workers) build it
once; where the file system cannot lock (NFS without lockd, Lustre without `flock`), or on a
platform without `fcntl`, one warning says so and each process builds without the lock (into a
temporary file renamed into place: never a half-written library, at worst a few identical builds).
Anything missing raises `Unavailable` with a one-line reason; a failed compile keeps the compiler's
full output in `<cache>/build-<key>.log` and the reason names it. jaxcnn then keeps XLA's own
convolutions.

So that the cache does not grow forever, each build removes the files of other keys built more
than a week before (an earlier conv.cc, compiler or jaxlib left them) unless another process holds
their lock; a folder shared with other kinds of node rebuilds their libraries at most once a week.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

import jax
import jaxlib
from absl import logging

SOURCE = pathlib.Path(__file__).with_name("conv.cc")
FLAGS = ("-O2", "-std=c++17", "-shared", "-fPIC", "-w")   # before $CXXFLAGS, which may override
_OUTPUT = "<output>"                                     # the output's place in the hashed command
_PROBE_TIMEOUT_S = 60
_KEEP_OTHER_KEYS_S = 7 * 24 * 3600                       # see `_remove_old_keys`
_KEYED_FILE = re.compile(r"jaxcnn_onednn_conv-(?P<so>[0-9a-f]{16})\.so(\.lock)?|"
                         r"build-(?P<log>[0-9a-f]{16})\.log")


class Unavailable(RuntimeError):
    """Why the oneDNN convolutions cannot be built or loaded here (one line)."""


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


def _compiler() -> str:
    name = os.environ.get("CXX") or "c++"
    compiler = shutil.which(name)
    if compiler is None:
        raise Unavailable(f"no C++ compiler: {name!r} ($CXX, else c++) is not on PATH")
    return compiler


def _probe(compiler: str, *args: str) -> str:
    """The compiler's answer to `args` (stdout), or Unavailable saying why it gave none."""
    try:
        done = subprocess.run([compiler, *args], capture_output=True, text=True,
                              timeout=_PROBE_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise Unavailable(f"the C++ compiler {compiler} cannot run: {_one_line(str(e))}") from e
    if done.returncode != 0:
        raise Unavailable(f"the C++ compiler {compiler} failed on {' '.join(args)}: "
                          f"{_one_line(done.stderr or done.stdout)}")
    return done.stdout.strip()


def _file_id(path: str | pathlib.Path) -> str:
    """A file by its real path and size (cheap: libdnnl.so is ~50 MB)."""
    path = pathlib.Path(path)
    try:
        return f"{path.resolve()} ({path.stat().st_size} bytes)"
    except OSError:
        return f"{path} (absent)"


def _runtime_stdlibs() -> list[str]:
    """The C++ standard libraries this process has loaded (jaxlib loads one), which the built
    library will bind to."""
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps
                     if re.search(r"/lib(std)?c\+\+\.so", line.split()[-1])}
    except OSError:
        return []
    return [_file_id(p) for p in sorted(paths)]


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
    except OSError:
        return "unknown"
    first = lambda key: (re.findall(rf"^{key}\s*:\s*(.*)$", info, re.M) or [""])[0]
    return f"{first('model name')}; {first('flags')}"


def _command(compiler: str, prefix: pathlib.Path, output: str) -> list[str]:
    extra = shlex.split(os.environ.get("CXXFLAGS", ""))
    return [compiler, *FLAGS, *extra, f"-I{jax.ffi.include_dir()}", f"-I{prefix / 'include'}",
            str(SOURCE), "-o", output, f"-L{prefix / 'lib'}", "-ldnnl",
            f"-Wl,-rpath,{prefix / 'lib'}"]


def build_inputs() -> dict[str, str]:
    """Everything the library depends on, by name: what `cache_key` hashes."""
    if sys.platform != "linux":
        raise Unavailable(f"built on Linux only, not {sys.platform}")
    compiler = _compiler()
    prefix = _onednn_prefix()
    command = _command(compiler, prefix, _OUTPUT)
    dnnl_headers = prefix / "include/oneapi/dnnl"
    inputs = {
        "source": hashlib.sha256(SOURCE.read_bytes()).hexdigest(),
        "command": shlex.join(command),
        "compiler": f"{_file_id(compiler)}: {_first_line(_probe(compiler, '--version'))}",
        "stdlib (linked)": " ".join(_file_id(_probe(compiler, f"-print-file-name={name}"))
                                    for name in ("libstdc++.so", "libc++.so")),
        "stdlib (loaded)": " ".join(_runtime_stdlibs()),
        "jaxlib": jaxlib.__version__,
        "onednn": " ".join([_file_id(prefix / "lib/libdnnl.so")] + [
            hashlib.sha256((dnnl_headers / h).read_bytes()).hexdigest()[:16]
            for h in ("dnnl_version.h", "dnnl_config.h") if (dnnl_headers / h).exists()]),
    }
    if any(flag.endswith("=native") for flag in command):
        inputs["cpu"] = _cpu()
    return inputs


def cache_key(inputs: dict[str, str] | None = None) -> str:
    inputs = build_inputs() if inputs is None else inputs
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]


def _files(cache: pathlib.Path, key: str) -> tuple[pathlib.Path, pathlib.Path, pathlib.Path]:
    """A key's library, build log (of a failed build) and lock in the cache folder."""
    library = cache / f"jaxcnn_onednn_conv-{key}.so"
    return library, cache / f"build-{key}.log", cache / f"{library.name}.lock"


def library_path() -> pathlib.Path:
    """The compiled library, built now if it is not in the cache yet."""
    inputs = build_inputs()
    key = cache_key(inputs)
    cache = _cache_dir()
    target, log, lock = _files(cache, key)
    if target.exists():
        return target
    try:
        cache.mkdir(parents=True, exist_ok=True)
        with _locked(lock):
            if not target.exists():
                _compile(inputs, target, log)
                _remove_old_keys(cache, key)
    except OSError as e:
        raise Unavailable(f"cannot write the library into the cache folder {cache}: "
                          f"{_one_line(str(e))} (set JAXCNN_CACHE_DIR to a writable folder)") from e
    return target


@contextlib.contextmanager
def _locked(path: pathlib.Path):
    """Holds an exclusive lock on `path` (made if absent); where none can be taken, warns once
    and goes on without it."""
    try:
        import fcntl      # here, not at the top: importing jaxcnn must work where there is none
    except ImportError:
        fcntl = None
    with open(path, "a") as lock:
        if fcntl is None:
            why = "this platform has no fcntl"
        else:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX)
                why = None
            except OSError as e:     # ENOLCK (NFS without lockd), EOPNOTSUPP / ENOSYS (Lustre)
                why = f"flock failed: {e.strerror or e}"
        if why is not None:
            logging.warning("jaxcnn: cannot lock %s (%s); building the oneDNN library without the "
                            "lock: processes starting together may each build it (the result is "
                            "the same)", path, why)
        yield


def _remove_old_keys(cache: pathlib.Path, key: str) -> None:
    """Removes the library, build log and lock of each other key last built more than
    _KEEP_OTHER_KEYS_S ago, unless another process holds its lock (building it now). Younger
    ones stay: a home folder shared by other kinds of node holds theirs, in use. What cannot be
    removed is logged: the build itself has succeeded."""
    keys = {m["so"] or m["log"] for m in map(_KEYED_FILE.fullmatch, os.listdir(cache)) if m}
    long_ago = time.time() - _KEEP_OTHER_KEYS_S
    for old in sorted(keys - {key}):
        library, log, lock = _files(cache, old)
        try:
            with open(lock, "a") as held:
                if _held_elsewhere(held) or any(p.exists() and p.stat().st_mtime > long_ago
                                                for p in (library, log)):
                    continue
                for path in (library, log, lock):
                    path.unlink(missing_ok=True)
        except OSError as e:
            logging.warning("jaxcnn: cannot remove an old oneDNN library from the cache: %s", e)


def _held_elsewhere(lock) -> bool:
    """Whether another process holds the lock on `lock` (an open file); if none does, it is
    taken. False where no lock can be taken (no fcntl, no flock on this file system)."""
    try:
        import fcntl
    except ImportError:
        return False
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:   # ENOLCK, EOPNOTSUPP (`_locked` has warned): no lock to respect
        pass
    return False


def _compile(inputs: dict[str, str], target: pathlib.Path, log: pathlib.Path) -> None:
    """Compiles into a temporary file renamed onto `target`; on failure, keeps the compiler's
    output in `log` and raises Unavailable naming it."""
    logging.info("jaxcnn: compiling %s into %s", SOURCE.name, target)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        out = pathlib.Path(tmp) / target.name
        command = [str(out) if arg == _OUTPUT else arg for arg in shlex.split(inputs["command"])]
        try:
            done = subprocess.run(command, capture_output=True, text=True)
        except OSError as e:
            raise Unavailable(f"the C++ compiler {command[0]} cannot run: "
                              f"{_one_line(str(e))}") from e
        if done.returncode != 0:
            log.write_text("\n".join([
                f"# jaxcnn: compiling {SOURCE.name} failed, {time.strftime('%Y-%m-%d %H:%M:%S')}",
                *(f"# {name}: {value}" for name, value in inputs.items()),
                f"$ {shlex.join(command)}", f"# exit status {done.returncode}",
                done.stdout, done.stderr]))
            raise Unavailable(f"compiling {SOURCE.name} failed: {_first_error(done.stderr)} "
                              f"(full log: {log})")
        os.replace(out, target)
    log.unlink(missing_ok=True)      # an earlier failure's, no longer true


def _first_error(output: str) -> str:
    lines = [line for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if re.search(r"\berror\b", line, re.I)]
    return _one_line((errors or lines or ["(no output)"])[0])


def _first_line(text: str) -> str:
    return (text.splitlines() or [""])[0]


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 3] + "..."
