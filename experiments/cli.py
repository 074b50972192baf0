"""What every program shares: a user mistake ends it with one line `error: ...` and exit status 1
(the traceback with --debug). What the training programs add: the multi-host flags, and SIGTERM
and Ctrl-C as a request to checkpoint the current step and stop. `experiments.run` and
`experiments.ablate` are this plus what they do; the other programs use `parse_flags`, `quiet`
and `user_errors`.
"""
import contextlib
import faulthandler
import logging as std_logging
import os
import signal
import sys
from typing import NoReturn

from absl import flags, logging

from jaxcnn import checkpoint, parallel, trainer
from jaxcnn.cpu import host_memory
from jaxcnn.config import TrainConfig

flags.DEFINE_string("coordinator_address", None, "Multi-host: host:port of process 0.")
flags.DEFINE_integer("num_processes", None, "Multi-host: number of processes.", lower_bound=1)
flags.DEFINE_integer("process_id", None, "Multi-host: this process's index.", lower_bound=0)
flags.DEFINE_bool("distributed_from_env", False, "Multi-host: read the cluster environment (SLURM, ...).")
flags.DEFINE_integer("heartbeat_timeout", 100, "Multi-host: seconds before a dead peer ends the job.",
                     lower_bound=1)
flags.DEFINE_integer("coordinator_timeout", 60, "Multi-host: seconds to wait for every process to "
                     "reach the coordinator before ending with an error.", lower_bound=1)
flags.DEFINE_bool("debug", False, "Show full tracebacks instead of one-line errors.")
FLAGS = flags.FLAGS

USER_ERRORS = trainer.USER_ERRORS   # OSError's messages name the path
INTERRUPTED = 128 + signal.SIGINT   # the shell's exit status of a program ended by Ctrl-C


def fail(message: str) -> NoReturn:
    print(f"error: {' '.join(message.split())}", file=sys.stderr)
    sys.exit(1)


def parse_flags(argv: list[str]) -> list[str]:
    """absl's parser with a one-line error (bad enum value, unknown flag, missing flagfile)."""
    try:
        return FLAGS(argv)
    except flags.Error as e:
        fail(f"{str(e).removeprefix('ERROR:: ')} (--helpshort lists the flags)")


def check_no_arguments(argv: list[str]) -> None:
    if len(argv) > 1:
        fail(f"unexpected arguments {' '.join(argv[1:])} (flags take the form --name=value)")


def quiet() -> None:
    """Keeps the console for the progress bar, results and one-line errors (unless --debug).
    With absl's --log_dir, logs go to a file there (`<program>.INFO`) in absl's full form, the
    progress and result lines included; the console then shows only what is above
    --stderrthreshold (add --alsologtostderr for everything)."""
    handler = logging.get_absl_handler()
    # Orbax logs every step of every save and restore at INFO.
    handler.addFilter(lambda record: "/orbax/" not in record.pathname)
    if FLAGS.log_dir:
        try:
            os.makedirs(FLAGS.log_dir, exist_ok=True)
            handler.use_absl_log_file()
        except OSError as e:
            fail(f"--log_dir={FLAGS.log_dir}: {e}")
    # Progress and result lines are on the console already, as plain lines and the bar
    # (metric_writers.CONSOLE_SHOWN): logged to a file only.
    stream = handler.python_handler
    stream.addFilter(lambda record: not getattr(record, "console_shown", False)
                     or stream.stream is not sys.stderr)
    if not FLAGS.debug:
        # JAX says at INFO which backends it did not find ("Unable to initialize backend 'tpu'").
        std_logging.getLogger("jax._src.xla_bridge").setLevel(std_logging.WARNING)
        # A process killed by JAX (e.g. its peer died) shows JAX's reason, not every thread's stack.
        faulthandler.disable()
        checkpoint.silence_failed_io_aftermath()


@contextlib.contextmanager
def user_errors():
    """Errors the user can fix end the program with one line (the traceback with --debug)."""
    try:
        yield
    except USER_ERRORS as e:
        if FLAGS.debug:
            raise
        fail(str(e))


class StopRequest:
    """SIGTERM, and the first Ctrl-C, ask the training loop to checkpoint the current step and
    stop; a second Ctrl-C ends the program at once (the default action of SIGINT, status 130).

    Ctrl-C is turned into SIGTERM: in a multi-process job JAX's preemption service replaces the
    SIGTERM handler installed here and makes every process stop at the same step.
    """

    def __init__(self):
        self.requested = self.interrupted = False
        signal.signal(signal.SIGTERM, self._on_sigterm)
        signal.signal(signal.SIGINT, self._on_sigint)

    def _on_sigterm(self, *_):
        self.requested = True

    def _on_sigint(self, *_):
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        self.interrupted = True
        print("interrupted: saving the current step, then stopping (Ctrl-C again quits at once, "
              "without it)", file=sys.stderr, flush=True)
        signal.raise_signal(signal.SIGTERM)

    def __call__(self) -> bool:
        return self.requested

    @property
    def exit_status(self) -> int:
        """After a stop: 0 for SIGTERM (a scheduler's preemption is no failure), 130 for Ctrl-C."""
        return INTERRUPTED if self.interrupted else 0


def start(argv: list[str]) -> StopRequest:
    """Checks the command line, quiets the console and installs the stop request: the
    `should_stop` poll for `trainer.train_and_evaluate`."""
    check_no_arguments(argv)
    quiet()
    return StopRequest()


def start_jax(config: TrainConfig) -> None:
    """What a training process does before anything starts a JAX backend (tracing a model does):
    keeps freed host memory for the next step when its images are large and its compute option
    `cpu_kernels` is not "off" (`jaxcnn.cpu.host_memory`), then joins the multi-host job the
    flags describe, after checking that they describe one."""
    if config.compute.cpu_kernels != "off":
        host_memory.reuse_freed_memory_for(config.data.image_size)
    if FLAGS.coordinator_address is None and not FLAGS.distributed_from_env:
        if (FLAGS.num_processes or 1) > 1 or FLAGS.process_id:
            fail("--num_processes and --process_id need --coordinator_address=HOST:PORT of "
                 "process 0 (or --distributed_from_env)")
        return
    if FLAGS.coordinator_address is not None:
        if FLAGS.num_processes is None or FLAGS.process_id is None:
            fail("--coordinator_address needs --num_processes and --process_id")
        if FLAGS.process_id >= FLAGS.num_processes:
            fail(f"--process_id={FLAGS.process_id} must be less than "
                 f"--num_processes={FLAGS.num_processes}")
        if not FLAGS.coordinator_address.rpartition(":")[2].isdigit():
            fail(f"--coordinator_address={FLAGS.coordinator_address} must be HOST:PORT")
    # A coordinator that does not answer, or a process that never comes, ends the job after
    # --coordinator_timeout with one line (from a watchdog thread: JAX's wait cannot be interrupted).
    parallel.initialize_distributed(FLAGS.coordinator_address, FLAGS.num_processes,
                                    FLAGS.process_id, FLAGS.distributed_from_env,
                                    FLAGS.heartbeat_timeout, timeout_s=FLAGS.coordinator_timeout,
                                    on_timeout=fail)
