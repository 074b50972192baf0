"""Ablation sweeps: `python -m experiments.ablate --sweep=NAME [--flagfile=...] [training flags]`.

The training flags of `experiments.run` set the base configuration; each run of the sweep changes
one model switch of it (see `jaxcnn.ablation.SWEEPS`). --model defaults to the sweep's own model and
--workdir to runs/ablate_NAME, which gets one sub-directory per run plus results.csv, results.md and
results.png. Running the same command again skips finished runs and resumes an unfinished one;
SIGTERM checkpoints the current run and exits 0.
"""
import signal

from absl import app, flags, logging

from experiments import train_flags
from experiments.run import USER_ERRORS, fail, parse_flags
from jaxcnn import ablation, parallel

flags.DEFINE_enum("sweep", None, list(ablation.SWEEPS), "The ablation to run.")
flags.mark_flag_as_required("sweep")
FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        fail(f"unexpected arguments {' '.join(argv[1:])} (flags take the form --name=value)")
    logging.get_absl_handler().addFilter(lambda record: "/orbax/" not in record.pathname)
    stop_requested = []
    signal.signal(signal.SIGTERM, lambda *_: stop_requested.append(True))
    FLAGS.set_default("model", ablation.sweep(FLAGS.sweep).model)
    FLAGS.set_default("workdir", f"runs/ablate_{FLAGS.sweep}")
    try:
        base = train_flags.config_from_flags()
        parallel.initialize_distributed(FLAGS.coordinator_address, FLAGS.num_processes,
                                        FLAGS.process_id, FLAGS.distributed_from_env,
                                        FLAGS.heartbeat_timeout)
        results = ablation.run_sweep(FLAGS.sweep, base, FLAGS.workdir,
                                     should_stop=lambda: bool(stop_requested))
    except USER_ERRORS as e:
        if FLAGS.debug:
            raise
        fail(str(e))
    if stop_requested:
        print(f"stopped with {len(results)} runs finished and the current one checkpointed: run "
              f"the same command again to resume")
        return
    print(ablation.markdown_table(results), end="")
    print(f"results: {FLAGS.workdir}/results.{{csv,md,png}}")


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
