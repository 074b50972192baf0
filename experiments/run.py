"""Train and evaluate a model: `python -m experiments.run [--flagfile=experiments/flags/X.flags]`.

With no flags it runs the quick start (LeNet-5 on the embedded digits). Every failure the user can
fix (bad flag, missing data, unusable checkpoint, non-finite loss) ends with a one-line error and
exit status 1 (`--debug` shows the traceback); SIGTERM checkpoints the current step and exits 0.
"""
import faulthandler
import signal
import sys
from typing import NoReturn

from absl import app, flags, logging

from experiments import train_flags
from jaxcnn import parallel, trainer
from jaxcnn.checkpoint import CheckpointError

flags.DEFINE_string("coordinator_address", None, "Multi-host: host:port of process 0.")
flags.DEFINE_integer("num_processes", None, "Multi-host: number of processes.")
flags.DEFINE_integer("process_id", None, "Multi-host: this process's index.")
flags.DEFINE_bool("distributed_from_env", False, "Multi-host: read the cluster environment (SLURM, ...).")
flags.DEFINE_integer("heartbeat_timeout", 100, "Multi-host: seconds before a dead peer ends the job.",
                     lower_bound=1)
flags.DEFINE_bool("debug", False, "Show full tracebacks instead of one-line errors.")
FLAGS = flags.FLAGS

USER_ERRORS = (ValueError, FileNotFoundError, CheckpointError, trainer.NonFiniteLossError)


def fail(message: str) -> NoReturn:
    print(f"error: {' '.join(message.split())}", file=sys.stderr)
    sys.exit(1)


def parse_flags(argv: list[str]) -> list[str]:
    """absl's parser with a one-line error (bad enum value, unknown flag, missing flagfile)."""
    try:
        return FLAGS(argv)
    except flags.Error as e:
        fail(f"{str(e).removeprefix('ERROR:: ')} (--helpshort lists the flags)")


def main(argv):
    if len(argv) > 1:
        fail(f"unexpected arguments {' '.join(argv[1:])} (flags take the form --name=value)")
    if not FLAGS.debug:
        # A process killed by JAX (e.g. its peer died) shows JAX's reason, not every thread's stack.
        faulthandler.disable()
    # Orbax logs every step of every save at INFO; keep the console for training progress.
    logging.get_absl_handler().addFilter(lambda record: "/orbax/" not in record.pathname)
    stop_requested = []
    signal.signal(signal.SIGTERM, lambda *_: stop_requested.append(True))
    try:
        config = train_flags.config_from_flags()
        parallel.initialize_distributed(FLAGS.coordinator_address, FLAGS.num_processes,
                                        FLAGS.process_id, FLAGS.distributed_from_env,
                                        FLAGS.heartbeat_timeout)
        _, result = trainer.train_and_evaluate(config, should_stop=lambda: bool(stop_requested))
    except USER_ERRORS as e:
        if FLAGS.debug:
            raise
        fail(str(e))
    if result.get("preempted"):
        print(f"stopped at step {result['step']} with a checkpoint of it in {config.workdir}: "
              f"run the same command again to resume")
    elif "top1" in result:
        logging.info("test top-1 %.2f%%, top-5 %.2f%% on %d examples (step %d)",
                     100 * result["top1"], 100 * result["top5"], result["count"], result["step"])
        print(f"test accuracy: {100 * result['top1']:.2f}%  (workdir: {config.workdir})")


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
