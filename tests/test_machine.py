"""The benchmark protocol's record of the machine and its verdict on the load (fake loads)."""
from experiments import machine


def test_load_at_most_half_the_cores_is_reliable():
    check = machine.load_check((1.0, 0.5, 0.25), (0.8, 0.6, 0.3), cpu_count=2)
    assert check == {"load_before": [1.0, 0.5, 0.25], "load_after": [0.8, 0.6, 0.3],
                     "load_limit": 1.0, "reliable": True}
    assert machine.load_warning(check) is None


def test_load_above_half_the_cores_before_or_after_is_unreliable():
    assert not machine.load_check((1.01, 0, 0), (0.2, 0, 0), cpu_count=2)["reliable"]
    check = machine.load_check((0.5, 0.4, 0.3), (4.567, 2.0, 1.0), cpu_count=2)
    assert not check["reliable"]
    assert machine.load_warning(check) == (
        "warning: 1-minute load average 0.50 before, 4.57 after the timing exceeds 1 (half the "
        "cores): the jaxcnn/torch ratio is unreliable")
    assert machine.load_check((3.9, 0, 0), (3.9, 0, 0), cpu_count=8)["reliable"]


def test_record_names_the_cpu_and_the_threads():
    host = machine.record(torch_threads=2)
    assert host["cpu"] and host["cpu_count"] >= host["xla_threads"] >= 1
    assert host["torch_threads"] == 2 and isinstance(host["xla_flags"], str)
