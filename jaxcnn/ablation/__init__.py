"""Ablation sweeps: a base configuration times axes of settings times seeds, each run its own job,
reported with the statistics a paper quotes. `spec` says what the runs are, `runner` trains them
and records how each ended (`run_sweep`: a whole sweep from Python, in this process), `definition`
keeps a Python sweep's definition in its folder, `records` reads what each run left there
(`result` writes a finished run's), `stats` the per-configuration estimates and tests, `report`
the files. `experiments.ablate` turns flags into runs and launches them (in-process, as local
subprocesses, or as one SLURM job array), each job through `runner.train_runs`."""
from jaxcnn.ablation.records import read_records
from jaxcnn.ablation.report import write as write_report
from jaxcnn.ablation.runner import run_sweep
from jaxcnn.ablation.spec import Axis, Run, Sweep
from jaxcnn.ablation.stats import summarize

__all__ = ["Axis", "Run", "Sweep", "read_records", "run_sweep", "summarize", "write_report"]
