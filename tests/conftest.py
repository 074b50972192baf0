"""Test-wide settings: 8 fake CPU devices (data-parallel tests), TF kept off accelerators, one
persistent compilation cache for the session, and deprecated APIs called from this project's code
as errors (so that it keeps working when the next JAX / Flax / Optax / Orbax release removes them).

A warning is attributed to the module its `stacklevel` points at: the caller of the deprecated API.
The filters match our modules only, so warnings that TensorFlow, TFDS or JAX itself raise about
their own internals stay warnings.
"""
import glob
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

# The suite compiles the same tiny LeNet programs in dozens of processes (the programs the tests
# start, ~6 s of compiling each); JAX's persistent cache, inherited through the environment,
# compiles each once. A fresh directory per session, removed at its end: no test sees another
# session's executables.
CACHE_DIR = None
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    CACHE_DIR = os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="jaxcnn-jit-")
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "-1"

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEPRECATIONS = ("DeprecationWarning", "FutureWarning")
# The programs the tests start (`python -m experiments.run`, tests/multihost_worker.py) run as
# __main__; PYTHONWARNINGS matches whole module names, so it lists every module.
OUR_MODULES = ["__main__"] + sorted(
    os.path.relpath(path, REPO).removesuffix(".py").removesuffix("/__init__").replace("/", ".")
    for package in ("jaxcnn", "experiments")
    for path in glob.glob(os.path.join(REPO, package, "**", "*.py"), recursive=True))
os.environ.setdefault("PYTHONWARNINGS", ",".join(
    f"error::{category}:{module}" for category in DEPRECATIONS for module in OUR_MODULES))


def pytest_configure(config):
    for category in DEPRECATIONS:   # module: a regex matching the start of the module name
        config.addinivalue_line("filterwarnings",
                                f"error::{category}:(jaxcnn|experiments|test_|conftest)")


def pytest_unconfigure(config):
    if CACHE_DIR is not None:
        shutil.rmtree(CACHE_DIR, ignore_errors=True)


@pytest.fixture(autouse=True)
def _temporary_files_in_tmp_path(tmp_path, monkeypatch):
    """`tempfile`'s folders made inside a test go to its tmp_path, which pytest prunes: offline,
    TFDS leaves an empty one per dataset it cannot find (its metadata download from GCS fails
    after mkdtemp), and the suite checks that path many times."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))


@pytest.fixture(scope="session")
def trained_workdir(tmp_path_factory):
    """An `experiments.run` workdir of LeNet-5 on the digits, 8 steps, with complete checkpoints
    at steps 2, 4, 6 and 8: the failure tests' (test_faults, test_reliability) undamaged run. Shared
    by the session, so every test copies it before changing anything."""
    workdir = tmp_path_factory.mktemp("trained") / "run"
    result = subprocess.run(
        [sys.executable, "-m", "experiments.run", "--model=lenet5", "--dataset=digits",
         "--batch_size=32", "--eval_batch_size=64", "--optimizer=sgd", "--learning_rate=0.05",
         "--log_every=5", "--steps=8", "--checkpoint_every=2", "--keep_checkpoints=4",
         f"--workdir={workdir}"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir
