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

import numpy as np
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

import jax  # noqa: E402  (after the environment above: JAX reads it on import)


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


# ---- helpers the test files share (tests/ is on sys.path: `from conftest import ...`) ----------

def run_cli(*args, env=None, max_file_bytes=None, check=False, timeout=300):
    """`python -m experiments.run ARGS` to its end, output captured; with max_file_bytes, under
    RLIMIT_FSIZE (a full disk, no root needed); with check, a non-zero exit status raises."""
    limit = [] if max_file_bytes is None else [
        sys.executable, "-c", "import os, resource, sys; resource.setrlimit(resource.RLIMIT_FSIZE, "
        f"({max_file_bytes}, {max_file_bytes})); os.execv(sys.executable, sys.argv[1:])"]
    return subprocess.run(limit + [sys.executable, "-m", "experiments.run", *args], cwd=REPO,
                          env=env, capture_output=True, text=True, check=check, timeout=timeout)


def run_in_process(capsys, main, *args, parse=None) -> subprocess.CompletedProcess:
    """A program's `main` (`experiments.ablate.main`, say) called in this process on the command
    line ARGS, as `absl.app.run(main, flags_parser=parse)` calls it (parse: the program's flags
    parser, `experiments.cli.parse_flags` by default): its exit status (SystemExit's code, 0 if it
    returns) and what it printed, as `subprocess.run` would give them. An exception that is no
    SystemExit propagates: the real program would have shown a traceback. The flags are reset
    (their defaults too: a program's main may set its own), and the signal handlers it installs
    (StopRequest) and pytest's faulthandler restored, afterwards. For checks of what a program says; a test of the process itself (its exit
    status, a signal, no traceback on stderr) starts one."""
    import faulthandler
    import signal
    from absl import flags
    from experiments import cli
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    defaults = {name: flags.FLAGS[name].default for name in flags.FLAGS}   # main may set some
    disable_faulthandler = faulthandler.disable   # cli.quiet would turn off pytest's
    faulthandler.disable = lambda: None
    capsys.readouterr()
    flags.FLAGS.unparse_flags()
    try:
        main((parse or cli.parse_flags)(["prog", *args]))
        code = 0
    except SystemExit as exit:
        code = exit.code
    finally:
        for name, default in defaults.items():
            if flags.FLAGS[name].default != default:
                flags.FLAGS.set_default(name, default)
        flags.FLAGS.unparse_flags()
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
        faulthandler.disable = disable_faulthandler
    said = capsys.readouterr()
    return subprocess.CompletedProcess(["prog", *args], code, said.out, said.err)


def assert_one_line_error(result, expected):
    """Exit status 1, one `error:` line containing `expected`, no traceback (nor a C++ check
    failure) in what the program said."""
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "Check failure" not in result.stderr, \
        result.stderr[-3000:]
    assert len(errors) == 1 and expected in errors[0], result.stderr[-3000:]


def steps_in(workdir):
    """The complete checkpoints' steps in a workdir, in order ([] when it has none)."""
    ckpt_dir = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(ckpt_dir):
        return []
    return sorted(int(d) for d in os.listdir(ckpt_dir) if d.isdigit())


# ---- two orders of the same float32 arithmetic, compared up to a measured noise floor ----------
#
# Two orders of the same float32 arithmetic (a packed member and its standalone run, parallel and
# sequential runs, 8 devices and 1, micro-batches and the whole batch) agree only to rounding,
# grown over a run's steps, and by how much depends on the CPU (an AVX-512 Xeon and an AMD EPYC
# differ). No fixed tolerance tells that from a wrong batch or seed. The noise floor is measured
# instead, on the machine running the test: the reference computed a second way (typically with
# compute option cpu_kernels="off": flax's layers and XLA's defaults instead of the CPU wing's
# forms, or in float64). A result may differ from the reference by at most twice what those two
# do, array by array, plus 16 float32 ulps of the array's scale (where both ways happen to round
# alike); each test also shows that a deliberately wrong variant exceeds that tolerance.

ULPS = 16 * np.finfo(np.float32).eps


def named_arrays(tree) -> dict[str, np.ndarray]:
    """The leaves of a pytree as float64 arrays named by their paths."""
    return {jax.tree_util.keystr(path): np.asarray(x, np.float64)
            for path, x in jax.tree_util.tree_leaves_with_path(tree)}


def noise_tolerances(reference: dict, other_order: dict, scales: dict | None = None,
                     factor: float = 2.0) -> dict[str, float]:
    """Per named array: `factor` times the largest difference between the reference and the same
    computed another way, plus 16 ulps of the array's scale (`scales[name]` where given, else the
    reference array's largest magnitude)."""
    assert reference.keys() == other_order.keys()
    return {name: factor * np.max(np.abs(reference[name] - other_order[name]), initial=0.0)
            + ULPS * (scales[name] if scales and name in scales
                      else np.max(np.abs(reference[name]), initial=0.0))
            for name in reference}


def beyond_tolerance(got: dict, reference: dict, tol: dict[str, float]) -> list[str]:
    """The named arrays of `got` that differ from the reference's by more than their tolerance."""
    assert {n: x.shape for n, x in got.items()} == {n: x.shape for n, x in reference.items()}
    return [f"{name}: {np.max(np.abs(got[name] - reference[name])):.3g} > {tol[name]:.3g}"
            for name in got if np.max(np.abs(got[name] - reference[name]), initial=0.0) > tol[name]]


def as_compared(run: dict) -> dict[str, np.ndarray]:
    """A training run ({"state": a pytree, "rows": metric rows, "result": {"top1": ...}}) as named
    float64 arrays: each state leaf, each metric row's loss, top-1 and top-5 (train and test rows,
    in order) and the final test top-1."""
    arrays = named_arrays(run["state"])
    arrays["metric rows"] = np.array([r[k] for r in run["rows"] for k in ("loss", "top1", "top5")])
    arrays["test top-1"] = np.array([run["result"]["top1"]])
    return arrays


def run_tolerances(alone: dict, other_order: dict) -> dict[str, float]:
    """`noise_tolerances` of a training run: one scale for the whole state, its largest value (a
    leaf such as a conv bias before batch norm, whose gradient is zero, holds rounding noise
    only); each metric its own."""
    a, b = as_compared(alone), as_compared(other_order)
    state_scale = max(np.max(np.abs(x), initial=0.0) for x in jax.tree.leaves(alone["state"]))
    return noise_tolerances(a, b, {name: state_scale for name in a
                                   if name not in ("metric rows", "test top-1")})


def runs_beyond_tolerance(run: dict, alone: dict, tol: dict[str, float]) -> list[str]:
    """The arrays of training run `run` that differ from `alone`'s by more than `tol`."""
    return beyond_tolerance(as_compared(run), as_compared(alone), tol)


def standalone(cfg, tmp_path, name: str) -> dict:
    """TrainConfig `cfg` trained alone in this process, in tmp_path/name/<its workdir's name>: its
    state (params, batch statistics, optimizer state), test result and metric rows."""
    import dataclasses
    from jaxcnn import trainer
    from jaxcnn.metrics_file import read_metrics
    cfg = dataclasses.replace(cfg, workdir=str(tmp_path / name / os.path.basename(cfg.workdir)))
    state, result = trainer.train_and_evaluate(cfg)
    return {"state": {"params": state.params, "batch_stats": state.batch_stats,
                      "opt_state": state.opt_state},
            "result": result, "rows": read_metrics(cfg.workdir)}


def group_scales(groups: dict, own: tuple[str, ...] = ("metrics",)) -> dict[str, float]:
    """{named array: scale} for `noise_tolerances`, each array scaled by the largest magnitude in
    its group (`groups`: {group name: pytree}; arrays named `group name` + leaf path): a leaf that
    holds rounding noise only, such as the bias of a conv before batch norm, is compared on the
    scale of its group. The arrays of the groups in `own` (metrics of different kinds, such as a
    loss and a step number) keep their own scales."""
    scales = {}
    for group, tree in groups.items():
        if group in own:
            continue
        arrays = named_arrays(tree)
        scale = max((np.max(np.abs(x), initial=0.0) for x in arrays.values()), default=0.0)
        scales.update({group + name: scale for name in arrays})
    return scales


def assert_equal_up_to_noise_floor(got: dict, reference: dict, other_order: dict,
                                   wrong: dict | None = None) -> None:
    """Pytrees {group: tree}: `got` equals `reference` up to the noise floor that `other_order`
    (the reference computed another way) measures, each leaf on its group's scale (`group_scales`);
    `wrong`, where given (the reference computed with a deliberate small error), exceeds it: the
    test's power."""
    named = lambda groups: {group + name: x for group, tree in groups.items()
                            for name, x in named_arrays(tree).items()}
    tol = noise_tolerances(named(reference), named(other_order), group_scales(reference))
    assert not beyond_tolerance(named(got), named(reference), tol), \
        beyond_tolerance(named(got), named(reference), tol)
    if wrong is not None:
        assert beyond_tolerance(named(wrong), named(reference), tol), \
            "the deliberately wrong variant is within the tolerance: the comparison has no power"


def take(iterator, n: int) -> list:
    """The next n items (batches) of an iterator."""
    return [next(iterator) for _ in range(n)]


def assert_same_batches(a, b) -> None:
    """Two sequences of {"image", "label"} batches are equal, batch for batch."""
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x["image"], y["image"])
        np.testing.assert_array_equal(x["label"], y["label"])
