"""Ablation sweeps: `python -m experiments.ablate --sweep=NAME [--flagfile=...] [training flags]`.

The training flags of `experiments.run` set the base configuration; each run of the sweep changes
one model switch of it (see `jaxcnn.ablation.SWEEPS`). --model defaults to the sweep's own model and
--workdir to runs/ablate_NAME, which gets one sub-directory per run plus results.csv, results.md and
results.png. Running the same command again skips finished runs and resumes an unfinished one;
SIGTERM checkpoints the current run and exits 0.
"""
from absl import app, flags

from experiments import cli, train_flags
from jaxcnn import ablation

flags.DEFINE_enum("sweep", None, list(ablation.SWEEPS), "The ablation to run (required).")
FLAGS = flags.FLAGS


def main(argv):
    should_stop = cli.start(argv)
    if FLAGS.sweep is None:
        cli.fail(f"--sweep is required: one of {', '.join(ablation.SWEEPS)}")
    FLAGS.set_default("model", ablation.sweep(FLAGS.sweep).model)
    FLAGS.set_default("workdir", f"runs/ablate_{FLAGS.sweep}")
    with cli.user_errors():
        base = train_flags.config_from_flags()
        cli.initialize_distributed()
        results = ablation.run_sweep(FLAGS.sweep, base, FLAGS.workdir, should_stop=should_stop)
    if should_stop():
        print(f"stopped with {len(results)} runs finished and the current one checkpointed: run "
              f"the same command again to resume")
        return
    print(ablation.markdown_table(results), end="")
    print(f"results: {FLAGS.workdir}/results.{{csv,md,png}}")


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_flags)
