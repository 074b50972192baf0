"""jaxcnn / PyTorch for the models of issue #11, as one markdown table.

    python -m experiments.torch_ratios [--num_batches=10 --burn_in=3] [--modes=forward,...]
        [--models=lenet5,vgg16]

Runs `experiments.benchmark --torch --json` once per model, each in its own process, and prints
the ratios with the machine they were taken on and the load average around each; a ratio taken
under load (`experiments.machine`) is marked unreliable.
"""
from __future__ import annotations

import json
import subprocess
import sys

from absl import app, flags

from experiments import cli, machine, timing_flags  # noqa: F401  (timing_flags: its flags)

# (model, image size, batch size, classes): the list; 10 classes for the CIFAR-sized nets.
CASES = (("lenet5", 32, 256, 10), ("convnet_cifar", 24, 128, 10), ("vgg_cifar", 32, 64, 10),
         ("alexnet", 224, 16, 1000), ("vgg16", 224, 4, 1000))

flags.DEFINE_list("models", [c[0] for c in CASES], "which of the issue's models to run")
FLAGS = flags.FLAGS
FLAGS.set_default("num_batches", 10)
FLAGS.set_default("burn_in", 3)
FLAGS.set_default("modes", ["forward", "forward_backward"])


def benchmark_json(name: str, size: int, batch: int, classes: int) -> dict:
    """One `experiments.benchmark --torch --json` run."""
    command = [sys.executable, "-m", "experiments.benchmark", f"--model={name}",
               f"--image_size={size}", f"--batch_size={batch}", f"--num_classes={classes}",
               f"--num_batches={FLAGS.num_batches}", f"--burn_in={FLAGS.burn_in}",
               f"--modes={','.join(FLAGS.modes)}", "--torch", "--json"]
    result = subprocess.run(command, stdout=subprocess.PIPE, text=True)   # stderr: to ours
    if result.returncode:
        raise ValueError(f"{' '.join(command[1:])} failed (exit status {result.returncode})")
    return json.loads(result.stdout.strip().splitlines()[-1])


def markdown(runs: list[dict]) -> str:
    """The ratio table of `experiments.benchmark --json` outputs, with the machine they ran on."""
    config = runs[0]["config"]
    host = config["machine"]
    kept = [run["config"]["model"] for run in runs
            if run["config"]["machine"]["freed_host_memory"] == "kept"]
    memory = ("kept" if len(kept) == len(runs) else "returned" if not kept else
              f"kept for {', '.join(kept)}, returned for the others")
    lines = [f"{machine.describe(host, config['compiler_options'], memory)}; "
             f"torch {host['torch_threads']} threads; {config['dtype']}, "
             f"{config['num_batches']} batches after {config['burn_in']} burn-in", "",
             "| model, image, batch (classes) | mode | jaxcnn s/batch | torch s/batch | "
             "jaxcnn / torch | load before → after |", "|---|---|--:|--:|--:|---|"]
    for run in runs:
        c = run["config"]
        jaxcnn = {r["mode"]: r for r in run["results"] if r["impl"] == "jaxcnn"}
        for t in (r for r in run["results"] if r["impl"] == "torch"):
            mark = "" if t["reliable"] else " (unreliable)"
            lines.append(
                f"| {c['model']}, {c['image_shape'][0]}, {c['batch_size']} "
                f"({c['num_classes']}) | {t['mode']} | {jaxcnn[t['mode']]['mean_s']:.4f} | "
                f"{t['mean_s']:.4f} | {t['ratio']:.2f}x{mark} | {t['load_before'][0]:.2f} → "
                f"{t['load_after'][0]:.2f} |")
    return "\n".join(lines)


def main(argv):
    cli.check_no_arguments(argv)
    unknown = set(FLAGS.models) - {c[0] for c in CASES}
    if unknown:
        cli.fail(f"--models: {', '.join(sorted(unknown))} not in issue #11's list")
    with cli.user_errors():
        print(markdown([benchmark_json(*case) for case in CASES if case[0] in FLAGS.models]))


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_flags)
