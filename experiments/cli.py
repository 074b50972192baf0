"""What every training program shares: one-line errors, the multi-host flags, SIGTERM as a stop
request. `experiments.run` and `experiments.ablate` are this plus what they do."""
import contextlib
import faulthandler
import signal
import sys
from typing import Callable, NoReturn

from absl import flags, logging

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


def start(argv: list[str]) -> Callable[[], bool]:
    """Checks the command line, quiets Orbax, and turns SIGTERM into a stop request: returns the
    `should_stop` poll for `trainer.train_and_evaluate`."""
    if len(argv) > 1:
        fail(f"unexpected arguments {' '.join(argv[1:])} (flags take the form --name=value)")
    if not FLAGS.debug:
        # A process killed by JAX (e.g. its peer died) shows JAX's reason, not every thread's stack.
        faulthandler.disable()
    # Orbax logs every step of every save at INFO; keep the console for training progress.
    logging.get_absl_handler().addFilter(lambda record: "/orbax/" not in record.pathname)
    stop_requested = []
    signal.signal(signal.SIGTERM, lambda *_: stop_requested.append(True))
    return lambda: bool(stop_requested)


def initialize_distributed() -> None:
    parallel.initialize_distributed(FLAGS.coordinator_address, FLAGS.num_processes,
                                    FLAGS.process_id, FLAGS.distributed_from_env,
                                    FLAGS.heartbeat_timeout)


@contextlib.contextmanager
def user_errors():
    """Errors the user can fix end the program with one line (the traceback with --debug)."""
    try:
        yield
    except USER_ERRORS as e:
        if FLAGS.debug:
            raise
        fail(str(e))
