"""Ablation sweeps: a base configuration times axes times seeds, every run its own job.

    python -m experiments.ablate --sweep_file=experiments/sweeps/conv_factorization.flags
    python -m experiments.ablate --flagfile=experiments/flags/convnet_cifar10.flags \\
        --axis=factorize=none,2 --axis=norm=batch,lrn --seeds=3 --workdir=runs/tricks [--list]

The training flags of `experiments.run` (or a --flagfile of them) are the base; each --axis names
one of those flags and its values; axes combine as a grid or, with --combine=zip, zipped; --seeds=N
trains every configuration with seeds 0..N-1. A sweep file is a flagfile of such lines
(`experiments/sweeps/`). Runs live in WORKDIR/<flag=value,...>/seed=<S>/.

--pack=K makes jobs of up to K runs that differ only in seed or in packable values (learning
rate, momentum, l2, weight decay, label smoothing, clipping: `jaxcnn.packing`), each trained as
one program that fills an accelerator; runs that differ in anything else (model, norm, batch
size, dropout, ...) go to separate jobs. Every run is still its own run: own directory, records,
summary rows.

Where the runs execute:
  (default)              --launcher=local: one after another on this machine; --parallel=K runs K
                         at once, each on its share of the GPUs or CPU cores
  --launcher=slurm       submits the runs as one SLURM job array (--slurm_* flags) and returns
  --run_index=I[,J,..]   trains run I alone (or I, J, ... packed), here (what each job does)
  --aggregate            rewrites WORKDIR/runs.csv, summary.csv, summary.md, summary.png
  --list                 prints the runs with their index and status

Finished runs are never trained again; runs that failed are recorded with their reason and shown
in the summary, never averaged in, and --retry_failed trains only those again. The last run to
finish rewrites the summary. SIGTERM checkpoints the running runs and exits 0, Ctrl-C likewise
with status 130 (run the same command again to resume). Exit status 1 when a run failed or a flag
is wrong.
"""
import os
import sys

import jax
from absl import app, flags

from experiments import cli, launchers, model_flags, sweep_flags, sweep_store
from jaxcnn.ablation import records, report, runner
from jaxcnn.ablation.spec import Run, Sweep

flags.DEFINE_bool("list", False, "Print the runs with their index and status, and stop.")
flags.DEFINE_list("run_index", None, "Train run I of the sweep alone, in this process "
                  "(--run_index=$SLURM_ARRAY_TASK_ID), or runs I,J,... packed as one program.")
flags.DEFINE_integer("pack", 1, "Train up to K runs that differ only in seed or in packable values "
                     "(learning rate, momentum, l2, weight decay, label smoothing, clipping) as "
                     "one job, one program (jaxcnn.packing); other axes make separate jobs.",
                     lower_bound=1)
flags.DEFINE_bool("aggregate", False, "Rewrite the sweep's runs.csv and summary files, and stop.")
flags.DEFINE_bool("retry_failed", False, "Train again only the runs recorded as failed.")
flags.DEFINE_enum("launcher", "local", ["local", "slurm"], "Where the runs execute.")
flags.DEFINE_integer("parallel", 1, "local: runs at once, each on its share of the GPUs or CPU "
                     "cores.", lower_bound=1)
flags.DEFINE_string("slurm_partition", None, "slurm: partition.")
flags.DEFINE_integer("slurm_gpus_per_run", 0, "slurm: GPUs per node of each run.", lower_bound=0)
flags.DEFINE_integer("slurm_cpus_per_run", 1, "slurm: CPUs per node of each run.", lower_bound=1)
flags.DEFINE_integer("slurm_nodes_per_run", 1, "slurm: nodes per run (more than one: a multi-host "
                     "run through --distributed_from_env).", lower_bound=1)
flags.DEFINE_string("slurm_time", None, "slurm: time limit of each run, e.g. 24:00:00.")
flags.DEFINE_integer("slurm_max_running", 0, "slurm: runs at once (the array's %N); 0: no limit.",
                     lower_bound=0)
flags.DEFINE_multi_string("slurm_sbatch", [], "slurm: another sbatch option, e.g. "
                          "--slurm_sbatch=--account=lab. Repeatable.")
FLAGS = flags.FLAGS


def parse_flags(argv: list[str]) -> list[str]:
    """`--sweep_file=X` is `--flagfile=X`: a sweep file is a flagfile."""
    return cli.parse_flags([f"--flagfile={a.partition('=')[2]}" if a.startswith("--sweep_file=")
                            else a for a in argv])


def train_runs(sweep: Sweep, runs: list[Run], sweep_dir: str, should_stop) -> None:
    """A job: trains its runs (several: packed as one program, `jaxcnn.ablation.runner`) and
    says how each ended; exit status 1 if one failed."""
    outcomes = runner.train_runs(sweep_dir, sweep, runs,
                                 [sweep_flags.run_config(run, sweep_dir) for run in runs],
                                 should_stop, FLAGS.baseline)
    trained = {o.run.index for o in outcomes}
    for run in runs:
        if run.index not in trained:
            print(f"run {run.index} ({run.directory}) is finished: nothing to do")
    error = next((o.error for o in outcomes if o.error is not None), None)
    if error is not None and FLAGS.debug:
        raise error
    stopped = [o for o in outcomes if o.status == runner.STOPPED]
    if stopped:
        print(f"run {', '.join(str(o.run.index) for o in stopped)} {stopped[0].said}: run again "
              f"to resume")
        sys.exit(should_stop.exit_status)
    for o in outcomes:
        if o.status == records.FINISHED:
            print(f"run {o.run.index} ({o.run.directory}): {o.said}")
    if jax.process_index() == 0 and all(
            r.status != records.PENDING for r in records.read_records(sweep_dir, sweep)):
        print(f"all runs recorded: {sweep_dir}/summary.md")
    failed = [f"run {o.run.index} ({o.run.directory}) {o.said}" for o in outcomes
              if o.status == records.FAILED]
    if failed:
        cli.fail("; ".join(failed))


def pack_runs(todo: list[Run], sweep_dir: str) -> list[tuple[Run, ...]]:
    """The jobs to launch: up to --pack packable runs each (`runner.jobs`)."""
    return runner.jobs(todo, {run.index: sweep_flags.run_config(run, sweep_dir) for run in todo},
                       FLAGS.pack)


def print_runs(sweep: Sweep, sweep_dir: str) -> None:
    runs = records.read_records(sweep_dir, sweep)
    axes = " x ".join(f"{a.name} ({len(a.values)})" for a in sweep.axes) or "no axes"
    print(f"{len(runs)} runs: {len(sweep.configs())} configurations ({sweep.mode} of {axes}) "
          f"x {sweep.seeds} seeds, in {sweep_dir}")
    print(f"{'index':>5}  {'seed':>4}  {'status':<8}  configuration")
    for r in runs:
        print(f"{r.run.index:>5}  {r.run.seed:>4}  {r.status:<8}  {r.run.config}")
    if FLAGS.pack > 1:
        jobs = pack_runs(runs_to_launch(sweep, sweep_dir), sweep_dir)
        print(f"--pack={FLAGS.pack}: {len(jobs)} jobs for the runs to launch")
        for k, job in enumerate(jobs):
            print(f"{k:>5}  runs {','.join(str(r.index) for r in job)}")


def runs_to_launch(sweep: Sweep, sweep_dir: str) -> list[Run]:
    wanted = records.FAILED if FLAGS.retry_failed else records.PENDING
    return [r.run for r in records.read_records(sweep_dir, sweep) if r.status == wanted]


def launch_local(sweep_dir: str, jobs: list[tuple[Run, ...]], launch, should_stop) -> bool:
    """Runs the jobs here and says how each run ended; returns False if stopped. A failure whose
    failed.json could not be written ends the program with its line once all jobs have ended."""
    runs = {run.index: run for job in jobs for run in job}
    unrecorded = []

    def on_exit(indices: tuple[int, ...], status: int, log: str) -> None:
        for index in indices:
            report_exit(runs[index], status, log)

    def report_exit(run: Run, status: int, log: str) -> None:
        index = run.index
        record = records.read(sweep_dir, run)
        if status != 0 and record.status != records.FAILED:   # killed before it could say why
            how = f"killed by signal {-status}" if status < 0 else f"exited with status {status}"
            reason = f"{how} without a result (log: {log})"
            note = runner.record_failure(sweep_dir, run, reason)
            said = f"failed: {reason}{note}"
            if note:
                unrecorded.append(f"run {index} ({run.directory}) {said}")
        elif record.status == records.FINISHED:
            said = f"test top-1 {100 * record.data['top1']:.2f}%"
        elif record.status == records.FAILED:
            said = f"failed: {record.data['reason']}"
        else:
            said = "stopped with a checkpoint"
        print(f"run {index} ({run.directory}) {said}", flush=True)

    finished = launchers.run_local(
        launch, [(tuple(r.index for r in job), os.path.join(sweep_dir, job[0].directory, "job.log"))
                 for job in jobs], FLAGS.parallel, should_stop, on_exit)
    if unrecorded:
        cli.fail("; ".join(unrecorded))
    return finished


def main(argv):
    should_stop = cli.start(argv)
    FLAGS.set_default("workdir", "runs/ablate")
    with cli.user_errors():
        sweep_dir = os.path.abspath(FLAGS.workdir)
        sweep_store.adopt(sweep_dir, worker=FLAGS.run_index is not None, aggregate=FLAGS.aggregate,
                          listing=FLAGS.list)   # the sweep stored in sweep_dir, if any
        sweep = sweep_flags.sweep_from_flags()
        sweep.baseline(FLAGS.baseline)
        if FLAGS.run_index is not None:      # one job's worker; its launcher checked the sweep
            runs = sweep.runs()
            if not all(i.isdigit() and int(i) < len(runs) for i in FLAGS.run_index):
                raise ValueError(f"--run_index={','.join(FLAGS.run_index)}: this sweep has runs "
                                 f"0 to {len(runs) - 1}")
            runs = [runs[int(i)] for i in FLAGS.run_index]
            cli.start_jax(sweep_flags.run_config(runs[0], sweep_dir))
            return train_runs(sweep, runs, sweep_dir, should_stop)
        sweep_flags.check_configs(sweep, sweep_dir)
        if FLAGS.list:
            return print_runs(sweep, sweep_dir)
        todo = [] if FLAGS.aggregate else runs_to_launch(sweep, sweep_dir)
        if todo:
            flagfile = sweep_flags.resolved_flagfile(sweep, sweep_dir)
            launch = launchers.Launch.create(sweep_dir, flagfile)
            sweep_store.save(sweep_dir, flagfile)
            jobs = pack_runs(todo, sweep_dir)
            if FLAGS.launcher == "slurm":
                return submit(sweep_dir, jobs, launch)
            if not launch_local(sweep_dir, jobs, launch, should_stop):
                print("stopped: the running runs checkpointed; run the same command again to "
                      "resume")
                sys.exit(should_stop.exit_status)
        elif not FLAGS.aggregate:
            print(f"nothing to {'retry' if FLAGS.retry_failed else 'run'}: every run of the sweep "
                  f"is recorded (--retry_failed trains the failed ones again)")
        summaries, table = report.write(sweep_dir, sweep, FLAGS.baseline)
    print(table, end="")
    print(f"summary: {sweep_dir}/summary.{{md,csv,png}}, runs.csv")
    failed = sum(s.counts[records.FAILED] for s in summaries)
    if failed:
        cli.fail(f"{failed} run(s) failed (reasons above, in summary.md and in their failed.json); "
                 f"--retry_failed trains them again")


def submit(sweep_dir: str, jobs: list[tuple[Run, ...]], launch) -> None:
    resources = launchers.SlurmResources(
        partition=FLAGS.slurm_partition, gpus_per_run=FLAGS.slurm_gpus_per_run,
        cpus_per_run=FLAGS.slurm_cpus_per_run, nodes_per_run=FLAGS.slurm_nodes_per_run,
        time=FLAGS.slurm_time, max_running=FLAGS.slurm_max_running,
        extra=tuple(FLAGS.slurm_sbatch))
    job = launchers.submit_slurm(launch, [tuple(r.index for r in j) for j in jobs],
                                 os.path.basename(sweep_dir), resources)
    runs = sum(len(j) for j in jobs)
    print(f"submitted {runs} runs as SLURM job array {job}"
          f"{f' of {len(jobs)} packed jobs' if len(jobs) < runs else ''} "
          f"({launch.directory}/sweep.sbatch)")
    print(f"follow:     squeue -j {job}    (logs: {launch.directory}/logs/{job}_<index>.out)")
    print(f"aggregate:  python -m experiments.ablate --workdir={sweep_dir} --aggregate")


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
