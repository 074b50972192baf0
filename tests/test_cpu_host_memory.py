"""jaxcnn.cpu.host_memory: freed host memory kept for the next execution, counted in page faults.

Each run is a fresh process, since the policy is the process's and must come before JAX starts."""
import os
import subprocess
import sys

import pytest

from jaxcnn.cpu import host_memory

GLIBC = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CALLS = 40          # calls of a program with two 40 MB buffers; faults counted over the last 20
SCRIPT = f"""
import resource, sys
from jaxcnn.cpu import host_memory
applied = host_memory.reuse_freed_memory() if sys.argv[1] == "reuse" else False
import jax, jax.numpy as jnp
step = jax.jit(lambda x: jnp.cumsum(x[::-1] * 2) + 1)   # a 40 MB temporary and output
x = jnp.zeros(10_000_000)
faults = []
for _ in range({CALLS}):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    step(x).block_until_ready()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(applied, sum(faults[-20:]))
"""


def python(code: str, *args: str) -> list[str]:
    """The words `code` prints, run in a fresh CPU-only process without the allocator variables
    a user could set (`host_memory.USER_CHOICES`)."""
    outer = {k: v for k, v in os.environ.items() if k not in host_memory.USER_CHOICES}
    env = {**outer, "PYTHONPATH": REPO, "JAX_PLATFORMS": "cpu"}
    return subprocess.run([sys.executable, "-c", code, *args], env=env, cwd=REPO,
                          capture_output=True, text=True, check=True).stdout.split()


def page_faults(policy: str) -> tuple[bool, int]:
    out = python(SCRIPT, policy)
    return out[0] == "True", int(out[1])


@GLIBC
def test_kept_memory_saves_the_page_faults_of_every_call():
    applied, default = page_faults("default")
    assert not applied
    # glibc's default maps each 40 MB buffer afresh: ~10,000 faults of 4 KB pages per buffer.
    assert default >= 20 * 2 * 9_000
    applied, kept = page_faults("reuse")
    assert applied
    # Kept: the heap grows a few times while it finds its shape, then the calls reuse it.
    assert kept < default / 4


@GLIBC
def test_the_programs_keep_memory_for_large_images_only(monkeypatch):
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    assert not host_memory.reuse_freed_memory_for(host_memory.LARGE_IMAGE_SIDE - 1)
    assert not host_memory.reusing()
    code = ("from jaxcnn.cpu import host_memory as h; "
            f"print(h.reuse_freed_memory_for({host_memory.LARGE_IMAGE_SIDE}), h.reusing())")
    assert python(code) == ["True", "True"]


# experiments.run, and an ablation worker, up to training (replaced by a no-op), recording
# whether a JAX backend had started when `cli.start_jax` set up the process.
PROGRAM_UP_TO_TRAINING = """
import sys
from absl import app
from jax._src import xla_bridge
from experiments import cli
started, start_jax = [], cli.start_jax
def spy(image_size):
    started.append(xla_bridge.backends_are_initialized())
    start_jax(image_size)
cli.start_jax = spy
program, *flags = sys.argv[1:]
if program == "run":
    from experiments import run as program_module
    from jaxcnn import trainer
    trainer.train_and_evaluate = lambda config, stop: (None, {})
else:
    from experiments import ablate as program_module
    program_module.train_runs = lambda *args: None
sys.argv = [program, *flags]
try:
    app.run(program_module.main)
finally:
    print("backend_started_before_setup", *started)
"""


@pytest.mark.parametrize("program, flags", [
    ("run", ()), ("ablate", ("--axis=factorize=none,2", "--run_index=1"))])
def test_the_programs_set_up_the_process_before_jax_starts(program, flags, tmp_path):
    """Host memory (and joining a multi-host job) only work before a JAX backend starts, and
    tracing a model starts one: an ablation worker used to check every configuration's model
    first."""
    out = python(PROGRAM_UP_TO_TRAINING, program, f"--workdir={tmp_path}", *flags)
    assert out[-2:] == ["backend_started_before_setup", "False"]


def test_an_allocator_choice_of_the_user_is_left_alone(monkeypatch):
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert not host_memory.reuse_freed_memory() and not host_memory.reusing()


def test_only_a_cpu_process_is_changed(monkeypatch):
    monkeypatch.setenv("JAX_PLATFORMS", "cuda,cpu")
    assert not host_memory.cpu_only() and not host_memory.reuse_freed_memory()
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    assert host_memory.cpu_only()
