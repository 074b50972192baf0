"""Train and evaluate a model: `python -m experiments.run [--flagfile=experiments/flags/X.flags]`.

With no flags it runs the quick start (LeNet-5 on the embedded digits). `--seeds=K` trains seeds
0..K-1 of the configuration packed as one program (`jaxcnn.packing`), each in WORKDIR/seed=S/ as
a run of its own. Every failure the user can
fix (bad flag, missing data, unusable checkpoint, non-finite loss, full disk) ends with a one-line
error and exit status 1 (`--debug` shows the traceback). SIGTERM checkpoints the current step and
exits 0; so does Ctrl-C, with exit status 130 (a second Ctrl-C quits at once, without it).
"""
import dataclasses
import os
import statistics
import sys

from absl import app, flags, logging

from experiments import cli, model_flags, train_flags
from jaxcnn import trainer
from jaxcnn.metric_writers import CONSOLE_SHOWN

FLAGS = flags.FLAGS


def main(argv):
    stop = cli.start(argv)
    if FLAGS.seeds > 1:
        return train_seeds(stop)
    with cli.user_errors():
        config = train_flags.config_from_flags()
        cli.start_jax(config)
        _, result = trainer.train_and_evaluate(config, stop)
    if result.get("preempted"):
        print(f"stopped at step {result['step']} with a checkpoint of it in {config.workdir}: "
              f"run the same command again to resume")
        sys.exit(stop.exit_status)
    elif "top1" in result:
        logging.info("test top-1 %.2f%%, top-5 %.2f%% on %d examples (step %d)",
                     100 * result["top1"], 100 * result["top5"], result["count"], result["step"],
                     extra=CONSOLE_SHOWN)
        print(f"test accuracy: {100 * result['top1']:.2f}%  (workdir: {config.workdir})")


def train_seeds(stop: cli.StopRequest) -> None:
    """--seeds=K: seeds 0..K-1 packed; a member that fails is reported and the others finish."""
    with cli.user_errors():
        if model_flags.was_set("seed"):
            raise ValueError("--seed and --seeds exclude each other: --seeds=K trains seeds 0..K-1")
        config = train_flags.config_from_flags()
        configs = [dataclasses.replace(config, seed=seed,
                                       data=dataclasses.replace(config.data, seed=seed),
                                       workdir=os.path.join(config.workdir, f"seed={seed}"))
                   for seed in range(FLAGS.seeds)]
        cli.start_jax(config)
        members = trainer.train_members(configs, stop)
    if any(m.result.get("preempted") for m in members):
        print(f"stopped at step {members[0].result['step']} with a checkpoint of every member in "
              f"{config.workdir}/seed=*: run the same command again to resume")
        sys.exit(stop.exit_status)
    for m in members:
        said = (f"failed: {m.failure}" if m.failure else
                f"test accuracy {100 * m.result['top1']:.2f}%")
        print(f"seed {m.cfg.seed} ({m.cfg.workdir}): {said}")
    top1 = [100 * m.result["top1"] for m in members if not m.failure]
    if len(top1) > 1:
        print(f"test accuracy over {len(top1)} seeds: {statistics.mean(top1):.2f} ± "
              f"{statistics.stdev(top1):.2f}% (mean ± sd)")
    if len(top1) < len(members):
        cli.fail(f"{len(members) - len(top1)} of {len(members)} seeds failed (reasons above)")


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_flags)
