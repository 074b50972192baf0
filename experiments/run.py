"""Train and evaluate a model: `python -m experiments.run [--flagfile=experiments/flags/X.flags]`.

With no flags it runs the quick start (LeNet-5 on the embedded digits). Every failure the user can
fix (bad flag, missing data, unusable checkpoint, non-finite loss, full disk) ends with a one-line
error and exit status 1 (`--debug` shows the traceback). SIGTERM checkpoints the current step and
exits 0; so does Ctrl-C, with exit status 130 (a second Ctrl-C quits at once, without it).
"""
import sys

from absl import app, logging

from experiments import cli, train_flags
from jaxcnn import trainer
from jaxcnn.metric_writers import CONSOLE_SHOWN


def main(argv):
    stop = cli.start(argv)
    with cli.user_errors():
        config = train_flags.config_from_flags()
        cli.start_jax(config.data.image_size)
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


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_flags)
