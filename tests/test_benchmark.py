"""The benchmark protocol: runs without TensorFlow, counts FLOPs right, prints parseable JSON."""
import json
import os
import subprocess
import sys
import textwrap

import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn import benchmark, models
from jaxcnn.models import summary

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_VGG = dict(cfg=(4, "M", 8, "M"), head=(16,), pool_to=(2, 2))


def _python(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def test_benchmark_runs_without_tensorflow():
    result = _python(f"""
        import sys
        sys.modules["tensorflow"] = None          # any `import tensorflow` now raises
        from jaxcnn import benchmark, models
        model = models.create("vgg11", 5, **{TINY_VGG!r})
        timings = benchmark.run(model, (8, 8, 3), batch_size=2, modes=benchmark.MODES,
                                burn_in=1, num_batches=2)
        assert [t.mode for t in timings] == list(benchmark.MODES)
        assert all(t.mean_s > 0 and t.images_per_s > 0 for t in timings)
        assert "tensorflow" not in [m.split(".")[0] for m in sys.modules if sys.modules[m]]
        print("ok")
    """)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok")


@pytest.mark.parametrize("name, gmacs", [("vgg16", 15.47), ("alexnet", 0.714)])
def test_analytic_macs_match_the_published_counts(name, gmacs):
    macs = summary.analytic_macs(models.create(name), (224, 224, 3))
    assert macs / 1e9 == pytest.approx(gmacs, rel=5e-3)


def test_factorize_changes_the_analytic_count_as_the_shapes_say():
    def gmacs(name, factorize, shape):
        return summary.analytic_macs(models.create(name, factorize=factorize), shape) / 1e9

    assert gmacs("vgg16", "all", (224, 224, 3)) == pytest.approx(11.867, rel=1e-3)
    # convnet_cifar conv2 (64→64, 5×5 → 5×1 + 1×5 at 12×12): 2.5× fewer MACs in that layer...
    saved = gmacs("convnet_cifar", "none", (24, 24, 3)) - gmacs("convnet_cifar", "2", (24, 24, 3))
    assert saved == pytest.approx(12 * 12 * 64 * 64 * 15 / 1e9, rel=1e-6)
    # ...but factorising conv1 (3→64) makes it 4.5× larger: its 1×5 half is 64 channels wide.
    assert gmacs("convnet_cifar", "all", (24, 24, 3)) > gmacs("convnet_cifar", "none", (24, 24, 3))


def test_xla_flops_cross_check_the_analytic_count():
    timing, = benchmark.run(models.create("vgg11", 5, **TINY_VGG), (8, 8, 3), batch_size=2,
                            modes=["forward"], burn_in=0, num_batches=1)
    # XLA skips the taps that fall on padding and adds the elementwise ops: close, not equal.
    assert timing.xla_flops == pytest.approx(timing.model_flops, rel=0.5)


def test_peak_flops_table():
    class Device:
        def __init__(self, kind):
            self.device_kind = kind

    assert benchmark.peak_flops(Device("NVIDIA H100 80GB HBM3"), jnp.bfloat16) == 989e12
    assert benchmark.peak_flops(Device("NVIDIA H100 PCIe"), jnp.float32) == 378e12
    assert benchmark.peak_flops(Device("cpu"), jnp.float32) is None


def _benchmark_cli(*args: str) -> subprocess.CompletedProcess:
    """`python -m experiments.benchmark --json ARGS` on the CPU, one device."""
    return subprocess.run([sys.executable, "-m", "experiments.benchmark", "--json", *args],
                          cwd=ROOT, env={**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""},
                          capture_output=True, text=True, timeout=300)


def test_cli_json_parses():
    result = _benchmark_cli("--model=convnet_cifar", "--num_classes=5", "--batch_size=2",
                            "--image_size=8", "--num_batches=2", "--burn_in=1",
                            "--modes=forward,forward_backward", "--notorch")
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert [r["mode"] for r in out["results"]] == ["forward", "forward_backward"]
    assert out["config"]["params"] > 0 and out["results"][0]["images_per_s"] > 0
    # Freed host memory is kept (jaxcnn.cpu.host_memory) only for large images, not these 8×8 ones.
    assert out["config"]["machine"]["freed_host_memory"] == "returned"


def test_cli_records_the_machine_and_marks_loaded_ratios():
    torch = pytest.importorskip("torch", reason="PyTorch is optional (not in requirements.txt)")
    result = _benchmark_cli("--model=lenet5", "--num_classes=5", "--batch_size=2",
                            "--image_size=32", "--num_batches=1", "--burn_in=0",
                            "--modes=forward", "--torch")
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    host = out["config"]["machine"]
    assert host["cpu"] and host["torch_threads"] == torch.get_num_threads()
    assert out["config"]["torch_params"] == out["config"]["params"]
    assert out["config"]["torch_device"] == "cpu"      # beside XLA:CPU (CUDA beside XLA:GPU)
    jaxcnn, twin = out["results"]
    assert twin["impl"] == "torch" and twin["ratio"] > 0
    assert jaxcnn["load_before"] == twin["load_before"] and len(twin["load_after"]) == 3
    # The verdict is the machine's (tests/test_machine.py checks the rule with fake loads).
    assert ("unreliable" in result.stderr) == (not twin["reliable"])


def test_ratio_table_marks_unreliable_ratios():
    from experiments import torch_ratios

    host = {"cpu": "Some CPU", "cpu_count": 2, "xla_threads": 2, "xla_flags": "",
            "torch_threads": 2, "freed_host_memory": "returned"}
    config = {"model": "lenet5", "num_classes": 10, "image_shape": [32, 32, 1], "batch_size": 256,
              "dtype": "float32", "num_batches": 10, "burn_in": 3, "machine": host,
              "compiler_options": {"xla_cpu_experimental_ynn_fusion_type": ""}}
    load = lambda before, after: {"load_before": [before, 0, 0], "load_after": [after, 0, 0],
                                  "reliable": max(before, after) <= 1}
    results = [{"impl": "jaxcnn", "mode": "forward", "mean_s": 0.05},
               {"impl": "torch", "mode": "forward", "mean_s": 0.04, "ratio": 1.25,
                **load(0.5, 0.9)},
               {"impl": "jaxcnn", "mode": "forward_backward", "mean_s": 0.2},
               {"impl": "torch", "mode": "forward_backward", "mean_s": 0.1, "ratio": 2.0,
                **load(0.9, 3.2)}]
    # Each model's run decides on host memory (jaxcnn.cpu.host_memory): the head says which kept it.
    large = {**config, "model": "vgg16", "image_shape": [224, 224, 3], "batch_size": 4,
             "num_classes": 1000, "machine": {**host, "freed_host_memory": "kept"}}
    runs = [{"config": config, "results": results}, {"config": large, "results": results[:2]}]
    assert torch_ratios.markdown(runs).splitlines() == [
        "Some CPU, 2 cores; XLA 2 threads, XLA_FLAGS='', compiler options "
        "{'xla_cpu_experimental_ynn_fusion_type': ''}; freed host memory kept for vgg16, "
        "returned for the others (jaxcnn.cpu.host_memory); torch 2 threads; float32, 10 batches "
        "after 3 burn-in",
        "",
        "| model, image, batch (classes) | mode | jaxcnn s/batch | torch s/batch | jaxcnn / torch "
        "| load before → after |",
        "|---|---|--:|--:|--:|---|",
        "| lenet5, 32, 256 (10) | forward | 0.0500 | 0.0400 | 1.25x | 0.50 → 0.90 |",
        "| lenet5, 32, 256 (10) | forward_backward | 0.2000 | 0.1000 | 2.00x (unreliable) | "
        "0.90 → 3.20 |",
        "| vgg16, 224, 4 (1000) | forward | 0.0500 | 0.0400 | 1.25x | 0.50 → 0.90 |"]


def test_packed_train_step_counts_every_members_images():
    model = models.create("lenet5", 10)
    compiled = benchmark.compile_mode(model, (32, 32, 1), 8, "train_step", pack=3)
    compiled.call()
    timing = compiled.timing(np.array([0.5, 0.5]))
    assert timing.pack == 3 and timing.images_per_s == 3 * 8 / 0.5
    assert timing.member_images_per_s == 8 / 0.5
    assert timing.as_dict()["tflops"] == pytest.approx(timing.model_flops * 48 / 1e12)
    with pytest.raises(ValueError, match="train_step only"):
        benchmark.compile_mode(model, (32, 32, 1), 8, "forward", pack=3)
