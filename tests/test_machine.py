"""The benchmark protocol's record of the machine and its verdict on the load (fake loads)."""
import subprocess
import sys
import time

from experiments import machine


def test_load_at_most_half_the_cores_is_reliable():
    check = machine.load_check((1.0, 0.5, 0.25), (0.8, 0.6, 0.3), cpu_count=2)
    assert check == {"load_before": [1.0, 0.5, 0.25], "load_after": [0.8, 0.6, 0.3],
                     "others_during": None, "load_limit": 1.0, "reliable": True}
    assert machine.load_warning(check) is None


def test_without_a_measure_of_other_processes_the_load_before_decides():
    assert not machine.load_check((1.01, 0, 0), (0.2, 0, 0), cpu_count=2)["reliable"]
    check = machine.load_check((1.5, 0.4, 0.3), (4.567, 2.0, 1.0), cpu_count=2)
    assert not check["reliable"]
    assert machine.load_warning(check) == (
        "warning: 1-minute load average 1.50 before, 4.57 after the timing; the limit is 1 (half "
        "the cores): the jaxcnn/torch ratio is unreliable")
    assert machine.load_check((3.9, 0, 0), (3.9, 0, 0), cpu_count=8)["reliable"]


def test_the_benchmarks_own_threads_do_not_count_against_it_other_processes_do():
    # The load averages count the benchmark itself (and the run before it): others' use decides.
    assert machine.load_check((1.9, 0, 0), (2.1, 0, 0), cpu_count=2, others=0.2)["reliable"]
    check = machine.load_check((0.3, 0, 0), (2.1, 0, 0), cpu_count=2, others=1.5)
    assert not check["reliable"] and machine.load_warning(check) == (
        "warning: 1-minute load average 0.30 before, 2.10 after the timing, other processes used "
        "1.50 cores during it; the limit is 1 (half the cores): the jaxcnn/torch ratio is "
        "unreliable")


def test_other_processes_are_measured_and_this_ones_own_work_is_not():
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        monitor = machine.OtherProcesses().start()
        time.sleep(1.0)
        with_spinner = monitor.stop()
    finally:
        busy.kill()
    monitor = machine.OtherProcesses().start()
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:   # this process busy on one core
        pass
    own_work = monitor.stop()
    assert with_spinner >= 0.5 and own_work < with_spinner


def test_record_names_the_cpu_and_the_threads():
    host = machine.record(torch_threads=2)
    assert host["cpu"] and host["cpu_count"] >= host["xla_threads"] >= 1
    assert host["torch_threads"] == 2 and isinstance(host["xla_flags"], str)
    # This test process did not call jaxcnn.cpu.host_memory.reuse_freed_memory (the programs do).
    assert host["freed_host_memory"] == "returned"
    assert host["onednn_convolutions"] in ("built (float32)", "built (float32, bfloat16)") or (
        host["onednn_convolutions"].startswith("unavailable ("))
    assert machine.describe(host, {}).endswith(
        f"; oneDNN convolutions {host['onednn_convolutions']}")
