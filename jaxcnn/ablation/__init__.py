"""Ablation sweeps: a base configuration times axes of settings times seeds, each run its own job,
reported with the statistics a paper quotes. `spec` says what the runs are, `records` what each
run left in the sweep's folder (`result` writes a finished run's), `stats` the per-configuration estimates and tests, `report` the
files. `experiments.ablate` turns flags into runs and launches them (in-process, as local
subprocesses, or as one SLURM job array)."""
from jaxcnn.ablation.records import read_records
from jaxcnn.ablation.report import write as write_report
from jaxcnn.ablation.spec import Axis, Run, Sweep
from jaxcnn.ablation.stats import summarize

__all__ = ["Axis", "Run", "Sweep", "read_records", "summarize", "write_report"]
