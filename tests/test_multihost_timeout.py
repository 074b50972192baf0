"""Joining a multi-host job is bounded: a coordinator that cannot be reached, or a process that
never comes, ends the program after --coordinator_timeout with one `error:` line and exit status 1
(JAX alone waits 300 s, then aborts with a C++ stack trace)."""
import os
import socket
import subprocess
import sys
import time

import pytest

from jaxcnn import parallel

from conftest import assert_one_line_error

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT_S = 5
STARTUP_S = 120   # imports and the watchdog's wait, on two shared cores


def free_port() -> int:
    """A port nothing listens on: one the OS just handed out, released again."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def join(workdir, *flags, env=None):
    """`experiments.run` joining a job of 2 processes with the given multi-host flags; returns
    (completed process, seconds it took)."""
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "experiments.run", "--model=lenet5", "--dataset=digits",
         "--steps=2", f"--coordinator_timeout={TIMEOUT_S}", f"--workdir={workdir}", *flags],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=STARTUP_S + 60)
    return result, time.monotonic() - started


def explicitly(process_id, port):
    return (f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2",
            f"--process_id={process_id}")


@pytest.mark.parametrize("process_id, message", [
    (1, "nothing answered at the coordinator address 127.0.0.1:{port} within {timeout} s"),
    (0, "not all 2 processes joined the coordinator at 127.0.0.1:{port} (this process, 0) within "
        "{timeout} s")])
def test_a_coordinator_nobody_reaches_ends_each_process_with_one_line(tmp_path, process_id,
                                                                       message):
    """Process 1 finds nothing at the address; process 0 serves it, but its peer never comes."""
    port = free_port()
    result, seconds = join(tmp_path / "run", *explicitly(process_id, port))
    assert_one_line_error(result, message.format(port=port, timeout=TIMEOUT_S))
    assert seconds < STARTUP_S, f"took {seconds:.0f} s"


def test_a_slurm_task_whose_coordinator_never_answers_ends_with_one_line(tmp_path):
    """--distributed_from_env: task 1 of 2, as srun starts it on node "localhost" (JAX's port, from
    the job id, replaced by a free one through JAX_COORDINATOR_PORT)."""
    port = free_port()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("SLURM_")},
           "SLURM_JOB_ID": "4242", "SLURM_STEP_NODELIST": "localhost", "SLURM_NTASKS": "2",
           "SLURM_PROCID": "1", "SLURM_LOCALID": "1", "SLURM_NODEID": "0",
           "SLURM_STEP_TASKS_PER_NODE": "2", "JAX_COORDINATOR_PORT": str(port)}
    result, seconds = join(tmp_path / "run", "--distributed_from_env", env=env)
    assert_one_line_error(result, f"nothing answered at the coordinator address localhost:{port} "
                                  f"within {TIMEOUT_S} s")
    assert seconds < STARTUP_S, f"took {seconds:.0f} s"


@pytest.mark.parametrize("tasks_per_node, node_id, expected", [
    ("1(x2)", "1", []), ("1", "0", []), ("2", "0", None), ("2(x2),1", "2", []),
    ("2(x2),1", "1", None), (None, None, None)])
def test_one_slurm_task_on_a_node_drives_all_its_devices(monkeypatch, tasks_per_node, node_id,
                                                         expected):
    """JAX restricts each SLURM task to the accelerator of its SLURM_LOCALID unless given
    local_device_ids; with one task on the node it must see all of them ([] is "all")."""
    for name in ("SLURM_STEP_TASKS_PER_NODE", "SLURM_TASKS_PER_NODE", "SLURM_NODEID"):
        monkeypatch.delenv(name, raising=False)
    if tasks_per_node is not None:
        monkeypatch.setenv("SLURM_STEP_TASKS_PER_NODE", tasks_per_node)
        monkeypatch.setenv("SLURM_NODEID", node_id)
    calls = []
    monkeypatch.setattr(parallel.jax.distributed, "initialize",
                        lambda *args, **kwargs: calls.append(kwargs))
    parallel.initialize_distributed(from_environment=True, timeout_s=30)
    assert calls[0]["local_device_ids"] == expected
    assert calls[0]["initialization_timeout"] > 30   # JAX's own limit comes after ours
